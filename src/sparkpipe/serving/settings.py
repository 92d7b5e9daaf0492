"""Settings of the prediction service (pydantic-settings, environment prefix ``SPARKPIPE_``).

The service is configured from the ``deployment`` and ``mlflow`` sections of the pipeline YAML
(:meth:`ServingSettings.from_config`); any field can then be overridden from the environment, e.g.
``SPARKPIPE_PORT=9000`` or ``SPARKPIPE_MODELS='["churn", "churn@challenger"]'``. The environment wins
over the file so one image can be re-pointed by a deployment without editing YAML.

The settings object is created once per application (:func:`sparkpipe.serving.app.create_app`) and
injected into routes through :func:`get_settings`; there is no module-level global.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sparkpipe.config import (
    ABTestConfig,
    DeploymentConfig,
    DriftConfig,
    MlflowConfig,
    PipelineConfig,
    PredictionLogConfig,
)


class ServingSettings(BaseSettings):
    """Everything the prediction service needs to know.

    Attributes
    ----------
    host, port, workers
        Where uvicorn listens and how many worker processes it runs.
    model_name
        The default model reference, served when a request names no ``model_id``.
    models
        Further model references to load at start-up: ``name`` (its ``champion`` alias, else the
        latest version), ``name@alias`` or ``name/version``.
    api_key
        When set, mutating endpoints require it in ``X-API-Key`` or ``Authorization: Bearer``.
    allowed_data_roots
        Directories that data paths given to the API must resolve into.
    max_body_bytes, max_batch_rows
        Request limits (413 and 422 beyond them).
    jobs_dir
        Where job state (one JSON file per job) and job logs are kept.
    reload_interval_seconds
        How often aliases are polled for hot swaps; ``0`` disables polling.
    tracking_uri, registry_uri
        The MLflow stores models are resolved and downloaded from.
    model_cache_dir
        Local cache of downloaded model versions.
    train_config_path
        The pipeline YAML that ``POST /train`` jobs start from (the file given to ``serve --config``).
    """

    model_config = SettingsConfigDict(env_prefix="SPARKPIPE_", extra="ignore", validate_default=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    model_name: str | None = None
    models: list[str] = Field(default_factory=list)
    default_alias: str = "champion"
    api_key: SecretStr | None = None
    allowed_data_roots: list[str] = Field(default_factory=lambda: ["."])
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_batch_rows: int = Field(default=10_000, ge=1)
    jobs_dir: str = ".sparkpipe/jobs"
    train_config_path: str | None = None
    """The YAML ``POST /train`` starts from when a request names no ``config_path`` (``serve --config``)."""
    max_concurrent_jobs: int = Field(default=1, ge=1)
    reload_interval_seconds: float = Field(default=30.0, ge=0)
    tracking_uri: str = "sqlite:///mlflow.db"
    registry_uri: str | None = None
    model_cache_dir: str = ".sparkpipe/models"
    fallback_master: str = "local[2]"
    fallback_max_batch_rows: int = Field(default=1024, ge=1)
    fallback_batch_wait_ms: float = Field(default=2.0, ge=0)
    config_path: str | None = None
    log_level: str = "INFO"
    shutdown_drain_seconds: float = Field(default=1.0, ge=0, le=60)
    """On SIGTERM, how long idle keep-alive connections stay open to answer requests already sent."""
    shutdown_timeout_seconds: float = Field(default=30.0, gt=0)
    """On SIGTERM, how long requests in progress may take before they are cancelled."""
    ab_testing: ABTestConfig = Field(default_factory=ABTestConfig)
    """``deployment.ab_testing``: champion/challenger routing (changeable at runtime: ``PUT /ab``)."""
    prediction_log: PredictionLogConfig = Field(default_factory=PredictionLogConfig)
    """``deployment.prediction_log``: where and how predictions are logged."""
    drift: DriftConfig = Field(default_factory=DriftConfig)
    """``deployment.drift``: windows and thresholds of drift monitoring."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment wins over values passed in (which come from the YAML file)."""
        return env_settings, init_settings, dotenv_settings, file_secret_settings

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        deployment: DeploymentConfig | PipelineConfig | None = None,
        mlflow: MlflowConfig | None = None,
        **overrides: Any,
    ) -> ServingSettings:
        """Build settings from the pipeline config's ``deployment`` and ``mlflow`` sections.

        Parameters
        ----------
        deployment
            The ``deployment`` section, or a whole :class:`~sparkpipe.config.PipelineConfig` (then
            ``mlflow`` is taken from it too).
        mlflow
            The ``mlflow`` section (tracking and registry URIs).
        **overrides
            Explicit values (e.g. ``host``/``port``/``model_name`` from the command line); ``None``
            values are ignored.

        Returns
        -------
        ServingSettings
        """
        from sparkpipe.tracking import resolve_tracking_uri

        if isinstance(deployment, PipelineConfig):
            mlflow = mlflow or deployment.mlflow
            deployment = deployment.deployment
        dep = deployment or DeploymentConfig()
        mcfg = mlflow or MlflowConfig()
        values: dict[str, Any] = {
            "host": dep.host,
            "port": dep.port,
            "workers": dep.workers,
            "model_name": dep.model_name,
            "models": list(dep.models),
            "allowed_data_roots": list(dep.allowed_data_roots),
            "max_body_bytes": dep.max_body_bytes,
            "max_batch_rows": dep.max_batch_rows,
            "jobs_dir": dep.jobs_dir,
            "reload_interval_seconds": dep.reload_interval_seconds,
            "ab_testing": dep.ab_testing,
            "prediction_log": dep.prediction_log,
            "drift": dep.drift,
            "tracking_uri": resolve_tracking_uri(mcfg),
            "registry_uri": mcfg.registry_uri,
        }
        key = os.environ.get(dep.api_key_env)
        if key:
            values["api_key"] = key
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    # ------------------------------------------------------------------ derived values
    def model_refs(self) -> list[str]:
        """The configured model references, default model first, without duplicates."""
        refs = [self.model_name] if self.model_name else []
        refs += [m for m in self.models if m]
        return list(dict.fromkeys(r.strip() for r in refs if r.strip()))

    def mlflow_config(self) -> MlflowConfig:
        """An :class:`~sparkpipe.config.MlflowConfig` pointing at the configured stores."""
        return MlflowConfig(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def prediction_log_path(self) -> Path:
        """The prediction log's SQLite file: configured, else ``predictions.db`` beside ``jobs_dir``."""
        configured = self.prediction_log.path
        return Path(configured) if configured else Path(self.jobs_dir).parent / "predictions.db"

    def api_key_value(self) -> str | None:
        """The API key in clear, or ``None`` when the mutating endpoints are open."""
        return self.api_key.get_secret_value() if self.api_key else None


def get_settings(request: Request) -> ServingSettings:
    """FastAPI dependency: the settings of the running application."""
    return request.app.state.settings


SettingsDep = Annotated[ServingSettings, Depends(get_settings)]
