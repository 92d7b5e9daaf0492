"""Shared set-up of the A/B benchmarks: a model store with two versions and a `sparkpipe serve` process.

``ensure_store(workdir)`` trains ``churn_model`` twice with the real CLI (``sparkpipe run`` on 2,000
built-in churn rows, logistic regression then naive Bayes) unless ``workdir/mlflow.db`` already holds
two versions, then points ``champion`` at 1 and ``challenger`` at 2. ``Server`` starts ``python -m
sparkpipe serve`` on a free port with the prediction log where the caller says, waits for ``/ready``,
and stops it with SIGTERM (``stop()`` returns the exit code).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

MODEL = "churn_model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _versions(db: Path) -> int:
    if not db.is_file():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM model_versions WHERE name = ?", (MODEL,)).fetchone()[0]
        except sqlite3.Error:
            return 0


def ensure_store(workdir: Path) -> str:
    """The tracking URI of a store in ``workdir`` with ``churn_model`` 1 (champion) and 2 (challenger)."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "mlflow.db"
    uri = f"sqlite:///{db.resolve()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SPARKPIPE_"))}
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    for algorithm in ("logistic_regression", "naive_bayes")[_versions(db) :]:
        cmd = [
            sys.executable,
            "-m",
            "sparkpipe",
            "run",
            "--set",
            "data.input_path=builtin:churn",
            "--set",
            "data.rows=2000",
            "--set",
            f"model.algorithm={algorithm}",
            "--set",
            "evaluation.report=false",
            "--set",
            f"mlflow.tracking_uri={uri}",
            "--set",
            f"mlflow.registered_model_name={MODEL}",
            "--set",
            "spark.master=local[2]",
        ]
        print(f"training {algorithm} into {db} ...", file=sys.stderr, flush=True)
        subprocess.run(cmd, cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL)
    from sparkpipe.config import MlflowConfig
    from sparkpipe.tracking import Registry, move_aliases

    reg = Registry(MlflowConfig(tracking_uri=uri))
    move_aliases(
        reg, MODEL, {"champion": "1", "challenger": "2"}, reason="benchmark set-up", actor="benchmark"
    )
    return uri


class Server:
    """``python -m sparkpipe serve`` with one worker (see the module docstring)."""

    def __init__(
        self, workdir: Path, uri: str, predlog: dict | None, extra_env: dict[str, str] | None = None
    ):
        self.port = free_port()
        self.workdir = workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SPARKPIPE_"))}
        env.update(
            {
                "SPARKPIPE_TRACKING_URI": uri,
                "SPARKPIPE_MODEL_NAME": MODEL,
                "SPARKPIPE_MODEL_CACHE_DIR": str(workdir / "cache"),
                "SPARKPIPE_JOBS_DIR": str(workdir / "jobs"),
                "SPARKPIPE_RELOAD_INTERVAL_SECONDS": "0",
                "SPARKPIPE_LOG_LEVEL": "WARNING",
                "SPARKPIPE_PREDICTION_LOG": json.dumps(predlog or {"enabled": False}),
                **(extra_env or {}),
            }
        )
        self.log = (workdir / f"serve-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparkpipe", "serve", "--port", str(self.port)],
            cwd=workdir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {(workdir / f'serve-{self.port}.log').read_text()[-2000:]}"
                )
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 120 s")
            time.sleep(0.1)

    def body(self) -> bytes:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", f"/models/{MODEL}")
        info = json.loads(c.getresponse().read())
        return json.dumps(info["loaded"][0]["input_example"]).encode()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self.log.close()
        return code
