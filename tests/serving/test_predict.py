"""``/predict`` and ``/invocations`` against a real registered model: every body form, parity with
Spark, and the errors every bad input gets (4xx naming the field, never a 500)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import MODEL, spark_predictions

ROWS = [
    {"plan": "pro", "age": 33.5, "calls": 4},
    {"plan": "basic", "age": 61.0, "calls": 9},
    {"plan": "unseen", "age": 20.0, "calls": 0},
]


def test_health_and_ready(client: Any) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.json()["default"] == f"{MODEL}/1"


def test_readme_body_list_in_schema_order(client: Any, spark: Any, registered: dict[str, Any]) -> None:
    r = client.post("/predict", json={"model_id": MODEL, "features": ["pro", 33.5, 4]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == MODEL and body["version"] == "1" and body["latency_ms"] >= 0
    expected = spark_predictions(spark, registered, MODEL, "1", ROWS[:1])
    assert body["predictions"][0]["prediction"] == expected[0]["prediction"]
    assert body["predictions"][0]["probability"] == pytest.approx(expected[0]["probability"], abs=1e-9)


def test_named_features_and_instances_match_spark(
    client: Any, spark: Any, registered: dict[str, Any]
) -> None:
    expected = spark_predictions(spark, registered, MODEL, "1", ROWS)
    one = client.post("/predict", json={"model_id": MODEL, "features": ROWS[1]}).json()
    assert one["predictions"][0]["probability"] == pytest.approx(expected[1]["probability"], abs=1e-9)
    mixed = [ROWS[0], ["basic", 61.0, 9], ROWS[2]]
    many = client.post("/predict", json={"model_id": f"{MODEL}@champion", "instances": mixed})
    assert many.status_code == 200, many.text
    preds = many.json()["predictions"]
    assert [p["prediction"] for p in preds] == [e["prediction"] for e in expected]
    for p, e in zip(preds, expected, strict=True):
        assert p["probability"] == pytest.approx(e["probability"], abs=1e-9)


def test_omitted_columns_are_missing_values(client: Any, spark: Any, registered: dict[str, Any]) -> None:
    """A named row may leave columns out: they are scored as nulls (imputed as in training) and the
    answer lists them; explicit nulls give the same prediction, and Spark agrees."""
    r = client.post("/predict", json={"model_id": MODEL, "features": {"age": 61.0, "calls": 9}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["imputed_columns"] == ["plan"]
    nulls = client.post("/predict", json={"features": {"plan": None, "age": 61.0, "calls": 9}}).json()
    assert "imputed_columns" not in nulls and nulls["predictions"] == body["predictions"]
    from pyspark.ml import PipelineModel

    from sparkpipe.tracking import Registry

    reg = Registry(registered["cfg"].mlflow)
    path = reg.download(reg.resolve(f"{MODEL}/1"), cache_dir=registered["root"] / "cache")
    df = spark.createDataFrame([(None, 61.0, 9)], "plan string, age double, calls long")
    expected = PipelineModel.load(str(path / "sparkml")).transform(df).first()
    assert body["predictions"][0]["prediction"] == expected.prediction
    assert body["predictions"][0]["probability"] == pytest.approx(list(expected.probability), abs=1e-9)
    many = client.post("/predict", json={"instances": [ROWS[0], {"age": 20.0}]}).json()
    assert many["imputed_columns"] == ["plan", "calls"] and len(many["predictions"]) == 2


def test_model_id_forms_and_default(client: Any) -> None:
    for ref in (MODEL, f"{MODEL}@champion", f"{MODEL}/1", f"models:/{MODEL}/1", None):
        body = {"features": ROWS[0]} if ref is None else {"model_id": ref, "features": ROWS[0]}
        r = client.post("/predict", json=body)
        assert r.status_code == 200, (ref, r.text)
        assert r.json()["version"] == "1"


def test_unknown_model_is_404_listing_known(client: Any) -> None:
    r = client.post("/predict", json={"model_id": "rf_v1", "features": [1.2, 3.4, 5.6]})
    assert r.status_code == 404
    assert "rf_v1" in r.json()["detail"] and MODEL in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"features": ["pro", 33.5]}, "features", ["3", "plan", "age", "calls"]),
        ({"features": ["pro", "old", 4]}, "features[1]", ["double", "string"]),
        ({"features": ["pro", 33.5, 4.5]}, "features[2]", ["integer", "long"]),
        ({"features": [1, 33.5, 4]}, "features[0]", ["string"]),
        ({"features": {"plan": "pro", "age": 33.5, "call": 1}}, "features.call", ["unknown", "'calls'"]),
        ({"instances": [ROWS[0], {**ROWS[1], "agee": 3}]}, "instances[1].agee", ["unknown", "'age'"]),
        ({"features": {"plan": "pro", "age": True, "calls": 1}}, "features.age", ["double", "boolean"]),
        ({"instances": [ROWS[0], {"plan": "pro", "age": "x", "calls": 1}]}, "instances[1].age", ["double"]),
        ({"instances": [ROWS[0], 5]}, "instances[1]", ["row"]),
        ({"instances": []}, "instances", ["at least one"]),
        ({"instances": [ROWS[0]] * 101}, "instances", ["max_batch_rows"]),
        ({"features": "pro,33,4"}, "features", ["list"]),
        ({"features": ROWS[0], "instances": [ROWS[0]]}, "features", ["either"]),
        ({"model_id": MODEL}, "features", ["required"]),
        ({"model_id": 5, "features": ROWS[0]}, "model_id", ["string"]),
        ({"features": ["pro", 1e308 * 10 if False else 10**400, 4]}, "features[1]", ["too large"]),
        ({"features": ROWS[0], "extra": 1}, "extra", ["unknown"]),
        ([1, 2, 3], "body", ["object"]),
    ],
)
def test_bad_bodies_name_the_field(client: Any, body: Any, field: str, words: list[str]) -> None:
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["errors"][0]["field"] == field
    for w in words:
        assert w in err["detail"], (w, err["detail"])
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b'{"features": [', {"content-type": "application/json"}, 400),
        (b"", {"content-type": "application/json"}, 400),
        (b'{"features": ["pro", NaN, 4]}', {"content-type": "application/json"}, 400),
        (b'{"features": ["pro", Infinity, 4]}', {"content-type": "application/json"}, 400),
        (b'{"features": ["pro", 1e999, 4]}', {"content-type": "application/json"}, 422),
        (b"[" * 100_000 + b"]" * 100_000, {"content-type": "application/json"}, 400),
        (b'{"features": ["pro", 3, 4]}', {"content-type": "text/plain"}, 415),
        (b"\xff\xfe", {"content-type": "application/json"}, 400),
    ],
)
def test_malformed_requests(client: Any, content: bytes, headers: dict[str, str], status: int) -> None:
    r = client.post("/predict", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["errors"][0]["field"]


def test_oversized_body_is_413(registered: dict[str, Any], tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from sparkpipe.serving.app import create_app

    from .conftest import make_settings

    app = create_app(make_settings(registered, tmp_path, max_body_bytes=2048))
    with TestClient(app, raise_server_exceptions=False) as c:
        big = {"instances": [ROWS[0]] * 200}
        r = c.post("/predict", json=big)
        assert r.status_code == 413
        assert "2048" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit applies while streaming
            for _ in range(100):
                yield b" " * 100

        r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_invocations_mlflow_protocol(client: Any, spark: Any, registered: dict[str, Any]) -> None:
    expected = [e["prediction"] for e in spark_predictions(spark, registered, MODEL, "1", ROWS)]
    cols = ["plan", "age", "calls"]
    bodies = [
        {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in ROWS]}},
        {
            "dataframe_split": {
                "columns": ["calls", "age", "plan"],
                "data": [[r["calls"], r["age"], r["plan"]] for r in ROWS],
            }
        },
        {"dataframe_records": ROWS},
        {"instances": ROWS},
        {"inputs": {c: [r[c] for r in ROWS] for c in cols}},
    ]
    for body in bodies:
        r = client.post("/invocations", json=body)
        assert r.status_code == 200, (body, r.text)
        assert r.json() == {"predictions": expected}
    csv = "plan,age,calls\n" + "\n".join(f"{r['plan']},{r['age']},{r['calls']}" for r in ROWS)
    r = client.post(f"/invocations?model_id={MODEL}/1", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}
    bad = client.post("/invocations", json={"dataframe_records": [{"plan": "pro", "age": "x", "calls": 1}]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "dataframe_records[0].age"
    assert client.post("/invocations", json={"foo": 1}).status_code == 422
    assert client.post("/invocations?model_id=nope", json={"instances": ROWS}).status_code == 404


def test_mlflow_client_unchanged(client: Any) -> None:
    """The payload MLflow's own client builds for a DataFrame is accepted as is."""
    import pandas as pd
    from mlflow.models.utils import convert_input_example_to_serving_input

    payload = convert_input_example_to_serving_input(pd.DataFrame(ROWS))
    r = client.post("/invocations", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 3


def test_metrics_after_traffic(client: Any) -> None:
    client.post("/predict", json={"features": ROWS[0]})
    client.post("/predict", json={"model_id": "nope", "features": ROWS[0]})
    text = client.get("/metrics").text
    assert (
        f'sparkpipe_requests_total{{method="POST",model="{MODEL}",route="/predict",status="200",version="1"}}'
        in text
    )
    assert "sparkpipe_request_duration_seconds_bucket" in text
    assert f'sparkpipe_predictions_total{{model="{MODEL}",path="numpy",version="1"}}' in text
    assert 'sparkpipe_errors_total{type="not_found"}' in text
    assert "sparkpipe_models_loaded 1.0" in text
