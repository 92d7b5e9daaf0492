"""Model URIs to local model directories: the registry (local reader first, then MLflow) or a run."""

from __future__ import annotations

import logging
from pathlib import Path

from sparkpipe.config import MlflowConfig
from sparkpipe.errors import ModelError
from sparkpipe.tracking.local import LocalRegistryNotApplicable, LocalRegistryReader
from sparkpipe.tracking.registry import Registry
from sparkpipe.tracking.store import configure

log = logging.getLogger(__name__)


def is_model_uri(ref: str) -> bool:
    """True for ``models:/...`` and ``runs:/...`` URIs (a registry or run reference, not a path)."""
    return ref.startswith(("models:/", "runs:/"))


def local_model_dir(
    uri: str,
    cfg: MlflowConfig | None = None,
    cache_dir: str | Path | None = None,
    default_alias: str = "champion",
) -> Path:
    """The local MLflow model directory (``MLmodel`` + ``sparkml/``) of a model URI.

    ``models:/name@alias``, ``models:/name/3``, ``models:/name`` (its ``default_alias``, else the latest
    version) are resolved in the registry of ``cfg`` (default: ``MLFLOW_TRACKING_URI`` or
    ``sqlite:///mlflow.db``) and copied once into the model cache (``cache_dir``, default
    ``.sparkpipe/models/<store>``), reading a local SQLite store without MLflow when possible.
    ``runs:/<run id>/model`` is downloaded with MLflow. A local path is returned as is.
    """
    cfg = cfg or MlflowConfig()
    if not is_model_uri(uri):
        path = Path(uri)
        if not path.exists():
            raise ModelError(
                f"model {uri!r} is neither an existing directory nor a model URI "
                "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model)"
            )
        return path
    cache = Path(cache_dir) if cache_dir else None
    if uri.startswith("models:/"):
        reader = LocalRegistryReader(cfg)
        try:
            ref = reader.resolve(uri, default_alias=default_alias)
            return reader.download(ref, cache_dir=cache)
        except LocalRegistryNotApplicable as exc:
            log.debug("resolving %s through MLflow: %s", uri, exc)
        reg = Registry(cfg)
        return reg.download(reg.resolve(uri, default_alias=default_alias), cache_dir=cache)
    import mlflow.artifacts

    configure(cfg)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as exc:
        raise ModelError(f"cannot download model {uri!r}: {exc}") from exc
