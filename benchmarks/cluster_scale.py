"""Horizontal scaling on a local standalone cluster: the same run with 1 worker and with 2 workers.

Generates the built-in churn data once (``sparkpipe data generate churn --rows N --format parquet``,
locally), then for each worker count starts a :class:`sparkpipe.cluster.LocalCluster` on loopback
(each worker 1 core) and runs the default pipeline config on it through the real CLI
(``sparkpipe run --set spark.master=spark://...``, a fresh MLflow store per run). Reported per run: the
wall time of the CLI process (JVM and executor start included), every step's time from ``run.json``,
the test AUC (both runs must agree) and the machine's load average before and after (other work on
the same cores skews the numbers; the load says how much).

Usage::

    .venv/bin/python benchmarks/cluster_scale.py          # 1M rows; writes benchmarks/results/cluster_scale.{json,md}
    .venv/bin/python benchmarks/cluster_scale.py --rows 200000 --workers 1,2 --set evaluation.report=false
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from sparkpipe.cluster import LocalCluster  # noqa: E402


def _cli(args: list[str], log: Path, cwd: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(
            [sys.executable, "-m", "sparkpipe", *args], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT
        ).returncode
    return rc, time.perf_counter() - t0


def _app_cores(cluster: LocalCluster, name: str, wait: float = 15.0) -> int | None:
    """Cores the master granted the application (it lists it once the driver has disconnected)."""
    deadline = time.monotonic() + wait
    while True:
        for app in cluster.master_state().get("completedapps", []):
            if app["name"] == name:
                return app["cores"]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def generate(rows: int, partitions: int, work: Path) -> tuple[Path, float | None]:
    """The churn data set as parquet under ``work`` (reused when it is already there)."""
    path = work / f"churn_{rows}"
    marker = path / "_SUCCESS"
    if marker.exists():
        return path, None
    shutil.rmtree(path, ignore_errors=True)
    args = ["data", "generate", "churn", "--rows", str(rows), "--format", "parquet", "--out", str(path)]
    rc, secs = _cli([*args, "--partitions", str(partitions)], work / "generate.log", work)
    if rc != 0 or not marker.exists():
        sys.exit(f"data generation failed; see {work / 'generate.log'}")
    return path, secs


def run_on_cluster(workers: int, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Start a cluster of ``workers`` 1-core workers, run the pipeline on it, return the measurements."""
    run_dir = work / f"workers-{workers}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    with LocalCluster(
        workers=workers, cores=args.cores, memory=args.worker_memory, log_dir=run_dir / "cluster"
    ) as cluster:
        settings = [
            f"spark.master={cluster.master_url}",
            f"spark.app_name=cluster-scale-{workers}w",
            f"spark.executor_memory={args.executor_memory}",
            f"data.input_path={data}",
            f"data.output_path={run_dir / 'out'}",
            f"mlflow.tracking_uri=sqlite:///{run_dir / 'mlflow.db'}",
            *args.set,
        ]
        cmd = ["run", "--config", str(args.config), "--json"]
        for s in settings:
            cmd += ["--set", s]
        load_before = os.getloadavg()
        print(f"running on {workers} worker(s) ({cluster.master_url}) ...", flush=True)
        rc, wall = _cli(cmd, run_dir / "run.log", run_dir)
        load_after = os.getloadavg()
        app_cores = _app_cores(cluster, f"cluster-scale-{workers}w")
    if rc != 0:
        sys.exit(f"the run on {workers} worker(s) failed (exit {rc}); see {run_dir / 'run.log'}")
    result = json.loads((run_dir / "out" / "run.json").read_text())
    return {
        "workers": workers,
        "cores_per_worker": args.cores,
        "app_cores": app_cores,
        "wall_seconds": round(wall, 2),
        "timings": {k: round(v, 2) for k, v in result["timings"].items()},
        "test_auc_roc": result["metrics"].get("test_auc_roc"),
        "train_rows": result["lineage"].get("train_rows"),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }


def to_markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    steps = [s for s in runs[0]["timings"] if s != "total"] + ["total"]
    head = "| step (s) | " + " | ".join(f"{r['workers']} worker(s)" for r in runs) + " | speed-up |"
    lines = [
        f"# Cluster scale: {result['rows']:,} churn rows, workers of {runs[0]['cores_per_worker']} core",
        "",
        head,
        "|---|" + "---:|" * (len(runs) + 1),
    ]

    def row(name: str, values: list[float | None]) -> str:
        first, last = values[0], values[-1]
        speed = f"{first / last:.2f}x" if first and last else "—"
        return f"| {name} | " + " | ".join(f"{v:.1f}" if v else "—" for v in values) + f" | {speed} |"

    for s in steps:
        lines.append(row(s, [r["timings"].get(s) for r in runs]))
    lines.append(row("CLI wall time", [r["wall_seconds"] for r in runs]))
    lines += [
        "",
        "test AUC: " + ", ".join(f"{r['workers']}w {r['test_auc_roc']:.6f}" for r in runs),
        "load average (1 min) before/after: "
        + ", ".join(f"{r['workers']}w {r['load_before'][0]}/{r['load_after'][0]}" for r in runs),
        f"machine: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}",
        "",
    ]
    cpus = result["machine"]["cpus"] or 1
    if any(r["load_before"][0] >= cpus for r in runs):
        lines += [
            f"Note: the load average was at or above the {cpus} CPUs before the runs: other work already",
            "kept every core busy, so a second worker had no idle core to run on and the comparison",
            "shows the cost of an extra executor rather than the gain of one.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2", help="Worker counts to compare, e.g. 1,2.")
    parser.add_argument("--cores", type=int, default=1, help="Cores per worker.")
    parser.add_argument("--worker-memory", default="3g")
    parser.add_argument("--executor-memory", default="2g")
    parser.add_argument("--partitions", type=int, default=4, help="Parquet files of the generated data.")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "pipeline_config.yaml")
    parser.add_argument("--set", action="append", default=[], help="Extra --set for both runs.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sparkpipe-cluster-scale"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    data, gen_secs = generate(args.rows, args.partitions, args.work)
    runs = [run_on_cluster(int(n), data, args.work, args) for n in args.workers.split(",")]
    result = {
        "benchmark": "cluster_scale",
        "rows": args.rows,
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "extra_settings": args.set,
        "executor_memory": args.executor_memory,
        "generate_seconds": gen_secs,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (args.out / "cluster_scale.json").write_text(json.dumps(result, indent=2))
    md = to_markdown(result)
    (args.out / "cluster_scale.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
