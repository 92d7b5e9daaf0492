"""Online scoring: ``POST /predict`` (sparkpipe's body) and ``POST /invocations`` (MLflow's protocol).

Bodies are parsed with :func:`~sparkpipe.serving.schemas.parse_json` and validated against the model's
input schema by the service: no pydantic union on the hot path.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from sparkpipe.serving.schemas import (
    ErrorResponse,
    InvocationsRequest,
    InvocationsResponse,
    PredictRequest,
    PredictResponse,
    dumps,
    json_body_doc,
    parse_json,
)
from sparkpipe.serving.service import ServiceDep

router = APIRouter(tags=["predict"])
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422)}


@router.post(
    "/predict",
    summary="Score one row (features) or many (instances)",
    responses={200: {"model": PredictResponse}, **_ERRORS},
    openapi_extra=json_body_doc(PredictRequest),
)
async def predict(request: Request, service: ServiceDep) -> Response:
    t0 = time.perf_counter()
    payload = parse_json(await request.body(), request.headers.get("content-type"))
    model, predictions = await service.predict(payload)
    request.scope["sparkpipe.model"] = model.label
    return Response(
        dumps(
            {
                "model": model.name,
                "version": model.version,
                "predictions": predictions,
                "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
            }
        ),
        media_type="application/json",
    )


@router.post(
    "/invocations",
    summary="MLflow scoring protocol (dataframe_split, dataframe_records, instances, inputs)",
    responses={200: {"model": InvocationsResponse}, **_ERRORS},
    openapi_extra=json_body_doc(InvocationsRequest),
)
async def invocations(
    request: Request, service: ServiceDep, model_id: Annotated[str | None, Query(max_length=300)] = None
) -> Response:
    body = await request.body()
    ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype == "text/csv":
        model, predictions = await service.invocations_csv(body, model_id)
    else:
        model, predictions = await service.invocations(parse_json(body, ctype), model_id)
    request.scope["sparkpipe.model"] = model.label
    return Response(dumps({"predictions": predictions}), media_type="application/json")
