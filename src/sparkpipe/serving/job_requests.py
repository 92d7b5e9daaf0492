"""Validating ``POST /train`` and ``POST /predict/batch`` requests into ``(params, payload)`` for
:meth:`~sparkpipe.serving.jobs.JobManager.submit`: a bad request is a 4xx now, not a failed job later.

A training request's overrides are merged into the base config with
:func:`sparkpipe.config.apply_overrides` (never ``${VAR}``-expanded) and may change only what
:data:`API_OVERRIDABLE` allows. Paths are confined to the allowed data roots when the request comes in;
the job process confines them again when it uses them (:mod:`sparkpipe.serving.jobs`). A batch job
writes only to a new directory or to one carrying :data:`OUTPUT_MARKER` (this service's own output).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkpipe.errors import ConfigError
    from sparkpipe.serving.schemas import ApiError, BatchPredictRequest, TrainRequest
    from sparkpipe.serving.security import PathScrubber
    from sparkpipe.serving.service import ModelService
    from sparkpipe.serving.settings import ServingSettings

READER_OPTIONS = (
    "header", "sep", "delimiter", "quote", "escape", "comment", "encoding", "lineSep", "multiLine",
    "inferSchema", "samplingRatio", "enforceSchema", "nullValue", "nanValue", "emptyValue",
    "dateFormat", "timestampFormat", "ignoreLeadingWhiteSpace", "ignoreTrailingWhiteSpace", "mode",
    "columnNameOfCorruptRecord", "primitivesAsString", "allowComments", "mergeSchema", "pathGlobFilter",
)  # fmt: skip
"""Spark reader options a request may set (``data.options.<name>``): none of them names a path."""

API_OVERRIDABLE: tuple[str, ...] = (
    "model.hyperparameters",
    "model.task_type",
    "model.class_weight",
    "features",
    "tuning",
    "compare",
    "evaluation",
    "optimization",
    "data.format",
    "data.schema",
    "data.version",
    "data.rows",
    "data.sample_fraction",
    "data.validation_split",
    "data.test_split",
    "data.seed",
    "data.quarantine",
    "spark.shuffle_partitions",
    "spark.log_level",
    "mlflow.experiment_name",
    "mlflow.register",
    "mlflow.alias",
    "mlflow.log_input_example",
    "logging.level",
    *(f"data.options.{name}" for name in READER_OPTIONS),
)
"""What a ``POST /train`` request may change in the server's training config (an allow-list, checked
on the merged config). Everything else (paths, stores, Spark master and conf, logging file, deployment)
stays the server's."""


def overridable(path: str) -> bool:
    """True when a request may change the config value at dotted ``path``."""
    return any(path == a or path.startswith((a + ".", a + "[")) for a in API_OVERRIDABLE)


def prepare_train(req: TrainRequest, settings: ServingSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a ``POST /train`` request into ``(params, payload)`` for :meth:`JobManager.submit`.

    The overrides are merged into the base config (the server's ``train_config_path`` or the request's
    ``config_path``) with :func:`sparkpipe.config.apply_overrides`, never ``${VAR}``-expanded, and every
    value they changed must be :func:`overridable`. Paths are confined to the allowed data roots, the
    server's MLflow stores are imposed, and the config is validated here (a bad request is a 4xx now,
    not a failed job later).

    Raises
    ------
    ApiError
        400/403 for paths, 403 for overrides of keys a request may not set, 422 for invalid overrides
        or config problems (naming the key; values taken from the environment are never shown).
    """
    from sparkpipe.config import apply_overrides, build_config, changed_paths
    from sparkpipe.errors import ConfigError
    from sparkpipe.serving.schemas import ApiError
    from sparkpipe.serving.security import PathScrubber, confine_path

    scrub = PathScrubber(settings)
    data_path = confine_path(req.data_path, "data_path", settings, allow_builtin=True)
    raw, raw_yaml, source, from_env = _base_config(req, settings)
    try:
        merged = apply_overrides(raw, req.overrides)
    except ConfigError as exc:
        raise _config_error(exc, scrub, "overrides") from None
    base = _structural(raw, source, from_env, scrub, "config_path")
    after = _structural(merged, source, from_env, scrub, "overrides")
    refused = [
        p
        for p in changed_paths(
            base.model_dump(mode="json", by_alias=True), after.model_dump(mode="json", by_alias=True)
        )
        if not overridable(p)
    ]
    if refused:
        raise ApiError(
            403,
            f"overrides: {', '.join(refused[:5])} cannot be set through the API (paths, stores, Spark "
            "master/conf, logging file and deployment stay the server's); see the README's security "
            "section for what a request may override",
            [(f"overrides.{p}", "not allowed through the API") for p in refused[:20]],
        )
    final = _impose(merged, req, data_path, settings)
    try:
        cfg = build_config(final, source, expand=False, env_paths=from_env)
    except ConfigError as exc:
        raise _config_error(exc, scrub, "config") from None
    params = {
        "algorithm": req.algorithm,
        "data_path": data_path,
        "config_path": req.config_path,
        "overrides": req.overrides,
        "model_name": cfg.registered_model_name(),
    }
    return params, {"config": final, "raw_yaml": raw_yaml, "source": source}


def _base_config(
    req: TrainRequest, settings: ServingSettings
) -> tuple[dict[str, Any], str | None, str | None, dict[str, str]]:
    """``(raw, yaml text, source, env paths)`` of the config a training request starts from.

    The server's own file (``serve --config``) is trusted: its ``${VAR}`` are expanded. A file named by
    the request is request data: taken literally.
    """
    import yaml

    from sparkpipe.config import expand_env
    from sparkpipe.errors import ConfigError
    from sparkpipe.serving.schemas import ApiError
    from sparkpipe.serving.security import confine_path

    server_file = getattr(settings, "train_config_path", None)
    if req.config_path:
        cfg_path, trusted = Path(confine_path(req.config_path, "config_path", settings)), False
    elif server_file:
        cfg_path, trusted = Path(server_file), True
    else:
        return {}, None, None, {}
    try:
        raw_yaml = cfg_path.read_text() if cfg_path.is_file() else None
        raw = yaml.safe_load(raw_yaml) if raw_yaml is not None else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ApiError(
            422,
            f"config_path: not a readable YAML file ({type(exc).__name__})",
            [("config_path", "invalid YAML")],
        ) from None
    if raw_yaml is None:
        raise ApiError(
            400, f"config_path: {req.config_path!r} is not a file", [("config_path", "no such file")]
        )
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ApiError(
            422, "config_path: the YAML must be a mapping of sections", [("config_path", "not a mapping")]
        )
    from_env: dict[str, str] = {}
    if trusted:
        try:
            raw, from_env = expand_env(raw, str(cfg_path))
        except ConfigError as exc:
            raise ApiError(
                500,
                "the server's training config cannot be expanded; see the server log",
                [("config", "server")],
            ) from exc
    return raw, raw_yaml, str(cfg_path), from_env


def _structural(
    raw: dict[str, Any], source: str | None, from_env: dict[str, str], scrub: PathScrubber, field: str
) -> Any:
    """Schema-validate ``raw`` (no registry checks); a problem is a 422 naming the key."""
    from sparkpipe.config import build_config
    from sparkpipe.errors import ConfigError

    try:
        return build_config(raw, source, semantic=False, expand=False, env_paths=from_env)
    except ConfigError as exc:
        raise _config_error(exc, scrub, field) from None


def _config_error(exc: ConfigError, scrub: PathScrubber, field: str) -> ApiError:
    """A :class:`~sparkpipe.errors.ConfigError` as a 422 (no server paths in it)."""
    from sparkpipe.serving.schemas import ApiError

    problems = [(p if p and p != "--set" else field, scrub.text(m)) for p, m in exc.problems]
    prefix = "overrides: " if field == "overrides" else "invalid training config: "
    return ApiError(422, prefix + "; ".join(f"{p}: {m}" for p, m in problems[:5]), problems[:20])


def _impose(
    merged: dict[str, Any], req: TrainRequest, data_path: str, settings: ServingSettings
) -> dict[str, Any]:
    """The merged config with what the request fields and the server decide put in."""
    import copy

    from sparkpipe.serving.security import confine_path

    final = copy.deepcopy(merged)
    for section in ("model", "data", "mlflow"):
        final.setdefault(section, {})
    final["model"]["algorithm"] = req.algorithm
    final["data"]["input_path"] = data_path
    out = final["data"].get("output_path")
    final["data"]["output_path"] = confine_path(str(out) if out else "output", "data.output_path", settings)
    if req.model_name:
        final["mlflow"]["registered_model_name"] = req.model_name
    final["mlflow"]["tracking_uri"] = settings.tracking_uri
    if settings.registry_uri:
        final["mlflow"]["registry_uri"] = settings.registry_uri
    else:
        final["mlflow"].pop("registry_uri", None)
    return final


OUTPUT_MARKER = ".sparkpipe-batch-output.json"
"""Written into every batch output directory last: only such a directory may be overwritten."""


def output_refusal(path: str, mode: str) -> str | None:
    """Why a batch job may not write ``path`` (``None``: it may).

    A new path or an empty directory is fine; an existing output is replaced only with
    ``mode="overwrite"`` and only when it carries :data:`OUTPUT_MARKER` (this service wrote it).
    """
    p = Path(path)
    if p.is_symlink():
        return "is a symbolic link; give the real directory"
    if not p.exists():
        return None
    if not p.is_dir():
        return "exists and is not a directory; choose a new output_path"
    if not any(p.iterdir()):
        return None
    if not (p / OUTPUT_MARKER).is_file():
        return "exists, is not empty and was not written by this service; choose a new output_path"
    if mode != "overwrite":
        return 'exists (an earlier batch output); send "mode": "overwrite" to replace it or choose a new output_path'
    return None


def prepare_batch(
    req: BatchPredictRequest, settings: ServingSettings, service: ModelService
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a ``POST /predict/batch`` request into ``(params, payload)``.

    Both paths are confined to the data roots and may not be a root itself; the output must not
    overlap the input and must be new (or this service's own earlier output with ``mode: overwrite``).
    The model is the version this server serves for ``model_id`` when it is loaded (so batch and online
    answers agree), else whatever the registry resolves it to.
    """
    from sparkpipe.serving.schemas import ApiError
    from sparkpipe.serving.security import confine_path, is_data_root

    input_path = confine_path(req.input_path, "input_path", settings)
    output_path = confine_path(req.output_path, "output_path", settings)
    for field, value, resolved in (
        ("input_path", req.input_path, input_path),
        ("output_path", req.output_path, output_path),
    ):
        if Path(resolved).is_absolute() and is_data_root(resolved, settings):
            raise ApiError(
                400,
                f"{field}: {value!r} is a data root itself; name a file or directory inside it",
                [(field, "is a data root")],
            )
    try:
        exists = Path(input_path).exists()
        refusal = output_refusal(output_path, req.mode) if Path(output_path).is_absolute() else None
    except OSError as exc:
        raise ApiError(
            400, f"a path cannot be used: {exc.strerror}", [("input_path", str(exc.strerror))]
        ) from None
    if not exists:
        raise ApiError(
            400,
            f"input_path: {req.input_path!r} does not exist",
            [("input_path", "no such file or directory")],
        )
    a, b = Path(input_path), Path(output_path)
    if a == b or a.is_relative_to(b) or b.is_relative_to(a):
        raise ApiError(
            400,
            "output_path must not contain, equal or lie inside input_path",
            [("output_path", "overlaps the input")],
        )
    if refusal:
        raise ApiError(409, f"output_path: {req.output_path!r} {refusal}", [("output_path", refusal)])
    model_uri = _batch_model_uri(req, settings, service)
    params = {
        "model_id": req.model_id,
        "model_uri": model_uri,
        "input_path": input_path,
        "output_path": output_path,
        "format": req.format,
        "mode": req.mode,
    }
    payload = {**params, "tracking_uri": settings.tracking_uri, "registry_uri": settings.registry_uri}
    return params, payload


def _batch_model_uri(req: BatchPredictRequest, settings: ServingSettings, service: ModelService) -> str:
    from sparkpipe.errors import ModelError
    from sparkpipe.serving.schemas import ApiError

    try:
        model = service.get(req.model_id)
        return f"models:/{model.name}/{model.version}"
    except ApiError:
        if req.model_id is None:
            raise
    try:
        ref = service.registry.resolve(req.model_id, default_alias=settings.default_alias)
    except ModelError:
        raise ApiError(404, f"unknown model {req.model_id!r}", [("model_id", "unknown model")]) from None
    return f"models:/{ref.name}/{ref.version}"
