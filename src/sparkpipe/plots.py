"""The report's plots: what reaches the driver (bucketed aggregates, capped samples) and the PNG figures.

Curves and calibration come from **bucketed aggregation in Spark** (the score range cut into
:data:`CURVE_BUCKETS` buckets, 10 for calibration; only per-bucket counts are collected). The confusion
matrix and cluster sizes are ``groupBy`` counts. Scatter plots and histograms use a seeded sample of at
most :data:`MAX_SCATTER_ROWS` rows; per-point silhouettes at most :data:`MAX_SILHOUETTE_ROWS`.
:mod:`sparkpipe.report` gathers them into ``report.html``.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


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


def _score_column(df: DataFrame, index: int = 1) -> Any:
    """Column with the score of class ``index``: the probability when present, else rawPrediction."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    col = "probability" if "probability" in df.columns else "rawPrediction"
    return F.element_at(vector_to_array(F.col(col)), index + 1)


def _curves_from_counts(
    counts: dict[int, tuple[int, int]], lo: float, hi: float, width: float
) -> dict[str, Any]:
    """ROC and precision-recall points from ``bucket -> (rows, positives)``, highest bucket first."""
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
    return _curves_from_counts(counts, lo, hi, width)


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
    if "probability" in pred.columns or "rawPrediction" in pred.columns:
        plots += _curve_plots(pred, label_col, num_classes, label_names)
    plots.append(_confusion_plot(confusion, label_names))
    if "probability" in pred.columns:
        plots.append(_calibration_plot(calibration_bins(pred, label_col, num_classes)))
    return plots


def _curve_plots(
    pred: DataFrame, label_col: str, num_classes: int, label_names: list[str] | None
) -> list[Plot]:
    """ROC and precision-recall curves (one-vs-rest per class, at most :data:`MAX_CURVE_CLASSES`)."""
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
    roc = Plot(
        "roc_curve",
        "ROC curve",
        _png(fig),
        f"{CURVE_BUCKETS} score buckets aggregated in Spark"
        + ("" if num_classes == 2 else "; one-vs-rest per class"),
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
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left", fontsize=8)
    pr = Plot(
        "precision_recall_curve",
        "Precision-recall curve",
        _png(fig),
        "dashed: the positive rate (a random classifier)" if num_classes == 2 else "",
    )
    return [roc, pr]


def _confusion_plot(confusion: dict[str, Any], label_names: list[str] | None) -> Plot:
    """The confusion matrix: counts, coloured by the share of the actual class."""
    import numpy as np

    classes = confusion["classes"]
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
    return Plot(
        "confusion_matrix",
        "Confusion matrix",
        _png(fig),
        f"counts; colour = row share · {int(matrix.sum()):,} rows",
    )


def _calibration_plot(cal: dict[str, Any]) -> Plot:
    """The reliability diagram of :func:`calibration_bins`."""
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
    return Plot("calibration", "Calibration", _png(fig), "10 probability bins aggregated in Spark")


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
