"""Delta tables written through Spark's parquet files committed by delta-rs in one transaction
(:func:`sparkpipe.data.writers.commit_delta`): versions and time travel through sparkpipe's reader,
schema checks on append, idempotent commits per application transaction, lineage in the commit."""

from __future__ import annotations

import os

import pytest

from sparkpipe.config import DataConfig
from sparkpipe.data.io import read_dataset, write_dataset
from sparkpipe.data.writers import commit_delta
from sparkpipe.errors import DataError

pytestmark = pytest.mark.spark


def _read(spark, tmp_path, table, version=None):
    cfg = DataConfig(
        input_path=str(table), output_path=str(tmp_path / "out"), format="delta", version=version
    )
    return read_dataset(spark, cfg)


def test_append_makes_a_version_and_time_travel_reads_the_old_one(spark, tmp_path):
    from deltalake import DeltaTable

    table = tmp_path / "scored"
    v0 = spark.sql("SELECT id, CAST(id % 3 AS STRING) AS k, id * 0.5 AS score FROM range(0, 40)")
    v1 = spark.sql("SELECT id, CAST(id % 3 AS STRING) AS k, id * 0.5 AS score FROM range(40, 50)")
    write_dataset(v0.repartition(3), str(table), "delta", partition_by=["k"], delta_metadata={"who": "t"})
    write_dataset(v1, str(table), "delta", mode="append")
    dt = DeltaTable(str(table))
    assert dt.version() == 1
    history = dt.history()
    # one commit per write, each adding every file Spark wrote: no per-batch commits
    assert [h["operation"] for h in history] == ["WRITE", "CREATE TABLE"]
    assert history[-1].get("who") == "t"
    assert len(dt.file_uris()) >= 4 and not [
        p for p in os.listdir(table) if p.startswith(".sparkpipe-staging")
    ]
    old = _read(spark, tmp_path, table, version=0)
    assert old.lineage["delta_version"] == 0
    assert sorted(r.id for r in old.df.collect()) == list(range(40))
    new = _read(spark, tmp_path, table)
    assert new.lineage["delta_version"] == 1 and new.lineage["row_count"] == 50
    assert sorted((r.id, r.k) for r in new.df.collect()) == [(i, str(i % 3)) for i in range(50)]


def test_append_with_another_schema_names_the_columns(spark, tmp_path):
    table = tmp_path / "t"
    write_dataset(spark.sql("SELECT id, id * 1.0 AS score FROM range(3)"), str(table), "delta")
    other = spark.sql("SELECT CAST(id AS STRING) AS id, id AS extra FROM range(3)")
    with pytest.raises(DataError) as err:
        write_dataset(other, str(table), "delta", mode="append")
    msg = str(err.value)
    assert "missing from the data: score" in msg and "not in the table: extra" in msg
    assert "id (long in the table, string in the data)" in msg and "mode 'overwrite'" in msg
    # overwrite replaces data and schema in one new version
    write_dataset(other, str(table), "delta", mode="overwrite")
    back = _read(spark, tmp_path, table)
    assert back.lineage["delta_version"] == 1 and back.lineage["columns"] == {
        "id": "string",
        "extra": "bigint",
    }


def test_an_application_transaction_is_committed_once(spark, tmp_path):
    from deltalake import DeltaTable

    table = str(tmp_path / "stream_out")
    df = spark.sql("SELECT id FROM range(5)")
    first = commit_delta(df, table, app_transaction=("query-a", 0))
    again = commit_delta(df, table, app_transaction=("query-a", 0))  # a replayed batch
    other = commit_delta(df, table, app_transaction=("query-b", 0))  # another query, same batch id
    assert (first.version, first.rows, first.skipped) == (0, 5, False)
    assert again.skipped and again.version is None
    assert other.version == 1
    dt = DeltaTable(table)
    assert dt.transaction_version("query-a") == 0 and dt.count() == 10


@pytest.mark.slow
def test_a_run_records_the_delta_version_it_read(spark, tmp_path, monkeypatch):
    """``sparkpipe run`` on a Delta table at ``data.version: 0`` while the table is at version 1: the
    MLflow run names the table and the version it trained on (tag and lineage param)."""
    import json

    import mlflow
    import yaml

    from sparkpipe.cli import main

    monkeypatch.chdir(tmp_path)
    table = tmp_path / "customers"
    rows = "SELECT id, CAST(id % 50 AS DOUBLE) AS tenure, CAST(id % 7 AS DOUBLE) AS calls, "
    label = "CAST((id % 50) + 3 * (id % 7) > 40 AS INT) AS churned FROM range"
    write_dataset(spark.sql(f"{rows}{label}(0, 300)"), str(table), "delta")
    write_dataset(spark.sql(f"{rows}{label}(300, 320)"), str(table), "delta", mode="append")
    cfg = {
        "spark": {"app_name": "sparkpipe-tests", "master": "local[2]"},
        "data": {"input_path": str(table), "version": 0, "output_path": str(tmp_path / "out")},
        "features": {"target": "churned", "exclude": ["id"]},
        "model": {"algorithm": "logistic_regression", "hyperparameters": {"maxIter": 5}},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment_name": "delta"},
        "logging": {"level": "WARNING"},
        "evaluation": {"report": False},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    main(["run", "--config", str(tmp_path / "cfg.yaml"), "--json"])
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["lineage"]["delta_version"] == 0 and record["lineage"]["row_count"] == 300
    run = mlflow.MlflowClient(tracking_uri=cfg["mlflow"]["tracking_uri"]).get_run(record["run_id"])
    assert run.data.tags["sparkpipe.input_delta_version"] == "0"
    assert run.data.tags["sparkpipe.input_table"] == str(table)
    assert run.data.params["lineage.delta_version"] == "0"
