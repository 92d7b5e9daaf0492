"""Tuning benchmark: full grid vs random vs Bayesian search on one data set and one search space.

Fixed set-up: the built-in churn data (``--rows``, default 6,000; 70% training rows), its feature
stages fitted once, a random forest classifier, 3-fold cross-validation on AUC-ROC, parallelism 2.

* grid: numTrees x maxDepth x minInstancesPerNode = 3 x 3 x 3 = 27 points;
* random and Bayesian: ``--trials`` (default 10) draws from the same box as integer ranges
  (numTrees 20-100 step 10, maxDepth 3-10, minInstancesPerNode 1-40).

All three searches run through :func:`sparkpipe.tuning.tune` on the same cached feature frame with the
same seed, so the k folds are identical and CV scores are comparable. The question answered: how long
until a search has a *completed* trial whose CV score is within ``--tolerance`` (0.005) of the grid's
best CV score? For the grid that is its whole run (its best is only known at the end); for the others it
is the fold build time plus the finishing time of the first trial that gets there. The refit of the
best model is the same for every search and is left out. Acceptance: random or Bayesian reaches the
target in at most 40% of the grid's time.

Usage::

    .venv/bin/python benchmarks/tuning.py            # writes benchmarks/results/tuning.{json,md}
    .venv/bin/python benchmarks/tuning.py --rows 3000 --trials 12
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

log = logging.getLogger("benchmarks.tuning")

GRID: dict[str, list[int]] = {
    "numTrees": [20, 60, 100],
    "maxDepth": [3, 6, 10],
    "minInstancesPerNode": [1, 10, 40],
}
SPACE: dict[str, dict[str, Any]] = {
    "numTrees": {"type": "int", "low": 20, "high": 100, "step": 10},
    "maxDepth": {"type": "int", "low": 3, "high": 10},
    "minInstancesPerNode": {"type": "int", "low": 1, "high": 40},
}


def time_to_target(summary: dict[str, Any], target: float, direction: str) -> float | None:
    """Seconds from the start of tuning (fold build included) to the first completed trial at target."""
    hits = [
        t["finished_at"]
        for t in summary["trials"]
        if t["state"] == "complete"
        and t["mean"] is not None
        and (t["mean"] >= target if direction == "max" else t["mean"] <= target)
    ]
    return summary["fold_seconds"] + min(hits) if hits else None


def work_to_target(summary: dict[str, Any], target: float, direction: str) -> float | None:
    """Trial-seconds (summed durations of the trials finished up to the first one at target).

    Less sensitive to other load on a shared machine than wall time; with parallelism p, wall time is
    roughly this divided by p.
    """
    hit = time_to_target(summary, target, direction)
    if hit is None:
        return None
    cutoff = hit - summary["fold_seconds"]
    return sum(t["seconds"] for t in summary["trials"] if t["finished_at"] <= cutoff + 1e-9)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    from pyspark.ml import Pipeline

    from sparkpipe.config import PipelineConfig, SparkConfig
    from sparkpipe.features.auto import build_feature_stages
    from sparkpipe.models.algorithms import build_estimator, get_algorithm
    from sparkpipe.pipeline import LABEL_COL, prepare_data
    from sparkpipe.session import get_spark
    from sparkpipe.tuning import grid_size, tune

    spark = get_spark(
        SparkConfig(
            app_name="sparkpipe-bench-tuning",
            master="local[2]",
            shuffle_partitions=4,
            ui_enabled=False,
            log_level="ERROR",
        )
    )
    base = PipelineConfig.model_validate(
        {
            "data": {
                "input_path": "builtin:churn",
                "rows": args.rows,
                "output_path": "/tmp/sparkpipe-bench-tuning",
            },
            "model": {"algorithm": "random_forest"},
            "tuning": {
                "enabled": True,
                "method": "cross_validation",
                "num_folds": args.folds,
                "parallelism": args.parallelism,
                "metric": "auc_roc",
                "seed": 42,
            },
            "mlflow": {"enabled": False},
        }
    )
    data = prepare_data(spark, base)
    spec = get_algorithm("random_forest", data.task)
    plan = build_feature_stages(data.train.drop(LABEL_COL), base.features, data.task, data.target)
    features = Pipeline(stages=list(plan.stages)).fit(data.train).transform(data.train).cache()
    train_rows = features.count()
    estimator = build_estimator(
        spec, {}, features_col=plan.features_col, label_col=LABEL_COL, seed=42, num_classes=2
    )

    runs: dict[str, dict[str, Any]] = {}
    settings = {
        "grid": {"search": "grid", "param_grid": {"random_forest": GRID}},
        "random": {"search": "random", "search_space": {"random_forest": SPACE}, "max_trials": args.trials},
        "bayesian": {
            "search": "bayesian",
            "search_space": {"random_forest": SPACE},
            "max_trials": args.trials,
        },
    }
    for name, tuning in settings.items():
        cfg = base.model_copy(update={"tuning": base.tuning.model_copy(update=tuning)})
        log.info("=== %s search ===", name)
        t0 = time.perf_counter()
        _, summary = tune(spark, cfg, spec, estimator, features, data)
        summary["wall_seconds"] = time.perf_counter() - t0
        runs[name] = summary

    grid = runs["grid"]
    direction = grid["direction"]
    target = (
        grid["best_score"] - args.tolerance if direction == "max" else grid["best_score"] + args.tolerance
    )
    grid_time = grid["fold_seconds"] + grid["search_seconds"]
    within = sum(
        1
        for t in grid["trials"]
        if t["mean"] is not None and (t["mean"] >= target if direction == "max" else t["mean"] <= target)
    )
    rows = []
    for name, s in runs.items():
        reach = grid_time if name == "grid" else time_to_target(s, target, direction)
        work = (
            sum(t["seconds"] for t in s["trials"]) if name == "grid" else work_to_target(s, target, direction)
        )
        rows.append(
            {
                "search": name,
                "trials": s["num_trials"],
                "pruned": s["num_pruned"],
                "best_cv_auc": s["best_score"],
                "best_params": s["best_params"],
                "search_seconds": round(s["fold_seconds"] + s["search_seconds"], 1),
                "seconds_to_target": None if reach is None else round(reach, 1),
                "trial_seconds_to_target": None if work is None else round(work, 1),
                "share_of_grid_time": None if reach is None else round(reach / grid_time, 3),
            }
        )
    passed = any(
        r["search"] != "grid" and r["share_of_grid_time"] is not None and r["share_of_grid_time"] <= 0.40
        for r in rows
    )
    result = {
        "benchmark": "tuning",
        "data": f"builtin:churn, {args.rows} rows ({train_rows} training rows)",
        "model": "random_forest (classification)",
        "metric": "auc_roc (3-fold CV)" if args.folds == 3 else f"auc_roc ({args.folds}-fold CV)",
        "parallelism": args.parallelism,
        "grid": GRID,
        "grid_points": grid_size(GRID),
        "space": SPACE,
        "trials": args.trials,
        "tolerance": args.tolerance,
        "grid_best": grid["best_score"],
        "target": target,
        "grid_points_within_tolerance": within,
        "rows": rows,
        "acceptance_passed": passed,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# Tuning benchmark ({result['date']})",
        "",
        f"{result['data']}; {result['model']}; {result['metric']}; parallelism {args.parallelism}; "
        f"{os.cpu_count()} CPUs (load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        f"Grid: {GRID} ({grid_size(GRID)} points). Random/Bayesian: {args.trials} trials from {SPACE}.",
        "",
        f"Target: grid best {grid['best_score']:.4f} - {args.tolerance} = {target:.4f} "
        f"({within} of {grid_size(GRID)} grid points are within it).",
        "",
        "| search | trials | pruned | best CV AUC | search s | s to target | share of grid time "
        "| trial-s to target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['search']} | {r['trials']} | {r['pruned']} | {r['best_cv_auc']:.4f} | {r['search_seconds']} | "
            f"{r['seconds_to_target'] if r['seconds_to_target'] is not None else 'not reached'} | "
            f"{r['share_of_grid_time'] if r['share_of_grid_time'] is not None else '—'} | "
            f"{r['trial_seconds_to_target'] if r['trial_seconds_to_target'] is not None else '—'} |"
        )
    md += [
        "",
        "s to target: wall seconds from the start of tuning (fold build included) to the first completed "
        "trial within the tolerance; for the grid, its whole run. trial-s: summed trial durations up to "
        "that point (less sensitive to other load on the machine).",
        "",
        f"Acceptance (random or Bayesian within {args.tolerance} of grid best in ≤ 40% of grid time): "
        f"**{'passed' if passed else 'failed'}**",
        "",
    ]
    (args.out / "tuning.md").write_text("\n".join(md))
    print("\n".join(md))
    spark.stop()
    return result


if __name__ == "__main__":
    main()
