"""Parity of the xgboost.spark twins (``XGBoostClassifierTwin`` / ``XGBoostRegressorTwin``) with Spark.

xgboost predicts in float32 (float32 features, float32 leaf sums, SciPy's float32 ``expit``/``softmax``
in xgboost.spark's Python code) and Spark stores those float32 values as doubles. The twins repeat the
same float32 steps, so every output column must be **identical** to Spark's, not just within 1e-9: on
dense rows with NaN (default directions), on sparse vectors (zeros are values under the default
``missing=NaN``; with ``missing=0`` every zero, stored or implicit, is missing), on infinities and values
beyond float32's range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .test_model_twins import N_FEAT, X_SCORE, X_TRAIN, Y_3, Y_BIN, Y_REG, _train_df, check_parity

pytest.importorskip("pyspark")
pytest.importorskip("xgboost")

pytestmark = [pytest.mark.spark]

RNG = np.random.default_rng(11)
X_NAN = X_TRAIN.copy()
X_NAN[RNG.random(X_NAN.shape) < 0.15] = np.nan  # missing values at training: learned default directions
ODD = np.array(
    [
        np.full(N_FEAT, np.nan),
        [np.inf, -np.inf, np.nan, 0.0],
        [3.5e38, -3.5e38, 1e-46, -1e-46],  # beyond float32's range / below its smallest subnormal
        [1e-300, 0.0, -0.0, np.nan],
    ]
)
X_SCORE_NAN = np.vstack([X_NAN[:40], X_SCORE[40:], ODD])
SMALL = {"n_estimators": 12, "max_depth": 4, "num_workers": 1, "random_state": 3, "verbose": False}


def _fit(spark: Any, est_cls: str, x: np.ndarray, y: np.ndarray, sparse: bool = False, **params: Any) -> Any:
    import xgboost.spark as xs

    return getattr(xs, est_cls)(**{**SMALL, **params}).fit(_train_df(spark, x, y, sparse=sparse))


def _exact(res: dict[str, Any]) -> None:
    """Beyond check_parity's 1e-9: the twin reproduces Spark's doubles bit for bit."""
    assert all(d == 0.0 for d in res["diffs"].values()), res["diffs"]


@pytest.fixture(scope="module")
def binary_model(spark):
    return _fit(spark, "SparkXGBClassifier", X_NAN, Y_BIN)


def test_binary_classifier_dense_sparse_and_output_columns(spark, binary_model, tmp_path, record_property):
    model = binary_model
    res = check_parity(spark, model, tmp_path / "dense", X_SCORE_NAN, record=record_property)
    _exact(res)
    assert type(res["twin"]).__name__ == "XGBoostClassifierTwin" and res["twin"].trees.num_trees == 12
    # the same rows as sparse vectors: NaN is stored, zeros are implicit but still values (missing=NaN)
    _exact(check_parity(spark, model, tmp_path / "sparse", X_SCORE_NAN, sparse=True, record=record_property))
    # output columns switched off the Spark way (empty names), prediction renamed
    model = model.copy()
    model._set(rawPredictionCol="", predictionCol="pred")
    _exact(check_parity(spark, model, tmp_path / "cols", X_SCORE_NAN, record=record_property))


def test_pipeline_with_xgboost_stage_saves_and_reloads(spark, binary_model, tmp_path):
    """A PipelineModel holding the xgboost stage saves and loads back with identical predictions."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.functions import vector_to_array

    rows = [(i, *[float(v) for v in r]) for i, r in enumerate(X_SCORE_NAN)]
    cols = [f"c{j}" for j in range(N_FEAT)]
    df = spark.createDataFrame(rows, ["rid", *cols])
    assembler = VectorAssembler(inputCols=cols, outputCol="features", handleInvalid="keep")
    pipeline = PipelineModel(stages=[assembler, binary_model])

    def scored(m: Any) -> list[tuple]:
        out = m.transform(df).select("rid", "prediction", vector_to_array("probability").alias("p"))
        return sorted((r.rid, r.prediction, tuple(r.p)) for r in out.collect())

    path = tmp_path / "pipeline"
    pipeline.write().overwrite().save(str(path))
    loaded = PipelineModel.load(str(path))
    assert type(loaded.stages[-1]).__name__ == "SparkXGBClassifierModel"
    assert scored(loaded) == scored(pipeline)


def test_multiclass_classifier(spark, tmp_path, record_property):
    model = _fit(spark, "SparkXGBClassifier", X_NAN, Y_3)
    res = check_parity(spark, model, tmp_path / "dense", X_SCORE_NAN, record=record_property)
    _exact(res)
    assert res["twin"].num_classes == 3 and res["frame"]["probability"].shape[1] == 3


def test_regressor(spark, tmp_path, record_property):
    model = _fit(spark, "SparkXGBRegressor", X_NAN, Y_REG, learning_rate=0.2)
    res = check_parity(spark, model, tmp_path / "dense", X_SCORE_NAN, record=record_property)
    _exact(res)
    assert type(res["twin"]).__name__ == "XGBoostRegressorTwin"


def test_zero_means_missing_with_sparse_data_optim(spark, tmp_path, record_property):
    """``missing=0`` and ``enable_sparse_data_optim``: xgboost.spark reads vectors as CSR; every zero,
    stored or implicit, takes the default direction (and 1e-300, zero once cast to float32)."""
    x = np.nan_to_num(X_TRAIN, nan=0.0)
    model = _fit(
        spark, "SparkXGBClassifier", x, Y_BIN, sparse=True, missing=0.0, enable_sparse_data_optim=True
    )
    score = np.vstack([x[:40], X_SCORE[40:], [[1e-300, 0.0, -0.0, 2.0], [np.inf, 0.0, 0.0, -np.inf]]])
    res = check_parity(spark, model, tmp_path / "sparse", score, sparse=True, record=record_property)
    _exact(res)
    assert res["twin"].missing == 0.0
    # dense vectors through the same CSR path: explicit zeros are missing too
    _exact(check_parity(spark, model, tmp_path / "dense", score, record=record_property))


def test_twin_reads_the_saved_booster_without_xgboost(spark, binary_model, tmp_path):
    """The twin module never imports xgboost or pyspark: compile and score in a clean interpreter."""
    import subprocess
    import sys
    import textwrap

    from pyspark.ml import PipelineModel

    path = Path(tmp_path) / "m"
    PipelineModel(stages=[binary_model]).write().overwrite().save(str(path))
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from sparkpipe.scoring.compile import compile_pipeline
        plan = compile_pipeline({str(path)!r}, input_schema=[("features", "vector")])
        out = plan.predict([{{"features": [0.1, float("nan"), -2.0, 3.0]}}])
        assert "xgboost" not in sys.modules and "pyspark" not in sys.modules, sorted(
            m for m in sys.modules if m.startswith(("xgboost", "pyspark"))
        )
        print("ok", out)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")
