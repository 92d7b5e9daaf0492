"""Streaming scoring throughput and latency (issue 15): ``sparkpipe stream`` on the built-in churn model.

1. Throughput: ``--files`` CSV files of generated churn rows (``--rows`` in all) are streamed with
   ``--available-now`` and ``--max-per-trigger`` files per micro-batch, into parquet and into Delta. Per
   micro-batch: rows, rows/s processed and latency (Spark's ``triggerExecution``: read, parse, quarantine
   check, score, write, commit); overall: rows / wall time of the stream (the JVM already warm).
2. End-to-end latency: a continuous stream (``--trigger-seconds 0``), one file of ``--e2e-rows`` rows
   renamed into the source directory at a time; latency = the moment its micro-batch's output was
   committed (the batch record's ``at``) minus the moment the file appeared.

Usage::

    .venv/bin/python benchmarks/stream.py --workdir /tmp/streambench   # writes benchmarks/results/stream.{json,md}
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "churn_stream_bench"


def ensure_model(workdir: Path) -> str:
    """A store in ``workdir`` with ``churn_stream_bench`` 1: logistic regression on 2,000 churn rows."""
    db = workdir / "mlflow.db"
    uri = f"sqlite:///{db.resolve()}"
    if db.exists():
        return uri
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SPARKPIPE_"))}
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    sets = [
        "data.input_path=builtin:churn",
        "data.rows=2000",
        "model.algorithm=logistic_regression",
        "evaluation.report=false",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.registered_model_name={MODEL}",
        "spark.master=local[2]",
    ]
    cmd = [sys.executable, "-m", "sparkpipe", "run", *[x for s in sets for x in ("--set", s)]]
    print(f"training the model into {db} ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL)
    return uri


def make_files(spark: Any, out: Path, rows: int, files: int, seed: int) -> list[Path]:
    """``files`` CSV files of generated churn rows (the schema the model was trained on)."""
    from sparkpipe.data.datasets import load_builtin

    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    load_builtin(spark, "churn", rows=rows, seed=seed).repartition(files).write.option("header", "true").csv(
        str(staging)
    )
    parts = sorted(staging.glob("part-*.csv"))
    out.mkdir(parents=True, exist_ok=True)
    moved = []
    for i, part in enumerate(parts):
        target = out / f"batch-{i:04d}.csv"
        part.rename(target)
        moved.append(target)
    shutil.rmtree(staging)
    return moved


def throughput(spark: Any, workdir: Path, uri: str, fmt: str, args: argparse.Namespace) -> dict[str, Any]:
    from sparkpipe.config import MlflowConfig
    from sparkpipe.flow.stream import stream_predict

    source = workdir / f"tp-source-{fmt}"
    shutil.rmtree(source, ignore_errors=True)
    make_files(spark, source, args.rows, args.files, seed=11)
    for name in (f"tp-sink-{fmt}", f"tp-sink-{fmt}_quarantine", f"tp-ckpt-{fmt}"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    t0 = time.perf_counter()
    res = stream_predict(
        f"models:/{MODEL}/1",
        str(source),
        str(workdir / f"tp-sink-{fmt}"),
        str(workdir / f"tp-ckpt-{fmt}"),
        output_format=fmt,
        trigger="available_now",
        max_per_trigger=args.max_per_trigger,
        mlflow_cfg=MlflowConfig(tracking_uri=uri),
        spark=spark,
    )
    wall = time.perf_counter() - t0
    progress = res["progress"]
    steady = progress[1:] or progress  # the first micro-batch also pays for code generation
    return {
        "format": fmt,
        "rows": res["written"],
        "micro_batches": len(progress),
        "wall_s": round(wall, 2),
        "rows_per_s": round(res["written"] / wall, 1),
        "batch_rows_per_s_median": round(statistics.median(p["processed_rows_per_s"] for p in steady), 1),
        "batch_latency_ms_median": statistics.median(p["latency_ms"] for p in steady),
        "batch_latency_ms_max": max(p["latency_ms"] for p in steady),
        "first_batch_latency_ms": progress[0]["latency_ms"] if progress else None,
        "per_batch": progress,
    }


def end_to_end(spark: Any, workdir: Path, uri: str, fmt: str, args: argparse.Namespace) -> dict[str, Any]:
    from sparkpipe.config import MlflowConfig
    from sparkpipe.flow.stream import read_batch_record, stream_predict

    pool = workdir / f"e2e-pool-{fmt}"
    shutil.rmtree(pool, ignore_errors=True)
    files = make_files(spark, pool, args.e2e_rows * args.e2e_files, args.e2e_files, seed=12)
    source, ckpt = workdir / f"e2e-source-{fmt}", workdir / f"e2e-ckpt-{fmt}"
    for d in (source, ckpt, workdir / f"e2e-sink-{fmt}", workdir / f"e2e-sink-{fmt}_quarantine"):
        shutil.rmtree(d, ignore_errors=True)
    source.mkdir()
    shutil.copy(files[0], source / "warmup.csv")  # the first micro-batch compiles the plan
    budget = 30.0 + 15.0 * (args.e2e_files + 1)
    result: dict[str, Any] = {}

    def run() -> None:
        result["res"] = stream_predict(
            f"models:/{MODEL}/1",
            str(source),
            str(workdir / f"e2e-sink-{fmt}"),
            str(ckpt),
            output_format=fmt,
            source_format="csv",
            max_per_trigger=1,
            timeout_seconds=budget,
            mlflow_cfg=MlflowConfig(tracking_uri=uri),
            spark=spark,
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait_batches(n: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            done = read_batch_record(str(ckpt))
            if len(done) >= n:
                return done
            time.sleep(0.02)
        raise RuntimeError(f"the stream did not reach {n} micro-batches")

    wait_batches(1)
    latencies = []
    for i, f in enumerate(files):
        staged = source / f".incoming-{i}.csv"  # hidden: the file source ignores it until renamed
        shutil.copy(f, staged)
        dropped = time.time()
        staged.rename(source / f"file-{i:04d}.csv")
        at = wait_batches(i + 2)[i + 1]["at"]
        latencies.append(round(1000 * (dt.datetime.fromisoformat(at).timestamp() - dropped), 1))
    for query in spark.streams.active:
        query.stop()
    thread.join(timeout=60)
    return {
        "format": fmt,
        "rows_per_file": args.e2e_rows,
        "files": len(latencies),
        "latency_ms": latencies,
        "latency_ms_median": statistics.median(latencies),
        "latency_ms_max": max(latencies),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sparkpipe-streambench"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--max-per-trigger", type=int, default=2)
    ap.add_argument("--e2e-files", type=int, default=8)
    ap.add_argument("--e2e-rows", type=int, default=1000)
    ap.add_argument("--formats", default="parquet,delta")
    args = ap.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    uri = ensure_model(args.workdir)

    import logging

    logging.basicConfig(level=logging.WARNING)
    from sparkpipe.config import SparkConfig
    from sparkpipe.session import get_spark

    spark = get_spark(SparkConfig(master="local[2]", ui_enabled=False, log_level="ERROR"))
    out: dict[str, Any] = {"cores": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0], "runs": []}
    for fmt in args.formats.split(","):
        tp = throughput(spark, args.workdir, uri, fmt, args)
        print(json.dumps({k: v for k, v in tp.items() if k != "per_batch"}), file=sys.stderr, flush=True)
        e2e = end_to_end(spark, args.workdir, uri, fmt, args)
        print(json.dumps(e2e), file=sys.stderr, flush=True)
        out["runs"].append({"throughput": tp, "end_to_end": e2e})
    out["load_avg_at_end"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps(out, indent=2))
    lines = [
        f"# sparkpipe stream ({args.rows:,} churn rows in {args.files} CSV files, {args.max_per_trigger} "
        f"file(s) per micro-batch; local[2]; load average {out['load_avg_at_start']:.1f} at start)",
        "",
        "| sink | rows/s (wall) | rows/s per batch (median) | batch latency median / max (ms) | "
        f"end-to-end latency median / max (ms, {args.e2e_rows:,}-row files) |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in out["runs"]:
        tp, e2e = run["throughput"], run["end_to_end"]
        lines.append(
            f"| {tp['format']} | {tp['rows_per_s']:,.0f} | {tp['batch_rows_per_s_median']:,.0f} | "
            f"{tp['batch_latency_ms_median']:,} / {tp['batch_latency_ms_max']:,} | "
            f"{e2e['latency_ms_median']:,.0f} / {e2e['latency_ms_max']:,.0f} |"
        )
    (RESULTS / "stream.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    spark.stop()


if __name__ == "__main__":
    main()
