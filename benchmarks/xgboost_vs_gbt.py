"""xgboost (xgboost.spark) vs MLlib GBT: train time and test AUC on 1M churn rows, same features.

Set-up:

1. churn parquet with ``--rows`` rows (default 1,000,000) from ``sparkpipe data generate churn --rows N
   --format parquet --out DIR`` in its own process, reused when ``DIR`` already holds it;
2. one local Spark session (``--master``, default ``local[*]``); the data read and split 70/15/15 by
   sparkpipe (:func:`sparkpipe.pipeline.prepare_data`), the default feature stages fitted once on the
   training split, and the training and test feature frames cached and materialised before any timing;
3. both models built by sparkpipe's registry (:func:`sparkpipe.models.algorithms.build_estimator`) with
   the same ensemble settings: ``--trees`` trees (default 50) of depth ``--depth`` (5) and learning rate
   ``--learning-rate`` (0.1) - sparkpipe's defaults for ``gbt`` - i.e. GBT ``maxIter/maxDepth/stepSize``
   and xgboost ``n_estimators/max_depth/learning_rate`` (histogram method, workers = task slots);
4. train time is the wall time of ``fit`` on the cached training frame; test AUC-ROC comes from Spark's
   ``BinaryClassificationEvaluator`` on each model's ``rawPrediction`` over the same test rows.

Acceptance: xgboost trains at least 5x faster than MLlib GBT with an equal or better test AUC (equal:
within ``--auc-tolerance``, default 0.001, about the sampling error of AUC on 150k test rows).

Usage::

    .venv/bin/python benchmarks/xgboost_vs_gbt.py               # writes benchmarks/results/xgboost_vs_gbt.{json,md}
    .venv/bin/python benchmarks/xgboost_vs_gbt.py --rows 200000 --data /tmp/churn200k
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

log = logging.getLogger("benchmarks.xgboost_vs_gbt")


def generate(rows: int, out: Path) -> float | None:
    """Generate the churn parquet unless ``out`` already holds it; return the seconds taken (None: reused)."""
    marker = out / ".sparkpipe-rows"
    if (out / "_SUCCESS").is_file() and marker.is_file() and marker.read_text().strip() == str(rows):
        log.info("reusing %s (%d rows)", out, rows)
        return None
    cmd = [
        sys.executable,
        "-m",
        "sparkpipe",
        "data",
        "generate",
        "churn",
        "--rows",
        str(rows),
        "--format",
        "parquet",
        "--out",
        str(out),
    ]
    log.info("generating: %s", " ".join(cmd))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    marker.write_text(str(rows))
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/sparkpipe-bench/churn_1m"))
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--auc-tolerance", type=float, default=0.001)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    gen_seconds = generate(args.rows, args.data)

    from pyspark.ml import Pipeline
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    from sparkpipe.config import PipelineConfig, SparkConfig
    from sparkpipe.features.auto import build_feature_stages
    from sparkpipe.models.algorithms import build_estimator, get_algorithm
    from sparkpipe.pipeline import LABEL_COL, prepare_data
    from sparkpipe.session import get_spark

    spark = get_spark(
        SparkConfig(
            app_name="sparkpipe-bench-xgboost-vs-gbt",
            master=args.master,
            driver_memory=args.driver_memory,
            ui_enabled=False,
            log_level="ERROR",
        )
    )
    cfg = PipelineConfig.model_validate(
        {
            "data": {
                "input_path": str(args.data),
                "format": "parquet",
                "output_path": "/tmp/sparkpipe-bench-xgboost-vs-gbt",
                "validation_split": 0.15,
                "test_split": 0.15,
                "seed": 42,
            },
            "features": {"target": "churned"},
            "model": {"algorithm": "gbt"},
            "mlflow": {"enabled": False},
        }
    )
    t0 = time.perf_counter()
    data = prepare_data(spark, cfg)
    plan = build_feature_stages(data.train.drop(LABEL_COL), cfg.features, data.task, data.target, seed=42)
    feature_model = Pipeline(stages=list(plan.stages)).fit(data.train)
    cols = [plan.features_col, LABEL_COL]
    train = feature_model.transform(data.train).select(*cols).cache()
    test = feature_model.transform(data.test).select(*cols).cache()
    train_rows, test_rows = train.count(), test.count()
    num_features = len(train.first()[plan.features_col])
    feature_seconds = time.perf_counter() - t0
    log.info(
        "features ready in %.1fs: %d train / %d test rows, %d features",
        feature_seconds,
        train_rows,
        test_rows,
        num_features,
    )

    evaluator = BinaryClassificationEvaluator(
        labelCol=LABEL_COL, rawPredictionCol="rawPrediction", metricName="areaUnderROC"
    )
    settings = {
        "gbt": {"maxIter": args.trees, "maxDepth": args.depth, "stepSize": args.learning_rate},
        "xgboost": {"n_estimators": args.trees, "max_depth": args.depth, "learning_rate": args.learning_rate},
    }
    results: dict[str, dict[str, Any]] = {}
    for name, params in settings.items():
        spec = get_algorithm(name, "classification")
        estimator = build_estimator(
            spec, params, features_col=plan.features_col, label_col=LABEL_COL, seed=42, num_classes=2
        )
        effective = {p.name: v for p, v in estimator.extractParamMap().items() if p.name in params}
        if name == "xgboost":
            effective.update(
                num_workers=estimator.getOrDefault("num_workers"),
                tree_method=estimator.getOrDefault("tree_method"),
            )
        log.info("=== %s: fit with %s ===", name, effective)
        t_fit = time.perf_counter()
        model = estimator.fit(train)
        fit_seconds = time.perf_counter() - t_fit
        t_eval = time.perf_counter()
        auc = evaluator.evaluate(model.transform(test))
        eval_seconds = time.perf_counter() - t_eval
        log.info("%s: fit %.1fs, test AUC %.5f (scored in %.1fs)", name, fit_seconds, auc, eval_seconds)
        results[name] = {
            "params": effective,
            "train_seconds": round(fit_seconds, 2),
            "test_auc": auc,
            "score_seconds": round(eval_seconds, 2),
        }

    speedup = results["gbt"]["train_seconds"] / results["xgboost"]["train_seconds"]
    auc_delta = results["xgboost"]["test_auc"] - results["gbt"]["test_auc"]
    passed = speedup >= 5.0 and auc_delta >= -args.auc_tolerance
    result = {
        "benchmark": "xgboost_vs_gbt",
        "data": f"churn parquet, {args.rows} rows ({train_rows} train / {test_rows} test), "
        f"{num_features} features",
        "settings": {"trees": args.trees, "depth": args.depth, "learning_rate": args.learning_rate},
        "master": args.master,
        "generate_seconds": None if gen_seconds is None else round(gen_seconds, 1),
        "feature_seconds": round(feature_seconds, 1),
        "results": results,
        "speedup_train": round(speedup, 2),
        "auc_delta": auc_delta,
        "auc_tolerance": args.auc_tolerance,
        "acceptance": "xgboost >= 5x faster to train than MLlib GBT at equal or better test AUC",
        "acceptance_passed": passed,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "xgboost_vs_gbt.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# xgboost vs MLlib GBT ({result['date']})",
        "",
        f"{result['data']}; {args.trees} trees, depth {args.depth}, learning rate {args.learning_rate}; "
        f"{args.master} on {os.cpu_count()} CPUs (load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        "| model | train s | test AUC | score s |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        md.append(f"| {name} | {r['train_seconds']} | {r['test_auc']:.5f} | {r['score_seconds']} |")
    md += [
        "",
        f"Train speed-up {speedup:.1f}x; AUC difference (xgboost - GBT) {auc_delta:+.5f}.",
        f"Acceptance ({result['acceptance']}): **{'passed' if passed else 'failed'}**",
        "",
    ]
    (args.out / "xgboost_vs_gbt.md").write_text("\n".join(md))
    print("\n".join(md))
    spark.stop()
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("pyspark", "xgboost", "numpy")}


if __name__ == "__main__":
    main()
