"""Every metric on small hand-made prediction DataFrames, checked against scikit-learn.

Notes on the references:

* ``auc_pr``: Spark integrates the precision-recall curve with the trapezoid rule and starts the
  curve at ``(recall 0, precision of the highest-score threshold)``; scikit-learn's
  ``average_precision_score`` is a step-wise sum, so it is not the right reference. We compare with
  ``sklearn.metrics.auc(recall, precision)`` on ``precision_recall_curve``, whose curve starts at
  ``(0, 1)``; that start point is replaced by the precision at the highest threshold (identical when
  the top-scored row is a positive, as in the binary fixture).
* ``silhouette``: Spark's default distance is *squared* Euclidean, so the reference is
  ``silhouette_score(metric="sqeuclidean")``.
* ``davies_bouldin`` / ``calinski_harabasz``: Euclidean, as scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from sparkpipe.errors import SparkpipeError, UnknownNameError
from sparkpipe.evaluation import (
    METRICS,
    default_primary_metric,
    evaluate,
    metric_direction,
    resolve_metrics,
)

pytestmark = pytest.mark.spark


def _spark_pr_auc(y: np.ndarray, score: np.ndarray) -> float:
    precision, recall, _ = skm.precision_recall_curve(y, score)
    precision = precision.copy()
    precision[-1] = precision[-2]  # Spark starts the curve at the first threshold's precision
    return float(skm.auc(recall, precision))


# ------------------------------------------------------------------------------------ classification
@pytest.fixture(scope="module")
def binary(spark):
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(3)
    n = 40
    p1 = rng.random(n)
    y = (rng.random(n) < p1).astype(float)
    y[np.argmax(p1)] = 1.0  # the top score is a positive (see the auc_pr note)
    pred = (p1 > 0.5).astype(float)
    logit = np.log(p1 / (1 - p1))
    rows = [
        (float(a), float(b), Vectors.dense([1 - c, c]), Vectors.dense([-d, d]))
        for a, b, c, d in zip(y, pred, p1, logit, strict=True)
    ]
    df = spark.createDataFrame(rows, ["label", "prediction", "probability", "rawPrediction"])
    return df, y, pred, p1


def test_binary_classification_matches_sklearn(binary) -> None:
    df, y, pred, p1 = binary
    names = list(METRICS["classification"])
    got = evaluate(df, "classification", names)
    assert list(got) == names
    proba = np.column_stack([1 - p1, p1])
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "precision_macro": skm.precision_score(y, pred, average="macro"),
        "recall_macro": skm.recall_score(y, pred, average="macro"),
        "f1_macro": skm.f1_score(y, pred, average="macro"),
        "precision_weighted": skm.precision_score(y, pred, average="weighted"),
        "recall_weighted": skm.recall_score(y, pred, average="weighted"),
        "f1_weighted": skm.f1_score(y, pred, average="weighted"),
        "auc_roc": skm.roc_auc_score(y, p1),
        "auc_pr": float(skm.auc(*skm.precision_recall_curve(y, p1)[1::-1])),
        "log_loss": skm.log_loss(y, proba),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name
    # scikit-learn's step-wise average precision differs from the interpolated area
    assert got["auc_pr"] != pytest.approx(skm.average_precision_score(y, p1), abs=1e-6)


def test_binary_auc_falls_back_to_raw_prediction(binary) -> None:
    df, y, _, p1 = binary
    got = evaluate(df.drop("probability"), "classification", ["auc_roc", "log_loss"])
    assert got["auc_roc"] == pytest.approx(skm.roc_auc_score(y, p1), abs=1e-9)
    assert math.isnan(got["log_loss"])  # no probabilities: NaN, with a warning


@pytest.fixture(scope="module")
def multiclass(spark):
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(11)
    n, c = 45, 3
    y = np.repeat(np.arange(c), n // c).astype(float)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y.astype(int)] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1).astype(float)
    rows = [
        (float(a), float(b), Vectors.dense(p.tolist()), Vectors.dense(lg.tolist()))
        for a, b, p, lg in zip(y, pred, proba, logits, strict=True)
    ]
    df = spark.createDataFrame(rows, ["label", "prediction", "probability", "rawPrediction"])
    return df, y, pred, proba


def test_multiclass_classification_matches_sklearn(multiclass) -> None:
    df, y, pred, proba = multiclass
    got = evaluate(df, "classification", list(METRICS["classification"]))
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, average="weighted"),
        "recall": skm.recall_score(y, pred, average="weighted"),
        "f1": skm.f1_score(y, pred, average="weighted"),
        "precision_macro": skm.precision_score(y, pred, average="macro"),
        "recall_macro": skm.recall_score(y, pred, average="macro"),
        "f1_macro": skm.f1_score(y, pred, average="macro"),
        "f1_weighted": skm.f1_score(y, pred, average="weighted"),
        "auc_roc": skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"),
        "auc_pr": np.mean([_spark_pr_auc((y == k).astype(int), proba[:, k]) for k in range(3)]),
        "log_loss": skm.log_loss(y, proba),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_multiclass_aucs_use_the_exact_curve_on_more_scores_than_bins(spark) -> None:
    """4,500 rows, every score distinct: more points than Spark's default 1,000 bins, which down-sample
    the curve. Each class's areas come from the exact curve, as for binary AUCs, so they match
    scikit-learn's to float precision."""
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(5)
    n, c = 4500, 3
    y = rng.integers(0, c, n).astype(float)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y.astype(int)] += 0.7
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rows = [(float(a), float(p.argmax()), Vectors.dense(p.tolist())) for a, p in zip(y, proba, strict=True)]
    df = spark.createDataFrame(rows, ["label", "prediction", "probability"])
    got = evaluate(df, "classification", ["auc_roc", "auc_pr"])
    assert got["auc_roc"] == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-9
    )
    pr = np.mean([_spark_pr_auc((y == k).astype(int), proba[:, k]) for k in range(c)])
    assert got["auc_pr"] == pytest.approx(pr, abs=1e-9)


def test_multiclass_weighted_metrics_match_spark_evaluator(multiclass) -> None:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    df = multiclass[0]
    got = evaluate(df, "classification", ["precision", "recall", "f1"])
    for name, spark_name in (("precision", "weightedPrecision"), ("recall", "weightedRecall"), ("f1", "f1")):
        ref = MulticlassClassificationEvaluator(metricName=spark_name).evaluate(df)
        assert got[name] == pytest.approx(ref, abs=1e-12)


def test_class_never_predicted_has_zero_precision(spark) -> None:
    y = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    pred = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    df = spark.createDataFrame(list(zip(y, pred, strict=True)), ["label", "prediction"])
    got = evaluate(df, "classification", ["precision_macro", "f1_macro", "accuracy"], num_classes=3)
    assert got["precision_macro"] == pytest.approx(
        skm.precision_score(y, pred, average="macro", zero_division=0)
    )
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))


# ---------------------------------------------------------------------------------------- regression
def test_regression_matches_sklearn(spark) -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(10, 3, 30)
    y[4] = 0.0  # skipped by mape
    pred = y + rng.normal(0.5, 1.0, 30)
    df = spark.createDataFrame(
        [(float(a), float(b)) for a, b in zip(y, pred, strict=True)], ["label", "prediction"]
    )
    got = evaluate(df, "regression", list(METRICS["regression"]))
    nz = y != 0
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)), abs=1e-9)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, pred), abs=1e-9)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), abs=1e-9)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), abs=1e-9)
    assert got["explained_variance"] == pytest.approx(skm.explained_variance_score(y, pred), abs=1e-9)
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y[nz], pred[nz]), abs=1e-9)
    assert got["mape_zero_labels_skipped"] == 1.0


def test_regression_ignores_null_predictions(spark) -> None:
    df = spark.createDataFrame([(1.0, 1.5), (2.0, None), (3.0, 2.0)], "label double, prediction double")
    got = evaluate(df, "regression", ["mae"])
    assert got == {"mae": pytest.approx(0.75)}


# ---------------------------------------------------------------------------------------- clustering
@pytest.fixture(scope="module")
def clusters(spark):
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(7)
    centers = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 6.0]])
    x = np.vstack([c + rng.normal(scale=1.2, size=(12, 2)) for c in centers])
    labels = np.repeat([0, 1, 2], 12)
    labels[[0, 13]] = [1, 2]  # a couple of poorly placed points
    df = spark.createDataFrame(
        [(Vectors.dense(row.tolist()), int(k)) for row, k in zip(x, labels, strict=True)],
        ["features", "prediction"],
    )
    return df, x, labels


def test_clustering_matches_sklearn(clusters) -> None:
    df, x, labels = clusters
    got = evaluate(df, "clustering", list(METRICS["clustering"]))
    assert got["silhouette"] == pytest.approx(skm.silhouette_score(x, labels, metric="sqeuclidean"), abs=1e-9)
    assert got["silhouette"] != pytest.approx(skm.silhouette_score(x, labels), abs=1e-3)
    assert got["davies_bouldin"] == pytest.approx(skm.davies_bouldin_score(x, labels), abs=1e-9)
    assert got["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(x, labels), rel=1e-9)
    assert got["silhouette_cosine"] == pytest.approx(
        skm.silhouette_score(x, labels, metric="cosine"), abs=1e-2
    )


def test_single_cluster_gives_nan(spark) -> None:
    from pyspark.ml.linalg import Vectors

    df = spark.createDataFrame(
        [(Vectors.dense([float(i), 1.0]), 0) for i in range(5)], ["features", "prediction"]
    )
    got = evaluate(df, "clustering", ["silhouette", "davies_bouldin"])
    assert all(math.isnan(v) for v in got.values())


# ------------------------------------------------------------------------------------ recommendation
@pytest.fixture(scope="module")
def ratings(spark):
    rows = [
        # user 1: ranked by prediction 11, 10, 12, 13; relevant (rating >= 4): {10, 12}
        (1, 10, 5.0, 4.5),
        (1, 11, 3.0, 4.8),
        (1, 12, 4.0, 3.0),
        (1, 13, 1.0, 1.0),
        # user 2: ranked 20, 21; relevant {20}
        (2, 20, 4.0, 4.0),
        (2, 21, 2.0, 2.5),
        # user 3: nothing relevant (rating < 4) -> left out of ranking metrics
        (3, 30, 2.0, 3.0),
        # cold-start row: NaN prediction is skipped by rmse/mae
        (3, 31, 1.0, float("nan")),
    ]
    return spark.createDataFrame(rows, "user int, item int, label double, prediction double")


def test_ranking_metrics_hand_checked(ratings) -> None:
    got = evaluate(
        ratings,
        "recommendation",
        ["precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"],
        k=2,
    )
    # precision@2: user1 1/2 (item 10 in top 2), user2 1/2 (Spark divides by k) -> 0.5
    assert got["precision_at_k"] == pytest.approx(0.5)
    # recall@2: user1 1/2, user2 1/1
    assert got["recall_at_k"] == pytest.approx(0.75)
    # ndcg@2: user1 (1/log2(3)) / (1 + 1/log2(3)); user2 1.0
    user1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert got["ndcg_at_k"] == pytest.approx((user1 + 1.0) / 2)
    # the same with scikit-learn's ndcg_score (binary gains) per user
    sk_user1 = skm.ndcg_score([[1, 0, 1, 0]], [[4.5, 4.8, 3.0, 1.0]], k=2)
    assert sk_user1 == pytest.approx(user1)
    # map@2: user1 (1/2) / min(2, 2) = 0.25; user2 1/1 = 1.0
    assert got["map_at_k"] == pytest.approx(0.625)


def test_rating_metrics_skip_nan_predictions(ratings) -> None:
    got = evaluate(ratings, "recommendation", ["rmse", "mae"])
    err = np.array([4.5 - 5, 4.8 - 3, 3 - 4, 0, 0, 0.5, 1.0])
    assert got["rmse"] == pytest.approx(math.sqrt(np.mean(err**2)))
    assert got["mae"] == pytest.approx(np.mean(np.abs(err)))


def test_relevance_threshold_is_a_parameter(ratings) -> None:
    got = evaluate(ratings, "recommendation", ["precision_at_k"], k=1, relevance_threshold=2.0)
    # relevant: u1 {10,11,12}, u2 {20,21}, u3 {30}; top-1: 11, 20, 30 -> all hits
    assert got["precision_at_k"] == pytest.approx(1.0)


class _FakeALSModel:
    """Stands in for ALSModel.recommendForUserSubset: fixed top-k lists per user."""

    def __init__(self, spark) -> None:
        self.spark = spark

    def getUserCol(self) -> str:
        return "user"

    def getItemCol(self) -> str:
        return "item"

    def recommendForUserSubset(self, users, k):
        recs = {1: [12, 99], 2: [98, 97], 3: [30, 31]}
        rows = [(u, [(i, 1.0) for i in recs[u][:k]]) for u in recs]
        all_recs = self.spark.createDataFrame(
            rows, "user int, recommendations array<struct<item:int,rating:float>>"
        )
        return all_recs.join(users, "user")


def test_ranking_from_model_recommendations(spark, ratings) -> None:
    got = evaluate(
        ratings,
        "recommendation",
        ["precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"],
        k=2,
        model=_FakeALSModel(spark),
    )
    # user1: [12, 99] vs {10, 12} -> 1/2 ; user2: [98, 97] vs {20} -> 0 ; user3 has nothing relevant
    assert got["precision_at_k"] == pytest.approx(0.25)
    # recall@2: user1 1 of its 2 relevant items, user2 none
    assert got["recall_at_k"] == pytest.approx(0.25)
    # MAP@2 (Spark: precision at each hit / min(k, relevant)): user1 (1/1) / 2, user2 0
    assert got["map_at_k"] == pytest.approx(0.25)
    assert got["ndcg_at_k"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 0.0) / 2)


# ------------------------------------------------------------------------------------------ registry
def test_unknown_metric_lists_task_metrics(binary) -> None:
    with pytest.raises(UnknownNameError) as exc:
        evaluate(binary[0], "classification", ["accuracy", "rmse"])
    msg = str(exc.value)
    assert "classification metric" in msg and "auc_roc" in msg and "davies_bouldin" not in msg


def test_missing_column_is_a_clear_error(binary) -> None:
    with pytest.raises(SparkpipeError, match="missing"):
        evaluate(binary[0].drop("label"), "classification", ["accuracy"])


def test_directions_and_defaults() -> None:
    assert metric_direction("rmse") == "min"
    assert metric_direction("log_loss") == "min"
    assert metric_direction("davies_bouldin") == "min"
    assert metric_direction("auc") == "max"
    assert metric_direction("ndcg_at_k", "recommendation") == "max"
    with pytest.raises(UnknownNameError):
        metric_direction("bogus")
    assert default_primary_metric("classification", 2) == "auc_roc"
    assert default_primary_metric("classification", 5) == "f1"
    assert default_primary_metric("regression", None) == "rmse"
    assert default_primary_metric("clustering") == "silhouette"
    assert default_primary_metric("recommendation") == "rmse"
    assert resolve_metrics("classification", ["AUC", "auc_roc", "f1"]) == ["auc_roc", "f1"]
