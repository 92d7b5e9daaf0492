"""The README's cluster example on a real standalone Spark cluster on loopback, with and without a fault.

The README's "Run on a local Spark cluster" commands run as written, each in its own process, in one
working directory: ``sparkpipe cluster start --workers 2 --cores 1 --memory 2g`` (plus ``--port 0
--ui-port 0``: free ports, not 7077/8080, which a developer's own cluster may hold) starts the cluster
the module shares, ``sparkpipe cluster status`` reports it, ``sparkpipe cluster stop`` stops it. The
pipeline is the README's ``sparkpipe run --config config/examples/cluster.yaml`` with ``--set
spark.master=<the test cluster>`` (the README's own alternative to the file's 127.0.0.1:7077) and the
settings below, twice with the same settings:

1. a clean run: exits 0, registers version 1, reaches the expected AUC, and the application used both
   workers;
2. a run in which worker 0's whole process tree (the Worker JVM and its executor) is SIGKILLed while the
   ``train`` step is running: it must still exit 0 and produce the same fitted pipeline (bit for bit)
   and the same metrics as the clean run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from sparkpipe.cluster import LocalCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "examples" / "cluster.yaml"
APP_NAME = "sparkpipe-cluster-test"
# the README's cluster commands this module runs (tests/serving/test_readme_examples.py checks that
# every README command is run somewhere; these are run here)
README_START = "sparkpipe cluster start --workers 2 --cores 1 --memory 2g"
README_RUN = "sparkpipe run --config config/examples/cluster.yaml"
README_STATUS = "sparkpipe cluster status"
README_STOP = "sparkpipe cluster stop"
FREE_PORTS = ["--port", "0", "--ui-port", "0"]
# the same for both runs: the example config on the cluster, with what CI does not need turned off
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
    # the example file's own spark.conf, plus the JIT setting the suite gives its other JVMs
    # (SPARK_SUBMIT_OPTS, see tests/conftest.py), which reaches only the driver, for the executors
    "spark.conf="
    + json.dumps(
        {
            **yaml.safe_load(CONFIG.read_text())["spark"].get("conf", {}),
            "spark.executor.extraJavaOptions": os.environ.get("SPARK_SUBMIT_OPTS", ""),
        }
    ),
]
# After the kill every shuffle block is read from the one executor left, in another order than with
# two. Metrics must not depend on that: AUCs come from the exact curve (numBins=0; Spark's default
# 1,000 bins are cut along partitions and moved the areas by up to 3.5e-6), so every metric may only
# differ by float summation order, and the fitted model must be bit-identical.


def _readme_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    return [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines()]


def _sparkpipe(line: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """A README command line in its own process (``python -m sparkpipe`` is the console script)."""
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    argv = [sys.executable, "-m", "sparkpipe", *shlex.split(line)[1:], *extra]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_readme_commands_run_here_are_the_readmes():
    lines = _readme_lines()
    for line in (README_START, README_RUN, README_STATUS, README_STOP):
        assert line in lines, f"README no longer has {line!r}: update this test with it"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def cluster(workdir):
    started = _sparkpipe(README_START, workdir, *FREE_PORTS)
    state = workdir / ".sparkpipe" / "cluster.json"
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        c = LocalCluster.load(state)
        assert len(c.alive_workers()) == 2 and "master spark://127.0.0.1:" in started.stdout
        yield c
    finally:
        if state.exists():
            stopped = _sparkpipe(README_STOP, workdir)
            if stopped.returncode != 0:  # never leave daemons behind
                LocalCluster.load(state).stop()
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            assert "stopped spark://127.0.0.1:" in stopped.stdout and not state.exists()


class CliRun:
    """The README's ``sparkpipe run`` on the cluster config in a subprocess, its stderr lines
    time-stamped as they arrive."""

    def __init__(self, master: str, workdir: Path):
        self.workdir = workdir
        self.lines: list[tuple[float, str]] = []
        self.train_started = threading.Event()
        (workdir / "config" / "examples").mkdir(parents=True, exist_ok=True)
        shutil.copy(CONFIG, workdir / "config" / "examples" / "cluster.yaml")
        cmd = [sys.executable, "-m", "sparkpipe", *shlex.split(README_RUN)[1:], "--json"]
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
def clean_run(cluster, tmp_path_factory, seed_mlflow_db):
    where = tmp_path_factory.mktemp("clean")
    seed_mlflow_db(where / "mlflow.db")
    run = CliRun(cluster.master_url, where)
    rc = run.wait()
    assert rc == 0, run.log()
    return run


def test_pipeline_runs_on_standalone_cluster(cluster, clean_run, workdir):
    result = clean_run.result()
    assert result["registered_version"] == "1"
    assert result["metrics"]["test_auc_roc"] >= 0.75
    apps = _apps(cluster.master_state())
    assert apps, "the application never reached the cluster master"
    assert apps[0]["cores"] == 2, f"expected executors on both workers, got {apps[0]}"
    for i in range(2):
        ran = cluster.worker_state(i)["finishedexecutors"]
        assert any(e["appid"] == apps[0]["id"] for e in ran), f"worker {i} ran no executor"
    # the README's status line, as written, in the directory the cluster was started from
    status = _sparkpipe(README_STATUS, workdir)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"master {cluster.master_url}" in status.stdout and "running" in status.stdout
    assert status.stdout.count("ALIVE") == 3, status.stdout  # the master and its two workers


def test_run_survives_worker_killed_mid_training(cluster, clean_run, tmp_path, seed_mlflow_db):
    assert len(cluster.alive_workers()) == 2
    seed_mlflow_db(tmp_path / "mlflow.db")
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
