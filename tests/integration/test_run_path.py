"""One run path (issue 10): the registry moves only when every step of a run succeeded (that ``run``
and ``compare`` publish through the same steps is in tests/integration/test_compare.py). In-process
through ``sparkpipe.cli.main`` on the session SparkSession, one MLflow store per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkpipe.cli import main

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _config(tmp_path: Path, out: str, name: str, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "spark": {"app_name": "sparkpipe-tests", "master": "local[2]"},
        "data": {
            "input_path": "builtin:churn",
            "rows": 600,
            "output_path": str(tmp_path / out),
            "validation_split": 0.2,
            "test_split": 0.2,
            "seed": 11,
        },
        # auto threshold: a value only the shared evaluate step puts into the metadata
        "evaluation": {"report": False, "threshold": "auto", "classification": ["auc_roc", "f1"]},
        "mlflow": {
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "experiment_name": "run-path",
            "registered_model_name": name,
            "log_input_example": False,
        },
        "logging": {"level": "WARNING"},
    }
    for section, values in extra.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_run_failing_after_training_leaves_the_registry_as_it_was(spark, tmp_path, monkeypatch):
    """Registration and the alias move are the last steps of publish: a run that fails in a late step
    (here: writing its record, after explain, model logging and report) registers nothing."""
    from mlflow import MlflowClient

    import sparkpipe.flow.publish

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = _config(tmp_path, "out", "churn_lr", model={"algorithm": "logistic_regression"})
    main(["run", "--config", str(path), "--json"])
    client = MlflowClient(tracking_uri=uri)
    assert str(client.get_model_version_by_alias("churn_lr", "champion").version) == "1"

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sparkpipe.flow.publish, "write_run_outputs", disk_full)
    with pytest.raises(OSError, match="No space left"):
        main(["run", "--config", str(path), "--set", "evaluation.report=true"])

    assert [str(v.version) for v in client.search_model_versions("name = 'churn_lr'")] == ["1"]
    assert str(client.get_model_version_by_alias("churn_lr", "champion").version) == "1"
    # the failed run is recorded as failed, with its model logged but not registered
    [failed] = client.search_runs(
        [client.get_experiment_by_name("run-path").experiment_id],
        filter_string="attributes.status = 'FAILED'",
    )
    assert "model" in {a.path for a in client.list_artifacts(failed.info.run_id)}
