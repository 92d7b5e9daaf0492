"""Online scoring: ``POST /predict`` (sparkpipe's body) and ``POST /invocations`` (MLflow's protocol).

Bodies are parsed with :func:`~sparkpipe.serving.schemas.parse_json` and validated against the model's
input schema by the service: no pydantic union on the hot path.

:func:`predict_body` and :func:`invocations_body` are the whole of both endpoints. The running service
answers them through :class:`~sparkpipe.serving.lane.ScoringLane`, which calls these two functions
straight from ASGI (no routing, dependency injection or middleware chain: that cost more than the
model); the routes below call the same functions, give the endpoints their OpenAPI documentation, and
answer whenever the router is used without the lane.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from sparkpipe.serving.loading import LoadedModel
from sparkpipe.serving.routing import Traffic, request_id_from
from sparkpipe.serving.schemas import (
    ErrorResponse,
    InvocationsRequest,
    InvocationsResponse,
    PredictRequest,
    PredictResponse,
    dumps,
    invalid,
    json_body_doc,
    parse_json,
)
from sparkpipe.serving.service import ModelService, ServiceDep

router = APIRouter(tags=["predict"])
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)}
MODEL_ID_MAX = 300


async def predict_body(
    service: ModelService,
    body: bytes,
    content_type: str | None,
    t0: float,
    traffic: Traffic | None = None,
    request_id: str | None = None,
) -> tuple[LoadedModel, bytes]:
    """Answer a ``/predict`` body: the model used and the JSON response (``t0``: request start).

    With ``traffic`` (the running service's), the request is routed by its A/B experiment and logged.
    """
    if traffic is not None:
        return await traffic.predict(body, content_type, t0, request_id_from(request_id))
    model, predictions, imputed = await service.predict(parse_json(body, content_type))
    answer = {"model": model.name, "version": model.version, "predictions": predictions}
    if imputed:  # columns left out of a named row: scored as missing values
        answer["imputed_columns"] = imputed
    answer["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    return model, dumps(answer)


async def invocations_body(
    service: ModelService,
    body: bytes,
    content_type: str | None,
    model_id: str | None,
    traffic: Traffic | None = None,
    request_id: str | None = None,
) -> tuple[LoadedModel, bytes]:
    """Answer an ``/invocations`` body (JSON or ``text/csv``) for ``model_id`` (``None``: default);
    logged (never routed) when ``traffic`` is given."""
    if traffic is not None:
        t0 = time.perf_counter()
        rid = request_id_from(request_id)
        model, content = await invocations_body(service, body, content_type, model_id)
        traffic.log("/invocations", rid, model, body, content, t0)
        return model, content
    if model_id is not None and len(model_id) > MODEL_ID_MAX:
        raise invalid("model_id", f"at most {MODEL_ID_MAX} characters")
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype == "text/csv":
        model, predictions = await service.invocations_csv(body, model_id)
    else:
        model, predictions = await service.invocations(parse_json(body, ctype), model_id)
    return model, dumps({"predictions": predictions})


@router.post(
    "/predict",
    summary="Score one row (features) or many (instances)",
    responses={200: {"model": PredictResponse}, **_ERRORS},
    openapi_extra=json_body_doc(PredictRequest),
)
async def predict(request: Request, service: ServiceDep) -> Response:
    t0 = time.perf_counter()
    model, content = await predict_body(
        service,
        await request.body(),
        request.headers.get("content-type"),
        t0,
        getattr(request.app.state, "traffic", None),
        request.headers.get("x-request-id"),
    )
    request.scope["sparkpipe.model"] = model.label
    return Response(content, media_type="application/json")


@router.post(
    "/invocations",
    summary="MLflow scoring protocol (dataframe_split, dataframe_records, instances, inputs)",
    responses={200: {"model": InvocationsResponse}, **_ERRORS},
    openapi_extra=json_body_doc(InvocationsRequest),
)
async def invocations(
    request: Request,
    service: ServiceDep,
    model_id: Annotated[str | None, Query(max_length=MODEL_ID_MAX)] = None,
) -> Response:
    model, content = await invocations_body(
        service,
        await request.body(),
        request.headers.get("content-type"),
        model_id,
        getattr(request.app.state, "traffic", None),
        request.headers.get("x-request-id"),
    )
    request.scope["sparkpipe.model"] = model.label
    return Response(content, media_type="application/json")
