"""The evaluation report: PNG plots per run, logged to MLflow and gathered into one HTML file.

:func:`run_report` (called by ``run_pipeline`` when ``evaluation.report: true``, the default) and
:func:`compare_report` (``sparkpipe compare``) write ``<data.output_path>/report.html``: one
self-contained file, every image embedded as a base64 ``data:`` URI, so it opens from disk without a
server. The same PNGs and the HTML are logged to the active MLflow run under ``report/``.

Plots, by task (on the test split, or the validation split when there is no test split):

classification
    ROC and precision-recall curves (one-vs-rest per class, at most 10 classes, when there are more
    than two), the confusion matrix, and a calibration (reliability) diagram — of ``P(class 1)`` for a
    binary label, of the top-class confidence for more classes.
regression and recommendation
    Predicted vs actual and residuals vs predicted (scatter), and a residual histogram.
clustering
    Cluster sizes and a silhouette plot (per-point silhouettes, squared Euclidean distance as Spark's
    ``ClusteringEvaluator``).
tuning runs
    Tuning history (each trial's CV score, pruned trials at their last running mean, the best so far)
    and parameter importance (see :func:`sparkpipe.tuning.param_importance`).
compare
    The leaderboard as a bar chart (validation score ± its bootstrap standard deviation).

What reaches the driver: curves and calibration come from **bucketed aggregation in Spark** — the score
range is cut into 200 buckets (10 for calibration) and only per-bucket counts are collected, so the
curves are exact at the bucket edges and cost one aggregation whatever the row count. The confusion
matrix and cluster sizes are ``groupBy`` counts. Scatter plots and histograms use a seeded random
sample of at most 50,000 rows (:data:`MAX_SCATTER_ROWS`); per-point silhouettes need all pairwise
distances within the sample, so they use at most 2,000 rows (fewer for very wide feature vectors). The
report states the sample sizes next to each plot.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.plots import (  # the plots, re-exported under their old home
    CURVE_BUCKETS,
    MAX_CURVE_CLASSES,
    MAX_SCATTER_ROWS,
    MAX_SILHOUETTE_ROWS,
    PNG_MAGIC,
    Plot,
    calibration_bins,
    classification_plots,
    cluster_sizes,
    clustering_plots,
    confusion_counts,
    curve_points,
    evaluation_plots,
    leaderboard_plot,
    regression_plots,
    sample_rows,
    silhouette_samples,
    tuning_plots,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from sparkpipe.compare import CompareResult
    from sparkpipe.config import PipelineConfig
    from sparkpipe.core import Evaluation, FitResult, PreparedData, RunResult
    from sparkpipe.tracking import Tracker

log = logging.getLogger(__name__)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2rem}
.meta{color:#666}table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0;border:1px solid #eee;padding:.5rem;background:#fff}
figure img{max-width:100%;height:auto;display:block}figcaption{color:#555;font-size:.85rem;max-width:560px}
.note{color:#555;font-size:.9rem}
"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4f}"
    if v is None:
        return "—"
    return str(v)


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    """An escaped HTML table."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plots_html(plots: list[Plot]) -> str:
    """Figures with base64-embedded PNGs."""
    parts = []
    for p in plots:
        data = base64.b64encode(p.png).decode("ascii")
        parts.append(
            f'<figure id="{_esc(p.name)}"><img alt="{_esc(p.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{_esc(p.title)}</b>{' · ' + _esc(p.caption) if p.caption else ''}"
            "</figcaption></figure>"
        )
    return '<div class="grid">' + "".join(parts) + "</div>"


def render_html(title: str, sections: list[tuple[str, str]], subtitle: str = "") -> str:
    """A complete, self-contained HTML page from ``(heading, html)`` sections."""
    body = "".join(f"<h2>{_esc(h)}</h2>{content}" for h, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f'<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1><p class="meta">{_esc(subtitle)}</p>'
        f"{body}</body></html>"
    )


def write_report(path: str | Path, page: str) -> Path:
    """Write the page atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path.resolve()


def log_report(tracker: Tracker | None, plots: list[Plot], report_path: Path) -> None:
    """Log the PNGs and the HTML to the active MLflow run under ``report/``."""
    if tracker is None or not tracker.enabled or tracker.info is None:
        return
    with tempfile.TemporaryDirectory(prefix="sparkpipe-report-") as tmp:
        for p in plots:
            (Path(tmp) / f"{p.name}.png").write_bytes(p.png)
        tracker.log_artifact(tmp, "report")
    tracker.log_artifact(report_path, "report")


def _guarded(what: str, problems: list[str], fn: Any, *args: Any) -> list[Plot]:
    """Run a plot builder; a failure is logged and noted in the page instead of failing the run
    (the model is already trained and registered when the report is built)."""
    try:
        return list(fn(*args))
    except Exception as exc:
        log.warning("report: %s plots failed: %s", what, exc, exc_info=True)
        problems.append(f"{what} plots could not be drawn: {type(exc).__name__}: {exc}")
        return []


def _problems_html(problems: list[str]) -> str:
    return "".join(f'<p class="note">⚠ {_esc(p)}</p>' for p in problems)


def _split(data: PreparedData) -> tuple[str, DataFrame | None]:
    if data.test is not None:
        return "test", data.test
    return "validation", data.validation


def _metrics_section(metrics: dict[str, float]) -> str:
    splits = [s for s in ("validation", "test") if any(k.startswith(f"{s}_") for k in metrics)]
    names = sorted({k.split("_", 1)[1] for k in metrics if k.split("_", 1)[0] in splits})
    rows = [[n, *[metrics.get(f"{s}_{n}") for s in splits]] for n in names]
    return html_table(["metric", *splits], rows)


def _tuning_section(summary: dict[str, Any]) -> str:
    info = [
        ["search", summary.get("search")],
        ["validation", summary.get("method")],
        ["folds", summary.get("num_folds")],
        ["metric", f"{summary.get('metric')} ({summary.get('direction')})"],
        ["trials", summary.get("num_trials")],
        ["pruned", summary.get("num_pruned")],
        ["failed", summary.get("num_failed")],
        ["best trial", summary.get("best_trial")],
        ["best CV score", f"{summary.get('best_score', math.nan):.4f} ± {summary.get('best_std', 0.0):.4f}"],
        ["best params", summary.get("best_params")],
        ["timed out", summary.get("timed_out")],
        ["seconds", f"{summary.get('seconds', 0.0):.1f}"],
    ]
    reverse = summary.get("direction") == "max"
    done = [t for t in summary.get("trials", []) if t.get("mean") is not None and t["state"] == "complete"]
    top = sorted(done, key=lambda t: t["mean"], reverse=reverse)[:10]
    rows = [[t["number"], t["mean"], t["std"], t["params"], f"{t['seconds']:.1f}"] for t in top]
    return (
        html_table(["", "value"], info)
        + '<p class="note">Top trials by CV score</p>'
        + html_table(["trial", "mean", "std", "params", "seconds"], rows)
    )


MAX_PLOT_ROWS = 200_000
"""Rows of a split the run report plots at most (a seeded sample of the evaluated predictions)."""


def _bounded(pred: DataFrame, seed: int, rows: int | None = None) -> DataFrame | None:
    """A persisted seeded sample of about :data:`MAX_PLOT_ROWS` rows of ``pred`` when it has more,
    so the report's cost does not grow with the data; ``None`` when ``pred`` is small enough.
    ``rows`` is ``pred``'s row count when the caller already knows it (else it is counted)."""
    from pyspark import StorageLevel

    rows = pred.count() if rows is None else rows
    if rows <= MAX_PLOT_ROWS:
        return None
    sample = pred.sample(fraction=MAX_PLOT_ROWS / rows, seed=seed).persist(StorageLevel.MEMORY_AND_DISK)
    log.info("report: plotting a sample of about %d of %d rows", MAX_PLOT_ROWS, rows)
    return sample


def run_report(
    cfg: PipelineConfig,
    result: RunResult,
    fit: FitResult,
    evaluation: Evaluation | None = None,
    tracker: Tracker | None = None,
) -> str:
    """Build the report of one pipeline run; write ``<output_path>/report.html`` and log it.

    Parameters
    ----------
    cfg
        The pipeline config.
    result
        The :class:`~sparkpipe.core.RunResult` so far (metrics, run id).
    fit
        The :class:`~sparkpipe.core.FitResult`: the model, its data (the test split, else validation, is
        plotted), class count, tuning summary and feature plan.
    evaluation
        Its :class:`~sparkpipe.core.Evaluation`: ``predictions`` are the model's predictions on the
        split plotted, already scored and persisted; plotted from a seeded sample of at most
        :data:`MAX_PLOT_ROWS` rows. Without them the split is scored here.
    tracker
        Logs the plots and the page to the active run when given.

    Returns
    -------
    str
        Absolute path of ``report.html``.
    """
    t0 = time.perf_counter()
    problems: list[str] = []
    split_name, plots = _run_plots(cfg, result, fit, evaluation, problems)
    tuning = fit.tuning
    tuning_figs = _guarded("tuning", problems, tuning_plots, tuning) if tuning else []
    sections = [
        ("Summary", html_table(["", ""], _summary_rows(result, cfg))),
        ("Metrics", _metrics_section(result.metrics)),
        (
            f"Evaluation plots ({split_name} split)",
            (plots_html(plots) if plots else '<p class="note">no labelled split to plot</p>')
            + _problems_html(problems),
        ),
    ]
    if tuning:
        sections.append(("Tuning", _tuning_section(tuning) + plots_html(tuning_figs)))
    sections.append(("How these plots are made", f'<p class="note">{_esc(_METHOD_NOTE)}</p>'))
    page = render_html(
        f"sparkpipe report · {result.algorithm} · {result.task}",
        sections,
        f"generated {time.strftime('%Y-%m-%d %H:%M:%S')} · run {result.run_id or '—'}",
    )
    path = write_report(Path(cfg.data.output_path) / "report.html", page)
    log_report(tracker, plots + tuning_figs, path)
    log.info(
        "report with %d plots written to %s in %.1fs",
        len(plots) + len(tuning_figs),
        path,
        time.perf_counter() - t0,
    )
    return str(path)


def _run_plots(
    cfg: PipelineConfig, result: RunResult, fit: FitResult, evaluation: Evaluation | None, problems: list[str]
) -> tuple[str, list[Plot]]:
    """The evaluation plots of the split the report shows (test, else validation), from the evaluation's
    persisted predictions when there are some, on a bounded sample; failures go to ``problems``."""
    data = fit.data
    split_name, split_df = _split(data)
    plots: list[Plot] = []
    if split_df is not None:
        predictions = evaluation.predictions if evaluation is not None else None
        if predictions is None:
            pred, rows = fit.model.transform(split_df), None
        else:  # the evaluation counted the split it scored
            pred, rows = predictions, data.lineage.get(f"{split_name}_rows")
        sampled = _bounded(pred, cfg.data.seed, rows)
        pred = sampled if sampled is not None else pred
        plots = _guarded(
            "evaluation",
            problems,
            evaluation_plots,
            pred,
            data.task,
            fit.num_classes,
            data.label_labels,
            fit.plan.features_col or "features",
            result.metrics.get(f"{split_name}_silhouette"),
            cfg.data.seed,
        )
        if sampled is not None:
            sampled.unpersist()
    return split_name, plots


_METHOD_NOTE = (
    "ROC, precision-recall and calibration curves come from bucketed aggregation in Spark (200 score "
    "buckets, 10 calibration bins), so only per-bucket counts reach the driver. Scatter plots and "
    f"histograms use a seeded random sample of at most {MAX_SCATTER_ROWS:,} rows; the silhouette plot at most "
    f"{MAX_SILHOUETTE_ROWS:,} rows. Splits over {MAX_PLOT_ROWS:,} rows are plotted from a seeded sample of "
    "that many rows. Metrics in the tables are computed on all rows."
)


def _summary_rows(result: RunResult, cfg: PipelineConfig) -> list[list[Any]]:
    lineage = result.lineage or {}
    rows = [
        ["algorithm", result.algorithm],
        ["task", result.task],
        ["data", f"{lineage.get('path', cfg.data.input_path)} · {lineage.get('row_count', '?')} rows"],
        ["MLflow run", result.run_id or "—"],
    ]
    if result.registered_name:
        rows.append(["registered model", f"{result.registered_name} version {result.registered_version}"])
    return rows


def compare_report(
    cfg: PipelineConfig,
    comparison: CompareResult,
    fit: FitResult,
    tracker: Tracker | None = None,
) -> str:
    """Build the report of a model comparison: leaderboard, its chart, and the winner's plots.

    Parameters
    ----------
    cfg
        The pipeline config.
    comparison
        The :class:`~sparkpipe.compare.CompareResult` so far.
    fit
        The winner's :class:`~sparkpipe.core.FitResult` (model, data, class count, tuning, plan).
    tracker
        Logs the plots and the page to the active (parent) run when given.

    Returns
    -------
    str
        Absolute path of ``report.html``.
    """
    rows = comparison.leaderboard
    metric = comparison.metric
    problems: list[str] = []
    board = leaderboard_plot(rows, metric)
    data = fit.data
    split_name, split_df = _split(data)
    plots: list[Plot] = []
    if split_df is not None:
        plots = _guarded(
            "evaluation",
            problems,
            evaluation_plots,
            fit.model.transform(split_df),
            data.task,
            fit.num_classes,
            data.label_labels,
            fit.plan.features_col or "features",
            None,
            cfg.data.seed,
        )
    header = ["rank", "algorithm", f"validation {metric}", "± std", f"test {metric}", "train s", "tuned CV"]
    table = html_table(
        header,
        [
            [
                r["rank"],
                r["algorithm"],
                r.get("score"),
                r.get("score_std"),
                r.get("test_score"),
                f"{r.get('train_seconds', 0.0):.1f}",
                r.get("cv_score"),
            ]
            for r in rows
        ],
    )
    sections = [
        ("Leaderboard", table + f'<p class="note">{_esc(comparison.note)}</p>' + plots_html([board])),
        (f"Winner: {comparison.winner} ({split_name} split)", plots_html(plots) + _problems_html(problems)),
    ]
    tuning = fit.tuning
    tuning_figs = _guarded("tuning", problems, tuning_plots, tuning) if tuning else []
    if tuning:
        sections.append(("Winner's tuning", _tuning_section(tuning) + plots_html(tuning_figs)))
    sections.append(("How these plots are made", f'<p class="note">{_esc(_METHOD_NOTE)}</p>'))
    page = render_html(
        f"sparkpipe comparison · {comparison.task}",
        sections,
        f"generated {time.strftime('%Y-%m-%d %H:%M:%S')} · run {comparison.run_id or '—'}",
    )
    path = write_report(Path(cfg.data.output_path) / "report.html", page)
    log_report(tracker, [board, *plots, *tuning_figs], path)
    return str(path)


__all__ = [
    "CURVE_BUCKETS",
    "MAX_CURVE_CLASSES",
    "MAX_PLOT_ROWS",
    "MAX_SCATTER_ROWS",
    "MAX_SILHOUETTE_ROWS",
    "PNG_MAGIC",
    "Plot",
    "calibration_bins",
    "classification_plots",
    "cluster_sizes",
    "clustering_plots",
    "compare_report",
    "confusion_counts",
    "curve_points",
    "evaluation_plots",
    "html_table",
    "leaderboard_plot",
    "log_report",
    "plots_html",
    "regression_plots",
    "render_html",
    "run_report",
    "sample_rows",
    "silhouette_samples",
    "tuning_plots",
    "write_report",
]
