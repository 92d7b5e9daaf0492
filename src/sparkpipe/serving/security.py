"""API-key protection of mutating endpoints, path confinement and the request body limit.

* :func:`require_api_key` -- when ``SPARKPIPE_API_KEY`` is set, mutating endpoints need it in
  ``X-API-Key`` or ``Authorization: Bearer <key>``, compared in constant time; otherwise 401.
* :func:`confine_path` -- a data path given to the API is resolved (symlinks included) and must lie
  inside one of ``allowed_data_roots``: 400 for a malformed path, 403 for one outside the roots.
* :func:`recheck_path` -- the same confinement again at the moment a job process uses a path (the
  path may have been swapped for a symlink since the request was checked).
* :class:`PathScrubber` -- absolute server paths in texts sent to clients become paths relative to the
  allowed data root (or ``.../name`` outside it).
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


def _local_roots(settings: ServingSettings) -> list[Path]:
    """The resolved roots that are directories (not URI prefixes), in configured order."""
    pairs = zip(allowed_roots(settings), settings.allowed_data_roots, strict=True)
    return list(dict.fromkeys(r for r, raw in pairs if not _SCHEME_RE.match(raw)))


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
                [(field, "outside the allowed data roots")],
            )
        value = uri
    _check_components(value, field)
    local_roots = _local_roots(settings)
    if not local_roots:
        raise ApiError(403, f"{field}: no local data roots are configured", [(field, "no local data roots")])
    p = Path(value)  # taken literally: no ~ or $VAR expansion of request values
    if not p.is_absolute():
        p = local_roots[0] / p
    resolved = Path(os.path.realpath(p))
    if _inside(resolved, local_roots):
        return str(resolved)
    log.warning("refused %s=%r: resolves to %s outside %s", field, value, resolved, local_roots)
    raise ApiError(
        403,
        f"{field}: {value!r} resolves outside the allowed data roots; give a path relative to the data "
        "root (no '..', no symlinks leading out)",
        [(field, "outside the allowed data roots")],
    )


NAME_MAX = 255
PATH_MAX = 4096


def _check_components(value: str, field: str) -> None:
    """400 when a path component or the whole path is longer than the file system allows."""
    if len(value.encode("utf-8", "surrogatepass")) > PATH_MAX:
        raise ApiError(400, f"{field}: the path is longer than {PATH_MAX} bytes", [(field, "path too long")])
    for part in value.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX:
            raise ApiError(
                400,
                f"{field}: a path component is longer than {NAME_MAX} bytes ({_clip(part)})",
                [(field, f"path component longer than {NAME_MAX} bytes")],
            )


def _clip(text: str, n: int = 24) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def is_data_root(path: str | Path, settings: ServingSettings) -> bool:
    """True when ``path`` (resolved) is one of the allowed data roots or a directory above one."""
    p = Path(os.path.realpath(path))
    return any(p == r or r.is_relative_to(p) for r in allowed_roots(settings))


def recheck_path(path: str, field: str, roots: list[str]) -> str:
    """Confine ``path`` again where it is used (a job process): resolved, every symlink followed.

    Parameters
    ----------
    path
        The absolute path the server accepted (URIs are returned unchanged: they were checked against
        a URI root and have no symlinks).
    field
        Named in the error.
    roots
        The allowed data roots of the server that started the job.

    Raises
    ------
    PermissionError
        When the path now resolves outside every root (e.g. a directory was replaced by a symlink
        after the request was checked).
    """
    if _SCHEME_RE.match(path) or path.startswith(BUILTIN_PREFIX):
        return path
    local = [Path(os.path.realpath(os.path.expanduser(r))) for r in roots if not _SCHEME_RE.match(r)]
    resolved = Path(os.path.realpath(path))
    if not local or not _inside(resolved, local):
        raise PermissionError(
            f"{field}: {path} now resolves to {resolved}, outside the allowed data roots; refusing to use it"
        )
    return str(resolved)


# ================================================================================= path scrubbing
_ABS_RE = re.compile(r"(?<![\w.~\-])/+[^\s'\"`,;()\[\]{}<>|]*/[^\s'\"`,;()\[\]{}<>|]*")


class PathScrubber:
    """Rewrite absolute server paths in texts meant for clients.

    Paths inside an allowed data root become relative to it (``data/x.csv``); the model cache, the jobs
    directory and anything else become ``.../<last component>``. Strings are rewritten inside nested
    lists and mappings too (:meth:`obj`).
    """

    def __init__(self, settings: ServingSettings):
        self.roots = sorted({str(r) for r in _local_roots(settings)}, key=len, reverse=True)

    def path(self, value: str) -> str:
        """One absolute path as shown to clients."""
        stripped = "/" + value.lstrip("/")
        for root in self.roots:
            if stripped == root:
                return "."
            if stripped.startswith(root.rstrip("/") + "/"):
                return stripped[len(root.rstrip("/")) + 1 :]
        name = stripped.rstrip("/").rsplit("/", 1)[-1]
        return f".../{name}" if name else "..."

    def text(self, value: str) -> str:
        return _ABS_RE.sub(self._sub, value) if "/" in value else value

    def _sub(self, m: re.Match[str]) -> str:
        found = m.group(0)
        if m.start() and m.string[m.start() - 1] == ":" and not found.startswith("///"):
            return found  # a URI such as models:/name/1, runs:/id/model or http://host/x
        return self.path(found)

    def obj(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.obj(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.obj(v) for v in value]
        return value


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
