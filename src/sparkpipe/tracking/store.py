"""Which MLflow store the process talks to: the tracking URI in force and pointing the client at it.

The default store is a SQLite file in the working directory (``sqlite:///mlflow.db``) with artifacts in
``./mlruns``; any tracking server URI works too. ``MLFLOW_TRACKING_URI`` in the environment wins over the
config's default so a deployment can point every command at a shared server.
"""

from __future__ import annotations

import os
from pathlib import Path

from sparkpipe.config import MlflowConfig

_DEFAULT_URI = MlflowConfig.model_fields["tracking_uri"].default


_configured_uri: str | None = None
"""The URI :func:`configure` last set: ``mlflow.set_tracking_uri`` also writes it to the environment."""


def resolve_tracking_uri(cfg: MlflowConfig) -> str:
    """The tracking URI in force: the environment's ``MLFLOW_TRACKING_URI`` when the config kept the
    default, else the config's value. Relative SQLite paths are made absolute.

    ``mlflow.set_tracking_uri`` exports the URI to ``MLFLOW_TRACKING_URI``, so after one run in a
    process (a notebook, the tests) the variable names *that* run's store; a value this module set is
    not the user's choice and never overrides a later config's default.
    """
    uri = cfg.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and uri == _DEFAULT_URI and env != _configured_uri:
        uri = env
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def _default_artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "mlruns").resolve().as_uri()
    return None


def configure(cfg: MlflowConfig) -> str:
    """Point the MLflow client at the configured stores; return the tracking URI."""
    import mlflow

    global _configured_uri
    uri = resolve_tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    _configured_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if cfg.registry_uri:
        mlflow.set_registry_uri(cfg.registry_uri)
    return uri
