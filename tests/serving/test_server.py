"""A real uvicorn on loopback: start, serve /predict over HTTP, stop (no timing asserted)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from sparkpipe.serving.app import create_app

from .conftest import MODEL, make_settings, stop_process_group


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


# ------------------------------------------------------------------- graceful SIGTERM (issue 11 item 10)
_REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bool] | None:
    """``(status, connection_close)`` of one response, ``None`` when the server closed first."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        rest += chunk
    buf[:] = rest[length:]
    return int(lines[0].split()[1]), headers.get("connection", "").lower() == "close"


def _keep_alive_client(port: int, stop_after: threading.Event, out: dict[str, Any]) -> None:
    """Send /predict requests on one connection until the server answers Connection: close."""
    import json
    import random

    body = json.dumps({"model_id": MODEL, "features": ["pro", 33.5, 4]}).encode()
    request = _REQUEST % (len(body), body)
    rng = random.Random(port + id(out))
    buf = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        while True:
            sent_at = time.monotonic()
            try:
                sock.sendall(request)
                answer = _read_response(sock, buf)
            except OSError as exc:  # reset: the request was sent and never answered
                answer, out["error"] = None, repr(exc)
            if answer is None:
                out["lost"] = out.get("lost", 0) + 1
                out["lost_at"] = sent_at
                return
            status, close = answer
            out.setdefault("statuses", []).append(status)
            out["last_answer"] = time.monotonic()
            if close:
                out["closed_by_server_after"] = sent_at
                return
            time.sleep(rng.uniform(0, 0.004))  # idle between requests, like a real keep-alive client
            if stop_after.is_set() and time.monotonic() - out["last_answer"] > 30:
                return


def test_sigterm_answers_requests_already_sent_on_keep_alive_connections(
    registered: dict[str, Any], tmp_path: Any
) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "data").mkdir()
    env = {
        **os.environ,
        "SPARKPIPE_HOST": "127.0.0.1",
        "SPARKPIPE_PORT": str(port),
        "SPARKPIPE_TRACKING_URI": registered["tracking_uri"],
        "SPARKPIPE_MODEL_NAME": MODEL,
        "SPARKPIPE_MODEL_CACHE_DIR": str(registered["root"] / "cache"),
        "SPARKPIPE_JOBS_DIR": str(tmp_path / "jobs"),
        "SPARKPIPE_ALLOWED_DATA_ROOTS": json.dumps([str(tmp_path / "data")]),
        "SPARKPIPE_RELOAD_INTERVAL_SECONDS": "0",
        "SPARKPIPE_LOG_LEVEL": "WARNING",
    }
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "sparkpipe", "serve"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            while True:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "the server did not become ready"
                try:
                    if http.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        stop = threading.Event()
        results: list[dict[str, Any]] = [{} for _ in range(16)]
        threads = [
            threading.Thread(target=_keep_alive_client, args=(port, stop, r), daemon=True) for r in results
        ]
        for t in threads:
            t.start()
        while min(len(r.get("statuses", [])) for r in results) < 20:  # every connection is busy
            assert all(t.is_alive() for t in threads), results
            time.sleep(0.01)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert code in (0, -signal.SIGTERM), (code, (tmp_path / "server.log").read_text()[-2000:])
    lost = [r for r in results if r.get("lost")]
    assert not lost, f"{len(lost)} of 16 connections lost a request: {lost[:3]}"
    for r in results:
        assert set(r["statuses"]) == {200}
        # each connection sent requests right around the signal and was told to close, not cut off
        assert r["closed_by_server_after"] >= signalled - 0.2, r
    with socket.socket() as s:  # and the server no longer accepts connections
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_bare_serve_serves_the_registry(registered: dict[str, Any], tmp_path: Any) -> None:
    """``sparkpipe serve`` with no --config and no model configured, in a directory holding only an
    MLflow store (two registered models): /ready turns 200 with the newest model, which answers
    requests without model_id; the other model is loaded by name on its first request."""
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient

    from sparkpipe.tracking import Registry

    reg = Registry(registered["cfg"].mlflow)
    source = reg.download(reg.resolve(f"{MODEL}/1"), cache_dir=registered["root"] / "cache")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("other_model", "churn_model"):  # churn_model is the most recently registered
        client.create_registered_model(name)
        client.create_model_version(name, source=str(source))
    client.set_registered_model_alias("churn_model", "champion", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SPARKPIPE_"))}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparkpipe", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    row = {"plan": "pro", "age": 33.5, "calls": 4}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 90
            ready = None
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    ready = http.get("/ready")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            assert ready is not None and ready.status_code == 200, (tmp_path / "serve.log").read_text()[
                -3000:
            ]
            assert ready.json()["default"] == "churn_model/1"
            answer = http.post("/predict", json={"features": row})
            assert answer.json()["model"] == "churn_model"
            assert "server" not in answer.headers and "server" not in ready.headers  # the stack is not named
            other = http.post("/predict", json={"model_id": "other_model", "features": row})
            assert other.status_code == 200, other.text
            assert other.json()["model"] == "other_model" and other.json()["version"] == "1"
            missing = http.post("/predict", json={"model_id": "no_such_model", "features": row})
            assert missing.status_code == 404 and "no_such_model" in missing.json()["detail"]
    finally:
        stop_process_group(proc)
