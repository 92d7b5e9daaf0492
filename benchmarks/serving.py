"""Serving benchmark: sparkpipe's JVM-free service against its own previous code, a bare ASGI ceiling
and ``mlflow models serve``, side by side, one run.

* in-process scorer, per pipeline (the default churn LR ``churn_model``, a 100-tree depth-10 random
  forest ``churn_rf100`` and the full-features LR ``churn_full_features``; each is trained and
  registered first when missing): microseconds for one row (the row path when the pipeline has one) and
  per row in a 10,000-row batch (the batch path), best of three repetitions;
* ``sparkpipe serve`` (one uvicorn worker by default): cold start, single-row sequential latency over
  loopback HTTP (keep-alive client) p50 / p99, throughput at concurrency 16 (``wrk`` when installed —
  ``apt-get install wrk`` — else a Python client);
* the same for the code of ``--baseline`` (default ``main``, read with ``git archive``), in the same run:
  the speed-up is measured, not remembered;
* the ceiling: a bare ASGI app (``benchmarks/hello_asgi.py``) on the same server stack, and each
  service's share of its throughput;
* optionally ``mlflow models serve`` on the model's ``python_function`` flavor (sparkpipe's NumPy
  plan, :mod:`sparkpipe.pyfunc`) and on a copy whose loader is ``mlflow.spark`` (a local SparkSession,
  a Spark job per request).

Usage::

    .venv/bin/python benchmarks/serving.py --skip-mlflow    # writes benchmarks/results/serving.{json,md}
    .venv/bin/python benchmarks/serving.py                  # with mlflow models serve (slow)
    .venv/bin/python benchmarks/serving.py --skip-mlflow --requests 500 --seconds 5   # a shared machine
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {path} answered")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{path} did not answer 200 within {timeout}s")


def wait_steady(port: int, timeout: float = 60) -> None:
    """Wait until the service's start-up registry refresh is done (``/ready`` reports ``last_refresh``)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/ready")
        body = json.loads(c.getresponse().read() or b"{}")
        if body.get("last_refresh"):
            return
        time.sleep(0.2)


def sequential(port: int, path: str, body: bytes, n: int, warmup: int = 20) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    lat = []
    for i in range(n + warmup):
        t0 = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        dt = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"{path} answered {resp.status}: {payload[:300]!r}")
        if i >= warmup:
            lat.append(dt * 1000)
    return {
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "mean_ms": statistics.fmean(lat),
        "requests": n,
    }


def concurrent(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    if shutil.which("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body.decode())}\n"
                "done = function(summary, latency, requests)\n"
                '  io.write(string.format("JSON {\\"requests\\": %d, \\"errors\\": %d, \\"non2xx\\": %d, '
                '\\"p50_us\\": %d, \\"p99_us\\": %d}\\n", summary.requests, summary.errors.connect + '
                "summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status, "
                "latency:percentile(50), latency:percentile(99)))\nend\n"
            )
            script = f.name
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{concurrency}",
                f"-d{int(seconds)}s",
                "-s",
                script,
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        os.unlink(script)
        stats = json.loads(
            next(line for line in out.splitlines() if line.startswith("JSON ")).removeprefix("JSON ")
        )
        return {
            "rps": stats["requests"] / seconds,
            "errors": stats["errors"] + stats["non2xx"],
            "p50_ms": stats["p50_us"] / 1000,
            "p99_ms": stats["p99_us"] / 1000,
            "tool": "wrk",
        }
    # fallback: threads with keep-alive connections (the client competes for the same 2 cores)
    counts, errors = [0] * concurrency, [0] * concurrency
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < stop:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            counts[i] += 1
            errors[i] += r.status != 200

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": sum(counts) / (time.perf_counter() - t0), "errors": sum(errors), "tool": "python-threads"}


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def in_process(model_dir: Path, rows: list[dict], reps: int = 3) -> dict[str, Any]:
    """Microseconds for one row and per row of a 10,000-row batch (best of ``reps``), wall clock and
    this thread's CPU time."""
    from sparkpipe.scoring.compile import compile_pipeline

    plan = compile_pipeline(model_dir)
    gc.collect()
    gc.freeze()  # as the service does after start-up
    one = rows[:1]
    t0 = time.perf_counter()
    for _ in range(300):
        plan.predict(one)
    n = max(300, min(5000, int(300 * 0.5 / (time.perf_counter() - t0))))  # about half a second a repetition
    single, single_cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(n):
            plan.predict(one)
        single.append((time.perf_counter() - t0) / n * 1e6)
        single_cpu.append((time.thread_time() - c0) / n * 1e6)
    batch = (rows * (10_000 // len(rows) + 1))[:10_000]
    plan.predict(batch)
    per_row, per_row_cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(3):
            plan.predict(batch)
        per_row.append((time.perf_counter() - t0) / 3 / len(batch) * 1e6)
        per_row_cpu.append((time.thread_time() - c0) / 3 / len(batch) * 1e6)
    # CPU time of this thread as well: the shared machine's other load does not add to it
    return {
        "single_row_us": min(single),
        "batch_10k_us_per_row": min(per_row),
        "single_row_cpu_us": min(single_cpu),
        "batch_10k_cpu_us_per_row": min(per_row_cpu),
        "row_path": bool(getattr(plan, "has_row_path", False)),
        "stages": len(plan.stages),
    }


def example_rows(model_dir: Path) -> list[dict]:
    example = json.loads((model_dir / "input_example.json").read_text())
    return [dict(zip(example["columns"], r, strict=True)) for r in example["data"]]


def in_process_elsewhere(src: Path, model_dirs: dict[str, Path]) -> dict[str, Any]:
    """:func:`in_process` of every model with the code under ``src`` (a subprocess)."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--in-process-only",
            json.dumps({k: str(v) for k, v in model_dirs.items()}),
        ],
        env=dict(os.environ, PYTHONPATH=str(src)),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def baseline_tree(ref: str) -> Path:
    """The ``src/`` tree of git ref ``ref`` in a temporary directory (``git archive``: no worktree)."""
    dst = Path(tempfile.mkdtemp(prefix="sparkpipe-baseline-"))
    archive = subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst / "src"


def ours_cmd(args: argparse.Namespace, workers: int, port: int) -> list[str]:
    return [
        str(BIN / "sparkpipe"),
        "serve",
        "--config",
        args.config,
        "--set",
        f"deployment.workers={workers}",
        "--port",
        str(port),
    ]


def hello_cmd(args: argparse.Namespace, workers: int, port: int) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks" / "hello_asgi.py"), "--port", str(port)]


def side_by_side(
    args: argparse.Namespace, workers: int, env: dict, logs: Path, body: bytes, sides: dict[str, Path | None]
) -> dict[str, dict]:
    """Measure servers side by side: ``sides`` maps a tag to the ``src`` tree whose ``sparkpipe serve``
    runs (``None``: this checkout's), ``"hello"`` to the bare ASGI ceiling. Every server starts cold
    (a new process, an empty model cache) and stays up; sequential latency is measured on each, then
    the concurrency test runs in ``--rounds`` rounds taking the servers in turn (a change in the shared
    machine's load hits them alike); then each ``sparkpipe serve`` restarts once on its warm cache."""
    out: dict[str, dict] = {tag: {"workers": workers} for tag in sides}
    running: dict[str, tuple[subprocess.Popen, int]] = {}
    envs: dict[str, dict] = {}
    caches = []
    try:
        for tag, src in sides.items():
            e = dict(env)
            if tag != "hello":
                cache = Path(tempfile.mkdtemp(prefix="sparkpipe-bench-cache-"))
                caches.append(cache)
                e["SPARKPIPE_MODEL_CACHE_DIR"] = str(cache)
            if src is not None:
                e["PYTHONPATH"] = str(src)
            envs[tag] = e
            cmd = hello_cmd if tag == "hello" else ours_cmd
            port = free_port()
            t0 = time.perf_counter()
            proc = start(cmd(args, workers, port), e, logs / f"{tag}-w{workers}-cold.log")
            running[tag] = (proc, port)
            wait_http(port, "/" if tag == "hello" else "/ready", 60, proc)
            if tag != "hello":
                out[tag]["cold_start_s"] = time.perf_counter() - t0
                wait_steady(port)  # the start-up registry refresh runs in the background first
        for tag, (_, port) in running.items():
            print(f"  {tag}: sequential ...", flush=True)
            out[tag]["sequential"] = sequential(port, "/predict", body, args.requests)
        rounds: dict[str, list[dict]] = {tag: [] for tag in sides}
        for r in range(args.rounds):
            for tag, (_, port) in running.items():
                print(f"  {tag}: concurrency, round {r + 1} ...", flush=True)
                rounds[tag].append(concurrent(port, "/predict", body, args.concurrency, args.seconds))
        for tag, rs in rounds.items():
            out[tag]["concurrent"] = {
                "rps": statistics.fmean(x["rps"] for x in rs),
                "errors": sum(x["errors"] for x in rs),
                "p50_ms": statistics.median(x.get("p50_ms", 0.0) for x in rs),
                "p99_ms": statistics.median(x.get("p99_ms", 0.0) for x in rs),
                "tool": rs[0]["tool"],
                "rounds_rps": [x["rps"] for x in rs],
            }
    finally:
        for proc, _ in running.values():
            stop(proc)
    for tag in sides:
        if tag == "hello":
            continue
        port = free_port()
        t0 = time.perf_counter()
        proc = start(ours_cmd(args, workers, port), envs[tag], logs / f"{tag}-w{workers}-warm.log")
        try:
            wait_http(port, "/ready", 60, proc)
            out[tag]["warm_start_s"] = time.perf_counter() - t0
        finally:
            stop(proc)
    for cache in caches:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def spark_pyfunc_copy(model_dir: Path, dst: Path) -> Path:
    """A copy of the model whose ``python_function`` loader is MLflow's Spark one (the peer)."""
    import yaml

    shutil.copytree(model_dir, dst)
    meta = yaml.safe_load((dst / "MLmodel").read_text())
    flavor = meta["flavors"]["python_function"]
    flavor["loader_module"] = "mlflow.spark"
    for key in ("code", "scorer", "no_twin"):
        flavor.pop(key, None)
    (dst / "MLmodel").write_text(yaml.safe_dump(meta, sort_keys=False))
    return dst


FLOOR_LOADER = """\
class _Constant:
    def predict(self, data, params=None):
        return [0.0] * len(data)


def _load_pyfunc(path, model_config=None):
    return _Constant()
"""


def floor_pyfunc_copy(model_dir: Path, dst: Path) -> Path:
    """A copy of the model whose ``python_function`` loader returns a constant per row: the same
    signature, so ``mlflow models serve`` does all its own work per request (parse the JSON into a
    DataFrame, enforce the schema, write the answer) and scores nothing. Its latency is the floor any
    python_function flavor served by MLflow stands on."""
    import yaml

    shutil.copytree(model_dir, dst)
    (dst / "floor_code").mkdir()
    (dst / "floor_code" / "sparkpipe_floor.py").write_text(FLOOR_LOADER)
    meta = yaml.safe_load((dst / "MLmodel").read_text())
    flavor = meta["flavors"]["python_function"]
    flavor["loader_module"], flavor["code"] = "sparkpipe_floor", "floor_code"
    for key in ("scorer", "no_twin", "data"):
        flavor.pop(key, None)
    (dst / "MLmodel").write_text(yaml.safe_dump(meta, sort_keys=False))
    return dst


def mlflow_serve(model: str, args: argparse.Namespace, env: dict, log: Path, row: dict, n: int) -> dict:
    """Start ``mlflow models serve`` on ``model`` (a URI or directory), measure, stop."""
    port = free_port()
    t0 = time.perf_counter()
    peer = start(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            model,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env,
        log,
    )
    try:
        wait_http(port, "/ping", 300, peer)
        cold = time.perf_counter() - t0
        body = json.dumps({"dataframe_records": [row]}).encode()
        print(f"  {log.stem}: sequential ...", flush=True)
        seq = sequential(port, "/invocations", body, n, warmup=5)
        print(f"  {log.stem}: concurrency ...", flush=True)
        conc = concurrent(port, "/invocations", body, args.concurrency, args.seconds)
        return {"cold_start_s": cold, "sequential": seq, "concurrent": conc}
    finally:
        stop(peer)


PIPELINES: dict[str, tuple[str, list[str], str]] = {
    "churn_model": ("config/pipeline_config.yaml", [], "churn LR (default pipeline)"),
    "churn_rf100": (
        "config/pipeline_config.yaml",
        [
            "model.algorithm=random_forest",
            "model.hyperparameters={numTrees: 100, maxDepth: 10}",
            "mlflow.registered_model_name=churn_rf100",
        ],
        "random forest, 100 trees, depth 10",
    ),
    "churn_full_features": ("config/examples/full_features.yaml", [], "full-features LR (25 stages)"),
}
"""In-process pipelines: registered name -> (config, ``--set`` overrides that train it, label)."""


def registered_dir(reg: Any, name: str, args: argparse.Namespace) -> tuple[Any, Path]:
    """The registered model ``name`` (trained and registered first when missing) and its directory."""
    from sparkpipe.errors import ModelError

    try:
        ref = reg.resolve(name)
    except ModelError:
        config, overrides, _ = PIPELINES.get(name, (args.config, [], name))
        print(f"no registered model {name!r}: running its pipeline first", flush=True)
        sets = [x for o in overrides for x in ("--set", o)]
        subprocess.run([str(BIN / "sparkpipe"), "run", "--config", str(ROOT / config), *sets], check=True)
        ref = reg.resolve(name)
    return ref, reg.download(ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config" / "pipeline_config.yaml"))
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests to our service")
    ap.add_argument(
        "--mlflow-requests", type=int, default=500, help="sequential requests to mlflow serve (pyfunc flavor)"
    )
    ap.add_argument(
        "--spark-requests", type=int, default=100, help="sequential requests to mlflow serve (spark pyfunc)"
    )
    ap.add_argument(
        "--mlflow-flavors",
        type=lambda v: [x for x in v.split(",") if x],
        default=["pyfunc", "floor", "spark"],
        help="mlflow models serve on: pyfunc (sparkpipe's flavor), floor (a constant model with the same "
        "signature: MLflow's own cost per request), spark (mlflow.spark's pyfunc)",
    )
    ap.add_argument("--seconds", type=float, default=10, help="duration of each concurrency test (round)")
    ap.add_argument("--rounds", type=int, default=2, help="concurrency rounds per server, taken in turn")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument(
        "--workers",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1],
        help="uvicorn worker counts to measure, comma-separated (default 1)",
    )
    ap.add_argument(
        "--pipelines",
        type=lambda v: [x for x in v.split(",") if x],
        default=list(PIPELINES),
        help=f"registered models scored in-process (default {','.join(PIPELINES)})",
    )
    ap.add_argument(
        "--baseline",
        default="main",
        help="git ref re-measured in the same run, in-process and over HTTP ('' skips)",
    )
    ap.add_argument("--skip-mlflow", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving"))
    ap.add_argument("--in-process-only", help=argparse.SUPPRESS)  # internal: {name: dir} -> JSON
    args = ap.parse_args()

    if args.in_process_only:
        dirs = json.loads(args.in_process_only)
        print(json.dumps({k: in_process(Path(d), example_rows(Path(d))) for k, d in dirs.items()}))
        return

    from sparkpipe.config import load_config
    from sparkpipe.tracking import Registry, resolve_tracking_uri

    os.chdir(ROOT)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cfg = load_config(args.config)
    name = cfg.deployment.model_name or cfg.registered_model_name()
    reg = Registry(cfg.mlflow)
    ref, model_dir = registered_dir(reg, name, args)
    dirs = {name: model_dir}
    for p in args.pipelines:
        if p not in dirs:
            dirs[p] = registered_dir(reg, p, args)[1]
    row = example_rows(model_dir)[0]
    env = dict(
        os.environ,
        SPARK_LOCAL_IP="127.0.0.1",
        MLFLOW_TRACKING_URI=resolve_tracking_uri(cfg.mlflow),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )  # mlflow serve runs `uvicorn` by name
    logs = Path(tempfile.mkdtemp(prefix="sparkpipe-bench-"))
    results: dict[str, Any] = {
        "model": {"name": ref.name, "version": ref.version, "algorithm": cfg.model.algorithm},
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "load_average_start": os.getloadavg(),
        "baseline": args.baseline,
    }
    base_src = baseline_tree(args.baseline) if args.baseline else None

    print(f"in-process scorer: {', '.join(dirs)} ...", flush=True)
    results["in_process_models"] = {k: in_process(d, example_rows(d)) for k, d in dirs.items()}
    results["in_process"] = results["in_process_models"][name]
    if base_src is not None:
        print(f"in-process scorer, {args.baseline} ...", flush=True)
        results["in_process_baseline"] = in_process_elsewhere(base_src, dirs)

    body = json.dumps({"model_id": ref.name, "features": row}).encode()
    for workers in args.workers:
        sides: dict[str, Path | None] = {"sparkpipe": None}
        if base_src is not None:
            sides["baseline"] = base_src
        if workers == args.workers[0]:
            sides["hello"] = None
        print(f"side by side, {workers} worker(s): {', '.join(sides)} ...", flush=True)
        measured = side_by_side(args, workers, env, logs, body, sides)
        results[f"sparkpipe_w{workers}"] = measured["sparkpipe"]
        if "baseline" in measured:
            results[f"baseline_w{workers}"] = measured["baseline"]
        if "hello" in measured:
            results["hello"] = measured["hello"]
    if not args.skip_mlflow and "pyfunc" in args.mlflow_flavors:
        loader = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]
        if loader["loader_module"] != "sparkpipe.pyfunc":
            raise SystemExit(f"{ref.uri} predates the sparkpipe.pyfunc flavor: register a new version first")
        print("mlflow models serve, python_function flavor (sparkpipe.pyfunc) ...", flush=True)
        results["mlflow_pyfunc"] = mlflow_serve(
            ref.uri, args, env, logs / "mlflow-pyfunc.log", row, args.mlflow_requests
        )
    if not args.skip_mlflow and "floor" in args.mlflow_flavors:
        print(
            "mlflow models serve, a constant model with the same signature (MLflow's floor) ...", flush=True
        )
        copy = floor_pyfunc_copy(model_dir, logs / "floor-pyfunc-model")
        results["mlflow_floor"] = mlflow_serve(
            str(copy), args, env, logs / "mlflow-floor.log", row, args.mlflow_requests
        )
    if not args.skip_mlflow and "spark" in args.mlflow_flavors:
        print("mlflow models serve, mlflow.spark's pyfunc ...", flush=True)
        copy = spark_pyfunc_copy(model_dir, logs / "spark-pyfunc-model")
        results["mlflow"] = mlflow_serve(
            str(copy), args, env, logs / "mlflow-spark.log", row, args.spark_requests
        )
    results["load_average"] = os.getloadavg()
    if base_src is not None:
        shutil.rmtree(base_src.parent, ignore_errors=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    table = render(results, args.concurrency)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"logs: {logs}")


def render(r: dict, concurrency: int) -> str:
    base = r.get("baseline") or "baseline"
    columns = []
    for k, v in r.items():
        if k.startswith("sparkpipe_w"):
            w = v["workers"]
            columns.append((k, f"sparkpipe serve, {w} worker{'s' if w > 1 else ''}"))
            if f"baseline_w{w}" in r:
                columns.append((f"baseline_w{w}", f"same, `{base}` (re-measured)"))
    if "hello" in r:
        columns.append(("hello", "bare ASGI app (ceiling)"))
    columns.append(("mlflow_pyfunc", "mlflow models serve, sparkpipe.pyfunc flavor"))
    columns.append(("mlflow_floor", "mlflow models serve, constant model (MLflow's floor)"))
    columns.append(("mlflow", "mlflow models serve, mlflow.spark pyfunc"))
    columns = [(k, label) for k, label in columns if k in r]
    ceiling = r.get("hello", {}).get("concurrent", {}).get("rps")

    def row(label: str, fmt) -> str:
        cells = []
        for key, _ in columns:
            try:
                cells.append(fmt(r[key]))
            except KeyError:
                cells.append("—")
        return f"| {label} | " + " | ".join(cells) + " |"

    tools = {v["concurrent"].get("tool") for k, v in r.items() if isinstance(v, dict) and "concurrent" in v}
    lines = [
        f"Model: `{r['model']['name']}` v{r['model']['version']} ({r['model']['algorithm']}), "
        f"{r['machine']['cores']} cores, Python {r['machine']['python']}; load generator: "
        f"{', '.join(sorted(t for t in tools if t))}.",
        "",
        "| measure | " + " | ".join(label for _, label in columns) + " |",
        "|---|" + "---:|" * len(columns),
        row("single-row p50 (ms)", lambda x: f"{x['sequential']['p50_ms']:.2f}"),
        row("single-row p99 (ms)", lambda x: f"{x['sequential']['p99_ms']:.2f}"),
        row(f"throughput at concurrency {concurrency} (req/s)", lambda x: f"{x['concurrent']['rps']:,.0f}"),
        row(f"p99 at concurrency {concurrency} (ms)", lambda x: f"{x['concurrent']['p99_ms']:.2f}"),
    ]
    if ceiling:
        lines.append(
            row("share of the ceiling's throughput", lambda x: f"{x['concurrent']['rps'] / ceiling:.0%}")
        )
    lines += [
        row(
            "throughput per round (req/s, rounds taken in turn)",
            lambda x: " / ".join(f"{v:,.0f}" for v in x["concurrent"]["rounds_rps"]),
        ),
        row("cold start to ready, empty model cache (s)", lambda x: f"{x['cold_start_s']:.2f}"),
        row("restart to ready, warm model cache (s)", lambda x: f"{x['warm_start_s']:.2f}"),
    ]
    for k in r:
        if k.startswith("sparkpipe_w") and f"baseline_w{k[11:]}" in r:
            new, old = r[k]["concurrent"]["rps"], r[f"baseline_w{k[11:]}"]["concurrent"]["rps"]
            lines.append(
                f"\nThroughput at concurrency {concurrency}, {k[11:]} worker(s): {new / old:.2f}x `{base}`'s."
            )
    models = r.get("in_process_models") or {r["model"]["name"]: r["in_process"]}
    old = r.get("in_process_baseline", {})
    lines += [
        "",
        "In-process scorer, µs (one row: the row path where the pipeline has one; best of 3; wall clock,"
        " and in brackets this thread's CPU time, which the machine's other load does not inflate):",
        "",
        f"| pipeline | one row | one row, `{base}` | 10k batch, per row | 10k batch per row, `{base}` | row path |",
        "|---|---:|---:|---:|---:|---|",
    ]

    def cell(x: dict, key: str, digits: int) -> str:
        if not x:
            return "—"
        cpu = x.get(key.replace("_us", "_cpu_us"))
        return f"{x[key]:.{digits}f}" + (f" ({cpu:.{digits}f})" if cpu is not None else "")

    for k, v in models.items():
        o = old.get(k, {})
        label = PIPELINES.get(k, (None, None, k))[2]
        lines.append(
            f"| `{k}`: {label} | {cell(v, 'single_row_us', 1)} | {cell(o, 'single_row_us', 1)} | "
            f"{cell(v, 'batch_10k_us_per_row', 2)} | {cell(o, 'batch_10k_us_per_row', 2)} | "
            f"{'yes' if v.get('row_path') else 'no (batch path)'} |"
        )
    if "load_average" in r:
        lines.append(
            "\nLoad average (1, 5, 15 min) at the start: "
            + ", ".join(f"{x:.1f}" for x in r.get("load_average_start", ()))
            + "; at the end: "
            + ", ".join(f"{x:.1f}" for x in r["load_average"])
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
