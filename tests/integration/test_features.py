"""Role inference, the v1 feature plan and persistence of the custom stages, on real Spark."""

from __future__ import annotations

import datetime as dt

import pytest

from sparkpipe.config import FeaturesConfig, MissingValuesConfig
from sparkpipe.errors import ConfigError, UnknownNameError

pytestmark = pytest.mark.spark

UTC = dt.UTC
SCHEMA = (
    "customer_id string, plan string, charges double, tenure int, flag boolean, signup_ts timestamp, "
    "const string, note string, tags array<string>, churn string"
)


def _rows(n: int) -> list[tuple]:
    rows = []
    for i in range(n):
        rows.append(
            (
                f"cust-{i:04d}",
                ["basic", "pro", None, "basic", "premium"][i % 5],
                None if i % 6 == 0 else 20.0 + 3.5 * i,
                i % 13,
                [True, False, None][i % 3],
                None if i % 7 == 0 else dt.datetime(2024, 2, 28, 22, tzinfo=UTC) + dt.timedelta(hours=9 * i),
                "same",
                f"customer number {i} wrote a fairly long comment about the service and billing",
                ["x"],
                ["yes", "no", "no"][i % 3],
            )
        )
    return rows


@pytest.fixture(scope="module")
def mixed(spark):
    return spark.createDataFrame(_rows(30), SCHEMA).cache()


@pytest.fixture(scope="module")
def mixed_profile(mixed):
    from sparkpipe.features import profile_frame

    return profile_frame(mixed)


def test_infer_roles_every_role(mixed, mixed_profile):
    from sparkpipe.features import infer_roles

    roles, profile = infer_roles(mixed, FeaturesConfig(target="churn"))
    assert profile == mixed_profile
    assert roles.target == "churn"
    assert roles.numeric == ["charges", "tenure"]
    assert roles.categorical == ["plan"]
    assert roles.boolean == ["flag"]
    assert roles.timestamp == ["signup_ts"]
    assert roles.text == ["note"]
    assert roles.id_like == ["customer_id"]
    assert roles.constant == ["const"]
    assert roles.ignored == ["tags"]
    assert "churn" not in roles.feature_columns
    assert roles.role_of("churn") == "target" and roles.role_of("plan") == "categorical"

    cols = profile["columns"]
    assert profile["row_count"] == 30
    assert cols["charges"]["null_count"] == 5 and cols["charges"]["null_ratio"] == pytest.approx(5 / 30)
    assert cols["charges"]["min"] == 23.5 and cols["charges"]["max"] == 20.0 + 3.5 * 29
    assert cols["plan"]["approx_distinct"] == 3 and cols["plan"]["null_count"] == 6
    assert cols["flag"]["type"] == "boolean" and 0 < cols["flag"]["mean"] < 1
    assert isinstance(cols["signup_ts"]["min"], str)  # JSON friendly
    assert cols["tenure"]["type"] == "int"


def test_config_overrides_win(mixed, mixed_profile):
    from sparkpipe.features import infer_roles

    cfg = FeaturesConfig(
        target="churn",
        categorical=["tenure"],
        exclude=["charges"],
        id_columns=["note"],
        numeric=["flag"],
    )
    roles, _ = infer_roles(mixed, cfg, profile=mixed_profile)
    assert roles.categorical == ["plan", "tenure"]
    assert roles.excluded == ["charges"]
    assert roles.id_like == ["customer_id", "note"]
    assert roles.numeric == ["flag"] and roles.boolean == []

    roles, _ = infer_roles(
        mixed, FeaturesConfig(columns=["plan", "tenure"]), target="churn", profile=mixed_profile
    )
    assert roles.feature_columns == ["plan", "tenure"]
    assert "flag" in roles.excluded

    roles, _ = infer_roles(
        mixed, FeaturesConfig(target="churn"), int_categorical_max=20, profile=mixed_profile
    )
    assert "tenure" in roles.categorical

    with pytest.raises(ConfigError, match="nope"):
        infer_roles(mixed, FeaturesConfig(numeric=["nope"]))
    with pytest.raises(ConfigError, match="cannot be categorical"):
        infer_roles(mixed, FeaturesConfig(categorical=["charges"]))


def _vectors(df, col: str) -> list[list[float]]:
    return [r[col].toArray().tolist() for r in df.select(col).collect()]


def test_plan_fits_transforms_saves_and_reloads(spark, mixed, mixed_profile, tmp_path):
    from pyspark.ml import PipelineModel

    from sparkpipe.features import build_feature_stages

    without_text = build_feature_stages(
        mixed, FeaturesConfig(target="churn"), "classification", profile=mixed_profile
    )
    # free text is recognised but used only when `features.text` is present
    assert "note" in without_text.roles.text
    assert "RegexTokenizer" not in [type(s).__name__ for s in without_text.stages]
    assert "note" not in dict(without_text.input_schema)

    plan = build_feature_stages(
        mixed, FeaturesConfig(target="churn", text={}), "classification", profile=mixed_profile
    )
    names = [type(s).__name__ for s in plan.stages]
    assert [type(s).__name__ for s in plan.label_stages] == ["StringIndexerModel"]
    assert names == [
        "TimeFeatures",
        "CastToDouble",
        "Imputer",
        "CategoricalImputerModel",  # built fitted from the plan's exact category counts
        "StringIndexerModel",
        "OneHotEncoder",
        "CategoricalImputer",  # text: null -> "", tokenize, stop words, TF, IDF
        "RegexTokenizer",
        "StopWordsRemover",
        "HashingTF",
        "IDF",
        "VectorAssembler",
        "StandardScaler",
    ]
    assert plan.label_col == "label" and plan.label_labels == ["no", "yes"]
    assert plan.features_col == "features"
    assert [c for c, _ in plan.input_schema] == ["plan", "charges", "tenure", "flag", "signup_ts", "note"]
    assert dict(plan.input_schema)["tenure"] == "int"
    assert all("churn" not in n for n in plan.feature_names)
    assert plan.feature_names[:4] == [
        "signup_ts_hour",
        "signup_ts_day_of_week",
        "signup_ts_month",
        "signup_ts_is_weekend",
    ]
    ohe = plan.feature_names.index("plan=basic")
    assert plan.feature_names[ohe : ohe + 5] == [
        "plan=basic",
        "plan=__missing__",
        "plan=premium",
        "plan=pro",
        "plan=__unknown",
    ]
    assert plan.feature_names[-1] == "note#tf4095" and plan.feature_sources[-1] == "note"
    assert plan.feature_sources[:4] == ["signup_ts"] * 4

    # the unfitted pipeline (with the custom estimator) persists too
    plan.pipeline().write().overwrite().save(str(tmp_path / "unfitted"))

    model = plan.pipeline().fit(mixed)
    assert plan.resolve_feature_names(model) == plan.feature_names
    test = spark.createDataFrame(
        [
            (
                "cust-x",
                "enterprise",
                None,
                None,
                None,
                None,
                "same",
                "new",
                ["x"],
                "yes",
            ),  # unseen, all missing
            (
                "cust-y",
                None,
                1e5,
                4,
                True,
                dt.datetime(2024, 12, 31, 23, 0, tzinfo=UTC),
                "other",
                "",
                [],
                "no",
            ),
        ],
        SCHEMA,
    )
    out = model.transform(test)
    vecs = _vectors(out, plan.features_col)
    assert all(len(v) == len(plan.feature_names) for v in vecs)
    unknown = plan.feature_names.index("plan=__unknown")
    missing = plan.feature_names.index("plan=__missing__")
    raw = _vectors(out, plan.stages[-1].getInputCol())  # before scaling (a slot never seen has std 0)
    assert raw[0][unknown] == 1.0 and raw[1][missing] == 1.0 and raw[1][unknown] == 0.0

    model.write().overwrite().save(str(tmp_path / "fitted"))
    reloaded = PipelineModel.load(str(tmp_path / "fitted"))
    assert _vectors(reloaded.transform(test), plan.features_col) == vecs
    # at prediction time the target is absent: every stage must cope
    assert _vectors(reloaded.transform(test.drop("churn")), plan.features_col) == vecs


def test_custom_stages_round_trip_inside_pipeline(spark, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    from sparkpipe.features.stages import (
        CastToDouble,
        CategoricalImputer,
        ConstantImputer,
        MissingIndicator,
        TimeFeatures,
    )

    df = spark.createDataFrame(
        [("a", 1, True, "2024-02-29 10:00:00"), (None, None, None, None), ("b", 1, False, "bad")],
        "s string, n int, b boolean, t string",
    )
    stages = [
        TimeFeatures(inputCols=["t"], parts=["hour", "year"], cyclic=True),
        CastToDouble(inputCols=["n", "b"], outputCols=["n_d", "b_d"]),
        ConstantImputer(inputCols=["n_d"], outputCols=["n_f"], fillValue=7.0),
        MissingIndicator(inputCols=["s"], outputCols=["s_m"]),
        CategoricalImputer(inputCols=["s", "n"], outputCols=["s_c", "n_c"], strategy="mode"),
    ]
    model = Pipeline(stages=stages).fit(df)
    model.write().overwrite().save(str(tmp_path / "m"))
    reloaded = PipelineModel.load(str(tmp_path / "m"))
    assert [type(s).__name__ for s in reloaded.stages][-1] == "CategoricalImputerModel"
    assert reloaded.stages[0].getParts() == ["hour", "year"] and reloaded.stages[0].getCyclic()
    assert reloaded.stages[-1].getFillValues() == ["a", "1"]
    assert reloaded.transform(df).collect() == model.transform(df).collect()
    row = reloaded.transform(df).collect()[1]
    assert row["t_hour"] is None and row["n_f"] == 7.0 and row["s_m"] == 1.0 and row["s_c"] == "a"


def test_plan_variants(spark, mixed, mixed_profile):
    from sparkpipe.features import build_feature_stages

    cfg = FeaturesConfig(
        target="churn",
        scaling="standard",
        missing_values=MissingValuesConfig(strategy="constant", fill_value=0, add_indicator=True),
        exclude=["plan", "note"],
    )
    plan = build_feature_stages(mixed, cfg, "classification", nonnegative=True, profile=mixed_profile)
    kinds = [type(s).__name__ for s in plan.stages]
    assert "ConstantImputer" in kinds and "MissingIndicator" in kinds
    assert kinds[-2:] == ["MinMaxScaler", "ClipVector"]  # non-negative: scaled, then clipped into [0, 1]
    assert "charges__missing" in plan.feature_names and "tenure__missing" not in plan.feature_names
    model = plan.pipeline().fit(mixed)
    vecs = _vectors(model.transform(mixed), plan.features_col)
    assert min(min(v) for v in vecs) >= 0.0 and len(vecs[0]) == len(plan.feature_names)
    with_mean = build_feature_stages(mixed, cfg, "clustering", profile=mixed_profile).stages[-1]
    assert with_mean.getWithMean() is True  # all-dense, narrow vector: centred

    clustering = build_feature_stages(
        mixed, FeaturesConfig(), "clustering", label_col="churn", profile=mixed_profile
    )
    assert clustering.label_col is None and "churn" not in dict(clustering.input_schema)
    assert clustering.stages[-1].getWithMean() is False  # one-hot blocks: keep sparsity

    regression = build_feature_stages(
        mixed, FeaturesConfig(target="charges"), "regression", profile=mixed_profile
    )
    assert regression.label_col == "charges" and "charges" not in regression.feature_names

    ratings = spark.createDataFrame(
        [(1, "a", 4.0), (2, "b", 3.0), (1, "b", 5.0)], "user int, item string, rating double"
    )
    rec = build_feature_stages(
        ratings, FeaturesConfig(user_col="user", item_col="item"), "recommendation", label_col="rating"
    )
    assert rec.features_col is None and rec.user_col == "user" and rec.item_col == "item__idx"
    assert rec.rating_col == "rating" and [type(s).__name__ for s in rec.stages] == ["StringIndexer"]

    with pytest.raises(UnknownNameError, match="valid tasks"):
        build_feature_stages(mixed, FeaturesConfig(), "forecasting")
    with pytest.raises(ConfigError, match="needs a target"):
        build_feature_stages(mixed, FeaturesConfig(), "classification")
    with pytest.raises(ConfigError, match="user_col"):
        build_feature_stages(ratings, FeaturesConfig(), "recommendation")


def test_v2_config_errors_name_the_fix(spark):
    """Leaks and impossible combinations are refused with the key path, never silently ignored."""
    import datetime as _dt

    from sparkpipe.features import build_feature_stages
    from sparkpipe.features.auto import V1_STEPS

    t0 = _dt.datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        (
            t0 + _dt.timedelta(hours=i),
            t0 + _dt.timedelta(hours=i, minutes=5 + 3 * i),
            float(5 + 3 * i),
            f"z{i % 3}",
        )
        for i in range(20)
    ]
    trips = spark.createDataFrame(
        rows, "pickup_ts timestamp, dropoff_ts timestamp, trip_duration double, zone string"
    )
    leak = FeaturesConfig.model_validate(
        {"target": "trip_duration", "time_features": {"elapsed": [{"start": "pickup_ts", "end": "dropoff_ts",
                                                                     "unit": "minutes"}]}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match="leaks the label"):
        build_feature_stages(trips, leak, "regression")
    # v1 steps ignore the v2 sections (used to measure v1 against the full set)
    plan = build_feature_stages(trips, leak, "regression", steps=V1_STEPS)
    assert "ElapsedTime" not in [type(s).__name__ for s in plan.stages]
    bad_agg = FeaturesConfig.model_validate(
        {"target": "trip_duration", "aggregations": [{"group_cols": ["zone"], "agg_cols": ["trip_duration"]}]}
    )
    with pytest.raises(ConfigError, match="leak"):
        build_feature_stages(trips, bad_agg, "regression")
    with pytest.raises(ConfigError, match="binary classification"):
        build_feature_stages(
            trips.withColumn("k", trips.zone),
            FeaturesConfig.model_validate(
                {"target": "zone", "categorical_encoding": {"max_onehot_cardinality": 2, "high_cardinality": "target"},
                 "categorical": ["k"], "time_features": False}
            ),
            "classification",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="numeric feature columns"):
        build_feature_stages(
            trips, FeaturesConfig.model_validate({"target": "trip_duration", "outliers": {"method": "zscore",
                                                  "columns": ["zone"]}}), "regression"
        )  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "fill_value", "rare"), [("category", None, 0), ("mode", None, 2), ("constant", "none", 3)]
)
def test_categorical_stages_built_from_counts_equal_fitted_ones(spark, strategy, fill_value, rare):
    """The imputer, rare grouper and indexer are built fitted from the plan's exact counts (one pass
    instead of three); they must equal fitting the estimators: frequency ties broken alphabetically,
    nulls folded into the fill (the mode: most frequent, ties to the smallest), rare values grouped."""
    from pyspark.ml import Pipeline

    from sparkpipe.config import CategoricalConfig
    from sparkpipe.features import build_feature_stages
    from sparkpipe.features.stages import CategoricalImputer, RareCategoryGrouper

    values = ["b", "a", "c", None, "b", "a", "d", "e", "e", "a", "b", None, "f", "c", "1"]
    # two columns with different label counts: pyspark's own from_arrays_of_labels pads them with nulls
    df = spark.createDataFrame(
        [(v, ["gold", "silver"][i % 2], i % 7, float(i)) for i, v in enumerate(values * 3)],
        "city string, tier string, n int, x double",
    )
    cfg = FeaturesConfig(
        target="x",
        scaling="none",
        missing_values=MissingValuesConfig(categorical_strategy=strategy, fill_value=fill_value),
        categorical_encoding=CategoricalConfig(rare_threshold=rare),
    )
    plan = build_feature_stages(df, cfg, "regression")
    kinds = [type(s).__name__ for s in plan.stages]
    assert "StringIndexerModel" in kinds and "StringIndexer" not in kinds
    assert "CategoricalImputer" not in kinds and "RareCategoryGrouper" not in kinds
    prefit = plan.pipeline().fit(df)

    # the same stages as estimators, fitted the usual way
    refit_stages = []
    for stage in plan.stages:
        name = type(stage).__name__
        if name == "CategoricalImputerModel":
            stage = CategoricalImputer(
                inputCols=stage.getInputCols(),
                outputCols=stage.getOutputCols(),
                strategy=stage.getStrategy(),
                fillValue=stage.getFillValue(),
            )
        elif name == "RareCategoryGrouperModel":
            stage = RareCategoryGrouper(
                inputCols=stage.getInputCols(), outputCols=stage.getOutputCols(), minCount=stage.getMinCount()
            )
        elif name == "StringIndexerModel":
            from pyspark.ml.feature import StringIndexer

            stage = StringIndexer(
                inputCols=stage.getInputCols(),
                outputCols=stage.getOutputCols(),
                handleInvalid="keep",
                stringOrderType="frequencyDesc",
            )
        refit_stages.append(stage)
    refit = Pipeline(stages=refit_stages).fit(df)
    by_name = {type(s).__name__: s for s in refit.stages}
    pre = {type(s).__name__: s for s in prefit.stages}
    assert pre["StringIndexerModel"].labelsArray == by_name["StringIndexerModel"].labelsArray
    assert pre["CategoricalImputerModel"].getOrDefault("fillValues") == by_name[
        "CategoricalImputerModel"
    ].getOrDefault("fillValues")
    if rare:
        assert (
            pre["RareCategoryGrouperModel"].getKeptCategories()
            == by_name["RareCategoryGrouperModel"].getKeptCategories()
        )
    cols = [plan.features_col]
    assert _vectors(prefit.transform(df), cols[0]) == _vectors(refit.transform(df), cols[0])
