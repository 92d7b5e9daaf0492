"""Champion/challenger (issue 13 items 2-5): alias history, routing, prediction log, feedback, report.

Each test works on its own copy of the session's registry (``churn_lr`` v1 and v2, ``champion`` -> 1,
``challenger`` -> 2 here), so moving aliases never disturbs other tests.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sparkpipe.config import MlflowConfig
from sparkpipe.serving.app import create_app

from .conftest import MODEL, make_settings

ROW = {"plan": "pro", "age": 33.5, "calls": 4}
ROWS = [
    {"plan": "basic", "age": 61.0, "calls": 9},
    {"plan": "max", "age": 22.0, "calls": 0},
    {"plan": "pro", "age": 45.5, "calls": 5},
]


@pytest.fixture
def store(registered: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A private copy of the registry: champion -> 1, challenger -> 2 (recorded in the history)."""
    from sparkpipe.tracking import Registry, move_aliases

    db = tmp_path / "mlflow.db"
    src = sqlite3.connect(str(registered["root"] / "mlflow.db"))
    dst = sqlite3.connect(str(db))
    src.backup(dst)
    src.close()
    dst.close()
    uri = f"sqlite:///{db}"
    reg = Registry(MlflowConfig(tracking_uri=uri))
    for alias in set(reg.aliases(MODEL)) - {"champion"}:  # other tests' aliases on the shared store
        reg.delete_alias(MODEL, alias)
    move_aliases(reg, MODEL, {"champion": "1", "challenger": "2"}, reason="test set-up", actor="pytest")
    return {"root": registered["root"], "tracking_uri": uri, "registry": reg, "db": tmp_path / "preds.db"}


def _settings(store: dict[str, Any], tmp_path: Path, ab: dict[str, Any] | None = None, **kw: Any) -> Any:
    return make_settings(
        store,
        tmp_path,
        ab_testing={"enabled": True, "model_name": MODEL, **(ab or {})} if ab is not None else {},
        prediction_log={"path": str(store["db"]), "flush_interval_seconds": 0.2},
        **kw,
    )


def _rows(db: Path, where: str = "1") -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            f"SELECT request_id, model, version, variant, shadow, status FROM predictions WHERE {where}"
        ).fetchall()


# ------------------------------------------------------------------------------ item 2: history
def test_alias_history_promote_rollback_cli(store: dict[str, Any], capsys: Any) -> None:
    from sparkpipe.cli import main

    uri = ["--set", f"mlflow.tracking_uri={store['tracking_uri']}"]
    main(["models", "promote", MODEL, "2", "--reason", "better AUC", *uri])
    assert f"{MODEL}@champion → version 2" in capsys.readouterr().out
    assert store["registry"].aliases(MODEL)["champion"] == "2"
    main(["models", "rollback", MODEL, *uri])
    assert "version 1 (was 2)" in capsys.readouterr().out
    assert store["registry"].aliases(MODEL)["champion"] == "1"
    capsys.readouterr()
    main(["models", "history", MODEL, "--alias", "champion", "--json", *uri])
    import json

    events = json.loads(capsys.readouterr().out)
    assert [(e["from"], e["to"]) for e in events] == [(None, "1"), ("1", "2"), ("2", "1")]
    assert events[1]["reason"] == "better AUC" and events[1]["actor"].startswith("cli")
    assert events[2]["reason"] == "rolled back by hand"
    assert all(e["time"] > 0 and e["time_iso"].endswith("Z") for e in events)


def test_rollback_without_history_names_the_fix(store: dict[str, Any]) -> None:
    from sparkpipe.errors import ModelError
    from sparkpipe.tracking import rollback_alias

    with pytest.raises(ModelError, match=r"no recorded previous version.*models promote"):
        rollback_alias(store["registry"], MODEL, "challenger", reason="x", actor="pytest")


def test_history_and_rollback_over_http_survive_a_restart(
    store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARKPIPE_API_KEY", "s3cret")
    settings = _settings(store, tmp_path)
    key = {"X-API-Key": "s3cret"}
    with TestClient(create_app(settings)) as c:
        assert c.post(f"/models/{MODEL}/aliases/champion", json={"version": "2"}).status_code == 401
        r = c.post(
            f"/models/{MODEL}/aliases/champion", json={"version": "2", "reason": "canary ok"}, headers=key
        )
        assert r.status_code == 200, r.text
        assert c.post("/predict", json={"features": ROW}).json()["version"] == "2"
        assert c.post(f"/models/{MODEL}/rollback", headers=key).json()["move"]["to"] == "1"
        assert c.post("/predict", json={"features": ROW}).json()["version"] == "1"
    with TestClient(create_app(settings)) as c:  # a new process: the history is in the registry
        h = c.get(f"/models/{MODEL}/history", params={"alias": "champion"})
        assert h.status_code == 200, h.text
        moves = [(e["from"], e["to"], e["reason"]) for e in h.json()["history"]]
        assert moves[-2:] == [("1", "2", "canary ok"), ("2", "1", "rollback over HTTP")]
        assert h.json()["history"][-1]["actor"] == "http testclient (API key)"
        assert c.get("/models/no_such_model/history").status_code == 404


# ------------------------------------------------------------------------------ item 3: routing
async def _many(app: Any, bodies: list[tuple[dict[str, Any], dict[str, str]]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return [await http.post("/predict", json=b, headers=h) for b, h in bodies]


def test_split_share_and_sticky_keys(store: dict[str, Any], tmp_path: Path) -> None:
    """10,000 requests with 10,000 customer ids at 30 %: the challenger share is within 1 point, and
    a customer sent again lands on the same variant (and version)."""
    settings = _settings(store, tmp_path, {"challenger_traffic": 0.3, "sticky_key": "customer_id"})
    with TestClient(create_app(settings)) as c:
        app = c.app
        bodies = [({"customer_id": f"c{i}", "features": ROW}, {}) for i in range(10_000)]
        answers = asyncio.run(_many(app, bodies))
        assert {r.status_code for r in answers} == {200}
        got = [(r.json()["variant"], r.json()["version"]) for r in answers]
        assert set(got) == {("champion", "1"), ("challenger", "2")}
        share = sum(v == "challenger" for v, _ in got) / len(got)
        assert abs(share - 0.3) <= 0.01, share
        again = asyncio.run(_many(app, bodies[:500]))
        assert [(r.json()["variant"], r.json()["version"]) for r in again] == got[:500]
        # no sticky key in the request: the request id decides (a new one each time)
        ids = [c.post("/predict", json={"features": ROW}).json() for _ in range(60)]
        assert {a["variant"] for a in ids} == {"champion", "challenger"}
        # naming a version or an alias is never routed
        pinned = c.post("/predict", json={"model_id": f"{MODEL}@champion", "features": ROW}).json()
        assert (pinned["variant"], pinned["version"]) == (None, "1")
        bad = c.post("/predict", json={"customer_id": {"x": 1}, "features": ROW})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "customer_id"


def test_shadow_answers_equal_champion_only_and_the_challenger_is_logged(
    store: dict[str, Any], tmp_path: Path
) -> None:
    settings = _settings(store, tmp_path, {"mode": "shadow"})
    with TestClient(create_app(settings)) as c:
        for i, row in enumerate([ROW, *ROWS]):
            shadowed = c.post("/predict", json={"features": row}, headers={"X-Request-ID": f"s{i}"}).json()
            alone = c.post("/predict", json={"model_id": f"{MODEL}@champion", "features": row}).json()
            assert shadowed["predictions"] == alone["predictions"]
            assert (
                (shadowed["model"], shadowed["version"]) == (alone["model"], alone["version"]) == (MODEL, "1")
            )
            assert shadowed["variant"] == "champion" and shadowed["request_id"] == f"s{i}"
    shadow = _rows(store["db"], "shadow = 1")
    assert sorted(r[0] for r in shadow) == ["s0", "s1", "s2", "s3"]
    assert {(r[2], r[3], r[5]) for r in shadow} == {("2", "challenger", 200)}


def test_routing_changes_at_runtime_behind_the_api_key(
    store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARKPIPE_API_KEY", "s3cret")
    settings = _settings(store, tmp_path, {"challenger_traffic": 0.0})
    with TestClient(create_app(settings)) as c:
        assert {c.post("/predict", json={"features": ROW}).json()["variant"] for _ in range(20)} == {
            "champion"
        }
        assert c.put(f"/ab/{MODEL}", json={"challenger_traffic": 1.0}).status_code == 401
        r = c.put(f"/ab/{MODEL}", json={"challenger_traffic": 1.0}, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200, r.text
        assert {c.post("/predict", json={"features": ROW}).json()["version"] for _ in range(20)} == {"2"}
        bad = c.put(f"/ab/{MODEL}", json={"challenger_traffic": 2}, headers={"X-API-Key": "s3cret"})
        assert bad.status_code == 422 and "challenger_traffic" in bad.text
        for body in ({"challenger_traffic": True}, {"min_samples": True}, {"min_samples": 5.5}):
            bad = c.put(f"/ab/{MODEL}", json=body, headers={"X-API-Key": "s3cret"})
            assert bad.status_code == 422 and next(iter(body)) in bad.text, (body, bad.text)
    with TestClient(create_app(settings)) as c:  # the runtime change outlives a restart
        assert c.get("/ab").json()["experiments"][0]["routing"]["challenger_traffic"] == 1.0
        assert c.post("/predict", json={"features": ROW}).json()["variant"] == "challenger"


def test_a_failing_challenger_is_answered_by_the_champion_then_rolled_back(
    store: dict[str, Any], tmp_path: Path
) -> None:
    """The challenger names an alias that does not exist: every request still gets a 200 from the
    champion, and after min_requests_for_rollback the error rate stops the routing."""
    ab = {"challenger": "missing", "challenger_traffic": 1.0, "min_requests_for_rollback": 10}
    settings = _settings(store, tmp_path, ab)
    with TestClient(create_app(settings)) as c:
        answers = [c.post("/predict", json={"features": ROW}) for _ in range(15)]
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["version"] for a in answers} == {"1"}
        report = c.get(f"/ab/{MODEL}").json()
        assert report["state"] == "rolled_back" and "error rate" in report["reason"]
        assert report["variants"]["challenger"]["errors"] == 10
        assert c.post("/predict", json={"features": ROW}).json()["variant"] is None


# ------------------------------------------------------------------------ items 4 + 5: log, feedback
def test_feedback_report_and_promotion(store: dict[str, Any], tmp_path: Path) -> None:
    settings = _settings(
        store,
        tmp_path,
        {"challenger_traffic": 0.5, "sticky_key": "customer_id", "minimum_detectable_effect": 0.1},
    )
    with TestClient(create_app(settings)) as c:
        variants = {}
        for i in range(200):
            r = c.post(
                "/predict",
                json={"customer_id": i, "features": ROWS[i % 3]},
                headers={"X-Request-ID": f"req-{i}"},
            )
            assert r.status_code == 200 and r.json()["request_id"] == f"req-{i}"
            variants[f"req-{i}"] = r.json()["variant"]
        # outcomes: challenger converts on every 2nd request, the champion on every 5th
        labelled = 0
        for i, (rid, v) in enumerate(variants.items()):
            if i % 4 == 3:
                continue  # a quarter never get an outcome
            label = int(i % 2 == 0) if v == "challenger" else int(i % 5 == 0)
            f = c.post("/feedback", json={"request_id": rid, "label": label})
            assert f.status_code == 200, f.text
            assert f.json()["joined"][0]["variant"] == v
            labelled += 1
        assert c.post("/feedback", json={"request_id": "req-0", "label": 1}).status_code == 409
        assert c.post("/feedback", json={"request_id": "nope", "label": 1}).status_code == 404
        assert c.post("/feedback", json={"request_id": "req-1"}).status_code == 422
        assert c.post("/feedback", json={"request_id": "req-1", "label": 1, "value": 2.0}).status_code == 422

        rep = c.get(f"/ab/{MODEL}").json()
        ch, cc = rep["variants"]["champion"], rep["variants"]["challenger"]
        assert ch["requests"] + cc["requests"] == 200
        assert ch["requests"] == list(variants.values()).count("champion")
        assert ch["labelled"] + cc["labelled"] == labelled
        assert ch["versions"] == ["1"] and cc["versions"] == ["2"]
        assert cc["ci95"][0] < cc["value"] < cc["ci95"][1]
        from sparkpipe.serving import stats

        x_a, x_b = round(ch["value"] * ch["labelled"]), round(cc["value"] * cc["labelled"])
        expect = stats.two_proportion_ztest(x_a, ch["labelled"], x_b, cc["labelled"])
        assert rep["test"]["test"] == "two-proportion z-test"
        assert rep["test"]["p_value"] == pytest.approx(expect.p_value) and rep["test"]["p_value"] < 0.05
        needed = stats.sample_size_proportions(ch["value"], 0.1)
        assert rep["sample_size"]["per_variant_required"] == needed
        assert rep["sample_size"]["still_needed"]["champion"] == max(0, needed - ch["labelled"])
        assert rep["recommendation"]["action"] == "promote_challenger"

        assert c.post(f"/ab/{MODEL}/promote").status_code == 200
        assert store["registry"].aliases(MODEL) == {"champion": "2", "challenger": "1"}
        after = c.post("/predict", json={"customer_id": 1, "features": ROW}).json()
        assert (after["version"], after["variant"]) == ("2", None)  # the experiment ended
        history = c.get(f"/models/{MODEL}/history").json()["history"]
        assert [(e["alias"], e["from"], e["to"]) for e in history[-2:]] == [
            ("champion", "1", "2"),
            ("challenger", "2", "1"),
        ]
        assert all(e["reason"].startswith("A/B promotion") for e in history[-2:])
        invoked = c.post("/invocations", json={"instances": [ROW]}, headers={"X-Request-ID": "inv-1"})
        assert invoked.status_code == 200
    logged = _rows(store["db"])
    assert len({r[0] for r in logged if r[0].startswith("req-")}) == 200
    assert ("inv-1", MODEL, "2", None, 0, 200) in logged


def test_auto_promotion_needs_significance_and_the_minimum_sample(
    store: dict[str, Any], tmp_path: Path
) -> None:
    ab = {"challenger_traffic": 0.5, "auto_promote": True, "min_samples": 40, "sticky_key": "k"}
    settings = _settings(store, tmp_path, ab)
    with TestClient(create_app(settings)) as c:
        manager = c.app.state.experiments
        promoted = []
        for i in range(400):
            r = c.post("/predict", json={"k": i, "features": ROW}, headers={"X-Request-ID": f"a{i}"}).json()
            if r["variant"] is None:
                break
            manager._last_auto = 0.0  # check on every outcome (the service checks at most every 2 s)
            label = int(i % 10 < 8) if r["variant"] == "challenger" else int(i % 10 < 2)
            f = c.post("/feedback", json={"request_id": f"a{i}", "label": label})
            assert f.status_code == 200, f.text
            promoted += f.json()["auto_promoted"]
        assert promoted, "no auto-promotion"
        rep = c.get(f"/ab/{MODEL}").json()
        assert rep["state"] == "promoted"
        assert min(v["labelled"] for v in rep["variants"].values()) >= 40
        assert store["registry"].aliases(MODEL)["champion"] == "2"
        assert promoted[0]["moves"][0]["actor"] == "auto-promotion"


def test_prediction_log_window_for_drift(store: dict[str, Any], tmp_path: Path) -> None:
    from sparkpipe.serving.predlog import PredictionLog

    settings = _settings(store, tmp_path)
    with TestClient(create_app(settings)) as c:
        c.post("/predict", json={"features": ["pro", 33.5, 4]})
        c.post("/predict", json={"instances": [ROWS[0], ["max", 22.0, 0]]})
        c.post("/predict", json={"features": {"plan": "basic"}})
    log = PredictionLog(store["db"])
    try:
        window = log.recent_inputs(MODEL, limit=10)
    finally:
        log.close()
    assert window == [
        {"plan": "basic"},
        ROWS[0],
        {"plan": "max", "age": 22.0, "calls": 0},
        {"plan": "pro", "age": 33.5, "calls": 4},
    ]


# ------------------------------------------------------------- a real server: promotion and SIGTERM
class _Client(threading.Thread):
    """Keep-alive ``/predict`` requests with unique request ids until the server says close."""

    def __init__(self, port: int, n: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.n, self.stop = port, n, stop
        self.answers: list[tuple[str, int, str | None]] = []
        self.lost = 0

    def run(self) -> None:
        import http.client
        import json

        body = json.dumps({"features": ROW})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = 0
        while True:
            rid = f"t{self.n}-{i}"
            i += 1
            try:
                conn.request(
                    "POST",
                    "/predict",
                    body=body,
                    headers={"Content-Type": "application/json", "X-Request-ID": rid},
                )
                resp = conn.getresponse()
                data = resp.read()
            except OSError:
                self.lost += 1  # sent and never answered
                return
            version = json.loads(data).get("version") if resp.status == 200 else None
            self.answers.append((rid, resp.status, version))
            if resp.getheader("connection", "").lower() == "close":
                return
            time.sleep(0.001)


def test_promotion_and_sigterm_under_load(store: dict[str, Any], tmp_path: Path) -> None:
    """16 keep-alive clients on a real ``sparkpipe serve``: the champion moves 1 -> 2 mid-load (every
    client's answers switch version once, all 200), then SIGTERM: every request answered 200 is in the
    prediction log, and nothing else is."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "data").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKPIPE_", "MLFLOW_"))}
    env.update(
        {
            "SPARKPIPE_PORT": str(port),
            "SPARKPIPE_TRACKING_URI": store["tracking_uri"],
            "SPARKPIPE_MODEL_NAME": MODEL,
            "SPARKPIPE_MODEL_CACHE_DIR": str(store["root"] / "cache"),
            "SPARKPIPE_JOBS_DIR": str(tmp_path / "jobs"),
            "SPARKPIPE_ALLOWED_DATA_ROOTS": json.dumps([str(tmp_path / "data")]),
            "SPARKPIPE_RELOAD_INTERVAL_SECONDS": "0",
            "SPARKPIPE_LOG_LEVEL": "WARNING",
            "SPARKPIPE_PREDICTION_LOG": json.dumps({"path": str(store["db"]), "flush_interval_seconds": 1}),
        }
    )
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparkpipe", "serve"], env=env, stdout=log, stderr=log, start_new_session=True
    )
    clients: list[_Client] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not become ready"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.1)
        stop = threading.Event()
        clients = [_Client(port, n, stop) for n in range(16)]
        for c in clients:
            c.start()

        def wait_each(k: int) -> None:
            marks = [len(c.answers) for c in clients]
            end = time.monotonic() + 60
            while any(len(c.answers) < m + k for c, m in zip(clients, marks, strict=True)):
                assert all(c.is_alive() for c in clients), [c.lost for c in clients]
                assert time.monotonic() < end, "clients stalled"
                time.sleep(0.01)

        wait_each(20)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/models/{MODEL}/aliases/champion",
            data=json.dumps({"version": "2", "reason": "load test"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
        wait_each(20)
        proc.send_signal(signal.SIGTERM)
        for c in clients:
            c.join(timeout=60)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert code in (0, -signal.SIGTERM), (tmp_path / "server.log").read_text()[-2000:]
    assert sum(c.lost for c in clients) == 0
    answers = [a for c in clients for a in c.answers]
    assert {status for _, status, _ in answers} == {200}
    for c in clients:
        versions = [v for _, _, v in c.answers]
        switches = sum(a != b for a, b in itertools.pairwise(versions))
        assert versions[0] == "1" and versions[-1] == "2" and switches == 1, versions
    with sqlite3.connect(store["db"]) as conn:
        logged = [r[0] for r in conn.execute("SELECT request_id FROM predictions WHERE status = 200")]
    assert len(logged) == len(set(logged))
    assert set(logged) == {rid for rid, _, _ in answers}


def test_bandit_sends_traffic_to_the_variant_that_converts(store: dict[str, Any], tmp_path: Path) -> None:
    """Thompson sampling over HTTP: the challenger converts 60 %, the champion 10 %; after 150 users
    most requests go to the challenger."""
    import random

    settings = _settings(store, tmp_path, {"mode": "bandit", "max_error_rate": None})
    rng = random.Random(4)
    truth = {"champion": 0.10, "challenger": 0.60}
    with TestClient(create_app(settings)) as c:
        seen = []
        for i in range(200):
            r = c.post("/predict", json={"features": ROW}, headers={"X-Request-ID": f"b{i}"}).json()
            seen.append(r["variant"])
            assert r["version"] == {"champion": "1", "challenger": "2"}[r["variant"]]
            label = int(rng.random() < truth[r["variant"]])
            assert c.post("/feedback", json={"request_id": f"b{i}", "label": label}).status_code == 200
    assert seen[:50].count("champion") > 0  # it explored
    assert seen[-50:].count("challenger") >= 40
