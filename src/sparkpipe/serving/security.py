"""API-key protection of mutating endpoints, path confinement and the request body limit.

* :func:`require_api_key` -- when ``SPARKPIPE_API_KEY`` is set, mutating endpoints need it in
  ``X-API-Key`` or ``Authorization: Bearer <key>``, compared in constant time; otherwise 401.
* :func:`confine_path` -- a data path given to the API is resolved (symlinks included) and must lie
  inside one of ``allowed_data_roots``: 400 for a malformed path, 403 for one outside the roots.
* :class:`BodyLimitMiddleware` -- a pure ASGI middleware answering 413 for bodies above
  ``max_body_bytes`` from ``Content-Length`` alone, or as soon as a streamed body crosses the limit,
  so an unbounded body is never read into memory.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from sparkpipe.serving.schemas import ApiError
from sparkpipe.serving.settings import ServingSettings, get_settings

log = logging.getLogger(__name__)

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
BUILTIN_PREFIX = "builtin:"


# ============================================================================================ API key
def check_api_key(settings: ServingSettings, x_api_key: str | None, authorization: str | None) -> None:
    """Raise a 401 :class:`ApiError` unless the request carries the configured key (if any)."""
    expected = settings.api_key_value()
    if not expected:
        return
    supplied = x_api_key
    if supplied is None and authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            supplied = token.strip()
    if supplied is None:
        raise ApiError(
            401,
            "this endpoint needs an API key: send it in the X-API-Key header or as "
            "Authorization: Bearer <key>",
            [("X-API-Key", "missing")],
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(supplied.encode("utf-8", "surrogatepass"), expected.encode()):
        raise ApiError(
            401,
            "the API key is not valid",
            [("X-API-Key", "invalid key")],
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_api_key(request: Request, settings: Annotated[ServingSettings, Depends(get_settings)]) -> None:
    """FastAPI dependency guarding mutating endpoints (no-op when no key is configured)."""
    check_api_key(settings, request.headers.get("x-api-key"), request.headers.get("authorization"))


ApiKeyDep = Depends(require_api_key)


# ================================================================================= path confinement
def allowed_roots(settings: ServingSettings) -> list[Path]:
    """The configured data roots, resolved (symlinks followed) once."""
    return [Path(os.path.realpath(os.path.expanduser(r))) for r in settings.allowed_data_roots]


def confine_path(value: str, field: str, settings: ServingSettings, *, allow_builtin: bool = False) -> str:
    """Resolve a path given to the API and make sure it stays inside ``allowed_data_roots``.

    Parameters
    ----------
    value
        The path as sent. Relative paths are taken relative to the first allowed root.
    field
        The request field, named in errors (``data_path``, ``output_path`` ...).
    settings
        The service settings (``allowed_data_roots``).
    allow_builtin
        Accept ``builtin:NAME`` data sets unchanged.

    Returns
    -------
    str
        The resolved absolute path (or the URI / built-in name, unchanged).

    Raises
    ------
    ApiError
        400 for a malformed path, 403 when it resolves outside every allowed root (``..`` escapes,
        absolute paths elsewhere, symlinks pointing out).
    """
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{field} must be a non-empty path", [(field, "empty path")])
    if "\x00" in value or any(ord(c) < 32 for c in value):
        raise ApiError(400, f"{field} contains control characters", [(field, "control characters in path")])
    if allow_builtin and value.startswith(BUILTIN_PREFIX):
        if not re.fullmatch(r"builtin:[A-Za-z0-9_\-]+", value):
            raise ApiError(
                400, f"{field}: {value!r} is not a built-in data set name", [(field, "bad built-in name")]
            )
        return value
    roots_raw = list(dict.fromkeys(settings.allowed_data_roots))
    if _SCHEME_RE.match(value) or value.startswith("file:"):
        # URIs (s3a://, hdfs://, file:) are allowed only under a root written as the same URI prefix.
        uri = value
        if uri.startswith("file:"):
            from urllib.parse import unquote, urlparse

            uri = unquote(urlparse(uri).path)
        else:
            if ".." in value.split("/"):
                raise ApiError(403, f"{field}: '..' is not allowed in a URI", [(field, "'..' in URI")])
            for root in roots_raw:
                if _SCHEME_RE.match(root) and value.startswith(root.rstrip("/") + "/"):
                    return value
            raise ApiError(
                403,
                f"{field}: {value!r} is outside the allowed data roots",
                [(field, f"outside the allowed data roots ({', '.join(roots_raw)})")],
            )
        value = uri
    roots = allowed_roots(settings)
    local_roots = [r for r, raw in zip(roots, roots_raw, strict=False) if not _SCHEME_RE.match(raw)]
    if not local_roots:
        raise ApiError(403, f"{field}: no local data roots are configured", [(field, "no local data roots")])
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = local_roots[0] / p
    resolved = Path(os.path.realpath(p))
    for root in local_roots:
        if resolved == root or resolved.is_relative_to(root):
            return str(resolved)
    log.warning("refused %s=%r: resolves to %s outside %s", field, value, resolved, local_roots)
    raise ApiError(
        403,
        f"{field}: {value!r} resolves outside the allowed data roots",
        [(field, f"outside the allowed data roots ({', '.join(map(str, local_roots))})")],
    )


# ================================================================================== body size limit
class BodyTooLarge(ApiError):
    """Raised from ``receive`` when a streamed body crosses the limit."""

    def __init__(self, limit: int):
        super().__init__(
            413,
            f"the request body exceeds {limit} bytes (max_body_bytes)",
            [("body", f"larger than {limit} bytes")],
        )


class BodyLimitMiddleware:
    """Pure ASGI middleware enforcing ``max_body_bytes`` without buffering the body.

    Parameters
    ----------
    app
        The wrapped ASGI application.
    limit
        Maximum body size in bytes.
    """

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_error(
                        send,
                        ApiError(
                            400, "invalid Content-Length header", [("Content-Length", "not an integer")]
                        ),
                    )
                    return
                if length > limit:
                    await _drain_refuse(send, limit)
                    return
                break
        received = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _send_error(send, exc)


async def _drain_refuse(send: Any, limit: int) -> None:
    await _send_error(send, BodyTooLarge(limit), close=True)


async def _send_error(send: Any, exc: ApiError, close: bool = False) -> None:
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
