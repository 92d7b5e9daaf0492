"""The original project's full config file, verbatim (data paths made local), through ``sparkpipe run``.

``tests/fixtures/original_pipeline_config.yaml`` carries the original's habits: ``enabled`` switches in
the feature sections, one hyperparameters block mixing random forest, logistic regression, GBT and
K-Means parameters, and ``maxIter`` written twice. Its data path (``data/raw/customers.csv``) is
written here, in a temporary working directory, by sparkpipe's own churn generator.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from sparkpipe.cli import main
from sparkpipe.config import FeaturesConfig, load_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "original_pipeline_config.yaml"


@pytest.fixture
def original_project(spark, tmp_path, monkeypatch):
    from sparkpipe.data.datasets import generate
    from sparkpipe.data.io import write_dataset

    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    shutil.copy(FIXTURE, tmp_path / "config" / "pipeline_config.yaml")
    write_dataset(generate(spark, "churn", 600, seed=11, num_partitions=2), "data/raw/customers.csv", "csv")
    return tmp_path


def test_original_config_runs_verbatim_to_a_registered_model(original_project, caplog):
    caplog.set_level(logging.WARNING)
    main(["run", "--config", "config/pipeline_config.yaml", "--json"])
    run = json.loads((original_project / "data" / "processed" / "run.json").read_text())
    assert run["registered_name"] and run["registered_version"] == "1"
    assert run["warnings"] == []
    assert run["metrics"]["test_auc_roc"] > 0.6  # 60 test rows: a loose bar
    assert (original_project / "mlflow.db").is_file()

    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    ignored = [m for m in warned if "of other algorithms" in m]
    assert len(ignored) == 1  # one line, naming each ignored parameter
    for name in ("regParam", "k (", "maxIter"):
        assert name in ignored[0]
    twice = [m for m in warned if "written twice" in m]
    assert twice and "maxIter" in twice[0] and "maxIter: 20" in twice[0]

    from sparkpipe.pipeline import load_spark_model

    cfg = load_config("config/pipeline_config.yaml")
    model, meta = load_spark_model(f"models:/{run['registered_name']}/1", cfg.mlflow)
    stages = {type(s).__name__ for s in model.stages}
    # enabled: true sections are really there: outliers, ratios, aggregations, time features
    for fitted in ("OutlierHandlerModel", "SafeRatio", "GroupAggregatorModel", "TimeFeatures"):
        assert fitted in stages, stages
    forest = next(s for s in model.stages if type(s).__name__ == "RandomForestClassificationModel")
    assert forest.getNumTrees == 100 and forest.getOrDefault("maxDepth") == 10
    assert forest.getOrDefault("maxBins") == 32
    assert any(n.startswith("signup_ts") for n in meta["feature_names"])


def test_enabled_false_switches_each_feature_section_off(spark):
    from sparkpipe.data.datasets import load_builtin
    from sparkpipe.features.auto import build_feature_stages

    df = load_builtin(spark, "churn", rows=200, seed=3)
    sections = {
        "time_features": {"enabled": True},
        "aggregations": {"enabled": True, "group_cols": ["region"], "agg_cols": ["monthly_charges"]},
        "ratios": {
            "enabled": True,
            "numerator_cols": ["total_charges"],
            "denominator_cols": ["tenure_months"],
        },
        "outliers": {"enabled": True, "threshold": 3.0},
        "missing_values": {"enabled": True, "strategy": "mean"},
    }
    on = FeaturesConfig.model_validate({"target": "churned", **sections})
    off = FeaturesConfig.model_validate(
        {"target": "churned", **{k: {**v, "enabled": False} for k, v in sections.items()}}
    )

    def stage_names(cfg):
        plan = build_feature_stages(df, cfg, "classification", "churned")
        return [type(s).__name__ for s in plan.stages]

    with_all, without = stage_names(on), stage_names(off)
    for stage in ("OutlierHandler", "SafeRatio", "GroupAggregator", "TimeFeatures", "Imputer"):
        assert stage in with_all, with_all
        assert stage not in without, without
