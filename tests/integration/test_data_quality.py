"""Data quality through the user path (``sparkpipe.cli.main(["run", ...])`` in-process).

Bad numbers are quarantined (not absorbed as text), concurrent runs keep their own ``run.json``,
Naive Bayes survives rows outside the training range, libsvm vectors are features, and
``missing_values`` ``none``/``drop`` fail with a sparkpipe error naming the setting and the count.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from sparkpipe.cli import main

pytestmark = pytest.mark.spark


def _config(tmp_path: Path, data: dict, extra: dict | None = None, mlflow: bool = False) -> Path:
    cfg = {
        "spark": {"app_name": "sparkpipe-tests", "master": "local[2]"},
        "data": {"output_path": str(tmp_path / "out"), **data},
        "mlflow": (
            {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "experiment_name": "dq",
                "registered_model_name": "dq_model",
            }
            if mlflow
            else {"enabled": False}
        ),
        "logging": {"level": "WARNING"},
        "evaluation": {"report": False},
    }
    for key, value in (extra or {}).items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(tmp_path: Path, data: dict, extra: dict | None = None, mlflow: bool = False) -> dict:
    main(["run", "--config", str(_config(tmp_path, data, extra, mlflow)), "--json"])
    return json.loads((tmp_path / "out" / "run.json").read_text())


def _fails(tmp_path: Path, capsys, data: dict, extra: dict | None = None) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", str(_config(tmp_path, data, extra))])
    assert exc.value.code == 1
    return " ".join(capsys.readouterr().err.split())


def _bad_churn_csv(path: Path) -> Path:
    """The issue's data: ten ``abc`` in monthly_charges and ten ``1.2.3`` in age, of 1,000 rows."""
    rng = np.random.default_rng(3)
    lines = ["customer_id,age,monthly_charges,tenure_months,plan,churned"]
    for i in range(1000):
        age, charges, tenure = rng.integers(18, 80), rng.uniform(20, 120), rng.integers(1, 72)
        churned = int(charges / 120 - tenure / 72 + rng.normal(0, 0.3) > 0)
        plan = ("basic", "standard", "premium")[i % 3]
        age_text = "1.2.3" if 500 <= i < 510 else f"{float(age)}"
        charges_text = "abc" if 5 <= i < 15 else f"{charges:.2f}"
        lines.append(f"C{i:05d},{age_text},{charges_text},{tenure},{plan},{churned}")
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------ issue 11 item 11: quarantine
@pytest.mark.slow
def test_bad_numbers_are_quarantined_counted_and_reported(spark, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    csv = _bad_churn_csv(tmp_path / "churn_bad.csv")
    config = _config(tmp_path, {"input_path": str(csv)}, {"features": {"target": "churned"}}, mlflow=True)
    main(["run", "--config", str(config)])
    out = capsys.readouterr().out
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    lineage = run["lineage"]
    assert lineage["columns"]["monthly_charges"] == "double" and lineage["columns"]["age"] == "double"
    assert lineage["quarantined_count"] == 20 and lineage["row_count"] == 980
    assert lineage["quarantined_by_reason"] == {"monthly_charges": 10, "age": 10}
    assert lineage["type_inference"]["text_despite_typed_values"] == {}
    # the quarantined rows carry their raw text and the reason
    rows = [json.loads(line) for f in Path(lineage["quarantine_path"]).glob("*.json") for line in f.open()]
    reasons = sorted({r["reason"] for r in rows})
    assert len(rows) == 20
    assert reasons == [
        "column 'age' (double): cannot convert '1.2.3'",
        "column 'monthly_charges' (double): cannot convert 'abc'",
    ]
    # the counts reach MLflow (metrics and the lineage artifact)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    metrics = client.get_run(run["run_id"]).data.metrics
    assert metrics["data.quarantined_rows"] == 20
    assert metrics["data.quarantined.monthly_charges"] == 10 and metrics["data.quarantined.age"] == 10
    logged = json.loads(Path(client.download_artifacts(run["run_id"], "data/lineage.json")).read_text())
    assert logged["quarantined_by_reason"] == {"monthly_charges": 10, "age": 10}
    summary = " ".join(out.split())
    assert "980 rows · 20 quarantined (age: 10, monthly_charges: 10)" in summary


def test_json_bad_numbers_are_quarantined_and_quoted_digits_stay_text(spark, tmp_path):
    from sparkpipe.config import DataConfig
    from sparkpipe.data.io import read_dataset

    path = tmp_path / "rows.json"
    with path.open("w") as fh:
        for i in range(200):
            fh.write(json.dumps({"x": "abc" if i < 5 else i * 0.5, "zip": f"{i:05d}", "n": i}) + "\n")
    res = read_dataset(spark, DataConfig(input_path=str(path), output_path=str(tmp_path / "out")))
    types = dict(res.df.dtypes)
    # quoted digits are JSON strings (Spark's parser would refuse them as numbers): they stay text
    assert types == {"n": "bigint", "x": "double", "zip": "string"}
    assert res.quarantined == 5 and res.lineage["quarantined_by_reason"] == {"x": 5}


def test_mostly_text_column_stays_text_with_a_loud_warning(spark, tmp_path, caplog):
    from sparkpipe.config import DataConfig
    from sparkpipe.data.io import read_dataset

    path = tmp_path / "codes.csv"
    lines = ["code,value"] + [f"{'A' + str(i) if i % 3 else i},{i}" for i in range(300)]
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="sparkpipe.data.io"):
        res = read_dataset(spark, DataConfig(input_path=str(path), output_path=str(tmp_path / "out")))
    assert dict(res.df.dtypes) == {"code": "string", "value": "int"}
    assert res.quarantined == 0 and res.lineage["row_count"] == 300
    assert list(res.lineage["type_inference"]["text_despite_typed_values"]) == ["code"]
    loud = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'code' IS READ AS TEXT" in m and "33%" in m for m in loud), loud


def test_type_inference_reads_a_bounded_sample(spark, tmp_path):
    """Types come from the first ``data.infer_rows`` rows; a bad value beyond them is quarantined."""
    from sparkpipe.config import DataConfig
    from sparkpipe.data.io import read_dataset

    path = tmp_path / "late.csv"
    path.write_text("a,b\n" + "".join(f"{i},x{i}\n" for i in range(500)) + "oops,y\n")
    res = read_dataset(
        spark, DataConfig(input_path=str(path), output_path=str(tmp_path / "out"), infer_rows=100)
    )
    assert dict(res.df.dtypes)["a"] == "int"
    assert res.lineage["type_inference"]["sample_rows"] == 100
    assert res.quarantined == 1 and res.lineage["quarantined_by_reason"] == {"a": 1}


# ------------------------------------------------------------------------- issue 11 item 12: run.json
def test_runs_sharing_an_output_path_keep_their_own_record(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = {"input_path": str(_nb_csv(tmp_path / "small.csv"))}
    first = _run(tmp_path, data, {"features": {"target": "y"}, "model": {"algorithm": "logistic_regression"}})
    second = _run(tmp_path, data, {"features": {"target": "y"}, "model": {"algorithm": "naive_bayes"}})
    runs = tmp_path / "out" / "runs"
    records = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/run.json")}
    assert len(records) == 2
    assert sorted(r["algorithm"] for r in records.values()) == ["logistic_regression", "naive_bayes"]
    latest = (runs / "latest").read_text().strip()
    assert records[latest]["algorithm"] == "naive_bayes" == second["algorithm"]
    assert first["record_path"] != second["record_path"]
    assert json.loads(Path(first["record_path"]).read_text())["algorithm"] == "logistic_regression"


def test_concurrent_record_writes_lose_nothing(tmp_path):
    from sparkpipe.config import PipelineConfig
    from sparkpipe.pipeline import RunResult, write_run_outputs

    cfg = PipelineConfig.model_validate({"data": {"output_path": str(tmp_path / "out")}})
    results = [
        RunResult(run_id=f"run{i:02d}", task="classification", algorithm="x", metrics={}) for i in range(16)
    ]
    barrier = threading.Barrier(len(results))

    def write(r):
        barrier.wait()
        write_run_outputs(cfg, r)

    threads = [threading.Thread(target=write, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = tmp_path / "out" / "runs"
    assert sorted(p.parent.name for p in runs.glob("*/run.json")) == [r.run_id for r in results]
    for r in results:
        assert json.loads((runs / r.run_id / "run.json").read_text())["run_id"] == r.run_id
    latest = (runs / "latest").read_text().strip()
    assert json.loads((tmp_path / "out" / "run.json").read_text())["run_id"] in {r.run_id for r in results}
    assert latest in {r.run_id for r in results}
    assert not [p for p in (tmp_path / "out").rglob(".*") if p.is_file()]  # no temp files left behind


# ---------------------------------------------------------------------- issue 12 item 9: Naive Bayes
def _nb_csv(path: Path) -> Path:
    rng = np.random.default_rng(11)
    n = 600
    x = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.3]
    y = (x[:, 0] + 0.2 * x[:, 1] > 0).astype(int)
    lines = ["x0,x1,x2,y"] + [f"{a:.6f},{b:.6f},{c:.6f},{t}" for (a, b, c), t in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_naive_bayes_multinomial_scores_rows_below_the_training_minimum(spark, tmp_path, monkeypatch):
    from pyspark.sql import functions as F

    from sparkpipe.config import PipelineConfig
    from sparkpipe.pipeline import prepare_data

    monkeypatch.chdir(tmp_path)
    data = {"input_path": str(_nb_csv(tmp_path / "nb.csv"))}
    extra = {"features": {"target": "y"}, "model": {"algorithm": "naive_bayes"}}
    cfg = PipelineConfig.model_validate(yaml.safe_load(_config(tmp_path, data, extra).read_text()))
    prepared = prepare_data(spark, cfg)
    cols = ["x0", "x1", "x2"]
    train_min = prepared.train.agg(*[F.min(c) for c in cols]).first()
    held_out = prepared.validation.unionByName(prepared.test)
    held_min = held_out.agg(*[F.min(c) for c in cols]).first()
    # the failure's precondition: held-out rows below the training minimum (min-max scaled < 0)
    assert any(h < t for h, t in zip(held_min, train_min, strict=True))
    prepared.release()
    run = _run(
        tmp_path,
        data,
        {**extra, "model": {"algorithm": "naive_bayes", "hyperparameters": {"modelType": "multinomial"}}},
    )
    assert run["algorithm"] == "naive_bayes" and 0.5 <= run["metrics"]["test_auc_roc"] <= 1.0


# -------------------------------------------------------------------------- issue 12 item 10: libsvm
def _libsvm_file(tmp_path: Path) -> Path:
    import pyspark

    shipped = Path(pyspark.__file__).parent / "data" / "mllib" / "sample_libsvm_data.txt"
    if shipped.is_file():
        return shipped
    rng = np.random.default_rng(5)  # a small stand-in with the same shape of line
    lines = []
    for i in range(120):
        label = i % 2
        idx = sorted(rng.choice(np.arange(1, 50), size=8, replace=False))
        vals = rng.integers(1, 255, size=8) * (1 + label)
        lines.append(f"{label} " + " ".join(f"{j}:{v}" for j, v in zip(idx, vals, strict=True)))
    path = tmp_path / "sample.libsvm"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_libsvm_vectors_are_features_and_the_served_model_scores_them(spark, tmp_path, monkeypatch):
    import mlflow

    from sparkpipe.errors import InputError
    from sparkpipe.scoring.compile import compile_pipeline

    monkeypatch.chdir(tmp_path)
    src = _libsvm_file(tmp_path)
    run = _run(
        tmp_path,
        {"input_path": str(src), "format": "libsvm"},
        {"features": {"target": "label"}, "model": {"algorithm": "logistic_regression"}},
        mlflow=True,
    )
    assert run["metrics"]["test_auc_roc"] > 0.8
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=run["model_uri"]))
    plan = compile_pipeline(local)  # input schema from the MLflow signature: a vector column
    assert plan.input_schema == [("features", "vector")]
    rows = spark.read.format("libsvm").load(str(src)).limit(5).collect()
    width = len(rows[0]["features"])
    spark_model = mlflow.spark.load_model(run["model_uri"])
    expected = (
        spark_model.transform(spark.createDataFrame(rows)).select("prediction", "probability").collect()
    )
    got = plan.predict([{"features": r["features"].toArray().tolist()} for r in rows])
    assert [g["prediction"] for g in got] == [e[0] for e in expected]
    np.testing.assert_allclose([g["probability"] for g in got], [e[1].toArray() for e in expected], atol=1e-9)
    with pytest.raises(InputError, match=f"features.*expected a vector of {width} numbers, got 3"):
        plan.predict([{"features": [1.0, 2.0, 3.0]}])
    # the prediction service: a vector input is a list of numbers; another width is a 4xx naming it
    from fastapi.testclient import TestClient

    from sparkpipe.serving.app import create_app
    from sparkpipe.serving.settings import ServingSettings

    settings = ServingSettings(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        model_name="dq_model",
        reload_interval_seconds=0,
        jobs_dir=str(tmp_path / "jobs"),
        model_cache_dir=str(tmp_path / "cache"),
        allowed_data_roots=[str(tmp_path)],
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = {"features": {"features": rows[0]["features"].toArray().tolist()}}
        ok = client.post("/predict", json=body)
        assert ok.status_code == 200, ok.text
        assert ok.json()["predictions"][0]["prediction"] == expected[0][0]
        bad = client.post("/predict", json={"features": {"features": [1.0, 2.0, 3.0]}})
        assert bad.status_code in (400, 422), bad.text
        assert "features" in bad.text and f"expected a vector of {width} numbers" in bad.text


# ------------------------------------------------------------------ issue 12 item 11: missing values
def _csv_with_nulls(path: Path, every_row: bool = False) -> Path:
    lines = ["a,b,y"]
    for i in range(200):
        a = "" if (i % 4 == 0) else str(i * 0.5)
        b = "" if (every_row and i % 4 != 0) else str(i % 7)
        lines.append(f"{a},{b},{i % 2}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_values_none_with_nulls_is_a_sparkpipe_error(spark, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = {"input_path": str(_csv_with_nulls(tmp_path / "nulls.csv"))}
    err = _fails(
        tmp_path, capsys, data, {"features": {"target": "y", "missing_values": {"strategy": "none"}}}
    )
    assert "features.missing_values.strategy is 'none'" in err
    assert "training rows have missing values (a:" in err
    assert "MUST NOT be NaN" not in err and "Traceback" not in err
    assert "median" in err and "drop" in err


def test_missing_values_drop_of_every_row_is_a_sparkpipe_error(spark, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = {"input_path": str(_csv_with_nulls(tmp_path / "nulls.csv", every_row=True))}
    err = _fails(
        tmp_path, capsys, data, {"features": {"target": "y", "missing_values": {"strategy": "drop"}}}
    )
    assert "features.missing_values.strategy: drop removed all" in err
    assert "Nothing has been added" not in err
    assert "a: " in err and "b: " in err and "median" in err
