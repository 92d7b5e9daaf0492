"""The scoring lane answers ``POST /predict`` and ``POST /invocations`` itself: the same answers as the
documented FastAPI routes, and everything the middlewares did for them (body limit, errors, metrics,
client disconnects)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi.testclient import TestClient

from .conftest import MODEL

ROW = {"plan": "pro", "age": 33.5, "calls": 4}
BODY = json.dumps({"model_id": MODEL, "features": ROW}).encode()


def _call(
    app: Any, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]], qs: bytes = b""
) -> Any:
    """Drive the ASGI app directly; return (sent messages, number of receive calls)."""
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    if not messages:
        messages = [{"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": qs,
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent


def _metric(client: Any, needle: str) -> bool:
    return needle in client.get("/metrics").text


def test_lane_and_routes_answer_alike(settings: Any) -> None:
    from sparkpipe.serving.app import create_app

    answers = []
    for use_lane in (True, False):
        app = create_app(settings)
        if not use_lane:
            app.lane = None
        with TestClient(app) as c:
            p = c.post("/predict", content=BODY, headers={"content-type": "application/json"})
            i = c.post(
                f"/invocations?model_id={MODEL}",
                json={"dataframe_records": [ROW, {**ROW, "plan": "basic"}]},
            )
            bad = c.post("/predict", json={"model_id": MODEL, "features": ["pro", "x", 4]})
            assert p.status_code == 200 and i.status_code == 200, (p.text, i.text)
            answers.append((p.json()["predictions"], i.json(), bad.status_code, bad.json()["errors"]))
            assert _metric(
                c,
                f'sparkpipe_requests_total{{method="POST",model="{MODEL}",route="/predict",'
                'status="200",version="1"}',
            )
    assert answers[0] == answers[1]
    assert answers[0][2] == 422 and answers[0][3][0]["field"] == "features[1]"


def test_other_methods_and_paths_go_to_fastapi(client: Any) -> None:
    r = client.get("/predict")
    assert r.status_code == 405
    r = client.post("/predict/", json={"features": ROW}, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].endswith("/predict")


def test_streamed_body_is_joined(client: Any) -> None:
    app = client.app
    one = _call(app, "/predict", [BODY], [(b"content-type", b"application/json")])
    parts = [BODY[:7], BODY[7:30], BODY[30:]]
    many = _call(app, "/predict", parts, [(b"content-type", b"application/json")])
    assert one[0]["status"] == many[0]["status"] == 200
    first, second = json.loads(one[1]["body"]), json.loads(many[1]["body"])
    assert first["predictions"] == second["predictions"]
    assert (b"content-length", str(len(one[1]["body"])).encode()) in one[0]["headers"]


def test_bad_content_length_is_400(client: Any) -> None:
    sent = _call(
        client.app,
        "/predict",
        [BODY],
        [(b"content-type", b"application/json"), (b"content-length", b"12x")],
    )
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["errors"][0]["field"] == "Content-Length"


def test_oversized_declared_body_closes_connection(client: Any) -> None:
    limit = client.app.state.settings.max_body_bytes
    sent = _call(
        client.app,
        "/predict",
        [BODY],
        [(b"content-type", b"application/json"), (b"content-length", str(limit + 1).encode())],
    )
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert _metric(client, 'route="/predict",status="413"')
    assert _metric(client, 'sparkpipe_errors_total{type="payload_too_large"} 1.0')


def test_client_disconnect_is_counted_not_answered(client: Any) -> None:
    sent = _call(client.app, "/predict", [], [(b"content-type", b"application/json")])
    assert sent == []
    assert _metric(client, 'sparkpipe_errors_total{type="client_disconnect"} 1.0')
    assert not _metric(client, 'route="/predict",status="500"')


def test_unexpected_error_is_json_500(client: Any) -> None:
    service = client.app.state.service
    model = service.get(MODEL)

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internals")

    model.scorer.predict = boom
    r = client.post("/predict", content=BODY, headers={"content-type": "application/json"})
    assert r.status_code == 500
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert r.json()["error_code"] == "INTERNAL_ERROR"
    assert _metric(client, 'sparkpipe_errors_total{type="internal_error"} 1.0')
    assert _metric(client, 'route="/predict",status="500"')


def test_invocations_model_id_query(client: Any) -> None:
    ok = client.post(f"/invocations?x=1&model_id={MODEL}%2F1", json={"dataframe_records": [ROW]})
    assert ok.status_code == 200, ok.text
    long = client.post("/invocations?model_id=" + "m" * 301, json={"dataframe_records": [ROW]})
    assert long.status_code == 422 and long.json()["errors"][0]["field"] == "model_id"
    empty = client.post("/invocations?model_id=", json={"dataframe_records": [ROW]})
    assert empty.status_code == 404 and empty.json()["errors"][0]["field"] == "model_id"
