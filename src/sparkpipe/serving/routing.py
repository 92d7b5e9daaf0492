"""The scoring endpoints' traffic layer: request ids, champion/challenger routing, the prediction log.

:class:`Traffic` sits between the endpoint functions (:mod:`sparkpipe.serving.routes.predict`) and the
:class:`~sparkpipe.serving.service.ModelService`:

* every request gets an id: the client's ``X-Request-ID`` header (letters, digits and ``._:-``, at
  most 128) or a new UUID; ``POST /feedback`` refers to it;
* a ``/predict`` request naming a model that has a running experiment by its bare name (or naming no
  model when that model is the default) is routed to the champion or challenger reference
  (:class:`~sparkpipe.serving.experiments.Experiment`); the answer names ``variant`` and ``version``.
  A request naming ``name@alias`` or ``name/version`` is never routed. When the challenger fails on a
  request the champion answers (the failure counts towards the challenger's error rate);
* in shadow mode the challenger scores the same request after the champion's answer is sent;
* every answered prediction is appended to the :class:`~sparkpipe.serving.predlog.PredictionLog`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
import uuid
from typing import Any

from sparkpipe.serving.experiments import CHALLENGER, CHAMPION, Experiment, ExperimentManager
from sparkpipe.serving.loading import LoadedModel
from sparkpipe.serving.predlog import PredictionLog
from sparkpipe.serving.schemas import ApiError, dumps, invalid, parse_json
from sparkpipe.serving.service import ModelService

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class _RequestIds:
    """New request ids: 32 hex digits, a random half drawn once per process (again after a fork) and a
    counter (a UUID4 per request costs a system call for its randomness)."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


new_request_id = _RequestIds()


def request_id_from(value: str | None) -> str:
    """The client's request id when valid, else a new one; 422 naming the header for a bad value."""
    if value is None:
        return new_request_id()
    if not _REQUEST_ID.match(value):
        raise ApiError(
            422,
            "X-Request-ID: at most 128 letters, digits or . _ : -",
            [("X-Request-ID", "at most 128 letters, digits or . _ : -")],
        )
    return value


class Traffic:
    """Routing and logging around the model service (see the module docstring)."""

    def __init__(
        self, service: ModelService, predlog: PredictionLog | None, experiments: ExperimentManager | None
    ):
        self.service = service
        self.predlog = predlog
        self.experiments = experiments
        self._noted: set[tuple[str, str]] = set()
        self._shadow_tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ /predict
    async def predict(
        self, body: bytes, content_type: str | None, t0: float, request_id: str
    ) -> tuple[LoadedModel, bytes]:
        """Answer a ``/predict`` body: the model used and the JSON response."""
        payload = parse_json(body, content_type)
        exp = self._experiment_for(payload)
        variant = None
        if exp is None:
            model, preds, imputed = await self.service.predict(payload)
        else:
            variant = exp.choose(self._sticky(exp, payload) or request_id)
            model, preds, imputed, variant = await self._routed(exp, payload, variant, request_id)
        answer: dict[str, Any] = {"model": model.name, "version": model.version, "predictions": preds}
        if imputed:  # columns left out of a named row: scored as missing values
            answer["imputed_columns"] = imputed
        answer["variant"] = variant
        answer["request_id"] = request_id
        latency = (time.perf_counter() - t0) * 1000
        answer["latency_ms"] = round(latency, 3)
        content = dumps(answer)
        if self.predlog is not None:
            self._note(model)
            self.predlog.append(
                request_id,
                "/predict",
                model.name,
                model.version,
                variant,
                exp.id if exp is not None else None,
                200,
                latency,
                body,
                content,
            )
        if exp is not None and exp.shadowing:
            task = asyncio.get_running_loop().create_task(self._shadow(exp, payload, request_id, body))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)
        return model, content

    def log(
        self, route: str, request_id: str, model: LoadedModel, body: bytes, content: bytes, t0: float
    ) -> None:
        """Log an unrouted prediction (``/invocations``)."""
        if self.predlog is not None:
            self._note(model)
            latency = (time.perf_counter() - t0) * 1000
            self.predlog.append(
                request_id, route, model.name, model.version, None, None, 200, latency, body, content
            )

    def _note(self, model: LoadedModel) -> None:
        key = model.label
        if key not in self._noted:
            self._noted.add(key)
            self.predlog.note_schema(model.name, model.version, model.names)  # type: ignore[union-attr]

    def _experiment_for(self, payload: Any) -> Experiment | None:
        if self.experiments is None or not self.experiments.active or type(payload) is not dict:
            return None
        model_id = payload.get("model_id")
        if model_id is None:
            default = self.service.default_model()
            name = default.name if default is not None else None
        elif type(model_id) is str:
            name = model_id.strip().removeprefix("models:/")
        else:
            return None
        exp = self.experiments.active.get(name) if name else None
        if exp is None:
            return None
        if not exp.routing:  # clients keep sending the sticky key after the experiment ended
            key = exp.cfg.sticky_key
            if key and key not in ("model_id", "features", "instances"):
                payload.pop(key, None)
            return None
        return exp

    @staticmethod
    def _sticky(exp: Experiment, payload: dict[str, Any]) -> str | None:
        key = exp.cfg.sticky_key
        if not key:
            return None
        if key in payload and key not in ("model_id", "features", "instances"):
            value = payload.pop(key)
        elif type(payload.get("features")) is dict and key in payload["features"]:
            value = payload["features"][key]
        else:
            return None
        if value is None or type(value) not in (str, int, float, bool):
            raise invalid(key, "the sticky key must be a string or a number")
        return str(value)

    async def _routed(
        self, exp: Experiment, payload: dict[str, Any], variant: str, request_id: str
    ) -> tuple[LoadedModel, list[dict[str, Any]], list[str], str]:
        payload["model_id"] = exp.refs[variant]
        manager = self.experiments
        assert manager is not None
        if variant == CHALLENGER:
            try:
                model, preds, imputed = await self.service.predict(payload)
                manager.observe_request(exp, CHALLENGER, True)
                return model, preds, imputed, CHALLENGER
            except Exception as challenger_error:
                payload["model_id"] = exp.refs[CHAMPION]
                model, preds, imputed = await self.service.predict(payload)  # a bad request fails here too
                manager.observe_request(exp, CHALLENGER, False)
                self._log_error(exp, request_id, challenger_error)
                manager.observe_request(exp, CHAMPION, True)
                return model, preds, imputed, CHAMPION
        model, preds, imputed = await self.service.predict(payload)
        manager.observe_request(exp, CHAMPION, True)
        return model, preds, imputed, CHAMPION

    def _log_error(self, exp: Experiment, request_id: str, exc: Exception) -> None:
        """Log a challenger failure the champion then answered (it counts in the error rate)."""
        if self.predlog is None:
            return
        status = exc.status if isinstance(exc, ApiError) else 500
        self.predlog.append(
            request_id,
            "/predict",
            exp.model,
            None,
            CHALLENGER,
            exp.id,
            status,
            None,
            None,
            None,
            error=str(exc)[:500],
        )

    async def _shadow(self, exp: Experiment, payload: dict[str, Any], request_id: str, body: bytes) -> None:
        """Score the challenger on a request the champion answered; log it as a shadow row."""
        t0 = time.perf_counter()
        manager = self.experiments
        assert manager is not None
        try:
            model, preds, _ = await self.service.predict({**payload, "model_id": exp.refs[CHALLENGER]})
        except Exception as exc:
            manager.observe_request(exp, CHALLENGER, False)
            if self.predlog is not None:
                self.predlog.append(
                    request_id,
                    "/predict",
                    exp.model,
                    None,
                    CHALLENGER,
                    exp.id,
                    exc.status if isinstance(exc, ApiError) else 500,
                    None,
                    body,
                    None,
                    shadow=True,
                    error=str(exc)[:500],
                )
            return
        manager.observe_request(exp, CHALLENGER, True)
        if self.predlog is not None:
            content = dumps({"model": model.name, "version": model.version, "predictions": preds})
            self.predlog.append(
                request_id,
                "/predict",
                model.name,
                model.version,
                CHALLENGER,
                exp.id,
                200,
                (time.perf_counter() - t0) * 1000,
                body,
                content,
                shadow=True,
            )

    async def drain(self) -> None:
        """Wait for shadow scoring still running (shutdown)."""
        if self._shadow_tasks:
            await asyncio.gather(*list(self._shadow_tasks), return_exceptions=True)
