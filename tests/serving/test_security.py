"""API key on mutating endpoints and confinement of data paths."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sparkpipe.serving.app import create_app
from sparkpipe.serving.schemas import ApiError
from sparkpipe.serving.security import confine_path

from .conftest import MODEL, make_settings

MUTATING = [
    ("post", "/train", {"algorithm": "gbt", "data_path": "x.csv"}),
    ("post", "/predict/batch", {"input_path": "in.csv", "output_path": "out"}),
    ("post", f"/models/{MODEL}/reload", None),
    ("post", f"/models/{MODEL}/aliases/staging", {"version": "1"}),
]


def test_api_key_required_on_mutating_endpoints(
    registered: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARKPIPE_API_KEY", "s3cret")
    settings = make_settings(registered, tmp_path)
    assert settings.api_key_value() == "s3cret"
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for method, url, body in MUTATING:
            r = getattr(c, method)(url, json=body)
            assert r.status_code == 401, (url, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            r = getattr(c, method)(url, json=body, headers={"X-API-Key": "wrong"})
            assert r.status_code == 401
        ok = c.post(f"/models/{MODEL}/reload", headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        ok = c.post(f"/models/{MODEL}/reload", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        # reading and predicting stay open
        assert c.get("/models").status_code == 200
        assert c.post("/predict", json={"features": ["pro", 1.0, 1]}).status_code == 200


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Any, Path]:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.csv").write_text("x\n1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("x\n")
    (data / "link").symlink_to(outside)
    settings = make_settings(
        {"tracking_uri": "sqlite:///unused.db", "root": tmp_path}, tmp_path, allowed_data_roots=[str(data)]
    )
    return settings, data


def test_confine_path_accepts_inside(roots: tuple[Any, Path]) -> None:
    settings, data = roots
    assert confine_path("sub/a.csv", "data_path", settings) == str(data / "sub" / "a.csv")
    assert confine_path(str(data / "sub" / "a.csv"), "data_path", settings) == str(data / "sub" / "a.csv")
    assert confine_path("sub/../sub/new_output", "output_path", settings) == str(data / "sub" / "new_output")
    assert confine_path("builtin:churn", "data_path", settings, allow_builtin=True) == "builtin:churn"


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("../outside/secret.csv", 403),
        ("sub/../../outside/secret.csv", 403),
        ("/etc/passwd", 403),
        ("link/secret.csv", 403),
        ("s3a://bucket/x", 403),
        ("file:///etc/passwd", 403),
        ("", 400),
        ("a\x00b", 400),
    ],
)
def test_confine_path_refuses_escapes(roots: tuple[Any, Path], value: str, status: int) -> None:
    settings, _ = roots
    with pytest.raises(ApiError) as info:
        confine_path(value, "data_path", settings)
    assert info.value.status == status
    assert info.value.errors[0][0] == "data_path"


def test_endpoints_refuse_paths_outside_roots(client: Any, tmp_path: Path) -> None:
    r = client.post("/train", json={"algorithm": "gbt", "data_path": "../../etc/passwd"})
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "data_path"
    r = client.post("/predict/batch", json={"input_path": "/etc/hosts", "output_path": "out"})
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "input_path"
    (tmp_path / "data" / "in.csv").write_text("plan,age,calls\npro,1,1\n")
    r = client.post("/predict/batch", json={"input_path": "in.csv", "output_path": "../escape"})
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "output_path"
    r = client.post(
        "/train",
        json={
            "algorithm": "gbt",
            "data_path": "x.csv",
            "overrides": {"mlflow.tracking_uri": "sqlite:////tmp/evil.db"},
        },
    )
    assert r.status_code == 403 and "overrides" in r.json()["errors"][0]["field"]
    assert os.path.exists(tmp_path / "data")


# ======================================================================= attacks through the job API
def _state(settings: Any, job_id: str) -> dict[str, Any]:
    import json

    return json.loads((Path(settings.jobs_dir) / f"{job_id}.json").read_text())


def _fake_jobs_client(settings: Any, **targets: str) -> TestClient:
    from sparkpipe.serving.jobs import JobManager

    from . import conftest

    fake = {"train": f"{conftest.__name__}:quick_job", "batch_predict": f"{conftest.__name__}:quick_job"}
    jobs = JobManager(settings.jobs_dir, max_concurrent=1, targets={**fake, **targets})
    return TestClient(create_app(settings, jobs=jobs), raise_server_exceptions=False)


def test_train_overrides_never_expand_environment_variables(
    registered: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: ${VAR} in a request is a literal; errors never echo a value from the environment."""
    monkeypatch.setenv("FAKE_SECRET", "AKIA123")
    monkeypatch.setenv("SPARKPIPE_API_KEY", "k3y-value")
    monkeypatch.delenv("SURELY_UNSET_VAR", raising=False)
    base = tmp_path / "server.yaml"
    base.write_text("mlflow: {experiment_name: '${FAKE_SECRET}'}\n")
    settings = make_settings(registered, tmp_path, train_config_path=str(base))
    key = {"X-API-Key": "k3y-value"}
    with _fake_jobs_client(settings) as c:
        answers = {}
        for var in ("FAKE_SECRET", "SPARKPIPE_API_KEY", "SURELY_UNSET_VAR"):
            for overrides in ({"features.scaling": f"${{{var}}}"}, [f"features.scaling=${{{var}}}"]):
                r = c.post(
                    "/train",
                    json={"algorithm": "gbt", "data_path": "x.csv", "overrides": overrides},
                    headers=key,
                )
                assert r.status_code == 422, r.text
                assert "AKIA123" not in r.text and "k3y-value" not in r.text
                assert f"${{{var}}}" in r.text  # the literal text, as sent
                answers[var] = r.text.replace(var, "VAR")
        # a variable that is set and one that is not answer alike: nothing tells whether it exists
        assert answers["FAKE_SECRET"] == answers["SURELY_UNSET_VAR"] == answers["SPARKPIPE_API_KEY"]
        # an accepted literal stays literal in the job (the job process does not expand it either)
        r = c.post(
            "/train",
            json={
                "algorithm": "gbt",
                "data_path": "x.csv",
                "overrides": {"features.target": "${FAKE_SECRET}"},
            },
            headers=key,
        )
        assert r.status_code == 202, r.text
        config = _state(settings, r.json()["id"])["payload"]["config"]
        assert config["features"]["target"] == "${FAKE_SECRET}"
        assert config["mlflow"]["experiment_name"] == "AKIA123"  # the server's own file is expanded
        from sparkpipe.config import build_config

        assert build_config(config, expand=False).features.target == "${FAKE_SECRET}"
    # the server's file: a bad value that came from the environment is named, never shown
    base.write_text("features: {scaling: '${FAKE_SECRET}'}\n")
    with _fake_jobs_client(settings) as c:
        r = c.post("/train", json={"algorithm": "gbt", "data_path": "x.csv"}, headers=key)
        assert r.status_code == 422 and "features.scaling" in r.text, r.text
        assert "AKIA123" not in r.text and "FAKE_SECRET" in r.text


@pytest.mark.parametrize(
    "overrides",
    [
        {"logging.file": "/tmp/evil.log"},
        {"logging": {"file": "/tmp/evil.log"}},
        {"spark": {"master": "local[1]"}},
        {"spark.master": "local[1]"},
        {"spark.conf": {"spark.eventLog.enabled": True, "spark.eventLog.dir": "/tmp"}},
        {"spark": {"conf": {"spark.driver.extraJavaOptions": "-Dx=1"}}},
        ["spark.master=local[1]"],
        ['spark.conf={"spark.eventLog.dir": "/tmp"}'],
        {"mlflow": {"artifact_location": "/tmp/artifacts"}},
        {"mlflow": {"tracking_uri": "sqlite:////tmp/evil.db"}},
        {"data": {"output_path": "/tmp/out"}},
        {"data": {"options": {"path": "/etc"}}},
        {"deployment": {"jobs_dir": "/tmp/jobs"}},
        {"deployment.allowed_data_roots": ["/"]},
        {"model": {"algorithm": "gbt", "hyperparameters": {}}},
    ],
)
def test_overrides_outside_the_allow_list_are_refused_however_nested(
    client: Any, overrides: Any, tmp_path: Path
) -> None:
    """Item 2: the merged config is compared with the base; only allow-listed keys may change."""
    r = client.post(
        "/train", json={"algorithm": "logistic_regression", "data_path": "x.csv", "overrides": overrides}
    )
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["field"].startswith("overrides.")
    assert client.get("/jobs").json()["jobs"] == []
    assert not list(tmp_path.glob("jobs/*.json"))


def test_allowed_overrides_nested_or_dotted_are_merged(registered: dict[str, Any], tmp_path: Path) -> None:
    settings = make_settings(registered, tmp_path)
    overrides = {
        "features": {"scaling": "minmax"},
        "model.hyperparameters.maxIter": 5,
        "data.options": {"header": True},
        "logging.level": "debug",
    }
    with _fake_jobs_client(settings) as c:
        r = c.post(
            "/train", json={"algorithm": "logistic_regression", "data_path": "x.csv", "overrides": overrides}
        )
        assert r.status_code == 202, r.text
        config = _state(settings, r.json()["id"])["payload"]["config"]
    assert config["features"] == {"scaling": "minmax"}
    assert config["model"]["hyperparameters"] == {"maxIter": 5}
    assert config["data"]["options"] == {"header": True}
    assert config["data"]["output_path"] == str(tmp_path / "data" / "output")


def test_batch_output_never_replaces_what_the_service_did_not_write(client: Any, tmp_path: Path) -> None:
    """Item 3 (request side): roots and existing directories are refused before a job starts."""
    data = tmp_path / "data"
    (data / "in.csv").write_text("plan,age,calls\npro,1,1\n")
    (data / "docs").mkdir()
    (data / "docs" / "architecture.md").write_text("precious")
    body = {"input_path": "in.csv", "output_path": "docs"}
    for mode in ("error", "overwrite"):
        r = client.post("/predict/batch", json={**body, "mode": mode})
        assert r.status_code == 409, r.text
        assert r.json()["errors"][0]["field"] == "output_path"
    for field, value in (
        ("input_path", "."),
        ("input_path", str(data)),
        ("output_path", "."),
        ("output_path", "sub/.."),
    ):
        r = client.post("/predict/batch", json={**body, field: value})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == field, r.text
    r = client.post("/predict/batch", json={"input_path": "docs", "output_path": "docs/scored"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "output_path"
    assert (data / "docs" / "architecture.md").read_text() == "precious"
    assert client.get("/jobs").json()["jobs"] == []


def test_batch_job_writes_new_output_and_overwrites_only_its_own(
    spark: Any, registered: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3 (job side): a real Spark batch job in this process."""
    import json

    from sparkpipe.serving.jobs import OUTPUT_MARKER, ROOTS_ENV, batch_predict_job

    data = tmp_path / "data"
    data.mkdir()
    (data / "in.csv").write_text("plan,age,calls\npro,33.5,4\nbasic,61.0,9\n")
    (data / "foreign").mkdir()
    (data / "foreign" / "keep.md").write_text("mine")
    monkeypatch.setenv(ROOTS_ENV, json.dumps([str(data)]))
    payload = {
        "model_uri": f"models:/{MODEL}/1",
        "input_path": str(data / "in.csv"),
        "output_path": str(data / "scored"),
        "format": "parquet",
        "mode": "error",
        "tracking_uri": registered["tracking_uri"],
    }
    assert batch_predict_job(payload)["rows"] == 2
    marker = json.loads((data / "scored" / OUTPUT_MARKER).read_text())
    assert marker["model_version"] == "1" and marker["output_delta_version"] is None  # parquet
    with pytest.raises(FileExistsError, match="overwrite"):
        batch_predict_job(payload)
    assert batch_predict_job({**payload, "mode": "overwrite"})["rows"] == 2
    with pytest.raises(FileExistsError, match="not written by this service"):
        batch_predict_job({**payload, "output_path": str(data / "foreign"), "mode": "overwrite"})
    assert (data / "foreign" / "keep.md").read_text() == "mine"


def test_paths_are_checked_again_when_the_job_uses_them(registered: dict[str, Any], tmp_path: Path) -> None:
    """Item 4: a queued job's directories swapped for symlinks after the check are refused."""
    settings = make_settings(registered, tmp_path)
    data, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("plan,age,calls\npro,1,1\n")
    (data / "sub").mkdir()
    (data / "in").mkdir()
    (data / "in" / "a.csv").write_text("plan,age,calls\npro,1,1\n")
    with _fake_jobs_client(settings, batch_predict="sparkpipe.serving.jobs:batch_predict_job") as c:
        blocker = c.app.state.jobs.submit("train", {}, {"sleep": 1.5})  # holds the only slot
        out_job = c.post(
            "/predict/batch", json={"model_id": MODEL, "input_path": "in/a.csv", "output_path": "sub/out"}
        )
        in_job = c.post(
            "/predict/batch", json={"model_id": MODEL, "input_path": "in", "output_path": "scored"}
        )
        assert out_job.status_code == 202 and in_job.status_code == 202, (out_job.text, in_job.text)
        assert c.get(f"/jobs/{blocker['id']}").json()["status"] in ("queued", "running")
        # the attack: between the request check and the job, the directories become symlinks out
        (data / "sub").rmdir()
        (data / "sub").symlink_to(outside)
        (data / "in" / "a.csv").unlink()
        (data / "in").rmdir()
        (data / "in").symlink_to(outside)
        for job in (out_job, in_job):
            deadline = time.monotonic() + 60
            while (state := c.get(f"/jobs/{job.json()['id']}").json())["status"] not in (
                "succeeded",
                "failed",
            ):
                assert time.monotonic() < deadline, state
                time.sleep(0.1)
            assert state["status"] == "failed", state
            assert "PermissionError" in state["error"] and "outside the allowed data roots" in state["error"]
            assert str(tmp_path) not in state["error"]
    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv"]


@pytest.mark.parametrize("field", ["data_path", "config_path", "input_path", "output_path"])
def test_overlong_path_component_is_a_4xx_naming_the_field(client: Any, tmp_path: Path, field: str) -> None:
    """Item 6: a component over 255 bytes (OSError: File name too long) is a 400, not a 500."""
    (tmp_path / "data" / "in.csv").write_text("plan,age,calls\npro,1,1\n")
    long = "a" * 300
    if field in ("data_path", "config_path"):
        body = {"algorithm": "gbt", "data_path": "x.csv", field: f"dir/{long}.csv"}
        r = client.post("/train", json=body)
    else:
        body = {"input_path": "in.csv", "output_path": "out", field: f"{long}/x"}
        r = client.post("/predict/batch", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == field
    r = client.post("/predict/batch", json={"input_path": "é" * 200, "output_path": "out"})  # 400 bytes
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "input_path"


def test_no_server_paths_or_pids_in_answers(registered: dict[str, Any], tmp_path: Path) -> None:
    """Item 8: 403/422 bodies, /ready errors and GET /jobs show paths relative to the data root."""
    settings = make_settings(registered, tmp_path, models=["no_such_model"])
    (tmp_path / "data" / "in.csv").write_text("plan,age,calls\npro,1,1\n")
    secret_root = str(tmp_path)
    with _fake_jobs_client(settings) as c:
        answers = [
            c.post("/train", json={"algorithm": "gbt", "data_path": "/etc/passwd"}),
            c.post("/predict/batch", json={"input_path": "../../etc", "output_path": "o"}),
            c.post("/predict/batch", json={"input_path": "s3a://bucket/x", "output_path": "o"}),
            c.post(
                "/train", json={"algorithm": "gbt", "data_path": "x.csv", "overrides": {"data.seed": "x"}}
            ),
            c.post("/train", json={"algorithm": "no_such_algo", "data_path": "x.csv"}),
            c.get("/ready"),
        ]
        assert [a.status_code for a in answers] == [403, 403, 403, 422, 422, 503]
        r = c.post("/predict/batch", json={"model_id": MODEL, "input_path": "in.csv", "output_path": "o"})
        job_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while c.get(f"/jobs/{job_id}").json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        answers += [c.get("/jobs"), c.get(f"/jobs/{job_id}")]
        job = answers[-1].json()
        assert job["params"]["input_path"] == "in.csv" and job["log_file"] == f"{job_id}.log"
        assert "pid" not in job and "log_path" not in job
        assert answers[-2].json()["jobs"][0] == job
    for a in answers:
        assert secret_root not in a.text, a.text
        assert "/tmp/" not in a.text, a.text
