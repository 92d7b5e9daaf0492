"""The evaluation report: Spark-side curve/confusion/calibration aggregation, sampling caps, the NumPy
silhouette, and a full self-contained HTML page whose every image decodes as a PNG."""

from __future__ import annotations

import base64
import io
import math
import re

import numpy as np
import pytest

pytestmark = pytest.mark.spark


def _schema(spec: str):
    """A StructType from ``name type, ...`` where ``vector`` means Spark ML's VectorUDT."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

    types = {"double": DoubleType(), "int": IntegerType(), "vector": VectorUDT()}
    fields = [part.split() for part in spec.split(",")]
    return StructType([StructField(n, types[t]) for n, t in fields])


@pytest.fixture(scope="module")
def binary_predictions(spark):
    """3,000 scored rows: label ~ Bernoulli(p), probability = [1 - s, s] with s a noisy version of p."""
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(3)
    p = rng.uniform(size=3000)
    y = (rng.uniform(size=3000) < p).astype(float)
    s = np.clip(p + rng.normal(0, 0.15, size=3000), 0, 1)
    rows = [
        (float(a), Vectors.dense([1 - b, b]), Vectors.dense([-b, b]), float(b >= 0.5))
        for a, b in zip(y, s, strict=False)
    ]
    return spark.createDataFrame(
        rows, _schema("label double, probability vector, rawPrediction vector, prediction double")
    )


def test_curve_points_match_spark_areas(binary_predictions):
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    from sparkpipe.report import curve_points

    c = curve_points(binary_predictions)
    ev = BinaryClassificationEvaluator(rawPredictionCol="probability")
    assert c["auc_roc"] == pytest.approx(ev.evaluate(binary_predictions), abs=0.005)
    assert c["auc_pr"] == pytest.approx(
        ev.setMetricName("areaUnderPR").evaluate(binary_predictions), abs=0.01
    )
    assert (
        c["fpr"][0] == 0
        and c["tpr"][0] == 0
        and c["fpr"][-1] == pytest.approx(1)
        and c["tpr"][-1] == pytest.approx(1)
    )
    assert all(b >= a for a, b in zip(c["fpr"], c["fpr"][1:], strict=False))
    assert len(c["fpr"]) <= 201  # bucketed: never one point per row
    assert c["positives"] + c["negatives"] == 3000


def test_curve_points_on_raw_scores_outside_unit_interval(spark):
    from pyspark.sql import functions as F

    from sparkpipe.report import curve_points

    df = spark.range(400).select(
        (F.col("id") % 2).cast("double").alias("label"),
        ((F.col("id") % 2) * 10 - 5 + F.rand(1)).alias("score"),
    )
    c = curve_points(df, score=F.col("score"))
    assert c["auc_roc"] == pytest.approx(1.0)


def test_confusion_and_calibration_are_exact_aggregates(spark, binary_predictions):
    from sparkpipe.report import calibration_bins, confusion_counts

    df = spark.createDataFrame(
        [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 1.0), (2.0, 0.0)], "label double, prediction double"
    )
    cm = confusion_counts(df)
    assert cm["classes"] == [0.0, 1.0, 2.0]
    assert cm["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    cal = calibration_bins(binary_predictions)
    assert sum(cal["count"]) == 3000 and len(cal["count"]) == 10
    # the scores were built calibrated: observed rates track the predicted ones
    assert max(abs(a - b) for a, b in zip(cal["predicted"], cal["observed"], strict=False)) < 0.15


def test_sample_rows_caps_what_reaches_the_driver(spark):
    from sparkpipe.report import sample_rows

    df = spark.range(20_000).selectExpr("id", "id * 2 as twice")
    pdf, total = sample_rows(df, ["id", "twice"], max_rows=500)
    assert total == 20_000 and 0 < len(pdf) <= 500
    assert (pdf["twice"] == 2 * pdf["id"]).all()
    small, n = sample_rows(df.limit(30), ["id"], max_rows=500)
    assert n == 30 and len(small) == 30


def test_silhouette_samples_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from sparkpipe.report import silhouette_samples

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(c, 0.5, size=(40, 3)) for c in (0, 3, 6)])
    labels = np.repeat([0, 1, 2], 40)
    ours = silhouette_samples(x, labels)
    theirs = sklearn_metrics.silhouette_samples(x, labels, metric="sqeuclidean")
    assert np.allclose(ours, theirs, atol=1e-9)


def _tuning_summary() -> dict:
    trials = []
    for i in range(8):
        state = "pruned" if i in (3, 6) else "complete"
        folds = [0.7 + 0.02 * i, 0.71 + 0.02 * i] if state == "complete" else [0.6]
        trials.append(
            {
                "number": i,
                "params": {"maxDepth": 2 + i, "numTrees": 10 * (i % 3 + 1)},
                "state": state,
                "fold_scores": folds,
                "mean": float(np.mean(folds)),
                "std": float(np.std(folds)),
                "seconds": 1.0,
                "finished_at": float(i),
            }
        )
    from sparkpipe.tuning import param_importance

    summary = {
        "search": "random",
        "method": "cross_validation",
        "metric": "auc_roc",
        "direction": "max",
        "num_folds": 2,
        "num_trials": 8,
        "num_pruned": 2,
        "num_failed": 0,
        "best_trial": 7,
        "best_score": trials[7]["mean"],
        "best_std": trials[7]["std"],
        "best_params": trials[7]["params"],
        "trials": trials,
        "timed_out": False,
        "seconds": 12.0,
    }
    summary["importance"] = param_importance(summary)
    return summary


def test_full_report_is_self_contained_and_every_image_is_a_png(spark, binary_predictions, tmp_path):
    from PIL import Image
    from pyspark.ml.linalg import Vectors

    from sparkpipe import report

    rng = np.random.default_rng(5)
    y = rng.normal(10, 3, size=800)
    reg = spark.createDataFrame(
        [(float(a), float(a + rng.normal(0, 1))) for a in y], "label double, prediction double"
    )
    centers = [(0, 0), (5, 5), (0, 5)]
    pts = [(Vectors.dense(rng.normal(centers[i % 3], 0.4)), i % 3) for i in range(600)]
    clu = spark.createDataFrame(pts, _schema("features vector, prediction int"))

    plots = (
        report.classification_plots(binary_predictions, num_classes=2)
        + report.regression_plots(reg, max_rows=300)
        + report.clustering_plots(clu, silhouette=0.8)
        + report.tuning_plots(_tuning_summary())
        + [
            report.leaderboard_plot(
                [
                    {"algorithm": "a", "score": 0.8, "score_std": 0.01, "test_score": 0.79},
                    {"algorithm": "b", "score": 0.75, "score_std": 0.02, "test_score": 0.74},
                ],
                "auc_roc",
            )
        ]
    )
    names = [p.name for p in plots]
    assert names == [
        "roc_curve",
        "precision_recall_curve",
        "confusion_matrix",
        "calibration",
        "predicted_vs_actual",
        "residuals",
        "residual_histogram",
        "cluster_sizes",
        "silhouette",
        "tuning_history",
        "param_importance",
        "leaderboard",
    ]
    assert "random sample of" in next(p for p in plots if p.name == "residuals").caption  # 300 of 800 rows

    page = report.render_html(
        "test <report>",
        [
            ("Plots", report.plots_html(plots)),
            ("Table", report.html_table(["k", "v"], [["x", math.nan], ["y", 0.5]])),
        ],
    )
    path = report.write_report(tmp_path / "out" / "report.html", page)
    text = path.read_text(encoding="utf-8")
    assert "test &lt;report&gt;" in text and "<script" not in text
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', text)
    assert len(sources) == len(plots)
    for src in sources:
        assert src.startswith("data:image/png;base64,")  # nothing to fetch: opens from disk
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw.startswith(report.PNG_MAGIC) and len(raw) > 1000
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
            assert img.format == "PNG" and min(img.size) > 100
    assert not [
        p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")
    ]  # atomic write left no temp


def test_multiclass_curves_are_one_vs_rest(spark):
    from pyspark.ml.linalg import Vectors

    from sparkpipe.report import classification_plots

    rng = np.random.default_rng(2)
    rows = []
    for i in range(600):
        y = i % 3
        prob = rng.dirichlet([1, 1, 1]) * 0.5
        prob[y] += 0.5
        rows.append((float(y), Vectors.dense(prob), float(np.argmax(prob))))
    df = spark.createDataFrame(rows, _schema("label double, probability vector, prediction double"))
    plots = classification_plots(df, num_classes=3, label_names=["a", "b", "c"])
    assert [p.name for p in plots] == [
        "roc_curve",
        "precision_recall_curve",
        "confusion_matrix",
        "calibration",
    ]
