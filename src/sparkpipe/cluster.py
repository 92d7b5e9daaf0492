"""A local standalone Spark cluster on loopback: one master and N workers started from the pyspark install.

``LocalCluster`` starts the master and workers with the ``spark-class`` launcher that ships *inside* the
pyspark package (``.venv/bin/spark-class`` only works when the venv's ``python`` is first on ``PATH``,
because it looks for ``SPARK_HOME`` with whatever ``python3`` it finds), binds every process to
127.0.0.1, writes each process's output to ``<log_dir>/<role>.log`` and stops every process it started
(each worker together with its executors) on :meth:`LocalCluster.stop` or on leaving the ``with`` block::

    with LocalCluster(workers=2, cores=1, memory="2g", log_dir="logs") as cluster:
        run(..., master=cluster.master_url)
        cluster.kill_worker(0)            # SIGKILL the worker JVM and its executor(s)
        cluster.master_state()["workers"]

A cluster that must outlive the Python process that started it (``sparkpipe cluster start``) is
recorded in a JSON state file (:meth:`LocalCluster.save`); :meth:`LocalCluster.load` re-attaches to it by
process id, checking that each id still belongs to the same Spark daemon before signalling it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sparkpipe.errors import SparkpipeError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
DEFAULT_STATE_FILE = Path(".sparkpipe") / "cluster.json"


class ClusterError(SparkpipeError):
    """The local standalone cluster could not be started, found or stopped."""


def spark_home() -> Path:
    """The pyspark package directory, which is a complete ``SPARK_HOME`` (``bin/``, ``jars/``)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        raise ClusterError("pyspark is not installed in this environment; run 'make install'")
    return Path(spec.origin).parent


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class DaemonProcess:
    """One Spark daemon (master or worker) this module started."""

    role: str
    pid: int
    log: str
    port: int
    ui_port: int
    cores: int | None = None
    memory: str | None = None
    start_ticks: int | None = None  # /proc start time: tells a reused pid from ours
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "popen"}

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _same_process(self.pid, self.start_ticks) and _proc_state(self.pid) not in ("Z", "X", None)


class LocalCluster:
    """A standalone Spark master and ``workers`` workers on 127.0.0.1.

    Parameters
    ----------
    workers
        Workers to start with :meth:`start`; more can be added with :meth:`add_worker`.
    cores, memory
        What each worker offers to applications (``--cores``, ``--memory``, e.g. ``"2g"``).
    log_dir
        Where ``master.log`` and ``worker-<i>.log`` (and Spark's own logs) go; a temporary directory
        by default.
    work_dir
        Workers' scratch space (executor stdout/stderr, shuffle files); ``<log_dir>/work`` by default.
    port, ui_port
        Master RPC and web UI ports; free ports by default.
    daemon_memory
        Heap of each master/worker daemon JVM (``SPARK_DAEMON_MEMORY``); executors are sized by the
        application's ``spark.executor.memory``.
    start_timeout
        Seconds to wait for the master to answer and for workers to register.
    """

    def __init__(
        self,
        workers: int = 1,
        cores: int = 1,
        memory: str = "2g",
        log_dir: str | os.PathLike[str] | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        ui_port: int | None = None,
        daemon_memory: str = "512m",
        start_timeout: float = 90.0,
    ) -> None:
        if workers < 0 or cores < 1:
            raise ClusterError(f"need workers >= 0 and cores >= 1, got workers={workers}, cores={cores}")
        self.num_workers = workers
        self.cores = cores
        self.memory = memory
        if log_dir is None:
            import tempfile

            log_dir = tempfile.mkdtemp(prefix="sparkpipe-cluster-")
        self.log_dir = Path(log_dir).resolve()
        self.work_dir = Path(work_dir).resolve() if work_dir else self.log_dir / "work"
        self.port = port
        self.ui_port = ui_port
        self.daemon_memory = daemon_memory
        self.start_timeout = start_timeout
        self.master: DaemonProcess | None = None
        self.workers: list[DaemonProcess] = []
        self._master_url: str | None = None

    # ------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        """Start the master and the configured workers; return once every worker is ALIVE."""
        if self.master is not None:
            raise ClusterError("this cluster is already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_master()
            for _ in range(self.num_workers):
                self.add_worker(wait=False)
            self.wait_for_workers(self.num_workers)
        except BaseException:
            self.stop()
            raise
        log.info(
            "local Spark cluster up: %s (UI %s), %d worker(s) x %d core(s), logs in %s",
            self.master_url,
            self.ui_url,
            len(self.workers),
            self.cores,
            self.log_dir,
        )
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every worker (with its executors), then the master; idempotent."""
        for w in reversed(self.workers):
            _terminate(w, timeout)
        if self.master is not None:
            _terminate(self.master, timeout)

    # ------------------------------------------------------------------------------------ workers
    def add_worker(self, cores: int | None = None, memory: str | None = None, wait: bool = True) -> int:
        """Start one more worker; return its index (the order workers were added in)."""
        if self.master is None:
            raise ClusterError("start the cluster before adding workers")
        index = len(self.workers)
        cores, memory = cores or self.cores, memory or self.memory
        port, ui_port = free_port(), free_port()
        logfile = self.log_dir / f"worker-{index}.log"
        args = [
            WORKER_CLASS,
            self.master_url,
            "--host",
            HOST,
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
            "--cores",
            str(cores),
            "--memory",
            memory,
            "--work-dir",
            str(self.work_dir / f"worker-{index}"),
        ]
        proc = self._launch(args, logfile)
        worker = DaemonProcess("worker", proc.pid, str(logfile), port, ui_port, cores, memory)
        worker.popen, worker.start_ticks = proc, _start_ticks(proc.pid)
        self.workers.append(worker)
        if wait:
            self.wait_for_workers(len(self.alive_workers()) + 1)
        return index

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` (SIGKILL by default) to worker ``index`` and every process under it.

        A worker's executors are child JVMs of the worker (and Python workers are children of those),
        so killing the tree is what a machine failure looks like to the driver. Returns the pids signalled.
        """
        w = self._worker(index)
        if not w.alive():
            return []
        pids = [w.pid, *_descendants(w.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if w.popen is not None and sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.popen.wait(timeout=10)
        log.info("sent signal %d to worker %d (pids %s)", sig, index, pids)
        return pids

    def stop_worker(self, index: int, timeout: float = 20.0) -> None:
        """Stop worker ``index`` gracefully (SIGTERM, then SIGKILL after ``timeout``)."""
        _terminate(self._worker(index), timeout)

    def wait_for_workers(self, count: int, timeout: float | None = None) -> list[dict[str, Any]]:
        """Wait until the master lists ``count`` ALIVE workers; return them."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            alive = self.alive_workers()
            if len(alive) >= count:
                return alive
            dead = [w for w in self.workers if not w.alive()]
            if dead or time.monotonic() > deadline:
                w = dead[0] if dead else self.workers[-1]
                raise ClusterError(
                    f"{count} worker(s) did not register with {self.master_url} "
                    f"({len(alive)} alive); last lines of {w.log}:\n{_tail(w.log)}"
                )
            time.sleep(0.5)

    # ------------------------------------------------------------------------------------ state
    @property
    def master_url(self) -> str:
        """``spark://127.0.0.1:<port>`` — what ``spark.master`` should be set to."""
        if self._master_url is None:
            raise ClusterError("the cluster is not started")
        return self._master_url

    @property
    def ui_url(self) -> str:
        if self.master is None:
            raise ClusterError("the cluster is not started")
        return f"http://{HOST}:{self.master.ui_port}"

    def master_state(self, timeout: float = 5.0) -> dict[str, Any]:
        """The master's JSON state (``/json/``): workers, active and completed applications."""
        return _get_json(f"{self.ui_url}/json/", timeout)

    def worker_state(self, index: int, timeout: float = 5.0) -> dict[str, Any]:
        """Worker ``index``'s JSON state (its executors, cores and memory used)."""
        return _get_json(f"http://{HOST}:{self._worker(index).ui_port}/json/", timeout)

    def alive_workers(self) -> list[dict[str, Any]]:
        """The master's entries for workers in state ALIVE."""
        try:
            workers = self.master_state().get("workers", [])
        except OSError:
            return []
        return [w for w in workers if w.get("state") == "ALIVE"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "master_url": self.master_url,
            "ui_url": self.ui_url,
            "spark_home": str(spark_home()),
            "log_dir": str(self.log_dir),
            "work_dir": str(self.work_dir),
            "cores": self.cores,
            "memory": self.memory,
            "master": self.master.to_dict() if self.master else None,
            "workers": [w.to_dict() for w in self.workers],
        }

    def save(self, path: str | os.PathLike[str] = DEFAULT_STATE_FILE) -> Path:
        """Write the cluster's URLs and process ids to ``path`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_STATE_FILE) -> LocalCluster:
        """Re-attach to a cluster recorded by :meth:`save` (its processes are addressed by pid)."""
        path = Path(path)
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterError(
                f"no cluster state at {path}; start one with 'sparkpipe cluster start'"
            ) from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read cluster state {path}: {exc}") from exc
        self = cls(
            workers=len(state["workers"]),
            cores=state.get("cores", 1),
            memory=state.get("memory", "2g"),
            log_dir=state["log_dir"],
            work_dir=state.get("work_dir"),
        )
        self.master = DaemonProcess(**state["master"])
        self.workers = [DaemonProcess(**w) for w in state["workers"]]
        self._master_url = state["master_url"]
        return self

    def status(self) -> dict[str, Any]:
        """Which recorded processes are running, plus the master's view (workers, applications)."""
        out = self.to_dict()
        out["master"]["running"] = self.master.alive() if self.master else False
        for w in out["workers"]:
            w["running"] = self._worker_by_pid(w["pid"]).alive()
        try:
            out["master_state"] = self.master_state()
        except OSError as exc:
            out["master_state"] = None
            out["master_error"] = str(exc)
        return out

    # ------------------------------------------------------------------------------------ internals
    def _worker(self, index: int) -> DaemonProcess:
        try:
            return self.workers[index]
        except IndexError:
            raise ClusterError(f"no worker {index}; this cluster has {len(self.workers)}") from None

    def _worker_by_pid(self, pid: int) -> DaemonProcess:
        return next(w for w in self.workers if w.pid == pid)

    def _env(self) -> dict[str, str]:
        home = str(spark_home())
        env = dict(os.environ)
        env.update(
            SPARK_HOME=home,
            SPARK_LOCAL_IP=HOST,
            SPARK_LOG_DIR=str(self.log_dir),
            SPARK_WORKER_DIR=str(self.work_dir),
            SPARK_DAEMON_MEMORY=self.daemon_memory,
            PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable),
        )
        # the launcher finds java via JAVA_HOME or PATH; make sure the venv's python is found first
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def _launch(self, args: list[str], logfile: Path) -> subprocess.Popen:
        launcher = spark_home() / "bin" / "spark-class"
        with logfile.open("ab") as fh:
            # own session: the daemon (and its executors) can be signalled as one process group and
            # survive the process that started them (``sparkpipe cluster start``)
            return subprocess.Popen(
                [str(launcher), *args],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _start_master(self) -> None:
        port, ui_port = self.port or free_port(), self.ui_port or free_port()
        logfile = self.log_dir / "master.log"
        args = [MASTER_CLASS, "--host", HOST, "--port", str(port), "--webui-port", str(ui_port)]
        proc = self._launch(args, logfile)
        self.master = DaemonProcess("master", proc.pid, str(logfile), port, ui_port)
        self.master.popen, self.master.start_ticks = proc, _start_ticks(proc.pid)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                raise ClusterError(f"the Spark master exited ({proc.returncode}):\n{_tail(logfile)}")
            # Spark moves to the next port when one is taken: read the ports it really bound
            text = logfile.read_text(errors="replace")
            self.master.port = _bound_port(text, "sparkMaster") or self.master.port
            self.master.ui_port = _bound_port(text, "MasterUI") or self.master.ui_port
            try:
                state = self.master_state(timeout=2)
            except OSError:
                state = None
            if state and state.get("status") == "ALIVE":
                self._master_url = state.get("url") or f"spark://{HOST}:{self.master.port}"
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"the Spark master did not start in time:\n{_tail(logfile)}")
            time.sleep(0.5)


# ---------------------------------------------------------------------------------- service layer
def start_cluster(
    workers: int = 1,
    cores: int = 1,
    memory: str = "2g",
    port: int = 7077,
    ui_port: int = 8080,
    log_dir: str | os.PathLike[str] | None = None,
    state_file: str | os.PathLike[str] = DEFAULT_STATE_FILE,
) -> LocalCluster:
    """Start a cluster that outlives this process and record it in ``state_file``."""
    state_file = Path(state_file)
    if state_file.exists():
        try:
            old = LocalCluster.load(state_file)
        except ClusterError:
            old = None
        if old is not None and old.master is not None and old.master.alive():
            raise ClusterError(
                f"a local cluster is already running at {old.master_url} (state {state_file}); "
                "stop it first with 'sparkpipe cluster stop'"
            )
    for p, what in ((port, "--port"), (ui_port, "--ui-port")):
        if p and not _port_free(p):
            raise ClusterError(f"port {p} on {HOST} is in use; choose another with {what}")
    cluster = LocalCluster(
        workers=workers,
        cores=cores,
        memory=memory,
        log_dir=log_dir or state_file.parent / "cluster-logs",
        port=port or None,
        ui_port=ui_port or None,
    )
    cluster.start()
    try:
        cluster.save(state_file)
    except BaseException as exc:
        cluster.stop()  # nothing may outlive us unrecorded
        if isinstance(exc, OSError):
            raise ClusterError(f"cannot write {state_file}: {exc}") from exc
        raise
    return cluster


def stop_cluster(state_file: str | os.PathLike[str] = DEFAULT_STATE_FILE) -> LocalCluster:
    """Stop the cluster recorded in ``state_file`` and remove the file."""
    cluster = LocalCluster.load(state_file)
    cluster.stop()
    Path(state_file).unlink(missing_ok=True)
    return cluster


def cluster_status(state_file: str | os.PathLike[str] = DEFAULT_STATE_FILE) -> dict[str, Any]:
    """The recorded cluster's processes and the master's JSON state."""
    return LocalCluster.load(state_file).status()


# ---------------------------------------------------------------------------------- process helpers
_BOUND = "Successfully started service '{}' on port (\\d+)"


def _bound_port(log_text: str, service: str) -> int | None:
    found = re.findall(_BOUND.format(re.escape(service)), log_text)
    return int(found[-1]) if found else None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.URLError as exc:  # an OSError; keep the URL in the message
        raise OSError(f"{url}: {exc.reason}") from exc


def _tail(path: str | Path, chars: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces
    return [
        raw[: raw.index(" ")],
        raw[raw.index("(") + 1 : raw.rindex(")")],
        *raw[raw.rindex(")") + 2 :].split(),
    ]


def _proc_state(pid: int) -> str | None:
    st = _stat(pid)
    return st[2] if st else None


def _start_ticks(pid: int) -> int | None:
    st = _stat(pid)
    return int(st[21]) if st else None


def _same_process(pid: int, start_ticks: int | None) -> bool:
    """True when ``pid`` is still the Spark daemon that was recorded (not a reused pid)."""
    if _stat(pid) is None:
        if not Path("/proc").is_dir():  # no procfs: fall back to "a process with that id exists"
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return False
    if start_ticks is not None and _start_ticks(pid) != start_ticks:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"org.apache.spark.deploy." in cmdline


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first-level first), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st:
                children.setdefault(int(st[3]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _terminate(proc: DaemonProcess, timeout: float) -> None:
    """SIGTERM the daemon's process tree, SIGKILL whatever is left after ``timeout`` seconds."""
    if not proc.alive():
        if proc.popen is not None:
            proc.popen.poll()
        return
    tree = [proc.pid, *_descendants(proc.pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        # the daemon leads its own process group; signal the group and any child that left it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 10)
        while time.monotonic() < deadline:
            if proc.popen is not None:
                proc.popen.poll()
            if not proc.alive() and not any(_alive_pid(p) for p in tree[1:]):
                return
            time.sleep(0.2)
    log.warning("%s (pid %d) did not exit after SIGKILL", proc.role, proc.pid)


def _alive_pid(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")
