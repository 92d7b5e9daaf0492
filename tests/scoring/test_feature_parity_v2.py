"""Feature engineering v2 stages: save/reload and parity of their NumPy twins with Spark, on nasty rows."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from pyspark.ml import Pipeline, PipelineModel

from sparkpipe.scoring import custom
from sparkpipe.scoring.base import TWINS

from .parity import assert_parity, save_and_compile

# Spark runs its generated code here (the suite's session interprets: see tests/conftest.py)
pytestmark = [pytest.mark.spark, pytest.mark.usefixtures("spark_codegen")]

UTC = dt.UTC
INF = float("inf")


def _reload(model, tmp_path, name: str):
    path = str(tmp_path / name)
    model.write().overwrite().save(path)
    return PipelineModel.load(path) if isinstance(model, PipelineModel) else type(model).load(path)


def test_new_twins_registered_and_constants_agree():
    from sparkpipe.features import stages

    for cls in (
        stages.OutlierHandlerModel,
        stages.SafeRatio,
        stages.PairwiseProduct,
        stages.ElapsedTime,
        stages.RareCategoryGrouperModel,
        stages.GroupAggregatorModel,
    ):
        assert f"{cls.__module__}.{cls.__name__}" in TWINS
    assert custom.ELAPSED_UNITS == stages.ELAPSED_UNITS
    assert custom.RARE_CATEGORY == stages.RARE_CATEGORY


@pytest.mark.parametrize(("method", "action"), [("iqr", "clip"), ("zscore", "flag"), ("zscore", "clip")])
def test_outlier_handler_learns_bounds_reloads_and_matches_twin(spark, tmp_path, method, action):
    from sparkpipe.features.stages import OutlierHandler, OutlierHandlerModel

    train = spark.createDataFrame(
        [(float(i), i % 7, None if i % 5 == 0 else float(i % 3)) for i in range(40)] + [(1000.0, 500, None)],
        "x double, n int, allnull_ish double",
    )
    est = OutlierHandler(
        inputCols=["x", "n"], outputCols=["x_o", "n_o"], method=method, threshold=1.5, action=action
    )
    model = est.fit(train)
    lo, hi = model.getLowerBounds(), model.getUpperBounds()
    assert len(lo) == len(hi) == 2 and all(a < b for a, b in zip(lo, hi, strict=True))
    assert hi[0] < 1000.0  # the extreme training value is outside the learned band
    reloaded = _reload(model, tmp_path, "outlier")
    assert isinstance(reloaded, OutlierHandlerModel) and reloaded.getUpperBounds() == hi
    test = spark.createDataFrame(
        [
            (1000.0, 500),
            (-1e6, -3),
            (None, None),
            (float("nan"), 2),
            (INF, 0),
            (-INF, 6),
            (lo[0], 3),
            (hi[0], 4),
        ],
        "x double, n int",
    )
    out = reloaded.transform(test).collect()
    if action == "clip":
        assert out[0]["x_o"] == hi[0] and out[1]["x_o"] == lo[0] and out[2]["x_o"] is None
        assert math.isnan(out[3]["x_o"]) and out[4]["x_o"] == hi[0] and out[5]["x_o"] == lo[0]
    else:
        assert [r["x_o"] for r in out] == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert_parity(reloaded, test, tmp_path)


def test_outlier_handler_all_null_column(spark, tmp_path):
    from sparkpipe.features.stages import OutlierHandler

    df = spark.createDataFrame([(None,), (None,)], "x double")
    model = OutlierHandler(inputCols=["x"], outputCols=["x_o"], method="iqr").fit(df)
    assert_parity(model, spark.createDataFrame([(None,), (3.0,)], "x double"), tmp_path)


def test_safe_ratio_and_products_never_infinite(spark, tmp_path):
    from sparkpipe.features.stages import PairwiseProduct, SafeRatio

    rows = [
        (1.0, 2.0, 3),
        (1.0, 0.0, 0),
        (1.0, -0.0, None),
        (None, 2.0, 1),
        (2.0, None, 1),
        (float("nan"), 1.0, 1),
        (1.0, float("nan"), 1),
        (INF, 1.0, 2),
        (1e308, 1e-308, 2),
        (-5.0, 4.0, -2),
        (0.0, 0.0, 0),
    ]
    df = spark.createDataFrame(rows, "a double, b double, n int")
    model = PipelineModel(
        stages=[
            SafeRatio(
                leftCols=["a", "a", "n"],
                rightCols=["b", "n", "b"],
                outputCols=["a_per_b", "a_per_n", "n_per_b"],
            ),
            PairwiseProduct(leftCols=["a", "a"], rightCols=["b", "n"], outputCols=["a_x_b", "a_x_n"]),
        ]
    )
    reloaded = _reload(model, tmp_path, "ratios")
    out = reloaded.transform(df).collect()
    for r in out:
        for c in ("a_per_b", "a_per_n", "n_per_b", "a_x_b", "a_x_n"):
            assert r[c] is None or math.isfinite(r[c])
    assert out[0]["a_per_b"] == 0.5 and out[1]["a_per_b"] is None and out[2]["a_per_b"] is None
    assert out[8]["a_per_b"] is None  # overflow -> null, never an infinity
    assert out[9]["a_x_n"] == 10.0
    assert_parity(reloaded, df, tmp_path)


def test_elapsed_time_units_nulls_and_strings(spark, tmp_path):
    from sparkpipe.features.stages import ElapsedTime

    t0 = dt.datetime(2024, 2, 28, 23, 0, tzinfo=UTC)
    rows = [
        (t0, t0 + dt.timedelta(minutes=90), "2024-01-01 00:00:00", dt.date(2024, 1, 3)),
        (t0, t0 - dt.timedelta(days=2, seconds=1), "2024-03-01T12:00:00Z", dt.date(2024, 3, 1)),
        (None, t0, "bad", dt.date(2024, 1, 1)),
        (t0, None, None, None),
        (dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), t0, "2024-02-29", dt.date(2024, 2, 28)),
    ]
    df = spark.createDataFrame(rows, "s timestamp, e timestamp, txt string, d date")
    stage = ElapsedTime(
        startCols=["s", "s", "txt", "s"],
        endCols=["e", "e", "d", "d"],
        outputCols=["m", "h", "days_txt", "sec_d"],
        units=["minutes", "hours", "days", "seconds"],
    )
    reloaded = _reload(stage, tmp_path, "elapsed")
    out = reloaded.transform(df).collect()
    assert out[0]["m"] == 90.0 and out[0]["h"] == 1.5 and out[0]["days_txt"] == 2.0
    assert out[2]["m"] is None and out[2]["days_txt"] is None and out[3]["m"] is None
    assert_parity(reloaded, df, tmp_path)


def test_rare_category_grouper(spark, tmp_path):
    from sparkpipe.features.stages import RareCategoryGrouper

    train = spark.createDataFrame(
        [("a", 1, True)] * 5 + [("b", 2, True)] * 3 + [("c", 3, False), (None, 2, None), ("", 1, True)],
        "s string, n int, b boolean",
    )
    model = RareCategoryGrouper(inputCols=["s", "n", "b"], outputCols=["s_g", "n_g", "b_g"], minCount=3).fit(
        train
    )
    assert model.getKeptCategories() == [["a", "b"], ["1", "2"], ["true"]]
    reloaded = _reload(model, tmp_path, "rare")
    test = spark.createDataFrame(
        [("a", 1, True), ("c", 3, False), ("zzz", 99, None), (None, None, None), ("", 2, True)],
        "s string, n int, b boolean",
    )
    got = [tuple(r) for r in reloaded.transform(test).select("s_g", "n_g", "b_g").collect()]
    assert got == [
        ("a", "1", "true"),
        ("__rare__", "__rare__", "__rare__"),
        ("__rare__", "__rare__", None),
        (None, None, None),
        ("__rare__", "2", "true"),
    ]
    assert_parity(reloaded, test, tmp_path)


def test_group_aggregator_uses_training_data_only_and_serves_lookups(spark, tmp_path):
    """Values come from training rows only; a known entity gets its stored aggregates, an unknown or
    null one the global defaults, in Spark and in the twin's in-memory dict lookup."""
    from sparkpipe.features.stages import GroupAggregator, GroupAggregatorModel

    train = spark.createDataFrame(
        [
            ("alice", 1, 10.0),
            ("alice", 1, 30.0),
            ("alice", 2, None),
            ("bob", 1, 5.0),
            ("carol", 2, float("nan")),
            (None, 1, 100.0),
        ],
        "customer string, tier int, spend double",
    )
    est = GroupAggregator(
        groupCols=["customer"],
        aggCols=["*", "spend", "spend", "spend", "spend", "spend"],
        functions=["count", "mean", "sum", "min", "max", "std"],
        outputCols=["n", "mean", "sum", "min", "max", "std"],
    )
    model = est.fit(train)
    table = model.lookup()
    assert table[("alice",)] == [3.0, 20.0, 40.0, 10.0, 30.0, pytest.approx(math.sqrt(200.0))]
    assert table[("bob",)][:2] == [1.0, 5.0] and table[("bob",)][5] is None  # std of one row: null
    assert ("carol",) in table and table[("carol",)][1] is None  # NaN ignored like null
    assert len(table) == 3  # the null key is not an entity
    defaults = model.getDefaults()
    assert defaults[0] == 0.0 and defaults[1] == pytest.approx(145.0 / 4)  # global mean over training rows
    assert defaults[3] == 5.0 and defaults[4] == 100.0

    reloaded = _reload(model, tmp_path, "agg")
    assert isinstance(reloaded, GroupAggregatorModel) and reloaded.lookup() == table
    # new rows carry different spends: the aggregates must not move (learned from training only)
    test = spark.createDataFrame(
        [("alice", 9, 1e6), ("dave", 1, 1.0), (None, 2, 3.0), ("bob", 1, None), ("carol", 2, 2.0)],
        "customer string, tier int, spend double",
    )
    out = {r["customer"]: r for r in reloaded.transform(test).collect()}
    assert out["alice"]["mean"] == 20.0 and out["alice"]["n"] == 3.0 and out["alice"]["spend"] == 1e6
    assert out["dave"]["mean"] == defaults[1] and out["dave"]["n"] == 0.0
    assert out[None]["max"] == defaults[4]
    assert out["bob"]["std"] == defaults[5] and out["carol"]["mean"] == defaults[1]
    compiled = assert_parity(reloaded, test, tmp_path)

    twin = next(t for t in compiled.stages if isinstance(t, custom.GroupAggregatorModelTwin))
    assert twin.lookup(("alice",)).tolist()[:3] == [3.0, 20.0, 40.0]
    assert twin.lookup(("nobody",)).tolist() == defaults
    # a single online request for a known customer gets that customer's stored aggregates
    pred = compiled.predict([{"customer": "alice", "tier": 1, "spend": 0.0}], columns=["n", "mean"])
    assert pred == [{"n": 3.0, "mean": 20.0}]


def test_group_aggregator_multi_key_int_and_bool(spark, tmp_path):
    from sparkpipe.features.stages import GroupAggregator

    train = spark.createDataFrame(
        [(1, True, 2.0), (1, True, 4.0), (1, False, 8.0), (2, None, 1.0), (None, True, 5.0)],
        "k bigint, flag boolean, v double",
    )
    model = GroupAggregator(
        groupCols=["k", "flag"], aggCols=["v", "*"], functions=["mean", "count"], outputCols=["v_mean", "cnt"]
    ).fit(train)
    assert model.lookup()[("1", "true")] == [3.0, 2.0]
    test = spark.createDataFrame(
        [(1, True, 0.0), (1, False, 0.0), (2, None, 0.0), (3, True, 0.0), (None, None, None)],
        "k bigint, flag boolean, v double",
    )
    assert_parity(_reload(model, tmp_path, "agg2"), test, tmp_path)


def test_group_aggregator_rejects_double_keys(spark):
    from sparkpipe.features.stages import GroupAggregator

    df = spark.createDataFrame([(1.5, 2.0)], "k double, v double")
    with pytest.raises(ValueError, match="string, integral or boolean"):
        GroupAggregator(groupCols=["k"], aggCols=["v"], functions=["mean"], outputCols=["m"]).fit(df)


def test_importance_selector_returns_a_vector_slicer_with_a_twin(spark, tmp_path):
    from pyspark.ml.feature import VectorAssembler, VectorSlicer

    from sparkpipe.features.stages import ImportanceSelector

    rows = [(float(i % 2), float((i * 7) % 5), float(i % 2) * 3.0 + (i % 3), 1.0) for i in range(60)]
    df = spark.createDataFrame(rows, "label double, noise double, signal double, const double")
    pipe = Pipeline(
        stages=[
            VectorAssembler(inputCols=["noise", "signal", "const"], outputCol="raw"),
            ImportanceSelector(featuresCol="raw", outputCol="top", labelCol="label", k=1, numTrees=5, seed=1),
        ]
    )
    model = pipe.fit(df)
    slicer = model.stages[-1]
    assert isinstance(slicer, VectorSlicer) and list(slicer.getIndices()) == [1]
    assert_parity(_reload(model, tmp_path, "topk"), df.drop("label"), tmp_path, columns=["top"])


def test_profile_has_quantiles(spark):
    from sparkpipe.features import profile_frame

    df = spark.createDataFrame([(float(i), None if i % 4 == 0 else i) for i in range(101)], "x double, n int")
    prof = profile_frame(df)["columns"]
    assert prof["x"]["quantiles"]["p50"] == 50.0 and prof["x"]["quantiles"]["p01"] == 1.0
    assert set(prof["n"]["quantiles"]) == {"p01", "p05", "p25", "p50", "p75", "p95", "p99"}
    assert prof["x"]["std"] == pytest.approx(29.3002, rel=1e-4)


def test_compiled_twins_reject_nothing_on_full_plan(spark, tmp_path):
    """A plan with every v2 step (hashing and text included) compiles and matches Spark end to end."""
    from sparkpipe.config import FeaturesConfig
    from sparkpipe.features import build_feature_stages

    rows = []
    for i in range(60):
        rows.append(
            (
                f"city{i % 13}" if i % 11 else None,
                ["basic", "pro", "max"][i % 3],
                None if i % 9 == 0 else float(i) * 1.5,
                float(i % 4),
                dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=7 * i),
                dt.datetime(2024, 1, 2, tzinfo=UTC) + dt.timedelta(hours=5 * i),
                None
                if i % 8 == 0
                else f"customer {i} reported slow internet and billing issue number {i % 5}",
                f"grp{i % 4}",
                float(i % 2),
            )
        )
    schema = (
        "city string, plan string, spend double, calls double, start_ts timestamp, end_ts timestamp, "
        "notes string, grp string, y double"
    )
    train = spark.createDataFrame(rows, schema)
    cfg = FeaturesConfig.model_validate(
        {
            "target": "y",
            "text": {"columns": ["notes"], "num_features": 64, "min_doc_freq": 1},
            "time_features": {"cyclic": True, "elapsed": [{"start": "start_ts", "end": "end_ts", "unit": "hours"}]},
            "missing_values": {"strategy": "mean", "add_indicator": True},
            "outliers": {"method": "zscore", "threshold": 2.0, "action": "flag"},
            "ratios": {"numerator_cols": ["spend"], "denominator_cols": ["calls"], "pairwise_products": True},
            "aggregations": [{"group_cols": ["grp"], "agg_cols": ["spend"], "functions": ["count", "max"]}],
            "categorical_encoding": {"max_onehot_cardinality": 4, "high_cardinality": "hashing", "hash_buckets": 16,
                                     "rare_threshold": 2},
            "scaling": "maxabs",
            "selection": {"variance_threshold": 0.0},
        }
    )  # fmt: skip
    plan = build_feature_stages(train, cfg, "classification")
    names = [type(s).__name__ for s in plan.stages]
    for expected in (
        "FeatureHasher",
        "RegexTokenizer",
        "HashingTF",
        "IDF",
        "GroupAggregator",
        "OutlierHandler",
    ):
        assert expected in names
    model = plan.pipeline().fit(train)
    plan.resolve_feature_names(model)
    assert any(n.startswith("city#h") for n in plan.feature_names)
    assert any(n.startswith("notes#tf") for n in plan.feature_names)
    test = spark.createDataFrame(
        [
            ("city999", "unseen", None, 0.0, None, None, None, "grp_new", 0.0),
            ("city1", "basic", 1000000000.0, 2.0, rows[3][4], rows[3][5], "slow slow internet", "grp1", 1.0),
            *rows[:6],
        ],
        schema,
    ).drop("y")
    compiled, _ = save_and_compile(model, test, tmp_path, plan.input_schema)
    assert compiled is not None
    assert_parity(model, test, tmp_path, columns=[plan.features_col], input_schema=plan.input_schema)
