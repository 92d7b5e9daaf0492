"""``evaluate``: the decision threshold (``evaluation.threshold: auto``) and the metrics of a fitted
model on the held-out splits → :class:`~sparkpipe.core.Evaluation`.

Metrics are computed in Spark on predictions narrowed to the columns they read and persisted; the rows
of each split are counted from the same predictions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sparkpipe.config import EvaluationConfig
from sparkpipe.core import LABEL_COL, Evaluation, FitResult, PreparedData
from sparkpipe.flow.fit import set_decision_threshold
from sparkpipe.progress import Progress

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


def evaluate_fit(
    fit: FitResult, ecfg: EvaluationConfig, progress: Progress | None = None, keep_report: bool | None = None
) -> Evaluation:
    """Choose the decision threshold (``threshold: auto``, on validation), then compute the configured
    metrics on the validation and test splits (``validation_<metric>``, ``test_<metric>``) and record
    the rows of each split in the data's lineage.

    ``keep_report`` (default ``ecfg.report``) keeps the predictions of the split the report plots
    (test, else validation) persisted in the result; :meth:`Evaluation.release` frees them.
    """
    progress = progress or Progress()
    data, model = fit.data, fit.model
    keep_report = ecfg.report if keep_report is None else keep_report
    threshold = None
    if ecfg.threshold == "auto" and data.validation is not None:
        with progress.step("choose threshold"):
            threshold = choose_threshold(model, data)
    metrics: dict[str, float] = {}
    report_split = "test" if data.test is not None else "validation"
    kept: DataFrame | None = None
    counted: dict[str, int] = {}
    with progress.step("evaluate"):
        for split_name, split_df in (("validation", data.validation), ("test", data.test)):
            if split_df is None:
                continue
            scored = score_for_metrics(model, split_df, data.task, data.user_col, data.item_col)
            values = metrics_of(scored, model, ecfg, data.task, fit.num_classes, data.user_col, data.item_col)
            metrics.update({f"{split_name}_{name}": v for name, v in values.items()})
            # rows of the split: read from the persisted predictions unless the model drops some
            counted[split_name] = (split_df if _drops_rows(model) else scored).count()
            if split_name == report_split and keep_report:
                kept = scored
            else:
                scored.unpersist()
        _count_split_rows(data, counted)
    return Evaluation(metrics=metrics, threshold=threshold, report_split=report_split, predictions=kept)


def choose_threshold(model: PipelineModel, data: PreparedData) -> dict[str, Any]:
    """``evaluation.threshold: auto``: the F1-optimal threshold on the validation split's predictions
    (:func:`sparkpipe.evaluation.f1_optimal_threshold`, a bounded aggregation), set on ``model``'s
    classifier stage (:func:`set_decision_threshold`) so the saved and served model predict with it."""
    from sparkpipe.evaluation import f1_optimal_threshold

    predictions = score_for_metrics(model, data.validation, data.task)
    try:
        chosen = f1_optimal_threshold(predictions, LABEL_COL)
    finally:
        predictions.unpersist()
    set_decision_threshold(model, chosen["threshold"])
    log.info(
        "evaluation.threshold: auto chose %.3f (validation F1 %.4f; %.4f at 0.5)",
        chosen["threshold"],
        chosen["f1"],
        chosen["f1_at_0_5"],
    )
    return {"method": "auto", **chosen}


def _drops_rows(model: PipelineModel) -> bool:
    """Whether ``model``'s predictions can have fewer rows than its input (ALS with
    ``coldStartStrategy: drop`` leaves out pairs of unseen users or items)."""
    last = model.stages[-1] if model.stages else None
    return last is not None and last.hasParam("coldStartStrategy") and last.getColdStartStrategy() == "drop"


def _count_split_rows(data: PreparedData, counted: dict[str, int]) -> None:
    """Record rows per split: validation and test as scored, train as the labelled rest (before the
    rows a ``missing_values: drop`` removed from it, which are counted separately)."""
    lineage = data.lineage
    for name, n in counted.items():
        lineage[f"{name}_rows"] = n
    labelled = lineage.get("labelled_rows")
    if labelled is not None:
        held_out = sum(counted.values()) + sum(
            lineage.get(f"dropped_missing_rows_{name}", 0) for name in counted
        )
        lineage["train_rows"] = int(labelled) - held_out


def evaluate_model(
    model: PipelineModel,
    df: DataFrame | None,
    ecfg: EvaluationConfig,
    task: str,
    num_classes: int | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``df`` for the configured metric list of ``task``."""
    if df is None:
        return {}
    predictions = score_for_metrics(model, df, task, user_col, item_col)
    try:
        return metrics_of(predictions, model, ecfg, task, num_classes, user_col, item_col)
    finally:
        predictions.unpersist()


def score_for_metrics(
    model: PipelineModel, df: DataFrame, task: str, user_col: str | None = None, item_col: str | None = None
) -> DataFrame:
    """``model``'s predictions on ``df``, narrowed to the columns metrics and plots read and persisted
    (spilling to disk): every metric and plot then reads this, not the source. Unpersist when done."""
    from pyspark import StorageLevel

    predictions = model.transform(df)
    keep = [LABEL_COL, "prediction", "probability", "rawPrediction", user_col, item_col]
    if task == "clustering":  # silhouette and friends read the feature vectors
        keep.append("features")
    cols = [c for c in dict.fromkeys(keep) if c and c in predictions.columns]
    return predictions.select(*cols).persist(StorageLevel.MEMORY_AND_DISK)


def metrics_of(
    predictions: DataFrame,
    model: PipelineModel,
    ecfg: EvaluationConfig,
    task: str,
    num_classes: int | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
) -> dict[str, float]:
    """The configured metrics of ``task`` on predictions from :func:`score_for_metrics`."""
    from sparkpipe.evaluation import evaluate

    extra: dict[str, Any] = {}
    if task == "recommendation":
        extra = {"model": model.stages[-1], "user_col": user_col, "item_col": item_col}
    return evaluate(
        predictions,
        task,
        list(getattr(ecfg, task)),
        label_col=LABEL_COL,
        k=ecfg.k,
        num_classes=num_classes,
        **extra,
    )
