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

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ConfigError, ModelError
from sparkpipe.search import (  # the engine; public names re-exported
    FOLD_COL,
    Folds,
    TrialResult,
    _fmt_seconds,
    _GridSource,
    _OptunaSource,
    _RandomSource,
    _Search,
    grid_points,
    param_importance,
    sample_space,
    to_param_map,
)

if TYPE_CHECKING:
    from pyspark.ml import Estimator, Model
    from pyspark.sql import DataFrame, SparkSession

    from sparkpipe.config import PipelineConfig, TuningConfig
    from sparkpipe.core import PreparedData
    from sparkpipe.models.algorithms import AlgorithmSpec
    from sparkpipe.tracking import Tracker

log = logging.getLogger(__name__)


#: Trials of a random or Bayesian search when ``max_trials`` is not set.
DEFAULT_MAX_TRIALS = 20


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


def grid_size(grid: dict[str, list[Any]]) -> int:
    """Number of points of a grid."""
    return math.prod(len(v) for v in grid.values()) if grid else 0


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
    t0 = time.perf_counter()
    tcfg = cfg.tuning
    metric, direction, scorer = _metric_and_scorer(cfg, spec, train, data)

    search = tcfg.search
    source, space_desc, study = _trial_source(cfg, spec, direction)

    t_folds = time.perf_counter()
    folds = Folds(train, tcfg.method, tcfg.num_folds, tcfg.train_ratio, tcfg.seed, cache=True)
    fold_seconds = time.perf_counter() - t_folds
    _log_start(spec.name, source.total, tcfg, metric, direction)
    results, best, engine = _run_search(
        estimator, source, folds, scorer, metric, direction, spec.name, tcfg, t0, tracker
    )
    search_seconds = time.perf_counter() - engine.t0

    t_refit = time.perf_counter()
    model = estimator.fit(train, params=to_param_map(estimator, best.params))
    refit_seconds = time.perf_counter() - t_refit
    summary = _summary(search, tcfg.method, metric, direction, space_desc, results, best, engine, folds)
    summary.update(fold_seconds=fold_seconds, search_seconds=search_seconds, refit_seconds=refit_seconds)
    summary["importance"] = param_importance(summary, study)
    summary["seconds"] = time.perf_counter() - t0
    _log_best(tracker, spec.name, best, summary)
    return model, summary


def _metric_and_scorer(
    cfg: PipelineConfig, spec: AlgorithmSpec, train: DataFrame, data: PreparedData
) -> tuple[str, str, Any]:
    """The metric trials are ranked by, its direction and the scorer that computes it on a fold."""
    from sparkpipe.evaluation import metric_direction

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
    return metric, direction, scorer


def _trial_source(cfg: PipelineConfig, spec: AlgorithmSpec, direction: str) -> tuple[Any, Any, Any]:
    """The candidates of ``tuning.search``: ``(source, space as logged, Optuna study or None)``.

    Raises
    ------
    ConfigError
        No grid, or a grid larger than ``max_trials``.
    """
    from sparkpipe.config_checks import param_grid_for

    tcfg = cfg.tuning
    search = tcfg.search
    user_space = _user_space(cfg, spec)
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

    return source, space_desc, study


def _summary(
    search: str,
    method: str,
    metric: str,
    direction: str,
    space_desc: Any,
    results: list[TrialResult],
    best: TrialResult,
    engine: Any,
    folds: Folds,
) -> dict[str, Any]:
    """The JSON-friendly tuning summary (times and importance are added by :func:`tune`)."""
    return {
        "search": search,
        "method": method,
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
    }


def _log_best(tracker: Tracker | None, name: str, best: TrialResult, summary: dict[str, Any]) -> None:
    """The best trial, logged, and its score and parameters on the tuned run (when tracked)."""
    log.info(
        "tuning %s done: best %s=%.4f±%.4f with %s (trial %d of %d; %d pruned, %d failed) in %s",
        name,
        summary["metric"],
        best.mean,
        best.std,
        best.params,
        best.number,
        summary["num_trials"],
        summary["num_pruned"],
        summary["num_failed"],
        _fmt_seconds(summary["seconds"]),
    )
    if tracker is not None and tracker.enabled and tracker.info is not None:
        tracker.log_metrics(
            {
                "tuning_best_score": best.mean,
                "tuning_trials": summary["num_trials"],
                "tuning_pruned": summary["num_pruned"],
                "tuning_seconds": summary["seconds"],
            }
        )
        tracker.log_params({f"tuning.best.{k}": v for k, v in best.params.items()})


def _log_start(name: str, total: Any, tcfg: TuningConfig, metric: str, direction: str) -> None:
    log.info(
        "tuning %s: %s search, %s candidates, %s, metric %s (%s), parallelism %d%s",
        name,
        tcfg.search,
        total,
        f"{tcfg.num_folds}-fold CV"
        if tcfg.method == "cross_validation"
        else f"train/validation split {tcfg.train_ratio:g}",
        metric,
        direction,
        tcfg.parallelism,
        f", timeout {tcfg.timeout_minutes:g} min" if tcfg.timeout_minutes else "",
    )


def _run_search(
    estimator: Estimator,
    source: Any,
    folds: Folds,
    scorer: Callable[[DataFrame, Any], float],
    metric: str,
    direction: str,
    name: str,
    tcfg: TuningConfig,
    t0: float,
    tracker: Tracker | None,
) -> tuple[list[TrialResult], TrialResult, _Search]:
    """Run every trial (folds unpersisted after); the results, the best one and the engine.

    Raises
    ------
    ModelError
        No trial completed.
    """
    deadline = t0 + tcfg.timeout_minutes * 60 if tcfg.timeout_minutes else None
    engine = _Search(
        estimator, folds, scorer, direction, metric, name, tcfg.parallelism, deadline, tracker, tcfg.search
    )
    try:
        results = engine.run(source)
    finally:
        folds.unpersist()
    best = engine.best()
    if best is None:
        errors = sorted({r.error for r in results if r.error})
        raise ModelError(
            f"tuning {name}: none of {len(results)} trials completed"
            + (f"; errors: {'; '.join(errors[:3])}" if errors else "")
        )
    return results, best, engine


__all__ = [
    "DEFAULT_MAX_TRIALS",
    "FOLD_COL",
    "Folds",
    "TrialResult",
    "discretise",
    "evaluator_for",
    "grid_for",
    "grid_points",
    "grid_size",
    "make_scorer",
    "param_importance",
    "resolve_metric",
    "sample_space",
    "space_for",
    "to_param_map",
    "tune",
]
