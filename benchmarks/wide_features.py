"""Training-scale benchmark: logistic regression on 10,000+ (up to 2^18+) sparse features, end to end.

Generates a deterministic wide data set with Spark (no driver-side data): ``numeric_cols`` Gaussian
columns ``x0..`` and a free-text column ``doc`` of 20 words drawn from a 50,000-word vocabulary; the
label depends on three numeric columns and on "signal" words. The text is hashed into ``text_features``
term-frequency slots (HashingTF + IDF), so the feature vector has ``numeric_cols + text_features``
slots, stays sparse (StandardScaler without centring) and trains ``logistic_regression`` through
:func:`sparkpipe.pipeline.run_pipeline`. Reports rows, feature count, wall time, validation AUC and peak
driver memory (JVM heap peak over all memory pools via ``ManagementFactory``, and the JVM process
RSS high-water mark ``VmHWM`` from ``/proc``).

With ``--categorical N`` the data also has N high-cardinality string id columns (``user_id``,
``merchant_id``, ``item_id``, then ``cat3_id``...): each row draws an id out of ``--cardinality``
possible values with a power-law skew (``id = floor(cardinality * u ** skew)``, ``u`` uniform, so a
few head ids recur and a long tail is seen once), and every id carries a fixed hidden effect on the
label (a standard normal derived from a hash of the id). They are configured as categorical and hashed
(``categorical_encoding: {high_cardinality: hashing, hash_buckets}``: one ``FeatureHasher`` block of
``hash_buckets`` slots per column), so the vector has ``numeric + text_features + N * hash_buckets``
slots. The run then also checks, on a sample, that every vector column of the fitted pipeline stays
sparse, and records the fitted stages, the scaler's ``withMean``, non-zeros per row, test AUC and the
size of the explanation files.

Usage::

    .venv/bin/python benchmarks/wide_features.py --rows 50000 --numeric 100 --text-features 16384

    # 2^18 hashed slots: text 2^17 + two id columns x 2^16, no variance threshold (full width into LR)
    .venv/bin/python benchmarks/wide_features.py --rows 100000 --numeric 20 --text-features 131072 \\
        --categorical 2 --hash-buckets 65536 --variance-threshold none \\
        --out benchmarks/results/wide_features_2e18.json
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
CATEGORICAL_NAMES = ("user_id", "merchant_id", "item_id")
CATEGORICAL_KEY = 1_000_000
"""Salt of the categorical columns' hashes (far from the numeric columns' ``10 + 2j``)."""
CATEGORY_EFFECT = 1.0
"""Scale of an id's hidden effect on the label's logit (the effect itself is standard normal)."""


def categorical_name(j: int) -> str:
    """Name of the ``j``-th high-cardinality id column."""
    return CATEGORICAL_NAMES[j] if j < len(CATEGORICAL_NAMES) else f"cat{j}_id"


def generate_wide(
    spark: Any,
    rows: int,
    numeric_cols: int,
    seed: int = 42,
    categorical_cols: int = 0,
    cardinality: int = 250_000,
    skew: float = 3.0,
) -> Any:
    """The wide data set as a Spark DataFrame (``x0..``, ``doc``, then ``categorical_cols`` string id
    columns, ``y``); deterministic in ``seed``. With ``categorical_cols=0`` it is the original data set."""
    from pyspark.sql import functions as F

    def unit(h: Any) -> Any:
        return F.shiftrightunsigned(h, 11).cast("double") / F.lit(float(1 << 53))

    def uniform(k: int) -> Any:
        return unit(F.xxhash64(F.col("id"), F.lit(seed).cast("long"), F.lit(k).cast("long")))

    def box_muller(u1: Any, u2: Any) -> Any:
        return F.sqrt(F.lit(-2.0) * F.log(F.lit(1.0) - u1)) * F.cos(F.lit(6.283185307179586) * u2)

    def normal(k: int) -> Any:
        return box_muller(uniform(k), uniform(k + 1))

    def id_effect(j: int) -> Any:  # a fixed standard normal per id value of column j
        def u(salt: int) -> Any:
            key = F.lit(CATEGORICAL_KEY + 2 * j + salt).cast("long")
            return unit(F.xxhash64(F.col(f"_c{j}"), F.lit(seed).cast("long"), key))

        return box_muller(u(0), u(1))

    base = spark.range(rows)
    xs = [normal(10 + 2 * j).alias(f"x{j}") for j in range(numeric_cols)]
    words = F.expr(
        f"transform(sequence(1, {WORDS_PER_DOC}), i -> pmod(xxhash64(id, i, {seed}), {VOCABULARY}))"
    )
    cats = [  # power-law skew: id 0 is the most frequent, most of the range is a long tail
        F.floor(F.lit(float(cardinality)) * F.pow(uniform(CATEGORICAL_KEY + 1000 + j), F.lit(skew)))
        .cast("long")
        .alias(f"_c{j}")
        for j in range(categorical_cols)
    ]
    df = base.select("id", *xs, words.alias("_w"), uniform(7).alias("_u"), *cats)
    n_signal = F.size(F.filter(F.col("_w"), lambda w: w < SIGNAL_WORDS))
    logit = F.lit(-0.5) + F.col("x0") - F.col("x1") + F.lit(0.5) * F.col(f"x{min(2, numeric_cols - 1)}")
    logit = logit + F.lit(1.2) * n_signal
    for j in range(categorical_cols):
        logit = logit + F.lit(CATEGORY_EFFECT) * id_effect(j)
    doc = F.concat_ws(" ", F.transform(F.col("_w"), lambda w: F.concat(F.lit("w"), w.cast("string"))))
    label = (F.col("_u") < F.lit(1.0) / (F.lit(1.0) + F.exp(-logit))).cast("double")
    ids = [
        F.concat(F.lit(categorical_name(j)[0]), F.col(f"_c{j}").cast("string")).alias(categorical_name(j))
        for j in range(categorical_cols)
    ]
    return df.select(*[f"x{j}" for j in range(numeric_cols)], doc.alias("doc"), *ids, label.alias("y"))


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


DENSIFYING_STAGES = ("MinMaxScalerModel", "PCAModel", "DCT", "PolynomialExpansion")
"""Fitted stages whose output is dense (or blown up) whatever the input's sparsity."""


def _flatten_stages(stages: list[Any]) -> list[Any]:
    out: list[Any] = []
    for s in stages:
        out.append(s)
        if hasattr(s, "stages") and isinstance(s.stages, list):
            out += _flatten_stages(s.stages)
    return out


def densifying_stages(model: Any) -> list[str]:
    """Stages of a fitted PipelineModel that turn sparse vectors dense (``StandardScaler`` with
    ``withMean``, min-max scaling, PCA...), as ``"<class>: <why>"``; empty when none."""
    found = []
    for s in _flatten_stages(model.stages):
        name = type(s).__name__
        if name == "StandardScalerModel" and s.getWithMean():
            found.append(f"{name}: withMean=True centres every slot")
        elif name in DENSIFYING_STAGES:
            found.append(f"{name}: dense output")
    return found


def vector_columns(df: Any, rows: int = 20) -> dict[str, dict[str, Any]]:
    """For each vector column of ``df`` (first ``rows`` rows): width, vector classes and non-zeros per row."""
    import numpy as np
    from pyspark.ml.linalg import SparseVector, VectorUDT

    names = [f.name for f in df.schema.fields if isinstance(f.dataType, VectorUDT)]
    if not names:
        return {}
    sample = df.select(*names).limit(rows).collect()
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        vecs = [r[k] for r in sample if r[k] is not None]
        nnz = [
            len(v.indices) if isinstance(v, SparseVector) else int(np.count_nonzero(v.toArray()))
            for v in vecs
        ]
        out[name] = {
            "size": int(vecs[0].size) if vecs else None,
            "classes": sorted({type(v).__name__ for v in vecs}),
            "mean_nonzeros": round(sum(nnz) / max(len(nnz), 1), 1),
            "max_nonzeros": max(nnz, default=0),
        }
    return out


def category_stats(df: Any, cols: list[str]) -> dict[str, dict[str, Any]]:
    """Observed distinct ids, the most frequent id's row share and the share of rows whose id repeats."""
    from pyspark.sql import functions as F

    total = df.count()
    out = {}
    for c in cols:
        row = (
            df.groupBy(c)
            .count()
            .agg(
                F.count("*").alias("distinct"),
                F.max("count").alias("top"),
                F.sum(F.when(F.col("count") >= 2, F.col("count")).otherwise(0)).alias("repeated"),
            )
            .first()
        )
        out[c] = {
            "distinct": int(row["distinct"]),
            "top_id_row_share": round(row["top"] / total, 4),
            "rows_with_repeated_id_share": round(row["repeated"] / total, 4),
        }
    return out


def run(
    rows: int,
    numeric: int,
    text_features: int,
    seed: int,
    master: str,
    driver_memory: str,
    *,
    categorical: int = 0,
    cardinality: int = 250_000,
    skew: float = 3.0,
    hash_buckets: int = 65_536,
    variance_threshold: float | None = 0.0,
) -> dict[str, Any]:
    """Generate, write to parquet, run the pipeline; return the measurements."""
    import os
    import resource

    from sparkpipe.config import build_config
    from sparkpipe.pipeline import run_pipeline
    from sparkpipe.session import get_spark

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="sparkpipe-wide-"))
    cat_cols = [categorical_name(j) for j in range(categorical)]
    features: dict[str, Any] = {
        "target": "y", "text": {"columns": ["doc"], "num_features": text_features, "min_doc_freq": 1},
        "missing_values": {"strategy": "mean"}, "scaling": "standard",
    }  # fmt: skip
    if variance_threshold is not None:
        features["selection"] = {"variance_threshold": variance_threshold}
    if cat_cols:
        features["categorical"] = cat_cols
        features["categorical_encoding"] = {"high_cardinality": "hashing", "hash_buckets": hash_buckets}
    raw = {
        "spark": {"app_name": "sparkpipe-wide", "master": master, "driver_memory": driver_memory,
                  "shuffle_partitions": 4, "ui_enabled": False, "log_level": "ERROR"},
        "data": {"input_path": str(work / "wide.parquet"), "output_path": str(work / "out"), "seed": seed,
                 "validation_split": 0.15, "test_split": 0.05},
        "features": features,
        "model": {"algorithm": "logistic_regression", "hyperparameters": {"maxIter": 30, "regParam": 0.001}},
        "evaluation": {"classification": ["auc_roc"], "report": False},
        "mlflow": {"enabled": False},
        "logging": {"level": "WARNING"},
    }  # fmt: skip
    cfg = build_config(raw)
    spark = get_spark(cfg.spark, cfg.optimization)
    t0 = time.perf_counter()
    data = generate_wide(spark, rows, numeric, seed, categorical, cardinality, skew)
    data.write.mode("overwrite").parquet(str(work / "wide.parquet"))
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = run_pipeline(cfg, spark=spark)
    wall = time.perf_counter() - t1
    from pyspark.ml import PipelineModel

    model = PipelineModel.load(str(work / "out" / "model"))
    vec = model.stages[-1]
    features_col = vec.getFeaturesCol()
    raw_df = spark.read.parquet(str(work / "wide.parquet"))
    sample = model.transform(raw_df.limit(20)).select(features_col).collect()
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
    stages = _flatten_stages(model.stages)
    scalers = [s for s in stages if type(s).__name__ == "StandardScalerModel"]
    vectors = vector_columns(model.transform(raw_df.limit(20)))
    explain_dir = work / "out" / "explain"
    out.update(
        {
            "categorical_columns": cat_cols,
            "categorical_cardinality": cardinality if cat_cols else None,
            "categorical_skew": skew if cat_cols else None,
            "categorical_hash_buckets": hash_buckets if cat_cols else None,
            "categorical_observed": category_stats(raw_df, cat_cols) if cat_cols else {},
            "hashed_slots": text_features + len(cat_cols) * hash_buckets,
            "variance_threshold": variance_threshold,
            "test_auc_roc": result.metrics.get("test_auc_roc"),
            "train_rows": result.lineage.get("train_rows"),
            "stages": [type(s).__name__ for s in stages],
            "standard_scaler_with_mean": [bool(s.getWithMean()) for s in scalers],
            "densifying_stages": densifying_stages(model),
            "dense_vector_columns": [
                n for n, v in vectors.items() if "DenseVector" in v["classes"] and (v["size"] or 0) > 2
            ],
            "vector_columns": vectors,
            "explain_files_bytes": (
                {p.name: p.stat().st_size for p in sorted(explain_dir.iterdir())}
                if explain_dir.is_dir()
                else {}
            ),
            "python_rss_hwm_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            "load_average_1m_start_end": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "cpus": os.cpu_count(),
        }
    )
    return out


def _threshold(value: str) -> float | None:
    return None if value.lower() in ("none", "off") else float(value)


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--numeric", type=int, default=100)
    parser.add_argument("--text-features", type=int, default=16_384)
    parser.add_argument("--categorical", type=int, default=0, help="high-cardinality id columns (hashed)")
    parser.add_argument("--cardinality", type=int, default=250_000, help="possible ids per id column")
    parser.add_argument("--skew", type=float, default=3.0, help="id = floor(cardinality * u ** skew)")
    parser.add_argument("--hash-buckets", type=int, default=65_536, help="FeatureHasher slots per id column")
    parser.add_argument(
        "--variance-threshold", type=_threshold, default=0.0, help="features.selection; 'none' to skip"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "wide_features.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    res = run(
        args.rows, args.numeric, args.text_features, args.seed, args.master, args.driver_memory,
        categorical=args.categorical, cardinality=args.cardinality, skew=args.skew,
        hash_buckets=args.hash_buckets, variance_threshold=args.variance_threshold,
    )  # fmt: skip
    res = {"command": " ".join(["benchmarks/wide_features.py", *sys.argv[1:]]), **res}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    log.info("wide features benchmark: %s", json.dumps(res))


if __name__ == "__main__":
    main()
