"""Class imbalance: ``model.class_weight: balanced`` (Spark ``weightCol``) and ``evaluation.threshold:
auto`` (the F1-optimal threshold on validation, carried into the saved model and its NumPy plan).

Runs go through ``sparkpipe.cli.main(["run", ...])`` in-process on the built-in churn data (~20%
churners), reusing the session-scoped local[2] SparkSession.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sparkpipe.cli import main
from sparkpipe.config import build_config
from sparkpipe.errors import ConfigError

UTC = dt.UTC


# ------------------------------------------------------------------------------ config (no Spark)
def _cfg(**sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"data": {"input_path": "builtin:churn"}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


@pytest.mark.parametrize(
    ("raw", "field", "expect"),
    [
        (  # MLP's estimator has no weightCol
            _cfg(model={"algorithm": "mlp", "class_weight": "balanced"}),
            "model.class_weight",
            "logistic_regression",
        ),
        (  # a regression task has no classes
            _cfg(model={"algorithm": "linear_regression", "class_weight": "balanced"}),
            "model.class_weight",
            "classifiers only",
        ),
        (
            _cfg(model={"algorithm": "kmeans", "class_weight": "balanced"}),
            "model.class_weight",
            "classifiers only",
        ),
        (  # linear_svc has no probabilities
            _cfg(model={"algorithm": "linear_svc"}, evaluation={"threshold": "auto"}),
            "evaluation.threshold",
            "random_forest",
        ),
        (  # xgboost's Spark model has no thresholds Param
            _cfg(model={"algorithm": "xgboost"}, evaluation={"threshold": "auto"}),
            "evaluation.threshold",
            "thresholds Param",
        ),
        (
            _cfg(model={"algorithm": "linear_regression"}, evaluation={"threshold": "auto"}),
            "evaluation.threshold",
            "binary classifiers only",
        ),
        (
            _cfg(data={"validation_split": 0.0}, evaluation={"threshold": "auto"}),
            "evaluation.threshold",
            "data.validation_split",
        ),
        (
            _cfg(model={"hyperparameters": {"threshold": 0.3}}, evaluation={"threshold": "auto"}),
            "evaluation.threshold",
            "threshold",
        ),
        (
            _cfg(model={"class_weight": "balanced"}, compare={"algorithms": ["random_forest", "mlp"]}),
            "compare.algorithms[1]",
            "weightCol",
        ),
        (_cfg(model={"class_weight": "yes"}), "model.class_weight", "balanced"),
        (_cfg(evaluation={"threshold": 0.3}), "evaluation.threshold", "auto"),
    ],
    ids=[
        "mlp-no-weightcol",
        "regression-weights",
        "clustering-weights",
        "svc-no-probability",
        "xgboost-no-thresholds",
        "regression-threshold",
        "no-validation-split",
        "threshold-twice",
        "compare-mlp",
        "bad-class-weight",
        "bad-threshold",
    ],
)
def test_config_errors_name_the_field_and_the_fix(raw, field, expect):
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    paths = [p for p, _ in err.value.problems]
    assert any(p.startswith(field) for p in paths), err.value
    assert expect in str(err.value)


def test_supported_algorithms_pass_validation():
    for algorithm in (
        "logistic_regression",
        "random_forest",
        "gbt",
        "naive_bayes",
        "decision_tree",
        "xgboost",
    ):
        build_config(_cfg(model={"algorithm": algorithm, "class_weight": "balanced"}))
    for algorithm in ("logistic_regression", "random_forest", "gbt", "naive_bayes", "mlp", "decision_tree"):
        build_config(_cfg(model={"algorithm": algorithm}, evaluation={"threshold": "auto"}))


# ------------------------------------------------------------------------------------- with Spark
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow-imbalance")


def _run(tmp_path: Path, store: Path, name: str, model: dict, evaluation: dict | None = None) -> dict:
    cfg = {
        "spark": {"app_name": "sparkpipe-tests", "master": "local[2]"},
        "data": {
            "input_path": "builtin:churn",
            "rows": 3000,
            "output_path": str(tmp_path / name),
            "validation_split": 0.2,
            "test_split": 0.25,
        },
        "features": {"target": "churned"},
        "model": model,
        "evaluation": {"report": False, **(evaluation or {})},
        "mlflow": {
            "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
            "experiment_name": "imbalance-tests",
            "registered_model_name": name,
            "log_input_example": False,
        },
        "logging": {"level": "WARNING"},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["run", "--config", str(path), "--json"])
    return json.loads((tmp_path / name / "run.json").read_text())


def _mlflow_params(store: Path, run_id: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}").get_run(run_id).data.params


@pytest.mark.spark
@pytest.mark.slow
def test_balanced_class_weight_raises_churn_recall(spark, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = _run(tmp_path, store, "churn_plain", {"algorithm": "logistic_regression"})
    balanced = _run(
        tmp_path, store, "churn_balanced", {"algorithm": "logistic_regression", "class_weight": "balanced"}
    )
    assert balanced["metrics"]["test_recall"] > plain["metrics"]["test_recall"] + 0.1, (
        plain["metrics"],
        balanced["metrics"],
    )
    weights = balanced["lineage"]["class_weights"]
    assert set(weights) == {"0", "1"} and weights["1"] > 1.0 > weights["0"]
    # n / (2 n_c) for each class: the weighted classes are equal in total
    assert "class_weights" not in plain["lineage"]
    params = _mlflow_params(store, balanced["run_id"])
    assert params["class_weight"] == "balanced"
    assert float(params["class_weight.1"]) == pytest.approx(weights["1"])
    assert _mlflow_params(store, plain["run_id"])["class_weight"] == "none"


@pytest.mark.spark
def test_balanced_weights_are_n_over_classes_times_count(spark):
    from sparkpipe.pipeline import (
        LABEL_COL,
        WEIGHT_COL,
        PreparedData,
        _training_columns,
        balanced_class_weights,
    )

    df = spark.createDataFrame([(float(i % 5 == 0), float(i)) for i in range(100)], [LABEL_COL, "x"])
    weights = balanced_class_weights(df)
    assert weights == pytest.approx({0.0: 100 / (2 * 80), 1.0: 100 / (2 * 20)})
    data = PreparedData(df, None, None, "classification", "y", None, {})
    out = _training_columns(df, "x", data, weights)
    assert out.columns == ["x", LABEL_COL, WEIGHT_COL]
    totals = {r[0]: r[1] for r in out.groupBy(LABEL_COL).sum(WEIGHT_COL).collect()}
    assert totals == pytest.approx({0.0: 50.0, 1.0: 50.0})


def _request_rows(spark: Any, columns: list[str]) -> Any:
    from sparkpipe.data.datasets import load_builtin

    return load_builtin(spark, "churn", rows=400, seed=11).select(columns)


@pytest.mark.spark
@pytest.mark.slow
def test_auto_threshold_is_recorded_and_served_identically(spark, store, tmp_path, monkeypatch):
    from sparkpipe.config import MlflowConfig
    from sparkpipe.pipeline import classifier_stage, load_spark_model
    from sparkpipe.scoring.compile import compile_pipeline
    from sparkpipe.tracking import Registry

    monkeypatch.chdir(tmp_path)
    run = _run(
        tmp_path,
        store,
        "churn_threshold",
        {
            "algorithm": "random_forest",
            "class_weight": "balanced",
            "hyperparameters": {"numTrees": 20, "maxDepth": 5},
        },
        {"threshold": "auto"},
    )
    chosen = run["decision_threshold"]
    t = chosen["threshold"]
    assert chosen["method"] == "auto" and 0.0 < t < 1.0 and t != 0.5
    assert chosen["f1"] >= chosen["f1_at_0_5"]
    params = _mlflow_params(store, run["run_id"])
    assert float(params["decision_threshold"]) == t and params["class_weight"] == "balanced"

    mcfg = MlflowConfig(tracking_uri=f"sqlite:///{store / 'mlflow.db'}", experiment_name="imbalance-tests")
    model, meta = load_spark_model("models:/churn_threshold@champion", mcfg)
    stage = classifier_stage(model)
    assert stage.getOrDefault("thresholds") == pytest.approx([1 - t, t])
    assert meta["decision_threshold"] == t

    registry = Registry(mcfg)
    compiled = compile_pipeline(registry.download(registry.resolve("churn_threshold@champion")))
    rows = _request_rows(spark, [n for n, _ in compiled.input_schema])  # no label, no weight column
    spark_out = model.transform(rows).select("probability", "prediction").collect()
    prob = np.array([r["probability"].toArray() for r in spark_out])
    want = np.array([r["prediction"] for r in spark_out])
    assert np.array_equal(want, (prob[:, 1] > t).astype(float))  # the saved model uses t, not 0.5
    assert (prob[:, 1] > 0.5).sum() != (prob[:, 1] > t).sum()  # and t changes some predictions
    records = [r.asDict() for r in rows.collect()]
    for rec in records:  # pyspark collects timestamps as naive local time
        for k, v in rec.items():
            if isinstance(v, dt.datetime) and v.tzinfo is None:
                rec[k] = v.astimezone(UTC)
    frame = compiled.transform(compiled.frame_from_records(records))
    assert np.array_equal(np.asarray(frame["prediction"], dtype=np.float64), want)
    assert np.allclose(
        np.asarray(frame["probability"], dtype=np.float64).reshape(prob.shape), prob, atol=1e-9
    )


@pytest.mark.spark
def test_logistic_regression_takes_the_threshold_param(spark):
    from pyspark.ml import PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.linalg import Vectors

    from sparkpipe.pipeline import set_decision_threshold

    rows = [(Vectors.dense([i / 10]), float(i >= 12)) for i in range(20)]
    df = spark.createDataFrame(rows, ["features", "label"])
    model = PipelineModel(stages=[LogisticRegression(maxIter=20, regParam=0.5).fit(df)])
    set_decision_threshold(model, 0.9)
    out = model.transform(df).select("probability", "prediction").collect()
    prob1 = np.array([r["probability"][1] for r in out])
    assert np.array_equal(np.array([r["prediction"] for r in out]), (prob1 > 0.9).astype(float))
    assert ((prob1 > 0.5) & (prob1 <= 0.9)).any()  # rows the threshold flips


@pytest.mark.spark
def test_f1_optimal_threshold_from_bucketed_counts(spark):
    from pyspark.ml.linalg import Vectors

    from sparkpipe.evaluation import f1_optimal_threshold

    # positives at p = 0.35 and 0.8, negatives at 0.1 and 0.3: any t in [0.3, 0.35) separates them
    data = [(0.35, 1.0)] * 3 + [(0.8, 1.0)] * 2 + [(0.1, 0.0)] * 10 + [(0.3, 0.0)] * 5
    df = spark.createDataFrame([(Vectors.dense([1 - p, p]), y) for p, y in data], ["probability", "label"])
    out = f1_optimal_threshold(df, buckets=100)
    assert out["f1"] == 1.0 and 0.3 <= out["threshold"] < 0.35
    assert out["f1_at_0_5"] == pytest.approx(2 * 2 / (2 * 2 + 3))  # only the 0.8 positives at 0.5
    assert out["positives"] == 5 and out["rows"] == 20


@pytest.mark.spark
@pytest.mark.slow
def test_tuning_fits_every_candidate_with_the_weights(spark, tmp_path):
    from sparkpipe.pipeline import WEIGHT_COL, classifier_stage, fit_model, prepare_data

    cfg = build_config(
        {
            "data": {"input_path": "builtin:churn", "rows": 600, "output_path": str(tmp_path / "out")},
            "features": {"target": "churned"},
            "model": {"algorithm": "decision_tree", "class_weight": "balanced"},
            "tuning": {
                "enabled": True,
                "method": "train_validation_split",
                "param_grid": {"maxDepth": [2, 4]},
            },
            "mlflow": {"enabled": False},
        }
    )
    data = prepare_data(spark, cfg)
    try:
        fit = fit_model(spark, cfg, data)
        model = fit.model
        assert classifier_stage(model).getOrDefault("weightCol") == WEIGHT_COL
        assert fit.tuning and fit.class_weights["1"] > 1.0 > fit.class_weights["0"]
        # serving needs neither the label nor the weight column
        raw = data.test.drop("label", "churned")
        assert model.transform(raw).select("prediction").count() == raw.count()
    finally:
        data.release()
