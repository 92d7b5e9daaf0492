"""The metric computations behind :func:`sparkpipe.evaluation.evaluate`, per task, in Spark: one
aggregation pass per task where possible; only per-class, per-bucket or per-cluster rows reach the
driver. The registry (names, directions, defaults) is :mod:`sparkpipe.evaluation`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import SparkpipeError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)

_RANKING = {
    "precision_at_k": "precisionAtK",
    "recall_at_k": "recallAtK",
    "ndcg_at_k": "ndcgAtK",
    "map_at_k": "meanAveragePrecisionAtK",
    "map": "meanAveragePrecision",
}


def _require(df: DataFrame, *cols: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SparkpipeError(
            f"cannot evaluate: column(s) {', '.join(missing)} missing from the predictions "
            f"(columns: {', '.join(df.columns)}); pass the right *_col arguments"
        )


def _nan(name: str, why: str) -> float:
    log.warning("metric %s cannot be computed: %s; reporting NaN", name, why)
    return math.nan


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _classification(
    df: DataFrame,
    names: list[str],
    label_col: str,
    prediction_col: str,
    probability_col: str,
    raw_col: str,
    num_classes: int | None,
) -> dict[str, float]:
    from pyspark.sql import functions as F

    _require(df, label_col, prediction_col)
    # log loss rides on the confusion pass (one scan of the predictions, not two)
    with_loss = "log_loss" in names and probability_col in df.columns
    aggs = [F.count(F.lit(1)).alias("count")]
    if with_loss:
        aggs.append(F.sum(_log_loss_term(label_col, probability_col)).alias("loss"))
    rows = (
        df.where(F.col(label_col).isNotNull() & F.col(prediction_col).isNotNull())
        .groupBy(F.col(label_col).cast("double").alias("y"), F.col(prediction_col).cast("double").alias("p"))
        .agg(*aggs)
        .collect()
    )
    confusion = {(float(r["y"]), float(r["p"])): int(r["count"]) for r in rows}
    out: dict[str, float] = {}
    total = sum(confusion.values())
    if total == 0:
        return {n: _nan(n, "no labelled predictions") for n in names}
    classes = sorted({c for pair in confusion for c in pair})
    if num_classes is None:
        num_classes = max(2, int(max(classes)) + 1)
    binary = num_classes == 2
    support = {c: sum(n for (y, _), n in confusion.items() if y == c) for c in classes}
    predicted = {c: sum(n for (_, p), n in confusion.items() if p == c) for c in classes}
    per_class: dict[float, tuple[float, float, float]] = {}
    for c in classes:
        tp = confusion.get((c, c), 0)
        prec, rec = _div(tp, predicted[c]), _div(tp, support[c])
        per_class[c] = (prec, rec, _div(2 * prec * rec, prec + rec))
    weighted = [sum(support[c] * per_class[c][i] for c in classes) / total for i in range(3)]
    macro = [sum(per_class[c][i] for c in classes) / len(classes) for i in range(3)]
    positive = per_class.get(1.0, (0.0, 0.0, 0.0))
    headline = positive if binary else tuple(weighted)
    table = {
        "accuracy": sum(n for (y, p), n in confusion.items() if y == p) / total,
        "precision": headline[0],
        "recall": headline[1],
        "f1": headline[2],
        "precision_macro": macro[0],
        "recall_macro": macro[1],
        "f1_macro": macro[2],
        "precision_weighted": weighted[0],
        "recall_weighted": weighted[1],
        "f1_weighted": weighted[2],
    }
    for name in names:
        if name in table:
            out[name] = float(table[name])
    if "log_loss" in names:
        if with_loss:
            out["log_loss"] = sum(float(r["loss"]) for r in rows) / total
        else:
            out["log_loss"] = _nan("log_loss", f"no probability column {probability_col!r}")
    auc_names = [n for n in ("auc_roc", "auc_pr") if n in names]
    if auc_names:
        score_col = next((c for c in (probability_col, raw_col) if c in df.columns), None)
        if score_col is None:
            for n in auc_names:
                out[n] = _nan(n, f"neither {probability_col!r} nor {raw_col!r} is in the predictions")
        elif binary:
            out.update(_binary_auc(df, auc_names, label_col, score_col))
        else:
            out.update(_ovr_auc(df, auc_names, label_col, score_col, classes, support, total))
    return {n: out[n] for n in names}


LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped into [eps, 1 - eps] for log loss, as Spark's ``MulticlassMetrics.logLoss``."""


THRESHOLD_BUCKETS = 1000
"""Resolution of :func:`f1_optimal_threshold`: candidate thresholds are ``k / THRESHOLD_BUCKETS``."""


def f1_optimal_threshold(
    predictions: DataFrame,
    label_col: str = "label",
    probability_col: str = "probability",
    buckets: int = THRESHOLD_BUCKETS,
) -> dict[str, Any]:
    """The decision threshold ``t`` (predict 1 when ``probability[1] > t``) that maximises the
    positive-class F1 on ``predictions`` (binary labels 0/1).

    One aggregation: rows are counted per label in ``buckets`` probability buckets (bucket
    ``ceil(p * buckets)``, so ``p > k / buckets`` is exactly ``bucket > k``); at most ``buckets + 1``
    rows reach the driver, whatever the data size. Candidates are ``k / buckets`` for
    ``k = 1 .. buckets - 1``; ties go to the threshold nearest 0.5.

    Returns
    -------
    dict
        ``threshold``, ``f1`` (at that threshold), ``f1_at_0_5`` (Spark's default threshold),
        ``positives``, ``rows``, ``buckets``. With no positive row, ``threshold`` is 0.5 and ``f1`` 0.
    """
    import numpy as np
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    _require(predictions, label_col, probability_col)
    p = vector_to_array(F.col(probability_col))[1]
    bucket = F.least(F.greatest(F.ceil(p * buckets), F.lit(0)), F.lit(buckets)).cast("int")
    rows = (
        predictions.where(F.col(label_col).isNotNull())
        .groupBy(bucket.alias("b"))
        .agg(
            F.sum(F.when(F.col(label_col) == 1.0, 1).otherwise(0)).alias("pos"),
            F.count(F.lit(1)).alias("n"),
        )
        .collect()
    )
    pos, neg = np.zeros(buckets + 1), np.zeros(buckets + 1)
    for r in rows:
        if r["b"] is not None:
            pos[r["b"]] += r["pos"]
            neg[r["b"]] += r["n"] - r["pos"]
    # tp[k] / fp[k]: positives / negatives in buckets above k (predicted 1 at threshold k / buckets)
    tp = pos[::-1].cumsum()[::-1][1:]
    fp = neg[::-1].cumsum()[::-1][1:]
    total_pos = pos.sum()
    denom = tp + total_pos + fp  # 2 tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    half = buckets // 2
    out = {
        "f1_at_0_5": float(f1[half]) if buckets % 2 == 0 else float("nan"),
        "positives": int(total_pos),
        "rows": int(pos.sum() + neg.sum()),
        "buckets": buckets,
    }
    if not total_pos:
        log.warning("evaluation.threshold: auto: the validation split has no positive rows; keeping 0.5")
        return {**out, "threshold": 0.5, "f1": 0.0}
    k = np.arange(buckets)
    candidates = k[1:]
    best = f1[candidates].max()
    ties = candidates[f1[candidates] >= best - 1e-12]
    chosen = int(ties[np.argmin(np.abs(ties - buckets / 2))])
    return {**out, "threshold": chosen / buckets, "f1": float(f1[chosen])}


def _log_loss_term(label_col: str, probability_col: str) -> Column:
    """Per-row log loss, ``-log(p[label])`` with ``p`` clipped like Spark's evaluator."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    p = vector_to_array(F.col(probability_col))[F.col(label_col).cast("int")]
    return (
        F.when(p < LOG_LOSS_EPS, -math.log(LOG_LOSS_EPS))
        .when(p > 1 - LOG_LOSS_EPS, -math.log1p(-LOG_LOSS_EPS))
        .otherwise(-F.log(p))
    )


def _binary_auc(df: DataFrame, names: list[str], label_col: str, score_col: str) -> dict[str, float]:
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.sql import functions as F

    data = df.where(F.col(label_col).isNotNull())
    # numBins=0: the exact curve. Spark's default down-samples it into 1,000 bins cut along the
    # partitions, so the same predictions partitioned differently gave AUCs up to 3.5e-6 apart.
    ev = BinaryClassificationEvaluator(rawPredictionCol=score_col, labelCol=label_col, numBins=0)
    metric = {"auc_roc": "areaUnderROC", "auc_pr": "areaUnderPR"}
    try:  # one metrics object: both areas share its single sort of the scores (the evaluator sorts per call)
        ev._transfer_params_to_java()
        curves = ev._java_obj.getMetrics(data._jdf)
    except AttributeError:  # Spark Connect: no JVM handle
        return {n: float(ev.setMetricName(metric[n]).evaluate(data)) for n in names}
    try:
        return {n: float(getattr(curves, metric[n])()) for n in names}
    finally:
        curves.unpersist()


def _ovr_auc(
    df: DataFrame,
    names: list[str],
    label_col: str,
    score_col: str,
    classes: list[float],
    support: dict[float, int],
    total: int,
) -> dict[str, float]:
    """One-vs-rest macro AUCs: per class, both areas from one exact curve (:func:`_binary_auc`) over a
    cached frame."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    usable = [c for c in classes if 0 < support.get(c, 0) < total]
    skipped = [c for c in classes if c not in usable]
    if skipped:
        log.warning("one-vs-rest AUC: classes %s have no positive (or no negative) rows; skipped", skipped)
    if not usable:
        return {n: _nan(n, "no class has both positive and negative rows") for n in names}
    base = (
        df.where(F.col(label_col).isNotNull())
        .select(F.col(label_col).cast("double").alias("y"), vector_to_array(F.col(score_col)).alias("s"))
        .cache()
    )
    sums = dict.fromkeys(names, 0.0)
    try:
        for c in usable:
            one = base.select(
                (F.col("y") == F.lit(c)).cast("double").alias("label"),
                F.element_at("s", int(c) + 1).alias("score"),
            )
            for n, value in _binary_auc(one, names, "label", "score").items():
                sums[n] += value
    finally:
        base.unpersist()
    return {n: sums[n] / len(usable) for n in names}


def _error_aggregates(df: DataFrame, label_col: str, prediction_col: str) -> dict[str, float]:
    """One ``agg`` over the rows: count, mse, mae, variances, MAPE sums (no rows collected)."""
    from pyspark.sql import functions as F

    y = F.col(label_col).cast("double")
    p = F.col(prediction_col).cast("double")
    valid = y.isNotNull() & p.isNotNull() & ~F.isnan(y) & ~F.isnan(p)
    err = p - y
    row = (
        df.where(valid)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.avg(err * err).alias("mse"),
            F.avg(F.abs(err)).alias("mae"),
            F.var_pop(y).alias("var_y"),
            F.var_pop(err).alias("var_err"),
            F.sum(F.when(y != 0, F.abs(err) / F.abs(y))).alias("ape_sum"),
            F.count(F.when(y != 0, F.lit(1))).alias("n_nonzero"),
        )
        .first()
    )
    return {k: (float(v) if v is not None else math.nan) for k, v in row.asDict().items()}


def _regression(df: DataFrame, names: list[str], label_col: str, prediction_col: str) -> dict[str, float]:
    _require(df, label_col, prediction_col)
    a = _error_aggregates(df, label_col, prediction_col)
    n = int(a["n"])
    if n == 0:
        return {m: _nan(m, "no rows with both a label and a prediction") for m in names}
    out: dict[str, float] = {}
    for name in names:
        if name == "rmse":
            out[name] = math.sqrt(a["mse"])
        elif name in ("mse", "mae"):
            out[name] = a[name]
        elif name in ("r2", "explained_variance"):
            if not a["var_y"]:
                out[name] = _nan(name, "the label is constant")
            else:
                resid = a["mse"] if name == "r2" else a["var_err"]
                out[name] = 1.0 - resid / a["var_y"]
        elif name == "mape":
            nonzero = int(a["n_nonzero"])
            skipped = n - nonzero
            if skipped:
                log.warning("mape: skipped %d of %d rows whose label is 0", skipped, n)
            out[name] = a["ape_sum"] / nonzero if nonzero else _nan(name, "every label is 0")
            out["mape_zero_labels_skipped"] = float(skipped)
    return out


def cluster_statistics(df: DataFrame, prediction_col: str, features_col: str) -> dict[str, Any]:
    """Per-cluster sizes, centroids (feature means), mean and summed squared distance to the centroid.

    Two aggregate passes; only ``k`` centroid vectors reach the driver.

    Returns
    -------
    dict
        ``clusters`` (ids), ``counts``, ``centroids`` (lists of floats), ``mean_dist`` and ``sum_sq``
        (per cluster, Euclidean).
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.stat import Summarizer
    from pyspark.sql import functions as F

    data = df.where(F.col(prediction_col).isNotNull()).select(
        F.col(prediction_col).cast("int").alias("cluster"), F.col(features_col).alias("features")
    )
    stats = (
        data.groupBy("cluster")
        .agg(F.count(F.lit(1)).alias("n"), Summarizer.mean(F.col("features")).alias("centroid"))
        .collect()
    )
    stats = sorted(stats, key=lambda r: r["cluster"])
    clusters = [int(r["cluster"]) for r in stats]
    counts = [int(r["n"]) for r in stats]
    centroids = [[float(v) for v in r["centroid"].toArray()] for r in stats]
    if not clusters:
        return {"clusters": [], "counts": [], "centroids": [], "mean_dist": [], "sum_sq": []}
    spark = df.sparkSession
    cents = spark.createDataFrame(list(zip(clusters, centroids, strict=True)), "cluster int, c array<double>")
    sq = F.aggregate(
        F.zip_with(vector_to_array(F.col("features")), F.col("c"), lambda a, b: (a - b) * (a - b)),
        F.lit(0.0),
        lambda acc, v: acc + v,
    )
    dist_rows = (
        data.join(F.broadcast(cents), "cluster")
        .withColumn("d2", sq)
        .groupBy("cluster")
        .agg(F.avg(F.sqrt("d2")).alias("mean_dist"), F.sum("d2").alias("sum_sq"))
        .collect()
    )
    by_cluster = {int(r["cluster"]): r for r in dist_rows}
    return {
        "clusters": clusters,
        "counts": counts,
        "centroids": centroids,
        "mean_dist": [float(by_cluster[c]["mean_dist"]) for c in clusters],
        "sum_sq": [float(by_cluster[c]["sum_sq"]) for c in clusters],
    }


def _euclid(a: Sequence[float], b: Sequence[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def davies_bouldin_from_stats(stats: dict[str, Any]) -> float:
    """Davies-Bouldin index from :func:`cluster_statistics` (scikit-learn's definition).

    Mean over clusters of ``max_j (s_i + s_j) / d(c_i, c_j)``, where ``s`` is the mean Euclidean
    distance of a cluster's points to its centroid. Coinciding centroids are skipped and an all-zero
    spread gives 0, as in scikit-learn.
    """
    cents, spread = stats["centroids"], stats["mean_dist"]
    k = len(cents)
    if all(s == 0 for s in spread):
        return 0.0
    total = 0.0
    for i in range(k):
        worst = 0.0
        for j in range(k):
            d = _euclid(cents[i], cents[j]) if i != j else 0.0
            if d > 0:
                worst = max(worst, (spread[i] + spread[j]) / d)
        total += worst
    return total / k


def calinski_harabasz_from_stats(stats: dict[str, Any]) -> float:
    """Calinski-Harabasz score from :func:`cluster_statistics` (scikit-learn's definition)."""
    counts, cents = stats["counts"], stats["centroids"]
    n, k = sum(counts), len(counts)
    overall = [sum(c[d] * m for c, m in zip(cents, counts, strict=True)) / n for d in range(len(cents[0]))]
    between = sum(m * _euclid(c, overall) ** 2 for c, m in zip(cents, counts, strict=True))
    within = sum(stats["sum_sq"])
    if within == 0:
        return 1.0
    return (between / (k - 1)) / (within / (n - k)) if n > k else math.nan


def _clustering(df: DataFrame, names: list[str], prediction_col: str, features_col: str) -> dict[str, float]:
    from pyspark.sql import functions as F

    _require(df, prediction_col, features_col)
    out: dict[str, float] = {}
    stats = None
    if {"davies_bouldin", "calinski_harabasz"} & set(names):
        stats = cluster_statistics(df, prediction_col, features_col)
        k = len(stats["clusters"])
    else:
        k = df.select(F.countDistinct(prediction_col)).first()[0] if set(names) else 0
    for name in names:
        if k < 2:
            out[name] = _nan(name, f"needs at least 2 clusters, found {k}")
        elif name in ("silhouette", "silhouette_cosine"):
            from pyspark.ml.evaluation import ClusteringEvaluator

            ev = ClusteringEvaluator(
                featuresCol=features_col,
                predictionCol=prediction_col,
                metricName="silhouette",
                distanceMeasure="cosine" if name == "silhouette_cosine" else "squaredEuclidean",
            )
            out[name] = float(ev.evaluate(df.where(F.col(prediction_col).isNotNull())))
        elif name == "davies_bouldin":
            out[name] = davies_bouldin_from_stats(stats)
        elif name == "calinski_harabasz":
            out[name] = calinski_harabasz_from_stats(stats)
    return out


def ranking_frame(
    df: DataFrame,
    label_col: str,
    prediction_col: str,
    k: int,
    model: Any,
    user_col: str,
    item_col: str,
    relevance_threshold: float,
) -> DataFrame:
    """Per user: ``ranked`` (predicted item order) and ``relevant`` (test items rated ≥ threshold).

    Users without any relevant test item are dropped. Items are cast to double, as Spark's
    ``RankingEvaluator`` expects.
    """
    from pyspark.sql import functions as F

    item = F.col(item_col).cast("double")
    pred = F.col(prediction_col).cast("double")
    usable_pred = pred.isNotNull() & ~F.isnan(pred)
    grouped = df.groupBy(user_col).agg(
        F.array_sort(F.collect_set(F.when(F.col(label_col) >= relevance_threshold, item))).alias("relevant"),
        F.sort_array(
            F.collect_list(F.when(usable_pred, F.struct((-pred).alias("neg_score"), item.alias("item"))))
        ).alias("_pairs"),
    )
    grouped = grouped.where(F.size("relevant") > 0)
    if model is None:
        return grouped.select(
            user_col, "relevant", F.transform("_pairs", lambda s: s["item"]).alias("ranked")
        )
    model_user = model.getUserCol()
    model_item = model.getItemCol()
    users = grouped.select(F.col(user_col).alias(model_user)).distinct()
    recs = model.recommendForUserSubset(users, k).select(
        F.col(model_user).alias(user_col),
        F.transform("recommendations", lambda s: s[model_item].cast("double")).alias("ranked"),
    )
    return (
        grouped.select(user_col, "relevant")
        .join(recs, user_col, "left")
        .select(user_col, "relevant", F.coalesce("ranked", F.array().cast("array<double>")).alias("ranked"))
    )


def _recommendation(
    df: DataFrame,
    names: list[str],
    label_col: str,
    prediction_col: str,
    k: int,
    model: Any,
    user_col: str,
    item_col: str,
    relevance_threshold: float,
) -> dict[str, float]:
    _require(df, label_col, prediction_col)
    out: dict[str, float] = {}
    if {"rmse", "mse", "mae"} & set(names):
        a = _error_aggregates(df, label_col, prediction_col)
        for name in ("rmse", "mse", "mae"):
            if name in names:
                if not a["n"]:
                    out[name] = _nan(name, "no rows with a rating prediction")
                else:
                    out[name] = math.sqrt(a["mse"]) if name == "rmse" else a[name]
    ranking = [n for n in names if n in _RANKING]
    if ranking:
        from pyspark.ml.evaluation import RankingEvaluator

        _require(df, user_col, item_col)
        frame = ranking_frame(
            df, label_col, prediction_col, k, model, user_col, item_col, relevance_threshold
        ).cache()
        try:
            if frame.limit(1).count() == 0:
                for n in ranking:
                    out[n] = _nan(n, f"no user has a test item rated >= {relevance_threshold}")
            else:
                for n in ranking:
                    ev = RankingEvaluator(
                        predictionCol="ranked", labelCol="relevant", metricName=_RANKING[n], k=k
                    )
                    out[n] = float(ev.evaluate(frame))
        finally:
            frame.unpersist()
    return {n: out[n] for n in names}
