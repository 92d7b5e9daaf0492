"""Hyperparameter tuning over the model stage, with feature stages fitted once beforehand.

``method`` decides how candidates are validated (``cross_validation`` with ``num_folds`` or
``train_validation_split`` with ``train_ratio``); ``search`` decides how they are chosen:

``grid``
    Every point of the grid (Spark's ``ParamGridBuilder``). The grid is the user's ``param_grid``
    (either format below) or, without one, the search space discretised (choices as listed, int ranges
    at low/mid/high, float ranges at their ends and, for log ranges, the geometric middle).
``random``
    ``max_trials`` (default 20) parameter maps drawn with a seeded RNG from ``search_space`` (choice,
    uniform, loguniform, int ranges), or — when only a ``param_grid`` is given — grid points drawn
    without replacement.
``bayesian``
    Optuna's TPE sampler proposes ``max_trials`` maps from the same space (ask-and-tell, so Spark fits
    run in our own worker threads). With ``pruning: true`` and cross-validation, each trial reports the
    running mean of its fold scores after every fold, and Optuna's ``MedianPruner`` stops a trial whose
    running mean after fold *i* is worse than the median of earlier trials after fold *i* (once the
    sampler's random start-up trials are done): successive halving over folds — about half the trials
    survive each fold, the rest free their workers early. (``SuccessiveHalvingPruner`` was tried: with a
    handful of trials it keeps only the best-so-far at each rung, which starved TPE of observations.)

All three share one validation engine. The k folds are assigned **once** per ``tune`` call (a seeded
uniform random number per row, as Spark's ``CrossValidator`` does) on one cached copy of the feature
frame, and every trial reuses the same k (train, validation) DataFrames, so trials are compared on
identical splits. A trial fits the estimator on k-1 folds and scores the held-out fold with the Spark
evaluator for the metric (``BinaryClassificationEvaluator``, ``MulticlassClassificationEvaluator`` with
per-label metrics for the positive class of a binary label, ``RegressionEvaluator``,
``ClusteringEvaluator``); metrics without a Spark evaluator (``mape``, ``davies_bouldin``, ranking
metrics, ...) are computed by :func:`sparkpipe.evaluation.evaluate`. Up to ``parallelism`` trials run
at once (threads submitting Spark jobs, as ``CrossValidator(parallelism=...)`` does).
``timeout_minutes`` stops *starting* new trials; trials already running finish, so a search overruns
its budget by at most one trial. Progress (trials done, best so far, elapsed, ETA) is logged after every
trial. When an MLflow run is active, each trial becomes a nested child run with its params, fold
metrics, mean and standard deviation; the parent run gets the best score per finished trial as a metric
history. The best parameters are refit on the whole training frame.

The original project's format works verbatim::

    tuning:
      enabled: true
      method: cross_validation
      num_folds: 3
      parallelism: 4
      param_grid:
        random_forest: {numTrees: [50, 100, 200], maxDepth: [5, 10, 15]}

and a Bayesian search over an explicit space::

    tuning:
      enabled: true
      search: bayesian
      max_trials: 30
      timeout_minutes: 20
      metric: auc_roc
      search_space:
        gbt:
          maxDepth: {type: int, low: 2, high: 8}
          stepSize: {type: loguniform, low: 0.01, high: 0.3}
          subsamplingRate: {type: uniform, low: 0.5, high: 1.0}

Parameter importance (:func:`param_importance`): Optuna's fANOVA for Bayesian searches (it needs
scikit-learn; without it, or when it fails, the correlation ratio below is used), and for grid and random
searches the correlation ratio η² of the CV score on each parameter — the share of the score's variance
explained by the parameter's value groups (distinct values, or quintiles of a continuous parameter) —
normalised to sum to 1. η² ignores interactions; it is a quick ranking, not a causal measure.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from pyspark.ml import Estimator, Model
    from pyspark.sql import DataFrame, SparkSession

    from sparkpipe.config import PipelineConfig
    from sparkpipe.core import PreparedData
    from sparkpipe.models.algorithms import AlgorithmSpec
    from sparkpipe.tracking import Tracker

log = logging.getLogger(__name__)

#: Trials of a random or Bayesian search when ``max_trials`` is not set.
DEFAULT_MAX_TRIALS = 20
FOLD_COL = "_sparkpipe_fold"


# ------------------------------------------------------------------------------------ search spaces
def grid_for(cfg: PipelineConfig, algorithm: str, spec: AlgorithmSpec | None = None) -> dict[str, list[Any]]:
    """The param grid for ``algorithm``.

    The user's ``param_grid`` in either format (``{algorithm: {param: [values]}}`` or, for the
    configured algorithm, ``{param: [values]}``); without one, the search space discretised (see the
    module docstring).
    """
    from sparkpipe.config_checks import param_grid_for

    grid = param_grid_for(cfg, algorithm)
    if grid:
        return grid
    return discretise(space_for(cfg, algorithm, spec))


def space_for(
    cfg: PipelineConfig, algorithm: str, spec: AlgorithmSpec | None = None
) -> dict[str, dict[str, Any]]:
    """The search space (neutral format) for ``algorithm``: the user's ``search_space`` when given,
    else the algorithm's default space."""
    from sparkpipe.config_checks import search_space_for
    from sparkpipe.models.algorithms import get_algorithm

    spec = spec if spec is not None else get_algorithm(algorithm, cfg.model.task_type)
    return search_space_for(cfg, spec)


def _user_space(cfg: PipelineConfig, spec: AlgorithmSpec | None) -> dict[str, dict[str, Any]]:
    """The user's own search space for ``spec`` (empty when they wrote none)."""
    from sparkpipe.config_checks import search_space_for

    space = search_space_for(cfg, spec)
    return {} if space == {p: dict(v) for p, v in spec.search_space.items()} else space


def discretise(space: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """A small grid from a search space: choices as listed, int ranges at low/mid/high, float ranges at
    their ends (plus the geometric middle for log ranges)."""
    out: dict[str, list[Any]] = {}
    for name, dist in space.items():
        kind = dist.get("type")
        if kind == "choice":
            out[name] = list(dist["values"])
        elif kind == "int":
            lo, hi, step = int(dist["low"]), int(dist["high"]), int(dist.get("step", 1))
            mid = lo + ((hi - lo) // 2 // step) * step
            out[name] = sorted({lo, mid, hi})
        elif kind in ("uniform", "loguniform"):
            lo, hi = float(dist["low"]), float(dist["high"])
            out[name] = [lo, hi] if kind == "uniform" else [lo, math.sqrt(lo * hi), hi]
    return out


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid, in ``ParamGridBuilder`` order (last parameter varies fastest)."""
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]


def grid_size(grid: dict[str, list[Any]]) -> int:
    """Number of points of a grid."""
    return math.prod(len(v) for v in grid.values()) if grid else 0


def sample_space(space: dict[str, dict[str, Any]], rng: Any) -> dict[str, Any]:
    """Draw one parameter map from a search space with a NumPy ``Generator``."""
    out: dict[str, Any] = {}
    for name, dist in space.items():
        kind = dist["type"]
        if kind == "choice":
            values = list(dist["values"])
            out[name] = values[int(rng.integers(len(values)))]
        elif kind == "uniform":
            out[name] = float(rng.uniform(float(dist["low"]), float(dist["high"])))
        elif kind == "loguniform":
            out[name] = float(math.exp(rng.uniform(math.log(dist["low"]), math.log(dist["high"]))))
        elif kind == "int":
            lo, hi, step = int(dist["low"]), int(dist["high"]), int(dist.get("step", 1))
            if dist.get("log"):
                out[name] = int(
                    min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)) - 0.5))))
                )
            else:
                out[name] = lo + step * int(rng.integers((hi - lo) // step + 1))
        else:  # pragma: no cover - config_checks rejects other types
            raise ConfigError([(f"tuning.search_space.{name}.type", f"unknown search type {kind!r}")])
    return out


# ---------------------------------------------------------------------------------------- metrics
def evaluator_for(
    task: str,
    metric: str,
    label_col: str = "label",
    num_classes: int | None = None,
    score_col: str = "rawPrediction",
) -> Any:
    """A Spark evaluator for ``metric``, or ``None`` when Spark has none that matches sparkpipe's
    definition (the caller then uses :func:`sparkpipe.evaluation.evaluate`).

    For a binary label, ``precision``/``recall``/``f1`` are the positive class's (label 1), as in
    :mod:`sparkpipe.evaluation`; for more classes they are support-weighted.
    """
    from pyspark.ml.evaluation import (
        BinaryClassificationEvaluator,
        ClusteringEvaluator,
        MulticlassClassificationEvaluator,
        RegressionEvaluator,
    )

    binary = num_classes == 2
    if task == "classification":
        if metric in ("auc_roc", "auc_pr") and binary:
            name = "areaUnderROC" if metric == "auc_roc" else "areaUnderPR"
            return BinaryClassificationEvaluator(
                labelCol=label_col, rawPredictionCol=score_col, metricName=name
            )
        by_label = {"precision": "precisionByLabel", "recall": "recallByLabel", "f1": "fMeasureByLabel"}
        weighted = {
            "precision": "weightedPrecision",
            "recall": "weightedRecall",
            "f1": "f1",
            "precision_weighted": "weightedPrecision",
            "recall_weighted": "weightedRecall",
            "f1_weighted": "f1",
            "accuracy": "accuracy",
            "log_loss": "logLoss",
        }
        if binary and metric in by_label:
            return MulticlassClassificationEvaluator(
                labelCol=label_col, metricName=by_label[metric], metricLabel=1.0
            )
        if metric in weighted and (metric not in by_label or num_classes is not None):
            return MulticlassClassificationEvaluator(labelCol=label_col, metricName=weighted[metric])
        return None
    if task in ("regression", "recommendation") and metric in ("rmse", "mae", "r2", "mse"):
        return RegressionEvaluator(labelCol=label_col, metricName=metric)
    if task == "clustering" and metric in ("silhouette", "silhouette_cosine"):
        measure = "cosine" if metric == "silhouette_cosine" else "squaredEuclidean"
        return ClusteringEvaluator(distanceMeasure=measure)
    return None


def make_scorer(
    task: str, metric: str, num_classes: int | None, probability: bool, k: int = 10
) -> Callable[[DataFrame, Any], float]:
    """``score(predictions, model) -> float`` for one metric of one task (see :func:`evaluator_for`)."""
    score_col = "probability" if probability else "rawPrediction"
    evaluator = evaluator_for(task, metric, num_classes=num_classes, score_col=score_col)
    if evaluator is not None:

        def spark_score(pred: DataFrame, model: Any) -> float:
            return float(evaluator.evaluate(pred))

        return spark_score

    from sparkpipe.evaluation import evaluate

    def sparkpipe_score(pred: DataFrame, model: Any) -> float:
        values = evaluate(
            pred,
            task,
            [metric],
            k=k,
            model=model if task == "recommendation" else None,
            num_classes=num_classes,
        )
        return float(values[metric])

    return sparkpipe_score


# ------------------------------------------------------------------------------------------ folds
class Folds:
    """The k (train, validation) pairs of one tuning run, built once over one cached frame.

    Parameters
    ----------
    df
        The (feature-transformed) training frame.
    method
        ``cross_validation`` (``num_folds`` pairs) or ``train_validation_split`` (one pair).
    num_folds, train_ratio, seed
        As in ``tuning``.
    cache
        Persist the frame with its fold column (memory and disk) so fold membership is fixed and every
        trial reads it from the cache.
    """

    def __init__(
        self, df: DataFrame, method: str, num_folds: int, train_ratio: float, seed: int, cache: bool = True
    ):
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        self.base = df.withColumn(FOLD_COL, F.rand(seed))
        self._cached = cache
        if cache:
            self.base = self.base.persist(StorageLevel.MEMORY_AND_DISK)
        u = F.col(FOLD_COL)
        self.pairs: list[tuple[DataFrame, DataFrame]] = []
        if method == "cross_validation":
            width = 1.0 / num_folds
            for i in range(num_folds):
                lo, hi = i * width, (i + 1) * width
                held = (u >= lo) & (u < hi)
                self.pairs.append(
                    (self.base.filter(~held).drop(FOLD_COL), self.base.filter(held).drop(FOLD_COL))
                )
        else:
            self.pairs.append(
                (
                    self.base.filter(u < train_ratio).drop(FOLD_COL),
                    self.base.filter(u >= train_ratio).drop(FOLD_COL),
                )
            )
        self.rows = self.base.count()  # materialises the cache once

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[tuple[DataFrame, DataFrame]]:
        return iter(self.pairs)

    def unpersist(self) -> None:
        """Release the cached frame."""
        if self._cached:
            self.base.unpersist()


# ----------------------------------------------------------------------------------------- trials
@dataclass
class TrialResult:
    """One evaluated parameter map."""

    number: int
    params: dict[str, Any]
    fold_scores: list[float] = field(default_factory=list)
    state: str = "running"  # complete | pruned | failed
    seconds: float = 0.0
    finished_at: float = 0.0
    error: str | None = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.fold_scores) if self.fold_scores else math.nan

    @property
    def std(self) -> float:
        return statistics.pstdev(self.fold_scores) if len(self.fold_scores) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"] = None if math.isnan(self.mean) else self.mean
        out["std"] = self.std
        return out


class _Pruned(Exception):
    """Raised inside a trial when the pruner stops it."""


def _native(value: Any) -> Any:
    """NumPy scalars → Python scalars (Spark type converters and JSON want natives)."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_native(v) for v in value]
    return value


def to_param_map(estimator: Estimator, params: dict[str, Any]) -> dict[Any, Any]:
    """Spark ``{Param: value}`` for a parameter dict; MLP's ``hidden_layers`` becomes ``layers``."""
    out: dict[Any, Any] = {}
    for name, value in params.items():
        value = _native(value)
        if name == "hidden_layers" and estimator.hasParam("layers"):
            layers = list(estimator.getOrDefault("layers"))
            out[estimator.getParam("layers")] = [layers[0], *[int(v) for v in value], layers[-1]]
        elif estimator.hasParam(name):
            out[estimator.getParam(name)] = value
        else:
            raise ConfigError([(f"tuning.{name}", f"{type(estimator).__name__} has no parameter {name!r}")])
    return out


# --------------------------------------------------------------------------------------- sources
class _GridSource:
    def __init__(self, points: list[dict[str, Any]]):
        self.points = points
        self.total = len(points)
        self._next = 0

    def ask(self) -> tuple[dict[str, Any], Any] | None:
        if self._next >= len(self.points):
            return None
        self._next += 1
        return self.points[self._next - 1], None

    def tell(self, handle: Any, result: TrialResult) -> None:
        return None


class _RandomSource(_GridSource):
    def __init__(
        self, space: dict[str, dict[str, Any]] | None, grid: dict[str, list[Any]] | None, n: int, seed: int
    ):
        import numpy as np

        rng = np.random.default_rng(seed)
        if grid:
            points = grid_points(grid)
            order = rng.permutation(len(points))[:n]
            chosen = [points[int(i)] for i in order]
        else:
            assert space is not None
            chosen, seen = [], set()
            attempts = 0
            while len(chosen) < n and attempts < 50 * n:
                attempts += 1
                p = sample_space(space, rng)
                key = json.dumps(p, sort_keys=True, default=str)
                if key not in seen:
                    seen.add(key)
                    chosen.append(p)
        super().__init__(chosen)


class _OptunaSource:
    """Optuna TPE, ask-and-tell; choice values that are not scalars travel as JSON strings."""

    def __init__(
        self, space: dict[str, dict[str, Any]], n: int, seed: int, direction: str, prune: bool, parallel: bool
    ):
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.total = n
        self._asked = 0
        self._encoded: set[str] = set()
        self.distributions: dict[str, Any] = {}
        for name, dist in space.items():
            kind = dist["type"]
            if kind == "choice":
                values = list(dist["values"])
                if any(isinstance(v, (list, dict)) for v in values):
                    self._encoded.add(name)
                    values = [json.dumps(v) for v in values]
                self.distributions[name] = CategoricalDistribution(values)
            elif kind in ("uniform", "loguniform"):
                self.distributions[name] = FloatDistribution(
                    float(dist["low"]), float(dist["high"]), log=kind == "loguniform"
                )
            elif kind == "int":
                log_scale = bool(dist.get("log"))
                self.distributions[name] = IntDistribution(
                    int(dist["low"]),
                    int(dist["high"]),
                    log=log_scale,
                    step=1 if log_scale else int(dist.get("step", 1)),
                )
        startup = max(3, min(10, n // 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate / constant_liar are "experimental"
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=parallel
            )
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
            if prune
            else optuna.pruners.NopPruner()
        )
        self.study = optuna.create_study(
            direction="maximize" if direction == "max" else "minimize", sampler=sampler, pruner=pruner
        )
        self._lock = threading.Lock()

    def ask(self) -> tuple[dict[str, Any], Any] | None:
        if self._asked >= self.total:
            return None
        self._asked += 1
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask(self.distributions)
        params = {k: json.loads(v) if k in self._encoded else v for k, v in trial.params.items()}
        return params, trial

    def tell(self, trial: Any, result: TrialResult) -> None:
        from optuna.trial import TrialState

        with self._lock:
            if result.state == "complete":
                self.study.tell(trial, result.mean)
            elif result.state == "pruned":
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, state=TrialState.FAIL)


# ----------------------------------------------------------------------------------------- engine
def _fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.0f}s"


class _Search:
    """Run trials from a source with ``parallelism`` workers; record, log and track them."""

    def __init__(
        self,
        estimator: Estimator,
        folds: Folds,
        scorer: Callable[[DataFrame, Any], float],
        direction: str,
        metric: str,
        label: str,
        parallelism: int,
        deadline: float | None,
        tracker: Tracker | None,
        search: str,
    ):
        self.estimator = estimator
        self.folds = folds
        self.scorer = scorer
        self.direction = direction
        self.metric = metric
        self.label = label
        self.parallelism = max(1, parallelism)
        self.deadline = deadline
        self.tracker = tracker
        self.search = search
        self.results: list[TrialResult] = []
        self.timed_out = False
        self.t0 = time.perf_counter()

    def better(self, a: float, b: float) -> bool:
        if math.isnan(b):
            return not math.isnan(a)
        return a > b if self.direction == "max" else a < b

    def best(self) -> TrialResult | None:
        best: TrialResult | None = None
        for r in self.results:
            if r.state == "complete" and (best is None or self.better(r.mean, best.mean)):
                best = r
        return best

    def _evaluate(self, number: int, params: dict[str, Any], trial: Any) -> TrialResult:
        result = TrialResult(number=number, params={k: _native(v) for k, v in params.items()})
        t0 = time.perf_counter()
        try:
            param_map = to_param_map(self.estimator, params)
            for i, (train, valid) in enumerate(self.folds):
                model = self.estimator.fit(train, params=param_map)
                score = self.scorer(model.transform(valid), model)
                result.fold_scores.append(score)
                if trial is not None and len(self.folds) > 1 and i < len(self.folds) - 1:
                    trial.report(result.mean, step=i + 1)
                    if trial.should_prune():
                        raise _Pruned
            result.state = "complete"
            if math.isnan(result.mean):
                result.state, result.error = "failed", f"the metric {self.metric} came out NaN"
        except _Pruned:
            result.state = "pruned"
        except ConfigError:
            raise
        except Exception as exc:  # one bad combination must not end the search
            result.state, result.error = "failed", f"{type(exc).__name__}: {exc}"
        result.seconds = time.perf_counter() - t0
        result.finished_at = time.perf_counter() - self.t0
        return result

    def run(self, source: Any) -> list[TrialResult]:
        number = 0
        running: dict[Future[TrialResult], Any] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="sparkpipe-tune") as pool:
            while True:
                while len(running) < self.parallelism and not self.timed_out:
                    if self.deadline is not None and time.perf_counter() >= self.deadline and self.results:
                        self.timed_out = True
                        log.warning(
                            "tuning: timeout reached after %s; no new trials are started",
                            _fmt_seconds(time.perf_counter() - self.t0),
                        )
                        break
                    asked = source.ask()
                    if asked is None:
                        break
                    params, handle = asked
                    running[pool.submit(self._evaluate, number, params, handle)] = handle
                    number += 1
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: f.result().number):
                    handle = running.pop(fut)
                    result = fut.result()
                    source.tell(handle, result)
                    self.results.append(result)
                    self._report(result, source.total)
                    self._track(result)
        self.results.sort(key=lambda r: r.number)
        return self.results

    def _report(self, result: TrialResult, total: int) -> None:
        done = len(self.results)
        elapsed = time.perf_counter() - self.t0
        best = self.best()
        eta = elapsed / done * max(0, total - done)
        if self.deadline is not None:
            eta = min(eta, max(0.0, self.deadline - time.perf_counter()))
        if result.state == "complete":
            outcome = f"{self.metric}={result.mean:.4f}±{result.std:.4f}"
        elif result.state == "pruned":
            outcome = (
                f"pruned after {len(result.fold_scores)}/{len(self.folds)} folds "
                f"(running mean {result.mean:.4f})"
            )
        else:
            outcome = f"failed ({result.error})"
        log.info(
            "tuning %s [%s] %d/%d done · trial #%d %s · best %s · elapsed %s · ETA %s",
            self.label,
            self.search,
            done,
            total,
            result.number,
            outcome,
            f"{best.mean:.4f} (#{best.number})" if best else "—",
            _fmt_seconds(elapsed),
            _fmt_seconds(eta),
        )

    def _track(self, result: TrialResult) -> None:
        tracker = self.tracker
        if tracker is None or not tracker.enabled or tracker.info is None:
            return
        best = self.best()
        if best is not None:
            tracker.log_metrics({f"tuning_best_{self.metric}": best.mean}, step=len(self.results))
        with tracker.run(
            run_name=f"trial-{result.number:03d}",
            nested=True,
            tags={
                "sparkpipe.trial": str(result.number),
                "sparkpipe.trial_state": result.state,
                "sparkpipe.search": self.search,
            },
        ):
            tracker.log_params({**result.params, "trial_number": result.number})
            metrics = {f"fold_{i}_{self.metric}": s for i, s in enumerate(result.fold_scores)}
            metrics["fit_seconds"] = result.seconds
            metrics["folds_completed"] = len(result.fold_scores)
            if result.state == "complete":
                metrics[f"{self.metric}_mean"] = result.mean
                metrics[f"{self.metric}_std"] = result.std
            tracker.log_metrics(metrics)
            if result.error:
                tracker.set_tags({"sparkpipe.trial_error": result.error[:500]})


# ------------------------------------------------------------------------------------ importance
def _eta_squared(values: list[Any], scores: list[float]) -> float:
    """Correlation ratio η² of ``scores`` on the groups of ``values`` (quintiles when continuous)."""
    n = len(scores)
    if n < 2:
        return 0.0
    keys: list[Any] = [json.dumps(v, default=str) for v in values]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and len(set(keys)) > 5:
        ranked = sorted(range(n), key=lambda i: values[i])
        keys = [None] * n
        for pos, i in enumerate(ranked):
            keys[i] = pos * 5 // n
    total_mean = statistics.fmean(scores)
    sst = sum((s - total_mean) ** 2 for s in scores)
    if sst == 0:
        return 0.0
    groups: dict[Any, list[float]] = {}
    for key, s in zip(keys, scores, strict=True):
        groups.setdefault(key, []).append(s)
    ssb = sum(len(g) * (statistics.fmean(g) - total_mean) ** 2 for g in groups.values())
    return ssb / sst


def param_importance(summary: dict[str, Any], study: Any = None) -> dict[str, Any]:
    """Relative importance of each tuned parameter (sums to 1); see the module docstring.

    Returns
    -------
    dict
        ``{"method": "fanova" | "correlation_ratio", "values": {param: importance}}``; ``values`` is
        empty with fewer than three complete trials.
    """
    complete = [t for t in summary["trials"] if t["state"] == "complete" and t["mean"] is not None]
    names = sorted({k for t in complete for k in t["params"]})
    if len(complete) < 3 or not names:
        return {"method": None, "values": {}}
    if study is not None:
        try:
            import optuna

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
                )
            if values:
                return {"method": "fanova", "values": {k: float(v) for k, v in values.items()}}
        except Exception as exc:  # scikit-learn missing, a parameter never varied, ...
            log.info("fANOVA importance unavailable (%s); using the correlation ratio", exc)
    scores = [float(t["mean"]) for t in complete]
    raw = {n: _eta_squared([t["params"].get(n) for t in complete], scores) for n in names}
    total = sum(raw.values())
    values = {n: (v / total if total > 0 else 0.0) for n, v in raw.items()}
    return {"method": "correlation_ratio", "values": dict(sorted(values.items(), key=lambda kv: -kv[1]))}


# ------------------------------------------------------------------------------------------- tune
def resolve_metric(cfg: PipelineConfig, task: str, num_classes: int | None) -> str:
    """The tuning metric: ``tuning.metric``, else ``evaluation.primary_metric``, else the task default."""
    from sparkpipe.evaluation import canonical_metric, default_primary_metric

    name = cfg.tuning.metric or cfg.evaluation.primary_metric or default_primary_metric(task, num_classes)
    return canonical_metric(name)


def _num_classes(train: DataFrame, data: PreparedData) -> int | None:
    if data.task != "classification":
        return None
    if data.label_labels:
        return len(data.label_labels)
    from pyspark.sql import functions as F

    top = train.agg(F.max("label")).first()[0]
    return int(top) + 1 if top is not None else None


def tune(
    spark: SparkSession,
    cfg: PipelineConfig,
    spec: AlgorithmSpec,
    estimator: Estimator,
    train: DataFrame,
    data: PreparedData,
    tracker: Tracker | None = None,
) -> tuple[Model, dict[str, Any]]:
    """Search hyperparameters of ``estimator`` on ``train``; refit the best on all of ``train``.

    Parameters
    ----------
    spark
        The active session.
    cfg
        The pipeline config (``tuning`` section, ``evaluation.primary_metric``, ``evaluation.k``).
    spec
        The algorithm's :class:`~sparkpipe.models.algorithms.AlgorithmSpec`.
    estimator
        The configured estimator; trial parameters override its values.
    train
        The feature-transformed training frame (feature stages are fitted once, before tuning).
    data
        The :class:`~sparkpipe.core.PreparedData` (task, label names).
    tracker
        When given with an active run, each trial is logged as a nested child run.

    Returns
    -------
    (Model, dict)
        The best model refit on ``train`` and a JSON-friendly summary: ``search``, ``method``,
        ``metric``, ``direction``, ``num_trials``, ``num_complete``, ``num_pruned``, ``num_failed``,
        ``best_params``, ``best_score``, ``best_std``, ``best_fold_scores``, ``best_trial``,
        ``trials``, ``importance``, ``timed_out``, ``seconds`` (total), ``search_seconds``,
        ``refit_seconds``, ``fold_seconds``.

    Raises
    ------
    ConfigError
        No grid/space, a grid larger than ``max_trials``, an unknown parameter.
    ModelError
        Every trial failed.
    """
    from sparkpipe.evaluation import metric_direction

    t0 = time.perf_counter()
    tcfg = cfg.tuning
    task = data.task
    num_classes = _num_classes(train, data)
    metric = resolve_metric(cfg, task, num_classes)
    direction = metric_direction(metric, task)
    scorer = make_scorer(
        task,
        metric,
        num_classes,
        probability=spec.supports_probability,
        k=cfg.evaluation.k,
    )

    search = tcfg.search
    user_space = _user_space(cfg, spec)
    from sparkpipe.config_checks import param_grid_for

    user_grid = param_grid_for(cfg, spec.name)
    study = None
    if search == "grid":
        grid = grid_for(cfg, spec.name, spec)
        if not grid:
            raise ConfigError(
                [
                    (
                        "tuning.param_grid",
                        f"no grid for {spec.name!r}; add param_grid: {{{spec.name}: {{param: [values]}}}}",
                    )
                ]
            )
        points = grid_points(grid)
        if tcfg.max_trials and len(points) > tcfg.max_trials:
            raise ConfigError(
                [
                    (
                        "tuning.max_trials",
                        f"the grid has {len(points)} candidates, more than "
                        f"max_trials={tcfg.max_trials}; raise max_trials, shrink "
                        "the grid or use search: random / bayesian",
                    )
                ]
            )
        source: Any = _GridSource(points)
        space_desc: Any = grid
    else:
        n = tcfg.max_trials or DEFAULT_MAX_TRIALS
        if search == "random":
            if user_space or not user_grid:
                space = user_space or space_for(cfg, spec.name, spec)
                source = _RandomSource(space, None, n, tcfg.seed)
                space_desc = space
            else:
                source = _RandomSource(None, user_grid, min(n, grid_size(user_grid)), tcfg.seed)
                space_desc = user_grid
        else:
            if user_space or not user_grid:
                space = user_space or space_for(cfg, spec.name, spec)
            else:
                space = {k: {"type": "choice", "values": list(v)} for k, v in user_grid.items()}
            space_desc = space
            prune = tcfg.pruning and tcfg.method == "cross_validation"
            source = _OptunaSource(space, n, tcfg.seed, direction, prune, parallel=tcfg.parallelism > 1)
            study = source.study

    t_folds = time.perf_counter()
    folds = Folds(train, tcfg.method, tcfg.num_folds, tcfg.train_ratio, tcfg.seed, cache=True)
    fold_seconds = time.perf_counter() - t_folds
    log.info(
        "tuning %s: %s search, %s candidates, %s, metric %s (%s), parallelism %d%s",
        spec.name,
        search,
        source.total,
        f"{tcfg.num_folds}-fold CV"
        if tcfg.method == "cross_validation"
        else f"train/validation split {tcfg.train_ratio:g}",
        metric,
        direction,
        tcfg.parallelism,
        f", timeout {tcfg.timeout_minutes:g} min" if tcfg.timeout_minutes else "",
    )
    deadline = t0 + tcfg.timeout_minutes * 60 if tcfg.timeout_minutes else None
    engine = _Search(
        estimator, folds, scorer, direction, metric, spec.name, tcfg.parallelism, deadline, tracker, search
    )
    try:
        results = engine.run(source)
    finally:
        folds.unpersist()
    search_seconds = time.perf_counter() - engine.t0
    best = engine.best()
    if best is None:
        errors = sorted({r.error for r in results if r.error})
        raise ModelError(
            f"tuning {spec.name}: none of {len(results)} trials completed"
            + (f"; errors: {'; '.join(errors[:3])}" if errors else "")
        )

    t_refit = time.perf_counter()
    model = estimator.fit(train, params=to_param_map(estimator, best.params))
    refit_seconds = time.perf_counter() - t_refit
    summary: dict[str, Any] = {
        "search": search,
        "method": tcfg.method,
        "metric": metric,
        "direction": direction,
        "num_folds": len(folds),
        "space": space_desc,
        "num_trials": len(results),
        "num_complete": sum(r.state == "complete" for r in results),
        "num_pruned": sum(r.state == "pruned" for r in results),
        "num_failed": sum(r.state == "failed" for r in results),
        "best_params": best.params,
        "best_score": best.mean,
        "best_std": best.std,
        "best_fold_scores": list(best.fold_scores),
        "best_trial": best.number,
        "trials": [r.to_dict() for r in results],
        "timed_out": engine.timed_out,
        "rows": folds.rows,
        "fold_seconds": fold_seconds,
        "search_seconds": search_seconds,
        "refit_seconds": refit_seconds,
    }
    summary["importance"] = param_importance(summary, study)
    summary["seconds"] = time.perf_counter() - t0
    log.info(
        "tuning %s done: best %s=%.4f±%.4f with %s (trial %d of %d; %d pruned, %d failed) in %s",
        spec.name,
        metric,
        best.mean,
        best.std,
        best.params,
        best.number,
        len(results),
        summary["num_pruned"],
        summary["num_failed"],
        _fmt_seconds(summary["seconds"]),
    )
    if tracker is not None and tracker.enabled and tracker.info is not None:
        tracker.log_metrics(
            {
                "tuning_best_score": best.mean,
                "tuning_trials": len(results),
                "tuning_pruned": summary["num_pruned"],
                "tuning_seconds": summary["seconds"],
            }
        )
        tracker.log_params({f"tuning.best.{k}": v for k, v in best.params.items()})
    return model, summary
