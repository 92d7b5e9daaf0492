"""Which MLflow store a run writes to when several runs share one process (notebooks, tests)."""

from __future__ import annotations

from sparkpipe.config import MlflowConfig
from sparkpipe.tracking import configure, resolve_tracking_uri


def test_a_uri_exported_by_an_earlier_run_does_not_override_the_default(tmp_path, monkeypatch):
    """``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI; the next run with the default
    ``sqlite:///mlflow.db`` must use its own working directory, not the earlier run's store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    assert configure(MlflowConfig()) == f"sqlite:///{first / 'mlflow.db'}"
    monkeypatch.chdir(second)
    assert resolve_tracking_uri(MlflowConfig()) == f"sqlite:///{second / 'mlflow.db'}"


def test_the_users_own_environment_still_wins_over_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'team.db'}")
    assert resolve_tracking_uri(MlflowConfig()) == f"sqlite:///{tmp_path / 'team.db'}"
    other = f"sqlite:///{tmp_path / 'explicit.db'}"
    assert resolve_tracking_uri(MlflowConfig(tracking_uri=other)) == other
