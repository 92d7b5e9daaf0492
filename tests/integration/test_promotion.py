"""The promotion gate (issue 13 item 1): a new version becomes champion only when it beats the
champion on the same held-out rows and reads the same inputs; otherwise it is the challenger, and the
output and the model's alias history say why. Through the CLI entry point, in-process on the session
SparkSession, one MLflow store per test."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparkpipe.cli import app

from .test_run_path import _config

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _champion_and_challenger(uri: str, name: str) -> tuple[str | None, str | None]:
    from mlflow import MlflowClient

    aliases = {
        k: str(v) for k, v in MlflowClient(tracking_uri=uri).get_registered_model(name).aliases.items()
    }
    return aliases.get("champion"), aliases.get("challenger")


def test_the_gate_keeps_the_better_champion_holds_another_schema_and_promote_forces(
    spark, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = _config(
        tmp_path,
        "out",
        "churn_gate",
        model={"algorithm": "logistic_regression", "hyperparameters": {"maxIter": 20}},
        evaluation={"threshold": None},
    )
    runner = CliRunner()

    first = runner.invoke(app, ["run", "--config", str(path), "--json"])
    assert first.exit_code == 0, first.output
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["promotion"]["decision"] == "champion" and "first version" in record["promotion"]["reason"]
    assert _champion_and_challenger(uri, "churn_gate") == ("1", None)

    # a weaker algorithm on the same data: held as challenger, the champion stays
    second = runner.invoke(app, ["run", "--config", str(path), "--set", "model.algorithm=naive_bayes"])
    assert second.exit_code == 0, second.output
    assert "→ challenger" in second.output and "promotion gate:" in second.output
    gate = json.loads((tmp_path / "out" / "run.json").read_text())["promotion"]
    assert gate["decision"] == "challenger" and gate["metric"] == "test_auc_roc"
    assert gate["new_value"] < gate["champion_value"]  # the champion was scored on the same test rows
    assert gate["champion_version"] == "1" and "worse" in gate["reason"]
    assert _champion_and_challenger(uri, "churn_gate") == ("1", "2")

    # --promote forces it, whatever the metric
    forced = runner.invoke(
        app, ["run", "--config", str(path), "--set", "model.algorithm=naive_bayes", "--promote"]
    )
    assert forced.exit_code == 0, forced.output
    assert "forced by --promote" in forced.output
    assert _champion_and_challenger(uri, "churn_gate") == ("3", "2")

    # --no-promote holds even a first-rate model
    held = runner.invoke(app, ["run", "--config", str(path), "--no-promote"])
    assert held.exit_code == 0, held.output
    assert _champion_and_challenger(uri, "churn_gate") == ("3", "4")

    # fewer input columns (a client sending the old 11 columns would still be fine, but one that sends
    # only these would get 422 from the champion): held, whatever its metric
    narrower = runner.invoke(
        app, ["run", "--config", str(path), "--set", "features.exclude=[age,region,plan]"]
    )
    assert narrower.exit_code == 0, narrower.output
    gate = json.loads((tmp_path / "out" / "run.json").read_text())["promotion"]
    assert gate["decision"] == "challenger"
    assert "input schema differs from champion v3" in gate["reason"] and "age" in gate["reason"]
    assert _champion_and_challenger(uri, "churn_gate") == ("3", "5")

    # the history (sparkpipe models history) shows every move with the gate's reason
    history = runner.invoke(
        app, ["models", "history", "churn_gate", "--set", f"mlflow.tracking_uri={uri}", "--json"]
    )
    assert history.exit_code == 0, history.output
    moves = json.loads(history.output)
    moves = moves["history"] if isinstance(moves, dict) else moves
    pairs = [(m["alias"], m["to"]) for m in sorted(moves, key=lambda m: m["time"])]
    assert pairs == [
        ("champion", "1"),
        ("challenger", "2"),
        ("champion", "3"),
        ("challenger", "4"),
        ("challenger", "5"),
    ]
    assert all(m["reason"].startswith("promotion gate:") for m in moves)
