"""Fixtures of the serving tests: real registered models in a temporary MLflow (SQLite) store.

``registered`` fits a small StringIndexer + VectorAssembler + LogisticRegression PipelineModel on
200 rows (a categorical and two numeric columns), keeps their profile in the model's metadata (the
drift reference), logs it with :class:`sparkpipe.tracking.Tracker`
and registers it twice (versions 1 and 2, ``champion`` -> 1). ``fallback_model`` registers a pipeline
with a ``SQLTransformer`` (no NumPy twin). Job functions for the job tests live here too: the job
process imports them by ``module:function``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkpipe.config import PipelineConfig
from sparkpipe.serving.app import create_app
from sparkpipe.serving.settings import ServingSettings

MODEL = "churn_lr"
FALLBACK_MODEL = "churn_sql"
SCHEMA = [("plan", "string"), ("age", "double"), ("calls", "long")]


def stop_process_group(proc: Any, timeout: float = 30) -> None:
    """SIGTERM a server started with ``start_new_session=True`` and its children; SIGKILL if it hangs."""
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def serve_process(
    args: list[str], port: int, cwd: Path, env: dict[str, str], timeout: float = 120
) -> Iterator[Any]:
    """``python -m sparkpipe <args>`` in its own process group (output in ``cwd/serve.log``), yielded
    once ``GET /ready`` on ``port`` answers 200; it and its children are stopped at the end."""
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    log_path = cwd / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparkpipe", *args],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"server did not become ready: {log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        stop_process_group(proc)


def make_rows(n: int = 200, seed: int = 7) -> list[tuple[str, float, int, float]]:
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        plan = rng.choice(["basic", "pro", "max"])
        age = round(rng.uniform(18, 80), 1)
        calls = rng.randint(0, 12)
        score = (calls - 5) * 0.6 + (age - 45) * 0.05 + (1.5 if plan == "basic" else 0.0) + rng.gauss(0, 1)
        rows.append((plan, age, calls, 1.0 if score > 0 else 0.0))
    return rows


def _fit_and_register(spark: Any, cfg: PipelineConfig) -> None:
    """Fit once; register ``churn_lr`` v1, v2 and ``churn_sql`` (same fitted stages + a SQLTransformer)."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import SQLTransformer, StringIndexer, VectorAssembler

    from sparkpipe.features.roles import profile_frame, top_values
    from sparkpipe.features.stages import category_counts
    from sparkpipe.pipeline import model_signature
    from sparkpipe.tracking import Tracker

    df = spark.createDataFrame(make_rows(), "plan string, age double, calls long, label double")
    # the drift reference, as a run keeps it: the profile, and the plan's category counts of `plan`
    profile = profile_frame(df, ["plan", "age", "calls"])
    profile["columns"]["plan"].update(top_values(category_counts(df, ["plan"])[0]))
    model = Pipeline(
        stages=[
            StringIndexer(inputCol="plan", outputCol="plan_idx", handleInvalid="keep"),
            VectorAssembler(
                inputCols=["plan_idx", "age", "calls"], outputCol="features", handleInvalid="keep"
            ),
            LogisticRegression(maxIter=20, regParam=0.01),
        ]
    ).fit(df)
    indexer, assembler, lr = model.stages
    sql = SQLTransformer(statement="SELECT *, age * calls / 10.0 AS age_calls FROM __THIS__")
    with_sql = PipelineModel(stages=[indexer, sql, assembler, lr])
    example = {"columns": ["plan", "age", "calls"], "data": [["pro", 33.5, 4], ["basic", 61.0, 9]]}
    signature = model_signature(SCHEMA, "classification", True)
    tracker = Tracker(cfg)
    for name, fitted, versions in ((MODEL, model, 2), (FALLBACK_MODEL, with_sql, 1)):
        with tracker.run(run_name=name):
            tracker.log_metrics({"validation_accuracy": 0.9})
            # signature given and the example written beside MLmodel: MLflow does not re-score it
            uri = tracker.log_spark_model(
                fitted,
                signature=signature,
                metadata={"sparkpipe": {"input_schema": [list(x) for x in SCHEMA], "profile": profile}},
            )
            tracker.log_dict(example, "model/input_example.json")
            for i in range(versions):
                tracker.register(uri, name, alias="champion" if i == 0 else None)


@pytest.fixture(scope="session")
def registered(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A temporary SQLite MLflow store: ``churn_lr`` 1, 2 (champion -> 1) and ``churn_sql`` 1."""
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = PipelineConfig.model_validate({"mlflow": {"tracking_uri": uri, "experiment_name": "serving-tests"}})
    _fit_and_register(spark, cfg)
    return {"root": root, "cfg": cfg, "tracking_uri": uri}


def make_settings(store: dict[str, Any], tmp_path: Path, **kw: Any) -> ServingSettings:
    values: dict[str, Any] = {
        "tracking_uri": store["tracking_uri"],
        "model_name": MODEL,
        "reload_interval_seconds": 0,
        "jobs_dir": str(tmp_path / "jobs"),
        "model_cache_dir": str(store["root"] / "cache"),
        "allowed_data_roots": [str(tmp_path / "data")],
        "max_batch_rows": 100,
    }
    values.update(kw)
    (tmp_path / "data").mkdir(exist_ok=True)
    return ServingSettings(**values)


@pytest.fixture
def settings(registered: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServingSettings:
    monkeypatch.delenv("SPARKPIPE_API_KEY", raising=False)
    return make_settings(registered, tmp_path)


@pytest.fixture
def client(settings: ServingSettings) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def spark_predictions(
    spark: Any, store: dict[str, Any], name: str, version: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What Spark's own transform answers for ``rows`` (the parity reference)."""
    from pyspark.ml import PipelineModel

    from sparkpipe.tracking import Registry

    reg = Registry(store["cfg"].mlflow)
    path = reg.download(reg.resolve(f"{name}/{version}"), cache_dir=store["root"] / "cache")
    model = PipelineModel.load(str(path / "sparkml"))
    df = spark.createDataFrame(
        [(r["plan"], float(r["age"]), int(r["calls"])) for r in rows], "plan string, age double, calls long"
    )
    return [
        {"prediction": r.prediction, "probability": r.probability.toArray().tolist()}
        for r in model.transform(df).select("prediction", "probability").collect()
    ]


# ------------------------------------------------------------------------------- fake job functions
def quick_job(payload: dict[str, Any]) -> dict[str, Any]:
    """A job that succeeds at once, echoing a little of its payload."""
    time.sleep(float(payload.get("sleep", 0)))
    return {
        "run_id": "fake",
        "metrics": {"accuracy": 0.91},
        "registered_name": "fake_model",
        "registered_version": "1",
        "echo": json.dumps(sorted(payload)),
    }


def failing_job(payload: dict[str, Any]) -> dict[str, Any]:
    """A job that fails with a clear message."""
    raise RuntimeError("training exploded on purpose")


def crashing_job(payload: dict[str, Any]) -> dict[str, Any]:
    """A job whose process dies without reporting (like a JVM crash)."""
    os._exit(3)
