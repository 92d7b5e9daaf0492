"""LocalCluster bookkeeping that needs no JVM: ports read from logs, state files, pid safety, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sparkpipe.cluster import (
    ClusterError,
    DaemonProcess,
    LocalCluster,
    _bound_port,
    _start_ticks,
    cluster_status,
    stop_cluster,
)


def test_bound_port_reads_the_last_port_spark_reports():
    log = (
        "INFO Utils: Successfully started service 'sparkMaster' on port 7077.\n"
        "WARN Utils: Service 'MasterUI' could not bind on port 8080. Attempting port 8081.\n"
        "INFO Utils: Successfully started service 'MasterUI' on port 8081.\n"
    )
    assert _bound_port(log, "sparkMaster") == 7077
    assert _bound_port(log, "MasterUI") == 8081
    assert _bound_port(log, "sparkWorker") is None


def _state(tmp_path, pid: int, ticks: int | None) -> LocalCluster:
    c = LocalCluster(workers=1, log_dir=tmp_path / "logs")
    c.master = DaemonProcess("master", pid, str(tmp_path / "master.log"), 1, 2, start_ticks=ticks)
    c.workers = [DaemonProcess("worker", pid, str(tmp_path / "w.log"), 3, 4, 1, "1g", ticks)]
    c._master_url = "spark://127.0.0.1:1"
    return c


def test_state_file_round_trip(tmp_path):
    path = _state(tmp_path, 12345, 99).save(tmp_path / "cluster.json")
    state = json.loads(path.read_text())
    assert state["master_url"] == "spark://127.0.0.1:1"
    assert state["workers"][0]["memory"] == "1g"
    back = LocalCluster.load(path)
    assert back.master_url == "spark://127.0.0.1:1"
    assert back.workers[0].to_dict() == state["workers"][0]


def test_stop_never_signals_a_pid_that_is_not_the_recorded_spark_daemon(tmp_path):
    # a recorded pid that now belongs to some other process (pid reuse) must be left alone
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = _state(tmp_path, other.pid, _start_ticks(other.pid)).save(tmp_path / "cluster.json")
        assert cluster_status(path)["master"]["running"] is False
        stop_cluster(path)
        assert other.poll() is None, "a process that is not a Spark daemon was signalled"
        assert not path.exists()
    finally:
        other.kill()
        other.wait()


def test_missing_state_file_names_the_fix(tmp_path):
    with pytest.raises(ClusterError, match="sparkpipe cluster start"):
        LocalCluster.load(tmp_path / "nope.json")


def test_cli_status_without_a_cluster_exits_1(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sparkpipe", "cluster", "status", "--state", str(tmp_path / "c.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "sparkpipe cluster start" in proc.stderr
