"""The YAML configuration: a pydantic schema, loading, overrides and clear errors.

Unknown keys are rejected everywhere (``extra="forbid"``). Errors name the key path, the bad value and
what is allowed, and are raised before any SparkSession starts.

The schema accepts the original product README's short format verbatim::

    spark: {app_name: ..., master: local[*]}
    data: {input_path: ..., output_path: ...}
    model: {algorithm: random_forest, hyperparameters: {numTrees: 100, maxDepth: 10}}

and the fuller format (features, tuning, evaluation, mlflow, logging, optimization, deployment).
String values may reference environment variables as ``${NAME}`` or ``${NAME:-default}``, which keeps
secrets and URIs out of the file.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sparkpipe.config_schema import (  # the schema, re-exported: import config classes from here
    TASK_TYPES,
    ABTestConfig,
    AggFunction,
    AggregationConfig,
    CategoricalConfig,
    CompareConfig,
    DataConfig,
    DataFormat,
    DeploymentConfig,
    DriftConfig,
    ElapsedConfig,
    EvaluationConfig,
    FeaturesConfig,
    LoggingConfig,
    MissingValuesConfig,
    MlflowConfig,
    ModelConfig,
    OptimizationConfig,
    OutliersConfig,
    PipelineConfig,
    PredictionLogConfig,
    PromotionConfig,
    RatiosConfig,
    SelectionConfig,
    SparkConfig,
    TaskType,
    TextConfig,
    TimeFeaturesConfig,
    TuningConfig,
    UnivariateSelectionConfig,
)
from sparkpipe.errors import ConfigError

log = logging.getLogger(__name__)


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(
    value: Any, path: str = "", source: str | None = None, expanded: dict[str, str] | None = None
) -> Any:
    """Expand ``${NAME}`` / ``${NAME:-default}`` in every string of ``value``.

    ``expanded`` (when given) collects ``{key path: variable names}`` of every value that took text
    from the environment, so errors about those keys can leave the value out.
    """
    if isinstance(value, dict):
        return {
            k: _expand_env(v, f"{path}.{k}" if path else str(k), source, expanded) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand_env(v, f"{path}[{i}]", source, expanded) for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                if expanded is not None:
                    expanded[path] = ", ".join(filter(None, [expanded.get(path), name]))
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                [(path, f"environment variable {name} is not set; export it or write ${{{name}:-default}}")],
                source,
            )

        return _ENV_RE.sub(sub, value)
    return value


def expand_env(raw: dict[str, Any], source: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """``raw`` with ``${VAR}`` expanded, and ``{key path: variable names}`` of the expanded values.

    Only for trusted text (the operator's YAML file): values that come from an API request are never
    expanded (see :func:`build_config`'s ``expand``).
    """
    expanded: dict[str, str] = {}
    return _expand_env(raw, source=source, expanded=expanded), expanded


def parse_override(expr: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value is YAML, so ``3``, ``true``, ``[1, 2]`` keep their types)."""
    if "=" not in expr:
        raise ConfigError([("--set", f"{expr!r} is not KEY=VALUE, e.g. --set model.algorithm=gbt")])
    key, raw = expr.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(
            [("--set", f"{expr!r} has an empty key; write e.g. model.hyperparameters.maxDepth=5")]
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


Overrides = dict[str, Any] | list[str] | None
"""``--set`` expressions (``["a.b=1"]``) or a mapping of dotted keys to values (``{"a.b": 1}``)."""


def override_items(overrides: Overrides) -> list[tuple[list[str], Any]]:
    """``(key parts, value)`` of each override, from ``KEY=VALUE`` strings or a ``{key: value}`` map."""
    items: list[tuple[list[str], Any]] = []
    if isinstance(overrides, dict):
        for key, value in overrides.items():
            parts = str(key).strip().split(".")
            if any(not p for p in parts):
                raise ConfigError([(str(key), "empty key part; write e.g. model.hyperparameters.maxDepth")])
            items.append((parts, value))
    else:
        items = [parse_override(expr) for expr in overrides or []]
    return items


def apply_overrides(raw: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """Return a copy of ``raw`` with the overrides applied (each value replaces what is at its key).

    Values are used as given: ``${VAR}`` in an override is expanded only by a later
    :func:`build_config` with ``expand=True`` (the command line); the API never expands them.
    """
    out = copy.deepcopy(raw)
    for keys, value in override_items(overrides):
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(
                    [(".".join(keys), f"cannot set a key inside {k!r}, which is not a mapping")]
                )
            node = nxt
        node[keys[-1]] = copy.deepcopy(value)
    return out


def leaf_paths(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted path: value}`` of every leaf of nested mappings (an empty mapping has none)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(leaf_paths(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def changed_paths(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Dotted paths whose value differs between two (nested) mappings, added and removed keys too."""
    a, b = leaf_paths(before), leaf_paths(after)
    return sorted(p for p in a.keys() | b.keys() if a.get(p, _MISSING) != b.get(p, _MISSING))


_MISSING = object()


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif str(item) in {"TimeFeaturesConfig", "RatiosConfig", "TextConfig", "OutliersConfig"}:
            continue  # union branch names add nothing for the reader
        elif str(item).startswith(("function-", "bool", "list[", "dict[")):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk the schema along ``loc`` (minus the last key) and list the keys allowed there."""
    current: Any = model
    for item in loc[:-1]:
        if isinstance(item, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields:
            return None
        field = next((f for n, f in fields.items() if n == item or f.alias == item), None)
        if field is None:
            return None
        current = _first_model(field.annotation)
    fields = getattr(current, "model_fields", None)
    if not fields:
        return None
    return sorted(f.alias or n for n, f in fields.items())


def _first_model(annotation: Any) -> Any:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _related(a: str, b: str) -> bool:
    """True when one key path is the other or lies inside it."""
    return a == b or a.startswith((b + ".", b + "[")) or b.startswith((a + ".", a + "["))


def _other_branch(err: Any, path: str, paths: list[str]) -> bool:
    """A mapping rejected by the scalar branch of a union (``outliers: OutliersConfig | bool``) while
    the mapping branch reports the real problem below the same key: noise for the reader."""
    if not (err["type"].endswith("_type") and isinstance(err.get("input"), dict)):
        return False
    return any(other.startswith(path + ".") or other.startswith(path + "[") for other in paths)


def _problems(exc: ValidationError, from_env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """``(key path, message)`` per error; a value that came from the environment is never shown."""
    from_env = from_env or {}
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    errors = exc.errors()
    paths = [_format_loc(tuple(e.get("loc", ()))) for e in errors]
    for err, path in zip(errors, paths, strict=True):
        loc = tuple(err.get("loc", ()))
        if _other_branch(err, path, paths):
            continue
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(PipelineConfig, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            msg = f"unknown key{hint}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            env = next((v for p, v in from_env.items() if _related(p, path)), None)
            if env is not None:
                msg += f" (the value comes from ${{{env}}} and is not shown)"
            elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        key = f"{path}|{msg}"
        if key not in seen:  # unions repeat the same complaint per branch
            seen.add(key)
            problems.append((path or "<root>", msg))
    return problems


def build_config(
    raw: dict[str, Any] | None,
    source: str | None = None,
    *,
    semantic: bool = True,
    expand: bool = True,
    env_paths: dict[str, str] | None = None,
) -> PipelineConfig:
    """Validate a raw mapping (already YAML-parsed) into a :class:`PipelineConfig`.

    ``semantic=False`` skips the registry-aware checks (algorithm names, hyperparameters against the
    Spark estimators, metrics per task), which import ``pyspark.ml`` (~0.8 s): for processes that only
    read the ``deployment`` and ``mlflow`` sections, such as the prediction service. Types, ranges and
    unknown keys are still checked.

    ``expand=False`` leaves ``${VAR}`` untouched: for mappings holding values from an API request (the
    trusted file's own values are expanded first with :func:`expand_env`, whose key paths are passed as
    ``env_paths``). Errors never show a value that came from the environment.

    Raises
    ------
    ConfigError
        Every problem at once (schema and registry checks), see :func:`check_config`.
    """
    cfg, problems = check_config(raw, source, semantic=semantic, expand=expand, env_paths=env_paths)
    if problems or cfg is None:
        raise ConfigError(problems, source)
    return cfg


def check_config(
    raw: dict[str, Any] | None,
    source: str | None = None,
    *,
    semantic: bool = True,
    expand: bool = True,
    env_paths: dict[str, str] | None = None,
) -> tuple[PipelineConfig | None, list[tuple[str, str]]]:
    """``(config, problems)``: every schema and registry problem of ``raw``, not only the first layer.

    Keys the schema rejects are set aside (their defaults apply) so the registry checks still run on
    the rest; the returned config is that salvaged one (``None`` when nothing validates). Hyperparameters
    of other algorithms are dropped from it with a warning (:func:`~sparkpipe.config_checks.
    drop_foreign_hyperparameters`). ``expand``, ``env_paths``: see :func:`build_config`.
    """
    raw = raw or {}
    if not isinstance(raw, dict):
        return None, [("<root>", f"the config must be a mapping of sections, got {type(raw).__name__}")]
    from_env: dict[str, str] = dict(env_paths or {})
    if expand:
        raw, expanded = expand_env(raw, source)
        from_env.update(expanded)
    cfg, problems = _validate_pruning(raw, from_env)
    if semantic and cfg is not None:
        from sparkpipe.config_checks import drop_foreign_hyperparameters, semantic_problems

        drop_foreign_hyperparameters(cfg)
        reported = {path for path, _ in problems}
        found = [p for p in semantic_problems(cfg) if p[0] not in reported]
        if from_env:
            found = [(p, _redact_env(m, raw, from_env)) for p, m in found]
        problems += found
    return cfg, problems


def _redact_env(message: str, raw: dict[str, Any], from_env: dict[str, str]) -> str:
    """``message`` with every value taken from the environment replaced by ``${NAME}``."""
    leaves: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        else:
            leaves[path] = value

    walk(raw, "")
    for path, names in from_env.items():
        value = leaves.get(path)
        if isinstance(value, str) and value.strip():
            message = message.replace(value, f"${{{names}}}")
    return message


_PRUNE_ROUNDS = 8


def _validate_pruning(
    raw: dict[str, Any], from_env: dict[str, str] | None = None
) -> tuple[PipelineConfig | None, list[tuple[str, str]]]:
    """Validate ``raw``; on schema errors, record them, remove the offending keys and validate again.

    The config that finally validates (bad keys back at their defaults) lets the registry checks run
    on everything else, so every problem of the file is reported in one go. Returns ``(None,
    problems)`` when nothing can be salvaged.
    """
    problems: list[tuple[str, str]] = []
    work = copy.deepcopy(raw)
    for _ in range(_PRUNE_ROUNDS):
        try:
            cfg = PipelineConfig.model_validate(work)
        except ValidationError as exc:
            found = _problems(exc, from_env)
            problems += [p for p in found if p not in problems]
            if not any([_prune(work, _prune_loc(err)) for err in exc.errors()]):
                return None, problems
            continue
        return cfg, problems
    return None, problems


def _prune_loc(err: Any) -> tuple[Any, ...]:
    loc = tuple(err.get("loc", ()))
    return loc[:-1] if err.get("type") == "missing" else loc  # a missing key: drop its parent


_PRUNED = object()


def _prune(raw: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    """Remove the value at the schema location ``loc`` from ``raw`` (union branch names are skipped)."""
    node: Any = raw
    parent: Any = None
    key: Any = None
    for item in loc:
        in_dict = isinstance(node, dict) and item in node
        in_list = isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node)
        if in_dict or in_list:
            parent, key, node = node, item, node[item]
    if parent is None:
        return False
    if isinstance(parent, list):
        parent[key] = _PRUNED
        parent[:] = [v for v in parent if v is not _PRUNED]
    else:
        del parent[key]
    return True


def duplicate_keys(text: str) -> list[str]:
    """One message per key written twice in the same mapping of a YAML text (YAML keeps the last).

    PyYAML accepts duplicates silently; the original project's config writes ``maxIter`` twice under
    ``model.hyperparameters``, so the user is told which line's value is used.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []  # the caller's safe_load reports the syntax error
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                where = f"{path}.{key}" if path else str(key)
                line = key_node.start_mark.line + 1
                if key is not None and key in seen:
                    value = value_node.value if isinstance(value_node, yaml.ScalarNode) else "..."
                    found.append(
                        f"{where} is written twice (lines {seen[key]} and {line}); the last one is used: "
                        f"{key}: {value}"
                    )
                if key is not None:
                    seen[key] = line
                walk(value_node, where)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]")

    walk(root, "")
    return found


def load_yaml(text: str, source: str | None = None) -> Any:
    """``yaml.safe_load`` that warns (one line each) about keys written twice in one mapping."""
    for message in duplicate_keys(text):
        log.warning("%s%s", f"{source}: " if source else "", message)
    return yaml.safe_load(text)


def load_raw(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[dict[str, Any], str | None]:
    """``(raw mapping with overrides applied, source)`` of a YAML config file (``None``: empty)."""
    raw: dict[str, Any] = {}
    source = None
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(
                [
                    (
                        "--config",
                        f"file {str(p)!r} does not exist; pass a YAML file such as config/pipeline_config.yaml",
                    )
                ]
            )
        try:
            raw = load_yaml(p.read_text(), source) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(
                [("<yaml>", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")], source
            ) from None
    return apply_overrides(raw, overrides), source


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, semantic: bool = True
) -> PipelineConfig:
    """Load, override and validate a YAML config file. ``None`` gives the built-in defaults.

    ``semantic``: see :func:`build_config`.
    """
    raw, source = load_raw(path, overrides)
    return build_config(raw, source, semantic=semantic)


__all__ = [
    "TASK_TYPES",
    "ABTestConfig",
    "AggFunction",
    "AggregationConfig",
    "CategoricalConfig",
    "CompareConfig",
    "DataConfig",
    "DataFormat",
    "DeploymentConfig",
    "DriftConfig",
    "ElapsedConfig",
    "EvaluationConfig",
    "FeaturesConfig",
    "LoggingConfig",
    "MissingValuesConfig",
    "MlflowConfig",
    "ModelConfig",
    "OptimizationConfig",
    "OutliersConfig",
    "PipelineConfig",
    "PredictionLogConfig",
    "PromotionConfig",
    "RatiosConfig",
    "SelectionConfig",
    "SparkConfig",
    "TaskType",
    "TextConfig",
    "TimeFeaturesConfig",
    "TuningConfig",
    "UnivariateSelectionConfig",
    "apply_overrides",
    "build_config",
    "changed_paths",
    "check_config",
    "load_config",
]
