"""A/B experiments and feedback: ``POST /feedback``, ``GET /ab``, ``GET|PUT /ab/{model}``,
``POST /ab/{model}/promote`` (changes are key-protected like the other mutating endpoints)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from sparkpipe.serving.experiments import ExperimentManager
from sparkpipe.serving.predlog import PredictionLog
from sparkpipe.serving.schemas import (
    ApiError,
    ErrorResponse,
    FeedbackRequest,
    RoutingUpdate,
    dumps,
    json_body_doc,
    parse_json,
    validate_model,
)
from sparkpipe.serving.security import ApiKeyDep
from sparkpipe.serving.settings import ServingSettings

router = APIRouter(tags=["experiments"])
NameParam = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=200)]
_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse} for c in (401, 404, 409, 422)}


def actor_of(request: Request) -> str:
    """Who asked, for the alias history: the client address (and whether the API key was required)."""
    settings: ServingSettings = request.app.state.settings
    client = request.client.host if request.client else "unknown"
    return f"http {client}" + (" (API key)" if settings.api_key_value() else "")


def get_experiments(request: Request) -> ExperimentManager:
    manager = getattr(request.app.state, "experiments", None)
    if manager is None:  # pragma: no cover - create_app always sets it
        raise ApiError(404, "experiments are not available in this service", [("model", "none")])
    return manager


def get_predlog(request: Request) -> PredictionLog:
    predlog = getattr(request.app.state, "predlog", None)
    if predlog is None:
        raise ApiError(
            409,
            "the prediction log is off (deployment.prediction_log.enabled: false); feedback needs it",
            [("prediction_log", "disabled")],
        )
    return predlog


ExperimentsDep = Annotated[ExperimentManager, Depends(get_experiments)]
PredlogDep = Annotated[PredictionLog, Depends(get_predlog)]


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type="application/json")


def record_feedback(
    predlog: PredictionLog, experiments: ExperimentManager, req: FeedbackRequest
) -> dict[str, Any]:
    """Join an outcome to its logged prediction(s); update the running experiment's counters."""
    if (req.label is None) == (req.value is None):
        raise ApiError(
            422,
            "send exactly one of label (a class) or value (a number)",
            [("label", "exactly one of label or value")],
        )
    rows = [r for r in predlog.find(req.request_id) if r["status"] == 200]
    if not rows:
        raise ApiError(
            404,
            f"no logged prediction has request id {req.request_id!r} (send X-Request-ID with /predict, "
            "or use the request_id it answered)",
            [("request_id", "unknown request id")],
        )
    label = int(req.label) if isinstance(req.label, bool) else req.label
    if not predlog.add_feedback(req.request_id, label, req.value):
        raise ApiError(
            409,
            f"request {req.request_id!r} already has feedback; an outcome is recorded once",
            [("request_id", "feedback already recorded")],
        )
    models = set()
    for row in rows:
        exp = experiments.active.get(row["model"])
        if exp is not None and row["experiment"] == exp.id:
            experiments.observe_feedback(exp, row["variant"], row["outputs"], label, req.value)
            models.add(row["model"])
    promoted = [p for p in (experiments.maybe_auto_promote(m) for m in sorted(models)) if p]
    joined = [
        {"model": r["model"], "version": r["version"], "variant": r["variant"], "shadow": bool(r["shadow"])}
        for r in rows
    ]
    return {"request_id": req.request_id, "joined": joined, "auto_promoted": promoted}


@router.post(
    "/feedback",
    summary="The outcome of a logged prediction (label, or value for regression)",
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
    openapi_extra=json_body_doc(FeedbackRequest),
)
async def feedback(request: Request, predlog: PredlogDep, experiments: ExperimentsDep) -> Response:
    req = validate_model(
        FeedbackRequest, parse_json(await request.body(), request.headers.get("content-type"))
    )
    return _json(await run_in_threadpool(record_feedback, predlog, experiments, req))


@router.get("/ab", summary="Experiments and their routing")
def list_experiments(experiments: ExperimentsDep) -> Response:
    return _json({"experiments": [e.describe() for _, e in sorted(experiments.active.items())]})


@router.get(
    "/ab/{model}",
    summary="Experiment report: per variant requests, outcomes, metric with 95 % CI; test, p-value, "
    "sample size still needed, recommendation",
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def experiment_report(model: NameParam, experiments: ExperimentsDep) -> Response:
    return _json(experiments.report(model))


@router.put(
    "/ab/{model}",
    dependencies=[ApiKeyDep],
    summary="Change (or start) the routing of a model at runtime",
    responses=_ERRORS,
    openapi_extra=json_body_doc(RoutingUpdate),
)
async def update_routing(model: NameParam, request: Request, experiments: ExperimentsDep) -> Response:
    body = validate_model(
        RoutingUpdate, parse_json(await request.body(), request.headers.get("content-type"))
    )
    nullable = {"sticky_key", "max_error_rate"}  # null clears these; for the others null means "keep"
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k in nullable}
    exp = await run_in_threadpool(experiments.update, model, changes)
    return _json(exp.describe())


@router.post(
    "/ab/{model}/promote",
    dependencies=[ApiKeyDep],
    summary="Make the challenger the champion (aliases moved together, recorded in the history)",
    responses=_ERRORS,
)
async def promote(model: NameParam, request: Request, experiments: ExperimentsDep) -> Response:
    actor = actor_of(request)
    return _json(await run_in_threadpool(experiments.promote, model, actor))
