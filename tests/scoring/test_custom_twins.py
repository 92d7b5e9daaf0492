"""Parity of the NumPy twins of sparkpipe's custom stages with Spark, on nasty rows."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from sparkpipe.scoring import custom
from sparkpipe.scoring.base import TWINS

from .parity import assert_parity

pytestmark = pytest.mark.spark

UTC = dt.UTC

NASTY_TIMES = [
    None,
    dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),  # leap day, last microsecond
    dt.datetime(2024, 2, 29, 0, 0, 0, tzinfo=UTC),
    dt.datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC),  # midnight, year start, a Monday
    dt.datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC),  # year end, a Sunday
    dt.datetime(2024, 3, 31, 2, 30, 0, tzinfo=UTC),  # European DST gap: irrelevant in UTC
    dt.datetime(2024, 11, 3, 1, 30, 0, tzinfo=UTC),  # US DST overlap: irrelevant in UTC
    dt.datetime(2024, 6, 15, 12, 0, 0, tzinfo=UTC),  # Saturday noon
    dt.datetime(1969, 12, 31, 23, 0, 0, tzinfo=UTC),  # before the epoch
    dt.datetime(1900, 3, 1, 5, 6, 7, tzinfo=UTC),  # 1900 is not a leap year
    dt.datetime(2000, 2, 29, 13, 0, 0, tzinfo=UTC),  # 2000 is
    dt.datetime(2099, 12, 31, 23, 59, 0, tzinfo=UTC),
]

TIME_STRINGS = [
    "2024-01-01",
    "2024-1-1",
    "2024",
    "2024-01",
    "2024-01-01 12",
    "2024-01-01 12:3",
    "2024-01-01T12:30:45.123456789",
    " 2024-01-01 01:02:03 ",
    "2024-01-01 01:02:03Z",
    "2024-01-01 01:02:03+02:00",
    "2024-01-01 01:02:03 +0230",
    "2024-01-01 01:02:03 UTC",
    "2024-01-01 1:2:3",
    "2024-02-29 23:59:59",
    "2023-02-29",  # no such day -> null
    "2024-01-01T",  # -> null
    "2024-01-01 25:00:00",  # -> null
    "1.5",
    "",
    None,
]


def test_twins_registered_under_saved_class_paths():
    from pyspark.ml import Estimator

    from sparkpipe.features import stages

    for cls in stages.CUSTOM_STAGES:
        if issubclass(cls, Estimator):  # only an estimator's fitted model is ever saved in a served model
            continue
        assert f"{cls.__module__}.{cls.__name__}" in TWINS
    assert custom.CYCLIC_PERIODS == stages.CYCLIC_PERIODS
    assert custom.DEFAULT_TIME_PARTS == stages.DEFAULT_TIME_PARTS


def test_time_features_timestamp_and_date_parity(spark, tmp_path):
    from sparkpipe.features.stages import TIME_PARTS, TimeFeatures

    rows = [(t, None if t is None else t.date()) for t in NASTY_TIMES]
    df = spark.createDataFrame(rows, "ts timestamp, d date")
    stage = TimeFeatures(inputCols=["ts", "d"], parts=list(TIME_PARTS), cyclic=True)
    compiled = assert_parity(stage, df, tmp_path)
    assert "ts_hour_sin" in compiled.all_output_columns
    # the documented convention: 0 = Monday ... 6 = Sunday; weekend flag on Saturday and Sunday
    out = {r["ts"]: r for r in stage.transform(df).collect() if r["ts"] is not None}
    monday = dt.datetime(2024, 1, 1)
    assert out[monday]["ts_day_of_week"] == 0.0 and out[monday]["ts_is_weekend"] == 0.0
    sunday = dt.datetime(2023, 12, 31, 23, 59, 59)
    assert out[sunday]["ts_day_of_week"] == 6.0 and out[sunday]["ts_is_weekend"] == 1.0


def test_time_features_string_parity(spark, tmp_path):
    from sparkpipe.features.stages import TimeFeatures

    df = spark.createDataFrame([(s,) for s in TIME_STRINGS], "s string")
    stage = TimeFeatures(
        inputCols=["s"], parts=["hour", "minute", "day_of_week", "day_of_month", "month", "year"]
    )
    assert_parity(stage, df, tmp_path)


def test_time_features_default_parts_null_only(spark, tmp_path):
    from sparkpipe.features.stages import TimeFeatures

    df = spark.createDataFrame([(None,), (dt.datetime(2024, 7, 4, 9, tzinfo=UTC),)], "ts timestamp")
    assert_parity(TimeFeatures(inputCols=["ts"]), df, tmp_path)


def test_cast_to_double_parity(spark, tmp_path):
    from sparkpipe.features.stages import CastToDouble

    rows = [
        (True, 1, 2**40, 1.5, " 1.5 "),
        (False, -3, -(2**40), float("nan"), "1e3"),
        (None, None, None, None, None),
        (True, 0, 0, float("inf"), "NaN"),
        (False, 2147483647, 9007199254740992, -0.0, "-inf"),
        (None, -2147483648, 1, 1e-300, "abc"),
        (True, 7, 2, 1e300, "1d"),
        (False, 8, 3, 2.5, ""),
    ]
    df = spark.createDataFrame(rows, "b boolean, i int, l bigint, x double, s string")
    cols = ["b", "i", "l", "x", "s"]
    stage = CastToDouble(inputCols=cols, outputCols=[f"{c}__dbl" for c in cols])
    assert_parity(stage, df, tmp_path)


def test_cast_to_double_skip_missing(spark, tmp_path):
    from sparkpipe.features.stages import CastToDouble

    df = spark.createDataFrame([(1.0,), (None,)], "x double")
    stage = CastToDouble(inputCols=["x", "label_src"], outputCols=["x2", "label"], skipMissing=True)
    assert stage.transform(df).columns == ["x", "x2"]
    assert_parity(stage, df, tmp_path, columns=["x2"])


def test_constant_imputer_and_missing_indicator_parity(spark, tmp_path):
    from pyspark.ml import Pipeline

    from sparkpipe.features.stages import ConstantImputer, MissingIndicator

    rows = [(1.0, 1, True), (float("nan"), None, None), (None, 3, False), (-2.5, None, True)]
    df = spark.createDataFrame(rows, "x double, n int, b boolean")
    model = Pipeline(
        stages=[
            ConstantImputer(inputCols=["x", "n"], outputCols=["x_f", "n_f"], fillValue=-1.25),
            MissingIndicator(inputCols=["x", "n", "b"], outputCols=["x_m", "n_m", "b_m"]),
        ]
    ).fit(df)
    assert_parity(model, df, tmp_path)


@pytest.mark.parametrize("strategy", ["constant", "mode"])
def test_categorical_imputer_parity(spark, tmp_path, strategy):
    from sparkpipe.features.stages import CategoricalImputer

    train = spark.createDataFrame(
        [("a", 1, True), ("b", 2, True), (None, 2, None), ("b", None, False), ("", 1, True)],
        "s string, n int, b boolean",
    )
    test = spark.createDataFrame(
        [(None, None, None), ("zzz", 99, False), ("a", -5, True), ("", 0, None)], "s string, n int, b boolean"
    )
    model = CategoricalImputer(
        inputCols=["s", "n", "b"], outputCols=["s_c", "n_c", "b_c"], strategy=strategy
    ).fit(train)
    expected_fill = {"constant": ["__missing__"] * 3, "mode": ["b", "1", "true"]}[strategy]
    assert model.getFillValues() == expected_fill
    assert_parity(model, test, tmp_path)
    assert_parity(model, train, tmp_path)


def test_parse_helpers_match_spark_on_edge_strings(spark):
    from pyspark.sql import functions as F

    nums = [
        " 1.5 ",
        "1e3",
        "NaN",
        "Infinity",
        "-inf",
        "inf",
        "1d",
        "1F",
        "0x10",
        "",
        "abc",
        "+2",
        "1,5",
        ".5",
        "5.",
        "1_0",
    ]
    df = spark.createDataFrame([(s,) for s in nums], "s string")
    got = df.select(F.col("s").try_cast("double").alias("d")).collect()
    for s, r in zip(nums, got, strict=True):
        twin = custom.parse_spark_double(s)
        spark_v = math.nan if r["d"] is None else r["d"]
        assert (math.isnan(twin) and math.isnan(spark_v)) or twin == spark_v, s
    assert custom.parse_spark_timestamp("2024-01-01T00:00:00Z") == 1704067200 * 1_000_000
    assert (
        custom.calendar_parts(np.array([custom._NAT]))["hour"][0]
        != custom.calendar_parts(np.array([0]))["hour"][0]
    )


def test_feature_plan_end_to_end_parity(spark, tmp_path):
    """The whole v1 feature pipeline (custom stages and Spark built-ins) through the compiled twins."""
    from sparkpipe.config import FeaturesConfig, MissingValuesConfig, TimeFeaturesConfig
    from sparkpipe.features import build_feature_stages

    rows = []
    for i in range(24):
        ts = None if i % 7 == 0 else dt.datetime(2024, 2, 27, tzinfo=UTC) + dt.timedelta(hours=11 * i)
        rows.append(
            (
                ["basic", "pro", None, "basic"][i % 4],
                None if i % 5 == 0 else float(i) * 1.5,
                [True, False, None][i % 3],
                ts,
                i % 4,
                ["yes", "no", "no"][i % 3],
            )
        )
    schema = "plan string, charges double, flag boolean, ts timestamp, n int, churn string"
    train = spark.createDataFrame(rows, schema)
    test = spark.createDataFrame(
        [
            ("enterprise", None, None, None, None, "yes"),  # unseen category, every value missing
            (None, 1e6, True, dt.datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC), 3, "no"),
            ("pro", -4.0, False, dt.datetime(2024, 2, 29, 0, 0, tzinfo=UTC), 0, "no"),
        ],
        schema,
    )
    cfg = FeaturesConfig(
        target="churn",
        missing_values=MissingValuesConfig(strategy="mean", add_indicator=True),
        time_features=TimeFeaturesConfig(cyclic=True),
    )
    plan = build_feature_stages(train, cfg, "classification")
    model = plan.pipeline().fit(train)
    # served rows carry no label: the fitted feature stages must not need the target column
    assert_parity(
        model, test.drop("churn"), tmp_path, columns=[plan.features_col], input_schema=plan.input_schema
    )


def test_clip_vector_after_minmax_is_bit_identical(spark, tmp_path):
    """Naive Bayes' scaler: rows below the training minimum / above the maximum clip into [0, 1]."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import MinMaxScaler
    from pyspark.ml.linalg import Vectors

    from sparkpipe.features.stages import ClipVector

    train = spark.createDataFrame(
        [
            (Vectors.dense([0.0, 10.0, 5.0]),),
            (Vectors.dense([4.0, 20.0, 5.0]),),
            (Vectors.dense([1.3, 17.0, 5.0]),),
        ],
        ["v"],
    )
    model = Pipeline(
        stages=[
            MinMaxScaler(inputCol="v", outputCol="s"),
            ClipVector(inputCol="s", outputCol="c", lower=0.0, upper=1.0),
        ]
    ).fit(train)
    rows = [
        (Vectors.dense([-3.0, 9.999, 4.0]),),  # below the training minimum: negative before clipping
        (Vectors.dense([7.0, 1e300, 6.0]),),  # above the maximum
        (Vectors.dense([float("nan"), 15.0, -1e300]),),  # NaN stays NaN
        (Vectors.sparse(3, [1], [12.5]),),
        (Vectors.dense([0.1, 0.2, 0.3]),),
    ]
    df = spark.createDataFrame(rows, ["v"])
    spark_out = np.array([r["c"].toArray() for r in model.transform(df).select("c").collect()])
    assert np.nanmin(np.array([r["s"].toArray() for r in model.transform(df).collect()])) < 0  # unclipped < 0
    assert np.nanmin(spark_out) >= 0.0 and np.nanmax(spark_out) <= 1.0
    compiled = assert_parity(model, df, tmp_path, columns=["c"])
    records = [{"v": r[0].toArray().tolist()} for r in rows]
    twin_out = np.array([row["c"] for row in compiled.predict(records, columns=["c"])], dtype=np.float64)
    assert twin_out.tobytes() == spark_out.tobytes()  # bit for bit, NaN included
