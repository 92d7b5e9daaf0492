"""Serving benchmark: sparkpipe's JVM-free service vs ``mlflow models serve``, side by side, one run.

On the same registered default model (``make run`` registers it), ``mlflow models serve`` twice: on the
model's ``python_function`` flavor (sparkpipe's NumPy plan, :mod:`sparkpipe.pyfunc`) and on a copy whose
``python_function`` loader is ``mlflow.spark`` (what MLflow serves for a plain ``mlflow.spark`` model:
a local SparkSession, a Spark job per request):

* cold start: process start → ready (our ``/ready``, MLflow's ``/ping``);
* single-row sequential latency over loopback HTTP (keep-alive client): p50 / p99;
* throughput at concurrency 16 (``wrk`` when installed — ``apt-get install wrk`` — else a Python client);
* in-process scorer: microseconds per row for batches of 1 and 10,000.

Usage::

    .venv/bin/python benchmarks/serving.py                 # writes benchmarks/results/serving.{json,md}
    .venv/bin/python benchmarks/serving.py --skip-mlflow   # only ours
    .venv/bin/python benchmarks/serving.py --workers 1 --mlflow-flavors pyfunc,spark --requests 500 \
        --mlflow-requests 200 --spark-requests 30 --seconds 5   # a shared machine: modest counts
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


def in_process(model_dir: Path, rows: list[dict]) -> dict[str, float]:
    from sparkpipe.scoring.compile import compile_pipeline

    plan = compile_pipeline(model_dir)
    gc.collect()
    gc.freeze()  # as the service does after start-up
    one = rows[:1]
    for _ in range(200):
        plan.predict(one)
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        plan.predict(one)
    single = (time.perf_counter() - t0) / n * 1e6
    batch = (rows * (10_000 // len(rows) + 1))[:10_000]
    plan.predict(batch)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        plan.predict(batch)
    per_row = (time.perf_counter() - t0) / reps / len(batch) * 1e6
    return {"single_row_us": single, "batch_10k_us_per_row": per_row}


def ours(args: argparse.Namespace, workers: int, env: dict, logs: Path, body: bytes, first: bool) -> dict:
    """Start ``sparkpipe serve`` with an empty model cache, measure, stop; the first configuration also
    measures a restart on the cache the first start filled (the usual restart of a service)."""
    cache = Path(tempfile.mkdtemp(prefix="sparkpipe-bench-cache-"))
    env = dict(env, SPARKPIPE_MODEL_CACHE_DIR=str(cache))
    cmd = [str(BIN / "sparkpipe"), "serve", "--config", args.config, "--set", f"deployment.workers={workers}"]
    out: dict = {"workers": workers}
    try:
        for attempt in ("cold", "warm") if first else ("cold",):
            port = free_port()
            t0 = time.perf_counter()
            proc = start([*cmd, "--port", str(port)], env, logs / f"sparkpipe-w{workers}-{attempt}.log")
            try:
                wait_http(port, "/ready", 60, proc)
                out[f"{attempt}_start_s"] = time.perf_counter() - t0
                if attempt == "cold":
                    wait_steady(port)  # the start-up registry refresh runs in the background first
                    out["sequential"] = sequential(port, "/predict", body, args.requests)
                    out["concurrent"] = concurrent(port, "/predict", body, args.concurrency, args.seconds)
            finally:
                stop(proc)
    finally:
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
        default=["pyfunc", "spark"],
        help="mlflow models serve on: pyfunc (sparkpipe's flavor), spark (mlflow.spark's pyfunc)",
    )
    ap.add_argument("--seconds", type=float, default=10, help="duration of each concurrency test")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument(
        "--workers",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 2],
        help="uvicorn worker counts to measure, comma-separated (default 1,2)",
    )
    ap.add_argument("--skip-mlflow", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving"))
    args = ap.parse_args()

    from sparkpipe.config import load_config
    from sparkpipe.errors import ModelError
    from sparkpipe.tracking import Registry, resolve_tracking_uri

    os.chdir(ROOT)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cfg = load_config(args.config)
    name = cfg.deployment.model_name or cfg.registered_model_name()
    reg = Registry(cfg.mlflow)
    try:
        ref = reg.resolve(name)
    except ModelError:
        print(f"no registered model {name!r}: running the default pipeline first", flush=True)
        subprocess.run([str(BIN / "sparkpipe"), "run", "--config", args.config], check=True)
        ref = reg.resolve(name)
    model_dir = reg.download(ref)
    example = json.loads((model_dir / "input_example.json").read_text())
    rows = [dict(zip(example["columns"], r, strict=True)) for r in example["data"]]
    row = rows[0]
    env = dict(
        os.environ,
        SPARK_LOCAL_IP="127.0.0.1",
        MLFLOW_TRACKING_URI=resolve_tracking_uri(cfg.mlflow),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )  # mlflow serve runs `uvicorn` by name
    logs = Path(tempfile.mkdtemp(prefix="sparkpipe-bench-"))
    results: dict[str, dict] = {
        "model": {"name": ref.name, "version": ref.version, "algorithm": cfg.model.algorithm},
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
    }

    print(f"model {ref.name} v{ref.version}; in-process scorer ...", flush=True)
    results["in_process"] = in_process(model_dir, rows)

    body = json.dumps({"model_id": ref.name, "features": row}).encode()
    for workers in args.workers:
        print(f"sparkpipe serve, {workers} worker(s) ...", flush=True)
        results[f"sparkpipe_w{workers}"] = ours(
            args, workers, env, logs, body, first=workers == args.workers[0]
        )
    if not args.skip_mlflow and "pyfunc" in args.mlflow_flavors:
        loader = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]
        if loader["loader_module"] != "sparkpipe.pyfunc":
            raise SystemExit(f"{ref.uri} predates the sparkpipe.pyfunc flavor: register a new version first")
        print("mlflow models serve, python_function flavor (sparkpipe.pyfunc) ...", flush=True)
        results["mlflow_pyfunc"] = mlflow_serve(
            ref.uri, args, env, logs / "mlflow-pyfunc.log", row, args.mlflow_requests
        )
    if not args.skip_mlflow and "spark" in args.mlflow_flavors:
        print("mlflow models serve, mlflow.spark's pyfunc ...", flush=True)
        copy = spark_pyfunc_copy(model_dir, logs / "spark-pyfunc-model")
        results["mlflow"] = mlflow_serve(
            str(copy), args, env, logs / "mlflow-spark.log", row, args.spark_requests
        )
    results["load_average"] = os.getloadavg()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    table = render(results, args.concurrency)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"logs: {logs}")


def render(r: dict, concurrency: int) -> str:
    columns = [
        (k, f"sparkpipe serve, {v['workers']} worker{'s' if v['workers'] > 1 else ''}")
        for k, v in r.items()
        if k.startswith("sparkpipe_w")
    ]
    columns.append(("mlflow_pyfunc", "mlflow models serve, sparkpipe.pyfunc flavor"))
    columns.append(("mlflow", "mlflow models serve, mlflow.spark pyfunc"))

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
        row("cold start to ready, empty model cache (s)", lambda x: f"{x['cold_start_s']:.2f}"),
        row("restart to ready, warm model cache (s)", lambda x: f"{x['warm_start_s']:.2f}"),
        "",
        f"In-process scorer: {r['in_process']['single_row_us']:.1f} µs for one row; "
        f"{r['in_process']['batch_10k_us_per_row']:.2f} µs per row in a 10,000-row batch.",
    ]
    if "load_average" in r:
        lines.append(
            "Load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.1f}" for x in r["load_average"])
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
