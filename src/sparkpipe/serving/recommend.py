"""Recommendations and similar items of a served ALS model (``/recommend``, ``/similar``), and the
cold-start reasons added to its ``/predict`` answers.

The model reference resolves like every other one (``name``, ``name@alias``, ``name/version``,
loaded on first use); the work is :class:`sparkpipe.scoring.recommend.Recommender`'s (NumPy over the
factors and the fit-time index, no JVM).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import InputError
from sparkpipe.scoring.recommend import MAX_K, Recommender, UnknownIdError, check_k, typed_id
from sparkpipe.serving.schemas import ApiError, invalid

if TYPE_CHECKING:
    from sparkpipe.serving.loading import LoadedModel
    from sparkpipe.serving.service import ModelService

MAX_USERS = 1000
"""Users one ``POST /recommend`` may ask for."""
_INT_RE = re.compile(r"^[+-]?\d{1,10}$")


def recommender_of(model: LoadedModel) -> Recommender:
    """The model's recommender, or a 400 saying the model is not one."""
    rec = model.recommender
    if rec is None:
        raise ApiError(
            400,
            f"model {model.name}/{model.version} is not a recommender (its pipeline has no ALS model); "
            "/recommend and /similar serve ALS models (model.algorithm: als)",
            [("model", "not a recommender")],
        )
    return rec


def query_k(value: str | None) -> int:
    """``k`` from a query string (default 10), 1..MAX_K."""
    if value is None:
        return 10
    if not _INT_RE.match(value.strip()):
        raise invalid("k", f"must be an integer from 1 to {MAX_K}, got {value!r}")
    return _k(int(value))


def _k(value: Any) -> int:
    try:
        return check_k(value)
    except InputError as exc:
        raise invalid("k", exc.detail if hasattr(exc, "detail") else str(exc)) from None


def _api_error(exc: InputError) -> ApiError:
    field = getattr(exc, "field", None) or "body"
    detail = getattr(exc, "detail", None) or str(exc)
    if isinstance(exc, UnknownIdError):
        return ApiError(404, f"{field}: {detail}", [(field, detail)])
    return invalid(field, detail)


def _header(model: LoadedModel, k: int) -> dict[str, Any]:
    return {"model": model.name, "version": model.version, "k": k}


async def recommend_one(
    service: ModelService, model_ref: str, user: str, k: str | None, exclude_seen: bool = True
) -> dict[str, Any]:
    """``GET /recommend/{model}?user=&k=``: the top-k items of one user (query-string values)."""
    kk = query_k(k)
    model = await service.aget(model_ref)
    rec = recommender_of(model)
    try:
        answer = rec.recommend(typed_id(user, rec.user_type, "user"), kk, exclude_seen=exclude_seen)
    except InputError as exc:
        raise _api_error(exc) from None
    service.metrics.observe_predictions(model.name, model.version, "recommend", 1)
    return {**_header(model, kk), **answer.to_dict()}


async def recommend_many(service: ModelService, model_ref: str, payload: Any) -> dict[str, Any]:
    """``POST /recommend/{model}`` with ``{"users": [...], "k": 10, "exclude_seen": true}``."""
    if not isinstance(payload, dict):
        raise invalid("body", 'must be a JSON object such as {"users": [1, 2], "k": 10}')
    unknown = sorted(set(payload) - {"users", "k", "exclude_seen"})
    if unknown:
        raise invalid(unknown[0], "unknown field; the fields are users, k and exclude_seen")
    users = payload.get("users")
    if not isinstance(users, list) or not users:
        raise invalid("users", "required: a non-empty list of user ids")
    if len(users) > MAX_USERS:
        raise invalid("users", f"at most {MAX_USERS} users per request, got {len(users)}")
    kk = _k(payload.get("k", 10))
    exclude = payload.get("exclude_seen", True)
    if not isinstance(exclude, bool):
        raise invalid("exclude_seen", f"must be true or false, got {exclude!r}")
    model = await service.aget(model_ref)
    rec = recommender_of(model)
    out = []
    for i, user in enumerate(users):
        if isinstance(user, (dict, list)):
            raise invalid(f"users[{i}]", "must be a user id (a number or a string)")
        try:
            out.append(rec.recommend(user, kk, exclude_seen=exclude).to_dict())
        except InputError as exc:
            err = _api_error(exc)
            where = f"users[{i}]"
            raise ApiError(err.status, f"{where}: {exc.detail}", [(where, exc.detail)]) from None
    service.metrics.observe_predictions(model.name, model.version, "recommend", len(users))
    return {**_header(model, kk), "recommendations": out}


async def similar(service: ModelService, model_ref: str, item: str, k: str | None) -> dict[str, Any]:
    """``GET /similar/{model}?item=&k=``: the items closest to ``item`` by factor cosine similarity."""
    kk = query_k(k)
    model = await service.aget(model_ref)
    rec = recommender_of(model)
    try:
        answer = rec.similar(typed_id(item, rec.item_type, "item"), kk)
    except InputError as exc:
        raise _api_error(exc) from None
    return {**_header(model, kk), **answer}


def flag_cold_pairs(model: LoadedModel, cols: dict[str, list[Any]], preds: list[dict[str, Any]]) -> None:
    """Add ``cold_start: true`` and the ``reason`` to each ``/predict`` answer of a recommender whose
    user or item is unknown (its prediction is null), in place."""
    rec = model.recommender
    if rec is None or rec.user_col not in cols or rec.item_col not in cols:
        return
    reasons = rec.pair_reasons(cols[rec.user_col], cols[rec.item_col])
    for pred, reason in zip(preds, reasons, strict=False):
        if reason is not None:
            pred["cold_start"] = True
            pred["reason"] = reason
