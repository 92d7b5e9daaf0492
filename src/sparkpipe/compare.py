"""Model comparison: several algorithms on the same split, a leaderboard, the winner registered.

``sparkpipe compare --config FILE --algorithms logistic_regression,random_forest,gbt`` (or a
``compare:`` section) reads and splits the data **once** (:func:`sparkpipe.flow.prepare.prepare_data`),
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
    from sparkpipe.core import Evaluation, FitResult, PreparedData, RunResult
    from sparkpipe.progress import Progress
    from sparkpipe.tracking import RunInfo, Tracker

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
    promotion: dict[str, Any] | None = None
    """The promotion gate's decision for the winner's version (see :mod:`sparkpipe.flow.promote`)."""
    output_path: str | None = None
    tracking_uri: str | None = None
    note: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Analysis steps (explain, report) of the winner that failed; the model is complete."""

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
def _num_classes(data: PreparedData) -> int | None:
    if data.task != "classification":
        return None
    if data.label_labels:
        return len(data.label_labels)
    if data.num_classes:
        return data.num_classes
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

    A loop over the training path (:mod:`sparkpipe.flow`): the data is prepared once, each algorithm
    is fitted and evaluated exactly as ``sparkpipe run`` would (``fit → evaluate``, in a child run),
    and the winner is published by the same :func:`~sparkpipe.flow.publish.publish` (so it carries
    the same metadata, explanation and registry steps as a run), with the comparison's report and
    record (``compare.json``).

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
    from sparkpipe.flow.prepare import prepare_data, start
    from sparkpipe.tracking import Tracker

    ccfg = cfg.compare
    names = _algorithm_names(cfg, algorithms)
    do_tune = tune if tune is not None else bool(ccfg and ccfg.tune)
    samples = ccfg.bootstrap_samples if ccfg else 20
    t_start = time.perf_counter()
    spark, progress = start(cfg, spark)
    data = prepare_data(spark, cfg, progress)
    board = _Board.build(cfg, data, samples)
    try:
        algo_cfg = cfg.model_copy(
            update={"tuning": cfg.tuning.model_copy(update={"enabled": do_tune, "metric": board.metric})}
        )
        tracker = Tracker(cfg)
        result = _new_result(cfg, data, names, board, do_tune)
        with tracker.run(
            run_name=f"compare-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"sparkpipe.task": data.task, "sparkpipe.compare": ",".join(names)},
        ) as run:
            tracker.log_params(
                {
                    "compare.algorithms_run": ",".join(names),
                    "compare.metric_used": board.metric,
                    "compare.tuned": do_tune,
                }
            )
            fitted: dict[str, tuple[FitResult, Evaluation]] = {}
            rows = []
            for algo in names:
                row, fit, evaluation = _fit_one(spark, cfg, algo_cfg, data, algo, board, tracker, progress)
                rows.append(row)
                fitted[algo] = (fit, evaluation)
            ranked = _rank(rows, board.direction)
            result.leaderboard, result.winner = ranked, ranked[0]["algorithm"]
            _log_leaderboard(tracker, ranked, board)
            fit, evaluation = fitted[result.winner]
            _publish_winner(cfg, tracker, run, fit, evaluation, progress, result, raw_yaml, t_start)
    finally:
        board.release()
        data.release()
    return result


def _new_result(
    cfg: PipelineConfig, data: PreparedData, names: list[str], board: _Board, do_tune: bool
) -> CompareResult:
    """The comparison's result before any algorithm ran (logged as the comparison starts)."""
    log.info(
        "comparing %s on %s (%s, %d %s rows)%s",
        ", ".join(names),
        cfg.data.input_path,
        board.metric,
        board.eval_rows,
        board.eval_name,
        " with tuning" if do_tune else "",
    )
    note = (
        BOOTSTRAP_NOTE.format(n=board.samples, rows=board.eval_rows)
        if board.samples
        else "ranked on validation; no bootstrap (compare.bootstrap_samples: 0)"
    )
    return CompareResult(
        run_id=None,
        task=data.task,
        metric=board.metric,
        direction=board.direction,
        leaderboard=[],
        winner="",
        algorithms=names,
        output_path=cfg.data.output_path,
        lineage=data.lineage,
        note=note,
    )


def _algorithm_names(cfg: PipelineConfig, algorithms: list[str] | None) -> list[str]:
    """The algorithms to compare (normalized, deduplicated); at least two."""
    from sparkpipe.models.algorithms import normalize_name

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
    return names


@dataclass(frozen=True)
class _Board:
    """How the leaderboard ranks: the metric, its direction, and the split it is computed on (cached
    for the comparison)."""

    metric: str
    direction: str
    eval_name: str
    eval_df: DataFrame
    eval_rows: int
    samples: int
    seed: int
    k: int

    @classmethod
    def build(cls, cfg: PipelineConfig, data: PreparedData, samples: int) -> _Board:
        from sparkpipe.evaluation import canonical_metric, default_primary_metric, metric_direction

        ccfg = cfg.compare
        metric = canonical_metric(
            (ccfg.metric if ccfg else None)
            or cfg.tuning.metric
            or cfg.evaluation.primary_metric
            or default_primary_metric(data.task, _num_classes(data))
        )
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
        return cls(
            metric,
            metric_direction(metric, data.task),
            eval_name,
            eval_df,
            eval_df.count(),
            samples,
            cfg.data.seed,
            cfg.evaluation.k,
        )

    def release(self) -> None:
        self.eval_df.unpersist()


def _fit_one(
    spark: SparkSession,
    cfg: PipelineConfig,
    algo_cfg: PipelineConfig,
    data: PreparedData,
    algo: str,
    board: _Board,
    tracker: Tracker,
    progress: Progress,
) -> tuple[dict[str, Any], FitResult, Evaluation]:
    """Fit and evaluate one algorithm in its own child run, exactly as a run would; score it for the
    leaderboard (with bootstrap resamples). Returns its leaderboard row, fit and evaluation."""
    from sparkpipe.flow.evaluate import evaluate_fit
    from sparkpipe.flow.fit import classifier_stage, fit_model
    from sparkpipe.flow.publish import model_params
    from sparkpipe.models.algorithms import normalize_name
    from sparkpipe.tuning import make_scorer

    ccfg = cfg.compare
    hyper = dict(cfg.model.hyperparameters) if normalize_name(cfg.model.algorithm) == algo else {}
    per_algo = {normalize_name(k): v for k, v in (ccfg.hyperparameters if ccfg else {}).items()}
    hyper.update(per_algo.get(algo, {}))
    with (
        tracker.run(
            run_name=algo, nested=True, tags={"sparkpipe.algorithm": algo, "sparkpipe.task": data.task}
        ),
        progress.step(f"compare: {algo}"),
    ):
        fit = fit_model(
            spark, algo_cfg, data, progress, algorithm=algo, hyperparameters=hyper, tracker=tracker
        )
        evaluation = evaluate_fit(fit, cfg.evaluation, progress, keep_report=False)
        model, last = fit.model, classifier_stage(fit.model)
        scorer = make_scorer(data.task, board.metric, fit.num_classes, fit.spec.supports_probability, board.k)
        score = scorer(model.transform(board.eval_df), last)
        test = fit.data.test
        test_score = scorer(model.transform(test), last) if test is not None else None
        boot = bootstrap_scores(model.transform(board.eval_df), scorer, last, board.samples, board.seed)
        tuning = fit.tuning
        row = {
            "algorithm": algo,
            "score": score,
            "score_std": statistics.pstdev(boot) if len(boot) > 1 else None,
            "bootstrap_mean": statistics.fmean(boot) if boot else None,
            "test_score": test_score,
            "train_seconds": fit.train_seconds,
            "cv_score": tuning["best_score"] if tuning else None,
            "best_params": tuning["best_params"] if tuning else None,
            "metrics": evaluation.metrics,
        }
        tracker.log_params({"algorithm": algo, "hyperparameters": model_params(model)})
        tracker.log_metrics(
            {
                **evaluation.metrics,
                f"{board.eval_name}_{board.metric}_bootstrap_std": row["score_std"],
                "train_seconds": fit.train_seconds,
            }
        )
        if tuning:
            tracker.log_dict(tuning, "tuning/summary.json")
    log.info(
        "compare %s: %s %s=%.4f%s, test %s, %.1fs",
        algo,
        board.eval_name,
        board.metric,
        score,
        f" ± {row['score_std']:.4f}" if row["score_std"] is not None else "",
        f"{test_score:.4f}" if test_score is not None else "—",
        fit.train_seconds,
    )
    return row, fit, evaluation


def _log_leaderboard(tracker: Tracker, ranked: list[dict[str, Any]], board: _Board) -> None:
    """The leaderboard as artifacts (JSON, Markdown, CSV) and per-algorithm metrics of the parent run."""
    metric = board.metric
    columns, table = leaderboard_table(ranked, metric)
    tracker.log_dict({"columns": columns, "data": table}, "compare/leaderboard.json")
    tracker.log_text(_markdown(columns, table), "compare/leaderboard.md")
    tracker.log_text(_csv(columns, table), "compare/leaderboard.csv")
    parent_metrics: dict[str, float] = {}
    for r in ranked:
        parent_metrics[f"{r['algorithm']}.{board.eval_name}_{metric}"] = r["score"]
        parent_metrics[f"{r['algorithm']}.test_{metric}"] = r["test_score"]
        parent_metrics[f"{r['algorithm']}.train_seconds"] = r["train_seconds"]
        parent_metrics[f"{r['algorithm']}.rank"] = r["rank"]
    tracker.log_metrics(parent_metrics)
    winner = ranked[0]["algorithm"]
    tracker.set_tags({"sparkpipe.winner": winner, "sparkpipe.algorithm": winner})


def _publish_winner(
    cfg: PipelineConfig,
    tracker: Tracker,
    run: RunInfo | None,
    fit: FitResult,
    evaluation: Evaluation,
    progress: Progress,
    result: CompareResult,
    raw_yaml: str | None,
    started: float,
) -> None:
    """Publish the winner in the parent run through the one publish step, with the comparison's
    report and record (``compare.json``); ``result`` gets the run, model, report and registry fields."""
    from sparkpipe.flow.publish import publish
    from sparkpipe.report import compare_report

    def report(res: RunResult) -> str:
        result.run_id, result.tracking_uri = res.run_id, res.tracking_uri
        return compare_report(cfg, result, fit, tracker)

    def record(res: RunResult) -> RunResult:
        result.run_id, result.tracking_uri, result.model_uri = res.run_id, res.tracking_uri, res.model_uri
        result.report_path = res.report_path
        result.registered_name, result.registered_version = res.registered_name, res.registered_version
        result.promotion = res.promotion
        result.timings, result.warnings = dict(res.timings), list(res.warnings)
        return res.with_(record_path=str(_write_result(cfg, result)))

    publish(
        cfg,
        tracker,
        run,
        fit,
        evaluation,
        progress,
        raw_yaml=raw_yaml,
        report=report,
        record=record,
        register_tags={"compare": ",".join(result.algorithms)},
        started=started,
    )


def _write_result(cfg: PipelineConfig, result: CompareResult) -> Path:
    out = Path(cfg.data.output_path)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".compare.json.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    os.replace(tmp, out / "compare.json")
    return out / "compare.json"
