"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from sparkpipe.serving.metrics import CONTENT_TYPE, MetricsDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus text exposition", response_class=PlainTextResponse)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE)
