"""Metrics per task, computed in Spark (no collect of rows to the driver).

Metric names are the config's names (``evaluation.classification: [accuracy, f1, ...]``) and are
looked up in :data:`METRICS`; an unknown name raises :class:`~sparkpipe.errors.UnknownNameError`
listing the valid names for the task.

Definitions
-----------
Classification (labels are ``0.0 .. C-1``, predictions likewise)
    ``accuracy``
        Fraction of rows with ``prediction == label``.
    ``precision``, ``recall``, ``f1``
        **Binary** (two classes): of the positive class, label ``1.0`` (scikit-learn's
        ``average="binary"``). **Multiclass**: support-weighted average over the classes
        (Spark's ``weightedPrecision`` / ``weightedRecall`` / ``f1``, scikit-learn's
        ``average="weighted"``). A class that is never predicted has precision 0.
    ``precision_macro``, ``recall_macro``, ``f1_macro``; ``precision_weighted``, ...
        Unweighted mean over the classes seen in labels or predictions, and the support-weighted mean,
        whatever the number of classes.
    ``auc_roc``, ``auc_pr``
        **Binary**: Spark's ``BinaryClassificationEvaluator`` (trapezoidal areas; ``auc_pr`` is the
        area under the interpolated precision-recall curve, not scikit-learn's step-wise average
        precision). The score is ``probability[1]`` when a probability column exists, else
        ``rawPrediction`` (e.g. ``linear_svc``); ``rawPrediction[1]`` alone is not a monotone score for
        naive Bayes or MLP, the probability is. **Multiclass**: one-vs-rest, macro-averaged over the
        classes that have both positive and negative rows (scikit-learn's
        ``roc_auc_score(multi_class="ovr", average="macro")``); one Spark pass per class over a cached
        two-column projection.
    ``log_loss``
        Spark's ``MulticlassClassificationEvaluator(metricName="logLoss")`` on the probability column
        (probabilities clipped at 1e-15).
Regression (one ``agg`` pass for all of them)
    ``rmse``, ``mse``, ``mae``, ``r2`` (``1 - SSE/SST``), ``explained_variance``
    (``1 - Var(y - ŷ)/Var(y)``, as scikit-learn), ``mape`` (mean ``|y - ŷ| / |y|`` over rows with
    ``y != 0``; the number of zero labels skipped is returned as ``mape_zero_labels_skipped``).
Clustering
    ``silhouette``
        Spark's ``ClusteringEvaluator`` with its default squared Euclidean distance (equal to
        scikit-learn's ``silhouette_score(metric="sqeuclidean")``, not the Euclidean default);
        ``silhouette_cosine`` uses cosine distance.
    ``davies_bouldin``, ``calinski_harabasz``
        As scikit-learn (Euclidean distances, centroids = cluster means of the features), from two
        aggregate passes: cluster means, then per-cluster mean distance and squared distance to
        the centroid. Only ``k`` centroids reach the driver.
Recommendation
    ``rmse``, ``mae``, ``mse`` on the rating predictions (rows with NaN predictions — cold-start users
    or items — are skipped). Ranking metrics (``precision_at_k``, ``recall_at_k``, ``ndcg_at_k``,
    ``map_at_k``, ``map``) use Spark's ``RankingEvaluator`` with binary relevance: an item is relevant
    to a user when its test rating is ``>= relevance_threshold`` (4.0 by default); users without a
    relevant test item are left out. The predicted ranking is the model's top ``k`` over all items
    (``ALSModel.recommendForUserSubset``) when ``model`` is given — the usual offline protocol — and
    otherwise the user's test items ordered by predicted rating. Spark divides precision@k by ``k``
    even when a user has fewer than ``k`` items.

Metrics that cannot be computed for the given predictions (``log_loss`` without a probability column,
silhouette of a single cluster, ...) come back as NaN with a warning in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sparkpipe.errors import UnknownNameError
from sparkpipe.metrics import (  # the computations; public names re-exported
    LOG_LOSS_EPS,
    THRESHOLD_BUCKETS,
    _classification,
    _clustering,
    _recommendation,
    _regression,
    calinski_harabasz_from_stats,
    cluster_statistics,
    davies_bouldin_from_stats,
    f1_optimal_threshold,
    ranking_frame,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


Direction = Literal["max", "min"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of one task.

    Attributes
    ----------
    name
        Config name, e.g. ``"auc_roc"``.
    task
        The task it belongs to.
    direction
        ``"max"`` when larger is better, ``"min"`` otherwise (tuning and model comparison use it).
    description
        One line for reports.
    needs
        What the predictions must carry beyond label and prediction: ``"probability"``,
        ``"score"`` (probability or raw prediction), ``"features"`` or ``None``.
    """

    name: str
    task: str
    direction: Direction
    description: str
    needs: str | None = None


def _m(task: str, name: str, direction: Direction, description: str, needs: str | None = None) -> MetricSpec:
    return MetricSpec(name, task, direction, description, needs)


_SPECS: tuple[MetricSpec, ...] = (
    _m("classification", "accuracy", "max", "fraction of correct predictions"),
    _m("classification", "precision", "max", "positive-class precision (binary) / weighted precision"),
    _m("classification", "recall", "max", "positive-class recall (binary) / weighted recall"),
    _m("classification", "f1", "max", "positive-class F1 (binary) / weighted F1 (multiclass)"),
    _m("classification", "precision_macro", "max", "unweighted mean of per-class precision"),
    _m("classification", "recall_macro", "max", "unweighted mean of per-class recall"),
    _m("classification", "f1_macro", "max", "unweighted mean of per-class F1"),
    _m("classification", "precision_weighted", "max", "support-weighted mean of per-class precision"),
    _m("classification", "recall_weighted", "max", "support-weighted mean of per-class recall"),
    _m("classification", "f1_weighted", "max", "support-weighted mean of per-class F1"),
    _m("classification", "auc_roc", "max", "area under ROC (binary) / one-vs-rest macro AUC", "score"),
    _m("classification", "auc_pr", "max", "area under precision-recall curve (binary) / OvR macro", "score"),
    _m("classification", "log_loss", "min", "mean negative log-likelihood of the true class", "probability"),
    _m("regression", "rmse", "min", "root mean squared error"),
    _m("regression", "mse", "min", "mean squared error"),
    _m("regression", "mae", "min", "mean absolute error"),
    _m("regression", "r2", "max", "coefficient of determination 1 - SSE/SST"),
    _m("regression", "mape", "min", "mean absolute percentage error over non-zero labels (a fraction)"),
    _m("regression", "explained_variance", "max", "1 - Var(residual) / Var(label)"),
    _m("clustering", "silhouette", "max", "mean silhouette, squared Euclidean distance (Spark)", "features"),
    _m("clustering", "silhouette_cosine", "max", "mean silhouette, cosine distance (Spark)", "features"),
    _m("clustering", "davies_bouldin", "min", "Davies-Bouldin index (Euclidean)", "features"),
    _m("clustering", "calinski_harabasz", "max", "Calinski-Harabasz variance ratio", "features"),
    _m("recommendation", "rmse", "min", "root mean squared error of predicted ratings"),
    _m("recommendation", "mse", "min", "mean squared error of predicted ratings"),
    _m("recommendation", "mae", "min", "mean absolute error of predicted ratings"),
    _m("recommendation", "precision_at_k", "max", "relevant items among the top k, divided by k"),
    _m("recommendation", "recall_at_k", "max", "share of a user's relevant items found in the top k"),
    _m("recommendation", "ndcg_at_k", "max", "normalised discounted cumulative gain at k (binary)"),
    _m("recommendation", "map_at_k", "max", "mean average precision at k"),
    _m("recommendation", "map", "max", "mean average precision over the whole ranking"),
)


#: ``task`` → ``metric name`` → :class:`MetricSpec`.
METRICS: dict[str, dict[str, MetricSpec]] = {}


for _spec in _SPECS:
    METRICS.setdefault(_spec.task, {})[_spec.name] = _spec


#: Metrics computed when the caller does not name any (the config's defaults).
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "precision", "recall", "f1", "auc_roc", "auc_pr", "log_loss"),
    "regression": ("rmse", "mae", "r2", "mape"),
    "clustering": ("silhouette", "davies_bouldin"),
    "recommendation": ("rmse", "mae", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"),
}


#: Other spellings accepted for metric names, mapped to the canonical config name.
METRIC_ALIASES: dict[str, str] = {
    "auc": "auc_roc",
    "roc_auc": "auc_roc",
    "areaunderroc": "auc_roc",
    "pr_auc": "auc_pr",
    "areaunderpr": "auc_pr",
    "logloss": "log_loss",
    "f1_score": "f1",
    "r2_score": "r2",
    "precision@k": "precision_at_k",
    "recall@k": "recall_at_k",
    "ndcg@k": "ndcg_at_k",
    "ndcg": "ndcg_at_k",
    "map@k": "map_at_k",
}


def _unknown(kind: str, name: str, valid: Iterable[str]) -> UnknownNameError:
    import difflib

    valid = sorted(set(valid))
    err = UnknownNameError(kind, name, valid)
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
    if close:
        err.args = (f"{err.args[0]} (did you mean {close[0]!r}?)",)
    return err


def canonical_metric(name: str) -> str:
    """Canonical spelling of a metric name (lower case, aliases such as ``auc`` → ``auc_roc``)."""
    key = str(name).strip().lower()
    return METRIC_ALIASES.get(key, key)


def get_metric(task: str, name: str) -> MetricSpec:
    """The :class:`MetricSpec` of ``name`` for ``task``.

    Raises
    ------
    UnknownNameError
        Unknown task, or unknown metric (the message lists the task's metrics).
    """
    if task not in METRICS:
        raise _unknown("task", task, METRICS)
    key = canonical_metric(name)
    if key not in METRICS[task]:
        raise _unknown(f"{task} metric", name, METRICS[task])
    return METRICS[task][key]


def metric_direction(name: str, task: str | None = None) -> Direction:
    """``"max"`` if a larger value of the metric is better, else ``"min"``.

    Raises
    ------
    UnknownNameError
        The metric is unknown (for ``task`` when given, for every task otherwise).
    """
    if task is not None:
        return get_metric(task, name).direction
    key = canonical_metric(name)
    for by_name in METRICS.values():
        if key in by_name:
            return by_name[key].direction
    raise _unknown("metric", name, {n for by_name in METRICS.values() for n in by_name})


def default_primary_metric(task: str, num_classes: int | None = None) -> str:
    """The metric that ranks models when the config names none.

    ``auc_roc`` for binary classification, ``f1`` (weighted) for multiclass or an unknown class count,
    ``rmse`` for regression and recommendation, ``silhouette`` for clustering.
    """
    if task == "classification":
        return "auc_roc" if num_classes == 2 else "f1"
    if task in ("regression", "recommendation"):
        return "rmse"
    if task == "clustering":
        return "silhouette"
    raise _unknown("task", task, METRICS)


def resolve_metrics(task: str, metrics: Sequence[str] | None) -> list[str]:
    """Validate and de-duplicate metric names (``None`` → the task's defaults)."""
    if metrics is None:
        metrics = DEFAULT_METRICS.get(task, ())
    out: list[str] = []
    for name in metrics:
        spec = get_metric(task, name)
        if spec.name not in out:
            out.append(spec.name)
    return out


def evaluate(
    predictions_df: DataFrame,
    task: str,
    metrics: Sequence[str] | None = None,
    label_col: str = "label",
    prediction_col: str = "prediction",
    probability_col: str = "probability",
    raw_col: str = "rawPrediction",
    features_col: str = "features",
    k: int = 10,
    model: Any = None,
    *,
    user_col: str = "user",
    item_col: str = "item",
    relevance_threshold: float = 4.0,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Compute metrics of a predictions DataFrame (the output of ``model.transform``).

    Parameters
    ----------
    predictions_df
        Scored rows: label and prediction columns, plus probability / rawPrediction (classification)
        or features (clustering) when the chosen metrics need them.
    task
        ``classification``, ``regression``, ``clustering`` or ``recommendation``.
    metrics
        Config metric names; ``None`` means :data:`DEFAULT_METRICS` of the task.
    label_col
        Label column; for recommendation, the rating column.
    prediction_col, probability_col, raw_col, features_col
        Column names.
    k
        Cut-off of the ranking metrics.
    model
        The fitted ``ALSModel`` for recommendation ranking metrics (see the module docstring);
        ignored for other tasks.
    user_col, item_col
        Recommendation id columns.
    relevance_threshold
        A test item is relevant when its rating is at least this.
    num_classes
        Number of classes, when known; otherwise inferred from labels and predictions.

    Returns
    -------
    dict[str, float]
        One value per requested metric (NaN when it cannot be computed), plus
        ``mape_zero_labels_skipped`` when ``mape`` was requested.

    Raises
    ------
    UnknownNameError
        An unknown task or metric name.
    SparkpipeError
        A required column is missing.
    """
    names = resolve_metrics(task, metrics)
    if not names:
        return {}
    if task == "classification":
        return _classification(
            predictions_df, names, label_col, prediction_col, probability_col, raw_col, num_classes
        )
    if task == "regression":
        return _regression(predictions_df, names, label_col, prediction_col)
    if task == "clustering":
        return _clustering(predictions_df, names, prediction_col, features_col)
    return _recommendation(
        predictions_df, names, label_col, prediction_col, k, model, user_col, item_col, relevance_threshold
    )


__all__ = [
    "DEFAULT_METRICS",
    "LOG_LOSS_EPS",
    "METRICS",
    "METRIC_ALIASES",
    "THRESHOLD_BUCKETS",
    "MetricSpec",
    "calinski_harabasz_from_stats",
    "canonical_metric",
    "cluster_statistics",
    "davies_bouldin_from_stats",
    "default_primary_metric",
    "evaluate",
    "f1_optimal_threshold",
    "get_metric",
    "metric_direction",
    "ranking_frame",
    "resolve_metrics",
]
