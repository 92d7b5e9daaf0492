"""HTTP routes, one router per resource. Routes parse, call a service, format; nothing more."""

from __future__ import annotations

from sparkpipe.serving.routes import ab, health, jobs, metrics, models, monitoring, predict, recommend

ROUTERS = (
    health.router,
    predict.router,
    models.router,
    jobs.router,
    metrics.router,
    ab.router,
    monitoring.router,
    recommend.router,
)

__all__ = ["ROUTERS"]
