"""Config loading and validation: schema errors, registry-aware checks, overrides, env expansion.

None of these tests may start Spark: an autouse fixture makes any attempt to create a SparkContext
fail, and one test proves in a fresh interpreter that validation leaves no JVM behind.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkpipe.config import PipelineConfig, apply_overrides, build_config, load_config
from sparkpipe.config_checks import param_grid_for, search_space_for, semantic_problems
from sparkpipe.errors import ConfigError
from sparkpipe.models.algorithms import get_algorithm

ORIGINAL = {
    "spark": {"app_name": "BigDataMLPipeline", "master": "local[*]"},
    "data": {"input_path": "data/raw/", "output_path": "data/processed/"},
    "model": {"algorithm": "random_forest", "hyperparameters": {"numTrees": 100, "maxDepth": 10}},
}

FULL_YAML = """
spark:
  app_name: churn
  master: local[2]
  driver_memory: 2g
  executor_memory: 1g
  shuffle_partitions: 8
  log_level: ERROR
  ui_enabled: false
  conf: {spark.sql.ansi.enabled: false}
data:
  input_path: builtin:churn
  output_path: output/churn
  format: auto
  options: {header: true}
  rows: 5000
  validation_split: 0.1
  test_split: 0.2
  seed: 7
  quarantine: true
features:
  target: churned
  exclude: [customer_id]
  categorical: [plan]
  text: [notes]
  time_features: {enabled: true, parts: [hour, month], cyclic: true}
  aggregations: [{group_cols: [plan], agg_cols: [monthly_charges], functions: [mean, max]}]
  ratios: {numerator_cols: [total_charges], denominator_cols: [tenure]}
  missing_values: {strategy: median, add_indicator: true}
  outliers: {method: iqr, threshold: 1.5}
  scaling: standard
  categorical_encoding: {max_onehot_cardinality: 20, high_cardinality: hashing, hash_buckets: 256}
  selection: {variance_threshold: 0.0}
model:
  algorithm: gbt
  task_type: classification
  hyperparameters: {maxIter: 30, maxDepth: 4, stepSize: 0.1}
  name: churn_gbt
tuning:
  enabled: true
  method: cross_validation
  search: random
  num_folds: 3
  max_trials: 10
  metric: auc_pr
  param_grid:
    gbt: {maxDepth: [3, 5], stepSize: [0.05, 0.1]}
    random_forest: {numTrees: [50, 100]}
  search_space:
    maxDepth: {type: int, low: 2, high: 8}
    stepSize: {type: loguniform, low: 0.01, high: 0.3}
    subsamplingRate: {type: uniform, low: 0.5, high: 1.0}
    lossType: {type: choice, values: [logistic]}
compare:
  algorithms: [logistic_regression, random_forest, gbt, naive_bayes]
  metric: f1
evaluation:
  classification: [accuracy, precision, recall, f1, f1_macro, auc_roc, auc_pr, log_loss]
  regression: [rmse, mae, r2, mape, explained_variance]
  clustering: [silhouette, davies_bouldin, calinski_harabasz]
  recommendation: [rmse, precision_at_k, ndcg_at_k, map_at_k]
  primary_metric: auc_roc
  k: 5
mlflow:
  tracking_uri: sqlite:///mlflow.db
  experiment_name: churn
  registered_model_name: churn_model
  alias: champion
logging: {level: info}
optimization: {cache_data: true, adaptive: true}
deployment:
  host: 127.0.0.1
  port: 8080
  ab_testing: {enabled: true, challenger_traffic: 0.2}
"""


@pytest.fixture(autouse=True)
def _no_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything under test tries to start a SparkContext or the JVM gateway."""
    from pyspark import SparkContext

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("config validation tried to start Spark")

    monkeypatch.setattr(SparkContext, "_ensure_initialized", classmethod(refuse))


def _problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        build_config(raw)
    return dict(exc.value.problems)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------- valid configs
def test_original_short_format_validates() -> None:
    cfg = build_config(ORIGINAL)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.spark.app_name == "BigDataMLPipeline"
    assert cfg.data.input_path == "data/raw/"
    assert cfg.model.algorithm == "random_forest"
    assert cfg.model.hyperparameters == {"numTrees": 100, "maxDepth": 10}


def test_original_short_format_from_yaml_file(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, yaml.safe_dump(ORIGINAL)))
    assert cfg.model.hyperparameters["numTrees"] == 100


def test_full_format_with_every_section_validates(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, FULL_YAML))
    assert cfg.model.task_type == "classification"
    assert cfg.compare is not None and cfg.compare.metric == "f1"
    assert cfg.tuning.param_grid["gbt"]["maxDepth"] == [3, 5]
    assert cfg.deployment.ab_testing.challenger_traffic == 0.2
    assert cfg.evaluation.k == 5


def test_defaults_validate() -> None:
    assert build_config({}).model.algorithm == "logistic_regression"
    assert load_config(None).evaluation.primary_metric is None


def test_flat_param_grid_and_helpers() -> None:
    cfg = build_config(
        {
            "model": {"algorithm": "random_forest", "task_type": "regression"},
            "tuning": {
                "param_grid": {"numTrees": [10, 20], "maxDepth": [3]},
                "search_space": {"numTrees": {"type": "int", "low": 10, "high": 50, "step": 10}},
            },
        }
    )
    assert param_grid_for(cfg, "random_forest") == {"numTrees": [10, 20], "maxDepth": [3]}
    assert param_grid_for(cfg, "gbt") == {}
    spec = get_algorithm("random_forest", "regression")
    assert search_space_for(cfg, spec) == {"numTrees": {"type": "int", "low": 10, "high": 50, "step": 10}}
    gbt = get_algorithm("gbt", "regression")
    assert search_space_for(cfg, gbt) == gbt.search_space


def test_nested_search_space_per_algorithm() -> None:
    cfg = build_config(
        {
            "model": {"algorithm": "logistic_regression"},
            "tuning": {
                "search_space": {
                    "logistic_regression": {"regParam": {"type": "loguniform", "low": 1e-3, "high": 1}}
                }
            },
        }
    )
    spec = get_algorithm("logistic_regression")
    assert search_space_for(cfg, spec)["regParam"]["type"] == "loguniform"


def test_ambiguous_algorithm_accepts_params_of_either_variant() -> None:
    # thresholds exists only on the classifier; no task_type, so it may still be a classifier
    build_config({"model": {"algorithm": "random_forest", "hyperparameters": {"thresholds": [0.4, 0.6]}}})
    problems = _problems(
        {
            "model": {
                "algorithm": "random_forest",
                "task_type": "regression",
                "hyperparameters": {"thresholds": [0.4, 0.6]},
            }
        }
    )
    assert "model.hyperparameters.thresholds" in problems


# ------------------------------------------------------------------------------------- schema errors
@pytest.mark.parametrize(
    ("raw", "path", "allowed"),
    [
        ({"modle": {}}, "modle", "model"),
        ({"model": {"algorithm": "gbt", "hyperparams": {}}}, "model.hyperparams", "hyperparameters"),
        ({"features": {"missing_values": {"strat": "mean"}}}, "features.missing_values.strat", "strategy"),
        (
            {"deployment": {"ab_testing": {"traffic": 0.5}}},
            "deployment.ab_testing.traffic",
            "challenger_traffic",
        ),
    ],
)
def test_unknown_key_names_path_and_allowed_keys(raw, path, allowed) -> None:
    problems = _problems(raw)
    assert path in problems
    assert "unknown key" in problems[path]
    assert allowed in problems[path]


@pytest.mark.parametrize(
    ("raw", "path", "value"),
    [
        ({"spark": {"executor_cores": "four"}}, "spark.executor_cores", "four"),
        ({"data": {"seed": "abc"}}, "data.seed", "abc"),
        ({"spark": {"master": "local[x]"}}, "spark.master", "local[x]"),
        ({"tuning": {"num_folds": 1}}, "tuning.num_folds", "1"),
        ({"evaluation": {"k": 0}}, "evaluation.k", "0"),
    ],
)
def test_wrong_type_names_path_and_value(raw, path, value) -> None:
    problems = _problems(raw)
    assert path in problems
    assert value in problems[path]


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        build_config(
            {
                "model": {
                    "algorithm": "random_forest",
                    "hyperparameters": {"maxDepth": "ten", "numtrees": 5},
                },
                "evaluation": {"classification": ["accuracy", "acuracy"]},
                "tuning": {"metric": "rmsee"},
            },
            source="pipeline.yaml",
        )
    err = exc.value
    paths = [p for p, _ in err.problems]
    assert paths == [
        "model.hyperparameters.maxDepth",
        "model.hyperparameters.numtrees",
        "evaluation.classification[1]",
        "tuning.metric",
    ]
    assert "pipeline.yaml" in str(err)


# ------------------------------------------------------------------------------ registry-aware errors
def test_unknown_algorithm_lists_valid_names() -> None:
    problems = _problems({"model": {"algorithm": "lightgbm"}})
    msg = problems["model.algorithm"]
    assert "lightgbm" in msg
    for name in ("logistic_regression", "random_forest", "kmeans", "als", "glm"):
        assert name in msg


def test_unknown_algorithm_for_task_lists_that_task() -> None:
    msg = _problems({"model": {"algorithm": "lightgbm", "task_type": "clustering"}})["model.algorithm"]
    assert "clustering" in msg and "gmm" in msg and "logistic_regression" not in msg


def test_algorithm_task_mismatch() -> None:
    msg = _problems({"model": {"algorithm": "kmeans", "task_type": "classification"}})["model.task_type"]
    assert "clustering" in msg and "logistic_regression" in msg


def test_bad_hyperparameter_name_and_type() -> None:
    problems = _problems(
        {
            "model": {
                "algorithm": "logistic_regression",
                "hyperparameters": {"maxiter": 10, "regParam": "a lot"},
            }
        }
    )
    assert "did you mean 'maxIter'" in problems["model.hyperparameters.maxiter"]
    assert "'a lot'" in problems["model.hyperparameters.regParam"]


def test_bad_metric_names() -> None:
    problems = _problems(
        {
            "evaluation": {"regression": ["rmse", "rsme"], "clustering": ["silhouette", "inertia"]},
            "model": {"algorithm": "linear_regression"},
        }
    )
    assert "did you mean 'rmse'" in problems["evaluation.regression[1]"]
    assert "davies_bouldin" in problems["evaluation.clustering[1]"]


def test_metric_aliases_are_accepted() -> None:
    build_config({"evaluation": {"classification": ["AUC", "roc_auc", "logloss"], "primary_metric": "auc"}})


def test_primary_tuning_and_compare_metrics_follow_the_task() -> None:
    problems = _problems(
        {
            "model": {"algorithm": "kmeans"},
            "evaluation": {"primary_metric": "f1"},
            "tuning": {"metric": "davies_bouldin"},
            "compare": {"algorithms": ["gmm", "logistic_regression"], "metric": "accuracy"},
        }
    )
    assert "clustering metric" in problems["evaluation.primary_metric"]
    assert "tuning.metric" not in problems
    assert "compare.metric" in problems
    assert "clustering" in problems["compare.algorithms[1]"]


def test_probability_metric_needs_probability_model() -> None:
    problems = _problems({"model": {"algorithm": "linear_svc"}, "tuning": {"metric": "log_loss"}})
    assert "probabilities" in problems["tuning.metric"]


def test_param_grid_errors_both_formats() -> None:
    nested = _problems(
        {
            "model": {"algorithm": "random_forest", "task_type": "classification"},
            "tuning": {
                "param_grid": {
                    "random_forest": {"numTrees": [10, 2.5]},
                    "kmeans": {"k": [2, 3]},
                    "lgbm": {"x": [1]},
                }
            },
        }
    )
    assert "must be an integer" in nested["tuning.param_grid.random_forest.numTrees[1]"]
    assert "clustering" in nested["tuning.param_grid.kmeans"]
    assert "unknown" in nested["tuning.param_grid.lgbm"]
    not_a_list = _problems({"tuning": {"param_grid": {"random_forest": {"numTrees": 100}}}})
    assert "non-empty list" in not_a_list["tuning.param_grid.random_forest.numTrees"]
    assert len(not_a_list) == 1
    flat = _problems(
        {
            "model": {"algorithm": "gbt", "task_type": "regression"},
            "tuning": {"param_grid": {"numTrees": [10]}},
        }
    )
    assert "unknown hyperparameter 'numTrees'" in flat["tuning.param_grid.numTrees"]


def test_search_space_errors() -> None:
    problems = _problems(
        {
            "model": {"algorithm": "logistic_regression"},
            "tuning": {
                "search_space": {
                    "regParam": {"type": "loguniform", "low": 0, "high": 1},
                    "maxIter": {"type": "int", "low": 10.5, "high": 100},
                    "family": {"type": "choice", "values": ["binomial", "poisson"]},
                    "elasticNetParam": {"type": "gaussian"},
                }
            },
        }
    )
    assert "loguniform" in problems["tuning.search_space.regParam.low"]
    assert "integer" in problems["tuning.search_space.maxIter.low"]
    assert "'poisson'" in problems["tuning.search_space.family.values[1]"]
    assert "uniform" in problems["tuning.search_space.elasticNetParam.type"]


def test_semantic_problems_is_empty_for_valid_config() -> None:
    assert semantic_problems(build_config(ORIGINAL)) == []


# ---------------------------------------------------------------------------------------- overrides
def test_apply_overrides_keeps_yaml_types() -> None:
    raw = apply_overrides(
        ORIGINAL,
        ["model.hyperparameters.maxDepth=5", "spark.ui_enabled=false", "tuning.param_grid.numTrees=[10, 20]"],
    )
    assert raw["model"]["hyperparameters"]["maxDepth"] == 5
    assert raw["spark"]["ui_enabled"] is False
    assert raw["tuning"]["param_grid"]["numTrees"] == [10, 20]
    assert ORIGINAL["model"]["hyperparameters"]["maxDepth"] == 10  # the input is not modified


def test_load_config_with_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, yaml.safe_dump(ORIGINAL))
    cfg = load_config(
        path, ["model.algorithm=gbt", "model.task_type=regression", "model.hyperparameters={maxDepth: 3}"]
    )
    assert cfg.model.algorithm == "gbt"
    assert cfg.model.hyperparameters == {"maxDepth": 3}
    with pytest.raises(ConfigError) as exc:
        load_config(path, ["model.hyperparameters.maxDepth=deep"])
    assert "model.hyperparameters.maxDepth" in str(exc.value) and str(path) in str(exc.value)


def test_override_that_breaks_validation_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, yaml.safe_dump(ORIGINAL))
    with pytest.raises(ConfigError) as exc:
        load_config(path, ["model.algorithm=kmeans", "model.task_type=regression"])
    assert "model.task_type" in str(exc.value)


@pytest.mark.parametrize("expr", ["model.algorithm", "=gbt", "model..algorithm=gbt"])
def test_malformed_override(expr: str) -> None:
    with pytest.raises(ConfigError, match="--set"):
        apply_overrides({}, [expr])


def test_override_into_a_scalar_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_overrides(ORIGINAL, ["model.algorithm.name=x"])


# ------------------------------------------------------------------------------------ env expansion
def test_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SP_DATA", "/data/raw")
    monkeypatch.delenv("SP_TRACKING", raising=False)
    text = textwrap.dedent(
        """
        data: {input_path: "${SP_DATA}/events.parquet"}
        mlflow: {tracking_uri: "${SP_TRACKING:-sqlite:///local.db}"}
        """
    )
    cfg = load_config(_write(tmp_path, text))
    assert cfg.data.input_path == "/data/raw/events.parquet"
    assert cfg.mlflow.tracking_uri == "sqlite:///local.db"


def test_missing_env_var_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SP_MISSING_VAR", raising=False)
    with pytest.raises(ConfigError) as exc:
        build_config({"mlflow": {"tracking_uri": "${SP_MISSING_VAR}"}})
    err = exc.value
    assert err.problems[0][0] == "mlflow.tracking_uri"
    assert "SP_MISSING_VAR" in err.problems[0][1]


# ------------------------------------------------------------------------------------- file errors
def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "model: {algorithm: [gbt\n"))


# ------------------------------------------------------------------------------------------ no JVM
def test_validation_starts_no_spark_in_a_fresh_interpreter(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL_YAML)
    code = textwrap.dedent(
        f"""
        from pyspark import SparkContext
        from sparkpipe.config import load_config, build_config
        from sparkpipe.errors import ConfigError
        load_config({str(path)!r})
        try:
            build_config({{"model": {{"algorithm": "gbt", "hyperparameters": {{"maxDepth": "x"}}}}}})
        except ConfigError:
            pass
        assert SparkContext._active_spark_context is None
        assert SparkContext._gateway is None
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_structural_load_skips_registry_checks_but_not_schema(tmp_path: Path) -> None:
    """``semantic=False`` (what ``sparkpipe serve`` uses) still refuses bad types and unknown keys, does not
    judge hyperparameters, and imports no pyspark."""
    bad_param = tmp_path / "bad_param.yaml"
    bad_param.write_text(
        yaml.safe_dump({"model": {"algorithm": "logistic_regression", "hyperparameters": {"maxiter": 1}}})
    )
    with pytest.raises(ConfigError, match="maxIter"):
        load_config(bad_param)
    code = textwrap.dedent(
        f"""
        import sys
        from sparkpipe.config import load_config
        cfg = load_config({str(bad_param)!r}, ["deployment.port=9001"], semantic=False)
        assert cfg.deployment.port == 9001
        assert not [m for m in sys.modules if m.startswith("pyspark")], "pyspark was imported"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    bad_type = tmp_path / "bad_type.yaml"
    bad_type.write_text(yaml.safe_dump({"deployment": {"port": "eighty"}, "modle": {}}))
    with pytest.raises(ConfigError) as err:
        load_config(bad_type, semantic=False)
    assert "deployment.port" in str(err.value) and "modle" in str(err.value)


# ------------------------------------------------------------- overrides as a mapping; env never shown
def test_mapping_overrides_and_changed_paths() -> None:
    from sparkpipe.config import changed_paths

    raw = apply_overrides(ORIGINAL, {"model.hyperparameters.maxDepth": 3, "features": {"scaling": "minmax"}})
    assert raw["model"]["hyperparameters"] == {"numTrees": 100, "maxDepth": 3}
    assert raw["features"] == {"scaling": "minmax"}
    before = build_config(ORIGINAL).model_dump(mode="json", by_alias=True)
    after = build_config(apply_overrides(ORIGINAL, {"logging": {"file": "x.log"}})).model_dump(
        mode="json", by_alias=True
    )
    assert changed_paths(before, after) == ["logging.file"]
    with pytest.raises(ConfigError, match="empty key part"):
        apply_overrides({}, {"model..algorithm": "gbt"})


def test_values_from_the_environment_are_never_shown_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SP_SECRET", "AKIA-SECRET-1")
    for raw in (
        {"features": {"scaling": "${SP_SECRET}"}},  # schema error
        {"evaluation": {"classification": ["${SP_SECRET}"]}},  # registry-aware error
        {"model": {"hyperparameters": {"maxIter": "${SP_SECRET}"}}},
    ):
        with pytest.raises(ConfigError) as exc:
            build_config(raw)
        assert "AKIA-SECRET-1" not in str(exc.value), str(exc.value)
        assert "SP_SECRET" in str(exc.value)
    # expand=False keeps request text literal: nothing is looked up
    cfg = build_config({"features": {"target": "${SP_SECRET}"}}, expand=False)
    assert cfg.features.target == "${SP_SECRET}"


# ------------------------------------------------------- the original project's habits (issue 12)
def test_enabled_keys_are_accepted_and_false_switches_the_section_off() -> None:
    on = build_config(
        {
            "features": {
                "outliers": {"enabled": True, "threshold": 3.0},
                "time_features": {"enabled": True},
                "aggregations": {"enabled": True, "group_cols": ["region"], "agg_cols": ["x"]},
                "ratios": {"enabled": True, "numerator_cols": ["a"], "denominator_cols": ["b"]},
                "missing_values": {"enabled": True, "strategy": "mean"},
                "text": {"enabled": True, "columns": ["notes"]},
                "selection": {"enabled": True, "variance_threshold": 0.0},
                "categorical_encoding": {"enabled": True},
            }
        }
    ).features
    assert on.outliers.method == "iqr" and on.outliers.threshold == 3.0  # enabled without a method
    assert len(on.aggregations) == 1 and on.ratios is not None and on.text is not None
    assert on.selection is not None and on.missing_values.strategy == "mean"
    off = build_config(
        {
            "features": {
                "outliers": {"enabled": False, "method": "zscore"},
                "time_features": {"enabled": False},
                "aggregations": [{"enabled": False}, {"group_cols": ["region"], "functions": ["count"]}],
                "ratios": {"enabled": False, "numerator_cols": ["a"], "denominator_cols": ["b"]},
                "missing_values": {"enabled": False, "strategy": "mean"},
                "text": {"enabled": False, "columns": ["notes"]},
                "selection": {"enabled": False, "top_k_importance": 5},
            }
        }
    ).features
    assert off.outliers.method == "none" and off.time_features.enabled is False
    assert [a.group_cols for a in off.aggregations] == [["region"]]
    assert off.ratios is None and off.text is None and off.selection is None
    assert off.missing_values.strategy == "none"
    problems = _problems({"features": {"categorical_encoding": {"enabled": False}}})
    assert "features.exclude" in problems["features.categorical_encoding.enabled"]
    problems = _problems({"features": {"ratios": {"enabled": "sometimes"}}})
    assert "features.ratios.enabled" in problems


def test_hyperparameters_of_other_algorithms_are_ignored_with_one_warning(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sparkpipe.config_checks")
    cfg = build_config(
        {
            "model": {
                "algorithm": "random_forest",
                "hyperparameters": {"numTrees": 100, "maxBins": 32, "regParam": 0.01, "k": 5, "maxIter": 20},
            }
        }
    )
    assert cfg.model.hyperparameters == {"numTrees": 100, "maxBins": 32}
    lines = [r.getMessage() for r in caplog.records if r.name == "sparkpipe.config_checks"]
    assert len(lines) == 1
    for name in ("regParam (", "k (", "maxIter (", "random_forest", "kmeans"):
        assert name in lines[0], lines[0]


def test_a_name_of_no_algorithm_is_still_an_error_with_a_hint() -> None:
    problems = _problems(
        {"model": {"algorithm": "random_forest", "hyperparameters": {"numTres": 10, "k": 3}}}
    )
    assert "did you mean 'numTrees'" in problems["model.hyperparameters.numTres"]
    assert "model.hyperparameters.k" not in problems  # another algorithm's: ignored, not an error
    # this algorithm's own parameter misspelt in another algorithm's style stays an error
    problems = _problems({"model": {"algorithm": "xgboost", "hyperparameters": {"maxDepth": 3}}})
    assert "max_depth" in problems["model.hyperparameters.maxDepth"]


def test_changing_the_algorithm_of_the_default_config_works(capsys, monkeypatch) -> None:
    """README: `sparkpipe run --set model.algorithm=gbt` on the default config (LR hyperparameters)."""
    import sparkpipe.flow.run
    from sparkpipe.cli import main

    seen = {}

    def fake_run(cfg, raw=None, spark=None):  # the config the run would train with
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(sparkpipe.flow.run, "run_pipeline", fake_run)
    default = Path(__file__).resolve().parents[2] / "config" / "pipeline_config.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", str(default), "--set", "model.algorithm=gbt"])
    assert exc.value.code == 0, capsys.readouterr().err
    cfg = seen["cfg"]
    assert cfg.model.algorithm == "gbt"
    assert cfg.model.hyperparameters == {"maxIter": 100}  # gbt has maxIter; regParam, elasticNetParam dropped


def test_duplicate_yaml_keys_are_reported_with_the_value_used(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sparkpipe.config")
    path = _write(
        tmp_path,
        "model:\n  algorithm: random_forest\n  hyperparameters:\n    maxIter: 100\n    numTrees: 10\n"
        "    maxIter: 20\n",
    )
    cfg = load_config(path)
    assert cfg.model.hyperparameters == {"numTrees": 10}  # maxIter is not random forest's
    [line] = [r.getMessage() for r in caplog.records if r.name == "sparkpipe.config"]
    assert "model.hyperparameters.maxIter is written twice (lines 4 and 6)" in line
    assert "maxIter: 20" in line and str(path) in line
