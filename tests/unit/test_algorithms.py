"""The algorithm registry: listing, lookups, hyperparameter checks (no JVM), estimator building."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sparkpipe.errors import ConfigError, ModelError, UnknownNameError
from sparkpipe.models.algorithms import (
    ALGORITHMS,
    algorithm_names,
    build_estimator,
    check_hyperparameters,
    check_num_classes,
    check_task,
    get_algorithm,
    get_variants,
    glm_family_for,
    hyperparameter_problems,
    infer_task,
    mlp_layers,
    param_grid_problems,
    requires_nonnegative_features,
    search_space_problems,
    spark_params,
    tasks_for,
    valid_params,
    xgboost_num_workers,
)

EXPECTED = {
    "classification": {
        "logistic_regression",
        "random_forest",
        "gbt",
        "naive_bayes",
        "linear_svc",
        "mlp",
        "decision_tree",
        "xgboost",
    },
    "regression": {"linear_regression", "random_forest", "gbt", "glm", "decision_tree", "xgboost"},
    "clustering": {"kmeans", "bisecting_kmeans", "gmm"},
    "recommendation": {"als"},
}


# ------------------------------------------------------------------------------------------ registry
def test_registry_lists_every_algorithm_per_task() -> None:
    for task, names in EXPECTED.items():
        assert set(algorithm_names(task)) == names
    assert len(ALGORITHMS) == sum(len(v) for v in EXPECTED.values())


@pytest.mark.parametrize("spec", list(ALGORITHMS.values()), ids=lambda s: f"{s.task}-{s.name}")
def test_every_spec_is_consistent(spec) -> None:
    cls = spec.estimator_class()
    assert cls.__name__ == spec.estimator.rsplit(".", 1)[1]
    assert hyperparameter_problems(spec, spec.defaults) == []
    assert search_space_problems(spec, spec.search_space) == []
    assert spec.search_space, "every algorithm has a default search space"
    for name in spec.choices:
        assert name in spark_params(spec)


def test_flags() -> None:
    assert get_algorithm("linear_svc").binary_only
    assert not get_algorithm("linear_svc").supports_probability
    assert get_algorithm("gbt", "classification").binary_only
    assert not get_algorithm("gbt", "regression").binary_only
    assert get_algorithm("naive_bayes").needs_nonnegative_features
    assert not get_algorithm("gmm").supports_sparse
    assert get_algorithm("logistic_regression").supports_probability


def test_shared_names_resolve_per_task() -> None:
    assert tasks_for("random_forest") == ["classification", "regression"]
    clf = get_algorithm("random_forest", "classification")
    reg = get_algorithm("random_forest", "regression")
    assert clf.estimator.endswith("RandomForestClassifier")
    assert reg.estimator.endswith("RandomForestRegressor")
    assert [v.task for v in get_variants("decision_tree")] == ["classification", "regression"]


def test_ambiguous_name_without_task_asks_for_task() -> None:
    with pytest.raises(ConfigError) as exc:
        get_algorithm("gbt")
    assert "model.task_type" in str(exc.value)


def test_aliases() -> None:
    assert get_algorithm("SVM").name == "linear_svc"
    assert get_algorithm("gaussian-mixture").name == "gmm"
    assert get_algorithm("K-Means").name == "kmeans"


def test_unknown_algorithm_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as exc:
        get_algorithm("rndom_forest")
    msg = str(exc.value)
    assert "rndom_forest" in msg and "did you mean 'random_forest'" in msg
    for name in ("logistic_regression", "kmeans", "als"):
        assert name in msg


def test_unknown_algorithm_for_task_lists_that_tasks_names() -> None:
    with pytest.raises(UnknownNameError) as exc:
        get_algorithm("lightgbm", "regression")
    msg = str(exc.value)
    assert "regression algorithm" in msg and "glm" in msg and "kmeans" not in msg


def test_check_task_mismatch() -> None:
    with pytest.raises(ConfigError) as exc:
        check_task("kmeans", "classification")
    msg = str(exc.value)
    assert "model.task_type" in msg and "clustering" in msg and "logistic_regression" in msg
    check_task("gbt", "regression")
    with pytest.raises(UnknownNameError):
        check_task("kmeans", "ranking")


# --------------------------------------------------------------------------------------- infer_task
@pytest.mark.parametrize(
    ("target_type", "n_distinct", "algorithm", "task"),
    [
        (None, None, "kmeans", "clustering"),
        ("double", 1000, "logistic_regression", "classification"),
        (None, None, "als", "recommendation"),
        ("string", 40, "random_forest", "classification"),
        ("boolean", None, "gbt", "classification"),
        ("double", 2, "gbt", "classification"),
        ("int", 5, "decision_tree", "classification"),
        ("int", 500, "decision_tree", "regression"),
        ("double", 37, "random_forest", "regression"),
        ("decimal(10,2)", None, "gbt", "regression"),
    ],
)
def test_infer_task(target_type, n_distinct, algorithm, task) -> None:
    assert infer_task(target_type, n_distinct, algorithm) == task


def test_infer_task_needs_information_for_ambiguous_names() -> None:
    with pytest.raises(ConfigError, match=r"model\.task_type"):
        infer_task(None, None, "random_forest")


# ----------------------------------------------------------------------------------- valid params
def test_valid_params_excludes_column_params() -> None:
    spec = get_algorithm("random_forest", "classification")
    params = valid_params(spec)
    assert {"numTrees", "maxDepth", "impurity", "seed"} <= set(params)
    assert not {"featuresCol", "labelCol", "predictionCol", "probabilityCol", "rawPredictionCol"} & set(
        params
    )
    assert "labelCol" in spark_params(spec)
    assert "hidden_layers" in valid_params(get_algorithm("mlp"))
    assert {"rank", "regParam", "coldStartStrategy"} <= set(valid_params(get_algorithm("als")))
    assert "userCol" not in valid_params(get_algorithm("als"))


def test_valid_params_import_neither_pyspark_ml_nor_xgboost() -> None:
    code = textwrap.dedent(
        """
        import sys
        from sparkpipe.models.algorithms import ALGORITHMS, valid_params, check_hyperparameters
        for spec in ALGORITHMS.values():
            assert valid_params(spec)
            check_hyperparameters(spec, spec.defaults)
        heavy = sorted(m for m in sys.modules if m.startswith(("pyspark.ml", "xgboost", "py4j")))
        assert not heavy, heavy
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("path", sorted({s.estimator for s in ALGORITHMS.values()}))
def test_param_table_matches_the_installed_estimators(path) -> None:
    """The generated table (sparkpipe.models._param_table) is what pyspark/xgboost declare today;
    after an upgrade: python -m sparkpipe.models.params."""
    from sparkpipe.models.params import ESTIMATOR_PARAMS, live_params

    assert ESTIMATOR_PARAMS[path] == live_params(path)


def test_pure_python_converters_agree_with_spark() -> None:
    from pyspark.ml.param import TypeConverters

    from sparkpipe.models.params import CONVERTERS

    values = [
        1,
        1.0,
        1.5,
        -3,
        True,
        "a",
        None,
        [1, 2],
        [1.5, 2],
        ["a", "b"],
        [[1.0], [2]],
        (1, 2),
        [],
        {"a": 1},
    ]
    for name, ours in CONVERTERS.items():
        if name in ("toVector", "toMatrix", "identity"):
            continue
        theirs = getattr(TypeConverters, name)
        for v in values:
            try:
                expected = theirs(v)
            except (TypeError, ValueError):
                with pytest.raises((TypeError, ValueError)):
                    ours(v)
            else:
                assert ours(v) == expected, (name, v)


def test_loading_a_config_imports_no_pyspark_ml() -> None:
    code = textwrap.dedent(
        """
        import sys
        import sparkpipe.config
        assert "pyspark.ml" not in sys.modules
        cfg = sparkpipe.config.load_config("config/pipeline_config.yaml")
        heavy = sorted(m for m in sys.modules if m.startswith(("pyspark.ml", "xgboost", "py4j")))
        assert not heavy, heavy
        print("ok")
        """
    )
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ------------------------------------------------------------------------------ hyperparameter checks
def test_unknown_param_suggests_close_match() -> None:
    spec = get_algorithm("random_forest", "classification")
    with pytest.raises(ConfigError) as exc:
        check_hyperparameters(spec, {"numtrees": 10})
    err = exc.value
    assert err.problems[0][0] == "model.hyperparameters.numtrees"
    msg = err.problems[0][1]
    assert "did you mean 'numTrees'" in msg and "maxDepth" in msg and "featuresCol" in msg


def test_snake_case_param_hint() -> None:
    spec = get_algorithm("logistic_regression")
    problems = hyperparameter_problems(spec, {"reg_param": 0.1})
    assert "regParam" in problems[0][1]


def test_column_param_is_rejected_with_reason() -> None:
    spec = get_algorithm("logistic_regression")
    problems = hyperparameter_problems(spec, {"labelCol": "y"})
    assert problems[0][0] == "model.hyperparameters.labelCol"
    assert "column parameter" in problems[0][1]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("maxDepth", "ten", "must be an integer"),
        ("maxDepth", 10.5, "must be an integer"),
        ("maxDepth", True, "must be an integer"),
        ("numTrees", 0, "out of range"),
        ("bootstrap", "yes", "true or false"),
        ("subsamplingRate", 1.5, "out of range"),
        ("impurity", "gni", "did you mean 'gini'"),
        ("featureSubsetStrategy", "most", "use one of"),
        ("thresholds", "0.5", "a list of numbers"),
    ],
)
def test_value_errors(name, value, fragment) -> None:
    spec = get_algorithm("random_forest", "classification")
    with pytest.raises(ConfigError) as exc:
        check_hyperparameters(spec, {name: value}, "model.hyperparameters")
    path, msg = exc.value.problems[0]
    assert path == f"model.hyperparameters.{name}"
    assert fragment in msg
    assert repr(value) in msg


@pytest.mark.parametrize(
    ("algorithm", "task", "params"),
    [
        (
            "random_forest",
            "classification",
            {"maxDepth": 10.0, "impurity": "Entropy", "featureSubsetStrategy": "0.5"},
        ),
        ("logistic_regression", None, {"regParam": 1, "family": "multinomial", "thresholds": [0.3, 0.7]}),
        ("gbt", "regression", {"lossType": "absolute"}),
        ("naive_bayes", None, {"modelType": "multinomial"}),
        ("mlp", None, {"hidden_layers": [8, 4], "solver": "gd"}),
        ("als", None, {"implicitPrefs": True, "alpha": 40.0, "coldStartStrategy": "nan"}),
    ],
)
def test_valid_values_pass(algorithm, task, params) -> None:
    check_hyperparameters(get_algorithm(algorithm, task), params)


def test_naive_bayes_model_type_is_case_sensitive() -> None:
    problems = hyperparameter_problems(get_algorithm("naive_bayes"), {"modelType": "Gaussian"})
    assert "did you mean 'gaussian'" in problems[0][1]


def test_mlp_hidden_layers_checked() -> None:
    spec = get_algorithm("mlp")
    assert hyperparameter_problems(spec, {"hidden_layers": [8, 0]})
    assert hyperparameter_problems(spec, {"hidden_layers": 8})
    both = hyperparameter_problems(spec, {"hidden_layers": [8], "layers": [4, 8, 2]})
    assert any("not both" in m for _, m in both)


def test_matrix_params_cannot_be_set() -> None:
    problems = hyperparameter_problems(
        get_algorithm("logistic_regression"), {"lowerBoundsOnCoefficients": [[0]]}
    )
    assert "cannot be set" in problems[0][1]


# ---------------------------------------------------------------------------- grids and search spaces
def test_param_grid_problems() -> None:
    spec = get_algorithm("random_forest", "classification")
    assert param_grid_problems(spec, {"numTrees": [10, 20], "maxDepth": [3, 5]}) == []
    problems = dict(param_grid_problems(spec, {"numTrees": [10, "x"], "depth": [1], "maxBins": []}))
    assert "must be an integer" in problems["tuning.param_grid.numTrees[1]"]
    assert "unknown hyperparameter" in problems["tuning.param_grid.depth"]
    assert "non-empty list" in problems["tuning.param_grid.maxBins"]


def test_search_space_problems() -> None:
    spec = get_algorithm("gbt", "classification")
    space = {
        "maxDepth": {"type": "uniform", "low": 2, "high": 8},
        "stepSize": {"type": "loguniform", "low": 0.0, "high": 0.3},
        "maxIter": {"type": "int", "low": 50, "high": 10},
        "subsamplingRate": {"type": "normal", "mean": 0.5},
        "impurity": {"type": "choice", "values": []},
        "maxBins": {"type": "int", "low": 8, "high": 64, "step": 0},
        "minInfoGain": {"type": "uniform", "low": 0.0, "high": 0.1, "extra": 1},
    }
    problems = dict(search_space_problems(spec, space))
    assert "use type: int" in problems["tuning.search_space.maxDepth.type"]
    assert "> 0 for loguniform" in problems["tuning.search_space.stepSize.low"]
    assert "low (50) must be <= high (10)" in problems["tuning.search_space.maxIter"]
    assert "not a search type" in problems["tuning.search_space.subsamplingRate.type"]
    assert "non-empty list" in problems["tuning.search_space.impurity.values"]
    assert ">= 1" in problems["tuning.search_space.maxBins.step"]
    assert "unknown key(s) extra" in problems["tuning.search_space.minInfoGain"]


# ------------------------------------------------------------------------------------ data helpers
def test_requires_nonnegative_features() -> None:
    nb = get_algorithm("naive_bayes")
    assert not requires_nonnegative_features(nb)  # gaussian by default
    assert requires_nonnegative_features(nb, {"modelType": "multinomial"})
    assert requires_nonnegative_features(nb, {"modelType": "bernoulli"})
    assert not requires_nonnegative_features(get_algorithm("logistic_regression"))


def test_glm_family_for() -> None:
    assert glm_family_for(None) == "gaussian"
    assert glm_family_for({"min": 0, "max": 1, "is_integer": True, "n_distinct": 2}) == "binomial"
    assert glm_family_for({"min": 0, "max": 40, "is_integer": True}) == "poisson"
    assert glm_family_for({"min": -3.5, "max": 4.0, "is_integer": False}) == "gaussian"


def test_binary_only_rejects_multiclass_with_fix() -> None:
    with pytest.raises(ConfigError) as exc:
        check_num_classes(get_algorithm("linear_svc"), 3)
    msg = str(exc.value)
    assert "binary" in msg and "3 classes" in msg and "logistic_regression" in msg
    check_num_classes(get_algorithm("linear_svc"), 2)
    check_num_classes(get_algorithm("logistic_regression"), 5)


def test_mlp_layers() -> None:
    assert mlp_layers({"hidden_layers": [8, 4]}, 10, 3) == [10, 8, 4, 3]
    assert mlp_layers({}, 10, 2) == [10, 32, 16, 2]
    assert mlp_layers({"layers": [10, 5, 3]}, 10, 3) == [10, 5, 3]
    with pytest.raises(ConfigError, match="hidden_layers"):
        mlp_layers({"layers": [9, 5, 3]}, 10, 3)
    with pytest.raises(ModelError, match="num_features"):
        mlp_layers({}, None, 3)


# ------------------------------------------------------------------------------ building (Spark)
@pytest.mark.spark
def test_build_estimator_defaults_and_wiring(spark) -> None:
    rf = build_estimator(
        get_algorithm("random_forest", "classification"),
        {"maxDepth": 4},
        features_col="f",
        label_col="y",
        seed=7,
    )
    assert rf.getNumTrees() == 50 and rf.getMaxDepth() == 4
    assert rf.getFeaturesCol() == "f" and rf.getLabelCol() == "y" and rf.getSeed() == 7

    mlp = build_estimator(get_algorithm("mlp"), {"hidden_layers": [6]}, num_features=4, num_classes=3)
    assert mlp.getLayers() == [4, 6, 3]

    als = build_estimator(get_algorithm("als"), {}, user_col="u", item_col="i", rating_col="r", seed=1)
    assert (als.getUserCol(), als.getItemCol(), als.getRatingCol()) == ("u", "i", "r")
    assert als.getColdStartStrategy() == "drop" and als.getNonnegative() and not als.getImplicitPrefs()

    glm = build_estimator(get_algorithm("glm"), {}, label_stats={"min": 0, "max": 9, "is_integer": True})
    assert glm.getFamily() == "poisson"
    glm2 = build_estimator(get_algorithm("glm"), {"family": "gamma"}, label_stats={"min": 0, "max": 1})
    assert glm2.getFamily() == "gamma"

    nb = build_estimator(get_algorithm("naive_bayes"), {})
    assert nb.getModelType() == "gaussian"

    km = build_estimator(get_algorithm("kmeans"), {"k": 4}, seed=3)
    assert km.getK() == 4 and km.getSeed() == 3

    user_seed = build_estimator(get_algorithm("decision_tree", "regression"), {"seed": 99}, seed=3)
    assert user_seed.getSeed() == 99


@pytest.mark.spark
def test_build_estimator_rejects_bad_inputs(spark) -> None:
    with pytest.raises(ConfigError, match="binary"):
        build_estimator(get_algorithm("gbt", "classification"), {}, num_classes=4)
    with pytest.raises(ConfigError, match="maxDepth"):
        build_estimator(get_algorithm("decision_tree", "classification"), {"maxDepth": "deep"})
    with pytest.raises(ConfigError, match="4096"):
        build_estimator(get_algorithm("glm"), {}, num_features=5000)


# ------------------------------------------------------------------------------------------- xgboost
def test_xgboost_params_are_snake_case_and_checked_without_a_jvm() -> None:
    spec = get_algorithm("xgb", "classification")
    assert spec.name == "xgboost" and spec.estimator == "xgboost.spark.SparkXGBClassifier"
    assert get_algorithm("xgboost", "regression").estimator == "xgboost.spark.SparkXGBRegressor"
    assert spec.defaults["max_depth"] == 6 and spec.defaults["n_estimators"] == 100
    assert spec.defaults["learning_rate"] == 0.3 and spec.defaults["tree_method"] == "hist"
    params = set(valid_params(spec))
    assert {"max_depth", "n_estimators", "learning_rate", "subsample", "missing", "num_workers"} <= params
    assert (
        not {"featuresCol", "labelCol", "qid_col", "base_margin_col", "features_cols", "callbacks"} & params
    )
    check_hyperparameters(
        spec, {"max_depth": 4.0, "subsample": 0.8, "missing": 0.0, "objective": "multi:softprob"}
    )

    problems = dict(
        hyperparameter_problems(
            spec,
            {
                "maxDepth": 3,
                "n_estimator": 10,
                "learning_rate": 1.5,
                "max_depth": "deep",
                "tree_method": "exact",
                "callbacks": [],
                "qid_col": "q",
                "verbose": "yes",
                "objective": "reg:squarederror",
            },
        )
    )
    key = "model.hyperparameters."
    assert "did you mean 'max_depth'" in problems[key + "maxDepth"]
    assert "did you mean 'n_estimators'" in problems[key + "n_estimator"]
    assert "out of range" in problems[key + "learning_rate"]
    assert "must be an integer" in problems[key + "max_depth"]
    assert "use one of: hist, approx, auto" in problems[key + "tree_method"]
    assert "cannot be set" in problems[key + "callbacks"]
    assert "column parameter" in problems[key + "qid_col"]
    assert "true or false" in problems[key + "verbose"]
    assert "binary:logistic" in problems[key + "objective"]
    sparse = hyperparameter_problems(spec, {"enable_sparse_data_optim": True})
    assert "missing: 0.0" in sparse[0][1]
    assert hyperparameter_problems(spec, {"enable_sparse_data_optim": True, "missing": 0}) == []


def test_xgboost_search_space() -> None:
    spec = get_algorithm("xgboost", "regression")
    assert {"n_estimators", "max_depth", "learning_rate"} <= set(spec.search_space)
    problems = dict(
        search_space_problems(
            spec,
            {
                "max_depth": {"type": "uniform", "low": 2, "high": 8},
                "subsample": {"type": "uniform", "low": 0.0, "high": 1.0},
                "n_estimators": {"type": "int", "low": 10, "high": 50},
            },
        )
    )
    assert "use type: int" in problems["tuning.search_space.max_depth.type"]
    assert "out of range" in problems["tuning.search_space.subsample.low"]
    assert "tuning.search_space.n_estimators" not in problems


def test_xgboost_workers_follow_the_parallelism_capped_at_the_task_slots(monkeypatch) -> None:
    """A barrier stage needs every worker in a task slot at once: more workers than slots would wait
    for ever, so the default parallelism is capped at the slots (when the cluster manager tells)."""
    from types import SimpleNamespace

    xgboost_utils = pytest.importorskip("xgboost.spark.utils")
    monkeypatch.setattr(xgboost_utils, "_get_max_num_concurrent_tasks", lambda sc: 2)
    assert xgboost_num_workers(SimpleNamespace(defaultParallelism=4)) == 2  # local[2], parallelism 4
    assert xgboost_num_workers(SimpleNamespace(defaultParallelism=1)) == 1
    monkeypatch.setattr(xgboost_utils, "_get_max_num_concurrent_tasks", lambda sc: 0)  # cannot tell
    assert xgboost_num_workers(SimpleNamespace(defaultParallelism=4)) == 4


@pytest.mark.spark
def test_build_xgboost_estimator(spark) -> None:
    spec = get_algorithm("xgboost", "classification")
    est = build_estimator(spec, {"max_depth": 4.0}, features_col="f", label_col="y", seed=7)
    assert type(est).__name__ == "SparkXGBClassifier"
    assert est.getOrDefault("featuresCol") == "f" and est.getOrDefault("labelCol") == "y"
    assert est.getOrDefault("max_depth") == 4 and isinstance(est.getOrDefault("max_depth"), int)
    assert est.getOrDefault("n_estimators") == 100 and est.getOrDefault("tree_method") == "hist"
    assert est.getOrDefault("random_state") == 7
    # Spark's default parallelism, capped at the task slots (see the test below)
    assert est.getOrDefault("num_workers") == xgboost_num_workers(spark.sparkContext) >= 1
    user = build_estimator(
        get_algorithm("xgboost", "regression"), {"num_workers": 1, "random_state": 1}, seed=7
    )
    assert user.getOrDefault("num_workers") == 1 and user.getOrDefault("random_state") == 1
