"""Recommendations of a served ALS model: ``GET``/``POST /recommend/{model}``, ``GET /similar/{model}``.

``{model}`` is any model reference (``name``, ``name@alias``, ``name/version``). The logic is
:mod:`sparkpipe.serving.recommend`'s; these routes parse and format.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from sparkpipe.serving import recommend as svc
from sparkpipe.serving.schemas import ErrorResponse, RecommendRequest, dumps, json_body_doc, parse_json
from sparkpipe.serving.service import ServiceDep

router = APIRouter(tags=["recommend"])
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 422, 503)}


KQuery = Annotated[str | None, Query(max_length=20, description=f"items to return, 1..{svc.MAX_K} (10)")]
"""The ``k`` query parameter (checked by the service, which names it in a 422)."""


def _json(data: object) -> Response:
    return Response(dumps(data), media_type="application/json")


@router.get(
    "/recommend/{model:path}",
    summary="Top-k items for one user (items rated in training excluded); cold-start users flagged",
    responses=_ERRORS,
)
async def recommend(
    model: str,
    service: ServiceDep,
    user: Annotated[str, Query(max_length=200, description="the user id (the config's features.user_col)")],
    k: KQuery = None,
    exclude_seen: Annotated[bool, Query(description="leave out the items the user rated in training")] = True,
) -> Response:
    return _json(await svc.recommend_one(service, model, user, k, exclude_seen))


@router.post(
    "/recommend/{model:path}",
    summary=f'Top-k items for many users: {{"users": [...], "k": 10}} (at most {svc.MAX_USERS} users)',
    responses=_ERRORS,
    openapi_extra=json_body_doc(RecommendRequest),
)
async def recommend_many(model: str, request: Request, service: ServiceDep) -> Response:
    payload = parse_json(await request.body(), request.headers.get("content-type"))
    return _json(await svc.recommend_many(service, model, payload))


@router.get(
    "/similar/{model:path}",
    summary="Items most similar to an item (cosine similarity of the ALS item factors)",
    responses=_ERRORS,
)
async def similar(
    model: str,
    service: ServiceDep,
    item: Annotated[str, Query(max_length=200, description="the item id (the config's features.item_col)")],
    k: KQuery = None,
) -> Response:
    return _json(await svc.similar(service, model, item, k))
