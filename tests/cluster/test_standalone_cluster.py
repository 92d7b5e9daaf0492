"""The default pipeline config on a real standalone Spark cluster on loopback, with and without a fault.

One cluster (master + 2 workers of 1 core each, started by :class:`sparkpipe.cluster.LocalCluster`) is
shared by the module. The pipeline runs through the real CLI in a subprocess
(``sparkpipe run --set spark.master=spark://127.0.0.1:<port>``), twice with the same settings:

1. a clean run: exits 0, registers version 1, reaches the expected AUC, and the application used both
   workers;
2. a run in which worker 0's whole process tree (the Worker JVM and its executor) is SIGKILLed while the
   ``train`` step is running: it must still exit 0 and produce the same fitted pipeline (bit for bit)
   and the same metrics as the clean run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sparkpipe.cluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "pipeline_config.yaml"
APP_NAME = "sparkpipe-cluster-test"
# the same for both runs: the default config on the cluster, with what CI does not need turned off
# (report, input example, UI) and few shuffle partitions; tol=0 keeps logistic regression iterating
# (one Spark job per iteration) until L-BFGS can improve no further, so the train step lasts long
# enough to be interrupted
SETTINGS = [
    f"spark.app_name={APP_NAME}",
    "spark.ui_enabled=false",
    "spark.shuffle_partitions=4",
    "data.rows=20000",
    "model.hyperparameters.maxIter=60",
    "model.hyperparameters.tol=0.0",
    "evaluation.report=false",
    "mlflow.log_input_example=false",
]
# After the kill every shuffle block is read from the one executor left, in another order than with
# two. Metrics must not depend on that: AUCs come from the exact curve (numBins=0; Spark's default
# 1,000 bins are cut along partitions and moved the areas by up to 3.5e-6), so every metric may only
# differ by float summation order, and the fitted model must be bit-identical.


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("cluster-logs")
    with LocalCluster(workers=2, cores=1, memory="2g", log_dir=logs) as c:
        yield c


class CliRun:
    """``sparkpipe run`` in a subprocess, its stderr lines time-stamped as they arrive."""

    def __init__(self, master: str, workdir: Path):
        self.workdir = workdir
        self.lines: list[tuple[float, str]] = []
        self.train_started = threading.Event()
        cmd = [sys.executable, "-m", "sparkpipe", "run", "--config", str(CONFIG), "--json"]
        for s in [
            f"spark.master={master}",
            *SETTINGS,
            f"data.output_path={workdir / 'out'}",
            f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
        ]:
            cmd += ["--set", s]
        env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
        self.proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with (self.workdir / "cli.log").open("w") as keep:  # for a post-mortem
            for line in self.proc.stderr:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                keep.write(line)
                keep.flush()
                if "▶ train " in line:
                    self.train_started.set()

    def wait(self, timeout: float = 600) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(timeout=10)
        return rc

    def first(self, text: str) -> float | None:
        return next((t for t, line in self.lines if text in line), None)

    def log(self, last: int = 60) -> str:
        return "\n".join(line for _, line in self.lines[-last:])

    def result(self) -> dict:
        return json.loads((self.workdir / "out" / "run.json").read_text())

    def fitted_stages(self) -> dict[str, list[dict]]:
        """The learned state of every stage of the logged PipelineModel (its ``data/`` parquet rows)."""
        import pyarrow.parquet as pq

        out: dict[str, list[dict]] = {}
        for f in sorted(self.workdir.glob("mlruns/*/artifacts/model/sparkml/stages/*/data/*.parquet")):
            stage = f.parent.parent.name.rsplit("_", 1)[0]  # "8_LogisticRegression" (the uid differs)
            out.setdefault(stage, []).extend(pq.read_table(f).to_pylist())
        return out


def _apps(state: dict) -> list[dict]:
    return [a for a in state.get("activeapps", []) + state.get("completedapps", []) if a["name"] == APP_NAME]


@pytest.fixture(scope="module")
def clean_run(cluster, tmp_path_factory):
    run = CliRun(cluster.master_url, tmp_path_factory.mktemp("clean"))
    rc = run.wait()
    assert rc == 0, run.log()
    return run


def test_pipeline_runs_on_standalone_cluster(cluster, clean_run):
    result = clean_run.result()
    assert result["registered_version"] == "1"
    assert result["metrics"]["test_auc_roc"] >= 0.75
    apps = _apps(cluster.master_state())
    assert apps, "the application never reached the cluster master"
    assert apps[0]["cores"] == 2, f"expected executors on both workers, got {apps[0]}"
    for i in range(2):
        ran = cluster.worker_state(i)["finishedexecutors"]
        assert any(e["appid"] == apps[0]["id"] for e in ran), f"worker {i} ran no executor"


def test_run_survives_worker_killed_mid_training(cluster, clean_run, tmp_path):
    assert len(cluster.alive_workers()) == 2
    run = CliRun(cluster.master_url, tmp_path)
    try:
        assert run.train_started.wait(timeout=400), f"the train step never started:\n{run.log()}"
        time.sleep(2.0)  # let a few training iterations run on both executors
        assert run.first("✔ train ") is None, "training finished before the kill; make it longer"
        ours = [e for e in cluster.worker_state(0)["executors"] if e["appdesc"]["name"] == APP_NAME]
        assert ours, "worker 0 runs no executor of the application"
        t_kill = time.monotonic()
        killed = cluster.kill_worker(0)
    except BaseException:
        run.proc.kill()
        raise
    finally:
        rc = run.wait()
    assert len(killed) >= 2, f"expected the worker JVM and its executor, signalled {killed}"
    assert rc == 0, run.log()

    # the kill landed mid-training: the driver lost the executor, then training finished
    t_lost = run.first("Lost executor")
    t_trained = run.first("✔ train ")
    assert t_lost is not None and t_lost >= t_kill, (
        f"the driver never reported the lost executor:\n{run.log()}"
    )
    assert t_trained is not None and t_trained > t_kill, "the train step had ended before the kill"
    assert [w["port"] for w in cluster.alive_workers()] == [cluster.workers[1].port]

    # same data, same splits, same iterations: the very same fitted pipeline (bit for bit) and metrics
    # (tasks of the lost executor were re-run and its cached partitions recomputed from lineage)
    model, clean_model = run.fitted_stages(), clean_run.fitted_stages()
    assert any(k.endswith("LogisticRegression") for k in clean_model), sorted(clean_model)
    assert model == clean_model
    faulty, clean = run.result()["metrics"], clean_run.result()["metrics"]
    assert faulty.keys() == clean.keys()
    for name, value in clean.items():
        assert faulty[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
