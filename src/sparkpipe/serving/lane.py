"""The scoring lane: ``POST /predict`` and ``POST /invocations`` answered straight from ASGI.

A single-row prediction costs about 150 µs of NumPy; FastAPI's routing, dependency injection,
request object and five middleware layers cost more than that again, per request. The lane does
only what those layers did for these two endpoints, in one function:

* the body limit (``max_body_bytes``): 413 from ``Content-Length`` alone, or as soon as a streamed
  body crosses it, so an oversized body is never read into memory;
* the endpoint itself (:func:`~sparkpipe.serving.routes.predict.predict_body` and
  :func:`~sparkpipe.serving.routes.predict.invocations_body`, the same code the documented routes run);
* errors as JSON naming the field (:class:`~sparkpipe.serving.schemas.ApiError`), an unexpected
  exception as a logged 500 without a traceback, a client that hangs up counted, not logged;
* the request metrics (count and latency by route, model and version).

Every other request, and every other method on these paths, goes through the FastAPI application.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from sparkpipe.serving.metrics import ServiceMetrics
from sparkpipe.serving.routes.predict import invocations_body, predict_body
from sparkpipe.serving.routing import Traffic
from sparkpipe.serving.schemas import ApiError, dumps
from sparkpipe.serving.security import BodyTooLarge
from sparkpipe.serving.service import ModelService

log = logging.getLogger(__name__)
PATHS = frozenset({"/predict", "/invocations"})
_JSON = (b"content-type", b"application/json")


class _Disconnected(Exception):
    """The client closed the connection before its body arrived."""


class ScoringLane:
    """ASGI handler of the two scoring endpoints (``POST`` only; see the module docstring).

    Parameters
    ----------
    service
        The model service that validates and scores.
    metrics
        The application's metrics.
    limit
        ``max_body_bytes``.
    """

    def __init__(
        self, service: ModelService, metrics: ServiceMetrics, limit: int, traffic: Traffic | None = None
    ):
        self.service = service
        self.metrics = metrics
        self.limit = limit
        self.traffic = traffic
        """Routing and the prediction log (:mod:`sparkpipe.serving.routing`); ``None``: neither."""

    @staticmethod
    def handles(scope: dict[str, Any]) -> bool:
        """True for ``POST /predict`` and ``POST /invocations``."""
        return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in PATHS

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        path = scope["path"]
        label: tuple[str, str] = ("", "")
        status = 500
        answered = False
        try:
            try:
                content_type, length, request_id = _headers(scope)
                if length is not None and length > self.limit:
                    raise BodyTooLarge(self.limit)
                body = await self._body(receive)
                if path == "/predict":
                    model, content = await predict_body(
                        self.service, body, content_type, t0, self.traffic, request_id
                    )
                else:
                    model_id = _query_value(scope, "model_id")
                    model, content = await invocations_body(
                        self.service, body, content_type, model_id, self.traffic, request_id
                    )
                label, status, answered = model.label, 200, True
                await _answer(send, 200, content)
            except ApiError as exc:
                status = exc.status
                self.metrics.error(exc.error_type)
                headers = [
                    (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()
                ]
                if isinstance(exc, BodyTooLarge):  # the rest of the body is not read: end the connection
                    headers.append((b"connection", b"close"))
                answered = True
                await _answer(send, exc.status, dumps(exc.body()), headers)
        except _Disconnected:  # nobody to answer, nothing to log
            self.metrics.error("client_disconnect")
            return
        except Exception:
            log.exception("unexpected error answering POST %s", path)
            self.metrics.error("internal_error")
            status = 500
            if answered:  # the answer was on its way: nothing more can be sent
                return
            error = ApiError(500, "internal server error; the incident was logged")
            await _answer(send, 500, dumps(error.body()))
        self.metrics.observe_request(path, "POST", status, *label, time.perf_counter() - t0)

    async def _body(self, receive: Any) -> bytes:
        """The whole request body, refused with 413 once it crosses the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise BodyTooLarge(self.limit)
            if not message.get("more_body", False):
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)


def _headers(scope: dict[str, Any]) -> tuple[str | None, int | None, str | None]:
    """``Content-Type``, ``Content-Length`` (400 when not an integer) and ``X-Request-ID``."""
    content_type = length = request_id = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"x-request-id":
            request_id = value.decode("latin-1")
        elif name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise ApiError(
                    400, "invalid Content-Length header", [("Content-Length", "not an integer")]
                ) from None
    return content_type, length, request_id


def _query_value(scope: dict[str, Any], key: str) -> str | None:
    """The last value of query parameter ``key`` (as Starlette reads it), or ``None``."""
    raw = scope.get("query_string", b"")
    if not raw:
        return None
    value = None
    for k, v in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if k == key:
            value = v
    return value


async def _answer(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    start = [_JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        start.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})
