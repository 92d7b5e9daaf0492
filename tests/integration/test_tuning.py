"""Tuning through ``sparkpipe run``: the original param_grid format and each search (grid, random,
Bayesian), with one MLflow child run per trial and the refit best model registered.

Runs in-process through ``sparkpipe.cli.main`` on the session-scoped local[2] SparkSession, on 1,500
rows of the built-in churn data with 2 folds and 4 trials.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from sparkpipe.cli import main

SPARK = {"app_name": "sparkpipe-tests", "master": "local[2]"}


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def assert_report_images(path: str | Path, expected: set[str]) -> None:
    """Every image the HTML references exists, is non-empty and decodes as a PNG; ``expected`` are shown."""
    from PIL import Image

    page = Path(path).read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)
    assert sources, "the report has no images"
    for src in sources:
        if src.startswith("data:image/png;base64,"):
            raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        else:  # a relative file next to the report
            file = Path(path).parent / src
            assert file.is_file(), f"missing image {src}"
            raw = file.read_bytes()
        assert raw.startswith(b"\x89PNG\r\n\x1a\n") and len(raw) > 1000
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
            assert img.size[0] > 100 and img.size[1] > 100
    figure_ids = set(re.findall(r'<figure id="([^"]+)"', page))
    assert expected <= figure_ids, f"missing plots: {expected - figure_ids}"


# --------------------------------------------------------------------------------- pure unit checks
def test_sample_space_is_seeded_and_respects_bounds():
    from sparkpipe.tuning import sample_space

    space = {
        "a": {"type": "int", "low": 20, "high": 100, "step": 10},
        "b": {"type": "loguniform", "low": 1e-4, "high": 1.0},
        "c": {"type": "uniform", "low": 0.5, "high": 1.0},
        "d": {"type": "choice", "values": ["x", [16, 8]]},
        "e": {"type": "int", "low": 1, "high": 1000, "log": True},
    }
    draws = [sample_space(space, np.random.default_rng(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = np.random.default_rng(1)
    many = [sample_space(space, rng) for _ in range(300)]
    assert {p["a"] for p in many} <= set(range(20, 101, 10)) and len({p["a"] for p in many}) == 9
    assert all(1e-4 <= p["b"] <= 1.0 and 0.5 <= p["c"] <= 1.0 and 1 <= p["e"] <= 1000 for p in many)
    assert sum(p["b"] < 1e-2 for p in many) > 100  # log-uniform puts half the mass below the geometric mid
    assert {json.dumps(p["d"]) for p in many} == {'"x"', "[16, 8]"}


def test_discretise_and_grid_points_follow_param_grid_builder_order():
    from sparkpipe.tuning import discretise, grid_points, grid_size

    grid = discretise(
        {
            "maxDepth": {"type": "int", "low": 3, "high": 12},
            "regParam": {"type": "loguniform", "low": 1e-4, "high": 1.0},
            "impurity": {"type": "choice", "values": ["gini", "entropy"]},
        }
    )
    assert grid["maxDepth"] == [3, 7, 12]
    assert grid["regParam"] == pytest.approx([1e-4, 1e-2, 1.0])
    points = grid_points(grid)
    assert len(points) == grid_size(grid) == 18
    assert points[0] == {"maxDepth": 3, "regParam": 1e-4, "impurity": "gini"}
    assert points[1]["impurity"] == "entropy"


def test_correlation_ratio_importance_finds_the_parameter_that_matters():
    from sparkpipe.tuning import param_importance

    trials = [
        {"state": "complete", "params": {"depth": d, "noise": n}, "mean": 0.5 + 0.1 * d + 0.001 * (n % 2)}
        for d, n in itertools.product(range(4), range(6))
    ]
    imp = param_importance({"trials": trials})
    assert imp["method"] == "correlation_ratio"
    assert imp["values"]["depth"] > 0.95 and abs(sum(imp["values"].values()) - 1) < 1e-9


# ------------------------------------------------------------------------------------ through the CLI
GRID = {"numTrees": [5, 10], "maxDepth": [3, 5]}
CASES = {
    # the original project's format, verbatim apart from sizes
    "grid": (
        "random_forest",
        {
            "model": {"hyperparameters": {"numTrees": 10, "maxDepth": 4}},
            "tuning": {
                "method": "cross_validation",
                "num_folds": 2,
                "parallelism": 2,
                "param_grid": {"random_forest": GRID},
            },
            "evaluation": {"report": True},
        },
    ),
    "random": (
        "decision_tree",
        {
            "tuning": {
                "search": "random",
                "num_folds": 2,
                "parallelism": 2,
                "max_trials": 4,
                "metric": "auc_pr",
                "search_space": {
                    "decision_tree": {
                        "maxDepth": {"type": "int", "low": 2, "high": 6},
                        "minInstancesPerNode": {"type": "int", "low": 1, "high": 30},
                        "impurity": {"type": "choice", "values": ["gini", "entropy"]},
                    }
                },
            }
        },
    ),
    "bayesian": (
        "decision_tree",
        {
            "tuning": {
                "search": "bayesian",
                "num_folds": 2,
                "parallelism": 2,
                "max_trials": 4,
                "timeout_minutes": 30,
                "search_space": {  # flat format: for model.algorithm
                    "maxDepth": {"type": "int", "low": 2, "high": 6},
                    "minInfoGain": {"type": "loguniform", "low": 1e-4, "high": 0.05},
                },
            }
        },
    ),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow-tuning")


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.parametrize("search", list(CASES))
def test_tuning_through_sparkpipe_run(spark, store, tmp_path, monkeypatch, search):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    algorithm, extra = CASES[search]
    name = f"tuning_{search}"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cfg = _deep_merge(
        {
            "spark": SPARK,
            "data": {
                "input_path": "builtin:churn",
                "rows": 1500,
                "output_path": str(tmp_path / "out"),
                "validation_split": 0.15,
                "test_split": 0.2,
            },
            "model": {"algorithm": algorithm},
            "tuning": {"enabled": True},
            "evaluation": {"classification": ["auc_roc", "auc_pr", "accuracy"], "report": False},
            "mlflow": {
                "tracking_uri": uri,
                "experiment_name": "tuning-tests",
                "registered_model_name": name,
                "log_input_example": False,
            },
            "logging": {"level": "WARNING"},
        },
        extra,
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["run", "--config", str(path), "--json"])
    run = json.loads((tmp_path / "out" / "run.json").read_text())

    summary = run["tuning"]
    assert summary["search"] == search and summary["num_trials"] == 4 and summary["num_folds"] == 2
    complete = [t for t in summary["trials"] if t["state"] == "complete"]
    assert complete and summary["num_failed"] == 0
    metric = summary["metric"]
    assert metric == {"grid": "auc_roc", "random": "auc_pr", "bayesian": "auc_roc"}[search]
    assert summary["best_score"] == pytest.approx(max(t["mean"] for t in complete))
    assert 0.5 < summary["best_score"] <= 1.0
    if search == "grid":
        assert sorted(tuple(sorted(t["params"].items())) for t in summary["trials"]) == sorted(
            tuple(sorted({"numTrees": a, "maxDepth": b}.items()))
            for a, b in itertools.product(*GRID.values())
        )
    else:
        assert len({json.dumps(t["params"], sort_keys=True) for t in summary["trials"]}) == 4
    for t in complete:
        assert len(t["fold_scores"]) == 2 and t["mean"] == pytest.approx(np.mean(t["fold_scores"]))

    # MLflow: the pipeline's run is the parent, one child run per trial
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(run["run_id"])
    assert parent.data.metrics["tuning_best_score"] == pytest.approx(summary["best_score"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run['run_id']}'"
    )
    assert len(children) == 4
    by_trial = {int(c.data.tags["sparkpipe.trial"]): c for c in children}
    assert sorted(by_trial) == [0, 1, 2, 3]
    for t in summary["trials"]:
        child = by_trial[t["number"]]
        assert child.data.tags["sparkpipe.trial_state"] == t["state"]
        for p, v in t["params"].items():
            assert child.data.params[p] == str(v)
        for i, score in enumerate(t["fold_scores"]):
            assert child.data.metrics[f"fold_{i}_{metric}"] == pytest.approx(score)
        if t["state"] == "complete":
            assert child.data.metrics[f"{metric}_mean"] == pytest.approx(t["mean"])
            assert child.data.metrics[f"{metric}_std"] == pytest.approx(t["std"])

    # the refit best model is the registered version, logged in the parent run
    assert run["registered_name"] == name and run["registered_version"]
    version = client.get_model_version(name, run["registered_version"])
    assert version.run_id == run["run_id"]
    assert parent.data.params["hyperparameters." + next(iter(summary["best_params"]))] == str(
        next(iter(summary["best_params"].values()))
    )
    assert "test_auc_roc" in run["metrics"]

    if search == "grid":
        assert run["report_path"] and Path(run["report_path"]).is_file()
        assert Path(run["report_path"]) == (tmp_path / "out" / "report.html").resolve()
        assert_report_images(
            run["report_path"],
            {
                "roc_curve",
                "precision_recall_curve",
                "confusion_matrix",
                "calibration",
                "tuning_history",
                "param_importance",
            },
        )
        artifacts = {a.path for a in client.list_artifacts(run["run_id"], "report")}
        assert {"report/report.html", "report/roc_curve.png", "report/tuning_history.png"} <= artifacts
    else:
        assert run["report_path"] is None


@pytest.mark.spark
def test_train_validation_split_and_timeout_stop_new_trials(spark):
    """Direct ``tune`` call: one split, and a timeout that lets only the first trial start."""
    from types import SimpleNamespace

    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.linalg import Vectors

    from sparkpipe.config import PipelineConfig
    from sparkpipe.models.algorithms import get_algorithm
    from sparkpipe.tuning import tune

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    rows = [(Vectors.dense(v), float(v[0] + 0.5 * rng.normal() > 0)) for v in x]
    train = spark.createDataFrame(rows, ["features", "label"]).cache()
    cfg = PipelineConfig.model_validate(
        {
            "model": {"algorithm": "logistic_regression"},
            "tuning": {
                "enabled": True,
                "method": "train_validation_split",
                "train_ratio": 0.7,
                "search": "random",
                "max_trials": 5,
                "parallelism": 1,
                "timeout_minutes": 0.0001,
            },
        }
    )
    spec = get_algorithm("logistic_regression", "classification")
    model, summary = tune(
        spark,
        cfg,
        spec,
        LogisticRegression(maxIter=5),
        train,
        SimpleNamespace(task="classification", label_labels=None),
    )
    assert summary["method"] == "train_validation_split" and summary["num_folds"] == 1
    assert summary["timed_out"] is True and summary["num_trials"] == 1
    trial = summary["trials"][0]
    assert trial["state"] == "complete" and len(trial["fold_scores"]) == 1
    assert model.getRegParam() == pytest.approx(trial["params"]["regParam"])
    assert summary["metric"] == "auc_roc" and summary["best_score"] > 0.7


@pytest.mark.spark
@pytest.mark.slow
def test_recommender_is_tuned_like_other_models(spark, store, tmp_path, monkeypatch):
    """ALS through the same search (random, 2 trials x 2 folds on rank and regParam, scored by RMSE);
    the refit best model is registered with its recommendation index, and a cold-start ``error``
    policy from the config is what the index records."""
    from sparkpipe.scoring.recommend import RecommendIndex
    from sparkpipe.tracking import Registry

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cfg = {
        "spark": SPARK,
        "data": {"input_path": "builtin:movielens", "output_path": str(tmp_path / "out"), "test_split": 0.2},
        "features": {"user_col": "userId", "item_col": "movieId", "target": "rating", "cold_start": "error"},
        "model": {"algorithm": "als", "hyperparameters": {"maxIter": 3}},
        "tuning": {
            "enabled": True,
            "search": "random",
            "num_folds": 2,
            "max_trials": 2,
            "metric": "rmse",
            "search_space": {
                "rank": {"type": "int", "low": 2, "high": 8},
                "regParam": {"type": "loguniform", "low": 0.01, "high": 0.5},
            },
        },
        "evaluation": {"recommendation": ["rmse"], "report": False},
        "mlflow": {
            "tracking_uri": uri,
            "experiment_name": "tuning-tests",
            "registered_model_name": "tuning_als",
            "log_input_example": False,
        },
        "logging": {"level": "WARNING"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["run", "--config", str(path), "--json"])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    summary = run["tuning"]
    assert summary["metric"] == "rmse" and summary["num_trials"] == 2 and summary["num_failed"] == 0
    complete = [t for t in summary["trials"] if t["state"] == "complete"]
    assert summary["best_score"] == pytest.approx(min(t["mean"] for t in complete))  # RMSE: lower wins
    best = next(t for t in complete if t["mean"] == summary["best_score"])
    assert summary["best_params"] == best["params"] and 2 <= best["params"]["rank"] <= 8
    assert 0 < run["metrics"]["test_rmse"] < 3 and run["registered_version"]
    registry = Registry(_mlflow_cfg(uri))
    local = Path(registry.download(registry.resolve(f"models:/tuning_als/{run['registered_version']}")))
    index = RecommendIndex.load(local)
    assert index is not None and index.cold_start == "error" and len(index.seen_users) > 0


def _mlflow_cfg(uri: str):
    from sparkpipe.config import MlflowConfig

    return MlflowConfig(tracking_uri=uri)
