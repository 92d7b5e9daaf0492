"""The ceiling of ``benchmarks/serving.py``: a bare ASGI app answering every request with a fixed small
JSON body, served by the same server stack as ``sparkpipe serve`` (uvicorn with the same options, one
worker). It reads the request body, as a scoring request needs, and does nothing else.

    .venv/bin/python benchmarks/hello_asgi.py --port 8001
"""

from __future__ import annotations

import argparse
from typing import Any

_BODY = b'{"hello":"world"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # the whole request body, as the scoring lane reads it
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def main() -> None:
    import uvicorn

    from sparkpipe.serving.app import uvicorn_options
    from sparkpipe.serving.settings import ServingSettings

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    settings = ServingSettings(host="127.0.0.1", port=args.port, log_level="warning")
    uvicorn.run(app, **uvicorn_options(settings))


if __name__ == "__main__":
    main()
