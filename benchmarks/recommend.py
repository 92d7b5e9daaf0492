"""Recommendation latency over real HTTP: ``GET /recommend`` and ``GET /similar`` on a 10,000-item catalogue.

The model is an ALS PipelineModel whose factors are generated (``--users`` x ``--rank`` user factors,
``--items`` x ``--rank`` item factors, seeded normal values): Spark fits a tiny ALS, the saved stage's
``userFactors``/``itemFactors`` are replaced by the generated ones, Spark loads it back (so it is a
model Spark itself reads), and it is logged and registered like a training run's model, with the
``recommend/`` index of ``--seen`` generated training ratings per user (written by the fit-time code,
:func:`sparkpipe.flow.recommend_index.write_recommend_index`). Then:

* in process: microseconds per :meth:`Recommender.recommend` (k=10, seen items excluded);
* ``sparkpipe serve`` (the CLI, one uvicorn worker, 127.0.0.1): sequential keep-alive requests, p50 / p99
  for ``/recommend`` (known users, random), a cold-start user and ``/similar``;
* concurrency: ``--clients`` threads, each with its own keep-alive connection, ``--per-client`` requests
  each; errors (non-200 or a wrong answer against the in-process recommender) counted, p50 / p99, req/s.

Usage::

    SPARK_LOCAL_IP=127.0.0.1 .venv/bin/python benchmarks/recommend.py   # writes benchmarks/results/recommend.{json,md}
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving import free_port, percentile, stop  # benchmarks/serving.py: the same server helpers

ROOT = Path(__file__).resolve().parents[1]
MODEL = "rec_bench"


def _factor_table(ids: np.ndarray, factors: np.ndarray) -> Any:
    import pyarrow as pa

    flat = pa.array(factors.reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, factors.size + 1, factors.shape[1], dtype=np.int32))
    return pa.table({"id": pa.array(ids, pa.int32()), "features": pa.ListArray.from_arrays(offsets, flat)})


def build_model(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Fit a tiny ALS, replace its factors with generated ones, log + register it with its index."""
    import pyarrow.parquet as pq
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession

    from sparkpipe.config import PipelineConfig
    from sparkpipe.flow.recommend_index import write_recommend_index
    from sparkpipe.tracking import Tracker

    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    tiny = spark.createDataFrame([(0, 0, 1.0), (1, 1, 2.0), (0, 1, 3.0)], "user int, item int, rating double")
    fitted = Pipeline(stages=[ALS(rank=args.rank, maxIter=1, seed=1, coldStartStrategy="nan")]).fit(tiny)
    saved = work / "pipeline"
    fitted.write().overwrite().save(str(saved))
    rng = np.random.default_rng(args.seed)
    stage_dir = next((saved / "stages").iterdir())
    for sub, n in (("userFactors", args.users), ("itemFactors", args.items)):
        shutil.rmtree(stage_dir / sub)
        (stage_dir / sub).mkdir()
        factors = (rng.standard_normal((n, args.rank)) / np.sqrt(args.rank)).astype(np.float32)
        pq.write_table(
            _factor_table(np.arange(n, dtype=np.int32), factors), stage_dir / sub / "part-00000.parquet"
        )
    model = PipelineModel.load(str(saved))  # Spark reads the generated factors
    seen_users = np.repeat(np.arange(args.users), args.seen)
    zipf = np.minimum(rng.zipf(1.3, seen_users.size) - 1, args.items - 1)  # a few popular items
    ratings = spark.createDataFrame(
        [(int(u), int(i), 1.0) for u, i in zip(seen_users, zipf, strict=True)],
        "user int, item int, rating double",
    )
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cfg = PipelineConfig.model_validate(
        {
            "mlflow": {
                "tracking_uri": uri,
                "experiment_name": "recommend-bench",
                "registered_model_name": MODEL,
            }
        }
    )
    tracker = Tracker(cfg)
    with tempfile.TemporaryDirectory() as tmp, tracker.run(run_name=MODEL):
        index = write_recommend_index(model, ratings, tmp, "popular")
        uri_model = tracker.log_spark_model(
            model,
            metadata={
                "sparkpipe": {
                    "task": "recommendation",
                    "input_schema": [["user", "integer"], ["item", "integer"]],
                }
            },
            extra_dirs={"recommend": str(index)},
        )
        tracker.register(uri_model, MODEL, alias="champion")
    spark.stop()  # no JVM left running while the server is measured
    return {"tracking_uri": uri}


def serve(work: Path, tracking_uri: str, port: int) -> subprocess.Popen:
    cfg = work / "serve.yaml"
    cfg.write_text(
        json.dumps(
            {
                "mlflow": {"tracking_uri": tracking_uri},
                "deployment": {"model_name": MODEL, "workers": 1, "jobs_dir": str(work / "jobs")},
                "logging": {"level": "WARNING"},
            }
        )
    )
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    cmd = [sys.executable, "-m", "sparkpipe", "serve", "--config", str(cfg), "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        cwd=work,  # the model cache (.sparkpipe/models) and the prediction log stay in the work dir
        env=env,
        stdout=(work / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((work / "serve.log").read_text()[-3000:])
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready in 120 s")


def sequential(port: int, paths: list[str], warmup: int = 50) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat = []
    for i, path in enumerate(paths[:warmup] + paths):
        t0 = time.perf_counter()
        conn.request("GET", path)
        res = conn.getresponse()
        body = res.read()
        dt = time.perf_counter() - t0
        if res.status != 200:
            raise RuntimeError(f"{path}: {res.status} {body[:300]!r}")
        if i >= warmup:
            lat.append(dt * 1000)
    conn.close()
    return {
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "mean_ms": statistics.fmean(lat),
        "requests": len(lat),
    }


def concurrent(
    port: int, users: list[int], expected: dict[int, list[int]], clients: int, per_client: int
) -> dict[str, Any]:
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    wrong = [0] * clients

    def worker(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rnd = random.Random(c)
        for _ in range(per_client):
            u = rnd.choice(users)
            t0 = time.perf_counter()
            try:
                conn.request("GET", f"/recommend/{MODEL}?user={u}&k=10")
                res = conn.getresponse()
                body = res.read()
            except OSError:
                errors[c] += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            lat[c].append((time.perf_counter() - t0) * 1000)
            if res.status != 200:
                errors[c] += 1
            elif [x["item"] for x in json.loads(body)["items"]] != expected[u]:
                wrong[c] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    flat = [x for xs in lat for x in xs]
    return {
        "clients": clients,
        "requests": clients * per_client,
        "errors": sum(errors),
        "wrong_answers": sum(wrong),
        "p50_ms": percentile(flat, 50),
        "p99_ms": percentile(flat, 99),
        "rps": clients * per_client / took,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--seen", type=int, default=20, help="training ratings per user in the index")
    ap.add_argument("--requests", type=int, default=2_000, help="sequential requests per measurement")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--per-client", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    from sparkpipe.config import MlflowConfig
    from sparkpipe.scoring import compile_pipeline
    from sparkpipe.scoring.recommend import Recommender
    from sparkpipe.tracking import local_model_dir

    work = Path(tempfile.mkdtemp(prefix="sparkpipe-recbench-"))
    try:
        store = build_model(args, work)
        path = local_model_dir(
            f"models:/{MODEL}@champion", MlflowConfig(tracking_uri=store["tracking_uri"]), work / "c2"
        )
        rec = Recommender.from_model_dir(compile_pipeline(path), path)
        rnd = random.Random(args.seed)
        users = [rnd.randrange(args.users) for _ in range(args.requests)]
        t0 = time.perf_counter()
        for u in users:
            rec.recommend(u, 10)
        in_proc_us = (time.perf_counter() - t0) / len(users) * 1e6
        sample = sorted(set(rnd.randrange(args.users) for _ in range(500)))
        expected = {u: rec.recommend(u, 10).items for u in sample}
        port = free_port()
        proc = serve(work, store["tracking_uri"], port)
        try:
            result = {
                "catalogue": {
                    "items": args.items,
                    "users": args.users,
                    "rank": args.rank,
                    "seen_per_user": args.seen,
                },
                "in_process_us": in_proc_us,
                "recommend": sequential(port, [f"/recommend/{MODEL}?user={u}&k=10" for u in users]),
                "recommend_cold_start": sequential(
                    port, [f"/recommend/{MODEL}?user=-{i + 1}&k=10" for i in range(args.requests // 4)]
                ),
                "similar": sequential(
                    port,
                    [f"/similar/{MODEL}?item={u % args.items}&k=10" for u in users[: args.requests // 2]],
                ),
                "concurrent": concurrent(port, sample, expected, args.clients, args.per_client),
                "load_average_1min": os.getloadavg()[0],
                "cpus": os.cpu_count(),
            }
        finally:
            stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recommend.json").write_text(json.dumps(result, indent=2))
    (args.out / "recommend.md").write_text(render(result))
    print(render(result))


def render(r: dict[str, Any]) -> str:
    c = r["catalogue"]
    cc = r["concurrent"]
    lines = [
        f"catalogue: {c['items']:,} items, {c['users']:,} users, rank {c['rank']}, {c['seen_per_user']} seen items per user",
        "",
        "| measurement | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| `GET /recommend` k=10, seen items excluded (sequential, keep-alive) | {r['recommend']['p50_ms']:.2f} | {r['recommend']['p99_ms']:.2f} |",
        f"| `GET /recommend` cold-start user (popular items) | {r['recommend_cold_start']['p50_ms']:.2f} | {r['recommend_cold_start']['p99_ms']:.2f} |",
        f"| `GET /similar` k=10 (cosine over the item factors) | {r['similar']['p50_ms']:.2f} | {r['similar']['p99_ms']:.2f} |",
        f"| {cc['clients']} concurrent clients, {cc['requests']:,} requests: {cc['errors']} errors, {cc['wrong_answers']} wrong answers, {cc['rps']:.0f} req/s | {cc['p50_ms']:.2f} | {cc['p99_ms']:.2f} |",
        "",
        f"in process: {r['in_process_us']:.0f} µs per `Recommender.recommend` (k=10, seen items excluded); "
        f"load average at the end {r['load_average_1min']:.1f} on {r['cpus']} CPUs",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
