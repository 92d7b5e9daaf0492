"""End to end: every algorithm of the registry through ``sparkpipe run`` on a built-in data set.

Runs in-process through the CLI entry point (``sparkpipe.cli.main``) so the session-scoped local[2]
SparkSession is reused; each run logs to a shared temporary SQLite MLflow store and registers a model.
Each sanity run's *registered* model is then loaded back from the registry and scored on fresh rows
plus nasty ones (nulls everywhere, unseen categories, out-of-range values): by Spark and by the NumPy
plan ``sparkpipe serve`` compiles from the same version; the two must agree (tests/scoring/parity.py).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from scoring.parity import assert_plan_matches_spark  # tests/ is on sys.path (the test packages' root)
from sparkpipe.cli import main

pytestmark = [pytest.mark.spark, pytest.mark.slow]

# (algorithm, data set, rows, extra config, metric, threshold, direction)
CASES = [
    # iterations capped where the default (100) goes on long after the test metric has settled: each
    # iteration is a Spark job
    (
        "logistic_regression",
        "churn",
        4000,
        {"model": {"hyperparameters": {"maxIter": 20}}},
        "test_auc_roc",
        0.80,
        "min",
    ),
    (
        "random_forest",
        "churn",
        4000,
        {"model": {"hyperparameters": {"numTrees": 20, "maxDepth": 5}}},
        "test_auc_roc",
        0.80,
        "min",
    ),
    (
        "gbt",
        "churn",
        4000,
        {"model": {"hyperparameters": {"maxIter": 5, "maxDepth": 3}}},
        "test_auc_roc",
        0.80,
        "min",
    ),
    ("naive_bayes", "churn", 4000, {}, "test_auc_roc", 0.75, "min"),
    (
        "linear_svc",
        "churn",
        4000,
        {"model": {"hyperparameters": {"maxIter": 20}}},
        "test_auc_roc",
        0.80,
        "min",
    ),
    ("mlp", "churn", 4000, {"model": {"hyperparameters": {"maxIter": 25}}}, "test_auc_roc", 0.80, "min"),
    (
        "linear_regression",
        "taxi",
        4000,
        {"model": {"hyperparameters": {"maxIter": 20}}},
        "test_r2",
        0.5,
        "min",
    ),
    (
        "random_forest",
        "taxi",
        4000,
        {"model": {"task_type": "regression", "hyperparameters": {"numTrees": 20, "maxDepth": 6}}},
        "test_r2",
        0.5,
        "min",
    ),
    (
        "gbt",
        "taxi",
        4000,
        {"model": {"task_type": "regression", "hyperparameters": {"maxIter": 8, "maxDepth": 4}}},
        "test_r2",
        0.5,
        "min",
    ),
    ("glm", "taxi", 4000, {}, "test_r2", 0.5, "min"),
    ("kmeans", "segments", 2000, {"model": {"hyperparameters": {"k": 4}}}, "test_silhouette", 0.5, "min"),
    (
        "bisecting_kmeans",
        "segments",
        2000,
        {"model": {"hyperparameters": {"k": 4}}},
        "test_silhouette",
        0.5,
        "min",
    ),
    ("gmm", "segments", 2000, {"model": {"hyperparameters": {"k": 4}}}, "test_silhouette", 0.5, "min"),
]


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow")


def _run(spark, store: Path, tmp_path: Path, cfg: dict, name: str) -> dict:
    base = {
        "spark": {"app_name": "sparkpipe-tests", "master": "local[2]"},
        # one evaluated split: the validation split has its own tests (tuning, compare, auto threshold)
        "data": {"output_path": str(tmp_path / "out"), "validation_split": 0.0, "test_split": 0.2},
        "mlflow": {
            "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
            "experiment_name": "tests",
            "registered_model_name": name,
        },
        "logging": {"level": "WARNING"},
        "evaluation": {"report": False},  # the HTML report has its own tests
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_deep_merge(base, cfg)))
    main(["run", "--config", str(path), "--json"])
    return json.loads((tmp_path / "out" / "run.json").read_text())


@pytest.mark.parametrize(
    ("algorithm", "dataset", "rows", "extra", "metric", "threshold", "direction"),
    CASES,
    ids=[f"{c[0]}-{c[1]}" for c in CASES],
)
def test_algorithm_reaches_sanity_threshold(
    spark, store, tmp_path, monkeypatch, algorithm, dataset, rows, extra, metric, threshold, direction
):
    monkeypatch.chdir(tmp_path)
    cfg = _deep_merge(
        {"data": {"input_path": f"builtin:{dataset}", "rows": rows}, "model": {"algorithm": algorithm}}, extra
    )
    name = f"{dataset}_{algorithm}"
    run = _run(spark, store, tmp_path, cfg, name)
    value = run["metrics"][metric]
    assert value >= threshold if direction == "min" else value <= threshold, f"{metric}={value}"
    assert run["run_id"] and run["registered_version"]
    assert run["warnings"] == []  # explain and every step after registering succeeded
    assert run["lineage"]["row_count"] > 0
    # the registered version, as serving loads it: Spark and the NumPy plan agree on fresh and nasty rows
    assert_registered_version_scores_identically(spark, store, tmp_path, name, run, dataset)


def assert_registered_version_scores_identically(spark, store, tmp_path, name, run, dataset) -> None:
    """The version's directory, as ``sparkpipe serve`` caches it: its ``PipelineModel`` loaded by Spark
    and its NumPy plan compiled from the same files score fresh (and, for churn, nasty) rows alike."""
    from pyspark.ml import PipelineModel

    from sparkpipe.data.datasets import BUILTIN_DATASETS, load_builtin
    from sparkpipe.scoring import compile_pipeline
    from sparkpipe.tracking import Registry

    registry = Registry(_mlflow_cfg(store))
    ref = registry.resolve(f"models:/{name}/{run['registered_version']}")
    local = Path(registry.download(ref))
    plan = compile_pipeline(local)
    model = PipelineModel.load(str(local / "sparkml"))
    generated = BUILTIN_DATASETS[dataset].synthetic
    fresh = load_builtin(spark, dataset, rows=200 if generated else None, seed=7)
    if dataset == "churn":
        nasty = nasty_churn_rows(spark, fresh)
        fresh = fresh.select([fresh[c].cast(t) for c, t in nasty.dtypes]).unionByName(nasty)
    assert_plan_matches_spark(plan, model, fresh.select([n for n, _ in plan.input_schema]))


def nasty_churn_rows(spark, like):
    """Rows a client may send: every feature missing; unseen categories, extreme numbers, far-future
    timestamps; a leap day at midnight and zeros."""
    from pyspark.sql.types import StructField, StructType

    rows = [
        dict.fromkeys(like.columns),
        {
            "customer_id": "x1",
            "signup_ts": dt.datetime(2099, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
            "last_login_ts": dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
            "age": 130,
            "is_senior": True,
            "plan": "platinum-unseen",
            "region": "mars",
            "payment_method": "barter",
            "tenure_months": 10_000,
            "monthly_charges": 1e9,
            "total_charges": -5.0,
            "support_calls": 999,
            "support_notes": "call me maybe " * 50,
            "churned": 1,
        },
        {
            "customer_id": "x2",
            "signup_ts": dt.datetime(2024, 2, 29, 0, 0, tzinfo=dt.UTC),
            "last_login_ts": dt.datetime(2024, 2, 29, 0, 0, tzinfo=dt.UTC),
            "age": 0,
            "is_senior": False,
            "plan": "",
            "region": "north",
            "payment_method": None,
            "tenure_months": 0,
            "monthly_charges": 0.0,
            "total_charges": 0.0,
            "support_calls": 0,
            "support_notes": "",
            "churned": 0,
        },
    ]
    nullable = StructType([StructField(f.name, f.dataType, True) for f in like.schema])
    return spark.createDataFrame([{c: r.get(c) for c in like.columns} for r in rows], nullable)


def test_als_beats_mean_rating_baseline(spark, store, tmp_path, monkeypatch):
    from pyspark.sql import functions as F

    from sparkpipe.data.datasets import load_builtin
    from sparkpipe.data.split import hash_split

    monkeypatch.chdir(tmp_path)
    run = _run(
        spark,
        store,
        tmp_path,
        {
            "data": {"input_path": "builtin:movielens", "validation_split": 0.0, "test_split": 0.2},
            "model": {"algorithm": "als", "hyperparameters": {"rank": 10, "maxIter": 10, "regParam": 0.1}},
        },
        "movielens_als",
    )
    # the baseline: predict the training mean rating for every test pair (the run's row-hash split)
    df = load_builtin(spark, "movielens")
    train, test = hash_split(df, [0.8, 0.2], seed=42)
    mean = train.agg(F.avg("rating")).first()[0]
    baseline = test.select(F.sqrt(F.avg((F.col("rating") - F.lit(mean)) ** 2))).first()[0]
    assert run["metrics"]["test_rmse"] < baseline, (run["metrics"]["test_rmse"], baseline)
    assert "test_ndcg_at_k" in run["metrics"] and "test_precision_at_k" in run["metrics"]
    assert run["warnings"] == [] and run["registered_version"]  # every step after training succeeded
    # rows per split are the split's rows, also where ALS drops cold-start pairs from its predictions
    assert run["lineage"]["test_rows"] == test.count()
    assert run["lineage"]["train_rows"] == train.count()


def test_breast_cancer_logistic_regression_matches_sklearn(spark, store, tmp_path, monkeypatch):
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from sparkpipe.data.datasets import load_builtin
    from sparkpipe.data.split import hash_split
    from sparkpipe.pipeline import load_spark_model

    monkeypatch.chdir(tmp_path)
    run = _run(
        spark,
        store,
        tmp_path,
        {
            "data": {"input_path": "builtin:breast_cancer", "validation_split": 0.0, "test_split": 0.25},
            "model": {
                "algorithm": "logistic_regression",
                "hyperparameters": {"regParam": 0.01, "maxIter": 200},
            },
        },
        "breast_cancer_lr",
    )
    # the same split as the run (the row-hash split with the same seed over the same data), by sklearn
    df = load_builtin(spark, "breast_cancer")
    train, test = hash_split(df, [0.75, 0.25], seed=42)
    feats = [c for c in df.columns if c != "label"]
    tr, te = train.toPandas(), test.toPandas()
    scaler = StandardScaler().fit(tr[feats])
    clf = LogisticRegression(C=1 / (0.01 * len(tr)), max_iter=5000).fit(
        scaler.transform(tr[feats]), tr["label"]
    )
    sk_acc = float(np.mean(clf.predict(scaler.transform(te[feats])) == te["label"]))
    ours = run["metrics"]["test_accuracy"]
    assert abs(ours - sk_acc) <= 0.02, (ours, sk_acc)
    # the registered version carries sparkpipe's metadata for later evaluation/serving
    _, meta = load_spark_model(f"models:/breast_cancer_lr/{run['registered_version']}", _mlflow_cfg(store))
    assert meta["task"] == "classification" and meta["target"] == "label"


def _mlflow_cfg(store: Path):
    from sparkpipe.config import MlflowConfig

    return MlflowConfig(tracking_uri=f"sqlite:///{store / 'mlflow.db'}", experiment_name="tests")


def test_registered_model_reloads_with_identical_predictions(spark, store, tmp_path, monkeypatch):
    """In-memory fitted model vs the same model logged, registered and loaded back (by alias, by
    version)."""
    from pyspark.ml.functions import vector_to_array

    from sparkpipe.config import build_config
    from sparkpipe.data.datasets import load_builtin
    from sparkpipe.pipeline import fit_model, load_spark_model, prepare_data
    from sparkpipe.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    cfg = build_config(
        {
            "data": {"input_path": "builtin:churn", "rows": 1500, "output_path": str(tmp_path / "out")},
            "model": {"algorithm": "random_forest", "hyperparameters": {"numTrees": 10, "maxDepth": 5}},
            "mlflow": {"tracking_uri": f"sqlite:///{store / 'mlflow.db'}", "experiment_name": "tests"},
        }
    )
    data = prepare_data(spark, cfg)
    model = fit_model(spark, cfg, data).model
    fresh = load_builtin(spark, "churn", rows=300, seed=7)

    def scored(m):
        out = m.transform(fresh).select(
            "customer_id", "prediction", vector_to_array("probability").alias("p")
        )
        return sorted((r.customer_id, r.prediction, tuple(r.p)) for r in out.collect())

    expected = scored(model)
    tracker = Tracker(cfg)
    with tracker.run(run_name="reload-check"):
        uri = tracker.log_spark_model(model)
        version = tracker.register(uri, "reload_check")
    loaded, _ = load_spark_model("models:/reload_check@champion", cfg.mlflow)
    assert scored(loaded) == expected
    loaded_v, _ = load_spark_model(f"reload_check/{version}", cfg.mlflow)
    assert scored(loaded_v) == expected


def test_malformed_csv_rows_are_quarantined_and_counted(spark, store, tmp_path, monkeypatch):
    """Bad rows end in quarantine with their count in the run, and the run still registers a model."""
    import random

    monkeypatch.chdir(tmp_path)
    rng = random.Random(0)
    lines = ["age,plan,spend,churned"]
    for _ in range(300):
        age, plan = rng.randint(18, 80), rng.choice(["basic", "pro", "max"])
        spend = round(rng.uniform(10, 200), 2)
        churned = int(spend > 120 or (plan == "basic" and age < 30))
        lines.append(f"{age},{plan},{spend},{churned}")
    bad = ["abc,basic,12.0,1", "44,pro,not-a-number,0", "33,basic,10.0,1,extra,fields", "55,pro"]
    for i, b in enumerate(bad):
        lines.insert(10 + i * 50, b)
    (tmp_path / "customers.csv").write_text("\n".join(lines) + "\n")
    cfg = {
        "data": {
            "input_path": str(tmp_path / "customers.csv"),
            "format": "csv",
            "schema": "age INT, plan STRING, spend DOUBLE, churned INT",
        },
        "features": {"target": "churned"},
        "model": {"algorithm": "logistic_regression"},
    }
    first = _run(spark, store, tmp_path, cfg, "quarantine_check")
    assert first["lineage"]["quarantined_count"] == len(bad)
    assert first["lineage"]["row_count"] == 300
    qdir = Path(tmp_path / "out" / "quarantine")
    quarantined = [line for f in qdir.rglob("*.json") for line in f.read_text().splitlines() if line.strip()]
    assert len(quarantined) == len(bad)
    assert first["registered_version"] == "1" and first["warnings"] == []
