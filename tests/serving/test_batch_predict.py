"""``sparkpipe predict`` (the function ``/predict/batch`` jobs run too): CSV output of a classifier
flattens its probability vector into columns, Delta output reports the real row count, and input
without the model's columns is a one-line error naming them."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkpipe.cli import main

from .conftest import MODEL, spark_predictions

pytestmark = pytest.mark.spark

ROWS = [
    {"plan": "pro", "age": 33.5, "calls": 4},
    {"plan": "basic", "age": 61.0, "calls": 9},
    {"plan": "unseen", "age": 20.0, "calls": 0},
]


@pytest.fixture
def cli_cfg(registered: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"mlflow": {"tracking_uri": registered["tracking_uri"]}}))
    csv = "plan,age,calls\n" + "".join(f"{r['plan']},{r['age']},{r['calls']}\n" for r in ROWS)
    (tmp_path / "in.csv").write_text(csv)
    return str(path)


def _predict(cfg: str, tmp_path: Path, out: str, fmt: str, data: str = "in.csv") -> None:
    main(
        [
            "predict",
            "--model",
            f"models:/{MODEL}@champion",
            "--input",
            str(tmp_path / data),
            "--output",
            str(tmp_path / out),
            "--format",
            fmt,
            "--config",
            cfg,
        ]
    )


def test_csv_output_flattens_the_probability_vector(
    spark: Any, registered: dict[str, Any], cli_cfg: str, tmp_path: Path, capsys: Any
) -> None:
    import pandas as pd

    _predict(cli_cfg, tmp_path, "scored_csv", "csv")
    assert "scored 3 rows" in capsys.readouterr().out
    parts = sorted(glob.glob(str(tmp_path / "scored_csv" / "*.csv")))
    got = pd.concat([pd.read_csv(p) for p in parts]).sort_values("age").reset_index(drop=True)
    assert sorted(got.columns) == ["age", "calls", "plan", "prediction", "probability_0", "probability_1"]
    expected = spark_predictions(spark, registered, MODEL, "1", sorted(ROWS, key=lambda r: r["age"]))
    for (_, row), e in zip(got.iterrows(), expected, strict=True):
        assert row["prediction"] == e["prediction"]
        assert [row["probability_0"], row["probability_1"]] == pytest.approx(e["probability"], abs=1e-12)


def test_delta_output_prints_the_row_count(cli_cfg: str, tmp_path: Path, capsys: Any) -> None:
    from deltalake import DeltaTable

    _predict(cli_cfg, tmp_path, "scored_delta", "delta")
    out = " ".join(capsys.readouterr().out.split())
    assert "scored 3 rows" in out and "(Delta version 0)" in out and f"with {MODEL} version 1" in out, out
    dt = DeltaTable(str(tmp_path / "scored_delta"))
    table = dt.to_pyarrow_table()
    assert table.num_rows == 3 and table.schema.field("probability").type.value_type == "double"
    # the commit names the model version that wrote it (lineage in the table's own history)
    commit = dt.history()[0]
    assert (commit["sparkpipe.model_name"], commit["sparkpipe.model_version"]) == (MODEL, "1")


def test_scoring_a_delta_table_into_delta_is_an_mlflow_run_with_both_versions(
    registered: dict[str, Any], cli_cfg: str, tmp_path: Path, capsys: Any
) -> None:
    """Lineage in MLflow: which model version scored which version of the input table into which
    version of the output table (a second job appends a new output version and reads an older input)."""
    import pandas as pd
    from deltalake import write_deltalake
    from mlflow import MlflowClient

    table = tmp_path / "customers"
    write_deltalake(str(table), pd.DataFrame(ROWS))
    write_deltalake(str(table), pd.DataFrame(ROWS[:2]), mode="append")  # input version 1: 5 rows
    client = MlflowClient(tracking_uri=registered["tracking_uri"])
    runs = []
    for out in ("scored_a", "scored_b"):
        _predict(cli_cfg, tmp_path, out, "delta", data="customers")
        printed = " ".join(capsys.readouterr().out.split())
        run_id = printed.split("lineage: MLflow run ", 1)[1].split()[0]
        runs.append(client.get_run(run_id))
    tags, metrics = runs[0].data.tags, runs[0].data.metrics
    assert tags["sparkpipe.kind"] == "batch_predict" and runs[0].info.status == "FINISHED"
    assert (tags["sparkpipe.model_name"], tags["sparkpipe.model_version"]) == (MODEL, "1")
    assert tags["sparkpipe.input_delta_version"] == "1" and tags["sparkpipe.output_delta_version"] == "0"
    assert tags["sparkpipe.output_path"] == str(tmp_path / "scored_a")
    assert metrics["rows"] == 5 and metrics["quarantined"] == 0
    assert runs[1].data.tags["sparkpipe.output_path"] == str(tmp_path / "scored_b")


def test_input_without_the_model_columns_names_them(cli_cfg: str, tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "wrong.csv").write_text("plan,years\npro,3\n")
    with pytest.raises(SystemExit) as exc:
        _predict(cli_cfg, tmp_path, "never", "csv", data="wrong.csv")
    assert exc.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "missing column(s) age, calls" in err and "Traceback" not in err, err
    assert not (tmp_path / "never").exists()
