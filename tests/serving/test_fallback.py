"""A pipeline with a stage that has no NumPy twin (SQLTransformer) is served by the warm Spark
fallback with micro-batching: same answers as Spark's transform, and ``/models`` says so."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sparkpipe.serving.app import create_app

from .conftest import FALLBACK_MODEL, MODEL, make_settings

ROWS = [
    {"plan": "pro", "age": 33.5, "calls": 4},
    {"plan": "basic", "age": 61.0, "calls": 9},
    {"plan": "unseen", "age": 20.0, "calls": 0},
]


def test_fallback_matches_spark(spark: Any, registered: dict[str, Any], tmp_path: Any) -> None:
    from pyspark.ml import PipelineModel

    from sparkpipe.tracking import Registry

    settings = make_settings(registered, tmp_path, model_name=FALLBACK_MODEL)
    with TestClient(create_app(settings)) as c:
        assert c.get("/ready").status_code == 200
        info = c.get(f"/models/{FALLBACK_MODEL}").json()["loaded"][0]
        assert info["serving_path"] == "spark-fallback"
        assert (
            any("SQLTransformer" in s for s in info.get("unsupported_stages", []))
            or info["unsupported_stages"] == []
        )
        r = c.post("/predict", json={"instances": ROWS})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        results: list[int] = []

        def one(row: dict[str, Any]) -> None:  # concurrent requests share Spark jobs
            results.append(c.post("/predict", json={"features": row}).status_code)

        threads = [threading.Thread(target=one, args=(ROWS[i % 3],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 8
        assert c.post("/predict", json={"features": ["pro", "x", 1]}).status_code == 422
        inv = c.post("/invocations", json={"dataframe_records": ROWS}).json()
        assert 'path="spark-fallback"' in c.get("/metrics").text
        # omitted columns are missing values on both paths: the fallback and the NumPy twin of the same
        # fitted stages (churn_lr, not configured here: loaded on its first request) agree
        omitted = {"age": 33.5, "calls": 4}
        fb = c.post("/predict", json={"features": omitted})
        assert fb.status_code == 200, fb.text
        assert fb.json()["imputed_columns"] == ["plan"]
        twin = c.post("/predict", json={"model_id": MODEL, "features": omitted})
        assert twin.status_code == 200, twin.text
        assert twin.json()["model"] == MODEL and twin.json()["imputed_columns"] == ["plan"]
        fb_pred, twin_pred = fb.json()["predictions"][0], twin.json()["predictions"][0]
        assert fb_pred["prediction"] == twin_pred["prediction"]
        assert fb_pred["probability"] == pytest.approx(twin_pred["probability"], abs=1e-9)
    reg = Registry(registered["cfg"].mlflow)
    path = reg.download(reg.resolve(f"{FALLBACK_MODEL}/1"), cache_dir=registered["root"] / "cache")
    model = PipelineModel.load(str(path / "sparkml"))
    df = spark.createDataFrame(
        [(r["plan"], r["age"], r["calls"]) for r in ROWS] + [(None, 33.5, 4)],
        "plan string, age double, calls long",
    )
    *expected, null_row = model.transform(df).select("prediction", "probability", "rawPrediction").collect()
    assert fb_pred["probability"] == pytest.approx(null_row.probability.toArray().tolist(), abs=1e-12)
    for g, e in zip(got, expected, strict=True):
        assert g["prediction"] == e.prediction
        assert g["probability"] == pytest.approx(e.probability.toArray().tolist(), abs=1e-12)
        assert g["rawPrediction"] == pytest.approx(e.rawPrediction.toArray().tolist(), abs=1e-12)
    assert inv["predictions"] == [e.prediction for e in expected]
