"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from sparkpipe.serving.metrics import CONTENT_TYPE, MetricsDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus text exposition", response_class=PlainTextResponse)
async def metrics(request: Request, metrics: MetricsDep) -> Response:
    monitor = getattr(request.app.state, "drift", None)
    if monitor is not None:  # drift gauges recomputed at most every deployment.drift.metrics_refresh_seconds
        await run_in_threadpool(monitor.refresh_gauges)
    return Response(metrics.render(), media_type=CONTENT_TYPE)
