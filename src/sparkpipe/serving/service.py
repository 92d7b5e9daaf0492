"""The model service: loading, caching, resolving and hot-swapping models, and scoring requests.

Routes stay thin; everything they need is a method here. The row checks and the request body forms
are in :mod:`~sparkpipe.serving.rows`; :class:`~sparkpipe.serving.loading.LoadedModel` and loading a
model directory (NumPy plan or Spark fallback) in :mod:`~sparkpipe.serving.loading`.

Model table
    Configured references (``name``, ``name@alias``, ``name/version``) are resolved against the MLflow
    registry in :meth:`ModelService.refresh`, downloaded once into the model cache, compiled to a NumPy
    plan (or, for a pipeline with a stage that has no twin, loaded into the warm Spark fallback) and
    published in an in-memory lookup table. ``/predict`` resolves ``model_id`` with one dict lookup:
    no registry call on the request path.

Hot swap
    :meth:`ModelService.refresh` (called by the alias poller, ``POST /models/{name}/reload`` and alias
    promotion) loads any new version *first*, then replaces the table with one assignment. A request
    holds the :class:`LoadedModel` it looked up until it has answered, so in-flight requests finish on
    the old version and none is dropped.

Fast restart
    Every resolution is remembered in ``<model_cache>/bindings.json``. At start-up, references whose
    version is already in the cache are loaded straight from disk without importing MLflow (which alone
    takes ~2 s), so ``/ready`` turns green quickly; the first background refresh then re-resolves them
    against the registry and hot-swaps any alias that moved while the server was down.

No MLflow for a local store
    Resolving and fetching go through :class:`~sparkpipe.tracking.LocalRegistryReader` first: for the
    default setup (a ``sqlite:///`` store whose versions live in local directories) it reads MLflow's
    tables with ``sqlite3`` and copies the version into the cache, so an empty cache and the alias poller
    need no MLflow either. Any other store, or a reference the reader does not find, goes to the MLflow
    :class:`~sparkpipe.tracking.Registry` (imported on first use). Alias promotion and the registry
    views (``/models``) always use MLflow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from sparkpipe.core import MODEL_REF_RE
from sparkpipe.core import parse_model_ref as parse_ref
from sparkpipe.errors import ModelError, ScoringError
from sparkpipe.serving.loading import LoadedModel, load_model_dir
from sparkpipe.serving.metrics import ServiceMetrics
from sparkpipe.serving.rows import (
    check_predict_body,
    csv_columns,
    invocations_columns,
    predict_columns,
    short,
    type_name,
)
from sparkpipe.serving.schemas import ApiError, invalid
from sparkpipe.serving.settings import ServingSettings

log = logging.getLogger(__name__)

_MISS_SECONDS = 10.0
"""How long a reference that did not resolve on first use is answered 404 without a registry query."""
_THREADPOOL_ROWS = 256
"""Batches larger than this are scored in a worker thread so the event loop stays responsive."""


# ==================================================================================== service
class ModelService:
    """Loads, caches, resolves and serves models; scores validated requests.

    Parameters
    ----------
    settings
        The service settings (models to load, limits, MLflow stores, cache).
    metrics
        Where counts and gauges go.
    registry
        A :class:`sparkpipe.tracking.Registry` to use (tests); by default one is created lazily. When one
        is given, every resolution goes through it (no local registry reader).
    """

    def __init__(
        self, settings: ServingSettings, metrics: ServiceMetrics | None = None, registry: Any = None
    ):
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        self._registry = registry
        self._registry_lock = threading.Lock()
        self._lock = threading.RLock()
        self.specs: list[str] = settings.model_refs()
        self.required: tuple[str, ...] = tuple(self.specs)
        """The configured references: ``/ready`` waits for all of them."""
        self.discover = not self.specs
        """No model configured: serve the registry (its most recently updated model as the default)."""
        self._misses: dict[str, float] = {}
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        self._bindings: dict[str, tuple[str, str]] = {}
        self._table: dict[str, LoadedModel] = {}
        self._default: LoadedModel | None = None
        self.errors: dict[str, str] = {}
        self.last_refresh: float | None = None
        from sparkpipe.tracking import LocalRegistryReader, model_cache_dir

        self.cache_dir = model_cache_dir(settings.tracking_uri, settings.model_cache_dir)
        from sparkpipe.serving.security import PathScrubber

        self.scrub = PathScrubber(settings)
        """Rewrites server paths in errors shown to clients (``/ready``, 503 answers)."""
        self._reader = LocalRegistryReader(settings.mlflow_config()) if registry is None else None

    # ------------------------------------------------------------------ registry
    @property
    def registry(self) -> Any:
        """The registry client (created on first use: importing MLflow takes about 2 s)."""
        if self._registry is None:
            with self._registry_lock:
                if self._registry is None:
                    from sparkpipe.tracking import Registry

                    self._registry = Registry(self.settings.mlflow_config())
        return self._registry

    def _resolve(self, spec: str) -> Any:
        """``spec`` as a :class:`~sparkpipe.tracking.ModelRef`: from the local registry reader when it
        applies, else from MLflow (which also reports unknown names, aliases and versions)."""
        if self._reader is not None:
            from sparkpipe.tracking import LocalRegistryNotApplicable

            try:
                return self._reader.resolve(spec, default_alias=self.settings.default_alias)
            except LocalRegistryNotApplicable as exc:
                log.debug("resolving %s through MLflow: %s", spec, exc)
        return self.registry.resolve(spec, default_alias=self.settings.default_alias)

    def _fetch(self, ref: Any) -> Path:
        """The local directory of a resolved version (copied or downloaded into the cache once)."""
        if self._reader is not None:
            from sparkpipe.tracking import LocalRegistryNotApplicable

            try:
                return self._reader.download(ref, cache_dir=self.cache_dir)
            except LocalRegistryNotApplicable as exc:
                log.debug("downloading %s through MLflow: %s", ref.uri, exc)
        return self.registry.download(ref, cache_dir=self.cache_dir)

    # ------------------------------------------------------------------ lookup (hot path)
    @property
    def ready(self) -> bool:
        """True when every configured reference is served; with none configured, once any model is."""
        table = self._table
        if self.required:
            return all(s in table for s in self.required)
        return bool(table)

    async def aget(self, model_id: str | None) -> LoadedModel:
        """:meth:`get`, loading a registered model that is not served yet on its first use."""
        model = self._table.get(model_id) if type(model_id) is str else None
        if model is not None:
            return model
        try:
            return self.get(model_id)
        except ApiError as exc:
            if type(model_id) is not str or exc.status not in (404, 503):
                raise
            # 503: a configured model that failed stays 503 (the poller retries it); one being loaded
            # on demand by another request is waited for
            if exc.status == 503 and model_id.strip().removeprefix("models:/") in self.required:
                raise
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(self.load_on_demand, model_id)
        return self.get(model_id)

    def load_on_demand(self, model_id: str) -> bool:
        """Resolve ``model_id`` in the registry and start serving it; False when it does not resolve.

        A reference that failed is not looked up again for ``_MISS_SECONDS`` (requests naming unknown
        models do not turn into a registry query each).
        """
        spec = model_id.strip().removeprefix("models:/")
        try:
            parse_ref(spec)
        except ModelError:
            return False
        now = time.monotonic()
        with self._lock:
            if spec in self._table:
                return True
            if self._misses.get(spec, 0.0) > now:
                return False
            if spec not in self.specs:
                self.specs.append(spec)
        self.refresh(specs=[spec])
        with self._lock:
            if spec not in self.errors and spec in self._table:
                log.info("serving %s on first use", spec)
                return True
            self.errors.pop(spec, None)
            if spec not in self.required and spec in self.specs:
                self.specs.remove(spec)
                self._bindings.pop(spec, None)
            if len(self._misses) > 1000:  # bounded: expired entries go, then all if still too many
                self._misses = {k: t for k, t in self._misses.items() if t > now}
                if len(self._misses) > 1000:
                    self._misses.clear()
            self._misses[spec] = now + _MISS_SECONDS
        return False

    def _adopt_default(self) -> None:
        """No model configured and none served: serve the registry's most recently updated model."""
        if not self.discover or self.specs:
            return
        try:
            names = self._registered_names()
        except Exception as exc:  # an unreachable registry: keep trying on the next refresh
            log.warning("cannot list registered models: %s", str(exc).splitlines()[0][:300])
            return
        if names:
            log.info("no model configured; serving %s (registered: %s)", names[0], ", ".join(names))
            self.specs.append(names[0])

    def _registered_names(self) -> list[str]:
        """Registered model names, most recently updated first."""
        if self._reader is not None:
            from sparkpipe.tracking import LocalRegistryNotApplicable

            try:
                return self._reader.model_names()
            except LocalRegistryNotApplicable as exc:
                log.debug("listing models through MLflow: %s", exc)
        entries = self.registry.list_models(include_versions=False)
        return [e["name"] for e in sorted(entries, key=lambda e: e.get("updated") or 0, reverse=True)]

    def get(self, model_id: str | None) -> LoadedModel:
        """The loaded model for ``model_id`` (``None``: the default model); 404 when unknown."""
        if model_id is None:
            model = self._default
            if model is None:
                if self.specs:
                    raise self._unavailable(self.specs[0])
                raise ApiError(
                    404,
                    "no default model is configured or loaded; send model_id "
                    f"(loaded: {', '.join(self.known()) or 'none'})",
                    [("model_id", "required")],
                )
            return model
        if type(model_id) is not str:
            raise invalid("model_id", f"must be a string, got {type_name(model_id)}")
        model = self._table.get(model_id)
        if model is None:
            model = self._table.get(model_id.strip().removeprefix("models:/"))
            if model is None:
                spec = model_id.strip().removeprefix("models:/")
                if spec in self.specs:
                    raise self._unavailable(spec)
                known = self.known()
                raise ApiError(
                    404,
                    f"unknown model {short(model_id)}; loaded models: {', '.join(known) or 'none'}",
                    [("model_id", f"unknown model; known: {', '.join(known) or 'none'}")],
                )
        return model

    def _unavailable(self, spec: str) -> ApiError:
        """503 for a configured model that is not loaded (failed to load, or still loading)."""
        error = self.errors.get(spec)
        reason = f"failed to load: {self.scrub.text(error)}" if error else "is not loaded yet"
        name = parse_ref(spec)[0] if MODEL_REF_RE.match(spec) else spec
        return ApiError(
            503,
            f"model {short(spec)} {reason}; it is retried by the alias poller and by "
            f"POST /models/{name}/reload",
            [("model_id", "model unavailable")],
            headers={"Retry-After": "5"},
        )

    def known(self) -> list[str]:
        """The references that resolve (sorted)."""
        return sorted(self._table)

    def loaded(self) -> list[LoadedModel]:
        return sorted(self._loaded.values(), key=lambda m: (m.name, int(m.version)))

    def default_model(self) -> LoadedModel | None:
        return self._default

    # ------------------------------------------------------------------ scoring
    async def predict(self, payload: Any) -> tuple[LoadedModel, list[dict[str, Any]], list[str]]:
        """Score a parsed ``/predict`` body; return the model used, one dict per row, and the input
        columns some named row left out (scored as missing values, in schema order)."""
        check_predict_body(payload)
        model = await self.aget(payload.get("model_id"))
        features = payload.get("features")
        if type(features) is dict and "instances" not in payload and model.scores_records:
            # one named row, the common online call: validated straight into the record the scorer's
            # row path reads (no column lists to build and take apart again)
            omitted: set[str] = set()
            values = model.values_from_dict(features, "features", omitted)
            preds = await self.score(model, [dict(zip(model.names, values, strict=True))], 1, "features")
        else:
            cols, n, prefix, omitted = predict_columns(model, payload, self.settings.max_batch_rows)
            preds = await self.score(model, cols, n, prefix)
            if model.recommender is not None:  # an unknown user or item: say so beside the null prediction
                from sparkpipe.serving.recommend import flag_cold_pairs

                flag_cold_pairs(model, cols, preds)
        return model, preds, [c for c in model.names if c in omitted] if omitted else []

    async def invocations(self, payload: Any, model_id: str | None) -> tuple[LoadedModel, list[Any]]:
        """Score an MLflow scoring-protocol body; return the model and the ``predictions`` list."""
        model = await self.aget(model_id)
        cols, n = invocations_columns(model, payload, self.settings.max_batch_rows)
        preds = await self.score(model, cols, n, None)
        return model, [p.get("prediction") for p in preds]

    async def invocations_csv(self, body: bytes, model_id: str | None) -> tuple[LoadedModel, list[Any]]:
        """Score a ``text/csv`` body (header row of column names), as MLflow's server accepts."""
        model = await self.aget(model_id)
        cols, n = csv_columns(model, body, self.settings.max_batch_rows)
        preds = await self.score(model, cols, n, None)
        return model, [p.get("prediction") for p in preds]

    def reload(self, name: str, force: bool = False) -> dict[str, Any]:
        """Re-resolve (and load) ``name`` now; a name not served yet starts being served.

        Raises
        ------
        ApiError
            404 when a new name cannot be resolved in the registry.
        """
        added = False
        with self._lock:
            if not any(parse_ref(s)[0] == name for s in self.specs):
                self.specs.append(name)
                added = True
        result = self.refresh(names=[name], force=force)
        if added and name in self.errors:
            with self._lock:
                err = self.errors.pop(name)
                self.specs.remove(name)
                self._bindings.pop(name, None)
            raise ApiError(404, self.scrub.text(err), [("name", "cannot be loaded")])
        result["errors"] = {k: self.scrub.text(v) for k, v in result["errors"].items()}
        return {**result, "loaded": [m.describe() for m in self.loaded() if m.name == name]}

    async def score(
        self,
        model: LoadedModel,
        cols: dict[str, list[Any]] | list[dict[str, Any]],
        n: int,
        prefix: str | None,
    ) -> list[dict[str, Any]]:
        """Run the scorer on validated columns (or, for the NumPy plan, records); map scorer input
        errors to 422."""
        try:
            if model.is_fallback:
                preds = await model.scorer.apredict(cols, n)
            elif n > _THREADPOOL_ROWS:
                from starlette.concurrency import run_in_threadpool

                preds = await run_in_threadpool(model.scorer.predict, cols)
            else:
                preds = model.scorer.predict(cols)
        except ScoringError as exc:
            raise self._input_error(model, exc, prefix) from None
        self.metrics.observe_predictions(model.name, model.version, model.serving_path, n)
        return preds

    def _input_error(self, model: LoadedModel, exc: ScoringError, prefix: str | None) -> ApiError:
        column = getattr(exc, "column", None)
        row = getattr(exc, "row", None)
        detail = getattr(exc, "detail", None) or str(exc)
        if prefix == "features" and column in model.names:
            where = f"features.{column}"
        elif column is not None and row is not None:
            where = f"instances[{row}].{column}"
        else:
            where = getattr(exc, "field", None) or "body"
        return invalid(where, detail)

    # ------------------------------------------------------------------ loading
    def load_model_dir(
        self, path: Path, name: str, version: str, aliases: list[str] | None = None, run_id: str | None = None
    ) -> LoadedModel:
        """Compile a local model directory (NumPy path) or load it into the Spark fallback."""
        return load_model_dir(
            path, name, version, self.settings, self.metrics, aliases=aliases, run_id=run_id
        )

    def _load_ref(self, ref: Any) -> LoadedModel:
        """Fetch (or reuse the verified cached copy of) a version and load it. A copy that does not
        load is discarded and fetched once more: the registry's artifact may have been fixed since."""
        from sparkpipe.tracking import discard_cache_entry

        path = self._fetch(ref)
        try:
            return self.load_model_dir(path, ref.name, ref.version, aliases=ref.aliases, run_id=ref.run_id)
        except Exception as exc:
            log.warning(
                "%s/%s did not load from the cache (%s); fetching it again", ref.name, ref.version, exc
            )
            discard_cache_entry(path)
        path = self._fetch(ref)
        return self.load_model_dir(path, ref.name, ref.version, aliases=ref.aliases, run_id=ref.run_id)

    def start(self) -> bool:
        """Start-up load: cached versions first (no MLflow import), then the registry for the rest.

        Returns
        -------
        bool
            True when some reference was served from the cache and should be re-validated against the
            registry soon (the caller schedules :meth:`refresh`).
        """
        from sparkpipe.tracking import cache_entry_ok

        from_cache = False
        with self._lock:
            self._adopt_default()
            cached = self._read_bindings()
            pending = []
            for spec in self.specs:
                hit = cached.get(spec)
                path = self.cache_dir / hit["name"] / hit["version"] if hit else None
                if (
                    hit
                    and path is not None
                    and hit.get("tracking_uri") == self.settings.tracking_uri
                    and cache_entry_ok(path)
                ):
                    key = (hit["name"], hit["version"])
                    try:
                        if key not in self._loaded:
                            self._loaded[key] = self.load_model_dir(
                                path, *key, aliases=hit.get("aliases"), run_id=hit.get("run_id")
                            )
                        self._bindings[spec] = key
                        from_cache = True
                        continue
                    except Exception as exc:
                        log.warning("cached %s/%s could not be loaded (%s); resolving again", *key, exc)
                pending.append(spec)
            self._publish()
            if pending:
                self.refresh(specs=pending)
        return from_cache

    def refresh(
        self, names: list[str] | None = None, specs: list[str] | None = None, force: bool = False
    ) -> dict[str, Any]:
        """Re-resolve configured references, load new versions, then swap the table atomically.

        Parameters
        ----------
        names
            Only references of these registered models (``None``: all).
        specs
            Only these references.
        force
            Reload even when the version did not change (re-download is not needed: versions are
            immutable, but the model is recompiled).

        Returns
        -------
        dict
            ``{"changed": [...], "errors": {...}}``.
        """
        changed: list[str] = []
        with self._lock:
            self._adopt_default()
            todo = [
                s
                for s in self.specs
                if (specs is None or s in specs) and (names is None or parse_ref(s)[0] in names)
            ]
            new_loaded = dict(self._loaded)
            new_bindings = dict(self._bindings)
            for spec in todo:
                try:
                    ref = self._resolve(spec)
                    key = (ref.name, str(ref.version))
                    current = new_loaded.get(key)
                    if current is None or force:
                        new_loaded[key] = self._load_ref(ref)
                    else:
                        current.aliases = list(ref.aliases)
                    if new_bindings.get(spec) != key:
                        if spec in new_bindings:
                            changed.append(f"{spec}: {new_bindings[spec][1]} -> {key[1]}")
                            self.metrics.swaps.labels(ref.name).inc()
                        else:
                            changed.append(f"{spec}: loaded {key[1]}")
                    new_bindings[spec] = key
                    self.errors.pop(spec, None)
                except Exception as exc:  # keep serving what we have; report the problem
                    msg = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
                    self.errors[spec] = msg
                    log.warning("could not load %s: %s", spec, msg)
            old = self._loaded
            self._loaded, self._bindings = new_loaded, new_bindings
            self._publish()
            for key, model in old.items():
                if self._loaded.get(key) is not model:
                    model.close()  # a fallback answers what is queued, then stops
            self.last_refresh = time.time()
            self._write_bindings()
        if changed:
            log.info("model table updated: %s", "; ".join(changed))
        return {"changed": changed, "errors": dict(self.errors)}

    def add_spec(self, spec: str) -> None:
        """Start serving another reference (``POST /models/{name}/reload`` of a new name)."""
        parse_ref(spec)
        with self._lock:
            if spec not in self.specs:
                self.specs.append(spec)

    def _publish(self) -> None:
        """Build the lookup table from bindings and swap it in with one assignment."""
        bound = {key for key in self._bindings.values()}
        self._loaded = {k: m for k, m in self._loaded.items() if k in bound}
        table: dict[str, LoadedModel] = {}
        by_name: dict[str, list[LoadedModel]] = {}
        for m in self._loaded.values():
            by_name.setdefault(m.name, []).append(m)
            table[f"{m.name}/{m.version}"] = m
            for alias in m.aliases:
                table[f"{m.name}@{alias}"] = m
        for name, models in by_name.items():
            latest = max(models, key=lambda x: int(x.version))
            table[f"{name}/latest"] = latest
            champion = next((m for m in models if self.settings.default_alias in m.aliases), None)
            table[name] = champion or latest
        for spec, key in self._bindings.items():  # configured references win
            table[spec] = self._loaded[key]
        default = self._bindings.get(self.specs[0]) if self.specs else None
        self._table = table
        self._default = self._loaded.get(default) if default else None
        self.metrics.set_models([(m.name, m.version, m.serving_path) for m in self._loaded.values()])

    # ------------------------------------------------------------------ bindings cache
    def _bindings_file(self) -> Path:
        return self.cache_dir / "bindings.json"

    def _read_bindings(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._bindings_file().read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_bindings(self) -> None:
        data = self._read_bindings()
        for spec, key in self._bindings.items():
            m = self._loaded[key]
            data[spec] = {
                "name": m.name,
                "version": m.version,
                "aliases": m.aliases,
                "run_id": m.run_id,
                "tracking_uri": self.settings.tracking_uri,
            }
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".bindings-", dir=self.cache_dir)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1)
            os.replace(tmp, self._bindings_file())
        except OSError as exc:
            log.debug("could not write %s: %s", self._bindings_file(), exc)

    # ------------------------------------------------------------------ registry views
    def set_alias(
        self, name: str, alias: str, version: str, reason: str | None = None, actor: str = "http"
    ) -> dict[str, Any]:
        """Point ``name@alias`` at ``version`` in the registry (recorded in the model's history), then
        refresh what serves ``name``."""
        from sparkpipe.tracking import move_aliases

        try:
            self.registry.client.get_model_version(name, version)
        except Exception as exc:
            raise ApiError(
                404, f"model {name!r} has no version {version}", [("version", str(exc)[:200])]
            ) from None
        move_aliases(
            self.registry, name, {alias: version}, reason=reason or "promoted over HTTP", actor=actor
        )
        result = self.refresh(names=[name])
        result["errors"] = {k: self.scrub.text(v) for k, v in result["errors"].items()}
        return {"name": name, "alias": alias, "version": version, **result}

    def list_models(self) -> list[dict[str, Any]]:
        """Registered models (versions, aliases, metrics) merged with what is loaded."""
        try:
            entries = self.registry.list_models(include_versions=True)
            registry_error = None
        except Exception as exc:
            entries, registry_error = [], str(exc).splitlines()[0][:300]
        by_name = {e["name"]: e for e in entries}
        for m in self.loaded():
            by_name.setdefault(m.name, {"name": m.name, "aliases": {}, "versions": []})
        out = []
        for name in sorted(by_name):
            entry = dict(by_name[name])
            entry["aliases"] = {str(k): str(v) for k, v in (entry.get("aliases") or {}).items()}
            entry["loaded"] = [m.describe() for m in self.loaded() if m.name == name]
            entry["serving"] = bool(entry["loaded"])
            if registry_error:
                entry["registry_error"] = self.scrub.text(registry_error)
            out.append(entry)
        return out

    def model_info(self, name: str) -> dict[str, Any]:
        """One registered model merged with its loaded versions; 404 when neither exists."""
        for entry in self.list_models():
            if entry["name"] == name:
                return entry
        known = ", ".join(sorted({e["name"] for e in self.list_models()})) or "none"
        raise ApiError(
            404,
            f"unknown model {short(name)}; registered or loaded models: {known}",
            [("name", f"unknown model; known: {known}")],
        )

    def status(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "configured": list(self.specs),
            "default": self._default.ref if self._default else None,
            "loaded": [
                {"name": m.name, "version": m.version, "serving_path": m.serving_path} for m in self.loaded()
            ],
            "errors": {k: self.scrub.text(v) for k, v in self.errors.items()},
            "last_refresh": self.last_refresh,
        }

    def close(self) -> None:
        for m in list(self._loaded.values()):
            m.close()

    # ------------------------------------------------------------------ polling
    async def poll_aliases(self, interval: float) -> None:
        """Forever: every ``interval`` seconds re-resolve the configured references in a thread."""
        from starlette.concurrency import run_in_threadpool

        while True:
            await asyncio.sleep(interval)
            try:
                await run_in_threadpool(self.refresh)
            except Exception:
                log.exception("alias polling failed")


def get_service(request: Request) -> ModelService:
    """FastAPI dependency: the application's :class:`ModelService`."""
    return request.app.state.service


ServiceDep = Annotated[ModelService, Depends(get_service)]
