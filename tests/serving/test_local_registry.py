"""The service resolves and loads models from a local registry without importing MLflow.

The registry is the session's real one (Spark models logged and registered by sparkpipe). Start-up with
an empty model cache, the requests and the alias poller's refresh run in a fresh interpreter, which then
reports which ``mlflow`` modules it imported: none, unless the local reader does not apply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sparkpipe.tracking import LocalRegistryReader, Registry, model_cache_dir

from .conftest import FALLBACK_MODEL, MODEL

ROW = {"plan": "pro", "age": 33.5, "calls": 4}

_SERVE = """
import json, sys
from fastapi.testclient import TestClient
from sparkpipe.serving.app import create_app
from sparkpipe.serving.settings import ServingSettings

settings = ServingSettings(**json.loads(sys.argv[1]))
app = create_app(settings)
row = json.loads(sys.argv[2])
with TestClient(app) as client:
    ready = client.get("/ready").status_code
    default = client.post("/predict", json={"features": row}).json()
    latest = client.post("/predict", json={"model_id": settings.models[0], "features": row}).json()
    refresh = app.state.service.refresh()  # what the alias poller runs
print(json.dumps({
    "ready": ready,
    "versions": [default.get("version"), latest.get("version")],
    "probabilities": [b["predictions"][0]["probability"] for b in (default, latest)],
    "refresh_errors": refresh["errors"],
    "mlflow": sorted(m for m in sys.modules if m.split(".")[0] == "mlflow"),
}))
"""


def _serve(registered: dict[str, Any], tmp_path: Path, **env: str) -> dict[str, Any]:
    settings = {
        "tracking_uri": registered["tracking_uri"],
        "model_name": MODEL,
        "models": [f"{MODEL}/latest"],
        "reload_interval_seconds": 0,
        "model_cache_dir": str(tmp_path / "cache"),
        "jobs_dir": str(tmp_path / "jobs"),
        "allowed_data_roots": [str(tmp_path)],
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKPIPE_", "MLFLOW_"))}
    out = subprocess.run(
        [sys.executable, "-c", _SERVE, json.dumps(settings), json.dumps(ROW)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **env},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_empty_cache_start_needs_no_mlflow(registered: dict[str, Any], tmp_path: Path) -> None:
    cache = model_cache_dir(registered["tracking_uri"], tmp_path / "cache")
    assert not cache.exists()
    result = _serve(registered, tmp_path)
    assert result["mlflow"] == []
    assert result["ready"] == 200
    assert result["versions"] == ["1", "2"]  # champion, latest
    assert all(len(p) == 2 for p in result["probabilities"]) and result["refresh_errors"] == {}
    for version in ("1", "2"):  # both versions were copied into the empty cache, completely
        entry = cache / MODEL / version
        assert (entry / "MLmodel").is_file() and (entry / "sparkml" / "metadata").is_dir()
        assert (
            entry / "registered_model_meta"
        ).read_text() == f"model_name: {MODEL}\nmodel_version: '{version}'\n"
    bindings = json.loads((cache / "bindings.json").read_text())
    assert bindings[MODEL]["version"] == "1" and bindings[MODEL]["aliases"] == ["champion"]
    assert bindings[f"{MODEL}/latest"]["version"] == "2"


def test_mlflow_is_still_used_when_the_reader_does_not_apply(
    registered: dict[str, Any], tmp_path: Path
) -> None:
    # a workspace in the environment is MLflow's business: the service must go through it, and still work
    result = _serve(registered, tmp_path, MLFLOW_WORKSPACE="default")
    assert "mlflow" in result["mlflow"]
    assert result["ready"] == 200 and result["versions"] == ["1", "2"]
    assert result["refresh_errors"] == {}


@pytest.mark.parametrize(
    "ref", [MODEL, f"{MODEL}@champion", f"{MODEL}/2", f"{MODEL}/latest", f"models:/{MODEL}", FALLBACK_MODEL]
)
def test_reader_matches_mlflow_on_logged_spark_models(registered: dict[str, Any], ref: str) -> None:
    mine = LocalRegistryReader(registered["cfg"].mlflow).resolve(ref)
    theirs = Registry(registered["cfg"].mlflow).resolve(ref)
    fields = ("name", "version", "run_id", "source", "tags")
    assert [getattr(mine, f) for f in fields] == [getattr(theirs, f) for f in fields]
    assert sorted(mine.aliases) == sorted(theirs.aliases)
