"""The pipeline against a real MLflow tracking server, then served from its registry as the serve image
runs it.

One ``mlflow server`` process on loopback (HTTP tracking URI, SQLite backend seeded with the migrated
schema, a local artifact destination proxied by the server) is what docker-compose.yml and the cluster
deployments point the trainer and the API at. ``sparkpipe run`` logs and registers to it over HTTP;
then the serve image's own command (the Dockerfile's ``CMD`` with its ``SPARKPIPE_*`` environment)
starts in a process where ``java`` is not on PATH and the distributions the image leaves out
(``SERVE_EXCLUDE``: pyspark, xgboost, ...; full MLflow's server dependencies, as the image has
mlflow-skinny) cannot be imported, and answers ``/ready`` and ``/predict``
from that registry. Tiny data (300 rows, 10 iterations): the module takes about 30 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sparkpipe.cli import main

from .test_manifests import DOCKERFILE, ROOT, _stages, serve_missing_modules

pytestmark = [pytest.mark.spark]

MODEL = "churn_model"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(port: int, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    r = httpx.request(method, f"http://127.0.0.1:{port}{path}", json=body, timeout=timeout)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def _wait(port: int, path: str, proc: subprocess.Popen, log: Path, limit: float = 120) -> float:
    """Seconds until ``GET path`` answers 200; fails with the log when the process exits or times out."""
    t0 = time.perf_counter()
    while True:
        try:
            if _call(port, "GET", path, timeout=5)[0] == 200:
                return time.perf_counter() - t0
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.perf_counter() - t0 > limit:
            pytest.fail(f"{path} never answered 200: {log.read_text()[-4000:]}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the process group; SIGKILL it after ``grace`` seconds."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _image_env() -> dict[str, str]:
    """The serve stage's ``ENV`` settings (``KEY=value`` pairs, continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", _stages()["serve"])
    out: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", text, flags=re.M):
        out.update(dict(pair.split("=", 1) for pair in line.split()))
    return out


# the serve image's Python: these modules are not installed. A None entry in sys.modules is what an
# absent module looks like to both `import` (ModuleNotFoundError) and importlib.util.find_spec (None),
# which MLflow uses to probe for optional packages.
_BLOCKER = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from sparkpipe.cli import main
main(sys.argv[2:])
"""


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory, seed_mlflow_db):
    """The server process, started but not waited for (``wait()``: seconds until ``/health`` answers),
    so its start overlaps the Spark session's."""
    root = tmp_path_factory.mktemp("tracking-server")
    db = root / "backend.db"
    seed_mlflow_db(db)
    artifacts = root / "artifacts"
    port = _free_port()
    log = root / "mlflow-server.log"
    t0 = time.perf_counter()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri", f"sqlite:///{db}",
        "--artifacts-destination", artifacts.as_uri(),
        "--serve-artifacts",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait() -> float:
        _wait(port, "/health", proc, log)
        return time.perf_counter() - t0

    try:
        yield {
            "root": root,
            "port": port,
            "uri": f"http://127.0.0.1:{port}",
            "artifacts": artifacts,
            "wait": wait,
        }
    finally:
        _stop(proc, grace=2)  # a throw-away server: its keep-alive connections delay a graceful exit


@pytest.fixture(scope="module")
def trained(tracking_server, spark, tmp_path_factory):
    """``sparkpipe run`` (in process, the console script's ``main``) logging to the server over HTTP."""
    started = tracking_server["wait"]()
    work = tmp_path_factory.mktemp("train")
    cfg = {
        "spark": {"app_name": "tracking-server", "master": "local[2]"},
        "data": {"input_path": "builtin:churn", "rows": 300, "output_path": str(work / "output")},
        "features": {"target": "churned"},
        "model": {"algorithm": "logistic_regression", "hyperparameters": {"maxIter": 10}},
        "evaluation": {"report": False},
        "mlflow": {
            "tracking_uri": tracking_server["uri"],
            "experiment_name": "tracking-server",
            "registered_model_name": MODEL,
        },
        "logging": {"level": "WARNING"},
    }
    path = work / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    main(["run", "--config", str(path)])
    print(f"mlflow server: /health {started:.1f} s after its start")
    return {"seconds": time.perf_counter() - t0, **tracking_server}


def test_run_logs_and_registers_through_the_server(trained):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=trained["uri"])
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert version.version == "1"
    run = client.get_run(version.run_id)
    assert run.data.metrics["test_auc_roc"] > 0.5
    # artifacts went through the server (proxied), into its destination on disk
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    assert list(trained["artifacts"].rglob("MLmodel")), "the model did not reach the server's artifact store"


def test_serve_image_command_serves_from_the_server_without_java_or_pyspark(trained, tmp_path, without_java):
    """The serve image as a process: its CMD and ENV (writable paths moved into a temp dir, loopback
    instead of 0.0.0.0), no java, the excluded distributions unimportable; ``/ready`` then ``/predict``."""
    app_dir = tmp_path / "app"  # the image's WORKDIR: only the config the Dockerfile copies
    (app_dir / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "pipeline_config.yaml", app_dir / "config" / "pipeline_config.yaml")
    env = without_java(tmp_path)
    image_env = _image_env()
    state = tmp_path / "state"
    for key, value in image_env.items():
        env[key] = value.replace("/app/state", str(state))
    port = _free_port()
    home = tmp_path / "home"  # the image's HOME is /app, read-only in the Deployment
    home.mkdir()
    env.update(
        HOME=str(home),
        SPARKPIPE_HOST="127.0.0.1",
        SPARKPIPE_PORT=str(port),
        MLFLOW_TRACKING_URI=trained["uri"],  # as docker-compose.yml and the k8s ConfigMap set it
        SPARKPIPE_API_KEY="test-key",
    )
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])\s*$", _stages()["serve"], re.M).group(1))
    blocked = serve_missing_modules()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BLOCKER, ",".join(sorted(blocked)), *cmd],
            cwd=app_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ready = _wait(port, "/ready", proc, log)
        print(f"serve (no JVM): ready in {ready:.1f} s; pipeline run {trained['seconds']:.1f} s")
        status, info = _call(port, "GET", f"/models/{MODEL}")
        assert status == 200, info
        loaded = info["loaded"][0] if isinstance(info["loaded"], list) else info["loaded"]
        assert loaded["version"] == "1"
        example = loaded["input_example"]
        row = example.get("features", example) if isinstance(example, dict) else example
        status, body = _call(port, "POST", "/predict", {"model_id": MODEL, "features": row})
        assert status == 200, body
        assert body["version"] == "1" and body["predictions"][0]["prediction"] in (0.0, 1.0)
        # the API key the Deployment's Secret provides guards the mutating endpoints
        assert _call(port, "POST", f"/models/{MODEL}/reload")[0] == 401
        status, metrics = _call(port, "GET", "/metrics")
        assert status == 200 and "sparkpipe_predictions_total" in metrics
    finally:
        t0 = time.perf_counter()
        _stop(proc)
        print(f"serve: stopped in {time.perf_counter() - t0:.1f} s")
    text = log.read_text()
    assert "None in sys.modules" not in text, text[-3000:]  # nothing tried to import a missing module
    # nothing was written outside the state directory (the Deployment's root filesystem is read-only)
    assert sorted(p.name for p in app_dir.iterdir()) == ["config"], list(app_dir.rglob("*"))
    assert not list(home.iterdir()), list(home.rglob("*"))
    assert (state / "models").is_dir()
    assert "SERVE_EXCLUDE" in DOCKERFILE
