"""Training-scale benchmark: the default pipeline on 1M, 10M and 30M churn rows, beside hand-written MLlib.

For every size the script

1. generates churn parquet with ``sparkpipe data generate`` (Spark-parallel; the time is reported),
2. runs ``sparkpipe run`` on it with the *default* config (``config/pipeline_config.yaml``, only the input
   and output paths overridden; no memory setting), in its own process,
3. runs the same stages written by hand in plain PySpark MLlib (two timestamps -> hour / day of week /
   month / weekend, median imputer, StringIndexer + OneHotEncoder, VectorAssembler, StandardScaler,
   LogisticRegression, 70/15/15 split, AUC on validation and test, model saved) in its own process with
   Spark's defaults (1 GB driver heap),

and samples, once a second, the resident memory of each process tree (Python driver + JVM) and the JVM's
used heap (``jstat``). It reports wall time per step, peak memory, test AUC, and the ratio of
fit + evaluate time (sparkpipe / hand-written).

Usage::

    .venv/bin/python benchmarks/train_scale.py                       # 1M, 10M, 30M (hand-written at 1M, 10M)
    .venv/bin/python benchmarks/train_scale.py --sizes 1000000 --handwritten-sizes 1000000
    .venv/bin/python benchmarks/train_scale.py --sizes 1000000 --repeat 3 --merge   # medians of 3 pairs

Results go to ``benchmarks/results/train_scale.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "results"


# ------------------------------------------------------------------------------- memory sampling
def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _jvm_heap_mb(pid: int) -> float | None:
    """Used heap of JVM ``pid`` in MiB (young + old generation), from ``jstat -gc``."""
    jstat = shutil.which("jstat")
    if not jstat:
        return None
    try:
        out = subprocess.run([jstat, "-gc", str(pid)], capture_output=True, text=True, timeout=10).stdout
        head, values = out.strip().splitlines()[:2]
    except (subprocess.SubprocessError, ValueError, OSError):
        return None
    row = dict(zip(head.split(), values.split(), strict=False))
    used = sum(float(row.get(k, 0) or 0) for k in ("S0U", "S1U", "EU", "OU"))
    return used / 1024.0


class MemorySampler(threading.Thread):
    """Peak RSS of a process tree, peak RSS of its JVM, and peak JVM used heap, sampled every second."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_tree_mb = 0.0
        self.peak_jvm_rss_mb = 0.0
        self.peak_heap_mb = 0.0
        self.max_heap = ""
        self.cpu: dict[int, float] = {}  # last CPU seconds seen per process of the tree
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            pids = _tree(self.pid)
            rss = {p: _rss_kb(p) / 1024.0 for p in pids}
            for p in pids:
                self.cpu[p] = max(self.cpu.get(p, 0.0), _cpu_s(p))
            self.peak_tree_mb = max(self.peak_tree_mb, sum(rss.values()))
            for p in pids:
                cmd = _cmdline(p)
                if "java" in cmd.split(" ")[0] and "SparkSubmit" in cmd:
                    self.peak_jvm_rss_mb = max(self.peak_jvm_rss_mb, rss[p])
                    heap = _jvm_heap_mb(p)
                    if heap is not None:
                        self.peak_heap_mb = max(self.peak_heap_mb, heap)
                    xmx = [a for a in cmd.split() if a.startswith("-Xmx")]
                    self.max_heap = xmx[0][4:] if xmx else self.max_heap
            self._done.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self.join(timeout=15)
        return {
            "peak_tree_rss_mb": round(self.peak_tree_mb),
            "peak_jvm_rss_mb": round(self.peak_jvm_rss_mb),
            "peak_jvm_heap_used_mb": round(self.peak_heap_mb),
            "jvm_max_heap": self.max_heap or "spark default (1g)",
            # CPU seconds of the whole tree (sampled each second): less sensitive to other load than wall time
            "cpu_s": round(sum(self.cpu.values()), 1),
        }


def run_measured(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``, sampling its memory; return wall time, exit code and the memory peaks."""
    t0 = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        rc = proc.wait()
    out = {"wall_s": round(time.perf_counter() - t0, 1), "exit_code": rc, **sampler.stop()}
    if rc != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        out["error_tail"] = tail
    return out


# ------------------------------------------------------------------------------------ hand-written
def handwritten(path: str, out_dir: str, seed: int = 42) -> dict[str, Any]:
    """The reference: the default pipeline's stages written by hand in PySpark MLlib, Spark defaults."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    t: dict[str, float] = {}
    t0 = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[*]")
        .appName("handwritten")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    t["session"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    df = spark.read.parquet(path)
    for ts in ("signup_ts", "last_login_ts"):
        df = (
            df.withColumn(f"{ts}_hour", F.hour(ts).cast("double"))
            .withColumn(f"{ts}_dow", F.dayofweek(ts).cast("double"))
            .withColumn(f"{ts}_month", F.month(ts).cast("double"))
            .withColumn(f"{ts}_weekend", F.dayofweek(ts).isin(1, 7).cast("double"))
        )
    numeric = ["age", "tenure_months", "monthly_charges", "total_charges", "support_calls"]
    for c in [*numeric, "is_senior"]:
        df = df.withColumn(c, F.col(c).cast("double"))
    df = df.withColumn("label", F.col("churned").cast("double"))
    categorical = ["plan", "region", "payment_method"]
    df = df.fillna("__missing__", subset=categorical)
    train, validation, test = df.randomSplit([0.7, 0.15, 0.15], seed=seed)
    t["read_split"] = time.perf_counter() - t0

    time_cols = [
        f"{ts}_{p}" for ts in ("signup_ts", "last_login_ts") for p in ("hour", "dow", "month", "weekend")
    ]
    imputed = [f"{c}_imp" for c in [*numeric, "is_senior", *time_cols]]
    stages = [
        Imputer(inputCols=[*numeric, "is_senior", *time_cols], outputCols=imputed, strategy="median"),
        StringIndexer(
            inputCols=categorical, outputCols=[f"{c}_idx" for c in categorical], handleInvalid="keep"
        ),
        OneHotEncoder(
            inputCols=[f"{c}_idx" for c in categorical],
            outputCols=[f"{c}_oh" for c in categorical],
            handleInvalid="keep",
        ),
        VectorAssembler(inputCols=[*imputed, *[f"{c}_oh" for c in categorical]], outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="features", withMean=True, withStd=True),
        LogisticRegression(maxIter=100, regParam=0.01, elasticNetParam=0.0),
    ]
    t0 = time.perf_counter()
    model = Pipeline(stages=stages).fit(train)
    t["fit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    auc = BinaryClassificationEvaluator(metricName="areaUnderROC")
    metrics = {
        "validation_auc_roc": auc.evaluate(model.transform(validation)),
        "test_auc_roc": auc.evaluate(model.transform(test)),
    }
    t["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model.write().overwrite().save(os.path.join(out_dir, "model"))
    t["save"] = time.perf_counter() - t0
    spark.stop()
    return {"timings": {k: round(v, 2) for k, v in t.items()}, "metrics": metrics}


# ------------------------------------------------------------------------------------------ runs
def generate(rows: int, data_dir: Path, log_dir: Path) -> dict[str, Any]:
    """Generate ``rows`` churn rows as parquet (or reuse an earlier generation, reporting its time)."""
    path = data_dir / f"churn_{rows}"
    record = data_dir / f"churn_{rows}.generation.json"
    if (path / "_SUCCESS").exists() and record.exists():
        return {**json.loads(record.read_text()), "reused": True}
    cmd = [str(BIN / "sparkpipe"), "data", "generate", "churn", "--rows", str(rows), "--out", str(path)]
    res = run_measured(cmd, log_dir / f"generate_{rows}.log")
    if res["exit_code"] != 0:
        raise SystemExit(f"generation of {rows} rows failed: {res.get('error_tail')}")
    size = sum(f.stat().st_size for f in path.glob("*.parquet"))
    out = {
        "path": str(path),
        "wall_s": res["wall_s"],
        "bytes": size,
        "files": len(list(path.glob("*.parquet"))),
    }
    record.write_text(json.dumps(out))
    return {**out, "reused": False}


def run_sparkpipe(rows: int, data: str, work: Path, log_dir: Path) -> dict[str, Any]:
    out = work / f"sparkpipe_{rows}"
    cmd = [
        str(BIN / "sparkpipe"),
        "run",
        "--config",
        str(ROOT / "config" / "pipeline_config.yaml"),
        "--set",
        f"data.input_path={data}",
        "--set",
        f"data.output_path={out}",
        "--set",
        f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db",
        "--set",
        f"mlflow.experiment_name=scale-{rows}",
    ]
    res = run_measured(cmd, log_dir / f"sparkpipe_{rows}.log")
    run_json = out / "run.json"
    if res["exit_code"] == 0 and run_json.exists():
        record = json.loads(run_json.read_text())
        timings = {k: round(v, 1) for k, v in record["timings"].items()}
        res.update(timings=timings, test_auc_roc=record["metrics"].get("test_auc_roc"))
        # everything after reading up to the metrics: the split pass, features, training, evaluation
        fit = sum(
            v for k, v in timings.items() if k in ("split", "feature engineering") or k.startswith("train ")
        )
        res["fit_evaluate_s"] = round(fit + timings.get("evaluate", 0.0), 1)
        res["publish_s"] = round(
            sum(
                timings.get(k, 0.0)
                for k in ("log to MLflow", "log model", "register model", "explain", "report")
            ),
            1,
        )
    return res


def run_handwritten(rows: int, data: str, work: Path, log_dir: Path) -> dict[str, Any]:
    out = work / f"handwritten_{rows}"
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / "result.json"
    cmd = [sys.executable, __file__, "--handwritten", data, "--handwritten-out", str(out)]
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    res = run_measured(cmd, log_dir / f"handwritten_{rows}.log", env=env)
    if res["exit_code"] == 0 and result_file.exists():
        record = json.loads(result_file.read_text())
        res.update(timings=record["timings"], test_auc_roc=record["metrics"]["test_auc_roc"])
        res["fit_evaluate_s"] = round(record["timings"]["fit"] + record["timings"]["evaluate"], 1)
    return res


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median fit + evaluate time (the lower middle one of an even count), with every
    run's time listed in ``fit_evaluate_runs``."""
    timed = sorted(
        (r for r in runs if r.get("fit_evaluate_s") is not None), key=lambda r: r["fit_evaluate_s"]
    )
    if not timed:
        return runs[-1]
    return {**timed[(len(timed) - 1) // 2], "fit_evaluate_runs": [r.get("fit_evaluate_s") for r in runs]}


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f} s"


def markdown(results: dict[str, Any]) -> str:
    """The README's Scale table from the results."""
    head = (
        "| rows | generate | sparkpipe total | read | split | features | train | evaluate | MLflow + report "
        "| peak RSS, driver tree | peak JVM heap used / max | hand-written fit + evaluate | ratio | test AUC, ours / hand |"
    )
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for rows, r in results["sizes"].items():
        sp, hw, gen = r["sparkpipe"], r.get("handwritten") or {}, r["generate"]
        tm = sp.get("timings", {})
        train = sum(v for k, v in tm.items() if k.startswith("train ")) if tm else None
        ratio = (
            f"{sp['fit_evaluate_s'] / hw['fit_evaluate_s']:.2f}"
            if hw.get("fit_evaluate_s") and sp.get("fit_evaluate_s")
            else "—"
        )
        total = _s(sp["wall_s"]) + ("" if sp["exit_code"] == 0 else " (failed)")
        auc = f"{sp['test_auc_roc']:.4f}" if sp.get("test_auc_roc") else "—"
        auc += f" / {hw['test_auc_roc']:.4f}" if hw.get("test_auc_roc") else ""
        cells = [
            f"{int(rows):,}",
            _s(gen.get("wall_s")),
            total,
            _s(tm.get("read data")),
            _s(tm.get("split")),
            _s(tm.get("feature engineering")),
            _s(train),
            _s(tm.get("evaluate")),
            _s(sp.get("publish_s")),
            f"{sp['peak_tree_rss_mb']:,} MB",
            f"{sp['peak_jvm_heap_used_mb']:,} MB / {sp['jvm_max_heap']}",
            _s(hw.get("fit_evaluate_s")),
            ratio,
            auc,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000,30000000")
    ap.add_argument("--handwritten-sizes", default="1000000,10000000")
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "generated" / "scale"))
    ap.add_argument("--work-dir", default=None, help="outputs and MLflow store (default: a temp dir)")
    ap.add_argument("--out", default=str(RESULTS / "train_scale.json"))
    ap.add_argument("--handwritten", help=argparse.SUPPRESS)
    ap.add_argument("--handwritten-out", help=argparse.SUPPRESS)
    ap.add_argument("--generate-only", action="store_true", help="only generate the data sets")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run sparkpipe and hand-written alternately N times per size with a hand-written run; report medians",
    )
    ap.add_argument(
        "--merge", action="store_true", help="keep the other sizes already in --out (re-measure some sizes)"
    )
    args = ap.parse_args()

    if args.handwritten:  # child process: the reference run
        result = handwritten(args.handwritten, args.handwritten_out)
        Path(args.handwritten_out, "result.json").write_text(json.dumps(result, indent=2))
        return

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sparkpipe-scale-"))
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    hand_sizes = {int(s) for s in args.handwritten_sizes.split(",") if s}
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "work_dir": str(work), "sizes": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and out.exists():
        results["sizes"] = json.loads(out.read_text()).get("sizes", {})
    for rows in [int(s) for s in args.sizes.split(",") if s]:
        print(f"== {rows:,} rows", flush=True)
        entry: dict[str, Any] = {"generate": generate(rows, data_dir, log_dir)}
        print(f"   data: {entry['generate']}", flush=True)
        if args.generate_only:
            continue
        # with --repeat N the two alternate N times (so both see the same drift in machine load) and
        # the run with the median fit + evaluate time of each stands for it
        ours: list[dict[str, Any]] = []
        hand: list[dict[str, Any]] = []
        for i in range(args.repeat if rows in hand_sizes else 1):
            ours.append(run_sparkpipe(rows, entry["generate"]["path"], work, log_dir))
            print(f"   sparkpipe [{i + 1}]: {json.dumps(ours[-1])}", flush=True)
            if rows in hand_sizes:
                hand.append(run_handwritten(rows, entry["generate"]["path"], work, log_dir))
                print(f"   hand-written [{i + 1}]: {json.dumps(hand[-1])}", flush=True)
        entry["sparkpipe"] = median_run(ours)
        if hand:
            entry["handwritten"] = median_run(hand)
        results["sizes"][str(rows)] = entry
        results["sizes"] = dict(sorted(results["sizes"].items(), key=lambda kv: int(kv[0])))
        out.write_text(json.dumps(results, indent=2))  # partial results survive an interrupted run
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
