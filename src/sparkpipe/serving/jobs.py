"""Training and batch-scoring jobs, each in its own OS process, with state persisted as JSON.

Every job is one file ``<jobs_dir>/<id>.json`` (written atomically: temp file + rename) and one log
``<jobs_dir>/<id>.log``. The server starts a job as ``python -m sparkpipe.serving.jobs run <dir> <id>``
in a new session: the child reads its parameters from the JSON file, marks itself ``running`` (with
its pid and the pid's start time), calls the job function and writes ``succeeded`` with the result or
``failed`` with the error. A crashing job (even a segfaulting JVM) cannot take the server down.

Restarts
    Job processes do not depend on the server: a job keeps running while the server restarts. On
    start-up :meth:`JobManager.recover` looks at every job file:

    * ``queued`` (never started): started again, in creation order (resumed);
    * ``running`` and its process is still alive (pid *and* start time match): watched until it ends;
    * ``running`` but its process is gone without a final state: marked ``failed`` with reason
      ``server restarted``.

Job functions are named by import path (``module:function``) so tests can run quick fake jobs. The
server passes the function on the job process's command line (from its own ``targets``): nothing
executable is ever read from a state file.

State files are validated against :class:`~sparkpipe.serving.schemas.JobRecord`: a file that does not
match (hand-edited, truncated, written by something else) is skipped, logged and listed under
``skipped`` by ``GET /jobs``; it never fails a request or the start-up.

Requests become jobs in :mod:`sparkpipe.serving.job_requests` (validated, the allowed overrides
checked). Paths in a job's payload were confined when the request came in; the job process confines
them again when it uses them (:func:`~sparkpipe.serving.security.recheck_path`) against the allowed
data roots the server gives it in ``SPARKPIPE_JOB_ROOTS``, so a directory swapped for a symlink in
between is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparkpipe.serving.job_requests import OUTPUT_MARKER, output_refusal

log = logging.getLogger(__name__)

TARGETS: dict[str, str] = {
    "train": "sparkpipe.serving.jobs:train_job",
    "batch_predict": "sparkpipe.serving.jobs:batch_predict_job",
}
"""Job kind -> ``module:function`` run in the child process (``function(payload) -> dict``)."""

FINAL = ("succeeded", "failed")
ROOTS_ENV = "SPARKPIPE_JOB_ROOTS"
"""Environment variable through which the server hands its allowed data roots to a job process."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# ================================================================================== state files
def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write a job state file atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_state(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(state, None)`` for a valid job file, ``(None, problem)`` otherwise."""
    from pydantic import ValidationError

    from sparkpipe.serving.schemas import JobRecord, validation_errors

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"not readable JSON ({type(exc).__name__})"
    try:
        record = JobRecord.model_validate(data)
    except ValidationError as exc:
        return None, "; ".join(f"{f}: {m}" for f, m in validation_errors(exc)[:3])
    if record.id != path.stem:
        return None, f"id {record.id!r} does not match the file name"
    return record.model_dump(), None


def read_state(path: Path) -> dict[str, Any] | None:
    """The validated state in a job file, ``None`` when missing or invalid."""
    return load_state(path)[0]


def pid_start_time(pid: int) -> str | None:
    """The kernel start time of ``pid`` (field 22 of ``/proc/<pid>/stat``), ``None`` if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int | None, start: str | None) -> bool:
    """True when ``pid`` runs and is the same process that recorded ``start``."""
    if not pid:
        return False
    current = pid_start_time(pid)
    if current is None:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z" and (start is None or current == start)


# ===================================================================================== manager
class JobManager:
    """Queue, start, watch and report jobs; state lives in ``jobs_dir``.

    Parameters
    ----------
    jobs_dir
        Directory of the job files.
    max_concurrent
        Jobs running at once; further jobs wait ``queued``.
    targets
        Job kind -> ``module:function`` (defaults to :data:`TARGETS`).
    on_finished
        Called with the final state of each job this server watched (e.g. to reload a model).
    on_metrics
        Called with ``(kind, status)`` when a job ends.
    allowed_roots
        The data roots job processes confine their paths to again when they use them
        (``create_app`` sets the service's when ``None``).
    """

    def __init__(
        self,
        jobs_dir: str | Path,
        max_concurrent: int = 1,
        targets: dict[str, str] | None = None,
        on_finished: Callable[[dict[str, Any]], None] | None = None,
        on_metrics: Callable[[str, str], None] | None = None,
        allowed_roots: list[str] | None = None,
    ):
        self.allowed_roots = list(allowed_roots) if allowed_roots is not None else None
        self.skipped: dict[str, str] = {}
        """State files that did not validate: file name -> problem (reported by ``GET /jobs``)."""
        self.dir = Path(jobs_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_concurrent = max_concurrent
        self.targets = dict(TARGETS if targets is None else targets)
        self.on_finished = on_finished
        self.on_metrics = on_metrics
        self._lock = threading.RLock()
        self._queue: deque[str] = deque()
        self._running: set[str] = set()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._closed = False

    def path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    # ------------------------------------------------------------------ public API
    def submit(self, kind: str, params: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        """Persist a new ``queued`` job and start it when a slot is free; return its state.

        Parameters
        ----------
        kind
            ``train`` or ``batch_predict`` (a key of ``targets``).
        params
            What the client asked for (shown by ``GET /jobs/{id}``).
        payload
            What the job function receives.
        """
        if kind not in self.targets:
            raise KeyError(f"unknown job kind {kind!r}; known: {', '.join(sorted(self.targets))}")
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        state = {
            "id": job_id,
            "kind": kind,
            "status": "queued",
            "created_at": now(),
            "started_at": None,
            "finished_at": None,
            "params": params,
            "payload": payload,
            "result": None,
            "error": None,
            "pid": None,
            "log_path": f"{job_id}.log",
        }
        write_state(self.path(job_id), state)
        with self._lock:
            self._queue.append(job_id)
        self._dispatch()
        return public(read_state(self.path(job_id)) or state)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The public state of one job (``None`` when unknown)."""
        if not job_id or "/" in job_id or job_id.startswith(".") or len(job_id) > 100:
            return None
        state = read_state(self.path(job_id))
        return public(state) if state else None

    def problem(self, job_id: str) -> str | None:
        """Why the state file of ``job_id`` is skipped (``None``: valid or absent)."""
        path = self.path(job_id)
        if "/" in job_id or job_id.startswith(".") or not path.exists():
            return None
        return load_state(path)[1]

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Valid jobs, newest first, optionally filtered by status (invalid files go to ``skipped``)."""
        out = [public(s) for s in self._valid_states() if status is None or s["status"] == status]
        out.sort(key=lambda s: s["created_at"], reverse=True)
        return out[:limit]

    def _valid_states(self) -> list[dict[str, Any]]:
        """Every valid state file; the invalid ones are logged once and recorded in ``skipped``."""
        states, skipped = [], {}
        for f in sorted(self.dir.glob("*.json")):
            if f.name.startswith("."):
                continue
            state, problem = load_state(f)
            if state is not None:
                states.append(state)
            elif problem is not None and f.exists():
                skipped[f.name] = problem
                if self.skipped.get(f.name) != problem:
                    log.warning("skipping job file %s: %s", f.name, problem)
        self.skipped = skipped
        return states

    def recover(self) -> dict[str, int]:
        """Resume queued jobs, watch live ones, fail those a restart interrupted (see module doc)."""
        counts = {"resumed": 0, "watching": 0, "failed": 0}
        for state in sorted(self._valid_states(), key=lambda s: s["created_at"]):
            job_id, status = state["id"], state["status"]
            if status in FINAL:
                continue
            if status == "queued":
                with self._lock:
                    if job_id not in self._queue and job_id not in self._running:
                        self._queue.append(job_id)
                counts["resumed"] += 1
            elif status == "running":
                with self._lock:
                    if job_id in self._running:
                        continue
                if process_alive(state["pid"], state["pid_start"]):
                    with self._lock:
                        self._running.add(job_id)
                    threading.Thread(
                        target=self._watch_foreign,
                        args=(job_id, state["pid"], state["pid_start"]),
                        name=f"job-watch-{job_id}",
                        daemon=True,
                    ).start()
                    counts["watching"] += 1
                else:
                    self._finalize_orphan(job_id, "server restarted")
                    counts["failed"] += 1
        if any(counts.values()) or self.skipped:
            log.info("jobs after restart: %s (%d invalid state files skipped)", counts, len(self.skipped))
        self._dispatch()
        return counts

    def shutdown(self) -> None:
        """Stop starting new jobs. Running job processes are left to finish on their own."""
        self._closed = True

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any] | None:
        """Block until a job is final (tests, CLI); return its state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.get(job_id)
            if state and state["status"] in FINAL:
                return state
            time.sleep(0.05)
        return self.get(job_id)

    # ------------------------------------------------------------------ internals
    def _dispatch(self) -> None:
        with self._lock:
            while not self._closed and self._queue and len(self._running) < self.max_concurrent:
                job_id = self._queue.popleft()
                state = read_state(self.path(job_id))
                if not state or state["status"] != "queued":
                    continue
                try:
                    target = self.targets.get(state["kind"])
                    if target is None:
                        raise OSError(f"unknown job kind {state['kind']!r}")
                    proc = self._spawn(job_id, target)
                except OSError as exc:
                    state.update(
                        status="failed", finished_at=now(), error=f"could not start the job process: {exc}"
                    )
                    write_state(self.path(job_id), state)
                    continue
                self._running.add(job_id)
                self._procs[job_id] = proc
                threading.Thread(
                    target=self._watch_child, args=(job_id, proc), name=f"job-{job_id}", daemon=True
                ).start()

    def _spawn(self, job_id: str, target: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env[ROOTS_ENV] = json.dumps(self.allowed_roots if self.allowed_roots is not None else ["."])
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        log_path = self.dir / f"{job_id}.log"
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sparkpipe.serving.jobs", "run", str(self.dir), job_id, target],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        log.info("job %s started as pid %d", job_id, proc.pid)
        return proc

    def _watch_child(self, job_id: str, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        self._ended(job_id, f"the job process exited with code {code} before reporting a result")

    def _watch_foreign(self, job_id: str, pid: int, start: str | None) -> None:
        while process_alive(pid, start):
            time.sleep(0.5)
        self._ended(job_id, "the job process ended without reporting a result")

    def _ended(self, job_id: str, reason: str) -> None:
        state = read_state(self.path(job_id)) or {}
        if state.get("status") not in FINAL:
            state = self._finalize_orphan(job_id, reason) or state
        with self._lock:
            self._running.discard(job_id)
            self._procs.pop(job_id, None)
        kind, status = str(state.get("kind", "?")), str(state.get("status", "failed"))
        log.info("job %s (%s) %s", job_id, kind, status)
        if self.on_metrics:
            with contextlib.suppress(Exception):
                self.on_metrics(kind, status)
        if self.on_finished:
            try:
                self.on_finished(public(state))
            except Exception:
                log.exception("on_finished hook failed for job %s", job_id)
        self._dispatch()

    def _finalize_orphan(self, job_id: str, reason: str) -> dict[str, Any] | None:
        state = read_state(self.path(job_id))
        if state is None:
            return None
        state.update(status="failed", finished_at=now(), error=reason)
        write_state(self.path(job_id), state)
        return state


def public(state: dict[str, Any]) -> dict[str, Any]:
    """A validated state as :class:`~sparkpipe.serving.schemas.JobInfo` (no payload, pid or server
    paths; the routes also rewrite paths inside ``params``/``result``/``error`` relative to the data
    root)."""
    from sparkpipe.serving.schemas import JobInfo

    log_path = state.get("log_path")
    fields = {k: v for k, v in state.items() if k in JobInfo.model_fields}
    fields["log_file"] = Path(log_path).name if log_path else None
    return JobInfo.model_validate(fields).model_dump()


# ================================================================================ job functions
def job_roots() -> list[str]:
    """The allowed data roots the server handed this job process."""
    raw = os.environ.get(ROOTS_ENV)
    if not raw:
        raise RuntimeError(f"{ROOTS_ENV} is not set: job processes are started by the server")
    return [str(r) for r in json.loads(raw)]


def train_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Run the training pipeline for a config prepared by the server (in the child process)."""
    import copy

    from sparkpipe.config import build_config
    from sparkpipe.flow.run import run_pipeline
    from sparkpipe.serving.security import recheck_path

    raw = copy.deepcopy(payload["config"])
    roots = job_roots()
    for key in ("input_path", "output_path"):
        raw["data"][key] = recheck_path(raw["data"][key], f"data.{key}", roots)
    cfg = build_config(raw, payload.get("source"), expand=False)
    result = run_pipeline(cfg, payload.get("raw_yaml"))
    return {
        "run_id": result.run_id,
        "metrics": dict(result.metrics or {}),
        "registered_name": result.registered_name,
        "registered_version": result.registered_version,
        "model_uri": result.model_uri,
        "output_path": result.output_path,
        "promotion": result.promotion,  # the gate's decision: champion or challenger, and why
    }


def batch_predict_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Score a data set with Spark (in the child process); the paths are confined again here."""
    from sparkpipe.config import MlflowConfig
    from sparkpipe.flow.batch import batch_predict
    from sparkpipe.serving.security import recheck_path

    roots = job_roots()
    input_path = recheck_path(payload["input_path"], "input_path", roots)
    output_path = recheck_path(payload["output_path"], "output_path", roots)
    local = Path(output_path).is_absolute()
    write_mode = "error"
    if local:
        refusal = output_refusal(output_path, payload.get("mode", "error"))
        if refusal:
            raise FileExistsError(f"output_path: {refusal}")
        out = Path(output_path)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        write_mode = "overwrite" if out.exists() else "error"
    result = batch_predict(
        payload["model_uri"],
        input_path,
        output_path,
        output_format=payload.get("format") or "parquet",
        mlflow_cfg=MlflowConfig(
            tracking_uri=payload["tracking_uri"], registry_uri=payload.get("registry_uri")
        ),
        write_mode=write_mode,
    )
    if local:
        marker = {
            "written_by": "sparkpipe batch",
            "model_uri": payload["model_uri"],
            "model_version": result.get("model_version"),
            "output_delta_version": result.get("output_delta_version"),  # Delta output: the version written
            "written_at": now(),
        }
        (Path(output_path) / OUTPUT_MARKER).write_text(json.dumps(marker))
    return dict(result)


def _import_target(target: str) -> Callable[[dict[str, Any]], Any]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def child_main(jobs_dir: str, job_id: str, target: str) -> int:
    """Entry point of a job process: run ``target`` (given by the server) on the job's payload."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stdout
    )
    path = Path(jobs_dir) / f"{job_id}.json"
    state, problem = load_state(path)
    if state is None:
        print(f"job state {path.name} is missing or invalid: {problem}", file=sys.stderr)
        return 2
    pid = os.getpid()
    state.update(status="running", started_at=now(), pid=pid, pid_start=pid_start_time(pid))
    write_state(path, state)
    t0 = time.perf_counter()
    try:
        result = _import_target(target)(state["payload"])
        state.update(status="succeeded", result=json.loads(json.dumps(result, default=str)))
        code = 0
    except BaseException as exc:
        traceback.print_exc()
        msg = str(exc).strip() or type(exc).__name__
        state.update(status="failed", error=f"{type(exc).__name__}: {msg}"[:4000])
        code = 1
    state.update(finished_at=now(), duration_seconds=round(time.perf_counter() - t0, 3))
    write_state(path, state)
    sys.stdout.flush()
    return code


if __name__ == "__main__":  # python -m sparkpipe.serving.jobs run <jobs_dir> <job_id> <module:function>
    if len(sys.argv) != 5 or sys.argv[1] != "run":
        print("usage: python -m sparkpipe.serving.jobs run JOBS_DIR JOB_ID MODULE:FUNCTION", file=sys.stderr)
        sys.exit(2)
    sys.exit(child_main(sys.argv[2], sys.argv[3], sys.argv[4]))
