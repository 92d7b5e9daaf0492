"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from sparkpipe.serving.schemas import dumps
from sparkpipe.serving.service import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: 200 while the process runs")
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/ready",
    summary="Readiness: 200 when the configured models are loaded, else 503",
    responses={503: {"description": "models not loaded yet (or failed to load)"}},
)
async def ready(service: ServiceDep) -> Response:
    status = service.status()
    status["status"] = "ready" if status["ready"] else "not ready"
    return Response(dumps(status), status_code=200 if status["ready"] else 503, media_type="application/json")
