"""``sparkpipe compare``: leaderboard printed, logged to MLflow (a parent run, one child per algorithm),
winner registered and explained, comparison report written, and the winner published through the same
steps as ``sparkpipe run`` (issue 10's one run path): a ``run`` of the winning algorithm on the same
split gives the same model metadata and metrics. In-process through ``sparkpipe.cli.main`` on the
session SparkSession."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkpipe.cli import main

from .test_run_path import _config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SMALL = {"logistic_regression": {"maxIter": 10}, "random_forest": {"numTrees": 5, "maxDepth": 3}}
ALGORITHMS = list(SMALL)


def _metadata(uri: str, name: str, version: str) -> dict[str, Any]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.models.get_model_info(f"models:/{name}/{version}").metadata["sparkpipe"]


def _assert_report_images(path: Path, expected: set[str]) -> None:
    from PIL import Image

    page = path.read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)
    assert sources
    for src in sources:
        assert src.startswith("data:image/png;base64,"), "images are embedded (self-contained report)"
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) > 1000
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
    assert expected <= set(re.findall(r'<figure id="([^"]+)"', page))


def test_compare_ranks_logs_registers_reports_and_publishes_like_run(spark, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = _config(
        tmp_path,
        "out",
        "churn_best",
        compare={"bootstrap_samples": 5, "hyperparameters": SMALL},
        evaluation={"report": True},
    )
    from sparkpipe import cli

    # a terminal wide enough for the leaderboard (captured output has no terminal: rich assumes 80)
    monkeypatch.setattr(cli.console, "width", 200)
    main(["compare", "--config", str(path), "--algorithms", ",".join(ALGORITHMS)])
    printed = capsys.readouterr().out

    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    board = result["leaderboard"]
    assert [r["algorithm"] for r in board] != [] and sorted(r["algorithm"] for r in board) == sorted(
        ALGORITHMS
    )
    assert [r["rank"] for r in board] == [1, 2]
    scores = [r["score"] for r in board]
    assert scores == sorted(scores, reverse=True)  # auc_roc: larger is better
    assert result["metric"] == "auc_roc" and result["winner"] == board[0]["algorithm"]
    for r in board:
        assert 0.5 < r["score"] <= 1.0 and 0.5 < r["test_score"] <= 1.0
        assert r["score_std"] is not None and 0 < r["score_std"] < 0.2  # bootstrap spread, 5 resamples
        assert r["train_seconds"] > 0
        assert r["metrics"]["validation_auc_roc"] == pytest.approx(r["score"], abs=1e-9)

    # printed leaderboard
    assert "leaderboard" in printed and f"winner: {result['winner']}" in printed
    for algo in ALGORITHMS:
        assert algo in printed
    assert f"{board[0]['score']:.4f}" in printed

    # MLflow: parent run with the table and per-algorithm metrics, one child per algorithm
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(result["run_id"])
    assert parent.data.tags["sparkpipe.winner"] == result["winner"]
    for r in board:
        assert parent.data.metrics[f"{r['algorithm']}.validation_auc_roc"] == pytest.approx(r["score"])
        assert parent.data.metrics[f"{r['algorithm']}.rank"] == r["rank"]
    local = Path(client.download_artifacts(result["run_id"], "compare/leaderboard.json", str(tmp_path)))
    table = json.loads(local.read_text())
    assert table["columns"][:3] == ["rank", "algorithm", "validation_auc_roc"]
    assert [row[1] for row in table["data"]] == [r["algorithm"] for r in board]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'"
    )
    assert sorted(c.data.tags["sparkpipe.algorithm"] for c in children) == sorted(ALGORITHMS)
    for c in children:
        assert "validation_auc_roc" in c.data.metrics and "train_seconds" in c.data.metrics
    rf = next(c for c in children if c.data.tags["sparkpipe.algorithm"] == "random_forest")
    assert rf.data.params["hyperparameters.numTrees"] == "5"

    # the winner is registered from the parent run
    assert result["registered_name"] == "churn_best"
    version = client.get_model_version("churn_best", result["registered_version"])
    assert version.run_id == result["run_id"] and version.tags["algorithm"] == result["winner"]

    report = Path(result["report_path"])
    assert report == (tmp_path / "out" / "report.html").resolve()
    _assert_report_images(report, {"leaderboard", "roc_curve", "confusion_matrix"})
    assert "report/leaderboard.png" in {a.path for a in client.list_artifacts(result["run_id"], "report")}

    # the winner went through the same publish as a run: it is explained, and a run of the winning
    # algorithm on the same split publishes the same model metadata and metrics
    assert result["warnings"] == []
    assert (tmp_path / "out" / "explain" / "feature_importance.csv").is_file()
    winner = result["winner"]
    run_cfg = _config(
        tmp_path, "run", "single", model={"algorithm": winner, "hyperparameters": SMALL[winner]}
    )
    main(["run", "--config", str(run_cfg), "--json"])
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    from_compare = _metadata(uri, "churn_best", result["registered_version"])
    from_run = _metadata(uri, "single", run["registered_version"])
    assert from_compare["profile"] and from_compare["decision_threshold"] is not None
    assert from_compare.keys() == from_run.keys()
    for key in from_run:
        assert from_compare[key] == from_run[key], key
    for key, value in run["metrics"].items():
        assert board[0]["metrics"][key] == pytest.approx(value, abs=1e-9), key


def test_compare_needs_two_algorithms(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"input_path": "builtin:churn"}}))
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--config", str(path), "--algorithms", "random_forest"])
    assert exc.value.code == 2
    assert "at least two algorithms" in capsys.readouterr().err
