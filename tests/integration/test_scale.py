"""Memory-bounded training, checked as a user would run it.

The default config, unchanged but for its paths, trains 200,000 generated churn rows in a fresh
process whose driver heap is capped at 512 MB (local mode: the executors share that heap). Before the
redesign this shape of run cached the whole wide input and every intermediate column and died with
``java.lang.OutOfMemoryError`` at one million rows with a 1 GB heap. The full-size proof (1M, 10M, 30M
rows) is ``benchmarks/train_scale.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SPARKPIPE = str(Path(sys.executable).parent / "sparkpipe")
ROWS = 200_000
HEAP = "512m"


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    return subprocess.run(
        [SPARKPIPE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def test_default_config_trains_200k_rows_with_a_512mb_heap(spark, tmp_path, seed_mlflow_db):
    from sparkpipe.data.datasets import generate
    from sparkpipe.data.io import write_dataset

    # the input, written by this test process's Spark (what `sparkpipe data generate churn --rows
    # 200000` writes: same generator, same default seed); the capped heap is the training run's
    data = tmp_path / "churn_200k"
    write_dataset(generate(spark, "churn", ROWS, seed=42), str(data), "parquet")
    seed_mlflow_db(tmp_path / "mlflow.db")
    out = tmp_path / "out"
    run = _cli(
        [
            "run",
            "--config",
            str(ROOT / "config" / "pipeline_config.yaml"),
            "--set",
            f"data.input_path={data}",
            "--set",
            f"data.output_path={out}",
            "--set",
            f"spark.driver_memory={HEAP}",
            "--set",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    assert "OutOfMemoryError" not in run.stderr
    record = json.loads((out / "run.json").read_text())
    lineage = record["lineage"]
    assert lineage["row_count"] == ROWS
    # validation and test rows are counted as scored, train is the labelled rest (no label is missing)
    assert lineage["labelled_rows"] == ROWS and lineage["null_target_rows"] == 0
    assert (
        abs(lineage["validation_rows"] / ROWS - 0.15) < 0.01
        and abs(lineage["test_rows"] / ROWS - 0.15) < 0.01
    )
    assert lineage["train_rows"] == ROWS - lineage["validation_rows"] - lineage["test_rows"]
    assert record["metrics"]["test_auc_roc"] > 0.85
    assert record["registered_version"] == "1"
    # a training split over PROFILE_MAX_ROWS is profiled from a seeded sample, which says so
    from sparkpipe.pipeline import PROFILE_MAX_ROWS

    profiles = list(tmp_path.glob("mlruns/**/data/profile.json"))
    assert len(profiles) == 1, profiles
    profile = json.loads(profiles[0].read_text())
    assert lineage["train_rows"] > PROFILE_MAX_ROWS
    assert profile.get("sampled_from_rows", 0) > PROFILE_MAX_ROWS
    assert 0.9 * PROFILE_MAX_ROWS < profile["row_count"] < 1.1 * PROFILE_MAX_ROWS
    assert (out / "report.html").stat().st_size > 10_000


def test_profile_of_a_large_training_split_is_a_bounded_sample(spark, monkeypatch):
    import sparkpipe.flow.fit as pipeline
    from sparkpipe.data.datasets import generate

    monkeypatch.setattr(pipeline, "PROFILE_MAX_ROWS", 1_000)
    train = generate(spark, "churn", 10_000, seed=1)
    profile = pipeline._bounded_profile(train, 10_000, seed=1)
    assert profile is not None and profile["sampled_from_rows"] == 10_000
    assert 800 <= profile["row_count"] <= 1_200
    assert set(profile["columns"]) == set(train.columns)
    assert pipeline._bounded_profile(train, 900, seed=1) is None  # small data: every row is profiled
