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

Job functions are named by import path (``module:function``) so tests can run quick fake jobs.
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

log = logging.getLogger(__name__)

TARGETS: dict[str, str] = {
    "train": "sparkpipe.serving.jobs:train_job",
    "batch_predict": "sparkpipe.serving.jobs:batch_predict_job",
}
"""Job kind -> ``module:function`` run in the child process (``function(payload) -> dict``)."""

FINAL = ("succeeded", "failed")


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


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
    """

    def __init__(
        self,
        jobs_dir: str | Path,
        max_concurrent: int = 1,
        targets: dict[str, str] | None = None,
        on_finished: Callable[[dict[str, Any]], None] | None = None,
        on_metrics: Callable[[str, str], None] | None = None,
    ):
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
            "target": self.targets[kind],
            "result": None,
            "error": None,
            "pid": None,
            "log_path": str(self.dir / f"{job_id}.log"),
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

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Jobs, newest first, optionally filtered by status."""
        out = []
        for f in self.dir.glob("*.json"):
            if f.name.startswith("."):
                continue
            state = read_state(f)
            if state and (status is None or state.get("status") == status):
                out.append(public(state))
        out.sort(key=lambda s: s.get("created_at") or "", reverse=True)
        return out[:limit]

    def recover(self) -> dict[str, int]:
        """Resume queued jobs, watch live ones, fail those a restart interrupted (see module doc)."""
        counts = {"resumed": 0, "watching": 0, "failed": 0}
        states = [s for f in self.dir.glob("*.json") if not f.name.startswith(".") and (s := read_state(f))]
        for state in sorted(states, key=lambda s: s.get("created_at") or ""):
            job_id, status = state.get("id"), state.get("status")
            if not isinstance(job_id, str) or status in FINAL:
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
                if process_alive(state.get("pid"), state.get("pid_start")):
                    with self._lock:
                        self._running.add(job_id)
                    threading.Thread(
                        target=self._watch_foreign,
                        args=(job_id, state["pid"], state.get("pid_start")),
                        name=f"job-watch-{job_id}",
                        daemon=True,
                    ).start()
                    counts["watching"] += 1
                else:
                    self._finalize_orphan(job_id, "server restarted")
                    counts["failed"] += 1
        if any(counts.values()):
            log.info("jobs after restart: %s", counts)
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
                if not state or state.get("status") != "queued":
                    continue
                try:
                    proc = self._spawn(job_id)
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

    def _spawn(self, job_id: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        log_path = self.dir / f"{job_id}.log"
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sparkpipe.serving.jobs", "run", str(self.dir), job_id],
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
    """The state without internals (the job's payload may hold resolved paths and config)."""
    return {k: v for k, v in state.items() if k not in ("payload", "target", "pid_start")}


# ======================================================================= preparing job requests
_FORBIDDEN_OVERRIDES = (
    "deployment",
    "mlflow.tracking_uri",
    "mlflow.registry_uri",
    "mlflow.artifact_location",
    "logging.file",
    "spark.master",
    "data.input_path",
    "data.output_path",
)
"""Override keys a client may not set through the API (paths are confined; stores are the server's)."""


def _override_items(overrides: dict[str, Any] | list[str] | None) -> list[tuple[str, Any]]:
    from sparkpipe.config import parse_override

    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = [(str(k), v) for k, v in overrides.items()]
    elif isinstance(overrides, list):
        for expr in overrides:
            keys, value = parse_override(expr)
            items.append((".".join(keys), value))
    return items


def prepare_train(req: Any, settings: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a ``POST /train`` request into ``(params, payload)`` for :meth:`JobManager.submit`.

    Paths are confined to the allowed data roots, the config is validated here (so a bad request is a
    422 now, not a failed job later), and the server's MLflow stores are imposed.

    Raises
    ------
    ApiError
        400/403 for paths, 422 for overrides or config problems (naming the key).
    """
    import yaml
    from pydantic import ValidationError

    from sparkpipe.config import PipelineConfig, build_config
    from sparkpipe.errors import ConfigError
    from sparkpipe.serving.schemas import ApiError, validation_errors
    from sparkpipe.serving.security import confine_path

    data_path = confine_path(req.data_path, "data_path", settings, allow_builtin=True)
    raw: dict[str, Any] = {}
    raw_yaml = None
    source = None
    base_config = getattr(settings, "train_config_path", None)
    if req.config_path or base_config:
        # a request's config must lie in the allowed roots; the server's own config is trusted
        cfg_path = Path(
            confine_path(req.config_path, "config_path", settings) if req.config_path else base_config
        )
        if not cfg_path.is_file():
            raise ApiError(
                400, f"config_path: {req.config_path!r} is not a file", [("config_path", "no such file")]
            )
        try:
            raw_yaml = cfg_path.read_text()
            raw = yaml.safe_load(raw_yaml) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ApiError(
                422,
                f"config_path: not a readable YAML file: {str(exc).splitlines()[0][:200]}",
                [("config_path", "invalid YAML")],
            ) from None
        if not isinstance(raw, dict):
            raise ApiError(
                422, "config_path: the YAML must be a mapping of sections", [("config_path", "not a mapping")]
            )
        source = str(cfg_path)
    try:
        items = _override_items(req.overrides)
    except ConfigError as exc:
        raise ApiError(422, str(exc), [("overrides", m) for _, m in exc.problems]) from None
    for key, value in items:
        if not key or any(not part for part in key.split(".")):
            raise ApiError(
                422, f"overrides: {key!r} is not a dotted key", [(f"overrides.{key}", "empty key part")]
            )
        if any(key == f or key.startswith(f + ".") for f in _FORBIDDEN_OVERRIDES):
            raise ApiError(
                403,
                f"overrides: {key!r} cannot be set through the API",
                [(f"overrides.{key}", "not allowed through the API")],
            )
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ApiError(
                    422,
                    f"overrides: cannot set {key!r}: {part!r} is not a mapping",
                    [(f"overrides.{key}", "parent is not a mapping")],
                )
            node = nxt
        node[parts[-1]] = value
    raw.setdefault("model", {})
    raw.setdefault("data", {})
    raw.setdefault("mlflow", {})
    if not all(isinstance(raw[k], dict) for k in ("model", "data", "mlflow")):
        raise ApiError(
            422,
            "the config's model, data and mlflow sections must be mappings",
            [("config_path", "bad sections")],
        )
    raw["model"]["algorithm"] = req.algorithm
    raw["data"]["input_path"] = data_path
    out = raw["data"].get("output_path")
    raw["data"]["output_path"] = confine_path(str(out) if out else "output", "data.output_path", settings)
    if req.model_name:
        raw["mlflow"]["registered_model_name"] = req.model_name
    raw["mlflow"]["tracking_uri"] = settings.tracking_uri
    if settings.registry_uri:
        raw["mlflow"]["registry_uri"] = settings.registry_uri
    else:
        raw["mlflow"].pop("registry_uri", None)
    try:
        cfg = build_config(raw, source)
    except ConfigError as exc:
        raise ApiError(
            422, str(exc).replace("\n", " "), [(p or "config", m) for p, m in exc.problems]
        ) from None
    except ImportError:  # registry-aware checks unavailable: the schema check still applies
        try:
            cfg = PipelineConfig.model_validate(raw)
        except ValidationError as exc:
            raise ApiError(422, "invalid training config", validation_errors(exc)) from None
    params = {
        "algorithm": req.algorithm,
        "data_path": data_path,
        "config_path": source,
        "overrides": req.overrides,
        "model_name": cfg.registered_model_name(),
    }
    return params, {"config": raw, "raw_yaml": raw_yaml, "source": source}


def prepare_batch(req: Any, settings: Any, service: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a ``POST /predict/batch`` request into ``(params, payload)``.

    The model is the version this server serves for ``model_id`` when it is loaded (so batch and online
    answers agree), else whatever the registry resolves it to.
    """
    from sparkpipe.serving.schemas import ApiError
    from sparkpipe.serving.security import confine_path

    input_path = confine_path(req.input_path, "input_path", settings)
    output_path = confine_path(req.output_path, "output_path", settings)
    if not Path(input_path).exists():
        raise ApiError(
            400,
            f"input_path: {req.input_path!r} does not exist",
            [("input_path", "no such file or directory")],
        )
    if Path(output_path) == Path(input_path) or Path(input_path).is_relative_to(output_path):
        raise ApiError(
            400,
            "output_path must not contain or equal input_path",
            [("output_path", "would overwrite the input")],
        )
    try:
        model = service.get(req.model_id)
        model_uri = f"models:/{model.name}/{model.version}"
    except ApiError:
        if req.model_id is None:
            raise
        from sparkpipe.errors import ModelError

        try:
            ref = service.registry.resolve(req.model_id, default_alias=settings.default_alias)
        except ModelError as exc:
            raise ApiError(404, str(exc), [("model_id", "unknown model")]) from None
        model_uri = f"models:/{ref.name}/{ref.version}"
    params = {
        "model_id": req.model_id,
        "model_uri": model_uri,
        "input_path": input_path,
        "output_path": output_path,
        "format": req.format,
    }
    payload = {**params, "tracking_uri": settings.tracking_uri, "registry_uri": settings.registry_uri}
    return params, payload


# ================================================================================ job functions
def train_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Run the training pipeline for a config prepared by the server (in the child process)."""
    from sparkpipe.config import build_config
    from sparkpipe.pipeline import run_pipeline

    cfg = build_config(payload["config"], payload.get("source"))
    result = run_pipeline(cfg, payload.get("raw_yaml"))
    return {
        "run_id": result.run_id,
        "metrics": dict(result.metrics or {}),
        "registered_name": result.registered_name,
        "registered_version": result.registered_version,
        "model_uri": result.model_uri,
        "output_path": result.output_path,
    }


def batch_predict_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Score a data set with Spark (in the child process)."""
    import inspect

    from sparkpipe.config import MlflowConfig
    from sparkpipe.pipeline import batch_predict

    kwargs: dict[str, Any] = {}
    params = inspect.signature(batch_predict).parameters
    if payload.get("format") and "output_format" in params:
        kwargs["output_format"] = payload["format"]
    if "mlflow_cfg" in params:
        kwargs["mlflow_cfg"] = MlflowConfig(
            tracking_uri=payload["tracking_uri"], registry_uri=payload.get("registry_uri")
        )
    return dict(batch_predict(payload["model_uri"], payload["input_path"], payload["output_path"], **kwargs))


def _import_target(target: str) -> Callable[[dict[str, Any]], Any]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def child_main(jobs_dir: str, job_id: str) -> int:
    """Entry point of a job process: run the job named in its state file and record the outcome."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stdout
    )
    path = Path(jobs_dir) / f"{job_id}.json"
    state = read_state(path)
    if state is None:
        print(f"job state {path} is missing or unreadable", file=sys.stderr)
        return 2
    pid = os.getpid()
    state.update(status="running", started_at=now(), pid=pid, pid_start=pid_start_time(pid))
    write_state(path, state)
    t0 = time.perf_counter()
    try:
        result = _import_target(state["target"])(state.get("payload") or {})
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


if __name__ == "__main__":  # python -m sparkpipe.serving.jobs run <jobs_dir> <job_id>
    if len(sys.argv) != 4 or sys.argv[1] != "run":
        print("usage: python -m sparkpipe.serving.jobs run JOBS_DIR JOB_ID", file=sys.stderr)
        sys.exit(2)
    sys.exit(child_main(sys.argv[2], sys.argv[3]))
