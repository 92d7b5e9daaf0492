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
import io
import logging
import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from sparkpipe.compare import CompareResult
    from sparkpipe.config import PipelineConfig
    from sparkpipe.core import Evaluation, FitResult, PreparedData, RunResult
    from sparkpipe.tracking import Tracker

log = logging.getLogger(__name__)

#: Most rows a scatter plot or histogram brings to the driver.
MAX_SCATTER_ROWS = 50_000
#: Most rows of the per-point silhouette plot (pairwise distances are quadratic in it).
MAX_SILHOUETTE_ROWS = 2_000
#: Buckets of the score range for ROC / precision-recall curves.
CURVE_BUCKETS = 200
#: Most classes drawn in one-vs-rest curves.
MAX_CURVE_CLASSES = 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Plot:
    """One rendered figure."""

    name: str
    title: str
    png: bytes
    caption: str = ""


# ============================================================================ Spark-side computations
def _score_column(df: DataFrame, index: int = 1) -> Any:
    """Column with the score of class ``index``: the probability when present, else rawPrediction."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    col = "probability" if "probability" in df.columns else "rawPrediction"
    return F.element_at(vector_to_array(F.col(col)), index + 1)


def curve_points(
    df: DataFrame,
    label_col: str = "label",
    score: Any = None,
    positive: float = 1.0,
    buckets: int = CURVE_BUCKETS,
    score_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """ROC and precision-recall points by bucketed aggregation of the score in Spark.

    Parameters
    ----------
    df
        Predictions with a label and a probability (or rawPrediction) column.
    label_col
        Label column; rows equal to ``positive`` are positives.
    score
        Score column expression; default ``probability[1]`` (or ``rawPrediction[1]``).
    positive
        The positive label value (one-vs-rest curves pass each class in turn).
    buckets
        Number of equal-width buckets of the score range.
    score_range
        ``(low, high)`` of the score when known (``(0, 1)`` for probabilities, the default when the
        score is the probability column); otherwise one extra aggregation finds it.

    Returns
    -------
    dict
        ``fpr``, ``tpr``, ``precision``, ``recall``, ``thresholds`` (lists, from the highest threshold
        down), ``auc_roc`` and ``auc_pr`` (trapezoidal over the points), ``positives``, ``negatives``.
    """
    from pyspark.sql import functions as F

    if score is None:
        score = _score_column(df)
        if "probability" in df.columns and score_range is None:
            score_range = (0.0, 1.0)
    base = df.select(
        score.cast("double").alias("s"), (F.col(label_col) == F.lit(positive)).cast("int").alias("y")
    )
    base = base.where(F.col("s").isNotNull() & ~F.isnan("s"))
    lo, hi = score_range if score_range is not None else base.agg(F.min("s"), F.max("s")).first()
    if lo is None:
        return {
            "fpr": [],
            "tpr": [],
            "precision": [],
            "recall": [],
            "thresholds": [],
            "auc_roc": math.nan,
            "auc_pr": math.nan,
            "positives": 0,
            "negatives": 0,
        }
    lo, hi = float(lo), float(hi)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    width = (hi - lo) / buckets if hi > lo else 1.0
    bucket = F.least(F.floor((F.col("s") - F.lit(lo)) / F.lit(width)).cast("int"), F.lit(buckets - 1))
    rows = (
        base.groupBy(bucket.alias("b")).agg(F.count(F.lit(1)).alias("n"), F.sum("y").alias("pos")).collect()
    )
    counts = {int(r["b"]): (int(r["n"]), int(r["pos"] or 0)) for r in rows}
    total_pos = sum(p for _, p in counts.values())
    total_neg = sum(n - p for n, p in counts.values())
    tp = fp = 0
    fpr, tpr, precision, recall, thresholds = [0.0], [0.0], [1.0], [0.0], [hi]
    for b in sorted(counts, reverse=True):
        n, p = counts[b]
        tp += p
        fp += n - p
        fpr.append(fp / total_neg if total_neg else 0.0)
        tpr.append(tp / total_pos if total_pos else 0.0)
        recall.append(tpr[-1])
        precision.append(tp / (tp + fp) if tp + fp else 1.0)
        thresholds.append(lo + b * width)
    auc_roc = sum((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 for i in range(1, len(fpr)))
    auc_pr = sum(
        (recall[i] - recall[i - 1]) * (precision[i] + precision[i - 1]) / 2 for i in range(1, len(recall))
    )
    return {
        "fpr": fpr,
        "tpr": tpr,
        "precision": precision,
        "recall": recall,
        "thresholds": thresholds,
        "auc_roc": auc_roc if total_pos and total_neg else math.nan,
        "auc_pr": auc_pr if total_pos else math.nan,
        "positives": total_pos,
        "negatives": total_neg,
    }


def calibration_bins(
    df: DataFrame, label_col: str = "label", num_classes: int = 2, bins: int = 10
) -> dict[str, list[float]]:
    """Reliability diagram data aggregated in Spark.

    Binary: mean predicted ``P(class 1)`` vs the fraction of positives per probability bin. More
    classes: mean top-class confidence vs accuracy per confidence bin.

    Returns
    -------
    dict
        ``predicted``, ``observed``, ``count`` per non-empty bin, and ``kind`` (``binary``/``top_class``).
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    prob = vector_to_array(F.col("probability"))
    if num_classes == 2:
        p = F.element_at(prob, 2)
        hit = (F.col(label_col) == 1.0).cast("double")
        kind = "binary"
    else:
        p = F.array_max(prob)
        hit = (F.col(label_col) == F.col("prediction")).cast("double")
        kind = "top_class"
    b = F.least(F.floor(p * bins).cast("int"), F.lit(bins - 1))
    rows = (
        df.select(p.alias("p"), hit.alias("h"), b.alias("b"))
        .groupBy("b")
        .agg(F.avg("p").alias("p"), F.avg("h").alias("h"), F.count(F.lit(1)).alias("n"))
        .orderBy("b")
        .collect()
    )
    return {
        "predicted": [float(r["p"]) for r in rows],
        "observed": [float(r["h"]) for r in rows],
        "count": [int(r["n"]) for r in rows],
        "kind": kind,
    }


def confusion_counts(
    df: DataFrame, label_col: str = "label", prediction_col: str = "prediction"
) -> dict[str, Any]:
    """Confusion matrix from one ``groupBy`` count: ``classes`` and ``matrix[true][predicted]``."""
    from pyspark.sql import functions as F

    rows = (
        df.where(F.col(label_col).isNotNull() & F.col(prediction_col).isNotNull())
        .groupBy(F.col(label_col).cast("double").alias("y"), F.col(prediction_col).cast("double").alias("p"))
        .count()
        .collect()
    )
    classes = sorted({float(r["y"]) for r in rows} | {float(r["p"]) for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for r in rows:
        matrix[index[float(r["y"])]][index[float(r["p"])]] += int(r["count"])
    return {"classes": classes, "matrix": matrix}


def sample_rows(
    df: DataFrame, columns: list[str], max_rows: int = MAX_SCATTER_ROWS, seed: int = 42
) -> tuple[Any, int]:
    """A seeded random sample of at most ``max_rows`` rows of ``columns`` as pandas, and the row count.

    Only the sample is collected; the count is one Spark aggregation.
    """
    selected = df.select(*columns)
    total = selected.count()
    if total == 0:
        return selected.limit(0).toPandas(), 0
    fraction = min(1.0, max_rows * 1.1 / total)
    sample = (
        selected if fraction >= 1.0 else selected.sample(withReplacement=False, fraction=fraction, seed=seed)
    )
    return sample.limit(max_rows).toPandas(), total


def cluster_sizes(df: DataFrame, prediction_col: str = "prediction") -> dict[int, int]:
    """Rows per cluster (one ``groupBy`` count)."""
    rows = df.groupBy(prediction_col).count().collect()
    return {int(r[prediction_col]): int(r["count"]) for r in rows if r[prediction_col] is not None}


def silhouette_samples(x: Any, labels: Any) -> Any:
    """Per-point silhouettes with squared Euclidean distance (Spark's default), in NumPy.

    Points in singleton clusters get 0, as in scikit-learn.
    """
    import numpy as np

    x = np.asarray(x, dtype=float)
    labels = np.asarray(labels)
    sq = (x * x).sum(axis=1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    uniq = np.unique(labels)
    out = np.zeros(len(x))
    if len(uniq) < 2:
        return out
    means = np.stack([d[:, labels == c].sum(axis=1) for c in uniq], axis=1)
    sizes = np.array([(labels == c).sum() for c in uniq], dtype=float)
    own = np.searchsorted(uniq, labels)
    own_size = sizes[own]
    a = np.where(own_size > 1, means[np.arange(len(x)), own] / np.maximum(own_size - 1, 1), 0.0)
    other = means / sizes[None, :]
    other[np.arange(len(x)), own] = np.inf
    b = other.min(axis=1)
    denom = np.maximum(a, b)
    s = np.where((own_size > 1) & (denom > 0), (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    return s


# ==================================================================================== rendering
def _figure(width: float = 5.6, height: float = 4.2) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in threads, Agg canvas

    fig = Figure(figsize=(width, height), dpi=100)
    return fig


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _label_name(c: float, names: list[str] | None) -> str:
    i = int(c)
    return names[i] if names and 0 <= i < len(names) else f"{c:g}"


def classification_plots(
    pred: DataFrame,
    label_col: str = "label",
    num_classes: int | None = None,
    label_names: list[str] | None = None,
) -> list[Plot]:
    """ROC, precision-recall, confusion matrix and calibration plots of classifier predictions."""
    plots: list[Plot] = []
    confusion = confusion_counts(pred, label_col)
    classes = confusion["classes"]
    if num_classes is None:
        num_classes = max(2, int(max(classes)) + 1) if classes else 2
    has_score = "probability" in pred.columns or "rawPrediction" in pred.columns
    if has_score:
        if num_classes == 2:
            curves = [("positive class", curve_points(pred, label_col))]
        else:
            unit = (0.0, 1.0) if "probability" in pred.columns else None
            curves = [
                (
                    _label_name(c, label_names),
                    curve_points(pred, label_col, _score_column(pred, int(c)), c, score_range=unit),
                )
                for c in range(min(num_classes, MAX_CURVE_CLASSES))
            ]
        fig = _figure()
        ax = fig.add_subplot()
        for name, c in curves:
            ax.plot(c["fpr"], c["tpr"], label=f"{name} (AUC {c['auc_roc']:.3f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title="ROC curve",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.legend(loc="lower right", fontsize=8)
        plots.append(
            Plot(
                "roc_curve",
                "ROC curve",
                _png(fig),
                f"{CURVE_BUCKETS} score buckets aggregated in Spark"
                + ("" if num_classes == 2 else "; one-vs-rest per class"),
            )
        )
        fig = _figure()
        ax = fig.add_subplot()
        for name, c in curves:
            ax.plot(c["recall"], c["precision"], label=f"{name} (AP≈{c['auc_pr']:.3f})")
            if c["positives"] and c["negatives"] and num_classes == 2:
                ax.axhline(
                    c["positives"] / (c["positives"] + c["negatives"]),
                    linestyle="--",
                    color="grey",
                    linewidth=1,
                )
        ax.set(
            xlabel="recall", ylabel="precision", title="Precision-recall curve", xlim=(0, 1), ylim=(0, 1.02)
        )
        ax.legend(loc="lower left", fontsize=8)
        plots.append(
            Plot(
                "precision_recall_curve",
                "Precision-recall curve",
                _png(fig),
                "dashed: the positive rate (a random classifier)" if num_classes == 2 else "",
            )
        )
    import numpy as np

    matrix = np.array(confusion["matrix"], dtype=float)
    fig = _figure(4.8 + 0.25 * len(classes), 4.0 + 0.25 * len(classes))
    ax = fig.add_subplot()
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    names = [_label_name(c, label_names) for c in classes]
    ax.set_xticks(range(len(classes)), names, rotation=45 if len(classes) > 4 else 0)
    ax.set_yticks(range(len(classes)), names)
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    f"{int(matrix[i, j])}",
                    ha="center",
                    va="center",
                    color="white" if shown[i, j] > 0.5 else "black",
                    fontsize=9,
                )
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the actual class")
    plots.append(
        Plot(
            "confusion_matrix",
            "Confusion matrix",
            _png(fig),
            f"counts; colour = row share · {int(matrix.sum()):,} rows",
        )
    )
    if "probability" in pred.columns:
        cal = calibration_bins(pred, label_col, num_classes)
        fig = _figure()
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
        ax.plot(cal["predicted"], cal["observed"], marker="o", label="model")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.02),
            title="Calibration",
            xlabel="mean predicted P(class 1)" if cal["kind"] == "binary" else "mean top-class confidence",
            ylabel="fraction of positives" if cal["kind"] == "binary" else "accuracy",
        )
        ax.legend(loc="upper left", fontsize=8)
        plots.append(Plot("calibration", "Calibration", _png(fig), "10 probability bins aggregated in Spark"))
    return plots


def regression_plots(
    pred: DataFrame,
    label_col: str = "label",
    prediction_col: str = "prediction",
    max_rows: int = MAX_SCATTER_ROWS,
    seed: int = 42,
) -> list[Plot]:
    """Predicted vs actual, residuals vs predicted and the residual histogram (on a sample)."""
    import numpy as np
    from pyspark.sql import functions as F

    valid = pred.where(
        F.col(label_col).isNotNull()
        & F.col(prediction_col).isNotNull()
        & ~F.isnan(F.col(prediction_col).cast("double"))
    )
    pdf, total = sample_rows(valid, [label_col, prediction_col], max_rows, seed)
    if total == 0:
        return []
    y = pdf[label_col].to_numpy(dtype=float)
    p = pdf[prediction_col].to_numpy(dtype=float)
    r = y - p
    note = f"random sample of {len(pdf):,} of {total:,} rows" if len(pdf) < total else f"all {total:,} rows"
    alpha = 0.6 if len(pdf) < 2000 else 0.25
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(y, p, s=6, alpha=alpha)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual")
    plots = [Plot("predicted_vs_actual", "Predicted vs actual", _png(fig), note)]
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(p, r, s=6, alpha=alpha)
    ax.axhline(0, linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="Residuals")
    plots.append(Plot("residuals", "Residuals vs predicted", _png(fig), note))
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(r, bins=min(60, max(10, int(np.sqrt(len(r))))))
    ax.set(xlabel="residual", ylabel="rows", title="Residual distribution")
    plots.append(Plot("residual_histogram", "Residual distribution", _png(fig), note))
    return plots


def clustering_plots(
    pred: DataFrame,
    features_col: str = "features",
    prediction_col: str = "prediction",
    silhouette: float | None = None,
    seed: int = 42,
) -> list[Plot]:
    """Cluster sizes (all rows) and a per-point silhouette plot (on a sample)."""
    import numpy as np
    from pyspark.ml.functions import vector_to_array

    sizes = cluster_sizes(pred, prediction_col)
    plots: list[Plot] = []
    fig = _figure()
    ax = fig.add_subplot()
    ids = sorted(sizes)
    ax.bar([str(i) for i in ids], [sizes[i] for i in ids])
    ax.set(xlabel="cluster", ylabel="rows", title="Cluster sizes")
    plots.append(Plot("cluster_sizes", "Cluster sizes", _png(fig), f"{sum(sizes.values()):,} rows"))
    first = pred.select(features_col).first()
    if first is None or len(ids) < 2:
        return plots
    dim = int(first[0].size)
    cap = max(200, min(MAX_SILHOUETTE_ROWS, int(4_000_000 / max(dim, 1))))
    pdf, total = sample_rows(
        pred.select(vector_to_array(features_col).alias("x"), prediction_col),
        ["x", prediction_col],
        cap,
        seed,
    )
    x = np.array(pdf["x"].tolist(), dtype=float)
    labels = pdf[prediction_col].to_numpy()
    s = silhouette_samples(x, labels)
    fig = _figure(5.6, 4.8)
    ax = fig.add_subplot()
    y0 = 0
    for c in sorted(set(labels.tolist())):
        vals = np.sort(s[labels == c])
        ax.fill_betweenx(np.arange(y0, y0 + len(vals)), 0, vals, alpha=0.7)
        ax.text(-0.05, y0 + len(vals) / 2, str(int(c)), ha="right", va="center", fontsize=8)
        y0 += len(vals) + 10
    ax.axvline(float(s.mean()), color="red", linestyle="--", linewidth=1, label=f"sample mean {s.mean():.3f}")
    if silhouette is not None and math.isfinite(silhouette):
        ax.axvline(
            silhouette, color="black", linestyle=":", linewidth=1, label=f"Spark (all rows) {silhouette:.3f}"
        )
    ax.set(xlabel="silhouette (squared Euclidean)", ylabel="points by cluster", title="Silhouette", yticks=[])
    ax.legend(loc="lower right", fontsize=8)
    plots.append(
        Plot(
            "silhouette",
            "Silhouette",
            _png(fig),
            f"per-point silhouettes of a random sample of {len(pdf):,} of {total:,} rows",
        )
    )
    return plots


def tuning_plots(summary: dict[str, Any]) -> list[Plot]:
    """Tuning history and parameter importance of a :func:`sparkpipe.tuning.tune` summary."""
    trials = summary.get("trials") or []
    if not trials:
        return []
    metric, direction = summary.get("metric", "score"), summary.get("direction", "max")
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    done = [t for t in trials if t["state"] == "complete" and t.get("mean") is not None]
    pruned = [t for t in trials if t["state"] == "pruned" and t.get("fold_scores")]
    ax.scatter([t["number"] for t in done], [t["mean"] for t in done], label="complete (CV mean)", zorder=3)
    if pruned:
        ax.scatter(
            [t["number"] for t in pruned],
            [sum(t["fold_scores"]) / len(t["fold_scores"]) for t in pruned],
            marker="x",
            color="grey",
            label="pruned (running mean)",
            zorder=3,
        )
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t["number"]):
        if best is None or (t["mean"] > best if direction == "max" else t["mean"] < best):
            best = t["mean"]
        xs.append(t["number"])
        ys.append(best)
    ax.step(xs, ys, where="post", color="red", label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial", ylabel=metric, title=f"Tuning history ({summary.get('search', '?')} search)")
    ax.legend(fontsize=8)
    plots = [
        Plot(
            "tuning_history",
            "Tuning history",
            _png(fig),
            f"{len(trials)} trials · {summary.get('num_pruned', 0)} pruned · "
            f"{summary.get('num_failed', 0)} failed · {summary.get('seconds', 0):.0f}s",
        )
    ]
    importance = summary.get("importance") or {}
    values = importance.get("values") or {}
    if values:
        fig = _figure(5.6, 1.6 + 0.45 * len(values))
        ax = fig.add_subplot()
        names = sorted(values, key=lambda k: values[k])
        ax.barh(names, [values[n] for n in names])
        ax.set(xlabel="relative importance", title="Parameter importance")
        method = (
            "Optuna fANOVA"
            if importance.get("method") == "fanova"
            else "correlation ratio η² of the CV score"
        )
        plots.append(Plot("param_importance", "Parameter importance", _png(fig), method))
    return plots


def leaderboard_plot(rows: list[dict[str, Any]], metric: str) -> Plot:
    """Bar chart of a comparison leaderboard: validation score ± std, test score beside it."""
    import numpy as np

    names = [r["algorithm"] for r in rows]
    x = np.arange(len(rows))
    fig = _figure(max(5.0, 1.3 * len(rows) + 2), 4.2)
    ax = fig.add_subplot()
    val = [r.get("score") if r.get("score") is not None else np.nan for r in rows]
    err = [r.get("score_std") or 0.0 for r in rows]
    test = [r.get("test_score") if r.get("test_score") is not None else np.nan for r in rows]
    ax.bar(x - 0.2, val, 0.4, yerr=err, capsize=4, label="validation (± bootstrap std)")
    ax.bar(x + 0.2, test, 0.4, label="test")
    ax.set_xticks(x, names, rotation=20 if len(rows) > 4 else 0)
    finite = [v for v in val + test if v is not None and math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        pad = max((hi - lo) * 0.5, 0.02 * max(abs(hi), 1e-9))
        ax.set_ylim(lo - pad - max(err), hi + pad + max(err))
    ax.set(ylabel=metric, title=f"Leaderboard ({metric})")
    ax.legend(fontsize=8)
    return Plot("leaderboard", "Leaderboard", _png(fig), "winner chosen on validation")


# ========================================================================================== HTML
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


# ========================================================================================== reports
def evaluation_plots(
    pred: DataFrame,
    task: str,
    num_classes: int | None = None,
    label_names: list[str] | None = None,
    features_col: str = "features",
    silhouette: float | None = None,
    seed: int = 42,
) -> list[Plot]:
    """The task's evaluation plots of a predictions frame (see the module docstring)."""
    if task == "classification":
        return classification_plots(pred, "label", num_classes, label_names)
    if task in ("regression", "recommendation"):
        return regression_plots(pred, "label", "prediction", seed=seed)
    if task == "clustering":
        return clustering_plots(pred, features_col, "prediction", silhouette, seed)
    return []


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
    data = fit.data
    split_name, split_df = _split(data)
    plots: list[Plot] = []
    problems: list[str] = []
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
