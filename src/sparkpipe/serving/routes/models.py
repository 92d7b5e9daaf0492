"""Registered and loaded models; reload and alias promotion (key-protected)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from sparkpipe.serving.schemas import (
    AliasRequest,
    ApiError,
    ErrorResponse,
    RollbackRequest,
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

    from sparkpipe.serving.routes.ab import actor_of

    body = validate_model(AliasRequest, parse_json(await request.body(), request.headers.get("content-type")))
    if alias.isdigit():
        raise ApiError(422, "an alias cannot be a number", [("alias", "must not be all digits")])
    return _json(
        await run_in_threadpool(
            service.set_alias, name, alias, str(body.version), body.reason, actor_of(request)
        )
    )


def _model_error(exc: Exception, field: str) -> ApiError:
    return ApiError(404, str(exc).splitlines()[0][:500], [(field, "not found")])


@router.get(
    "/{name}/history",
    summary="Every recorded alias move: time, alias, from, to, reason, actor (oldest first)",
    responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def alias_history(
    name: NameParam,
    service: ServiceDep,
    alias: Annotated[str | None, Query(max_length=100, description="only this alias")] = None,
) -> Response:
    from sparkpipe.errors import ModelError
    from sparkpipe.tracking import alias_history as history

    try:
        events = history(service.registry, name, alias)
    except ModelError as exc:
        raise _model_error(exc, "name") from None
    return _json({"name": name, "history": events})


@router.post(
    "/{name}/rollback",
    dependencies=[ApiKeyDep],
    summary="Point an alias (default champion) back at its previous version",
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
    openapi_extra=json_body_doc(RollbackRequest),
)
async def rollback(name: NameParam, request: Request, service: ServiceDep) -> Response:
    from starlette.concurrency import run_in_threadpool

    from sparkpipe.errors import ModelError
    from sparkpipe.serving.routes.ab import actor_of
    from sparkpipe.tracking import rollback_alias

    raw = await request.body()
    body = (
        validate_model(RollbackRequest, parse_json(raw, request.headers.get("content-type")))
        if raw.strip()
        else RollbackRequest()
    )

    def run() -> dict[str, Any]:
        try:
            service.registry.aliases(name)
        except ModelError as exc:
            raise _model_error(exc, "name") from None
        try:
            move = rollback_alias(
                service.registry,
                name,
                body.alias,
                reason=body.reason or "rollback over HTTP",
                actor=actor_of(request),
            )
        except ModelError as exc:
            raise ApiError(409, str(exc), [("alias", "no previous version")]) from None
        result = service.refresh(names=[name])
        return {"name": name, "move": move.to_dict(), "changed": result["changed"]}

    return _json(await run_in_threadpool(run))
