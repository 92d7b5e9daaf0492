"""The python_function flavor of sparkpipe's logged models (sparkpipe.pyfunc): MLflow's own consumers
score with the NumPy plan, with no JVM and no pyspark; a pipeline without twins falls back to Spark."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import FALLBACK_MODEL, MODEL, SCHEMA, spark_predictions, stop_process_group

ROWS = [
    {"plan": "pro", "age": 33.5, "calls": 4},
    {"plan": "basic", "age": 61.0, "calls": 9},
    {"plan": "unseen-plan", "age": 18.0, "calls": 0},
    {"plan": None, "age": 80.0, "calls": 12},
    {"plan": "max", "age": 45.2, "calls": 5},
]
COLUMNS = [n for n, _ in SCHEMA]


def _model_dir(store: dict[str, Any], ref: str) -> Path:
    from sparkpipe.tracking import Registry

    reg = Registry(store["cfg"].mlflow)
    return reg.download(reg.resolve(ref), cache_dir=store["root"] / "cache")


def _assert_same(got: list[float], probabilities: list[list[float]] | None, want: list[dict]) -> None:
    assert got == [w["prediction"] for w in want]
    if probabilities is not None:
        for p, w in zip(probabilities, want, strict=True):
            assert p == pytest.approx(w["probability"], abs=1e-9)


def test_logged_model_carries_both_flavors_and_the_scorer_requirements(registered: dict[str, Any]) -> None:
    path = _model_dir(registered, f"{MODEL}/1")
    meta = yaml.safe_load((path / "MLmodel").read_text())
    pyfunc, spark = meta["flavors"]["python_function"], meta["flavors"]["spark"]
    assert pyfunc["loader_module"] == "sparkpipe.pyfunc" and pyfunc["scorer"] == "numpy"
    assert pyfunc["data"] == spark["model_data"] == "sparkml"  # one saved pipeline, two loaders
    assert (path / pyfunc["code"] / "sparkpipe" / "scoring" / "compile.py").is_file()
    requirements = (path / "requirements.txt").read_text().split()
    assert not [r for r in requirements if r.startswith(("pyspark", "py4j"))], requirements
    assert {r.split(">")[0].split("=")[0] for r in requirements} >= {"mlflow", "numpy", "pyarrow", "scipy"}
    conda_pip = next(
        d["pip"]
        for d in yaml.safe_load((path / "conda.yaml").read_text())["dependencies"]
        if isinstance(d, dict)
    )
    assert conda_pip == requirements
    # the signature's inputs are unchanged; the output option is a param with the spark pyfunc's default
    inputs = json.loads(meta["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [
        ("plan", "string"),
        ("age", "double"),
        ("calls", "long"),
    ]
    params = json.loads(meta["signature"]["params"])
    assert params == [{"name": "output", "type": "string", "default": "prediction", "shape": None}]


def test_pyfunc_scores_without_java_or_pyspark(
    registered: dict[str, Any], spark: Any, tmp_path: Path, without_java: Any
) -> None:
    """``mlflow.pyfunc.load_model(uri).predict(df)`` in a process where no ``java`` is on PATH and
    pyspark cannot be imported (as in an environment built from the model's requirements)."""
    script = tmp_path / "score.py"
    script.write_text(
        """
import importlib.abc, json, sys

class NoSpark(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyspark", "py4j"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoSpark())
import mlflow.pyfunc
import pandas as pd

rows = json.loads(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
df = pd.DataFrame(rows, columns=["plan", "age", "calls"])
full = model.predict(df, params={"output": "full"})
print(json.dumps({
    "prediction": model.predict(df),
    "probability": full["probability"].tolist(),
    "full_columns": list(full.columns),
    "records": model.predict(rows[:2]),
    "spark_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j")),
    "sparkpipe_from": sys.modules["sparkpipe"].__file__,
}))
"""
    )
    out = subprocess.run(
        [sys.executable, str(script), json.dumps(ROWS), f"models:/{MODEL}@champion"],
        env=without_java(tmp_path, registered["tracking_uri"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["spark_modules"] == []
    # the scorer shipped inside the model was imported, not the project's source tree
    assert "/code/sparkpipe/" in got["sparkpipe_from"]
    want = spark_predictions(spark, registered, MODEL, "1", ROWS)
    _assert_same(got["prediction"], got["probability"], want)
    assert got["records"] == got["prediction"][:2]
    assert set(got["full_columns"]) == {"rawPrediction", "probability", "prediction"}


def test_stage_without_twin_falls_back_to_the_spark_pyfunc(
    registered: dict[str, Any], spark: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow.pyfunc
    import pandas as pd

    path = _model_dir(registered, f"{FALLBACK_MODEL}/1")
    meta = yaml.safe_load((path / "MLmodel").read_text())["flavors"]["python_function"]
    assert meta["scorer"] == "spark" and meta["no_twin"] == ["org.apache.spark.ml.feature.SQLTransformer"]
    assert any(r.startswith("pyspark==") for r in (path / "requirements.txt").read_text().split())
    with caplog.at_level("WARNING", logger="sparkpipe.pyfunc"):
        model = mlflow.pyfunc.load_model(str(path))
    assert "SQLTransformer" in caplog.text and "Spark" in caplog.text
    rows = [r for r in ROWS if r["plan"] is not None]
    got = model.predict(pd.DataFrame(rows, columns=COLUMNS))
    assert got == [w["prediction"] for w in spark_predictions(spark, registered, FALLBACK_MODEL, "1", rows)]


def test_mlflow_models_serve_answers_like_sparkpipe_serve_and_spark(
    registered: dict[str, Any], spark: Any, client: Any, tmp_path: Path, without_java: Any
) -> None:
    """A real ``mlflow models serve --env-manager local`` process on the registered champion."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "mlflow-serve.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=without_java(tmp_path, registered["tracking_uri"]),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    split = {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in ROWS]}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if http.get("/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            else:
                pytest.fail(
                    "mlflow models serve did not start: "
                    + (tmp_path / "mlflow-serve.log").read_text()[-3000:]
                )
            answer = http.post("/invocations", json={"dataframe_split": split})
            assert answer.status_code == 200, answer.text
            full = http.post("/invocations", json={"dataframe_records": ROWS, "params": {"output": "full"}})
            assert full.status_code == 200, full.text
            bad = http.post(
                "/invocations", json={"dataframe_records": ROWS, "params": {"output": "everything"}}
            )
            assert bad.status_code == 400 and "output" in bad.text and "full" in bad.text
    finally:
        if proc.poll() is None:
            stop_process_group(proc)
    predictions = answer.json()["predictions"]
    records = full.json()["predictions"]
    want = spark_predictions(spark, registered, MODEL, "1", ROWS)
    _assert_same(predictions, [r["probability"] for r in records], want)
    assert [r["prediction"] for r in records] == predictions
    ours = client.post("/invocations", json={"dataframe_split": split})
    assert ours.status_code == 200, ours.text
    assert ours.json()["predictions"] == predictions  # sparkpipe serve answers the same protocol
