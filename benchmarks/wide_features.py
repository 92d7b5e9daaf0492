"""Training-scale benchmark: logistic regression on 10,000+ sparse features, end to end.

Generates a deterministic wide data set with Spark (no driver-side data): ``numeric_cols`` Gaussian
columns ``x0..`` and a free-text column ``doc`` of 20 words drawn from a 50,000-word vocabulary; the
label depends on three numeric columns and on "signal" words. The text is hashed into ``text_features``
term-frequency slots (HashingTF + IDF), so the feature vector has ``numeric_cols + text_features``
slots, stays sparse (StandardScaler without centring) and trains ``logistic_regression`` through
:func:`sparkpipe.pipeline.run_pipeline`. Reports rows, feature count, wall time, validation AUC and peak
driver memory (JVM heap peak over all memory pools via ``ManagementFactory``, and the JVM process
RSS high-water mark ``VmHWM`` from ``/proc``).

Usage::

    .venv/bin/python benchmarks/wide_features.py --rows 50000 --numeric 100 --text-features 16384
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks.wide_features")

VOCABULARY = 50_000
WORDS_PER_DOC = 20
SIGNAL_WORDS = 300


def generate_wide(spark: Any, rows: int, numeric_cols: int, seed: int = 42) -> Any:
    """The wide data set as a Spark DataFrame (``x0..``, ``doc``, ``y``); deterministic in ``seed``."""
    from pyspark.sql import functions as F

    def uniform(k: int) -> Any:
        h = F.xxhash64(F.col("id"), F.lit(seed).cast("long"), F.lit(k).cast("long"))
        return F.shiftrightunsigned(h, 11).cast("double") / F.lit(float(1 << 53))

    def normal(k: int) -> Any:
        return F.sqrt(F.lit(-2.0) * F.log(F.lit(1.0) - uniform(k))) * F.cos(
            F.lit(6.283185307179586) * uniform(k + 1)
        )

    base = spark.range(rows)
    xs = [normal(10 + 2 * j).alias(f"x{j}") for j in range(numeric_cols)]
    words = F.expr(
        f"transform(sequence(1, {WORDS_PER_DOC}), i -> pmod(xxhash64(id, i, {seed}), {VOCABULARY}))"
    )
    df = base.select("id", *xs, words.alias("_w"), uniform(7).alias("_u"))
    n_signal = F.size(F.filter(F.col("_w"), lambda w: w < SIGNAL_WORDS))
    logit = F.lit(-0.5) + F.col("x0") - F.col("x1") + F.lit(0.5) * F.col(f"x{min(2, numeric_cols - 1)}")
    logit = logit + F.lit(1.2) * n_signal
    doc = F.concat_ws(" ", F.transform(F.col("_w"), lambda w: F.concat(F.lit("w"), w.cast("string"))))
    label = (F.col("_u") < F.lit(1.0) / (F.lit(1.0) + F.exp(-logit))).cast("double")
    return df.select(*[f"x{j}" for j in range(numeric_cols)], doc.alias("doc"), label.alias("y"))


def peak_driver_memory(spark: Any) -> dict[str, float]:
    """Peak JVM heap (sum of heap pools' peak usage) and the JVM's RSS high-water mark, in MiB."""
    jvm = spark.sparkContext._jvm
    pools = jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
    heap = 0
    for i in range(pools.size()):
        pool = pools.get(i)
        if str(pool.getType().toString()) == "Heap memory":
            heap += pool.getPeakUsage().getUsed()
    pid = int(jvm.java.lang.ProcessHandle.current().pid())
    hwm = None
    status = Path(f"/proc/{pid}/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024.0
    max_heap = jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**20
    return {
        "jvm_heap_peak_mib": heap / 2**20,
        "jvm_max_heap_mib": max_heap,
        "jvm_rss_hwm_mib": hwm or float("nan"),
    }


def run(
    rows: int, numeric: int, text_features: int, seed: int, master: str, driver_memory: str
) -> dict[str, Any]:
    """Generate, write to parquet, run the pipeline; return the measurements."""
    from sparkpipe.config import build_config
    from sparkpipe.pipeline import run_pipeline
    from sparkpipe.session import get_spark

    work = Path(tempfile.mkdtemp(prefix="sparkpipe-wide-"))
    raw = {
        "spark": {"app_name": "sparkpipe-wide", "master": master, "driver_memory": driver_memory,
                  "shuffle_partitions": 4, "ui_enabled": False, "log_level": "ERROR"},
        "data": {"input_path": str(work / "wide.parquet"), "output_path": str(work / "out"), "seed": seed,
                 "validation_split": 0.15, "test_split": 0.05},
        "features": {"target": "y", "text": {"columns": ["doc"], "num_features": text_features, "min_doc_freq": 1},
                     "missing_values": {"strategy": "mean"}, "scaling": "standard",
                     "selection": {"variance_threshold": 0.0}},
        "model": {"algorithm": "logistic_regression", "hyperparameters": {"maxIter": 30, "regParam": 0.001}},
        "evaluation": {"classification": ["auc_roc"], "report": False},
        "mlflow": {"enabled": False},
        "logging": {"level": "WARNING"},
    }  # fmt: skip
    cfg = build_config(raw)
    spark = get_spark(cfg.spark, cfg.optimization)
    t0 = time.perf_counter()
    generate_wide(spark, rows, numeric, seed).write.mode("overwrite").parquet(str(work / "wide.parquet"))
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = run_pipeline(cfg, spark=spark)
    wall = time.perf_counter() - t1
    from pyspark.ml import PipelineModel

    model = PipelineModel.load(str(work / "out" / "model"))
    vec = model.stages[-1]
    features_col = vec.getFeaturesCol()
    sample = (
        model.transform(spark.read.parquet(str(work / "wide.parquet")).limit(20))
        .select(features_col)
        .collect()
    )
    out = {
        "rows": rows,
        "numeric_columns": numeric,
        "text_hash_features": text_features,
        "features": int(vec.numFeatures),
        "sparse": all(type(r[0]).__name__ == "SparseVector" for r in sample),
        "mean_nonzeros_per_row": sum(len(r[0].indices) for r in sample) / max(len(sample), 1),
        "generate_seconds": round(t_gen, 1),
        "pipeline_wall_seconds": round(wall, 1),
        "validation_auc_roc": result.metrics.get("validation_auc_roc"),
        "timings": {k: round(v, 1) for k, v in result.timings.items()},
        "master": master,
        "driver_memory": driver_memory,
        **{k: round(v, 1) for k, v in peak_driver_memory(spark).items()},
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--numeric", type=int, default=100)
    parser.add_argument("--text-features", type=int, default=16_384)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "wide_features.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    res = run(args.rows, args.numeric, args.text_features, args.seed, args.master, args.driver_memory)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    log.info("wide features benchmark: %s", json.dumps(res))


if __name__ == "__main__":
    main()
