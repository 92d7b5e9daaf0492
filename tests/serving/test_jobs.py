"""Jobs run in separate processes; state is persisted and survives a restart of the server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from sparkpipe.serving.app import create_app
from sparkpipe.serving.jobs import JobManager, write_state

from . import conftest
from .conftest import MODEL, make_settings

FAKE = {"train": f"{conftest.__name__}:quick_job", "batch_predict": f"{conftest.__name__}:quick_job"}


def _app(settings: Any, targets: dict[str, str]) -> Any:
    jobs = JobManager(settings.jobs_dir, max_concurrent=2, targets=targets)
    return create_app(settings, jobs=jobs)


def _wait(c: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = c.get(f"/jobs/{job_id}").json()
        if state["status"] in ("succeeded", "failed"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {state}")


def test_train_and_batch_jobs_succeed_and_persist(registered: dict[str, Any], tmp_path: Path) -> None:
    settings = make_settings(registered, tmp_path)
    (tmp_path / "data" / "in.csv").write_text("plan,age,calls\npro,1,1\n")
    with TestClient(_app(settings, FAKE)) as c:
        r = c.post(
            "/train",
            json={
                "algorithm": "logistic_regression",
                "data_path": "train.csv",
                "overrides": {"model.hyperparameters.maxIter": 5},
            },
        )
        assert r.status_code == 202, r.text
        train_id = r.json()["id"]
        assert r.headers["location"] == f"/jobs/{train_id}"
        r = c.post(
            "/predict/batch",
            json={"model_id": MODEL, "input_path": "in.csv", "output_path": "scored", "format": "parquet"},
        )
        assert r.status_code == 202, r.text
        batch_id = r.json()["id"]
        state = _wait(c, train_id)
        assert state["status"] == "succeeded", state
        assert state["result"]["metrics"] == {"accuracy": 0.91}
        assert state["result"]["registered_name"] == "fake_model"
        assert state["params"]["data_path"] == "train.csv"  # relative to the data root, never absolute
        assert state["created_at"] and state["started_at"] and state["finished_at"]
        batch = _wait(c, batch_id)
        assert batch["status"] == "succeeded"
        assert batch["params"]["model_uri"] == f"models:/{MODEL}/1"
        listed = c.get("/jobs").json()["jobs"]
        assert {j["id"] for j in listed} == {train_id, batch_id}
        assert c.get("/jobs?status=failed").json()["jobs"] == []
        assert c.get("/jobs/nope").status_code == 404
    # a new app instance over the same jobs_dir = a restart: the history is still there
    with TestClient(_app(settings, FAKE)) as c:
        assert c.get(f"/jobs/{train_id}").json()["status"] == "succeeded"


def test_failing_and_crashing_jobs_leave_the_server_up(registered: dict[str, Any], tmp_path: Path) -> None:
    settings = make_settings(registered, tmp_path)
    targets = {
        "train": f"{conftest.__name__}:failing_job",
        "batch_predict": f"{conftest.__name__}:crashing_job",
    }
    (tmp_path / "data" / "in.csv").write_text("plan,age,calls\npro,1,1\n")
    with TestClient(_app(settings, targets)) as c:
        failed = _wait(c, c.post("/train", json={"algorithm": "gbt", "data_path": "x.csv"}).json()["id"])
        assert failed["status"] == "failed"
        assert "training exploded on purpose" in failed["error"]
        crashed = _wait(
            c, c.post("/predict/batch", json={"input_path": "in.csv", "output_path": "o"}).json()["id"]
        )
        assert crashed["status"] == "failed" and "exited with code 3" in crashed["error"]
        assert c.get("/health").status_code == 200
        assert c.post("/predict", json={"features": ["pro", 1.0, 1]}).status_code == 200
        assert 'sparkpipe_jobs_total{kind="train",status="failed"} 1.0' in c.get("/metrics").text


def test_restart_marks_interrupted_jobs_and_resumes_queued(
    registered: dict[str, Any], tmp_path: Path
) -> None:
    settings = make_settings(registered, tmp_path)
    jobs_dir = Path(settings.jobs_dir)
    jobs_dir.mkdir(parents=True)
    base = {
        "kind": "train",
        "params": {},
        "payload": {},
        "target": FAKE["train"],
        "result": None,
        "error": None,
        "started_at": None,
        "finished_at": None,
    }
    write_state(
        jobs_dir / "old-running.json",
        {
            **base,
            "id": "old-running",
            "status": "running",
            "created_at": "2024-01-01T00:00:00",
            "pid": 999_999_999,
        },
    )
    write_state(
        jobs_dir / "old-queued.json",
        {**base, "id": "old-queued", "status": "queued", "created_at": "2024-01-01T00:00:01"},
    )
    with TestClient(_app(settings, FAKE)) as c:
        interrupted = c.get("/jobs/old-running").json()
        assert interrupted["status"] == "failed" and interrupted["error"] == "server restarted"
        assert _wait(c, "old-queued")["status"] == "succeeded"
    on_disk = json.loads((jobs_dir / "old-running.json").read_text())
    assert on_disk["status"] == "failed"


def test_bad_job_requests(client: Any) -> None:
    assert client.post("/train", json={"algorithm": "gbt"}).json()["errors"][0]["field"] == "data_path"
    r = client.post("/train", json={"algorithm": "gbt", "data_path": "x", "overrides": ["nokey"]})
    assert r.status_code == 422
    r = client.post("/train", json={"algorithm": "gbt", "data_path": "x", "overrides": {"model.nope": 1}})
    assert r.status_code == 422 and "model.nope" in r.text
    r = client.post("/predict/batch", json={"input_path": "missing.csv", "output_path": "o"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "input_path"
    r = client.post("/predict/batch", json={"input_path": "x", "output_path": "o", "format": "xls"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "format"


# ------------------------------------------------------------------- invalid state files (items 5, 9)
def evil_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Must never run: named only by a tampered state file."""
    Path(payload["flag"]).write_text("pwned")
    return {}


def test_invalid_state_files_are_skipped_and_never_run_code(
    registered: dict[str, Any], tmp_path: Path
) -> None:
    settings = make_settings(registered, tmp_path)
    jobs_dir = Path(settings.jobs_dir)
    jobs_dir.mkdir(parents=True)
    flag = tmp_path / "pwned.txt"
    good = {"kind": "train", "status": "succeeded", "created_at": "2024-01-01T00:00:00", "params": {}}
    write_state(jobs_dir / "good.json", {**good, "id": "good"})
    write_state(jobs_dir / "numeric-date.json", {**good, "id": "numeric-date", "created_at": 5})
    write_state(jobs_dir / "junk-id.json", {**good, "id": 5})
    write_state(jobs_dir / "exploded.json", {**good, "id": "exploded", "status": "exploded"})
    write_state(jobs_dir / "renamed.json", {**good, "id": "good"})
    (jobs_dir / "torn.json").write_text('{"id": "torn", "kind": ')
    # a queued job whose file names its own code target: the server's target for "train" runs instead
    write_state(
        jobs_dir / "tampered.json",
        {
            **good,
            "id": "tampered",
            "status": "queued",
            "created_at": "2024-01-02T00:00:00",
            "target": f"{__name__}:evil_job",
            "payload": {"flag": str(flag)},
        },
    )
    with TestClient(_app(settings, FAKE)) as c:  # start-up (recover) survives the bad files
        r = c.get("/jobs")
        assert r.status_code == 200, r.text
        body = r.json()
        assert {j["id"] for j in body["jobs"]} == {"good", "tampered"}
        assert all(isinstance(j["id"], str) and j["status"] != "exploded" for j in body["jobs"])
        skipped = {s["file"]: s["problem"] for s in body["skipped"]}
        assert set(skipped) == {
            "numeric-date.json",
            "junk-id.json",
            "exploded.json",
            "renamed.json",
            "torn.json",
        }
        assert "created_at" in skipped["numeric-date.json"] and "status" in skipped["exploded.json"]
        assert c.get("/jobs?status=succeeded").status_code == 200
        r = c.get("/jobs/numeric-date")
        assert r.status_code == 404 and "invalid state file" in r.json()["detail"]
        done = _wait(c, "tampered")
        assert done["status"] == "succeeded" and done["result"]["run_id"] == "fake"  # quick_job, not evil_job
    assert not flag.exists()


def test_train_another_algorithm_from_the_default_config(registered: dict[str, Any], tmp_path: Path) -> None:
    """README: POST /train {"algorithm": "random_forest"} with the default config, whose hyperparameters
    are logistic regression's (maxIter, regParam, elasticNetParam): they are not carried over (this was a
    422 "unknown hyperparameter 'maxIter' for random_forest")."""
    from sparkpipe.config import build_config

    default = Path(__file__).resolve().parents[2] / "config" / "pipeline_config.yaml"
    settings = make_settings(registered, tmp_path, train_config_path=str(default))
    with TestClient(_app(settings, FAKE)) as c:
        r = c.post("/train", json={"algorithm": "random_forest", "data_path": "train.csv"})
        assert r.status_code == 202, r.text
        state = _wait(c, r.json()["id"])
    assert state["status"] == "succeeded", state
    # the job process builds its config from this payload (train_job): random forest, no LR parameters
    saved = json.loads((tmp_path / "jobs" / f"{state['id']}.json").read_text())
    cfg = build_config(saved["payload"]["config"], saved["payload"].get("source"))
    assert cfg.model.algorithm == "random_forest"
    assert cfg.model.hyperparameters == {}


def test_a_finished_train_job_refreshes_a_model_configured_by_uri(tmp_path: Path) -> None:
    """``models:/fake_model@champion`` names ``fake_model``: the job hook must see that (it once split
    the URI into ``models:`` and never refreshed the model)."""
    from types import SimpleNamespace

    refreshed: list[Any] = []
    service = SimpleNamespace(
        specs=["models:/fake_model@champion", "other/2"],
        discover=False,
        metrics=None,
        refresh=lambda names=None, **_: refreshed.append(names),
    )
    jobs = JobManager(tmp_path / "jobs", max_concurrent=1, targets=FAKE)
    store = {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}", "root": tmp_path}
    create_app(make_settings(store, tmp_path),
               service=service, jobs=jobs)  # fmt: skip
    jobs.on_finished({"status": "succeeded", "result": {"registered_name": "fake_model"}})
    jobs.on_finished({"status": "succeeded", "result": {"registered_name": "unrelated"}})
    jobs.on_finished({"status": "failed", "result": {"registered_name": "fake_model"}})
    assert refreshed == [["fake_model"]]
