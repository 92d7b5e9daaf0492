"""Built-in data sets: schemas, determinism across partitionings, integration with read_dataset."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from sparkpipe.config import DataConfig
from sparkpipe.data.datasets import BUILTIN_DATASETS, dataset_info, generate, list_datasets, load_builtin
from sparkpipe.data.io import read_dataset
from sparkpipe.errors import DataError, UnknownNameError

pytestmark = pytest.mark.spark


def _types(df) -> dict[str, str]:
    return {f.name: f.dataType.simpleString() for f in df.schema.fields}


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_builtin_loads_with_declared_schema(spark, name):
    info = dataset_info(name)
    df = load_builtin(spark, name, rows=300 if info.synthetic else None)
    assert _types(df) == info.columns
    n = df.count()
    assert n == 300 if info.synthetic else n > 100
    if info.target:
        assert df.where(F.col(info.target).isNull()).count() == 0


def test_registry_metadata():
    assert list_datasets() == sorted(BUILTIN_DATASETS)
    assert dataset_info("builtin:churn").target == "churned"
    assert dataset_info("taxi").task == "regression"
    ml = dataset_info("movielens")
    assert (ml.user_col, ml.item_col, ml.rating_col) == ("userId", "movieId", "rating")
    assert dataset_info("segments").exclude_columns == ("true_segment",)
    assert dataset_info("iris").target == "species"
    with pytest.raises(UnknownNameError, match="valid built-in data sets: breast_cancer, churn"):
        dataset_info("nope")


def test_generation_is_deterministic_across_partitions(spark):
    for name in ("churn", "taxi", "segments"):
        a = generate(spark, name, rows=400, seed=7, num_partitions=1)
        b = generate(spark, name, rows=400, seed=7, num_partitions=5)
        assert a.rdd.getNumPartitions() == 1 and b.rdd.getNumPartitions() == 5
        rows_a = a.collect()
        assert rows_a == b.collect()  # spark.range keeps id order, so row order matches too
        assert rows_a != generate(spark, name, rows=400, seed=8, num_partitions=1).collect()


def test_generated_sets_spread_over_the_cores_only_when_large():
    """One partition per 50,000 rows up to the parallelism, at least one per million rows."""
    from types import SimpleNamespace

    from sparkpipe.data.datasets import _default_partitions

    cores = SimpleNamespace(sparkContext=SimpleNamespace(defaultParallelism=2))
    assert [_default_partitions(cores, n) for n in (1, 240, 50_000, 50_001, 1_000_000)] == [1, 1, 1, 2, 2]
    assert _default_partitions(cores, 30_000_000) == 30
    many = SimpleNamespace(sparkContext=SimpleNamespace(defaultParallelism=16))
    assert [_default_partitions(many, n) for n in (20_000, 120_000, 10_000_000)] == [1, 3, 16]


def test_builtin_churn_of_a_few_thousand_rows_is_one_partition(spark):
    assert load_builtin(spark, "churn", rows=4000).rdd.getNumPartitions() == 1
    assert load_builtin(spark, "iris").rdd.getNumPartitions() == 1


def test_churn_properties(spark):
    df = load_builtin(spark, "churn", rows=4000, seed=42).cache()
    stats = df.agg(
        F.avg("churned").alias("rate"),
        F.avg(F.col("total_charges").isNull().cast("double")).alias("null_total"),
        F.avg(F.col("region").isNull().cast("double")).alias("null_region"),
        F.countDistinct("plan").alias("plans"),
        F.countDistinct("region").alias("regions"),
        F.min("monthly_charges").alias("min_charge"),
        F.max("support_calls").alias("max_calls"),
        F.countDistinct("customer_id").alias("ids"),
        F.sum((F.col("last_login_ts") < F.col("signup_ts")).cast("int")).alias("login_before_signup"),
    ).first()
    assert 0.12 < stats.rate < 0.35
    assert 0.015 < stats.null_total < 0.05 and 0.015 < stats.null_region < 0.05
    assert stats.plans == 4 and stats.regions == 6
    assert stats.min_charge > 0 and stats.max_calls >= 20  # outliers exist
    assert stats.ids == 4000
    assert stats.login_before_signup == 0
    # the login-time signal is there: night-time logins churn more
    night = df.where(F.hour("last_login_ts") < 6).agg(F.avg("churned")).first()[0]
    day = df.where(F.hour("last_login_ts") >= 6).agg(F.avg("churned")).first()[0]
    assert night > day + 0.1
    df.unpersist()


def test_taxi_target_positive_and_driven_by_distance(spark):
    df = load_builtin(spark, "taxi", rows=3000)
    row = df.agg(
        F.min("trip_duration"), F.corr("trip_distance", "trip_duration"), F.countDistinct("borough")
    ).first()
    assert row[0] > 0
    assert row[1] > 0.7
    assert row[2] == 5


def test_segments_have_four_clusters(spark):
    df = load_builtin(spark, "segments", rows=2000)
    counts = {r.true_segment: r["count"] for r in df.groupBy("true_segment").count().collect()}
    assert len(counts) == 4 and min(counts.values()) > 150


def test_real_dataset_subset_and_labels(spark):
    iris = load_builtin(spark, "iris")
    assert sorted(r.species for r in iris.select("species").distinct().collect()) == [
        "setosa", "versicolor", "virginica",
    ]  # fmt: skip
    bc = load_builtin(spark, "breast_cancer", rows=100, seed=3)
    assert bc.count() == 100 and bc.select("label").distinct().count() == 2
    assert "mean_concave_points" in bc.columns and "radius_error" in bc.columns
    ml = load_builtin(spark, "movielens")
    assert ml.count() == 1501


def test_generate_rejects_real_and_bad_rows(spark):
    with pytest.raises(DataError, match="cannot be generated"):
        generate(spark, "iris", rows=10)
    with pytest.raises(DataError, match=r"data\.rows"):
        generate(spark, "churn", rows=0)


def test_read_dataset_builtin_lineage(spark, tmp_path):
    cfg = DataConfig(input_path="builtin:taxi", rows=250, seed=11, output_path=str(tmp_path))
    res = read_dataset(spark, cfg)
    assert res.df.count() == 250
    lin = res.lineage
    assert (lin["format"], lin["name"], lin["rows"], lin["seed"], lin["row_count"]) == (
        "builtin",
        "taxi",
        250,
        11,
        250,
    )
    assert lin["columns"] == BUILTIN_DATASETS["taxi"].columns
    assert res.quarantined == 0 and res.quarantine_path is None
    with pytest.raises(UnknownNameError):
        read_dataset(spark, DataConfig(input_path="builtin:unknown"))
