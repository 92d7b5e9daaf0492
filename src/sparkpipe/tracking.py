"""The one place that talks to MLflow.

Training code uses the fluent API inside one run (:class:`Tracker`); everything else (the CLI's
``models`` commands, the prediction service) uses :class:`Registry`, a thin wrapper over
``MlflowClient``. Models are served by alias URIs (``models:/name@champion``).

The default store is a SQLite file in the working directory (``sqlite:///mlflow.db``) with artifacts in
``./mlruns``; any tracking server URI works too. ``MLFLOW_TRACKING_URI`` in the environment wins over the
config's default so a deployment can point every command at a shared server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.config import MlflowConfig, PipelineConfig
from sparkpipe.errors import ModelError, SparkpipeError

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
_DEFAULT_URI = MlflowConfig.model_fields["tracking_uri"].default
_MAX_PARAM_LEN = 6000


def resolve_tracking_uri(cfg: MlflowConfig) -> str:
    """The tracking URI in force: the environment's ``MLFLOW_TRACKING_URI`` when the config kept the
    default, else the config's value. Relative SQLite paths are made absolute."""
    uri = cfg.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and uri == _DEFAULT_URI:
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

    uri = resolve_tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    if cfg.registry_uri:
        mlflow.set_registry_uri(cfg.registry_uri)
    return uri


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (lists are kept as JSON)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def _clean_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)[:250]


def pip_requirements() -> list[str]:
    """Explicit requirements for logged models, so MLflow never re-infers the environment."""
    import mlflow
    import pyspark

    return [
        f"pyspark=={pyspark.__version__}",
        f"mlflow=={mlflow.__version__}",
        "pandas<3",
        "numpy",
        "pyarrow",
    ]


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str
    tracking_uri: str
    model_uri: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None
    artifact_uri: str | None = None


class Tracker:
    """One MLflow run per pipeline execution (fluent API, training side only)."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.mcfg = cfg.mlflow
        self.enabled = cfg.mlflow.enabled
        self.info: RunInfo | None = None

    @contextlib.contextmanager
    def run(
        self, run_name: str | None = None, tags: dict[str, str] | None = None, nested: bool = False
    ) -> Iterator[RunInfo | None]:
        """Start (or nest) a run; yields its :class:`RunInfo` (``None`` when tracking is disabled)."""
        if not self.enabled:
            yield None
            return
        import mlflow

        uri = configure(self.mcfg)
        self._ensure_experiment(uri)
        try:
            active = mlflow.start_run(run_name=run_name, tags=tags, nested=nested)
        except Exception as exc:
            raise SparkpipeError(f"could not start an MLflow run at {uri}: {exc}") from exc
        info = RunInfo(
            active.info.run_id, active.info.experiment_id, uri, artifact_uri=active.info.artifact_uri
        )
        if not nested:
            self.info = info
        status = "FINISHED"
        try:
            yield info
        except BaseException:
            status = "FAILED"
            raise
        finally:
            mlflow.end_run(status=status)

    def _ensure_experiment(self, uri: str) -> None:
        import mlflow

        name = self.mcfg.experiment_name
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            location = self.mcfg.artifact_location or _default_artifact_location(uri)
            with contextlib.suppress(Exception):  # a concurrent creator may win the race
                mlflow.create_experiment(name, artifact_location=location)
        mlflow.set_experiment(name)

    # ------------------------------------------------------------------ logging inside a run
    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        import mlflow

        flat = {_clean_key(k): str(v)[:_MAX_PARAM_LEN] for k, v in flatten(params).items() if v is not None}
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow's batch limit
            mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
        if not self.enabled:
            return
        import math

        import mlflow

        clean = {
            _clean_key(prefix + k): float(v)
            for k, v in metrics.items()
            if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
        }
        if clean:
            mlflow.log_metrics(clean, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_dict(obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_text(text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            import mlflow

            p = Path(path)
            if p.is_dir():
                mlflow.log_artifacts(str(p), artifact_path)
            else:
                mlflow.log_artifact(str(p), artifact_path)

    def log_config(self, cfg: PipelineConfig, raw_yaml: str | None = None) -> None:
        """The config as params (flattened) and as a YAML artifact."""
        data = cfg.model_dump(mode="json", by_alias=True)
        self.log_params({k: data[k] for k in ("spark", "data", "model", "tuning") if k in data})
        self.log_text(raw_yaml or cfg.to_yaml(), "config/pipeline_config.yaml")
        self.log_text(cfg.to_yaml(), "config/resolved_config.yaml")

    def log_spark_model(
        self,
        model: PipelineModel,
        input_example: Any = None,
        signature: Any = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Log the fitted PipelineModel with explicit requirements; return its ``runs:/`` URI."""
        if not self.enabled or self.info is None:
            raise SparkpipeError("log_spark_model needs an active tracked run")
        import mlflow.spark

        t0 = time.perf_counter()
        try:
            info = mlflow.spark.log_model(
                model,
                artifact_path=MODEL_ARTIFACT,
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements(),
                metadata=metadata,
            )
        except Exception as exc:
            raise SparkpipeError(f"logging the Spark model to MLflow failed: {exc}") from exc
        uri = getattr(info, "model_uri", None) or f"runs:/{self.info.run_id}/{MODEL_ARTIFACT}"
        self.info.model_uri = uri
        log.info("logged the PipelineModel in %.1fs: %s", time.perf_counter() - t0, uri)
        return uri

    def register(
        self, model_uri: str, name: str, alias: str | None = "champion", tags: dict[str, str] | None = None
    ) -> str:
        """Register ``model_uri`` as a new version of ``name``; point ``alias`` at it. Returns the version."""
        import mlflow

        try:
            mv = mlflow.register_model(model_uri, name, tags=tags)
        except Exception as exc:
            raise SparkpipeError(f"registering model {name!r} failed: {exc}") from exc
        if alias:
            Registry(self.mcfg).set_alias(name, alias, mv.version)
        if self.info is not None:
            self.info.registered_name, self.info.registered_version = name, str(mv.version)
        return str(mv.version)


# ============================================================================ registry (client side)
@dataclass
class ModelRef:
    """A resolved reference to one registered model version."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def model_cache_dir(tracking_uri: str, base: str | Path | None = None) -> Path:
    """Absolute local cache of downloaded model versions for one tracking store.

    ``base`` (default ``$SPARKPIPE_MODEL_CACHE`` or ``.sparkpipe/models``) gets one folder per store, so
    ``name/version`` from two stores never share an entry. Needs no MLflow import.
    """
    import hashlib

    root = Path(base or os.environ.get("SPARKPIPE_MODEL_CACHE", ".sparkpipe/models"))
    return (root / hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]).resolve()


_REF_RE = re.compile(r"^(?:models:/)?(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+|latest))?$")


class Registry:
    """Read and steer the model registry through ``MlflowClient`` (no active run needed)."""

    def __init__(self, cfg: MlflowConfig | None = None):
        from mlflow import MlflowClient

        self.cfg = cfg or MlflowConfig()
        self.tracking_uri = configure(self.cfg)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.cfg.registry_uri)

    def resolve(self, ref: str, default_alias: str = "champion") -> ModelRef:
        """Resolve ``name``, ``name@alias``, ``name/version``, ``name/latest`` or ``models:/...``.

        A bare name means its ``default_alias`` version when that alias exists, else the latest version.
        """
        m = _REF_RE.match(ref.strip())
        if not m:
            raise ModelError(f"model reference {ref!r} is not NAME, NAME@ALIAS or NAME/VERSION")
        name, alias, version = m.group("name"), m.group("alias"), m.group("version")
        from mlflow.exceptions import MlflowException

        try:
            if alias:
                mv = self.client.get_model_version_by_alias(name, alias)
            elif version and version != "latest":
                mv = self.client.get_model_version(name, version)
            else:
                mv = None
                if version is None:
                    with contextlib.suppress(MlflowException):
                        mv = self.client.get_model_version_by_alias(name, default_alias)
                if mv is None:
                    versions = self.client.search_model_versions(f"name='{name}'")
                    if not versions:
                        raise ModelError(self._unknown(name))
                    mv = max(versions, key=lambda v: int(v.version))
        except MlflowException as exc:
            raise ModelError(f"{self._unknown(name)} ({ref!r}: {exc.message})") from None
        return ModelRef(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            source=mv.source,
            aliases=list(getattr(mv, "aliases", []) or []),
            tags=dict(mv.tags or {}),
        )

    def _unknown(self, name: str) -> str:
        names = [m["name"] for m in self.list_models(include_versions=False)]
        known = ", ".join(names) if names else "none registered yet (run `sparkpipe run` first)"
        return f"unknown model {name!r}; registered models: {known}"

    def list_models(self, include_versions: bool = True) -> list[dict[str, Any]]:
        out = []
        for rm in self.client.search_registered_models(max_results=1000):
            entry: dict[str, Any] = {
                "name": rm.name,
                "aliases": dict(getattr(rm, "aliases", {}) or {}),
                "description": rm.description,
                "updated": rm.last_updated_timestamp,
            }
            if include_versions:
                entry["versions"] = [
                    self.version_info(mv)
                    for mv in sorted(
                        self.client.search_model_versions(f"name='{rm.name}'"),
                        key=lambda v: int(v.version),
                        reverse=True,
                    )
                ]
            out.append(entry)
        return sorted(out, key=lambda e: e["name"])

    def version_info(self, mv: Any) -> dict[str, Any]:
        metrics: dict[str, float] = {}
        if mv.run_id:
            with contextlib.suppress(Exception):
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
        return {
            "version": str(mv.version),
            "aliases": list(getattr(mv, "aliases", []) or []),
            "run_id": mv.run_id,
            "status": mv.status,
            "created": mv.creation_timestamp,
            "tags": dict(mv.tags or {}),
            "metrics": metrics,
        }

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def default_cache_dir(self) -> Path:
        return model_cache_dir(self.tracking_uri)

    def download(self, ref: ModelRef, cache_dir: str | Path | None = None) -> Path:
        """Download a model version's artifacts (MLmodel + sparkml/) once; return the local directory.

        Versions are immutable, so ``<cache>/<name>/<version>`` is reused when it is complete.
        """
        import mlflow.artifacts

        root = Path(cache_dir) if cache_dir else self.default_cache_dir()
        dst = (root / ref.name / ref.version).resolve()  # absolute: the JVM resolves paths from its own cwd
        if (dst / "MLmodel").is_file():
            return dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{ref.version}-", dir=dst.parent))
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(tmp))
            src = Path(local)
            if not (src / "MLmodel").is_file():
                found = next(src.rglob("MLmodel"), None)
                if found is None:
                    raise ModelError(f"{ref.uri} has no MLmodel file; is it a model logged by sparkpipe?")
                src = found.parent
            if dst.exists():
                shutil.rmtree(dst)
            os.replace(src, dst)  # atomic publish of a complete download
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dst
