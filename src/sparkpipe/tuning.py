"""Hyperparameter tuning over the model stage, with feature stages fitted once beforehand.

``method`` decides how candidates are validated (``cross_validation`` with ``num_folds`` or
``train_validation_split`` with ``train_ratio``); ``search`` decides how they are chosen. Grid search uses
Spark's ``ParamGridBuilder`` with ``CrossValidator``/``TrainValidationSplit`` and their ``parallelism``.
The original project's format works verbatim::

    tuning:
      enabled: true
      method: cross_validation
      num_folds: 3
      parallelism: 4
      param_grid:
        random_forest: {numTrees: [50, 100, 200], maxDepth: [5, 10, 15]}
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.ml import Estimator, Model
    from pyspark.sql import DataFrame, SparkSession

    from sparkpipe.config import PipelineConfig

log = logging.getLogger(__name__)


def grid_for(cfg: PipelineConfig, algorithm: str, spec: Any = None) -> dict[str, list[Any]]:
    """The param grid for ``algorithm``: the original per-algorithm format, a flat grid, or the
    algorithm's default search space discretised."""
    grid = cfg.tuning.param_grid or {}
    if algorithm in grid and isinstance(grid[algorithm], dict):
        return dict(grid[algorithm])
    if grid and all(isinstance(v, list) for v in grid.values()):
        return dict(grid)  # flat grid for the configured algorithm
    space = getattr(spec, "search_space", None) or {}
    out: dict[str, list[Any]] = {}
    for name, dist in space.items():
        if dist.get("type") == "choice":
            out[name] = list(dist["values"])
        elif dist.get("type") == "int":
            lo, hi = int(dist["low"]), int(dist["high"])
            out[name] = sorted({lo, (lo + hi) // 2, hi})
        elif dist.get("type") in ("uniform", "loguniform"):
            lo, hi = float(dist["low"]), float(dist["high"])
            out[name] = [lo, hi] if dist["type"] == "uniform" else [lo, (lo * hi) ** 0.5, hi]
    return out


def evaluator_for(task: str, metric: str, label_col: str = "label") -> Any:
    """A Spark evaluator for tuning (model selection needs a Spark ``Evaluator``)."""
    from pyspark.ml.evaluation import (
        BinaryClassificationEvaluator,
        ClusteringEvaluator,
        MulticlassClassificationEvaluator,
        RegressionEvaluator,
    )

    binary = {"auc_roc": "areaUnderROC", "auc_pr": "areaUnderPR"}
    multi = {"accuracy": "accuracy", "f1": "f1", "precision": "weightedPrecision", "recall": "weightedRecall",
             "log_loss": "logLoss"}
    reg = {"rmse": "rmse", "mae": "mae", "r2": "r2", "mse": "mse"}
    if task == "classification" and metric in binary:
        return BinaryClassificationEvaluator(labelCol=label_col, metricName=binary[metric])
    if task == "classification" and metric in multi:
        return MulticlassClassificationEvaluator(labelCol=label_col, metricName=multi[metric])
    if task in ("regression", "recommendation") and metric in reg:
        return RegressionEvaluator(labelCol=label_col, metricName=reg[metric])
    if task == "clustering" and metric == "silhouette":
        return ClusteringEvaluator()
    raise ConfigError([("tuning.metric", f"{metric!r} cannot drive tuning for {task}; use one of "
                        f"{sorted({**binary, **multi} if task == 'classification' else reg if task != 'clustering' else {'silhouette': 1})}")])


def tune(spark: SparkSession, cfg: PipelineConfig, spec: Any, estimator: Estimator, train: DataFrame,
         data: Any, progress: Any = None) -> tuple[Model, dict[str, Any]]:
    """Grid search with Spark's validators; return the best model refit on all of ``train`` and a summary."""
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit

    from sparkpipe.evaluation import default_primary_metric, metric_direction

    t0 = time.perf_counter()
    tcfg = cfg.tuning
    grid = grid_for(cfg, spec.name, spec)
    if not grid:
        raise ConfigError([("tuning.param_grid", f"no grid for {spec.name!r}; add param_grid: {{{spec.name}: {{param: [values]}}}}")])
    if tcfg.search != "grid":
        raise ConfigError([("tuning.search", f"{tcfg.search!r} search is not available yet; use 'grid'")])
    builder = ParamGridBuilder()
    for name, values in grid.items():
        builder = builder.addGrid(estimator.getParam(name), list(values))
    maps = builder.build()
    if tcfg.max_trials and len(maps) > tcfg.max_trials:
        raise ConfigError([("tuning.max_trials", f"the grid has {len(maps)} candidates, more than max_trials={tcfg.max_trials}")])
    metric = tcfg.metric or default_primary_metric(data.task, None)
    evaluator = evaluator_for(data.task, metric)
    common = {"estimator": estimator, "estimatorParamMaps": maps, "evaluator": evaluator,
              "parallelism": tcfg.parallelism, "seed": tcfg.seed}
    if tcfg.method == "cross_validation":
        validator = CrossValidator(numFolds=tcfg.num_folds, **common)
    else:
        validator = TrainValidationSplit(trainRatio=tcfg.train_ratio, **common)
    log.info("tuning %s: %d candidates x %s, metric %s", spec.name, len(maps),
             f"{tcfg.num_folds} folds" if tcfg.method == "cross_validation" else "1 split", metric)
    fitted = validator.fit(train)
    scores = list(fitted.avgMetrics) if hasattr(fitted, "avgMetrics") else list(fitted.validationMetrics)
    stds = list(getattr(fitted, "stdMetrics", []) or [0.0] * len(scores))
    larger = evaluator.isLargerBetter()
    best = max(range(len(scores)), key=lambda i: scores[i] if larger else -scores[i])
    trials = [{"params": {p.name: v for p, v in m.items()}, "mean": s, "std": sd}
              for m, s, sd in zip(maps, scores, stds, strict=False)]
    summary = {"search": "grid", "method": tcfg.method, "metric": metric,
               "direction": metric_direction(metric) if metric else ("max" if larger else "min"),
               "num_trials": len(maps), "best_params": trials[best]["params"], "best_score": scores[best],
               "trials": trials, "seconds": time.perf_counter() - t0}
    return fitted.bestModel, summary


def grid_size(grid: dict[str, list[Any]]) -> int:
    return len(list(itertools.product(*grid.values()))) if grid else 0
