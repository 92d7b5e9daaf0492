"""Prometheus metrics of the prediction service (one registry per application instance).

Exposed at ``GET /metrics`` in the Prometheus text format:

``sparkpipe_requests_total{route,method,status,model,version}``
    Requests answered.
``sparkpipe_request_duration_seconds{route,model,version}``
    Latency histogram from the first byte of the request to the last byte of the answer.
``sparkpipe_predictions_total{model,version,path}``
    Rows scored, by serving path (``numpy`` or ``spark-fallback``).
``sparkpipe_errors_total{type}``
    Error answers by type (``invalid_input``, ``not_found``, ``internal_error`` ...).
``sparkpipe_models_loaded``, ``sparkpipe_model_info{model,version,path}``
    What is being served.
``sparkpipe_model_swaps_total{model}``, ``sparkpipe_jobs_total{kind,status}``
    Hot swaps and finished jobs.
``sparkpipe_drift_statistic{model,feature,statistic}``, ``sparkpipe_drift_detected{model,feature}``,
``sparkpipe_drift_share{model}``, ``sparkpipe_drift_window_rows{model}``
    Drift of each input feature against the training profile (``psi``, ``ks``, ``ks_p_value``,
    ``chi_square``, ``chi_square_p_value``, ``jensen_shannon``), from the latest drift report
    (:mod:`sparkpipe.serving.drift`).

Label children are cached in dicts so the hot path pays one dict lookup per metric.
"""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The metric families of one application, in their own :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sparkpipe_requests",
            "HTTP requests answered",
            ["route", "method", "status", "model", "version"],
            registry=r,
        )
        self.latency = Histogram(
            "sparkpipe_request_duration_seconds",
            "HTTP request latency",
            ["route", "model", "version"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "sparkpipe_predictions", "rows scored", ["model", "version", "path"], registry=r
        )
        self.errors = Counter("sparkpipe_errors", "error answers by type", ["type"], registry=r)
        self.models_loaded = Gauge("sparkpipe_models_loaded", "model versions loaded", registry=r)
        self.model_info = Gauge(
            "sparkpipe_model_info",
            "loaded model versions (value 1)",
            ["model", "version", "path"],
            registry=r,
        )
        self.swaps = Counter("sparkpipe_model_swaps", "hot swaps of a served model", ["model"], registry=r)
        self.jobs = Counter("sparkpipe_jobs", "jobs finished", ["kind", "status"], registry=r)
        self.fallback_batch = Histogram(
            "sparkpipe_fallback_batch_rows",
            "rows per Spark fallback batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=r,
        )
        self.drift_statistic = Gauge(
            "sparkpipe_drift_statistic",
            "drift statistic of an input feature against the training profile",
            ["model", "feature", "statistic"],
            registry=r,
        )
        self.drift_detected = Gauge(
            "sparkpipe_drift_detected", "1 when the feature drifted", ["model", "feature"], registry=r
        )
        self.drift_share = Gauge(
            "sparkpipe_drift_share", "share of the compared features that drifted", ["model"], registry=r
        )
        self.drift_window_rows = Gauge(
            "sparkpipe_drift_window_rows", "logged rows of the latest drift report", ["model"], registry=r
        )
        self._drift_labels: dict[str, list[tuple[Any, tuple[str, ...]]]] = {}
        self._req_children: dict[tuple[str, ...], Any] = {}
        self._lat_children: dict[tuple[str, ...], Any] = {}
        self._pred_children: dict[tuple[str, ...], Any] = {}

    def observe_request(
        self, route: str, method: str, status: int, model: str, version: str, seconds: float
    ) -> None:
        """Count one answered request and record its latency."""
        key = (route, method, str(status), model, version)
        child = self._req_children.get(key)
        if child is None:
            child = self._req_children[key] = self.requests.labels(*key)
        child.inc()
        lkey = (route, model, version)
        lchild = self._lat_children.get(lkey)
        if lchild is None:
            lchild = self._lat_children[lkey] = self.latency.labels(*lkey)
        lchild.observe(seconds)

    def observe_predictions(self, model: str, version: str, path: str, rows: int) -> None:
        """Count scored rows."""
        key = (model, version, path)
        child = self._pred_children.get(key)
        if child is None:
            child = self._pred_children[key] = self.predictions.labels(*key)
        child.inc(rows)

    def error(self, error_type: str) -> None:
        self.errors.labels(error_type).inc()

    def set_models(self, loaded: list[tuple[str, str, str]]) -> None:
        """Publish the loaded ``(model, version, path)`` set."""
        self.model_info.clear()
        for name, version, path in loaded:
            self.model_info.labels(name, version, path).set(1)
        self.models_loaded.set(len(loaded))

    def set_drift(self, model: str, report: dict[str, Any]) -> None:
        """Publish a drift report's per-feature statistics (replacing the model's previous ones)."""
        for gauge, labels in self._drift_labels.pop(model, []):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        published: list[tuple[Any, tuple[str, ...]]] = []
        for f in report["features"]:
            if not f.get("compared"):
                continue
            for stat, value in f["statistics"].items():
                labels = (model, f["feature"], stat)
                self.drift_statistic.labels(*labels).set(value)
                published.append((self.drift_statistic, labels))
            self.drift_detected.labels(model, f["feature"]).set(1 if f["drifted"] else 0)
            published.append((self.drift_detected, (model, f["feature"])))
        self._drift_labels[model] = published
        self.drift_share.labels(model).set(report["drift_share"])
        self.drift_window_rows.labels(model).set(report["window_rows"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request and counting it by route template.

    Routes that serve a model put ``(name, version)`` in ``scope["sparkpipe.model"]`` so the
    request is labelled with it.
    """

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "<unmatched>"
            model, version = scope.get("sparkpipe.model") or ("", "")
            self.metrics.observe_request(
                path, scope.get("method", ""), status, model, version, time.perf_counter() - t0
            )


def get_metrics(request: Request) -> ServiceMetrics:
    """FastAPI dependency: the application's metrics."""
    return request.app.state.metrics


MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
