"""The same pipeline config, pointed at a real standalone Spark cluster on loopback.

Starts a master and one worker from the pyspark install (``spark-class``), runs a small pipeline through
the CLI in a subprocess with ``spark.master: spark://127.0.0.1:<port>``, checks the run and that the
application really ran on the cluster, then stops every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    fh = log.open("wb")
    return subprocess.Popen(
        [str(_spark_home() / "bin" / "spark-class"), *args],
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    port, ui_port, worker_ui = _free_port(), _free_port(), _free_port()
    env = dict(
        os.environ,
        SPARK_HOME=str(_spark_home()),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_WORKER_DIR=str(tmp / "work"),
        SPARK_LOG_DIR=str(tmp / "logs"),
        PYSPARK_PYTHON=sys.executable,
        SPARK_NO_DAEMONIZE="1",
    )
    master = _start(
        [
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
        ],
        env,
        tmp / "master.log",
    )
    procs = [master]
    try:
        deadline = time.time() + 90
        while True:
            try:
                _master_state(ui_port)
                break
            except OSError:
                if time.time() > deadline or master.poll() is not None:
                    pytest.fail(f"Spark master did not start: {(tmp / 'master.log').read_text()[-2000:]}")
                time.sleep(1)
        worker = _start(
            [
                "org.apache.spark.deploy.worker.Worker",
                f"spark://127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--cores",
                "2",
                "--memory",
                "2g",
                "--webui-port",
                str(worker_ui),
            ],
            env,
            tmp / "worker.log",
        )
        procs.append(worker)
        while not [w for w in _master_state(ui_port).get("workers", []) if w.get("state") == "ALIVE"]:
            if time.time() > deadline or worker.poll() is not None:
                pytest.fail(f"Spark worker did not register: {(tmp / 'worker.log').read_text()[-2000:]}")
            time.sleep(1)
        yield {"master": f"spark://127.0.0.1:{port}", "ui_port": ui_port, "tmp": tmp}
    finally:
        for p in reversed(procs):
            _stop(p)


def test_pipeline_runs_on_standalone_cluster(cluster, tmp_path):
    cfg = ROOT / "config" / "examples" / "cluster.yaml"
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    cmd = [
        sys.executable,
        "-m",
        "sparkpipe",
        "run",
        "--config",
        str(cfg),
        "--json",
        "--set",
        f"spark.master={cluster['master']}",
        "--set",
        "data.rows=3000",
        "--set",
        f"data.output_path={tmp_path / 'out'}",
        "--set",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["registered_version"] == "1"
    assert run["metrics"]["test_auc_roc"] >= 0.75
    apps = _master_state(cluster["ui_port"])
    names = [a["name"] for a in apps.get("completedapps", []) + apps.get("activeapps", [])]
    assert "sparkpipe-cluster" in names, f"the application never reached the cluster master: {names}"
