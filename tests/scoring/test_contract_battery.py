"""One contract battery for every registered custom stage and every registered algorithm.

Modelled on scikit-learn's ``parametrize_with_checks``: each entry of ``features.stages.CUSTOM_STAGES``
and of ``models.algorithms.ALGORITHMS`` gets the same checks, so a new stage or algorithm is covered
the moment it is registered (``test_battery_covers_every_registered_entry`` fails until it has a case):

* params round-trip: the unfitted stage saved and loaded has the same params;
* ``copy()``: an independent object with equal params; ``copy(extra)`` changes the copy only;
* save/reload of the fitted stage: same params, same ``transform`` output;
* the fitted stage has a NumPy twin under its saved class path, and the twin reproduces Spark's
  ``transform`` on rows with nulls, NaN, unseen categories and extreme values.

Deeper per-stage parity (every parameter combination) lives in ``test_custom_twins.py``,
``test_feature_twins.py`` and ``test_model_twins.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .parity import assert_parity

# Spark runs its generated code here (the suite's session interprets: see tests/conftest.py)
pytestmark = [pytest.mark.spark, pytest.mark.usefixtures("spark_codegen")]

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, 8, 0, tzinfo=UTC)

# ------------------------------------------------------------------------------------------- data


def _rows(n: int = 48) -> list[tuple]:
    """Training rows with a learnable label and every kind of awkward value in the tail."""
    cats = ["a", "b", "c", "a", "b", "a"]
    out = []
    for i in range(n):
        x1 = float(i % 7) - 3.0
        x2 = float((i * 5) % 11)
        label = 1.0 if x1 + 0.3 * x2 > 0.5 else 0.0
        out.append(
            (
                T0 + dt.timedelta(hours=17 * i),
                T0 + dt.timedelta(hours=17 * i + 5 * (i % 4)),
                cats[i % len(cats)],
                x1,
                x2,
                i % 3,
                label,
            )
        )
    return out


NASTY = [
    (None, None, None, None, None, None, 0.0),
    (dt.datetime(1969, 12, 31, 23, tzinfo=UTC), T0, "never-seen", math.nan, -1e12, 7, 1.0),
    (dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC), None, "", math.inf, 0.0, -2, 0.0),
    (T0, dt.datetime(2099, 12, 31, tzinfo=UTC), "b", -math.inf, 1e12, 0, 1.0),
]
SCHEMA = "ts timestamp, ts2 timestamp, cat string, x1 double, x2 double, n int, label double"


@pytest.fixture(scope="module")
def frames(spark) -> dict[str, Any]:
    train = spark.createDataFrame(_rows(), SCHEMA)
    nasty = spark.createDataFrame(_rows(12) + NASTY, SCHEMA)
    return {"train": train, "nasty": nasty}


# ------------------------------------------------------------------------------------- stage cases
def _stage_cases() -> dict[str, Callable[[], Any]]:
    from sparkpipe.features import stages as s

    return {
        "TimeFeatures": lambda: s.TimeFeatures(
            inputCols=["ts"], parts=["hour", "day_of_week", "month", "is_weekend"], cyclic=True
        ),
        "CastToDouble": lambda: s.CastToDouble(inputCols=["n"], outputCols=["n_dbl"]),
        "ConstantImputer": lambda: s.ConstantImputer(inputCols=["x1"], outputCols=["x1_imp"], fillValue=-1.0),
        "MissingIndicator": lambda: s.MissingIndicator(inputCols=["x1", "cat"], outputCols=["x1_m", "cat_m"]),
        "CategoricalImputer": lambda: s.CategoricalImputer(
            inputCols=["cat"], outputCols=["cat_f"], strategy="mode", fillValue="__missing__"
        ),
        "OutlierHandler": lambda: s.OutlierHandler(
            inputCols=["x2"], outputCols=["x2_clip"], method="iqr", threshold=1.5, action="clip"
        ),
        "SafeRatio": lambda: s.SafeRatio(leftCols=["x1"], rightCols=["x2"], outputCols=["x1_per_x2"]),
        "PairwiseProduct": lambda: s.PairwiseProduct(leftCols=["x1"], rightCols=["x2"], outputCols=["x1_x_x2"]),
        "ElapsedTime": lambda: s.ElapsedTime(startCols=["ts"], endCols=["ts2"], outputCols=["gap"], units=["hours"]),
        "RareCategoryGrouper": lambda: s.RareCategoryGrouper(inputCols=["cat"], outputCols=["cat_g"], minCount=10),
        "GroupAggregator": lambda: s.GroupAggregator(
            groupCols=["cat"], aggCols=["*", "x2"], functions=["count", "mean"], outputCols=["cnt", "x2_mean"]
        ),
        "ClipVector": lambda: s.ClipVector(inputCol="features", outputCol="clipped", lower=0.0, upper=2.0),
        "ImportanceSelector": lambda: s.ImportanceSelector(
            featuresCol="features", outputCol="selected", labelCol="label", k=2, task="classification",
            numTrees=5, seed=1,
        ),
    }  # fmt: skip


STAGE_CASES = _stage_cases()
NEEDS_VECTOR = {"ImportanceSelector", "ClipVector"}


def _with_features(df: Any) -> Any:
    """``df`` plus a dense ``features`` vector of x1, x2, n with nulls and NaN as 0 (selector input)."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    def clean(c: str) -> Any:
        v = F.col(c).cast("double")
        return F.when(v.isNull() | F.isnan(v) | (F.abs(v) == F.lit(math.inf)), 0.0).otherwise(v)

    return df.withColumn("features", array_to_vector(F.array(clean("x1"), clean("x2"), clean("n"))))


# ---------------------------------------------------------------------------------- the checks
def _params(stage: Any) -> dict[str, Any]:
    """A stage's explicitly set and default params by name (values made comparable)."""
    out = {}
    for p, v in stage.extractParamMap().items():
        if isinstance(v, float) and math.isnan(v):
            v = "NaN"  # xgboost's `missing` defaults to NaN, which never equals itself
        out[p.name] = list(v) if isinstance(v, tuple) else v
    return out


def _rows_of(df: Any, cols: list[str]) -> list[tuple]:
    """``cols`` of every row, in a canonical order: a transform that joins (ALS) does not keep the
    input's row order, so rows are compared as a sorted list (with the input columns in ``cols``, each
    output is compared with the output for the same input row)."""

    def norm(v: Any) -> Any:
        if hasattr(v, "toArray"):
            return tuple(np.asarray(v.toArray()).tolist())
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        return v

    return sorted((tuple(norm(r[c]) for c in cols) for r in df.select(*cols).collect()), key=repr)


def check_pyspark_metadata(stage: Any, path: Any) -> None:
    """A sparkpipe stage's ``metadata`` (written from the JVM, see ``features.stages.ParamsWriter``) is
    the file PySpark's ``DefaultParamsWriter`` writes: one part file holding the same JSON line."""
    from pyspark.ml.util import DefaultParamsWriter
    from pyspark.sql import SparkSession

    if not type(stage).__module__.startswith("sparkpipe."):
        return  # Spark's and xgboost's own writers
    parts = sorted((Path(path) / "metadata").glob("part-*"))
    assert len(parts) == 1, parts
    lines = parts[0].read_text().splitlines()
    assert len(lines) == 1, lines
    written = json.loads(lines[0])
    expected = json.loads(DefaultParamsWriter._get_metadata_to_save(stage, SparkSession.active()))
    assert written.pop("timestamp") > 0 and expected.pop("timestamp") > 0
    assert written == expected


def check_params_roundtrip(stage: Any, tmp_path: Any) -> None:
    path = str(tmp_path / f"unfitted-{stage.uid}")
    stage.write().overwrite().save(path)
    check_pyspark_metadata(stage, path)
    loaded = type(stage).load(path)
    assert loaded.uid == stage.uid
    assert _params(loaded) == _params(stage)


def check_copy(stage: Any) -> None:
    twin = stage.copy()
    assert twin is not stage and twin.uid == stage.uid
    assert _params(twin) == _params(stage)
    settable = next(
        (p for p in stage.params if p.name in ("outputCol", "outputCols", "predictionCol", "seed")), None
    )
    if settable is None:
        return
    before = _params(stage)
    value = stage.getOrDefault(settable)
    new = [f"{c}_copy" for c in value] if isinstance(value, list) else (
        value + 1 if isinstance(value, int) else f"{value}_copy"
    )  # fmt: skip
    changed = stage.copy({settable: new})
    assert changed.getOrDefault(changed.getParam(settable.name)) == new
    assert _params(stage) == before  # the original is untouched


def check_fitted_roundtrip(model: Any, df: Any, tmp_path: Any) -> str:
    """Save and reload the fitted stage; return the class path its metadata records."""
    from pyspark.ml.util import DefaultParamsReader

    path = tmp_path / f"fitted-{model.uid}"
    model.write().overwrite().save(str(path))
    check_pyspark_metadata(model, path)
    saved_class = json.loads(next((path / "metadata").glob("part-*")).read_text().splitlines()[0])["class"]
    loaded = DefaultParamsReader.loadParamsInstance(str(path), df.sparkSession.sparkContext)
    assert type(loaded).__name__ == type(model).__name__
    assert _params(loaded) == _params(model)
    new_cols = [c for c in model.transform(df).columns if c not in df.columns]
    assert new_cols, f"{type(model).__name__} added no column"
    keyed = [*df.columns, *new_cols]
    assert _rows_of(loaded.transform(df), keyed) == _rows_of(model.transform(df), keyed)
    return saved_class


def check_twin(model: Any, saved_class: str, df: Any, tmp_path: Any) -> None:
    from sparkpipe.scoring.base import TWINS

    assert saved_class in TWINS, f"no NumPy twin registered for {saved_class}"
    assert_parity(model, df, tmp_path / "twin")


@pytest.mark.parametrize("name", sorted(STAGE_CASES))
def test_custom_stage_contract(spark, frames, tmp_path, name):
    from pyspark.ml import Estimator

    stage = STAGE_CASES[name]()
    train, nasty = frames["train"], frames["nasty"]
    if name in NEEDS_VECTOR:
        train, nasty = _with_features(train), _with_features(nasty)
    check_params_roundtrip(stage, tmp_path)
    check_copy(stage)
    model = stage.fit(train) if isinstance(stage, Estimator) else stage
    check_copy(model)
    saved_class = check_fitted_roundtrip(model, nasty, tmp_path)
    check_twin(model, saved_class, nasty.drop("label"), tmp_path)


# ------------------------------------------------------------------------------- algorithm cases
ALGO_PARAMS: dict[str, dict[str, Any]] = {
    "random_forest": {"numTrees": 5, "maxDepth": 3},
    "gbt": {"maxIter": 5, "maxDepth": 3},
    "mlp": {"maxIter": 20},
    "xgboost": {"n_estimators": 5, "max_depth": 3},
    "logistic_regression": {"maxIter": 20},
    "linear_svc": {"maxIter": 20},
    "glm": {"maxIter": 10},
    "kmeans": {"k": 3},
    "bisecting_kmeans": {"k": 3},
    "gmm": {"k": 2},
    "als": {"rank": 2, "maxIter": 3, "coldStartStrategy": "nan"},  # "drop" removes rows by design
}


def _algorithm_keys() -> list[tuple[str, str]]:
    from sparkpipe.models.algorithms import ALGORITHMS

    return sorted(ALGORITHMS)


def _algorithm_frames(spark: Any, task: str) -> tuple[Any, Any]:
    rng = np.random.default_rng(3)
    if task == "recommendation":
        rows = [(u, i, float((u * 3 + i) % 5 + 1)) for u in range(8) for i in range(6) if (u + i) % 3]
        train = spark.createDataFrame(rows, "user int, item int, label double")
        nasty = spark.createDataFrame([(0, 0, 1.0), (1, 99, 1.0), (99, 1, 1.0), (99, 99, 1.0)], train.schema)
        return train, nasty
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([StructField("features", VectorUDT()), StructField("label", DoubleType())])
    x = rng.uniform(0, 3, size=(60, 3))  # non-negative: naive Bayes accepts it
    y = (x[:, 0] + x[:, 1] > 3).astype(float) if task != "regression" else x @ [1.0, -2.0, 0.5]
    train = spark.createDataFrame([(Vectors.dense(r.tolist()), float(t)) for r, t in zip(x, y, strict=True)],
                                  schema)  # fmt: skip
    extreme = [[0.0, 0.0, 0.0], [1e3, 0.0, 1e3], [1e-12, 3.0, 2.9999]]
    nasty = spark.createDataFrame(
        [(Vectors.dense(r), 0.0) for r in [*x[:5].tolist(), *extreme]], train.schema
    )
    return train, nasty


@pytest.mark.parametrize("key", _algorithm_keys(), ids=lambda k: f"{k[0]}-{k[1]}")
def test_algorithm_contract(spark, tmp_path, key):
    from sparkpipe.models.algorithms import ALGORITHMS, build_estimator

    task, name = key
    spec = ALGORITHMS[key]
    train, nasty = _algorithm_frames(spark, task)
    estimator = build_estimator(
        spec, ALGO_PARAMS.get(name, {}), seed=1, num_classes=2 if task == "classification" else None,
        num_features=3, user_col="user", item_col="item", rating_col="label",
    )  # fmt: skip
    if not name.startswith("xgboost"):  # xgboost.spark estimators are Python-only params holders
        check_params_roundtrip(estimator, tmp_path)
    check_copy(estimator)
    model = estimator.fit(train)
    saved_class = check_fitted_roundtrip(model, nasty, tmp_path)
    check_twin(model, saved_class, nasty.drop("label"), tmp_path)


def test_battery_covers_every_registered_entry():
    from pyspark.ml import Estimator

    from sparkpipe.features.stages import CUSTOM_STAGES

    # every algorithm is parametrized from the registry itself; every custom stage needs a case
    registered = {c.__name__ for c in CUSTOM_STAGES}
    fitted_models = {c.__name__ for c in CUSTOM_STAGES if not issubclass(c, Estimator)} - set(STAGE_CASES)
    # a *Model is covered through its estimator's case
    uncovered = {m for m in fitted_models if m.removesuffix("Model") not in STAGE_CASES}
    assert not uncovered, f"add a battery case for {sorted(uncovered)}"
    assert set(STAGE_CASES) <= registered
    names = {name for _, name in _algorithm_keys()}
    assert set(ALGO_PARAMS) <= names, f"stale ALGO_PARAMS entries: {sorted(set(ALGO_PARAMS) - names)}"
