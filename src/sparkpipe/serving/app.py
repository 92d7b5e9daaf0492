"""The FastAPI application: factory, lifespan, error handling and :func:`run`.

``create_app(settings)`` wires one :class:`~sparkpipe.serving.service.ModelService`, one
:class:`~sparkpipe.serving.jobs.JobManager` and one metrics registry into ``app.state``; routes get
them through dependencies. The lifespan hook recovers jobs, loads the configured models (cached
versions without importing MLflow), and starts the alias poller.

``POST /predict`` and ``POST /invocations`` are answered by the
:class:`~sparkpipe.serving.lane.ScoringLane` before FastAPI sees them (:class:`ServingApp`); every other
request goes through FastAPI and pure ASGI middlewares: body-size limit (outermost), metrics, and an
error shield that turns any unexpected exception into a JSON 500 without a traceback (logged and
counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from sparkpipe.serving.jobs import JobManager
from sparkpipe.serving.lane import ScoringLane
from sparkpipe.serving.metrics import MetricsMiddleware, ServiceMetrics
from sparkpipe.serving.routes import ROUTERS
from sparkpipe.serving.schemas import ApiError, dumps, format_loc
from sparkpipe.serving.security import BodyLimitMiddleware
from sparkpipe.serving.service import ModelService
from sparkpipe.serving.settings import ServingSettings

log = logging.getLogger(__name__)
SETTINGS_ENV = "SPARKPIPE_SERVING_SETTINGS_JSON"


class ErrorShieldMiddleware:
    """Last line of defence: an unexpected exception becomes ``500 {"detail": ...}`` (no traceback)."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:  # the client went away mid-request: nobody to answer, nothing to log
            self.metrics.error("client_disconnect")
            return
        except Exception:
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            self.metrics.error("internal_error")
            if started:
                return
            body = dumps(ApiError(500, "internal server error; the incident was logged").body())
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


class ServingApp(FastAPI):
    """The FastAPI application, with the scoring endpoints answered by a :class:`ScoringLane` first."""

    lane: ScoringLane | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        lane = self.lane
        if lane is not None and lane.handles(scope):
            await lane(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _error_response(request: Request, exc: ApiError) -> Response:
    request.app.state.metrics.error(exc.error_type)
    return Response(
        dumps(exc.body()), status_code=exc.status, media_type="application/json", headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to JSON with the field named; never a stack trace."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            (
                format_loc(
                    tuple(e.get("loc", ()))[1:]
                    if e.get("loc", ("",))[0] in ("path", "query", "header")
                    else tuple(e.get("loc", ()))
                )
                or "body",
                str(e.get("msg", "invalid"))[:300],
            )
            for e in exc.errors()[:20]
        ]
        msg = "invalid request: " + "; ".join(f"{f}: {m}" for f, m in errors[:5])
        return _error_response(request, ApiError(422, msg, errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs"
        return _error_response(
            request, ApiError(exc.status_code, detail, headers=dict(exc.headers or {}) or None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:  # pragma: no cover - shield first
        log.error("unexpected error: %s", exc, exc_info=exc)
        return _error_response(request, ApiError(500, "internal server error; the incident was logged"))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Recover jobs, load models, start the alias poller; on shutdown stop them."""
    settings: ServingSettings = app.state.settings
    service: ModelService = app.state.service
    jobs: JobManager = app.state.jobs
    await run_in_threadpool(jobs.recover)
    from_cache = await run_in_threadpool(service.start)
    tasks: list[asyncio.Task[Any]] = []
    if from_cache:  # served from the cache: check the registry for moved aliases right away
        tasks.append(asyncio.create_task(run_in_threadpool(service.refresh)))
    if settings.reload_interval_seconds > 0:
        tasks.append(asyncio.create_task(service.poll_aliases(settings.reload_interval_seconds)))
    experiments = getattr(app.state, "experiments", None)
    if experiments is not None and experiments.predlog is not None:
        tasks.append(asyncio.create_task(_sync_experiments(experiments)))
    log.info("sparkpipe serving %s", service.status())
    # start-up objects (FastAPI, pydantic, compiled plans, maybe MLflow) live forever: move them out of
    # the collector's reach so gen-2 collections on the request path stay cheap
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        jobs.shutdown()
        traffic = getattr(app.state, "traffic", None)
        if traffic is not None:
            await traffic.drain()  # shadow scoring of requests already answered
        service.close()
        predlog = getattr(app.state, "predlog", None)
        if predlog is not None:  # uvicorn has answered every request in progress: commit them all
            await run_in_threadpool(predlog.close)


async def _sync_experiments(experiments: Any, interval: float = 1.0) -> None:
    """Forever: pick up routing other worker processes changed (``PUT /ab`` answered by one of them)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(experiments.sync)
        except Exception:
            log.exception("reading the experiments table failed")


def _ref_name(spec: str) -> str | None:
    """The model name of a configured reference (``models:/churn@champion`` -> ``churn``)."""
    from sparkpipe.core import model_name_of

    return model_name_of(spec)


def create_app(
    settings: ServingSettings | None = None,
    *,
    service: ModelService | None = None,
    jobs: JobManager | None = None,
) -> ServingApp:
    """Build the prediction service.

    Parameters
    ----------
    settings
        Service settings; by default read from the environment (``SPARKPIPE_*``).
    service, jobs
        Pre-built collaborators (tests); by default created from ``settings``.

    Returns
    -------
    ServingApp
    """
    settings = settings or ServingSettings()
    metrics = ServiceMetrics()
    service = service or ModelService(settings, metrics)
    service.metrics = metrics

    def _job_finished(state: dict[str, Any]) -> None:
        name = (state.get("result") or {}).get("registered_name")
        if (
            state.get("status") == "succeeded"
            and name
            and (service.discover or any(_ref_name(s) == name for s in service.specs))
        ):
            service.refresh(names=[name])

    jobs = jobs or JobManager(
        settings.jobs_dir, settings.max_concurrent_jobs, allowed_roots=settings.allowed_data_roots
    )
    if jobs.allowed_roots is None:
        jobs.allowed_roots = list(settings.allowed_data_roots)
    jobs.on_finished = jobs.on_finished or _job_finished
    jobs.on_metrics = jobs.on_metrics or (lambda kind, status: metrics.jobs.labels(kind, status).inc())
    app = ServingApp(
        title="sparkpipe prediction service",
        version=_version(),
        lifespan=lifespan,
        description="JVM-free scoring of Spark ML PipelineModels registered in MLflow.",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = service
    app.state.jobs = jobs
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: truthful_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(ErrorShieldMiddleware, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    predlog, experiments, traffic = _traffic(settings, service)
    app.state.predlog = predlog
    app.state.experiments = experiments
    app.state.traffic = traffic
    from sparkpipe.serving.drift import DriftMonitor

    app.state.drift = DriftMonitor(service, predlog, metrics, settings.drift)
    app.lane = ScoringLane(service, metrics, settings.max_body_bytes, traffic)
    return app


def _traffic(settings: ServingSettings, service: ModelService) -> tuple[Any, Any, Any]:
    """The prediction log (when enabled), the experiments and the traffic layer of a new app."""
    from sparkpipe.serving.experiments import ExperimentManager
    from sparkpipe.serving.predlog import PredictionLog
    from sparkpipe.serving.routing import Traffic

    cfg = settings.prediction_log
    predlog = (
        PredictionLog(
            settings.prediction_log_path(),
            cfg.flush_interval_seconds,
            cfg.max_buffer,
            retention_days=cfg.retention_days,
            max_rows=cfg.max_rows,
            prune_interval_seconds=cfg.prune_interval_seconds,
        )
        if cfg.enabled
        else None
    )
    default = _ref_name(settings.model_name) if settings.model_name else None
    experiments = ExperimentManager(predlog, settings.ab_testing, default)
    experiments.registry_factory = lambda: service.registry
    experiments.on_aliases_moved = lambda name: service.refresh(names=[name])
    return predlog, experiments, Traffic(service, predlog, experiments)


_BODY_ERRORS = {
    "400": "the body is not valid JSON, or a path is malformed",
    "413": "the body is larger than max_body_bytes",
    "415": "the body is not application/json",
    "422": "a field is invalid (named in errors)",
}


def truthful_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, corrected to what the service answers.

    Every error is an :class:`~sparkpipe.serving.schemas.ErrorResponse` (FastAPI's default
    ``HTTPValidationError`` is never sent), and operations with a JSON body document the 400/413/415/422
    the body parser answers.
    """
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    from sparkpipe.serving.schemas import ErrorResponse

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.setdefault(
        "ErrorResponse", ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = error
            extra = dict(_BODY_ERRORS) if "requestBody" in op else {}
            for code, description in extra.items():
                responses.setdefault(code, {"description": description, "content": error})
    app.openapi_schema = doc
    return doc


def _version() -> str:
    from sparkpipe import __version__

    return __version__


def app_from_env() -> FastAPI:
    """Factory for multi-worker uvicorn: settings travel as JSON in an environment variable."""
    raw = os.environ.get(SETTINGS_ENV)
    settings = ServingSettings.model_validate(json.loads(raw)) if raw else ServingSettings()
    with contextlib.suppress(ImportError):
        from sparkpipe.serving.shutdown import DrainingHttpToolsProtocol

        DrainingHttpToolsProtocol.drain_seconds = settings.shutdown_drain_seconds
    return create_app(settings)


def uvicorn_options(settings: ServingSettings) -> dict[str, Any]:
    """The keyword arguments :func:`run` gives ``uvicorn.run`` (the server stack: uvloop and httptools
    when installed, no access log); ``benchmarks/serving.py`` serves its bare ASGI ceiling with them."""
    kwargs: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,
        "log_level": settings.log_level.lower(),
        "timeout_keep_alive": 30,
        # no `server: uvicorn` header: it tells a scanner the stack, and uvicorn validates and writes
        # it on every response
        "server_header": False,
    }
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

        kwargs["loop"] = "uvloop"
    with contextlib.suppress(ImportError):
        import httptools  # noqa: F401

        from sparkpipe.serving.shutdown import DrainingHttpToolsProtocol

        # on SIGTERM idle keep-alive connections stay open for a drain window: a request already sent
        # on one is answered (Connection: close) instead of dropped; see sparkpipe.serving.shutdown
        DrainingHttpToolsProtocol.drain_seconds = settings.shutdown_drain_seconds
        kwargs["http"] = DrainingHttpToolsProtocol
    kwargs["timeout_graceful_shutdown"] = settings.shutdown_timeout_seconds
    return kwargs


def run(settings: ServingSettings | None = None) -> None:
    """Serve with uvicorn (uvloop + httptools when installed); used by ``sparkpipe serve``."""
    import uvicorn

    settings = settings or ServingSettings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    kwargs = uvicorn_options(settings)
    if settings.workers > 1:
        data = settings.model_dump(mode="json")
        data["api_key"] = settings.api_key_value()
        os.environ[SETTINGS_ENV] = json.dumps(data)
        uvicorn.run("sparkpipe.serving.app:app_from_env", factory=True, workers=settings.workers, **kwargs)
    else:
        uvicorn.run(create_app(settings), **kwargs)
