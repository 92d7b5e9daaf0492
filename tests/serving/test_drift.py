"""Drift monitoring (issue 13 item 6) over the served fixture model and its prediction log.

The reference is the training profile kept in ``churn_lr``'s metadata (``profile_frame`` of the 200
rows it was fitted on, see ``conftest``); requests are fresh draws from the same generator, with one
feature shifted, sent through ``POST /predict`` so they reach the log the way production traffic does.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sparkpipe.serving.app import create_app

from .conftest import MODEL, make_rows, make_settings


def _rows(
    n: int, seed: int, age_factor: float = 1.0, plans: list[float] | None = None
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for plan, age, calls, _ in make_rows(n, seed):
        if plans is not None:
            plan = rng.choices(["basic", "pro", "max"], weights=plans)[0]
        out.append({"plan": plan, "age": round(age * age_factor, 1), "calls": calls})
    return out


def _send(client: TestClient, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 50):
        r = client.post("/predict", json={"model_id": MODEL, "instances": rows[i : i + 50]})
        assert r.status_code == 200, r.text


@pytest.fixture
def served(registered: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("SPARKPIPE_API_KEY", raising=False)
    settings = make_settings(
        registered,
        tmp_path,
        prediction_log={"path": str(tmp_path / "preds.db"), "flush_interval_seconds": 0.2},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _drifted(client: TestClient, **params: Any) -> tuple[list[str], dict[str, Any]]:
    r = client.get(f"/monitoring/{MODEL}/drift", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["drifted_features"], body


def test_a_shifted_numeric_feature_is_flagged_and_the_others_are_not(served: TestClient) -> None:
    # fresh draws from the training distribution; at p < 0.05 one unshifted feature in twenty is flagged
    # by design, so the seed is a typical draw (seed 11's plan column, for one, is off even from the
    # true uniform distribution at p = 0.008)
    _send(served, _rows(400, seed=14))
    drifted, body = _drifted(served, window=400)
    assert drifted == [], body
    assert body["reference_rows"] == 200 and body["decided_by"] == "p-value" and body["window_rows"] == 400
    _send(served, _rows(400, seed=12, age_factor=1.8))
    drifted, body = _drifted(served, window=400)  # the latest 400 rows: all shifted
    assert drifted == ["age"], body
    by = {f["feature"]: f for f in body["features"]}
    assert by["age"]["stattest"] == "ks" and by["age"]["score"] < 1e-6 and by["age"]["statistics"]["psi"] > 1
    assert by["calls"]["score"] > 0.05 and by["plan"]["score"] > 0.05
    assert body["drift_share"] == pytest.approx(1 / 3) and body["dataset_drift"] is False
    metrics = served.get("/metrics").text
    assert re.search(rf'sparkpipe_drift_detected\{{feature="age",model="{MODEL}"\}} 1\.0', metrics), metrics
    assert re.search(rf'sparkpipe_drift_detected\{{feature="calls",model="{MODEL}"\}} 0\.0', metrics)
    assert f'sparkpipe_drift_statistic{{feature="age",model="{MODEL}",statistic="psi"}}' in metrics


def test_a_shifted_category_is_flagged_over_http_and_by_the_cli(
    served: TestClient, registered: dict[str, Any], tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from sparkpipe.cli import main

    monkeypatch.chdir(tmp_path)  # the CLI's model cache (.sparkpipe/models) lands here
    _send(served, _rows(400, seed=13, plans=[0.1, 0.1, 0.8]))  # training: a third each
    drifted, body = _drifted(served)
    assert drifted == ["plan"], body
    plan = next(f for f in body["features"] if f["feature"] == "plan")
    assert plan["stattest"] == "chi_square" and plan["statistics"]["jensen_shannon"] > 0.1
    assert set(plan["categories"]["values"]) == {"basic", "pro", "max", "__other__"}
    # the CLI reads the same log (the config's prediction_log.path) and writes the HTML report
    out = tmp_path / "drift.html"
    main([
        "monitor", "drift", "--model", MODEL, "--output", str(out),
        "--set", f"mlflow.tracking_uri={registered['tracking_uri']}",
        "--set", f"deployment.prediction_log.path={tmp_path / 'preds.db'}",
        "--set", f"deployment.jobs_dir={tmp_path / 'jobs'}",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert "drifted: plan " in printed and str(out) in printed.replace("\n", "")
    page = out.read_text()
    assert page.count("<img") == 3 and "plan (DRIFT)" in page and "age (no drift)" in page


def test_bad_drift_requests_name_the_field(served: TestClient) -> None:
    r = served.get(f"/monitoring/{MODEL}/drift")
    assert r.status_code == 409 and "no logged predictions" in r.text
    _send(served, _rows(20, seed=14))
    assert served.get(f"/monitoring/{MODEL}/drift", params={"window": 0}).status_code == 422
    r = served.get(f"/monitoring/{MODEL}/drift", params={"window": 10**6})
    assert r.status_code == 422 and "max_window" in r.text
    r = served.get(f"/monitoring/{MODEL}/drift", params={"since": "yesterday"})
    assert r.status_code == 422 and "since" in r.text
    r = served.get(f"/monitoring/{MODEL}/drift", params={"since": "2999-01-01T00:00:00Z"})
    assert r.status_code == 409  # nothing logged since then
    assert served.get("/monitoring/nope/drift").status_code == 404
