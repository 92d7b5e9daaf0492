"""The original README's curl examples against a real ``sparkpipe serve`` after a real pipeline run.

``GET /health``; ``POST /predict {"model_id": ..., "features": [..]}`` (values in input order);
``POST /train {"algorithm": "random_forest", "data_path": "..."}`` as a real training job in its own
process; ``GET /metrics``. The server is a subprocess on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from sparkpipe.cli import main

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read().decode(), e.code
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


@pytest.fixture(scope="module")
def served(spark, tmp_path_factory):
    from sparkpipe.data.datasets import load_builtin

    root = tmp_path_factory.mktemp("readme")
    cfg = {
        "spark": {"app_name": "readme-examples", "master": "local[2]"},
        "data": {"input_path": "builtin:churn", "rows": 1500, "output_path": "output/churn"},
        "features": {"target": "churned"},
        "model": {"algorithm": "logistic_regression"},
        "mlflow": {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "experiment_name": "readme",
            "registered_model_name": "churn_model",
        },
        "evaluation": {"report": False},
        "logging": {"level": "WARNING"},
        "deployment": {
            "model_name": "churn_model",
            "allowed_data_roots": [str(root)],
            "jobs_dir": str(root / "jobs"),
            "reload_interval_seconds": 1,
        },
    }
    cfg_path = root / "pipeline_config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    old = Path.cwd()
    os.chdir(root)
    try:
        main(["run", "--config", str(cfg_path)])
    finally:
        os.chdir(old)
    # a CSV for /train, inside the allowed data root
    load_builtin(spark, "churn", rows=1200, seed=3).drop("support_notes").toPandas().to_csv(
        root / "churn.csv", index=False
    )
    port = _free_port()
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparkpipe", "serve", "--config", str(cfg_path), "--port", str(port)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                if _call(port, "GET", "/ready")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"server did not become ready: {(root / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield {"port": port, "root": root}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_health(served):
    assert _call(served["port"], "GET", "/health")[0] == 200


def _example(port: int) -> tuple[list[str], dict]:
    """The served model's input column order and an example row, as GET /models/{name} reports them."""
    status, info = _call(port, "GET", "/models/churn_model")
    assert status == 200, info
    loaded = info["loaded"][0] if isinstance(info.get("loaded"), list) else info["loaded"]
    example = loaded["input_example"]
    names = [c["name"] if isinstance(c, dict) else c[0] for c in loaded["input_schema"]]
    row = example.get("features", example) if isinstance(example, dict) else example
    if isinstance(row, list):
        row = dict(zip(names, row, strict=True))
    return names, row


def test_predict_with_a_positional_feature_list(served):
    names, row = _example(served["port"])
    features = [row[n] for n in names]
    status, body = _call(
        served["port"], "POST", "/predict", {"model_id": "churn_model", "features": features}
    )
    assert status == 200, body
    assert body["model"] == "churn_model" and body["version"] == "1"
    pred = body["predictions"][0]
    assert pred["prediction"] in (0.0, 1.0) and abs(sum(pred["probability"]) - 1) < 1e-9
    # wrong length: a 4xx naming the field and the expected count
    status, err = _call(
        served["port"], "POST", "/predict", {"model_id": "churn_model", "features": [1.2, 3.4, 5.6]}
    )
    assert status == 422 and "features" in json.dumps(err)


def test_train_runs_a_real_job_and_registers_a_version(served):
    port = served["port"]
    status, job = _call(
        port,
        "POST",
        "/train",
        {
            "algorithm": "random_forest",
            "data_path": "churn.csv",
            "overrides": {"model.hyperparameters.numTrees": 10},
        },
    )
    assert status == 202, job
    deadline = time.time() + 600
    while True:
        status, state = _call(port, "GET", f"/jobs/{job['id']}")
        assert status == 200
        if state["status"] in ("succeeded", "failed"):
            break
        assert time.time() < deadline, state
        time.sleep(2)
    assert state["status"] == "succeeded", state
    result = state["result"]
    assert result["registered_version"] == "2" and result["metrics"]["test_auc_roc"] > 0.7
    # the champion alias moved to the new version: the server hot-swaps to it
    _, row = _example(port)
    deadline = time.time() + 60
    while (
        _call(port, "POST", "/predict", {"model_id": "churn_model", "features": row})[1].get("version") != "2"
    ):
        assert time.time() < deadline, "the server did not pick up the new champion"
        time.sleep(1)


def test_metrics_in_prometheus_format(served):
    _call(served["port"], "GET", "/health")
    status, text = _call(served["port"], "GET", "/metrics")
    assert status == 200 and "# TYPE" in text and "churn_model" in text
