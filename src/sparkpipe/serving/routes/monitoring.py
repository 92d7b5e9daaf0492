"""Drift monitoring: ``GET /monitoring/{model}/drift`` (the training profile against the prediction log)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from sparkpipe.serving.drift import DriftMonitor, parse_since
from sparkpipe.serving.schemas import ErrorResponse, dumps

router = APIRouter(tags=["monitoring"])
_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse} for c in (404, 409, 422)}


@router.get(
    "/monitoring/{model}/drift",
    summary="Drift of each input feature: the model's training profile against its latest logged inputs "
    "(PSI and KS for numbers, chi-square and Jensen-Shannon for categories)",
    responses=_ERRORS,
)
def drift(
    request: Request,
    model: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]+$", max_length=200)],
    window: Annotated[
        int | None,
        Query(
            ge=1, le=1_000_000, description="latest logged rows compared (default deployment.drift.window)"
        ),
    ] = None,
    since: Annotated[
        str | None, Query(max_length=40, description="only rows logged since (Unix seconds or ISO 8601)")
    ] = None,
) -> Response:
    monitor: DriftMonitor = request.app.state.drift
    report = monitor.report(model, window, parse_since(since))
    return Response(dumps(report), media_type="application/json")
