"""Training side: one MLflow run per pipeline execution through the fluent API (:class:`Tracker`)."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.config import MlflowConfig, PipelineConfig
from sparkpipe.errors import SparkpipeError
from sparkpipe.tracking.aliases import move_aliases
from sparkpipe.tracking.registry import Registry
from sparkpipe.tracking.store import _default_artifact_location, configure

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
_MAX_PARAM_LEN = 6000


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


def _stage_modules(model: Any) -> set[str]:
    """Top-level modules of every stage class in a (nested) PipelineModel."""
    out: set[str] = set()
    for stage in getattr(model, "stages", None) or []:
        out.add(type(stage).__module__.split(".", 1)[0])
        out |= _stage_modules(stage)
    return out


def pip_requirements(model: Any = None) -> list[str]:
    """Explicit requirements for logged models, so MLflow never re-infers the environment.

    ``xgboost`` (pinned to the installed version) is added when ``model`` holds an xgboost.spark stage:
    loading the model imports it.
    """
    import mlflow
    import pyspark

    reqs = [
        f"pyspark=={pyspark.__version__}",
        f"mlflow=={mlflow.__version__}",
        "pandas<3",
        "numpy",
        "pyarrow",
    ]
    if model is not None and "xgboost" in _stage_modules(model):
        from importlib.metadata import version

        reqs.append(f"xgboost=={version('xgboost')}")
    return reqs


def ensure_experiment(mcfg: MlflowConfig, uri: str) -> str:
    """The id of experiment ``mcfg.experiment_name`` at ``uri``, created (with the configured or
    default artifact location) when missing."""
    import mlflow

    name = mcfg.experiment_name
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location = mcfg.artifact_location or _default_artifact_location(uri)
        with contextlib.suppress(Exception):  # a concurrent creator may win the race
            mlflow.create_experiment(name, artifact_location=location)
        exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        raise SparkpipeError(f"could not create MLflow experiment {name!r} at {uri}")
    return str(exp.experiment_id)


def log_scoring_run(
    mcfg: MlflowConfig, run_name: str, tags: dict[str, Any], metrics: dict[str, float]
) -> str:
    """Record a scoring job (batch predictions) as one finished MLflow run of the configured experiment:
    no model and no artifacts; its tags say which model version scored which input (and Delta table
    version) into which output (and version), its metrics count the rows. Returns the run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = configure(mcfg)
    client = MlflowClient(tracking_uri=uri, registry_uri=mcfg.registry_uri)
    run = client.create_run(
        ensure_experiment(mcfg, uri),
        run_name=run_name,
        tags={k: str(v) for k, v in tags.items() if v is not None},
    )
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    )
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


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

        ensure_experiment(self.mcfg, uri)
        mlflow.set_experiment(self.mcfg.experiment_name)

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
        extra_dirs: dict[str, str | Path] | None = None,
    ) -> str:
        """Log the fitted PipelineModel with explicit requirements; return its ``runs:/`` URI.

        The model has MLflow's ``spark`` flavor and, as its ``python_function`` flavor, the JVM-free
        NumPy plan (:mod:`sparkpipe.pyfunc`); ``extra_dirs`` (name → local directory) are copied into
        the model directory (a recommender's ``recommend/`` index).
        """
        if not self.enabled or self.info is None:
            raise SparkpipeError("log_spark_model needs an active tracked run")
        from sparkpipe import pyfunc

        t0 = time.perf_counter()
        try:
            info = pyfunc.log_model(
                model,
                artifact_path=MODEL_ARTIFACT,
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements(model),
                metadata=metadata,
                extra_dirs=extra_dirs,
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
            run = self.info.run_id if self.info is not None else None
            move_aliases(
                Registry(self.mcfg),
                name,
                {alias: str(mv.version)},
                reason=f"registered by training run {run}" if run else "registered by a training run",
                actor="sparkpipe training run",
            )
        if self.info is not None:
            self.info.registered_name, self.info.registered_version = name, str(mv.version)
        return str(mv.version)
