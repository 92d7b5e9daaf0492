"""The full feature-engineering example through ``sparkpipe run``, and sparse vectors at 10k+ slots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sparkpipe.cli import main

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "examples" / "full_features.yaml"


def _generate_wide():
    import importlib.util

    spec = importlib.util.spec_from_file_location("wide_features", ROOT / "benchmarks" / "wide_features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_wide


def test_full_features_example_runs_end_to_end(spark, tmp_path):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["spark"] = {"app_name": "sparkpipe-tests", "master": "local[2]"}
    raw["data"].update({"rows": 1500, "output_path": str(tmp_path / "out")})
    raw["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment_name": "full-features",
                     "registered_model_name": "churn_full_features"}  # fmt: skip
    raw["logging"] = {"level": "WARNING"}
    raw["evaluation"]["report"] = False
    feats = raw["features"]
    for section in ("time_features", "missing_values", "outliers", "ratios", "aggregations",
                    "categorical_encoding", "text", "selection"):  # fmt: skip
        assert feats.get(section), f"the example must use features.{section}"
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(raw))
    main(["run", "--config", str(path), "--json"])

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["metrics"]["validation_auc_roc"] > 0.7
    explain = tmp_path / "out" / "explain"
    table = (explain / "feature_importance.csv").read_text().splitlines()
    assert table[0] == "rank,column,importance,slots" and len(table) > 3
    assert (explain / "feature_importance.png").stat().st_size > 1000
    detail = json.loads((explain / "feature_importance.json").read_text())
    assert detail["kind"] == "coefficients"
    assert len({c["column"] for c in detail["columns"]}) == len(detail["columns"])  # aggregated per source

    from mlflow.tracking import MlflowClient

    from sparkpipe.scoring.compile import compile_pipeline, unsupported_stages

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    arts = {a.path for a in client.list_artifacts(run["run_id"], "explain")}
    assert {"explain/feature_importance.csv", "explain/feature_importance.png"} <= arts
    import mlflow.artifacts

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{run['model_uri']}",
            dst_path=str(tmp_path / "dl"),
            tracking_uri=client.tracking_uri,
        )
    )
    meta = yaml.safe_load((local / "MLmodel").read_text())["metadata"]["sparkpipe"]
    assert "quantiles" in meta["profile"]["columns"]["monthly_charges"]
    assert unsupported_stages(local) == []  # every stage of the full plan has a NumPy twin
    compiled = compile_pipeline(local)
    record = {
        "signup_ts": "2023-01-05 10:00:00", "last_login_ts": "2024-06-20 03:00:00", "age": 70, "is_senior": True,
        "plan": "basic", "region": None, "payment_method": "electronic_check", "tenure_months": 2,
        "monthly_charges": 999.0, "total_charges": None, "support_calls": 6,
        "support_notes": "repeated complaints about dropped calls", "customer_id": "x",
    }  # fmt: skip
    out = compiled.predict([record])
    assert 0.0 <= out[0]["probability"][1] <= 1.0


def test_ten_thousand_sparse_features_train_without_densifying(spark):
    """10k+ slots (hashed text + numeric columns): vectors stay sparse through scaling into LR."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.linalg import SparseVector

    from sparkpipe.config import FeaturesConfig
    from sparkpipe.features import build_feature_stages

    df = _generate_wide()(spark, rows=2000, numeric_cols=40, seed=3).cache()
    cfg = FeaturesConfig.model_validate(
        {"target": "y", "text": {"columns": ["doc"], "num_features": 10_000, "idf": True},
         "scaling": "standard", "missing_values": {"strategy": "mean"}}
    )  # fmt: skip
    plan = build_feature_stages(df, cfg, "classification")
    assert len(plan.feature_names) >= 10_000
    scaler = plan.stages[-1]
    assert type(scaler).__name__ == "StandardScaler" and scaler.getWithMean() is False
    lr = LogisticRegression(featuresCol=plan.features_col, labelCol="y", maxIter=20)
    from pyspark.ml import Pipeline

    model = Pipeline(stages=[*plan.stages, lr]).fit(df)
    out = model.transform(df).select(plan.features_col, "probability").limit(50).collect()
    assert all(isinstance(r[0], SparseVector) and r[0].size >= 10_000 for r in out)
    assert max(len(r[0].indices) for r in out) < 200  # a few dozen numeric slots + words, not 10k
    assert model.stages[-1].numFeatures == len(plan.feature_names)
