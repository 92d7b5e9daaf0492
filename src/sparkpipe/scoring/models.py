"""NumPy twins of every fitted Spark MLlib model sparkpipe trains.

Each twin mirrors the arithmetic of the Spark 4 ``transform`` of its model class: the same output
columns (honouring ``predictionCol``, ``rawPredictionCol``, ``probabilityCol``; an empty column name
means Spark does not add that column), the same order of operations where it matters for rounding
(sequential sums, max-shifted softmax, Spark's argmax that ignores ``NaN``), and the same validation
errors (raised here as :class:`FeatureValueError`).

Frame conventions follow :mod:`sparkpipe.scoring.base`: a feature vector column is a ``float64``
2-D array ``(n_rows, size)`` or a ``scipy.sparse`` CSR matrix; predictions are ``float64`` 1-D
arrays; probability and rawPrediction are ``float64`` 2-D arrays ``(n_rows, num_classes)``.

Tree ensembles are compiled once into flat node arrays and every row walks all trees together,
one level per NumPy step, so scoring cost is ``O(depth)`` vectorised operations.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from operator import mul
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import linalg as sla
from scipy import special

from sparkpipe.errors import ScoringError, UnsupportedStageError
from sparkpipe.scoring.base import (
    Frame,
    Row,
    RowFallback,
    RowFn,
    StageFiles,
    Twin,
    as_2d,
    generated_function,
    matrix_from_struct,
    register,
    vector_from_struct,
)

logger = logging.getLogger(__name__)

EPSILON: float = float(np.finfo(np.float64).eps)
"""Machine epsilon, Spark's ``MLUtils.EPSILON`` / ``Utils.EPSILON`` (2.220446049250313e-16)."""

_DOUBLE_MIN_VALUE = -np.finfo(np.float64).max  # Scala's Double.MinValue (most negative double)
_NEG_POS = np.array([-1.0, 1.0])
_POS_NEG = np.array([1.0, -1.0])
_ZERO_ONE = np.array([0.0, 1.0])
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

COLD_START_COL = "cold_start"
"""Boolean column the ALS twin adds: ``True`` where the user or the item was unseen in training."""


class FeatureValueError(ScoringError):
    """A feature value is invalid for the model (Spark's transform would fail on the same row)."""


# ------------------------------------------------------------------------------------------ helpers
Matrix = np.ndarray | sp.csr_matrix


def _features(frame: Frame, col: str, size: int) -> Matrix:
    """The feature vector column ``col`` as a float64 dense 2-D array or CSR matrix of width ``size``."""
    if col not in frame:
        raise ScoringError(f"input column {col!r} is missing from the frame (columns: {sorted(frame)})")
    x = frame[col]
    if type(x) is np.ndarray and x.ndim == 2 and x.dtype == np.float64 and x.shape[1] == size:
        return x  # the usual dense features: nothing to convert or check
    x = as_2d(x)
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float64)
    else:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ScoringError(f"column {col!r} must be a 2-D vector array, got shape {x.shape}")
    if x.shape[1] != size:
        raise ScoringError(f"column {col!r} holds vectors of size {x.shape[1]}; the model expects {size}")
    return x


def _dense_columns(x: Matrix, cols: np.ndarray) -> np.ndarray:
    """Columns ``cols`` of ``x`` as a C-contiguous dense float64 array (densifies only those columns)."""
    if sp.issparse(x):
        return np.ascontiguousarray(x[:, cols].toarray(), dtype=np.float64)
    return np.ascontiguousarray(x[:, cols], dtype=np.float64)


def _to_dense(x: Matrix) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else x


def _matmul(x: Matrix, w: np.ndarray) -> np.ndarray:
    """``x @ w`` for a dense array or CSR matrix ``x``; always returns a dense ndarray."""
    # for a C-contiguous array, ``dot`` is the same BLAS product as ``@`` with less call overhead
    out = x.dot(w) if type(x) is np.ndarray and x.flags.c_contiguous else x @ w
    return np.asarray(out, dtype=np.float64)


def _seq_sum(a: np.ndarray) -> np.ndarray:
    """Row sums accumulated left to right (Scala's ``Array.sum``), bit-for-bit like Spark."""
    total = np.zeros(a.shape[0], dtype=np.float64)
    for j in range(a.shape[1]):
        total = total + a[:, j]
    return total


def spark_argmax(a: np.ndarray) -> np.ndarray:
    """Row-wise ``DenseVector.argmax`` as Spark computes it, as float64 labels.

    Spark keeps the first maximum and never moves to a ``NaN``; a ``NaN`` in the first slot
    therefore wins (nothing compares greater than it).
    """
    if a.shape[1] == 0:
        return np.full(a.shape[0], -1.0)
    b = np.where(np.isnan(a), -np.inf, a)
    idx = np.argmax(b, axis=1)
    idx[np.isnan(a[:, 0])] = 0
    return idx.astype(np.float64)


def thresholded_argmax(prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Spark's ``probability2prediction`` with ``thresholds``: argmax of ``p / t``.

    A zero threshold gives ``+inf`` (always predicted) unless its probability is 0 too (``NaN``,
    never predicted); ties keep the lower index.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = prob / thresholds
    b = np.where(np.isnan(scaled), -np.inf, scaled)
    return np.argmax(b, axis=1).astype(np.float64)


def _normalize_rows(raw: np.ndarray) -> np.ndarray:
    """``ProbabilisticClassificationModel.normalizeToProbabilitiesInPlace`` for every row."""
    total = _seq_sum(raw)
    if np.any(raw < 0) or np.any(~(total > 0)):
        raise FeatureValueError("cannot normalise raw predictions: negative or all-zero class counts")
    return raw / total[:, None]


_EXP_SAFE = 709.0
"""``exp`` of a double overflows only above ~709.78."""


def _exp_quiet(x: np.ndarray) -> np.ndarray:
    """``np.exp(x)``, an overflow giving ``inf`` silently. A single value that cannot overflow (one
    request) skips the ``errstate`` context, which costs more than the ``exp`` itself."""
    if x.size == 1 and x.item() <= _EXP_SAFE:
        return np.exp(x)
    with np.errstate(over="ignore"):
        return np.exp(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + _exp_quiet(-x))


def _softmax_spark(raw: np.ndarray) -> np.ndarray:
    """``ml.impl.Utils.softmax`` (multinomial logistic regression), row-wise.

    The max margin (not below ``Double.MinValue``) is subtracted before ``exp``; a row holding
    ``+inf`` becomes ``0 * row`` with 1.0 at the first ``+inf`` (Spark's ``dscal`` then assignment).
    """
    b = np.where(np.isnan(raw), -np.inf, raw)
    max_v = np.maximum(b.max(axis=1), _DOUBLE_MIN_VALUE)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(raw - max_v[:, None])
        out = e / _seq_sum(e)[:, None]
        posinf = np.isposinf(raw)
        rows = np.flatnonzero(posinf.any(axis=1))
        if rows.size:
            first = np.argmax(posinf[rows], axis=1)
            out[rows] = raw[rows] * 0.0
            out[rows, first] = 1.0
    return out


def _softmax_minvalue(raw: np.ndarray) -> np.ndarray:
    """Softmax as MLP's ``SoftmaxLayerModelWithCrossEntropyLoss`` and NaiveBayes compute it."""
    b = np.where(np.isnan(raw), -np.inf, raw)
    max_v = np.maximum(b.max(axis=1), _DOUBLE_MIN_VALUE)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(raw - max_v[:, None])
        return e / _seq_sum(e)[:, None]


# ------------------------------------------------------------------------------- row-path helpers
def _exp_row(x: float) -> float:
    """``math.exp`` that overflows to ``inf`` as NumPy's does."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def spark_argmax_row(a: list[float]) -> float:
    """:func:`spark_argmax` of one row: the first maximum, never moving to a ``NaN``."""
    if not a:
        return -1.0
    best, k = a[0], 0
    if best != best:
        return 0.0
    for i in range(1, len(a)):
        v = a[i]
        if v > best:
            best, k = v, i
    return float(k)


def _dot_row(features: str, w: list[float]) -> Callable[[Row], float]:
    """``x . w`` of a row's feature list (sequential sum: within an ulp of BLAS's order)."""
    size = len(w)

    def dot(row: Row) -> float:
        x = row[features]
        if type(x) is not list or len(x) != size:
            raise RowFallback
        return sum(map(mul, x, w))

    return dot


# ------------------------------------------------------------------------------------- base twins
class _ModelTwin(Twin):
    """Shared plumbing: the features column and the output column params."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.features_col: str = stage.param("featuresCol", "features")
        self.prediction_col: str = stage.param("predictionCol", "prediction") or ""

    @property
    def input_cols(self) -> list[str]:
        return [self.features_col]

    @property
    def output_cols(self) -> list[str]:
        return [c for c in (self.prediction_col,) if c]


class _ClassifierTwin(_ModelTwin):
    """Mirror of ``ClassificationModel`` / ``ProbabilisticClassificationModel.transform``.

    Subclasses implement :meth:`_raw` (rawPrediction from features) and, when probabilistic,
    :meth:`_raw2prob`; they may override the prediction rules as their Spark classes do.
    """

    probabilistic: bool = True
    num_classes: int = 2
    num_features: int = 0

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.raw_col: str = stage.param("rawPredictionCol", "rawPrediction") or ""
        self.prob_col: str = (
            (stage.param("probabilityCol", "probability") or "") if self.probabilistic else ""
        )
        th = stage.param("thresholds")
        self.thresholds: np.ndarray | None = None if th is None else np.asarray(th, dtype=np.float64)

    def _check_thresholds(self) -> None:
        if self.thresholds is not None and self.thresholds.size != self.num_classes:
            raise ScoringError(
                f"{type(self).__name__}: thresholds has length {self.thresholds.size} but the model has "
                f"{self.num_classes} classes (Spark's transform fails the same way)"
            )

    @property
    def output_cols(self) -> list[str]:
        return [c for c in (self.raw_col, self.prob_col, self.prediction_col) if c]

    # --- the Spark hooks
    def _raw(self, x: Matrix) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _raw2prob(self, raw: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _prob2pred(self, prob: np.ndarray) -> np.ndarray:
        if self.thresholds is None:
            return spark_argmax(prob)
        return thresholded_argmax(prob, self.thresholds)

    def _raw2pred(self, raw: np.ndarray) -> np.ndarray:
        if self.thresholds is None or not self.probabilistic:
            return spark_argmax(raw)
        return self._prob2pred(self._raw2prob(raw))

    def _predict(self, x: Matrix) -> np.ndarray:
        return self._raw2pred(self._raw(x))

    def transform(self, frame: Frame) -> None:
        x = _features(frame, self.features_col, self.num_features)
        raw = prob = None
        if self.raw_col:
            raw = self._raw(x)
            frame[self.raw_col] = raw
        if self.prob_col:
            prob = self._raw2prob(raw.copy() if raw is not None else self._raw(x))
            frame[self.prob_col] = prob
        if self.prediction_col:
            if raw is not None:
                pred = self._raw2pred(raw)
            elif prob is not None:
                pred = self._prob2pred(prob)
            else:
                pred = self._predict(x)
            frame[self.prediction_col] = np.asarray(pred, dtype=np.float64)

    # --- the row path: the same steps on one row's lists (subclasses give _row_raw and _row_raw2prob)
    _row_raw2prob: Callable[[list[float]], list[float]] | None = None

    def _row_raw(self) -> Callable[[list[float]], list[float]] | None:
        """A function from the feature list to rawPrediction, or ``None`` (no row path)."""
        return None

    def _row_prob2pred(self, prob: list[float]) -> float:
        if self.thresholds is None:
            return spark_argmax_row(prob)
        best, k = -math.inf, 0
        for i, (p, t) in enumerate(zip(prob, self._row_thresholds, strict=True)):
            v = p / t if t != 0.0 else (math.copysign(math.inf, p) if p != 0.0 else math.nan)  # NumPy's p / t
            if v > best:  # NaN never wins (-inf in the batch path)
                best, k = v, i
        return float(k)

    def _row_raw2pred(self, raw: list[float]) -> float:
        if self.thresholds is None or not self.probabilistic:
            return spark_argmax_row(raw)
        return self._row_prob2pred(self._row_raw2prob(list(raw)))

    def row_fn(self) -> RowFn | None:
        raw_of = self._row_raw()
        if raw_of is None or (self.probabilistic and self._row_raw2prob is None):
            return None
        if self.thresholds is not None:
            self._row_thresholds = self.thresholds.tolist()
        features, size = self.features_col, self.num_features
        raw_col, prob_col, pred_col = self.raw_col, self.prob_col, self.prediction_col
        raw2prob, raw2pred = self._row_raw2prob, self._row_raw2pred

        def classify(row: Row) -> None:
            x = row[features]
            if type(x) is not list or len(x) != size:
                raise RowFallback
            raw = raw_of(x)
            prob = None
            if raw_col:
                row[raw_col] = raw
            if prob_col:
                prob = raw2prob(list(raw))
                row[prob_col] = prob
            if pred_col:
                row[pred_col] = raw2pred(raw) if raw_col or prob is None else self._row_prob2pred(prob)

        return classify


# ------------------------------------------------------------------------------ linear classifiers
@register("org.apache.spark.ml.classification.LogisticRegressionModel")
class LogisticRegressionTwin(_ClassifierTwin):
    """Binary and multinomial logistic regression (``LogisticRegressionModel``).

    Binary: rawPrediction ``[-m, m]`` with ``m = x.w + b``; probability ``p0 = 1/(1+exp(m))``,
    ``p1 = 1 - p0``; prediction ``p1 > t`` (or ``m > log(t/(1-t))`` from rawPrediction) where ``t``
    is ``threshold`` or derived from ``thresholds``. Multinomial: margins ``W x + b``, Spark's
    max-shifted softmax, argmax or the thresholds rule.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        row = stage.read_rows()[0]
        self.num_classes = int(row["numClasses"])
        self.num_features = int(row["numFeatures"])
        self.is_multinomial = bool(row["isMultinomial"])
        self.coefficients = matrix_from_struct(row["coefficientMatrix"])  # (numClasses|1, numFeatures)
        self.intercepts = vector_from_struct(row["interceptVector"])
        self._check_thresholds()
        if not self.is_multinomial:
            self.w = np.ascontiguousarray(self.coefficients[0])
            self.b = float(self.intercepts[0])
            self._b = np.array([self.b])
            if self.thresholds is not None:
                t = 1.0 / (1.0 + self.thresholds[0] / self.thresholds[1])
            else:
                t = float(stage.param("threshold", 0.5))
            if t == 0.0:
                raw_t = -np.inf
            elif t == 1.0:
                raw_t = np.inf
            else:
                raw_t = float(np.log(t / (1.0 - t)))
            self.prob_threshold, self.raw_threshold = t, raw_t
        else:
            self.wt = np.ascontiguousarray(self.coefficients.T)

    def _margin(self, x: Matrix) -> np.ndarray:
        return _matmul(x, self.w) + self._b  # a one-element array adds faster than a Python float

    def _raw(self, x: Matrix) -> np.ndarray:
        if self.is_multinomial:
            return _matmul(x, self.wt) + self.intercepts
        return self._margin(x)[:, None] * _NEG_POS  # [-m, m] (a product with -1 or 1 is exact)

    @staticmethod
    def _binary_prob(m: np.ndarray) -> np.ndarray:
        """Spark's binary ``raw2probability`` from the margins as a ``(n, 1)`` column:
        ``p0 = 1 / (1 + exp(m))`` (``exp(-rawPrediction(0))``), ``p1 = 1 - p0``."""
        # [0 + 1/d, 1 + -1/d] is exactly [p0, 1 - p0]: -1/d == -(1/d) and 0 + p0 == p0
        return _ZERO_ONE + _POS_NEG / (1.0 + _exp_quiet(m))

    def _raw2prob(self, raw: np.ndarray) -> np.ndarray:
        if self.is_multinomial:
            return _softmax_spark(raw)
        return self._binary_prob(-raw[:, :1])

    def _raw2pred(self, raw: np.ndarray) -> np.ndarray:
        if self.is_multinomial:
            return super()._raw2pred(raw)
        return (raw[:, 1] > self.raw_threshold).astype(np.float64)

    def _prob2pred(self, prob: np.ndarray) -> np.ndarray:
        if self.is_multinomial:
            return super()._prob2pred(prob)
        return (prob[:, 1] > self.prob_threshold).astype(np.float64)

    def _predict(self, x: Matrix) -> np.ndarray:
        if self.is_multinomial:
            return super()._predict(x)
        return (_sigmoid(self._margin(x)) > self.prob_threshold).astype(np.float64)

    def transform(self, frame: Frame) -> None:
        if self.is_multinomial:
            super().transform(frame)
            return
        # the base transform's steps, from the margins m = x.w + b (rawPrediction is [-m, m])
        x = _features(frame, self.features_col, self.num_features)
        m = self._margin(x)
        if m.shape[0] == 1 and self.raw_col and self.prob_col:
            # one request: the same IEEE double operations on Python floats (exactly equal)
            mv = m.item()
            p0 = 1.0 / (1.0 + _exp_quiet(m).item())
            frame[self.raw_col] = np.array([[-mv, mv]])
            frame[self.prob_col] = np.array([[p0, 1.0 - p0]])
            if self.prediction_col:
                frame[self.prediction_col] = np.array([1.0 if mv > self.raw_threshold else 0.0])
            return
        m2 = m[:, None]
        prob = None
        if self.raw_col:
            frame[self.raw_col] = m2 * _NEG_POS
        if self.prob_col:
            prob = self._binary_prob(m2)
            frame[self.prob_col] = prob
        if self.prediction_col:
            if self.raw_col:
                pred = m > self.raw_threshold  # _raw2pred: rawPrediction(1) is m
            elif prob is not None:
                pred = prob[:, 1] > self.prob_threshold
            else:
                pred = _sigmoid(m) > self.prob_threshold
            frame[self.prediction_col] = pred.astype(np.float64)

    def row_fn(self) -> RowFn | None:
        if self.is_multinomial:
            return None
        dot = _dot_row(self.features_col, self.w.tolist())
        b, raw_t, prob_t = self.b, self.raw_threshold, self.prob_threshold
        raw_col, prob_col, pred_col = self.raw_col, self.prob_col, self.prediction_col

        def logistic(row: Row) -> None:
            m = dot(row) + b
            if raw_col:
                row[raw_col] = [-m, m]
            p0 = 0.0
            if prob_col:
                p0 = 1.0 / (1.0 + _exp_row(m))
                row[prob_col] = [p0, 1.0 - p0]
            if pred_col:
                if raw_col:
                    pred = m > raw_t
                elif prob_col:
                    pred = 1.0 - p0 > prob_t
                else:
                    pred = 1.0 / (1.0 + _exp_row(-m)) > prob_t
                row[pred_col] = 1.0 if pred else 0.0

        return logistic


@register("org.apache.spark.ml.classification.LinearSVCModel")
class LinearSVCTwin(_ClassifierTwin):
    """Linear SVM: rawPrediction ``[-m, m]``, prediction ``m > threshold``; no probability."""

    probabilistic = False

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        row = stage.read_rows()[0]
        self.w = vector_from_struct(row["coefficients"])
        self.b = float(row["intercept"])
        self.num_features = self.w.size
        self.threshold = float(stage.param("threshold", 0.0))

    def _raw(self, x: Matrix) -> np.ndarray:
        m = _matmul(x, self.w) + self.b
        return np.column_stack([-m, m])

    def _raw2pred(self, raw: np.ndarray) -> np.ndarray:
        return (raw[:, 1] > self.threshold).astype(np.float64)


@register("org.apache.spark.ml.classification.NaiveBayesModel")
class NaiveBayesTwin(_ClassifierTwin):
    """Naive Bayes: multinomial, complement, bernoulli and gaussian model types.

    Spark rejects negative (multinomial, complement) or non-0/1 (bernoulli) feature values; the
    twin raises :class:`FeatureValueError` for the same rows.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        row = stage.read_rows()[0]
        self.model_type: str = stage.param("modelType", "multinomial")
        self.pi = vector_from_struct(row["pi"])
        self.theta = matrix_from_struct(row["theta"])  # (numClasses, numFeatures)
        self.num_classes, self.num_features = self.theta.shape
        self._check_thresholds()
        if self.model_type == "bernoulli":
            neg_theta = np.log1p(-np.exp(self.theta))
            self.theta_minus_neg = np.ascontiguousarray((self.theta - neg_theta).T)
            self.pi_plus_neg_sum = self.pi + neg_theta.sum(axis=1)
        elif self.model_type == "gaussian":
            self.sigma = matrix_from_struct(row["sigma"])
            self.log_var_sum = np.log(self.sigma).sum(axis=1)
        elif self.model_type in ("multinomial", "complement"):
            self.theta_t = np.ascontiguousarray(self.theta.T)
        else:
            raise UnsupportedStageError(f"NaiveBayes modelType {self.model_type!r} has no NumPy twin")

    def _values(self, x: Matrix) -> np.ndarray:
        return x.data if sp.issparse(x) else x

    def _raw(self, x: Matrix) -> np.ndarray:
        mt = self.model_type
        if mt in ("multinomial", "complement"):
            if not np.all(self._values(x) >= 0.0):
                raise FeatureValueError(
                    f"NaiveBayes ({mt}) requires nonnegative feature values in {self.features_col!r}"
                )
            prob = _matmul(x, self.theta_t)
            if mt == "multinomial":
                return prob + self.pi
            max_v = prob.max(axis=1)
            log_sum_exp = np.log(_seq_sum(np.exp(prob - max_v[:, None]))) + max_v
            return prob - log_sum_exp[:, None]
        if mt == "bernoulli":
            v = self._values(x)
            if not np.all((v == 0.0) | (v == 1.0)):
                raise FeatureValueError(
                    f"NaiveBayes (bernoulli) requires 0/1 feature values in {self.features_col!r}"
                )
            return _matmul(x, self.theta_minus_neg) + self.pi_plus_neg_sum
        xd = _to_dense(x)
        out = np.empty((xd.shape[0], self.num_classes))
        for i in range(self.num_classes):
            d = xd - self.theta[i]
            s = _seq_sum(d * d / self.sigma[i])
            out[:, i] = self.pi[i] - (s + self.log_var_sum[i]) / 2
        return out

    def _raw2prob(self, raw: np.ndarray) -> np.ndarray:
        return _softmax_minvalue(raw)


# -------------------------------------------------------------------------------------------- trees
@dataclass
class _Forest:
    """All trees of a model compiled into flat node arrays (global node numbering).

    ``children[2*i]`` / ``children[2*i+1]`` are node ``i``'s left / right child; a leaf points to
    itself on both sides, so walking ``depth`` steps lands every row on its leaf.
    """

    roots: np.ndarray
    feature: np.ndarray  # index into ``used`` (0 for leaves)
    threshold: np.ndarray
    children: np.ndarray
    cat_row: np.ndarray  # row in cat_table for categorical splits, -1 otherwise
    cat_table: np.ndarray  # (n_categorical_nodes, width) bool: value is in the split's category set
    cat_is_left: np.ndarray  # per categorical node: True if the set holds the left categories
    used: np.ndarray  # original feature indices the splits read
    depth: int
    prediction: np.ndarray
    impurity: np.ndarray
    stats: np.ndarray  # (n_nodes, n_stats) impurity stats
    num_features: int

    @property
    def num_trees(self) -> int:
        return int(self.roots.size)

    def leaves(self, x: Matrix) -> np.ndarray:
        """Global leaf node index per row and tree, shape ``(n_rows, n_trees)``."""
        n, t = x.shape[0], self.num_trees
        node = np.tile(self.roots, n)
        if self.depth == 0 or n == 0:
            return node.reshape(n, t)
        xu = _dense_columns(x, self.used)
        flat = xu.ravel()
        base = np.repeat(np.arange(n, dtype=np.int64) * xu.shape[1], t)
        has_cat = self.cat_table.shape[0] > 0
        width = self.cat_table.shape[1]
        for _ in range(self.depth):
            v = flat[base + self.feature[node]]
            right = ~(v <= self.threshold[node])
            if has_cat:
                c = self.cat_row[node]
                m = c >= 0
                if m.any():
                    xv, cm = v[m], c[m]
                    ok = (xv >= 0) & (xv < width) & (xv == np.floor(xv))
                    member = np.zeros(xv.size, dtype=bool)
                    member[ok] = self.cat_table[cm[ok], xv[ok].astype(np.int64)]
                    right[m] = member != self.cat_is_left[cm]
            node = self.children[2 * node + right]
        return node.reshape(n, t)


def _lit(v: float) -> str:
    """A float as a Python literal that evaluates to exactly it (``NaN`` and infinities included)."""
    return repr(float(v)) if math.isfinite(v) else f"float({str(float(v))!r})"


def _forest_function(
    forest: _Forest, leaf: Callable[[int, int], list[str]], prologue: list[str], epilogue: list[str]
) -> Callable[[list[float]], Any]:
    """Python source for every tree of ``forest`` as nested ``if``s over the features, compiled once.

    The function takes the feature list ``x``; ``leaf(tree, node)`` gives the statements run at a
    leaf (accumulating into the variables ``prologue`` sets up), ``epilogue`` ends it (``return ...``).
    A continuous split is ``x <= threshold`` (``NaN`` goes right, as in :meth:`_Forest.leaves`); a
    categorical split is a membership test in a frozenset of float category values.
    """
    consts: dict[str, Any] = {}

    def lit(v: float) -> str:
        if math.isfinite(v):
            return repr(float(v))
        name = f"K{len(consts)}"
        consts[name] = float(v)
        return name

    used = forest.used.tolist()
    lines = ["def forest(x):", *(f"    f{j} = x[{f}]" for j, f in enumerate(used))]
    lines += [f"    {p}" for p in prologue]
    children, feature, threshold = forest.children.tolist(), forest.feature.tolist(), forest.threshold
    cat_row, cat_is_left = forest.cat_row.tolist(), forest.cat_is_left.tolist()

    def emit(tree: int, node: int, depth: int) -> None:
        pad = "    " * depth
        left, right = children[2 * node], children[2 * node + 1]
        if left == node:
            lines.extend(pad + stmt for stmt in leaf(tree, node))
            return
        f, c = feature[node], cat_row[node]
        if c >= 0:
            name = f"S{c}"
            consts[name] = frozenset(float(j) for j in np.flatnonzero(forest.cat_table[c]).tolist())
            cond = f"f{f} in {name}" if cat_is_left[c] else f"f{f} not in {name}"
        else:
            cond = f"f{f} <= {lit(float(threshold[node]))}"
        lines.append(f"{pad}if {cond}:")
        emit(tree, left, depth + 1)
        lines.append(f"{pad}else:")
        emit(tree, right, depth + 1)

    for t, root in enumerate(forest.roots.tolist()):
        emit(t, root, 1)
    lines += [f"    {e}" for e in epilogue]
    return generated_function(lines, "forest", consts, "sparkpipe forest")


def _children_and_depth(
    roots: np.ndarray, is_leaf: np.ndarray, left: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, int]:
    """The interleaved ``children`` array of flattened trees (``[2*i]`` left, ``[2*i+1]`` right) and
    their greatest depth, walked level by level from ``roots``."""
    children = np.empty(2 * left.size, dtype=np.int64)
    children[0::2], children[1::2] = left, right
    depth, frontier = 0, roots
    while True:
        internal = frontier[~is_leaf[frontier]]
        if internal.size == 0:
            return children, depth
        frontier = np.concatenate([left[internal], right[internal]])
        depth += 1


def _list_column(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow list column as (flat values, offsets)."""
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    arr = arr.cast(pa.list_(pa.float64()))
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.float64)
    start = offsets[0]
    return values[start : offsets[-1]], offsets - start


def _compile_forest(stage: StageFiles, num_features: int) -> tuple[_Forest, np.ndarray]:
    """Read a tree or ensemble stage's node table into a :class:`_Forest`; also return tree weights."""
    nodes = _read_nodes(stage)
    roots, left, right = _link_trees(stage, nodes)
    is_leaf = nodes.left_id < 0
    feat = nodes.feat
    used = np.unique(feat[~is_leaf]) if (~is_leaf).any() else np.zeros(0, dtype=np.int64)
    if used.size and (used.min() < 0 or used.max() >= num_features):
        raise ScoringError(f"stage {stage.path.name} splits on a feature outside 0..{num_features - 1}")
    n = nodes.node_id.size
    feature = np.zeros(n, dtype=np.int64)
    feature[~is_leaf] = np.searchsorted(used, feat[~is_leaf])
    cat_row, cat_table, cat_is_left = _categorical_splits(is_leaf, nodes.num_cats, nodes.cat_lists)
    threshold = np.full(n, np.nan)
    for j in np.flatnonzero(~is_leaf & (nodes.num_cats < 0)):
        threshold[j] = nodes.cat_lists[j][0]
    children, depth = _children_and_depth(roots, is_leaf, left, right)
    weights = _tree_weights(stage, roots.size)
    forest = _Forest(
        roots=roots,
        feature=feature,
        threshold=threshold,
        children=children,
        cat_row=cat_row,
        cat_table=cat_table,
        cat_is_left=cat_is_left,
        used=used.astype(np.int64),
        depth=depth,
        prediction=nodes.prediction,
        impurity=nodes.impurity,
        stats=nodes.stats,
        num_features=num_features,
    )
    return forest, weights


@dataclass
class _Nodes:
    """A tree stage's node table, sorted by tree then node id (one entry per node)."""

    tree_id: np.ndarray
    node_id: np.ndarray
    stats: np.ndarray  # (n_nodes, n_stats) impurity stats, zero-padded
    prediction: np.ndarray
    impurity: np.ndarray
    left_id: np.ndarray  # node ids (within the tree) of the children; -1 for a leaf
    right_id: np.ndarray
    feat: np.ndarray  # split feature index
    num_cats: np.ndarray  # categories of a categorical split, -1 for a continuous one
    cat_lists: list[np.ndarray]  # left categories, or the threshold of a continuous split


def _read_nodes(stage: StageFiles) -> _Nodes:
    """The node table of a single tree (``data``) or an ensemble (``data`` with ``treeID``/``nodeData``)."""
    table = stage.read_table("data")
    if "nodeData" in table.column_names:
        tree_id = np.asarray(table.column("treeID").to_numpy(), dtype=np.int64)
        table = table.flatten().flatten()
        prefix = "nodeData."
    else:
        tree_id = np.zeros(table.num_rows, dtype=np.int64)
        table = table.flatten()
        prefix = ""

    def col(name: str) -> Any:
        return table.column(prefix + name)

    def num(name: str, dtype: Any) -> np.ndarray:
        return np.asarray(col(name).to_numpy(), dtype=dtype)

    node_id = num("id", np.int64)
    order = np.lexsort((node_id, tree_id))
    stats_vals, stats_off = _list_column(col("impurityStats"))
    cats_vals, cats_off = _list_column(col("split.leftCategoriesOrThreshold"))
    n_stats = int(np.max(np.diff(stats_off))) if stats_off.size > 1 else 0
    stats = np.zeros((node_id.size, n_stats))
    for i in range(node_id.size):  # compile time only
        s = stats_vals[stats_off[i] : stats_off[i + 1]]
        stats[i, : s.size] = s
    return _Nodes(
        tree_id=tree_id[order],
        node_id=node_id[order],
        stats=stats[order],
        prediction=num("prediction", np.float64)[order],
        impurity=num("impurity", np.float64)[order],
        left_id=num("leftChild", np.int64)[order],
        right_id=num("rightChild", np.int64)[order],
        feat=num("split.featureIndex", np.int64)[order],
        num_cats=num("split.numCategories", np.int64)[order],
        cat_lists=[cats_vals[cats_off[i] : cats_off[i + 1]] for i in order],
    )


def _link_trees(stage: StageFiles, nodes: _Nodes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global node numbers: each tree's root and every node's left and right child (a leaf points to
    itself)."""
    tree_id, node_id = nodes.tree_id, nodes.node_id
    n = node_id.size
    trees = np.unique(tree_id)
    roots = np.empty(trees.size, dtype=np.int64)
    left = np.arange(n, dtype=np.int64)
    right = np.arange(n, dtype=np.int64)
    start = 0
    for k, t in enumerate(trees):
        stop = start + int(np.sum(tree_id == t))
        ids = node_id[start:stop]
        lookup = {int(i): start + j for j, i in enumerate(ids)}
        if 0 not in lookup:
            raise ScoringError(f"tree {t} of stage {stage.path.name} has no root node (id 0)")
        roots[k] = lookup[0]
        for j in range(start, stop):
            if nodes.left_id[j] >= 0:
                left[j] = lookup[int(nodes.left_id[j])]
                right[j] = lookup[int(nodes.right_id[j])]
        start = stop
    return roots, left, right


def _categorical_splits(
    is_leaf: np.ndarray, num_cats: np.ndarray, cat_lists: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cat_row, cat_table, cat_is_left)`` of the categorical splits (see :class:`_Forest`).

    Spark's CategoricalSplit keeps the smaller side: with isLeft = len(left) <= numCategories // 2
    it tests membership of the left categories, otherwise of the complement in 0..numCategories-1
    (so a value outside both sets, e.g. unseen or fractional, goes left in that case).
    """
    cat_row = np.full(is_leaf.size, -1, dtype=np.int64)
    cat_nodes = np.flatnonzero(~is_leaf & (num_cats >= 0))
    width = 1
    for j in cat_nodes:
        width = max(width, int(num_cats[j]))
        if cat_lists[j].size:
            width = max(width, int(np.max(cat_lists[j])) + 1)
    cat_table = np.zeros((cat_nodes.size, width), dtype=bool)
    cat_is_left = np.ones(cat_nodes.size, dtype=bool)
    for r, j in enumerate(cat_nodes):
        cat_row[j] = r
        cats = cat_lists[j]
        cats = cats[(cats >= 0) & (cats == np.floor(cats))].astype(np.int64)
        cat_is_left[r] = cat_lists[j].size <= int(num_cats[j]) // 2
        if cat_is_left[r]:
            cat_table[r, cats] = True
        else:
            cat_table[r, : int(num_cats[j])] = True
            cat_table[r, cats] = False
    return cat_row, cat_table, cat_is_left


def _tree_weights(stage: StageFiles, n_trees: int) -> np.ndarray:
    """Per-tree weights from ``treesMetadata`` (ensembles), else ones."""
    weights = np.ones(n_trees)
    meta_dir = stage.path / "treesMetadata"
    if meta_dir.is_dir():
        mt = stage.read_table("treesMetadata")
        # Spark 4.3 writes the columns unnamed (_1, _2, _3 = treeID, metadata, weights)
        names = mt.column_names
        id_col = "treeID" if "treeID" in names else names[0]
        w_col = "weights" if "weights" in names else names[2]
        w_ids = np.asarray(mt.column(id_col).to_numpy(), dtype=np.int64)
        w = np.asarray(mt.column(w_col).to_numpy(), dtype=np.float64)
        weights = w[np.argsort(w_ids)]
        if weights.size != n_trees:
            raise ScoringError(f"stage {stage.path.name}: {weights.size} tree weights for {n_trees} trees")
    return weights


def _num_features(stage: StageFiles) -> int:
    nf = stage.metadata.get("numFeatures", stage.param("numFeatures"))
    if nf is None:
        raise ScoringError(f"stage {stage.path.name}: metadata lacks numFeatures")
    return int(nf)


def _reject_leaf_col(stage: StageFiles) -> None:
    if stage.param("leafCol", ""):
        raise UnsupportedStageError(
            f"{stage.class_name} with leafCol={stage.param('leafCol')!r} has no NumPy twin; "
            "clear leafCol or score with Spark"
        )


class _TreeClassifierTwin(_ClassifierTwin):
    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        _reject_leaf_col(stage)
        self.num_features = _num_features(stage)
        self.forest, self.weights = _compile_forest(stage, self.num_features)
        nc = stage.metadata.get("numClasses")
        self.num_classes = int(nc) if nc is not None else self.forest.stats.shape[1]
        self._check_thresholds()

    def _raw2prob(self, raw: np.ndarray) -> np.ndarray:
        return _normalize_rows(raw)

    @staticmethod
    def _row_raw2prob(raw: list[float]) -> list[float]:
        total = 0.0
        for v in raw:
            if v < 0.0:
                raise RowFallback  # the batch path raises FeatureValueError
            total += v
        if not total > 0.0:
            raise RowFallback
        return [v / total for v in raw]


@register("org.apache.spark.ml.classification.DecisionTreeClassificationModel")
class DecisionTreeClassifierTwin(_TreeClassifierTwin):
    """Decision tree classifier: rawPrediction = leaf class counts; probability = normalised counts."""

    def _raw(self, x: Matrix) -> np.ndarray:
        return self.forest.stats[self.forest.leaves(x)[:, 0], : self.num_classes].copy()

    def _predict(self, x: Matrix) -> np.ndarray:
        return self.forest.prediction[self.forest.leaves(x)[:, 0]]

    def _row_raw(self) -> Callable[[list[float]], list[float]]:
        stats = self.forest.stats[:, : self.num_classes].tolist()

        def leaf(tree: int, node: int) -> list[str]:
            return [f"return [{', '.join(map(_lit, stats[node]))}]"]

        return _forest_function(self.forest, leaf, [], [])


@register("org.apache.spark.ml.classification.RandomForestClassificationModel")
class RandomForestClassifierTwin(_TreeClassifierTwin):
    """Random forest classifier: rawPrediction = sum over trees of normalised leaf class counts."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        stats = self.forest.stats[:, : self.num_classes]
        total = _seq_sum(stats)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.votes = np.where(total[:, None] != 0, stats / total[:, None], 0.0)

    def _raw(self, x: Matrix) -> np.ndarray:
        # cumsum accumulates strictly in tree order: the same rounding as Spark's loop
        return np.cumsum(self.votes[self.forest.leaves(x)], axis=1)[:, -1, :]

    def _row_raw(self) -> Callable[[list[float]], list[float]]:
        votes = self.votes.tolist()
        k = range(self.num_classes)

        def leaf(tree: int, node: int) -> list[str]:
            return [f"r{c} += {_lit(votes[node][c])}" for c in k]  # tree order: cumsum's rounding

        acc = ", ".join(f"r{c}" for c in k)
        return _forest_function(
            self.forest, leaf, [f"{acc} = {', '.join('0.0' for _ in k)}"], [f"return [{acc}]"]
        )


@register("org.apache.spark.ml.classification.GBTClassificationModel")
class GBTClassifierTwin(_TreeClassifierTwin):
    """Gradient-boosted trees (logistic loss): margin = sum of weight * tree prediction.

    rawPrediction ``[-m, m]``; probability ``p0 = 1/(1+exp(2m))``, ``p1 = 1 - p0``; prediction
    ``m > 0`` unless ``thresholds`` are set.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.num_classes = 2
        self._check_thresholds()

    def margin(self, x: Matrix) -> np.ndarray:
        """Sum of ``weight_i * prediction_i`` over trees, accumulated in tree order."""
        terms = self.forest.prediction[self.forest.leaves(x)] * self.weights
        return np.cumsum(terms, axis=1)[:, -1]

    def _raw(self, x: Matrix) -> np.ndarray:
        m = self.margin(x)
        return np.column_stack([-m, m])

    def _raw2prob(self, raw: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            p0 = 1.0 / (1.0 + np.exp(-2.0 * raw[:, 0]))
        return np.column_stack([p0, 1.0 - p0])

    @staticmethod
    def _row_raw2prob(raw: list[float]) -> list[float]:
        p0 = 1.0 / (1.0 + _exp_row(-2.0 * raw[0]))
        return [p0, 1.0 - p0]

    def _row_raw(self) -> Callable[[list[float]], list[float]]:
        terms = (self.forest.prediction[:, None] * self.weights[None, :]).tolist()  # as margin()'s products

        def leaf(tree: int, node: int) -> list[str]:
            return [f"m += {_lit(terms[node][tree])}"]

        return _forest_function(self.forest, leaf, ["m = 0.0"], ["return [-m, m]"])

    def _predict(self, x: Matrix) -> np.ndarray:
        if self.thresholds is not None:
            return super()._predict(x)
        return (self.margin(x) > 0.0).astype(np.float64)


class _TreeRegressorTwin(_ModelTwin):
    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        _reject_leaf_col(stage)
        self.num_features = _num_features(stage)
        self.forest, self.weights = _compile_forest(stage, self.num_features)

    def predict(self, x: Matrix) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def transform(self, frame: Frame) -> None:
        x = _features(frame, self.features_col, self.num_features)
        if self.prediction_col:
            frame[self.prediction_col] = self.predict(x)

    def _row_terms(self) -> tuple[list[list[float]], str]:
        """Per node and tree the term a leaf adds, and the expression of the prediction from the sum
        ``m`` (the row path of :meth:`predict`)."""
        raise NotImplementedError

    def row_fn(self) -> RowFn | None:
        features, size, pred_col = self.features_col, self.num_features, self.prediction_col
        terms, result = self._row_terms()

        def leaf(tree: int, node: int) -> list[str]:
            return [f"m += {_lit(terms[node][tree])}"]  # tree order: cumsum's rounding

        walk = _forest_function(self.forest, leaf, ["m = 0.0"], [f"return {result}"])

        def regress(row: Row) -> None:
            x = row[features]
            if type(x) is not list or len(x) != size:
                raise RowFallback
            if pred_col:
                row[pred_col] = walk(x)

        return regress


@register("org.apache.spark.ml.regression.DecisionTreeRegressionModel")
class DecisionTreeRegressorTwin(_TreeRegressorTwin):
    """Decision tree regressor: leaf prediction (and leaf variance when ``varianceCol`` is set)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.variance_col: str = stage.param("varianceCol", "") or ""
        # Spark reports ``impurityStats.calculate()`` of the leaf (not the stored ``impurity``):
        # (sumSquares - sum^2 / count) / count, 0 for an empty leaf.
        st = self.forest.stats
        count, total, sum_sq = st[:, 0], st[:, 1], st[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            self.variance = np.where(count == 0, 0.0, (sum_sq - (total * total) / count) / count)

    @property
    def output_cols(self) -> list[str]:
        return [c for c in (self.prediction_col, self.variance_col) if c]

    def predict(self, x: Matrix) -> np.ndarray:
        return self.forest.prediction[self.forest.leaves(x)[:, 0]]

    def transform(self, frame: Frame) -> None:
        x = _features(frame, self.features_col, self.num_features)
        leaves = self.forest.leaves(x)[:, 0]
        if self.prediction_col:
            frame[self.prediction_col] = self.forest.prediction[leaves]
        if self.variance_col:
            frame[self.variance_col] = self.variance[leaves]

    def row_fn(self) -> RowFn:
        features, size = self.features_col, self.num_features
        pred_col, var_col = self.prediction_col, self.variance_col
        pred, var = self.forest.prediction.tolist(), self.variance.tolist()
        walk = _forest_function(self.forest, lambda tree, node: [f"return {node}"], [], [])

        def regress(row: Row) -> None:
            x = row[features]
            if type(x) is not list or len(x) != size:
                raise RowFallback
            leaf = walk(x)
            if pred_col:
                row[pred_col] = pred[leaf]
            if var_col:
                row[var_col] = var[leaf]

        return regress


@register("org.apache.spark.ml.regression.RandomForestRegressionModel")
class RandomForestRegressorTwin(_TreeRegressorTwin):
    """Random forest regressor: mean of the trees' leaf predictions (sequential sum / numTrees)."""

    def predict(self, x: Matrix) -> np.ndarray:
        preds = self.forest.prediction[self.forest.leaves(x)]
        return np.cumsum(preds, axis=1)[:, -1] / preds.shape[1]

    def _row_terms(self) -> tuple[list[list[float]], str]:
        n = self.forest.num_trees
        return [[p] * n for p in self.forest.prediction.tolist()], f"m / {float(n)!r}"


@register("org.apache.spark.ml.regression.GBTRegressionModel")
class GBTRegressorTwin(_TreeRegressorTwin):
    """Gradient-boosted trees regressor: sum of ``weight_i * tree_i`` prediction."""

    def predict(self, x: Matrix) -> np.ndarray:
        terms = self.forest.prediction[self.forest.leaves(x)] * self.weights
        return np.cumsum(terms, axis=1)[:, -1]

    def _row_terms(self) -> tuple[list[list[float]], str]:
        return (self.forest.prediction[:, None] * self.weights[None, :]).tolist(), "m"


# ------------------------------------------------------------------------------------------- MLP
@register("org.apache.spark.ml.classification.MultilayerPerceptronClassificationModel")
class MultilayerPerceptronTwin(_ClassifierTwin):
    """Feed-forward network: affine + sigmoid hidden layers, affine output, softmax probability.

    Spark's flat ``weights`` hold, per layer ``(n_in -> n_out)``, the ``n_out x n_in`` weight matrix
    in column-major order followed by the ``n_out`` biases.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        layers = [int(v) for v in stage.param("layers")]
        weights = vector_from_struct(stage.read_rows()[0]["weights"])
        self.num_features, self.num_classes = layers[0], layers[-1]
        self._check_thresholds()
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        off = 0
        for n_in, n_out in itertools.pairwise(layers):
            w = weights[off : off + n_in * n_out].reshape(n_in, n_out)
            off += n_in * n_out
            b = weights[off : off + n_out]
            off += n_out
            self.layers.append((np.ascontiguousarray(w), b.copy()))
        if off != weights.size:
            raise ScoringError(
                f"MLP stage {stage.path.name}: layers {layers} need {off} weights, found {weights.size}"
            )

    def _raw(self, x: Matrix) -> np.ndarray:
        h: Any = x
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = _matmul(h, w) + b
            if i < last:
                h = _sigmoid(h)
        return h

    def _raw2prob(self, raw: np.ndarray) -> np.ndarray:
        return _softmax_minvalue(raw)


# ----------------------------------------------------------------------------- linear regressions
@register("org.apache.spark.ml.regression.LinearRegressionModel")
class LinearRegressionTwin(_ModelTwin):
    """Linear regression: ``prediction = x.w + b``."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        row = stage.read_rows()[0]
        self.w = vector_from_struct(row["coefficients"])
        self.b = float(row["intercept"])

    def transform(self, frame: Frame) -> None:
        x = _features(frame, self.features_col, self.w.size)
        if self.prediction_col:
            frame[self.prediction_col] = _matmul(x, self.w) + self.b


_FAMILY_DEFAULT_LINK = {"gaussian": "identity", "binomial": "logit", "poisson": "log", "gamma": "inverse"}
_LINK_NAMES = ("identity", "log", "inverse", "logit", "probit", "cloglog", "sqrt")


def _unlink(link: str, power: float, eta: np.ndarray) -> np.ndarray:
    """Inverse link function ``mu = g^-1(eta)`` as Spark's ``Link.unlink``."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if link == "identity":
            return eta.copy()
        if link == "log":
            return np.exp(eta)
        if link == "inverse":
            return 1.0 / eta
        if link == "logit":
            return 1.0 / (1.0 + np.exp(-1.0 * eta))
        if link == "probit":  # breeze Gaussian(0, 1).cdf
            return 0.5 * (1.0 + special.erf(eta / np.sqrt(2.0)))
        if link == "cloglog":
            return 1.0 - np.exp(-1.0 * np.exp(eta))
        if link == "sqrt":
            return eta * eta
        if link == "power":
            return np.power(eta, 1.0 / power)
    raise UnsupportedStageError(f"GLM link {link!r} has no NumPy twin")


@register("org.apache.spark.ml.regression.GeneralizedLinearRegressionModel")
class GeneralizedLinearRegressionTwin(_ModelTwin):
    """Generalized linear regression: ``eta = x.w + b + offset``, ``prediction = project(unlink(eta))``.

    Families gaussian, binomial, poisson, gamma and tweedie (``variancePower`` 0/1/2 behave as
    gaussian/poisson/gamma, as in Spark); links identity, log, inverse, logit, probit, cloglog,
    sqrt and tweedie's power link. ``linkPredictionCol`` (eta) and ``offsetCol`` are honoured.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        row = stage.read_rows()[0]
        self.w = vector_from_struct(row["coefficients"])
        self.b = float(row["intercept"])
        explicit = stage.metadata.get("paramMap", {})
        family = str(stage.param("family", "gaussian")).lower()
        vp = float(stage.param("variancePower", 0.0))
        if family == "tweedie":
            self.family = {0.0: "gaussian", 1.0: "poisson", 2.0: "gamma"}.get(vp, "tweedie")
            lp = float(explicit["linkPower"]) if "linkPower" in explicit else 1.0 - vp
            self.link, self.link_power = {
                0.0: ("log", 0.0),
                1.0: ("identity", 1.0),
                -1.0: ("inverse", -1.0),
                0.5: ("sqrt", 0.5),
            }.get(lp, ("power", lp))
        else:
            if family not in _FAMILY_DEFAULT_LINK:
                raise UnsupportedStageError(f"GLM family {family!r} has no NumPy twin")
            self.family = family
            link = explicit.get("link") or _FAMILY_DEFAULT_LINK[family]
            if str(link).lower() not in _LINK_NAMES:
                raise UnsupportedStageError(f"GLM link {link!r} has no NumPy twin")
            self.link, self.link_power = str(link).lower(), 0.0
        self.link_prediction_col: str = stage.param("linkPredictionCol", "") or ""
        self.offset_col: str = stage.param("offsetCol", "") or ""

    @property
    def input_cols(self) -> list[str]:
        return [self.features_col] + ([self.offset_col] if self.offset_col else [])

    @property
    def output_cols(self) -> list[str]:
        return [c for c in (self.prediction_col, self.link_prediction_col) if c]

    def _project(self, mu: np.ndarray) -> np.ndarray:
        """``Family.project``: keep the mean inside the family's valid range."""
        f = self.family
        if f == "gaussian":
            out = np.where(np.isneginf(mu), _DOUBLE_MIN_VALUE, mu)
            return np.where(np.isposinf(out), -_DOUBLE_MIN_VALUE, out)
        if f == "binomial":
            return np.where(mu < 1e-16, 1e-16, np.where(mu > 1.0 - 1e-16, 1.0 - 1e-16, mu))
        # poisson, gamma, tweedie
        return np.where(mu < 1e-16, 1e-16, np.where(np.isinf(mu), -_DOUBLE_MIN_VALUE, mu))

    def link_prediction(self, frame: Frame) -> np.ndarray:
        """The linear predictor ``eta`` for every row."""
        x = _features(frame, self.features_col, self.w.size)
        eta = _matmul(x, self.w) + self.b
        if self.offset_col:
            if self.offset_col not in frame:
                raise ScoringError(f"GLM offset column {self.offset_col!r} is missing from the frame")
            eta = eta + np.asarray(frame[self.offset_col], dtype=np.float64)
        return eta

    def transform(self, frame: Frame) -> None:
        eta = self.link_prediction(frame)
        if self.prediction_col:
            frame[self.prediction_col] = self._project(_unlink(self.link, self.link_power, eta))
        if self.link_prediction_col:
            frame[self.link_prediction_col] = eta


# -------------------------------------------------------------------------------------- clustering
def _fast_squared_distance(
    x: Matrix, x_norm: np.ndarray, centers: np.ndarray, c_norm: np.ndarray
) -> np.ndarray:
    """``MLUtils.fastSquaredDistance`` between every row and every center, shape ``(n, k)``.

    Uses ``|a|^2 + |b|^2 - 2 a.b`` when Spark's precision bound allows it, the exact squared
    distance otherwise (sparse rows get Spark's second bound check first).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _fast_squared_distance_impl(x, x_norm, centers, c_norm)


def _fast_squared_distance_impl(
    x: Matrix, x_norm: np.ndarray, centers: np.ndarray, c_norm: np.ndarray
) -> np.ndarray:
    dot = _matmul(x, centers.T)
    sum_sq = x_norm[:, None] ** 2 + c_norm[None, :] ** 2
    norm_diff = x_norm[:, None] - c_norm[None, :]
    bound1 = 2.0 * EPSILON * sum_sq / (norm_diff * norm_diff + EPSILON)
    fast = sum_sq - 2.0 * dot
    exact_needed = ~(bound1 < 1e-6)
    if sp.issparse(x):
        fast2 = np.maximum(fast, 0.0)
        bound2 = EPSILON * (sum_sq + 2.0 * np.abs(dot)) / (fast2 + EPSILON)
        out = np.where(exact_needed, fast2, fast)
        exact_needed = exact_needed & (bound2 > 1e-6)
    else:
        out = fast
    rows, cols = np.nonzero(exact_needed)
    if rows.size:
        xr = _to_dense(x[np.unique(rows)]) if sp.issparse(x) else x
        if sp.issparse(x):
            pos = np.searchsorted(np.unique(rows), rows)
            diff = xr[pos] - centers[cols]
        else:
            diff = xr[rows] - centers[cols]
        out = out.copy()
        out[rows, cols] = _seq_sum(diff * diff)  # Vectors.sqdist: left-to-right sum
    return out


def _argmin_first(d: np.ndarray) -> np.ndarray:
    """Index of the first strictly smallest value per row (``NaN`` never wins; all-``NaN`` -> 0)."""
    return np.argmin(np.where(np.isnan(d), np.inf, d), axis=1)


def _seq_norms(x: Matrix) -> np.ndarray:
    """L2 norm of every row with a left-to-right sum of squares (``Vectors.norm(v, 2)``)."""
    d = _to_dense(x)
    with np.errstate(over="ignore"):
        return np.sqrt(_seq_sum(d * d))


def _cosine_distance(x: Matrix, x_norm: np.ndarray, centers: np.ndarray, c_norm: np.ndarray) -> np.ndarray:
    """``1 - dot(center, x) / |center| / |x|``; Spark asserts both norms are positive."""
    if np.any(~(x_norm > 0)) or np.any(~(c_norm > 0)):
        raise FeatureValueError("cosine distance is not defined for zero-length vectors")
    return 1 - _matmul(x, centers.T) / c_norm[None, :] / x_norm[:, None]


@register("org.apache.spark.ml.clustering.KMeansModel")
class KMeansTwin(_ModelTwin):
    """K-means: index of the closest center (euclidean or cosine), found the way Spark finds it.

    Spark's ``findClosest`` uses pairwise center statistics (Elkan's triangle-inequality bounds)
    with early exits; in exact arithmetic that is the argmin with ties to the lower index, and
    mirroring the bounds keeps the same answer where rounding makes two centers tie.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        rows = sorted(stage.read_rows(), key=lambda r: r["clusterIdx"])
        self.centers = np.vstack([vector_from_struct(r["clusterCenter"]) for r in rows])
        self.center_norms = _seq_norms(self.centers)
        self.distance_measure: str = stage.param("distanceMeasure", "euclidean")
        if self.distance_measure not in ("euclidean", "cosine"):
            raise UnsupportedStageError(f"KMeans distanceMeasure {self.distance_measure!r} has no twin")
        k, d = self.centers.shape
        self.statistics: np.ndarray | None = None
        if k < 1000 and k * k * d < 1_000_000:
            self.statistics = self._compute_statistics()

    def _compute_statistics(self) -> np.ndarray:
        """``DistanceMeasure.computeStatistics`` as a full symmetric ``(k, k)`` matrix."""
        k = self.centers.shape[0]
        if k == 1:
            return np.full((1, 1), np.nan)
        dist = self._distances(self.centers, self.center_norms)
        if self.distance_measure == "euclidean":
            stat = 0.25 * np.sqrt(dist) * np.sqrt(dist)
        else:
            stat = 1 - np.sqrt(1 - dist / 2)
        out = np.array(stat)
        for i in range(k):
            others = np.delete(stat[i], i)
            out[i, i] = np.min(others)
        return out

    def _distances(self, x: Matrix, x_norm: np.ndarray) -> np.ndarray:
        if self.distance_measure == "euclidean":
            return _fast_squared_distance(x, x_norm, self.centers, self.center_norms)
        return _cosine_distance(x, x_norm, self.centers, self.center_norms)

    def predict(self, x: Matrix) -> np.ndarray:
        """Closest center index per row (float64)."""
        x_norm = _seq_norms(x)
        dist = self._distances(x, x_norm)
        n, k = dist.shape
        euclid = self.distance_measure == "euclidean"
        stats = self.statistics
        best = dist[:, 0].copy() if stats is not None else np.full(n, np.inf)
        idx = np.zeros(n, dtype=np.int64)
        done = best < stats[0, 0] if stats is not None else np.zeros(n, dtype=bool)
        for i in range(0 if stats is None else 1, k):
            cond = ~done
            if euclid:
                lower = (self.center_norms[i] - x_norm) ** 2
                cond &= lower < best
            d = dist[:, i]
            if stats is not None:
                cond &= stats[i, idx] < best
                ret = cond & (d < stats[i, i])
            else:
                ret = np.zeros(n, dtype=bool)
            take = cond & ((d < best) | ret)
            best = np.where(take, d, best)
            idx = np.where(take, i, idx)
            done |= ret
        return idx.astype(np.float64)

    def transform(self, frame: Frame) -> None:
        x = _features(frame, self.features_col, self.centers.shape[1])
        if self.prediction_col:
            frame[self.prediction_col] = self.predict(x)


@register("org.apache.spark.ml.clustering.BisectingKMeansModel")
class BisectingKMeansTwin(_ModelTwin):
    """Bisecting k-means: walk the cluster tree from the root to the nearer child, output the leaf index.

    The model is stored as an old ``mllib`` model inside ``data/`` (``data/metadata`` and
    ``data/data``); leaves carry their cluster index, internal nodes negative ids.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        meta_parts = sorted((stage.path / "data" / "metadata").glob("part-*"))
        if not meta_parts:
            raise ScoringError(f"stage {stage.path.name}: missing data/metadata of the mllib model")
        meta = json.loads(meta_parts[0].read_text().strip().splitlines()[0])
        self.root_id = int(meta["rootId"])
        self.distance_measure: str = meta.get("distanceMeasure", stage.param("distanceMeasure", "euclidean"))
        if self.distance_measure not in ("euclidean", "cosine"):
            raise UnsupportedStageError(f"BisectingKMeans distanceMeasure {self.distance_measure!r}")
        nodes = stage.read_rows("data/data")
        self.nodes = {
            int(r["index"]): (
                vector_from_struct(r["center"]),
                float(r["norm"]),
                [int(c) for c in (r["children"] or [])],
            )
            for r in nodes
        }
        if self.root_id not in self.nodes:
            raise ScoringError(f"stage {stage.path.name}: root node {self.root_id} not found")
        self.num_features = self.nodes[self.root_id][0].size

    def _distance(self, x: Matrix, x_norm: np.ndarray, children: list[int]) -> np.ndarray:
        centers = np.vstack([self.nodes[c][0] for c in children])
        norms = np.array([self.nodes[c][1] for c in children])
        if self.distance_measure == "euclidean":
            return np.sqrt(_fast_squared_distance(x, x_norm, centers, norms))
        return _cosine_distance(x, x_norm, centers, norms)

    def predict(self, x: Matrix) -> np.ndarray:
        """Leaf cluster index for every row."""
        n = x.shape[0]
        x_norm = _seq_norms(x)
        current = np.full(n, self.root_id, dtype=np.int64)
        while True:
            internal = [k for k in np.unique(current) if self.nodes[int(k)][2]]
            if not internal:
                break
            for k in internal:
                children = self.nodes[int(k)][2]
                rows = np.flatnonzero(current == k)
                d = self._distance(x[rows], x_norm[rows], children)
                current[rows] = np.asarray(children, dtype=np.int64)[_argmin_first(d)]
        return current.astype(np.float64)

    def transform(self, frame: Frame) -> None:
        x = _features(frame, self.features_col, self.num_features)
        if self.prediction_col:
            frame[self.prediction_col] = self.predict(x)


@register("org.apache.spark.ml.clustering.GaussianMixtureModel")
class GaussianMixtureTwin(_ModelTwin):
    """Gaussian mixture: posterior ``(EPSILON + w_i pdf_i(x)) / sum``; prediction = argmax.

    Each component's density follows Spark's ``MultivariateGaussian``: eigendecomposition of the
    covariance (LAPACK ``dsyev``, as breeze's ``eigSym``), eigenvalues below
    ``EPSILON * max(d) * len(d)`` dropped (pseudo-determinant and pseudo-inverse).
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        row = stage.read_rows()[0]
        self.prob_col: str = stage.param("probabilityCol", "probability") or ""
        self.weights = np.asarray(row["weights"], dtype=np.float64)
        self.means = np.vstack([vector_from_struct(m) for m in row["mus"]])
        self.num_features = self.means.shape[1]
        self.root_sigma_inv: list[np.ndarray] = []
        self.log_const = np.empty(self.weights.size)
        for i, s in enumerate(row["sigmas"]):
            sigma = matrix_from_struct(s)
            d, u = sla.eigh(sigma, driver="ev")
            tol = EPSILON * np.max(d) * d.size
            keep = d > tol
            if not keep.any():
                raise ScoringError("Covariance matrix has no non-zero singular values")
            log_pdet = float(np.sum(np.log(d[keep])))
            pinv_s = np.where(keep, np.sqrt(1.0 / np.where(keep, d, 1.0)), 0.0)
            self.root_sigma_inv.append(pinv_s[:, None] * u.T)
            self.log_const[i] = -0.5 * (self.num_features * np.log(2.0 * np.pi) + log_pdet)

    @property
    def output_cols(self) -> list[str]:
        return [c for c in (self.prob_col, self.prediction_col) if c]

    def predict_probability(self, x: Matrix) -> np.ndarray:
        """Posterior probability of every component, shape ``(n, k)``."""
        xd = _to_dense(x)
        probs = np.empty((xd.shape[0], self.weights.size))
        with np.errstate(over="ignore", under="ignore"):
            for i in range(self.weights.size):
                v = (xd - self.means[i]) @ self.root_sigma_inv[i].T
                logpdf = self.log_const[i] + np.einsum("ij,ij->i", v, v) * -0.5
                probs[:, i] = EPSILON + self.weights[i] * np.exp(logpdf)
        return probs / _seq_sum(probs)[:, None]

    def transform(self, frame: Frame) -> None:
        x = _features(frame, self.features_col, self.num_features)
        if not (self.prob_col or self.prediction_col):
            return
        prob = self.predict_probability(x)
        if self.prob_col:
            frame[self.prob_col] = prob
        if self.prediction_col:
            frame[self.prediction_col] = spark_argmax(prob)


# ---------------------------------------------------------------------------------------------- ALS
@register("org.apache.spark.ml.recommendation.ALSModel")
class ALSTwin(_ModelTwin):
    """ALS recommender: ``prediction = dot(userFactor, itemFactor)`` in float32, like Spark.

    Spark accumulates ``dot += u[i] * v[i]`` in single precision over the rank and outputs a float
    column; the twin does the same, sequentially, so predictions match bit for bit. Unknown users
    or items give ``NaN`` and are flagged in the boolean column :data:`COLD_START_COL`
    (``cold_start``); with ``coldStartStrategy='drop'`` Spark removes those rows, so callers should
    drop rows where ``cold_start`` is true.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.user_col: str = stage.param("userCol", "user")
        self.item_col: str = stage.param("itemCol", "item")
        self.cold_start_strategy: str = stage.param("coldStartStrategy", "nan")
        self.user_ids, self.user_factors = self._factors(stage, "userFactors")
        self.item_ids, self.item_factors = self._factors(stage, "itemFactors")
        self.rank = self.user_factors.shape[1]
        self._item_factors_t: np.ndarray | None = None

    @staticmethod
    def _factors(stage: StageFiles, subdir: str) -> tuple[np.ndarray, np.ndarray]:
        table = stage.read_table(subdir)
        ids = np.asarray(table.column("id").to_numpy(), dtype=np.int64)
        values, offsets = _list_column(table.column("features"))
        rank = int(offsets[1] - offsets[0]) if ids.size else 0
        if ids.size and not np.all(np.diff(offsets) == rank):
            raise ScoringError(f"stage {stage.path.name}: {subdir} rows have different ranks")
        factors = values.astype(np.float32).reshape(ids.size, rank)
        order = np.argsort(ids)
        return ids[order], np.ascontiguousarray(factors[order])

    @property
    def input_cols(self) -> list[str]:
        return [self.user_col, self.item_col]

    @property
    def output_cols(self) -> list[str]:
        return [c for c in (self.prediction_col,) if c]

    def _ids(self, frame: Frame, col: str) -> np.ndarray:
        if col not in frame:
            raise ScoringError(f"input column {col!r} is missing from the frame (columns: {sorted(frame)})")
        v = np.asarray(frame[col], dtype=np.float64)
        bad = np.isnan(v) | (v != np.trunc(v)) | (v < _INT_MIN) | (v > _INT_MAX)
        if bad.any():
            raise FeatureValueError(
                f"ALS only supports non-null values in Integer range and without fractional part for "
                f"column {col}, but got {v[bad][0]!r}"
            )
        return v.astype(np.int64)

    @staticmethod
    def _lookup(ids: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(known, ids)
        pos = np.minimum(pos, max(known.size - 1, 0))
        found = (known.size > 0) & (known[pos] == ids) if known.size else np.zeros(ids.size, bool)
        return pos, found

    @staticmethod
    def _dot32(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Sequential single-precision dot product of matching rows (Spark's UDF loop)."""
        acc = np.zeros(u.shape[0], dtype=np.float32)
        for i in range(u.shape[1]):
            acc = acc + u[:, i] * v[:, i]
        return acc

    def transform(self, frame: Frame) -> None:
        users = self._ids(frame, self.user_col)
        items = self._ids(frame, self.item_col)
        upos, ufound = self._lookup(users, self.user_ids)
        ipos, ifound = self._lookup(items, self.item_ids)
        known = ufound & ifound
        pred = np.full(users.size, np.nan)
        if known.any():
            pred[known] = self._dot32(self.user_factors[upos[known]], self.item_factors[ipos[known]]).astype(
                np.float64
            )
        if self.prediction_col:
            frame[self.prediction_col] = pred
        frame[COLD_START_COL] = ~known

    def item_scores(self, upos: int) -> np.ndarray:
        """float32 scores of every item for the user at row ``upos`` of the user factors.

        Spark's ``dot += u[i] * v[i]`` in single precision, one rank column at a time for the whole
        catalogue (``rank`` vector operations over contiguous rows of the transposed item factors).
        """
        vt = self._item_factors_t
        if vt is None:
            vt = self._item_factors_t = np.ascontiguousarray(self.item_factors.T)
        u = self.user_factors[upos]
        acc = np.zeros(vt.shape[1], dtype=np.float32)
        tmp = np.empty_like(acc)
        for r in range(vt.shape[0]):
            np.multiply(vt[r], u[r], out=tmp)
            acc += tmp
        return acc

    def recommend_for_user(self, user_id: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for one user, ordered as Spark's ``recommendForUserSubset``.

        Scores are float32 dot products (returned as float64); ordering is by score descending,
        ties broken by the larger item id first (Spark's top-k of ``struct(rating, itemId)``); the
        top ``k`` is found with :func:`top_k` (``np.argpartition``, then only the candidates sorted).
        Nothing is excluded: :class:`sparkpipe.scoring.recommend.Recommender` removes seen items.

        Returns
        -------
        item_ids, scores
            Both 1-D; empty when the user was not seen in training.
        """
        pos, found = self._lookup(np.asarray([int(user_id)], dtype=np.int64), self.user_ids)
        if not found[0] or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        scores = self.item_scores(int(pos[0]))
        best = top_k(scores, self.item_ids, k)
        return self.item_ids[best].copy(), scores[best].astype(np.float64)


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best ``scores`` (``-inf`` and NaN never chosen), ordered as Spark orders a
    top-k of ``struct(score, id)``: score descending, ties by the larger id first.

    ``np.argpartition`` finds the k-th best score; every position scoring at least that much is a
    candidate (ties at the boundary included), and only the candidates are sorted.
    """
    n = scores.size
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    bad = ~np.isfinite(scores)
    n_bad = int(np.count_nonzero(bad))
    work = np.where(bad, -np.inf, scores) if n_bad else scores  # never chosen: sorted first
    if k < n - n_bad:
        kth = work[np.argpartition(work, n - k)[n - k]]  # the k-th largest (finite) score
        cand = np.flatnonzero(work >= kth)
    else:
        cand = np.flatnonzero(~bad)
    order = np.lexsort((-ids[cand], -scores[cand].astype(np.float64)))
    return cand[order[:k]]


# ------------------------------------------------------------------------------------------- xgboost
# xgboost.spark models (SparkXGBClassifierModel / SparkXGBRegressorModel) are Python stages: the saved
# stage holds Spark-style ``metadata/`` plus ``model/part-*``, the booster as xgboost's JSON model text
# (written in chunks by ``saveAsTextFile``; the JSON has no raw newlines, so the lines are concatenated).
# The twin reads the trees from that JSON and repeats xgboost's arithmetic in float32:
#
# * features: Spark casts the vector to float32 (``vector_to_array(dtype="float32")``); a value is
#   missing when it is NaN or equals ``missing`` (default NaN, so zeros of a sparse vector are values;
#   with ``missing=0`` every zero, stored or implicit, is missing) and then follows the node's default
#   direction; otherwise it goes left when ``value < split_condition`` (float32 compare);
# * margin: the intercept (``base_score`` through the objective's inverse link, ``logf`` from the C math
#   library like libxgboost's) plus the leaf values, added one tree at a time in float32, per output
#   group, as xgboost's CPU predictor does;
# * classifier outputs: what xgboost.spark computes in Python from the float32 margins - binary
#   rawPrediction ``[-m, m]``, probability ``[1 - expit(m), expit(m)]`` (SciPy's float32 ``expit``),
#   multiclass rawPrediction = margins, probability = SciPy's float32 ``softmax``; prediction is the
#   argmax of the probabilities. Spark stores the float32 values as doubles.
# * regressor output: the objective's transform of the margin (identity, or ``expf`` / logistic via the
#   C math library) as a float32 stored as double.
#
# Not supported (the server falls back to Spark): dart and gblinear boosters, categorical splits,
# vector leaves (multi_strategy multi_output_tree), base_margin_col, pred_contrib_col, features_cols.

_XGB_CLASSES = {
    "classifier": "xgboost.spark.estimator.SparkXGBClassifierModel",
    "regressor": "xgboost.spark.estimator.SparkXGBRegressorModel",
}
_XGB_LOGIT_OBJECTIVES = frozenset({"binary:logistic", "reg:logistic"})
_XGB_LOG_OBJECTIVES = frozenset({"count:poisson", "reg:gamma", "reg:tweedie"})
_XGB_IDENTITY_OBJECTIVES = frozenset(
    {
        "reg:squarederror",
        "reg:squaredlogerror",
        "reg:pseudohubererror",
        "reg:absoluteerror",
        "binary:hinge",
        "binary:logitraw",  # its intercept stays in margin space (observed with xgboost 3.2)
        "multi:softprob",
        "multi:softmax",
    }
)
_F32 = np.float32


@dataclass
class _LibmFloat:
    """``logf`` / ``expf`` of the C math library, the functions libxgboost calls (via ctypes).

    Neither NumPy's float32 ``log``/``exp`` nor a float64 result rounded to float32 always gives glibc's
    bits (about 0.1 % of values differ by one ulp), so the intercept and the regression transforms call
    the very same functions. Without a loadable C math library they fall back to float64 rounded to
    float32 (then one ulp, ~6e-8 relative, may differ in rare rows).
    """

    logf: Any = None
    expf: Any = None

    @classmethod
    def load(cls) -> _LibmFloat:
        import ctypes
        import ctypes.util

        for name in ("libm.so.6", ctypes.util.find_library("m"), ctypes.util.find_library("c")):
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
                fns = []
                for fn in ("logf", "expf"):
                    f = getattr(lib, fn)
                    f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
                    fns.append(f)
                return cls(*fns)
            except (OSError, AttributeError):
                continue
        logger.warning("no C math library for logf/expf: xgboost twins round float64 results instead")
        return cls()

    def log(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=_F32)
        if self.logf is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.log(x.astype(np.float64)).astype(_F32)
        return np.array([self.logf(float(v)) for v in x.ravel()], dtype=_F32).reshape(x.shape)

    def exp(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=_F32)
        if self.expf is None:
            with np.errstate(over="ignore"):
                return np.exp(x.astype(np.float64)).astype(_F32)
        return np.array([self.expf(float(v)) for v in x.ravel()], dtype=_F32).reshape(x.shape)


_LIBM: _LibmFloat | None = None


def _libm() -> _LibmFloat:
    global _LIBM
    if _LIBM is None:
        _LIBM = _LibmFloat.load()
    return _LIBM


def read_xgboost_booster(stage: StageFiles) -> dict[str, Any]:
    """The booster JSON (``learner`` object) of a saved xgboost.spark model stage."""
    d = stage.path / "model"
    parts = sorted(p for p in d.glob("part-*") if p.is_file()) if d.is_dir() else []
    if not parts:
        raise ScoringError(
            f"stage {stage.path.name} has no model/part-* file (not a saved xgboost.spark model)"
        )
    text = "".join(p.read_text(encoding="utf-8").replace("\r", "").replace("\n", "") for p in parts)
    if not text.lstrip().startswith("{"):
        raise UnsupportedStageError(
            f"{stage.class_name} (stage {stage.path.name}) stores its booster in a format other than "
            "JSON; score it with Spark"
        )
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ScoringError(f"stage {stage.path.name}: the booster JSON cannot be parsed: {exc}") from exc
    if "learner" not in doc:
        raise ScoringError(f"stage {stage.path.name}: the booster JSON has no 'learner'")
    return doc["learner"]


def _xgb_float_list(value: Any) -> list[float]:
    """xgboost writes vector model params as strings such as ``'[5.05E-1]'`` (older: ``'5E-1'``)."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith("[") else float(value)
    if isinstance(value, list):
        return [float(v) for v in value]
    return [float(value)]


@dataclass
class _XGBTrees:
    """The booster's trees as flat node arrays (global node numbering), walked like :class:`_Forest`.

    A leaf points to itself on both sides, so ``depth`` steps land every row on its leaf.
    """

    roots: np.ndarray  # (n_trees,) root node of each tree
    feature: np.ndarray  # per node: index into ``used`` (0 for leaves)
    threshold: np.ndarray  # float32 split conditions (leaf value for leaves)
    default_left: np.ndarray  # per node: missing values go left
    children: np.ndarray  # (2 * n_nodes,) left, right
    value: np.ndarray  # float32 leaf value per node
    group: np.ndarray  # (n_trees,) output group (class) of each tree
    used: np.ndarray  # original feature indices the splits read
    depth: int

    @classmethod
    def from_json(
        cls, trees: list[dict[str, Any]], tree_info: list[int], num_feature: int, where: str
    ) -> _XGBTrees:
        roots, feature, threshold, default_left, left, right = [], [], [], [], [], []
        offset = 0
        for t in trees:
            if any(int(v) != 0 for v in t.get("split_type", [])):
                raise UnsupportedStageError(
                    f"{where}: categorical splits (feature_types 'c') have no NumPy twin; score with Spark"
                )
            if int(t.get("tree_param", {}).get("size_leaf_vector", "1")) > 1:
                raise UnsupportedStageError(
                    f"{where}: vector-leaf trees (multi_strategy multi_output_tree) have no NumPy twin"
                )
            lc = np.asarray(t["left_children"], dtype=np.int64)
            rc = np.asarray(t["right_children"], dtype=np.int64)
            n = lc.size
            ids = np.arange(n, dtype=np.int64) + offset
            leaf = lc < 0
            left.append(np.where(leaf, ids, lc + offset))
            right.append(np.where(leaf, ids, rc + offset))
            feature.append(np.where(leaf, 0, np.asarray(t["split_indices"], dtype=np.int64)))
            threshold.append(np.asarray(t["split_conditions"], dtype=np.float64).astype(_F32))
            default_left.append(np.asarray(t["default_left"], dtype=np.int64) != 0)
            roots.append(offset)
            offset += n
        if not trees:
            empty = np.zeros(0, dtype=np.int64)
            return cls(
                empty, empty, np.zeros(0, _F32), np.zeros(0, bool), empty, np.zeros(0, _F32), empty, empty, 0
            )
        feat = np.concatenate(feature)
        lft, rgt = np.concatenate(left), np.concatenate(right)
        is_leaf = lft == np.arange(lft.size)
        used = np.unique(feat[~is_leaf]) if (~is_leaf).any() else np.zeros(0, dtype=np.int64)
        if used.size and (used.min() < 0 or used.max() >= num_feature):
            raise ScoringError(f"{where}: a split reads a feature outside 0..{num_feature - 1}")
        feat = np.where(is_leaf, 0, np.searchsorted(used, feat))
        thr = np.concatenate(threshold)
        roots_a = np.asarray(roots, dtype=np.int64)
        children, depth = _children_and_depth(roots_a, is_leaf, lft, rgt)
        return cls(
            roots=roots_a,
            feature=feat,
            threshold=thr,
            default_left=np.concatenate(default_left),
            children=children,
            value=np.where(is_leaf, thr, _F32(0)).astype(_F32),
            group=np.asarray(tree_info, dtype=np.int64),
            used=used.astype(np.int64),
            depth=depth,
        )

    @property
    def num_trees(self) -> int:
        return int(self.roots.size)

    def leaves(self, x: Matrix, missing: float) -> np.ndarray:
        """Leaf node per row and tree, shape ``(n_rows, n_trees)``."""
        n, t = x.shape[0], self.num_trees
        node = np.tile(self.roots, n)
        if self.depth == 0 or n == 0 or t == 0:
            return node.reshape(n, t)
        with np.errstate(over="ignore"):  # beyond float32's range is +-inf, as Spark's cast gives
            xu = _dense_columns(x, self.used).astype(_F32)
        miss = np.isnan(xu)
        if not np.isnan(missing):
            miss |= xu == _F32(missing)
        flat = xu.ravel()
        mflat = miss.ravel() if miss.any() else None
        base = np.repeat(np.arange(n, dtype=np.int64) * xu.shape[1], t)
        for _ in range(self.depth):
            at = base + self.feature[node]
            go_left = flat[at] < self.threshold[node]
            if mflat is not None:
                go_left = np.where(mflat[at], self.default_left[node], go_left)
            node = self.children[2 * node + ~go_left]
        return node.reshape(n, t)


class _XGBoostTwin(_ModelTwin):
    """Shared reading of an xgboost.spark model: booster JSON, trees, intercept, missing value."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        where = f"{stage.class_name} (stage {stage.path.name})"
        for param, what in (
            ("base_margin_col", "a base margin column"),
            ("pred_contrib_col", "SHAP contributions (pred_contrib_col)"),
        ):
            if stage.param(param):
                raise UnsupportedStageError(f"{where} with {what} has no NumPy twin; score it with Spark")
        if stage.param("features_cols"):
            raise UnsupportedStageError(f"{where} reads features_cols, not a vector column; score with Spark")
        learner = read_xgboost_booster(stage)
        booster = learner.get("gradient_booster", {})
        if booster.get("name") != "gbtree":
            raise UnsupportedStageError(
                f"{where}: booster {booster.get('name')!r} has no NumPy twin (only gbtree); score with Spark"
            )
        model = booster["model"]
        lmp = learner.get("learner_model_param", {})
        self.num_features = int(lmp.get("num_feature", 0))
        self.num_groups = max(1, int(lmp.get("num_class", 0) or 0), int(lmp.get("num_target", 1) or 1))
        self.objective: str = learner.get("objective", {}).get("name", "")
        missing = stage.param("missing", float("nan"))
        self.missing = float("nan") if missing is None else float(_F32(missing))
        trees = list(model.get("trees", []))
        info = [int(g) for g in model.get("tree_info", [0] * len(trees))]
        indptr = [int(v) for v in model.get("iteration_indptr", [])] or None
        begin, end = self._tree_range(stage, learner, indptr, len(trees))
        self.trees = _XGBTrees.from_json(trees[begin:end], info[begin:end], self.num_features, where)
        self.base = self._intercept(_xgb_float_list(lmp.get("base_score", "0.5")), where)
        counts = np.bincount(self.trees.group, minlength=self.num_groups) if self.trees.num_trees else None
        # trees of each group in tree order, as one (groups, trees per group) index when they line up
        self._group_index: np.ndarray | None = None
        if counts is not None and np.all(counts == counts[0]):
            self._group_index = np.stack(
                [np.flatnonzero(self.trees.group == g) for g in range(self.num_groups)]
            )

    @staticmethod
    def _tree_range(
        stage: StageFiles, learner: dict[str, Any], indptr: list[int] | None, n_trees: int
    ) -> tuple[int, int]:
        """Trees xgboost's sklearn ``predict`` uses: ``iteration_range`` if set, else up to
        ``best_iteration`` (early stopping), else all of them."""
        rng = stage.param("iteration_range")
        if rng is None or len(rng) != 2 or int(rng[1]) == 0:
            best = (learner.get("attributes") or {}).get("best_iteration")
            rng = (0, int(best) + 1) if best is not None else (0, 0)
        first, last = int(rng[0]), int(rng[1])
        if last == 0 or indptr is None:
            return 0, n_trees
        last = min(last, len(indptr) - 1)
        return indptr[first], indptr[last]

    def _intercept(self, base_score: list[float], where: str) -> np.ndarray:
        """``base_score`` (in output space) to margin, as the objective's ``ProbToMargin`` does."""
        b = np.asarray(base_score, dtype=np.float64).astype(_F32)
        obj = self.objective
        if obj in _XGB_LOGIT_OBJECTIVES:
            base = -_libm().log(_F32(1) / b - _F32(1))
        elif obj in _XGB_LOG_OBJECTIVES:
            base = _libm().log(b)
        elif obj in _XGB_IDENTITY_OBJECTIVES:
            base = b
        else:
            raise UnsupportedStageError(f"{where}: objective {obj!r} has no NumPy twin; score it with Spark")
        if base.size == 1 and self.num_groups > 1:
            base = np.repeat(base, self.num_groups)
        if base.size != self.num_groups:
            raise ScoringError(f"{where}: {base.size} intercepts for {self.num_groups} output groups")
        return base.astype(_F32)

    def margins(self, x: Matrix) -> np.ndarray:
        """float32 margins, shape ``(n_rows, n_groups)``: intercept, then each tree's leaf in tree order."""
        n, k = x.shape[0], self.num_groups
        if self.trees.num_trees == 0:
            return np.broadcast_to(self.base, (n, k)).copy()
        vals = self.trees.value[self.trees.leaves(x, self.missing)]  # (n, n_trees) float32
        if self._group_index is not None:
            terms = vals[:, self._group_index]  # (n, k, trees per group)
            start = np.broadcast_to(self.base[None, :, None], (n, k, 1))
            # cumsum adds left to right in float32, one rounding per tree: xgboost's own order
            return np.cumsum(np.concatenate([start, terms], axis=2), axis=2, dtype=_F32)[:, :, -1]
        out = np.empty((n, k), dtype=_F32)
        for g in range(k):
            cols = np.flatnonzero(self.trees.group == g)
            start = np.full((n, 1), self.base[g], dtype=_F32)
            out[:, g] = np.cumsum(np.concatenate([start, vals[:, cols]], axis=1), axis=1, dtype=_F32)[:, -1]
        return out


@register(_XGB_CLASSES["classifier"])
class XGBoostClassifierTwin(_XGBoostTwin, _ClassifierTwin):
    """xgboost.spark classifier: margins from the booster, outputs as xgboost.spark's ``transform_margin``.

    Binary: rawPrediction ``[-m, m]``, probability ``[1 - expit(m), expit(m)]``; multiclass: rawPrediction
    the class margins, probability their softmax; prediction the argmax of the probabilities. All in
    float32 (SciPy's ``expit``/``softmax`` on float32 arrays, as xgboost.spark calls them), then doubles.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.num_classes = 2 if self.num_groups == 1 else self.num_groups

    def _raw_and_prob(self, x: Matrix) -> tuple[np.ndarray, np.ndarray]:
        m = self.margins(x)
        if self.num_groups == 1:
            m = m[:, 0]
            p1 = special.expit(m)
            raw = np.vstack((-m, m)).transpose()
            prob = np.vstack((1.0 - p1, p1)).transpose()
        else:
            raw = np.ascontiguousarray(m)  # the (rows, classes) layout xgboost returns: same sum order
            prob = special.softmax(raw, axis=1)
        return raw, prob

    def transform(self, frame: Frame) -> None:
        x = _features(frame, self.features_col, self.num_features)
        raw, prob = self._raw_and_prob(x)
        if self.raw_col:
            frame[self.raw_col] = raw.astype(np.float64)
        if self.prob_col:
            frame[self.prob_col] = prob.astype(np.float64)
        if self.prediction_col:
            frame[self.prediction_col] = np.argmax(prob, axis=1).astype(np.float64)


@register(_XGB_CLASSES["regressor"])
class XGBoostRegressorTwin(_XGBoostTwin):
    """xgboost.spark regressor: the objective's transform of the float32 margin, as a double."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        if self.num_groups != 1:
            raise UnsupportedStageError(
                f"{stage.class_name} (stage {stage.path.name}) has {self.num_groups} targets; only "
                "single-target regressors have a NumPy twin"
            )

    def predict(self, x: Matrix) -> np.ndarray:
        m = self.margins(x)[:, 0]
        obj = self.objective
        if obj in _XGB_LOG_OBJECTIVES:
            m = _libm().exp(m)
        elif obj == "reg:logistic":
            m = _xgb_sigmoid(m)
        return m.astype(np.float64)

    def transform(self, frame: Frame) -> None:
        x = _features(frame, self.features_col, self.num_features)
        if self.prediction_col:
            frame[self.prediction_col] = self.predict(x)


def _xgb_sigmoid(m: np.ndarray) -> np.ndarray:
    """xgboost's float32 ``common::Sigmoid``: ``1 / (1 + expf(-x))`` with ``-x`` capped at 88.7."""
    e = _libm().exp(np.minimum(-m, _F32(88.7)))
    return (_F32(1) / (e + _F32(1) + _F32(1e-16))).astype(_F32)


__all__ = [
    "COLD_START_COL",
    "EPSILON",
    "ALSTwin",
    "BisectingKMeansTwin",
    "DecisionTreeClassifierTwin",
    "DecisionTreeRegressorTwin",
    "FeatureValueError",
    "GBTClassifierTwin",
    "GBTRegressorTwin",
    "GaussianMixtureTwin",
    "GeneralizedLinearRegressionTwin",
    "KMeansTwin",
    "LinearRegressionTwin",
    "LinearSVCTwin",
    "LogisticRegressionTwin",
    "MultilayerPerceptronTwin",
    "NaiveBayesTwin",
    "RandomForestClassifierTwin",
    "RandomForestRegressorTwin",
    "XGBoostClassifierTwin",
    "XGBoostRegressorTwin",
    "read_xgboost_booster",
    "spark_argmax",
    "thresholded_argmax",
    "top_k",
]
