"""Every registered algorithm x every built-in data set of its task, through the whole ``sparkpipe run``.

Not quality (tests/integration/test_pipeline.py checks sanity thresholds on larger data): this proves
that no algorithm/data combination breaks a step after training (explain, logging, registering, the
report), in particular multiclass data (``builtin:iris``), where a multinomial logistic regression once
failed the explain step after its version had been registered. The pairs that test_pipeline.py already
runs through ``sparkpipe run`` (asserting the same: no warnings, a registered version) are not run
twice; :func:`test_the_matrix_is_complete` proves the two together cover every pair. Tiny data and tiny
models keep it fast; every run shares the session's Spark and one MLflow store, in-process through
``sparkpipe.cli.main``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sparkpipe.cli import main
from sparkpipe.data.datasets import BUILTIN_DATASETS
from sparkpipe.models.algorithms import ALGORITHMS

from .test_pipeline import CASES as PIPELINE_CASES
from .test_pipeline import assert_registered_version_scores_identically

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROWS = 240  # generated data sets (churn, taxi, segments); the real ones keep their size
SMALL = {  # the fewest iterations/trees that still train a real model
    "random_forest": {"numTrees": 3, "maxDepth": 3},
    "gbt": {"maxIter": 3, "maxDepth": 2},
    "decision_tree": {"maxDepth": 3},
    "xgboost": {"n_estimators": 3, "max_depth": 2},
    "logistic_regression": {"maxIter": 10},
    "linear_svc": {"maxIter": 10},
    "mlp": {"maxIter": 10, "hidden_layers": [4]},
    "glm": {"maxIter": 5},
    "linear_regression": {"maxIter": 10},
    "kmeans": {"k": 3, "maxIter": 5},
    "bisecting_kmeans": {"k": 3, "maxIter": 5},
    "gmm": {"k": 3, "maxIter": 5},
    "als": {"maxIter": 3, "rank": 4},
}
MATRIX = sorted(
    (name, data, task)
    for (task, name) in ALGORITHMS
    for data, info in BUILTIN_DATASETS.items()
    if info.task == task
)
# (algorithm, data set) pairs test_pipeline.py runs through `sparkpipe run`
RUN_ELSEWHERE = {(case[0], case[1]) for case in PIPELINE_CASES} | {("als", "movielens")}
EXPLAINED = {"logistic_regression", "linear_svc", "linear_regression", "glm", "random_forest", "gbt"}
EXPLAINED |= {"decision_tree", "xgboost"}
CASES = [c for c in MATRIX if (c[0], c[1]) not in RUN_ELSEWHERE]


def test_the_matrix_is_complete():
    tasks_with_data = {info.task for info in BUILTIN_DATASETS.values()}
    assert {t for t, _ in ALGORITHMS} <= tasks_with_data  # every task has built-in data
    assert {(n, d) for n, d, _ in CASES} | RUN_ELSEWHERE == {(n, d) for n, d, _ in MATRIX}
    assert any(d == "iris" for _, d, _ in CASES)  # multiclass is covered here


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow-every")


def _config(tmp_path: Path, store: Path, name: str, data: str, task: str) -> Path:
    cfg = {
        "spark": {"app_name": "sparkpipe-tests", "master": "local[2]"},
        "data": {
            "input_path": f"builtin:{data}",
            "output_path": str(tmp_path / "out"),
            "validation_split": 0.0,  # one evaluated split is enough here
            "test_split": 0.3,
            "seed": 7,
        },
        "model": {"algorithm": name, "task_type": task, "hyperparameters": SMALL.get(name, {})},
        # the multiclass report is the interesting one; metrics and reports have their own tests
        "evaluation": {
            "report": data == "iris",
            "classification": ["accuracy", "f1"],
            "regression": ["rmse"],
            "clustering": ["silhouette"],
        },
        "mlflow": {
            "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
            "experiment_name": "every-algorithm",
            "registered_model_name": f"{data}_{name}",
        },
        "logging": {"level": "WARNING"},
    }
    if data in ("churn", "taxi", "segments"):  # generated: as small as we like
        cfg["data"]["rows"] = ROWS
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(("name", "data", "task"), CASES, ids=[f"{n}-{d}" for n, d, _ in CASES])
def test_every_algorithm_runs_on_every_builtin_data_set_of_its_task(
    spark, store, tmp_path, monkeypatch, capsys, name, data, task
):
    if name == "xgboost":
        pytest.importorskip("xgboost")
    monkeypatch.chdir(tmp_path)
    path = _config(tmp_path, store, name, data, task)
    spec = ALGORITHMS[(task, name)]
    multiclass = data == "iris"
    if spec.binary_only and multiclass:  # refused with the fix, before anything is registered
        with pytest.raises(SystemExit) as exc:
            main(["run", "--config", str(path)])
        assert exc.value.code == 2
        assert "multiclass algorithm" in " ".join(capsys.readouterr().err.split())  # wrapped to the terminal
        assert not (tmp_path / "out" / "run.json").exists()
        return
    main(["run", "--config", str(path), "--json"])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["warnings"] == [], run["warnings"]  # explain and report succeeded
    assert run["registered_version"] and run["run_id"]
    if data == "iris":
        assert run["report_path"] and Path(run["report_path"]).is_file()
    if (name, data) == ("logistic_regression", "iris"):  # the multiclass model as served: Spark = NumPy
        assert_registered_version_scores_identically(spark, store, tmp_path, f"{data}_{name}", run, data)
    assert any(k.startswith("test_") for k in run["metrics"]), run["metrics"]
    if name in EXPLAINED:  # coefficients (a matrix for multinomial LR) or importances, per column
        rows = (tmp_path / "out" / "explain" / "feature_importance.csv").read_text().splitlines()
        assert rows[0].startswith("rank,column") and len(rows) > 1


def test_multinomial_logistic_regression_is_explained_from_its_coefficient_matrix(spark):
    """The explain step read ``stage.coefficients`` through hasattr(), which raises a Py4JJavaError
    (not an AttributeError) on a multinomial model."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler

    from sparkpipe.features.explain import explain_model

    rows = [(float(i % 3) + 0.1 * (i % 7), float(i % 5), float(i % 3)) for i in range(60)]
    df = spark.createDataFrame(rows, "a double, b double, label double")
    model = Pipeline(
        stages=[VectorAssembler(inputCols=["a", "b"], outputCol="features"), LogisticRegression(maxIter=5)]
    ).fit(df)
    lr = model.stages[-1]
    assert lr.numClasses == 3 and lr.coefficientMatrix.numRows == 3
    explanation = explain_model(model, ["a", "b"], ["a", "b"])
    assert explanation is not None and explanation.kind == "coefficients"
    matrix = lr.coefficientMatrix.toArray()
    by_column = {c: v for c, v, _ in explanation.columns}
    assert by_column["a"] == pytest.approx(abs(matrix[:, 0]).mean())
    assert by_column["b"] == pytest.approx(abs(matrix[:, 1]).mean())


def test_a_failing_explain_step_is_reported_before_the_model_is_published(
    spark, store, tmp_path, monkeypatch, capsys
):
    """Explain runs before registering: its failure is a warning in run.json, the MLflow run and the
    CLI output, and the registered model is complete (the run does not exit 1 after publishing)."""
    import sparkpipe.features.explain
    from sparkpipe.tracking import Tracker

    order: list[str] = []

    def broken_explain(*args, **kwargs):
        order.append("explain")
        raise RuntimeError("explain exploded on purpose")

    register = Tracker.register

    def recording_register(self, *args, **kwargs):
        order.append("register")
        return register(self, *args, **kwargs)

    monkeypatch.setattr(sparkpipe.features.explain, "explain_run", broken_explain)
    monkeypatch.setattr(Tracker, "register", recording_register)
    monkeypatch.chdir(tmp_path)
    path = _config(tmp_path, store, "logistic_regression", "iris", "classification")
    main(["run", "--config", str(path), "--json"])
    assert order == ["explain", "register"]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["registered_version"]
    [warning] = run["warnings"]
    assert "explain step failed" in warning and "explain exploded on purpose" in warning
    assert "explain exploded on purpose" in capsys.readouterr().err
