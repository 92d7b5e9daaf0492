"""Registered and loaded models; reload and alias promotion (key-protected)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from sparkpipe.serving.schemas import (
    AliasRequest,
    ApiError,
    ErrorResponse,
    dumps,
    json_body_doc,
    parse_json,
    validate_model,
)
from sparkpipe.serving.security import ApiKeyDep
from sparkpipe.serving.service import ServiceDep

router = APIRouter(prefix="/models", tags=["models"])
_NAME = r"^[A-Za-z0-9_.\-]+$"
NameParam = Annotated[str, Path(pattern=_NAME, max_length=200)]


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type="application/json")


@router.get("", summary="Registered models with versions, aliases, metrics, and what is loaded")
def list_models(service: ServiceDep) -> Response:
    return _json({"models": service.list_models(), "default": service.status()["default"]})


@router.get(
    "/{name}",
    summary="One model: versions, aliases, metrics, serving path, input schema and example",
    responses={404: {"model": ErrorResponse}},
)
def get_model(name: NameParam, service: ServiceDep) -> Response:
    return _json(service.model_info(name))


@router.post(
    "/{name}/reload",
    dependencies=[ApiKeyDep],
    summary="Re-resolve and (re)load a model now",
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)
def reload_model(
    name: NameParam,
    service: ServiceDep,
    force: Annotated[bool, Query(description="recompile even if the version is unchanged")] = False,
) -> Response:
    result = service.reload(name, force=force)
    return _json(result)


@router.post(
    "/{name}/aliases/{alias}",
    dependencies=[ApiKeyDep],
    summary="Point an alias at a version (promote)",
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
    openapi_extra=json_body_doc(AliasRequest),
)
async def set_alias(
    name: NameParam,
    alias: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]*[A-Za-z_.\-][A-Za-z0-9_.\-]*$", max_length=100)],
    request: Request,
    service: ServiceDep,
) -> Response:
    from starlette.concurrency import run_in_threadpool

    body = validate_model(AliasRequest, parse_json(await request.body(), request.headers.get("content-type")))
    if alias.isdigit():
        raise ApiError(422, "an alias cannot be a number", [("alias", "must not be all digits")])
    return _json(await run_in_threadpool(service.set_alias, name, alias, str(body.version)))
