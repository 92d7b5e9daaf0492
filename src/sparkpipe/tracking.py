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
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.config import MlflowConfig, PipelineConfig
from sparkpipe.core import MODEL_REF_RE as MODEL_REF_RE  # re-exported: the one parser is core.ModelRef
from sparkpipe.core import ModelRef, parse_model_ref
from sparkpipe.errors import ModelError, SparkpipeError

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
_DEFAULT_URI = MlflowConfig.model_fields["tracking_uri"].default
_MAX_PARAM_LEN = 6000


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
        """Log the fitted PipelineModel with explicit requirements; return its ``runs:/`` URI.

        The model has MLflow's ``spark`` flavor and, as its ``python_function`` flavor, the JVM-free
        NumPy plan (:mod:`sparkpipe.pyfunc`).
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


# ============================================================================ registry (client side)
def model_cache_dir(tracking_uri: str, base: str | Path | None = None) -> Path:
    """Absolute local cache of downloaded model versions for one tracking store.

    ``base`` (default ``$SPARKPIPE_MODEL_CACHE`` or ``.sparkpipe/models``) gets one folder per store, so
    ``name/version`` from two stores never share an entry. Needs no MLflow import.
    """
    import hashlib

    root = Path(base or os.environ.get("SPARKPIPE_MODEL_CACHE", ".sparkpipe/models"))
    return (root / hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]).resolve()


CACHE_MARKER = ".sparkpipe-complete.json"
"""Written last into a cached model version: the size and SHA-256 of every file in it."""


def _tree_digest(path: Path) -> dict[str, list[Any]]:
    import hashlib

    out: dict[str, list[Any]] = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = f.relative_to(path).as_posix()
        if rel == CACHE_MARKER:
            continue
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[rel] = [f.stat().st_size, h.hexdigest()]
    return out


def cache_entry_ok(path: Path) -> bool:
    """True when a cached model directory is complete and unchanged since it was published (its
    :data:`CACHE_MARKER` lists exactly the files present, with their sizes and checksums)."""
    import json

    try:
        recorded = json.loads((path / CACHE_MARKER).read_text())
        return (path / "MLmodel").is_file() and recorded.get("files") == _tree_digest(path)
    except (OSError, ValueError, AttributeError):
        return False


def publish_model_dir(root: Path, ref: ModelRef, fetch: Callable[[Path], Path]) -> Path:
    """``<root>/<name>/<version>`` (absolute), filled by ``fetch`` and published atomically.

    An entry that passes :func:`cache_entry_ok` is returned as is (versions are immutable). Anything
    else -- missing, half-copied, truncated or edited since -- is fetched again: ``fetch(tmp)`` writes
    the model somewhere under a fresh temporary directory next to the entry and returns that directory
    (or one above the ``MLmodel`` file); the checksum marker is written into it last and it is moved
    into place with one ``os.replace``, so readers never see a partial copy. The temporary directory is
    always removed.
    """
    dst = (root / ref.name / ref.version).resolve()  # absolute: the JVM resolves paths from its own cwd
    if cache_entry_ok(dst):
        return dst
    if dst.exists():
        log.warning("cached %s is incomplete or damaged; fetching it again", ref.uri)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ref.version}-", dir=dst.parent))
    try:
        src = fetch(tmp)
        if not (src / "MLmodel").is_file():
            found = next(src.rglob("MLmodel"), None)
            if found is None:
                raise ModelError(f"{ref.uri} has no MLmodel file; is it a model logged by sparkpipe?")
            src = found.parent
        (src / CACHE_MARKER).write_text(json.dumps({"uri": ref.uri, "files": _tree_digest(src)}))
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(src, dst)  # atomic publish of a complete copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def discard_cache_entry(path: Path) -> None:
    """Remove a cached model version so the next fetch copies it again."""
    shutil.rmtree(path, ignore_errors=True)


def alias_map(rm: Any) -> dict[str, str]:
    """A registered model's aliases as ``{alias: version}`` with the version as a string (MLflow gives
    ints from some stores and strings from others)."""
    return {str(a): str(v) for a, v in sorted((getattr(rm, "aliases", None) or {}).items())}


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
        name, alias, version = parse_model_ref(ref)
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
                        raise ModelError(self._not_found(name, None, version, ref, "no versions"))
                    # search results carry no aliases: fetch the version itself so they are listed
                    mv = self.client.get_model_version(
                        name, max(versions, key=lambda v: int(v.version)).version
                    )
        except MlflowException as exc:
            raise ModelError(self._not_found(name, alias, version, ref, exc.message)) from None
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

    def _not_found(self, name: str, alias: str | None, version: str | None, ref: str, detail: str) -> str:
        """Why ``ref`` did not resolve: an unknown model, or a known model without that version/alias."""
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(name)
        except MlflowException:
            return f"{self._unknown(name)} ({ref!r}: {detail})"
        versions = sorted(
            (str(v.version) for v in self.client.search_model_versions(f"name='{name}'")), key=int
        )
        have = ", ".join(versions) or "none"
        if alias:
            aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(alias_map(rm).items())) or "none"
            return f"model {name!r} has no alias {alias!r}; its aliases: {aliases} (versions: {have})"
        if version in (None, "latest"):
            return f"model {name!r} has no versions (all deleted?); register one, e.g. with `sparkpipe run`"
        return f"model {name!r} has no version {version}; its versions: {have}"

    def list_models(self, include_versions: bool = True) -> list[dict[str, Any]]:
        """Registered models, newest version first. Versions are strings everywhere: ``"aliases"`` maps
        alias -> version (``{"champion": "1"}``) and each version lists the aliases pointing at it."""
        out = []
        for rm in self.client.search_registered_models(max_results=1000):
            aliases = alias_map(rm)
            entry: dict[str, Any] = {
                "name": rm.name,
                "aliases": aliases,
                "description": rm.description,
                "updated": rm.last_updated_timestamp,
            }
            if include_versions:
                entry["versions"] = [
                    self.version_info(mv, aliases)
                    for mv in sorted(
                        self.client.search_model_versions(f"name='{rm.name}'"),
                        key=lambda v: int(v.version),
                        reverse=True,
                    )
                ]
            out.append(entry)
        return sorted(out, key=lambda e: e["name"])

    def version_info(self, mv: Any, aliases: dict[str, str] | None = None) -> dict[str, Any]:
        """One version as a dict; ``aliases`` (the model's alias -> version map) fills the version's
        aliases, which MLflow's version search leaves empty."""
        metrics: dict[str, float] = {}
        if mv.run_id:
            with contextlib.suppress(Exception):
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
        own = set(getattr(mv, "aliases", []) or [])
        own.update(a for a, v in (aliases or {}).items() if v == str(mv.version))
        return {
            "version": str(mv.version),
            "aliases": sorted(own),
            "run_id": mv.run_id,
            "status": mv.status,
            "created": mv.creation_timestamp,
            "tags": dict(mv.tags or {}),
            "metrics": metrics,
        }

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Low level: point the alias without recording history; use :func:`move_aliases`."""
        self.client.set_registered_model_alias(name, alias, str(version))

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of a registered model (:class:`ModelError` naming the known ones if
        the name is unknown)."""
        from mlflow.exceptions import MlflowException

        try:
            return alias_map(self.client.get_registered_model(name))
        except MlflowException:
            raise ModelError(self._unknown(name)) from None

    def model_tags(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(name).tags or {})
        except MlflowException:
            raise ModelError(self._unknown(name)) from None

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(name, key, value)

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def default_cache_dir(self) -> Path:
        return model_cache_dir(self.tracking_uri)

    def download(self, ref: ModelRef, cache_dir: str | Path | None = None) -> Path:
        """Download a model version's artifacts (MLmodel + sparkml/) once; return the local directory.

        Versions are immutable, so ``<cache>/<name>/<version>`` is reused when it is complete.
        """

        def fetch(tmp: Path) -> Path:
            import mlflow.artifacts

            return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(tmp)))

        return publish_model_dir(Path(cache_dir) if cache_dir else self.default_cache_dir(), ref, fetch)


# ======================================================================= alias moves and their history
HISTORY_TAG_PREFIX = "sparkpipe.alias_move."
"""Registered-model tags holding the alias history: one tag per move, ``<prefix><time_ns>-<n>``."""


@dataclass
class AliasMove:
    """One recorded alias move."""

    time: float
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    actor: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "time_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)),
            "alias": self.alias,
            "from": self.from_version,
            "to": self.to_version,
            "reason": self.reason,
            "actor": self.actor,
        }


_move_lock = threading.Lock()


def move_aliases(
    registry: Registry, name: str, moves: dict[str, str | None], *, reason: str, actor: str
) -> list[AliasMove]:
    """Point each alias of ``moves`` at its version (``None``: delete the alias) and record every move.

    The one function that moves aliases: training runs, ``sparkpipe models promote|rollback``, the
    service's promote endpoints and the A/B promotion all call it. Each move is kept as a tag of the
    registered model (``sparkpipe.alias_move.*``: time, alias, from, to, reason, actor), so the history
    lives in the registry and survives restarts. Several aliases move together (A/B promotion swaps
    ``champion`` and ``challenger``): if one move fails, those already made are put back before the
    error is raised. An alias already at its target is not moved and not recorded.

    Returns
    -------
    list[AliasMove]
        The moves made, in order.
    """
    if not moves:
        return []
    with _move_lock:
        current = registry.aliases(name)
        done: list[AliasMove] = []
        try:
            for alias, version in moves.items():
                before = current.get(alias)
                target = None if version is None else str(version).strip()
                if before == target:
                    continue
                if target is None:
                    registry.delete_alias(name, alias)
                else:
                    registry.set_alias(name, alias, target)
                done.append(AliasMove(time.time(), alias, before, target, reason, actor))
        except Exception as exc:
            for move in reversed(done):  # put back what moved before the failure
                with contextlib.suppress(Exception):
                    if move.from_version is None:
                        registry.delete_alias(name, move.alias)
                    else:
                        registry.set_alias(name, move.alias, move.from_version)
            if isinstance(exc, SparkpipeError):
                raise
            raise ModelError(f"moving aliases of {name!r} failed ({exc}); nothing was changed") from exc
        for i, move in enumerate(done):
            key = f"{HISTORY_TAG_PREFIX}{time.time_ns():020d}-{i}"
            try:
                registry.set_model_tag(name, key, json.dumps(move.to_dict())[:4900])
            except Exception as exc:  # the alias moved; say loudly that its record did not land
                log.error("%s@%s moved but its history record failed: %s", name, move.alias, exc)
        for move in done:
            log.info(
                "%s@%s: %s -> %s (%s; %s)",
                name,
                move.alias,
                move.from_version,
                move.to_version,
                move.reason,
                move.actor,
            )
        return done


def alias_history(registry: Registry, name: str, alias: str | None = None) -> list[dict[str, Any]]:
    """The recorded alias moves of ``name`` (oldest first), optionally of one alias only."""
    out = []
    for key, value in sorted(registry.model_tags(name).items()):
        if not key.startswith(HISTORY_TAG_PREFIX):
            continue
        try:
            event = json.loads(value)
        except ValueError:
            continue
        if isinstance(event, dict) and (alias is None or event.get("alias") == alias):
            out.append(event)
    return out


def rollback_alias(
    registry: Registry, name: str, alias: str = "champion", *, reason: str, actor: str
) -> AliasMove:
    """Point ``alias`` back at the version it pointed at before its current one (from the history).

    Raises
    ------
    ModelError
        No recorded earlier version (the history starts with the alias's first move).
    """
    current = registry.aliases(name).get(alias)
    previous = None
    for event in reversed(alias_history(registry, name, alias)):
        if event.get("to") == current and event.get("from") not in (None, current):
            previous = event["from"]
            break
    if previous is None:
        raise ModelError(
            f"{name}@{alias} has no recorded previous version to roll back to (now: {current}); "
            f"point it explicitly with `sparkpipe models promote {name} VERSION --alias {alias}`"
        )
    registry.resolve(f"{name}/{previous}")  # the version still exists
    return move_aliases(registry, name, {alias: previous}, reason=reason, actor=actor)[0]


# ======================================================================= local registry (no MLflow)
class LocalRegistryNotApplicable(Exception):
    """:class:`LocalRegistryReader` cannot answer: use the MLflow :class:`Registry` instead.

    Raised for a store or setup the reader does not handle (not a SQLite file, unexpected schema, a
    workspace, a separate registry URI, a non-local artifact location, any ``sqlite3`` error) and for a
    reference it cannot find, so MLflow reports unknown names, aliases and versions as it always has.
    """


_WORKSPACE = "default"  # MLflow's DEFAULT_WORKSPACE_NAME; single-tenant stores keep every row there
_DELETED_STAGE = "Deleted_Internal"  # MLflow's STAGE_DELETED_INTERNAL: a soft-deleted version
_PROMPT_TAG = "mlflow.prompt.is_prompt"  # prompts live in the same tables; MLflow hides them as models
_REGISTRY_COLUMNS = {
    "registered_models": {"name", "workspace"},
    "registered_model_tags": {"key", "name", "workspace"},
    "model_versions": {
        "name",
        "version",
        "current_stage",
        "source",
        "storage_location",
        "run_id",
        "workspace",
    },
    "model_version_tags": {"key", "value", "name", "version", "workspace"},
    "registered_model_aliases": {"alias", "version", "name", "workspace"},
}
_VERSION_COLUMNS = "version, run_id, source, storage_location"
_LIVE_VERSION = f"workspace = ? AND name = ? AND current_stage != '{_DELETED_STAGE}'"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false")


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a plain ``sqlite:///`` URI (absolute); ``None`` for anything else."""
    if not uri.startswith("sqlite:///") or any(c in uri for c in "?#%"):
        return None
    path = uri.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path).resolve()


def _local_dir(location: str | None) -> Path:
    """The directory of a ``file://`` URI or an absolute local path; not applicable otherwise."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(location or "")
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and not (parts.query or parts.fragment):
        path = Path(unquote(parts.path))
    elif not parts.scheme and location:
        path = Path(location)
    else:
        raise LocalRegistryNotApplicable(f"artifact location {location!r} is not a local directory")
    if not path.is_absolute() or not (path / "MLmodel").is_file():
        raise LocalRegistryNotApplicable(f"artifact location {location!r} is not a local model directory")
    return path


class LocalRegistryReader:
    """Read-only, MLflow-free view of a local MLflow registry: ``sqlite:///`` store, local artifacts.

    :meth:`resolve` answers exactly what :meth:`Registry.resolve` answers, by reading MLflow's tables with
    the standard library's ``sqlite3`` (opened read-only) and applying the filters of MLflow's
    ``SqlAlchemyStore``; :meth:`download` copies a version's local artifact directory into the model
    cache as :meth:`Registry.download` would. Importing MLflow costs seconds; this costs milliseconds,
    so the prediction service starts and polls aliases without it.

    Anything it does not handle raises :class:`LocalRegistryNotApplicable` and the caller falls back to
    :class:`Registry`. The reader keeps no connection open, so one instance may be shared by threads.
    """

    def __init__(self, cfg: MlflowConfig | None = None):
        self.cfg = cfg or MlflowConfig()
        self.tracking_uri = resolve_tracking_uri(self.cfg)

    # ------------------------------------------------------------------ applicability
    def _db_path(self) -> Path:
        """The SQLite file to read, after checking nothing makes MLflow resolve differently."""
        db = _sqlite_path(self.tracking_uri)
        if db is None:
            raise LocalRegistryNotApplicable(f"tracking URI {self.tracking_uri!r} is not a local SQLite file")
        # MlflowClient's registry: the configured URI, else MLFLOW_REGISTRY_URI, else the tracking URI
        registry = self.cfg.registry_uri or os.environ.get("MLFLOW_REGISTRY_URI")
        if registry and registry != self.tracking_uri and _sqlite_path(registry) != db:
            raise LocalRegistryNotApplicable(f"registry URI {registry!r} is not the tracking store")
        for var in ("MLFLOW_ENABLE_WORKSPACES", "MLFLOW_WORKSPACE"):
            if _env_flag(var):
                raise LocalRegistryNotApplicable(f"{var} is set (workspaces are resolved by MLflow)")
        if not db.is_file():
            raise LocalRegistryNotApplicable(f"{db} does not exist")
        return db

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection inside one read transaction, after checking the schema."""
        db = self._db_path()
        try:
            conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5, isolation_level=None)
        except sqlite3.Error as exc:
            raise LocalRegistryNotApplicable(f"cannot open {db} read-only: {exc}") from None
        try:
            conn.execute("BEGIN")
            for table, needed in _REGISTRY_COLUMNS.items():
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if not needed <= have:
                    raise LocalRegistryNotApplicable(f"{db}: table {table} lacks {sorted(needed - have)}")
            # MLflow (workspaces disabled) refuses to open a store with rows in another workspace
            webhooks = any(row[1] == "workspace" for row in conn.execute("PRAGMA table_info(webhooks)"))
            for table in ("registered_models", "webhooks") if webhooks else ("registered_models",):
                if conn.execute(
                    f"SELECT 1 FROM {table} WHERE workspace IS NOT NULL AND workspace != ? LIMIT 1",
                    (_WORKSPACE,),
                ).fetchone():
                    raise LocalRegistryNotApplicable(f"{db}: {table} outside the {_WORKSPACE!r} workspace")
            yield conn
        except sqlite3.Error as exc:
            raise LocalRegistryNotApplicable(f"reading {db} failed: {exc}") from None
        finally:
            conn.close()

    # ------------------------------------------------------------------ resolution
    def resolve(self, ref: str, default_alias: str = "champion") -> ModelRef:
        """Resolve ``ref`` like :meth:`Registry.resolve`; raise :class:`LocalRegistryNotApplicable` when
        the store is not one this reader handles or the reference is not found there."""
        name, alias, version = parse_model_ref(ref)
        with self._snapshot() as conn:
            exists = conn.execute(
                "SELECT 1 FROM registered_models WHERE workspace = ? AND name = ?", (_WORKSPACE, name)
            ).fetchone()
            prompt = conn.execute(
                "SELECT 1 FROM registered_model_tags WHERE workspace = ? AND name = ? AND key = ? "
                "UNION ALL "
                "SELECT 1 FROM model_version_tags WHERE workspace = ? AND name = ? AND key = ? LIMIT 1",
                (_WORKSPACE, name, _PROMPT_TAG) * 2,
            ).fetchone()
            if not exists or prompt:
                raise LocalRegistryNotApplicable(f"no registered model {name!r} in {self.tracking_uri}")
            if alias:
                row = self._by_alias(conn, name, alias)
            elif version and version != "latest":
                row = self._by_version(conn, name, int(version))
            else:
                if "'" in name:  # Registry's search filter cannot quote it; let MLflow say so
                    raise LocalRegistryNotApplicable(f"model name {name!r} contains a quote")
                row = self._by_alias(conn, name, default_alias) if version is None else None
                row = row or self._latest(conn, name)
            if row is None:
                raise LocalRegistryNotApplicable(f"{ref!r} not found in {self.tracking_uri}")
            number, run_id, source, _ = row
            aliases = [
                a
                for (a,) in conn.execute(
                    "SELECT alias FROM registered_model_aliases "
                    "WHERE workspace = ? AND name = ? AND version = ? ORDER BY alias",
                    (_WORKSPACE, name, number),
                )
            ]
            tags = dict(
                conn.execute(
                    "SELECT key, value FROM model_version_tags "
                    "WHERE workspace = ? AND name = ? AND version = ?",
                    (_WORKSPACE, name, number),
                ).fetchall()
            )
        return ModelRef(
            name=name, version=str(number), run_id=run_id, source=source, aliases=aliases, tags=tags
        )

    def model_names(self) -> list[str]:
        """Registered model names (prompts excluded), most recently updated first."""
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT name FROM registered_models WHERE workspace = ? AND name NOT IN "
                "(SELECT name FROM registered_model_tags WHERE workspace = ? AND key = ?) "
                "ORDER BY last_updated_time DESC, name",
                (_WORKSPACE, _WORKSPACE, _PROMPT_TAG),
            ).fetchall()
        return [name for (name,) in rows]

    @staticmethod
    def _by_version(conn: sqlite3.Connection, name: str, version: int) -> tuple[Any, ...] | None:
        if version >= 2**63:  # beyond SQLite's INTEGER: no such version
            return None
        return conn.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE {_LIVE_VERSION} AND version = ?",
            (_WORKSPACE, name, version),
        ).fetchone()

    @staticmethod
    def _latest(conn: sqlite3.Connection, name: str) -> tuple[Any, ...] | None:
        return conn.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE {_LIVE_VERSION} "
            "ORDER BY version DESC LIMIT 1",
            (_WORKSPACE, name),
        ).fetchone()

    def _by_alias(self, conn: sqlite3.Connection, name: str, alias: str) -> tuple[Any, ...] | None:
        if alias.lower() == "latest":  # reserved by MLflow: the highest live version
            return self._latest(conn, name)
        row = conn.execute(
            "SELECT version FROM registered_model_aliases WHERE workspace = ? AND name = ? AND alias = ?",
            (_WORKSPACE, name, alias),
        ).fetchone()
        return self._by_version(conn, name, row[0]) if row else None

    # ------------------------------------------------------------------ artifacts
    def default_cache_dir(self) -> Path:
        return model_cache_dir(self.tracking_uri)

    def download(self, ref: ModelRef, cache_dir: str | Path | None = None) -> Path:
        """Copy a version's local model directory into ``<cache>/<name>/<version>`` once (atomically, as
        :meth:`Registry.download`); return it. Not applicable unless the version's artifact location is
        a local directory with an ``MLmodel`` file."""

        def fetch(tmp: Path) -> Path:
            with self._snapshot() as conn:
                row = self._by_version(conn, ref.name, int(ref.version))
            if row is None:
                raise LocalRegistryNotApplicable(f"{ref.uri} not found in {self.tracking_uri}")
            _, _, source, storage_location = row
            src = _local_dir(storage_location or source)  # MLflow's get_model_version_download_uri
            out = tmp / "model"
            shutil.copytree(src, out)
            # what MLflow's ModelsArtifactRepository adds to a downloaded registered model
            import yaml

            meta = {"model_name": ref.name, "model_version": ref.version}
            (out / "registered_model_meta").write_text(
                yaml.safe_dump(meta, default_flow_style=False, allow_unicode=True), encoding="utf-8"
            )
            return out

        return publish_model_dir(Path(cache_dir) if cache_dir else self.default_cache_dir(), ref, fetch)


# ============================================================================ model URIs -> directories
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
