"""xgboost (xgboost.spark) end to end: ``sparkpipe run`` on the built-in churn data, the registered model
loaded back through MLflow and compiled into the NumPy plan with Spark's answers; random-search tuning.

Runs the CLI in-process (``sparkpipe.cli.main``) so the session-scoped local[2] SparkSession is reused.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sparkpipe.cli import main

pytest.importorskip("xgboost")

pytestmark = [pytest.mark.spark, pytest.mark.slow]

UTC = dt.UTC


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow-xgboost")


def _run(store: Path, tmp_path: Path, name: str) -> dict[str, Any]:
    cfg = {
        "spark": {"app_name": "sparkpipe-tests", "master": "local[2]"},
        "data": {
            "input_path": "builtin:churn",
            "rows": 2000,
            "output_path": str(tmp_path / "out"),
            "validation_split": 0.0,  # one scored split keeps the run short
            "test_split": 0.25,
        },
        "features": {"target": "churned"},
        # two workers, one per task slot of local[2] (the default follows the session's parallelism,
        # which the test session keeps at 1; tests/unit/test_algorithms.py checks that default)
        "model": {
            "algorithm": "xgboost",
            "hyperparameters": {"n_estimators": 60, "max_depth": 4, "num_workers": 2},
        },
        "evaluation": {"report": False},
        "mlflow": {
            "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
            "experiment_name": "xgboost-tests",
            "registered_model_name": name,
            "log_input_example": False,  # the signature alone carries the input schema
        },
        "logging": {"level": "WARNING"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["run", "--config", str(path), "--json"])
    return json.loads((tmp_path / "out" / "run.json").read_text())


def _request_rows(spark: Any, like: Any) -> Any:
    """Fresh churn rows plus an all-null row and one with unseen categories and extreme numbers."""
    from pyspark.sql.types import StructField, StructType

    from sparkpipe.data.datasets import load_builtin

    fresh = load_builtin(spark, "churn", rows=150, seed=7).select(like.columns)
    extreme = {
        "signup_ts": dt.datetime(2099, 12, 31, tzinfo=UTC),
        "last_login_ts": dt.datetime(1970, 1, 1, tzinfo=UTC),
        "age": 130,
        "is_senior": True,
        "plan": "unseen",
        "region": "mars",
        "payment_method": None,
        "tenure_months": 10_000,
        "monthly_charges": 1e30,
        "total_charges": -5.0,
        "support_calls": 999,
    }
    extreme = {c: extreme.get(c) for c in like.columns}
    nullable = StructType([StructField(f.name, f.dataType, True) for f in like.schema])
    odd = spark.createDataFrame([dict.fromkeys(like.columns), extreme], nullable)
    return fresh.select([fresh[c].cast(t) for c, t in odd.dtypes]).unionByName(odd)


def test_xgboost_run_registers_a_model_the_numpy_plan_scores_identically(spark, store, tmp_path, monkeypatch):
    from sparkpipe.config import MlflowConfig
    from sparkpipe.data.datasets import load_builtin
    from sparkpipe.pipeline import load_spark_model
    from sparkpipe.scoring.compile import compile_pipeline, unsupported_stages
    from sparkpipe.tracking import Registry

    monkeypatch.chdir(tmp_path)
    run = _run(store, tmp_path, "churn_xgboost")
    assert run["metrics"]["test_auc_roc"] >= 0.8, run["metrics"]
    assert run["registered_version"]
    # explain reads the booster's total gain per slot, aggregated per input column
    detail = json.loads((tmp_path / "out" / "explain" / "feature_importance.json").read_text())
    assert detail["kind"] == "feature_importances" and detail["columns"][0]["importance"] > 0
    assert abs(sum(c["importance"] for c in detail["columns"]) - 1.0) < 1e-9

    mcfg = MlflowConfig(tracking_uri=f"sqlite:///{store / 'mlflow.db'}", experiment_name="xgboost-tests")
    model, meta = load_spark_model("models:/churn_xgboost@champion", mcfg)  # Spark, through MLflow
    assert meta.get("task") == "classification"
    xgb_stage = model.stages[-1]
    assert type(xgb_stage).__name__ == "SparkXGBClassifierModel"
    assert xgb_stage.getOrDefault("num_workers") == 2  # trained by two barrier tasks
    assert xgb_stage.getOrDefault("n_estimators") == 60 and xgb_stage.getOrDefault("tree_method") == "hist"

    registry = Registry(mcfg)
    local = registry.download(registry.resolve("churn_xgboost@champion"))
    # the pyfunc flavor scores the booster with the NumPy scorer: neither pyspark nor xgboost is needed
    requirements = (local / "requirements.txt").read_text()
    assert "mlflow==" in requirements and "numpy" in requirements
    assert "pyspark" not in requirements and "xgboost" not in requirements
    assert unsupported_stages(local) == []
    compiled = compile_pipeline(local)  # input schema from the logged signature

    like = load_builtin(spark, "churn", rows=10, seed=1).select([n for n, _ in compiled.input_schema])
    rows = _request_rows(spark, like)
    records = [r.asDict() for r in rows.collect()]
    for rec in records:  # pyspark collects timestamps as naive local time
        for k, v in rec.items():
            if isinstance(v, dt.datetime) and v.tzinfo is None:
                rec[k] = v.astimezone(UTC)
    spark_out = model.transform(rows).collect()
    frame = compiled.transform(compiled.frame_from_records(records))
    for col in ("rawPrediction", "probability", "prediction"):
        want = np.array([r[col].toArray() if hasattr(r[col], "toArray") else [r[col]] for r in spark_out])
        got = np.asarray(frame[col], dtype=np.float64).reshape(want.shape)
        assert np.array_equal(got, want), f"{col}: max diff {np.max(np.abs(got - want))}"  # bit for bit


def test_xgboost_random_search_tuning(spark):
    """Random search over xgboost's default space: two trials on a validation split, best refit."""
    from types import SimpleNamespace

    from pyspark.ml.linalg import Vectors

    from sparkpipe.config import PipelineConfig
    from sparkpipe.models.algorithms import build_estimator, get_algorithm
    from sparkpipe.tuning import tune

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    rows = [(Vectors.dense(v), float(v[0] - v[1] ** 2 + 0.5 * rng.normal() > 0)) for v in x]
    train = spark.createDataFrame(rows, ["features", "label"]).cache()
    cfg = PipelineConfig.model_validate(
        {
            "model": {"algorithm": "xgboost"},
            "tuning": {
                "enabled": True,
                "method": "train_validation_split",
                "search": "random",
                "max_trials": 2,
                "parallelism": 1,
            },
        }
    )
    spec = get_algorithm("xgboost", "classification")
    estimator = build_estimator(spec, {"num_workers": 1}, seed=5)
    model, summary = tune(
        spark, cfg, spec, estimator, train, SimpleNamespace(task="classification", label_labels=None)
    )
    assert summary["search"] == "random" and summary["num_trials"] == 2
    assert summary["num_complete"] == 2, summary["trials"]
    assert set(summary["best_params"]) == set(spec.search_space)
    assert summary["metric"] == "auc_roc" and summary["best_score"] > 0.7
    assert model.getOrDefault("n_estimators") == summary["best_params"]["n_estimators"]
    assert model.getOrDefault("random_state") == 5
