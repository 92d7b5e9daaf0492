"""Model comparison: several algorithms on the same split, a leaderboard, the winner registered.

``sparkpipe compare --config FILE --algorithms logistic_regression,random_forest,gbt`` (or a
``compare:`` section) reads and splits the data **once** (:func:`sparkpipe.pipeline.prepare_data`),
then for each algorithm fits its feature stages and model on the same training rows — tuned first when
``compare.tune: true``, with the ``tuning`` section's settings and the algorithm's ``param_grid`` /
``search_space`` entry or default space — and scores it on the same validation and test rows.
Hyperparameters come from ``compare.hyperparameters.<algorithm>`` (and ``model.hyperparameters`` for
the configured ``model.algorithm``); other algorithms use their defaults.

The leaderboard ranks algorithms by the **validation** score of the primary metric (``compare.metric``,
else ``tuning.metric``, else ``evaluation.primary_metric``, else the task default: ``auc_roc`` for a
binary label, ``f1`` for more classes, ``rmse`` for regression, ``silhouette`` for clustering). The test
score is reported beside it but never used to choose, so it stays an honest estimate.

The ``±`` next to the validation score is the standard deviation over ``compare.bootstrap_samples``
(default 20) **bootstrap resamples of the validation set** (Poisson(1) row weights drawn in Spark with
a fixed seed, rows replicated accordingly, the metric recomputed with the same scorer as tuning): an
estimate of the score's sampling error on a validation set of that size. It is not a cross-validation
spread; with ``compare.tune: true`` the leaderboard also shows each algorithm's best CV score.

MLflow: one parent run for the comparison (config, leaderboard as a table artifact
``compare/leaderboard.json`` plus ``.csv``/``.md``, per-algorithm metrics ``<algorithm>.validation_<metric>``,
the winner's model, the report) and one child run per algorithm (its params, validation and test
metrics, training time and, when tuned, its tuning summary with one grandchild run per trial). The
winner's ``PipelineModel`` is logged in the parent run and registered under ``mlflow.registered_model_name``
(or ``model.name``, or ``<data set>_<winner algorithm>``) with the configured alias.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from sparkpipe.config import PipelineConfig

log = logging.getLogger(__name__)

#: Cumulative Poisson(1) probabilities: a uniform draw above k of them means weight k.
_POISSON_CDF = (0.36787944, 0.73575888, 0.91969860, 0.98101184, 0.99634015, 0.99940582, 0.99991676)

BOOTSTRAP_NOTE = (
    "validation score ± standard deviation over {n} bootstrap resamples of the validation set "
    "({rows:,} rows); ranked on validation, test shown for reference"
)


@dataclass
class CompareResult:
    """What one comparison produced (also written to ``<output_path>/compare.json``)."""

    run_id: str | None
    task: str
    metric: str
    direction: str
    leaderboard: list[dict[str, Any]]
    winner: str
    algorithms: list[str]
    registered_name: str | None = None
    registered_version: str | None = None
    model_uri: str | None = None
    report_path: str | None = None
    output_path: str | None = None
    tracking_uri: str | None = None
    note: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ bootstrap
def bootstrap_scores(pred: DataFrame, scorer: Any, model: Any, samples: int, seed: int = 42) -> list[float]:
    """The metric on ``samples`` bootstrap resamples of ``pred``, computed in Spark.

    Each resample gives every row a Poisson(1) weight from a seeded uniform draw and replicates the row
    that many times (the usual Poisson approximation of resampling with replacement, one pass, no
    collect); ``scorer(frame, model)`` then computes the metric on it.
    """
    from pyspark.sql import functions as F

    if samples <= 0:
        return []
    base = pred.cache()
    try:
        out: list[float] = []
        for b in range(samples):
            u = F.rand(seed + 7919 * (b + 1))
            weight = sum((F.when(u >= F.lit(t), 1).otherwise(0) for t in _POISSON_CDF), F.lit(0))
            resample = (
                base.withColumn("_w", weight)
                .where(F.col("_w") > 0)
                .withColumn("_r", F.explode(F.array_repeat(F.lit(1), F.col("_w"))))
                .drop("_w", "_r")
            )
            value = scorer(resample, model)
            if value is not None and math.isfinite(value):
                out.append(float(value))
        return out
    finally:
        base.unpersist()


# ------------------------------------------------------------------------------------------- compare
def _num_classes(data: Any) -> int | None:
    if data.task != "classification":
        return None
    if data.label_labels:
        return len(data.label_labels)
    from pyspark.sql import functions as F

    top = data.train.agg(F.max("label")).first()[0]
    return int(top) + 1 if top is not None else None


def _rank(rows: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[int, float]:
        s = r.get("score")
        if s is None or not math.isfinite(s):
            return (1, 0.0)
        return (0, -s if direction == "max" else s)

    ranked = sorted(rows, key=key)
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return ranked


def leaderboard_table(rows: list[dict[str, Any]], metric: str) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the leaderboard for artifacts and printing."""
    columns = [
        "rank",
        "algorithm",
        f"validation_{metric}",
        f"validation_{metric}_std",
        f"test_{metric}",
        "cv_score",
        "train_seconds",
    ]
    data = [
        [
            r["rank"],
            r["algorithm"],
            r.get("score"),
            r.get("score_std"),
            r.get("test_score"),
            r.get("cv_score"),
            round(r.get("train_seconds", 0.0), 2),
        ]
        for r in rows
    ]
    return columns, data


def _markdown(columns: list[str], data: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("—" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in data]
    return "\n".join(lines) + "\n"


def _csv(columns: list[str], data: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows(data)
    return buf.getvalue()


def compare(
    cfg: PipelineConfig,
    algorithms: list[str] | None = None,
    tune: bool | None = None,
    raw_yaml: str | None = None,
    spark: SparkSession | None = None,
) -> CompareResult:
    """Train (optionally tune) each algorithm on the same split; rank, track, register the winner.

    Parameters
    ----------
    cfg
        The validated config; ``compare.algorithms`` is used when ``algorithms`` is not given.
    algorithms
        Algorithm names (at least two).
    tune
        Tune each algorithm first (default ``compare.tune``).
    raw_yaml
        The YAML as written, logged with the parent run.
    spark
        An existing session to reuse; by default one is built from ``cfg.spark``.

    Returns
    -------
    CompareResult

    Raises
    ------
    ConfigError
        Fewer than two algorithms.
    """
    from sparkpipe.evaluation import canonical_metric, default_primary_metric, metric_direction
    from sparkpipe.models.algorithms import get_algorithm, normalize_name
    from sparkpipe.pipeline import (
        _input_example,
        _model_params,
        evaluate_model,
        feature_names_meta,
        fit_model,
        model_signature,
        prepare_data,
        setup_logging,
    )
    from sparkpipe.progress import Progress
    from sparkpipe.session import get_spark
    from sparkpipe.tracking import Tracker
    from sparkpipe.tuning import make_scorer

    ccfg = cfg.compare
    names = [normalize_name(a) for a in (algorithms or (ccfg.algorithms if ccfg else []))]
    names = list(dict.fromkeys(names))
    if len(names) < 2:
        raise ConfigError(
            [
                (
                    "compare.algorithms",
                    "name at least two algorithms to compare, e.g. "
                    "--algorithms logistic_regression,random_forest,gbt",
                )
            ]
        )
    do_tune = tune if tune is not None else bool(ccfg and ccfg.tune)
    samples = ccfg.bootstrap_samples if ccfg else 20

    setup_logging(cfg)
    t_start = time.perf_counter()
    if spark is None:
        from sparkpipe.preflight import check_preflight

        check_preflight(cfg)  # master reachable, connectors, input and target: before any JVM
    spark = spark or get_spark(cfg.spark, cfg.optimization)
    progress = Progress(spark=spark)
    data = prepare_data(spark, cfg, progress)
    num_classes = _num_classes(data)
    metric = canonical_metric(
        (ccfg.metric if ccfg else None)
        or cfg.tuning.metric
        or cfg.evaluation.primary_metric
        or default_primary_metric(data.task, num_classes)
    )
    direction = metric_direction(metric, data.task)
    eval_name, eval_df = (
        ("validation", data.validation) if data.validation is not None else ("test", data.test)
    )
    if eval_df is None:
        raise ConfigError(
            [
                (
                    "data.validation_split",
                    "comparison needs a validation (or test) split; set data.validation_split: 0.15",
                )
            ]
        )
    if eval_name == "test":
        log.warning(
            "no validation split: the leaderboard ranks on the test split (set data.validation_split)"
        )
    eval_df = eval_df.cache()
    eval_rows = eval_df.count()
    algo_cfg = cfg.model_copy(
        update={"tuning": cfg.tuning.model_copy(update={"enabled": do_tune, "metric": metric})}
    )
    tracker = Tracker(cfg)
    rows: list[dict[str, Any]] = []
    fitted: dict[str, tuple[Any, dict[str, Any]]] = {}
    log.info(
        "comparing %s on %s (%s, %d %s rows)%s",
        ", ".join(names),
        cfg.data.input_path,
        metric,
        eval_rows,
        eval_name,
        " with tuning" if do_tune else "",
    )
    result = CompareResult(
        run_id=None,
        task=data.task,
        metric=metric,
        direction=direction,
        leaderboard=[],
        winner="",
        algorithms=names,
        output_path=cfg.data.output_path,
        lineage=data.lineage,
        note=BOOTSTRAP_NOTE.format(n=samples, rows=eval_rows)
        if samples
        else "ranked on validation; no bootstrap (compare.bootstrap_samples: 0)",
    )
    with tracker.run(
        run_name=f"compare-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"sparkpipe.task": data.task, "sparkpipe.compare": ",".join(names)},
    ) as run:
        tracker.log_config(cfg, raw_yaml)
        tracker.log_params(
            {
                "compare.algorithms_run": ",".join(names),
                "compare.metric_used": metric,
                "compare.tuned": do_tune,
            }
        )
        for algo in names:
            spec = get_algorithm(algo, data.task)
            hyper = dict(cfg.model.hyperparameters) if normalize_name(cfg.model.algorithm) == algo else {}
            per_algo = {normalize_name(k): v for k, v in (ccfg.hyperparameters if ccfg else {}).items()}
            hyper.update(per_algo.get(algo, {}))
            with (
                tracker.run(
                    run_name=algo,
                    nested=True,
                    tags={"sparkpipe.algorithm": algo, "sparkpipe.task": data.task},
                ),
                progress.step(f"compare: {algo}"),
            ):
                t0 = time.perf_counter()
                model, info = fit_model(
                    spark, algo_cfg, data, progress, algorithm=algo, hyperparameters=hyper, tracker=tracker
                )
                train_seconds = time.perf_counter() - t0
                metrics: dict[str, float] = {}
                for split_name, split_df in (("validation", data.validation), ("test", data.test)):
                    for name, value in evaluate_model(
                        model, split_df, cfg, data.task, info["num_classes"], data.user_col, data.item_col
                    ).items():
                        metrics[f"{split_name}_{name}"] = value
                scorer = make_scorer(
                    data.task, metric, num_classes, spec.supports_probability, cfg.evaluation.k
                )
                last = (
                    model.stages[-2]
                    if type(model.stages[-1]).__name__ == "IndexToString"
                    else model.stages[-1]
                )
                score = scorer(model.transform(eval_df), last)
                test_score = scorer(model.transform(data.test), last) if data.test is not None else None
                boot = bootstrap_scores(model.transform(eval_df), scorer, last, samples, cfg.data.seed)
                tuning = info.get("tuning")
                row = {
                    "algorithm": algo,
                    "score": score,
                    "score_std": statistics.pstdev(boot) if len(boot) > 1 else None,
                    "bootstrap_mean": statistics.fmean(boot) if boot else None,
                    "test_score": test_score,
                    "train_seconds": train_seconds,
                    "cv_score": tuning["best_score"] if tuning else None,
                    "best_params": tuning["best_params"] if tuning else None,
                    "metrics": metrics,
                }
                rows.append(row)
                fitted[algo] = (model, info)
                tracker.log_params({"algorithm": algo, "hyperparameters": _model_params(model)})
                tracker.log_metrics(
                    {
                        **metrics,
                        f"{eval_name}_{metric}_bootstrap_std": row["score_std"],
                        "train_seconds": train_seconds,
                    }
                )
                if tuning:
                    tracker.log_dict(tuning, "tuning/summary.json")
                log.info(
                    "compare %s: %s %s=%.4f%s, test %s, %.1fs",
                    algo,
                    eval_name,
                    metric,
                    score,
                    f" ± {row['score_std']:.4f}" if row["score_std"] is not None else "",
                    f"{test_score:.4f}" if test_score is not None else "—",
                    train_seconds,
                )

        ranked = _rank(rows, direction)
        result.leaderboard = ranked
        winner = ranked[0]["algorithm"]
        result.winner = winner
        columns, table = leaderboard_table(ranked, metric)
        tracker.log_dict({"columns": columns, "data": table}, "compare/leaderboard.json")
        tracker.log_text(_markdown(columns, table), "compare/leaderboard.md")
        tracker.log_text(_csv(columns, table), "compare/leaderboard.csv")
        parent_metrics: dict[str, float] = {}
        for r in ranked:
            parent_metrics[f"{r['algorithm']}.{eval_name}_{metric}"] = r["score"]
            parent_metrics[f"{r['algorithm']}.test_{metric}"] = r["test_score"]
            parent_metrics[f"{r['algorithm']}.train_seconds"] = r["train_seconds"]
            parent_metrics[f"{r['algorithm']}.rank"] = r["rank"]
        parent_metrics.update({f"{k}": v for k, v in ranked[0]["metrics"].items()})
        tracker.log_metrics(parent_metrics)
        tracker.set_tags({"sparkpipe.winner": winner, "sparkpipe.algorithm": winner})

        model, info = fitted[winner]
        plan = info["feature_plan"]
        win_cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"algorithm": winner})})
        reg_name = win_cfg.registered_model_name()
        if run is not None:
            with progress.step("register winner"):
                input_cols = [n for n, _ in plan.input_schema]
                example = (
                    _input_example(data.train, input_cols)
                    if cfg.mlflow.log_input_example and input_cols
                    else None
                )
                meta = {
                    "task": data.task,
                    "algorithm": winner,
                    "target": data.target,
                    "label_labels": data.label_labels,
                    **feature_names_meta(plan),
                    "input_schema": [list(x) for x in plan.input_schema],
                    "user_col": data.user_col,
                    "item_col": data.item_col,
                }
                result.model_uri = tracker.log_spark_model(
                    model,
                    input_example=example,
                    metadata={"sparkpipe": meta},
                    signature=model_signature(plan.input_schema, data.task, data.task == "classification"),
                )
                if cfg.mlflow.register_model:
                    result.registered_version = tracker.register(
                        result.model_uri,
                        reg_name,
                        alias=cfg.mlflow.alias,
                        tags={"task": data.task, "algorithm": winner, "compare": ",".join(names)},
                    )
                    result.registered_name = reg_name
            result.run_id, result.tracking_uri = run.run_id, run.tracking_uri
        if cfg.evaluation.report:
            from sparkpipe.report import compare_report

            with progress.step("report"):
                result.report_path = compare_report(cfg, result, model, data, info, tracker)
        result.timings = dict(progress.timings)
        result.timings["total"] = time.perf_counter() - t_start
        out = _write_result(cfg, result)
        if run is not None:
            tracker.log_artifact(out)
    eval_df.unpersist()
    with contextlib.suppress(Exception):
        data.train.unpersist()
    data.release()
    return result


def _write_result(cfg: PipelineConfig, result: CompareResult) -> Path:
    out = Path(cfg.data.output_path)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".compare.json.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    os.replace(tmp, out / "compare.json")
    return out / "compare.json"
