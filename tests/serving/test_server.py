"""A real uvicorn on loopback: start, serve /predict over HTTP, stop (no timing asserted)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from sparkpipe.serving.app import create_app

from .conftest import MODEL, make_settings


def test_uvicorn_smoke(registered: dict[str, Any], tmp_path: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(make_settings(registered, tmp_path, port=port))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if http.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            latencies = []
            for _ in range(50):
                t0 = time.perf_counter()
                r = http.post("/predict", json={"model_id": MODEL, "features": ["pro", 33.5, 4]})
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
            assert r.json()["version"] == "1"
            assert (
                http.post("/predict", content=b"{", headers={"content-type": "application/json"}).status_code
                == 400
            )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
