"""Parity of the NumPy model twins (``sparkpipe.scoring.models``) with Spark's own ``transform``.

Every model type is fitted on tiny synthetic data, saved, reloaded as a twin and scored on the same
rows plus extreme, out-of-range and all-zero rows. Predictions must be identical; probabilities,
raw predictions and other doubles within 1e-9.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from sparkpipe.scoring.base import StageFiles, twin_for
from sparkpipe.scoring.models import COLD_START_COL, FeatureValueError

pytest.importorskip("pyspark")

TOL = 1e-9
SEED = 7


# ------------------------------------------------------------------------------------------- helpers
def _to_np(values: list[Any]) -> np.ndarray:
    """Spark output values (doubles or ml Vectors) as a float64 array (NaN for nulls)."""
    if values and hasattr(values[0], "toArray"):
        return np.vstack([v.toArray() for v in values]).astype(np.float64)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def assert_same(got: Any, want: np.ndarray, *, exact: bool, what: str) -> float:
    """Assert ``got`` equals ``want`` (exactly, or within ``TOL``); NaN and inf must coincide.

    Returns the maximum absolute difference over finite entries.
    """
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != Spark's {want.shape}"
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    assert np.array_equal(nan_g, nan_w), f"{what}: NaN positions differ"
    inf_g, inf_w = np.isinf(got), np.isinf(want)
    assert np.array_equal(inf_g, inf_w) and np.array_equal(got[inf_g], want[inf_w]), f"{what}: inf differ"
    fin = ~(nan_g | inf_g)
    diff = float(np.max(np.abs(got[fin] - want[fin]), initial=0.0))
    if exact:
        assert np.array_equal(got[fin], want[fin]), f"{what}: not identical (max diff {diff})"
    else:
        # 1e-9 absolute; for outputs larger than 1 in magnitude (GLM means of extreme rows reach
        # 1e12, where one float64 ulp exceeds 1e-9) the same bound relative to Spark's value.
        scale = np.maximum(1.0, np.abs(want[fin]))
        rel = float(np.max(np.abs(got[fin] - want[fin]) / scale, initial=0.0))
        assert rel <= TOL, f"{what}: max abs diff {diff} (scaled {rel}) > {TOL}"
    return diff


def _vectors(x: np.ndarray, sparse: bool) -> list[Any]:
    from pyspark.ml.linalg import Vectors

    if not sparse:
        return [Vectors.dense(row.tolist()) for row in x]
    out = []
    for row in x:
        nz = np.flatnonzero(row)
        out.append(Vectors.sparse(x.shape[1], nz.tolist(), row[nz].tolist()))
    return out


def _frame_input(x: np.ndarray, sparse: bool) -> Any:
    return sp.csr_matrix(x) if sparse else x.copy()


def check_parity(
    spark: Any,
    model: Any,
    path: Path,
    x: np.ndarray,
    *,
    sparse: bool = False,
    extra: dict[str, np.ndarray] | None = None,
    features_col: str = "features",
    record: Callable[[str, Any], None] | None = None,
) -> dict[str, Any]:
    """Save ``model``, score ``x`` with Spark and with the twin, compare every output column."""
    model.write().overwrite().save(str(path))
    extra = extra or {}
    names = ["rid", features_col, *extra]
    rows = [(i, v, *[float(extra[k][i]) for k in extra]) for i, v in enumerate(_vectors(x, sparse))]
    sdf = spark.createDataFrame(rows, names)
    twin = twin_for(StageFiles.open(path))
    out = sorted(model.transform(sdf).collect(), key=lambda r: r["rid"])
    frame: dict[str, Any] = {features_col: _frame_input(x, sparse), **extra}
    twin.transform(frame)
    outputs = twin.output_cols
    spark_cols = [c for c in out[0].asDict() if c not in names] if out else []
    assert sorted(outputs) == sorted(spark_cols), f"twin adds {outputs}, Spark adds {spark_cols}"
    diffs: dict[str, float] = {}
    for c in outputs:
        want = _to_np([r[c] for r in out])
        exact = c == getattr(twin, "prediction_col", None) and type(twin).__name__ not in (
            "LinearRegressionTwin",
            "GeneralizedLinearRegressionTwin",
            "RandomForestRegressorTwin",
            "GBTRegressorTwin",
        )
        diffs[c] = assert_same(frame[c], want, exact=exact, what=f"{type(twin).__name__}.{c}")
    if record is not None:
        record("max_abs_diff", diffs)
    return {"twin": twin, "frame": frame, "spark": out, "diffs": diffs}


# -------------------------------------------------------------------------------------------- data
RNG = np.random.default_rng(SEED)
N_TRAIN, N_FEAT = 120, 4
X_TRAIN = RNG.normal(size=(N_TRAIN, N_FEAT))
X_TRAIN[RNG.random(X_TRAIN.shape) < 0.25] = 0.0  # some zeros so sparse vectors are really sparse
Y_BIN = (X_TRAIN[:, 0] + 0.5 * X_TRAIN[:, 1] - 0.3 * X_TRAIN[:, 2] + RNG.normal(0, 0.5, N_TRAIN) > 0).astype(
    float
)
Y_3 = np.digitize(X_TRAIN[:, 0] - X_TRAIN[:, 3] + RNG.normal(0, 0.4, N_TRAIN), [-0.6, 0.6]).astype(float)
Y_REG = 1.5 * X_TRAIN[:, 0] - 2.0 * X_TRAIN[:, 1] + 0.5 + RNG.normal(0, 0.3, N_TRAIN)
EXTREME = np.array(
    [
        np.zeros(N_FEAT),
        [1e4, -1e4, 1e4, -1e4],
        [-1e6, 1e6, 3.0, -7.0],
        [50.0, 50.0, -50.0, 50.0],
        [1e-300, -1e-300, 0.0, 1e-300],
        [1e300, 0.0, 0.0, 0.0],
    ]
)
X_SCORE = np.vstack([X_TRAIN[:40], EXTREME])


def _train_df(
    spark: Any, x: np.ndarray, y: np.ndarray, sparse: bool = False, extra: dict | None = None
) -> Any:
    extra = extra or {}
    rows = [
        (v, float(t), *[float(extra[k][i]) for k in extra])
        for i, (v, t) in enumerate(zip(_vectors(x, sparse), y, strict=True))
    ]
    return spark.createDataFrame(rows, ["features", "label", *extra])


@pytest.fixture(scope="module")
def frames(spark: Any) -> dict[str, Any]:
    return {
        "bin": _train_df(spark, X_TRAIN, Y_BIN).cache(),
        "multi": _train_df(spark, X_TRAIN, Y_3).cache(),
        "reg": _train_df(spark, X_TRAIN, Y_REG).cache(),
    }


@pytest.fixture(scope="module")
def fitted() -> Callable[[Any, Callable[[], Any]], Any]:
    """Memoise fitted models within the module (a fit is the slow part of every test)."""
    cache: dict[Any, Any] = {}

    def get(key: Any, fit: Callable[[], Any]) -> Any:
        if key not in cache:
            cache[key] = fit()
        return cache[key]

    return get


# ----------------------------------------------------------------------------- logistic regression
LR_CASES = {
    "binary": ({"family": "binomial"}, "bin", {}),
    "binary_threshold": ({"family": "binomial"}, "bin", {"threshold": 0.3}),
    "binary_thresholds": ({"family": "binomial"}, "bin", {"thresholds": [0.4, 0.6]}),
    "binary_prob_only": ({"family": "binomial"}, "bin", {"rawPredictionCol": ""}),
    "binary_predict_only": ({"family": "binomial"}, "bin", {"rawPredictionCol": "", "probabilityCol": ""}),
    "multinomial": ({"family": "multinomial"}, "multi", {}),
    "multinomial_on_binary": ({"family": "multinomial", "regParam": 0.01}, "bin", {}),
    "multinomial_thresholds": ({"family": "multinomial"}, "multi", {"thresholds": [0.5, 0.2, 0.3]}),
    "multinomial_zero_threshold": ({"family": "multinomial"}, "multi", {"thresholds": [0.0, 0.5, 0.5]}),
    "multinomial_predict_only": (
        {"family": "multinomial"},
        "multi",
        {"rawPredictionCol": "", "probabilityCol": "", "predictionCol": "pred", "thresholds": [1, 2, 1]},
    ),
}


LR_SPARSE = ("binary", "multinomial", "multinomial_thresholds")  # cases also scored from CSR input


@pytest.mark.parametrize(
    "case,sparse",
    [(c, False) for c in sorted(LR_CASES)] + [(c, True) for c in LR_SPARSE],
    ids=[f"{c}-dense" for c in sorted(LR_CASES)] + [f"{c}-sparse" for c in LR_SPARSE],
)
def test_logistic_regression(spark, frames, fitted, tmp_path, record_property, case, sparse):
    from pyspark.ml.classification import LogisticRegression

    fit_params, data, model_params = LR_CASES[case]
    key = ("lr", data, tuple(sorted(fit_params.items())))
    model = fitted(key, lambda: LogisticRegression(maxIter=10, **fit_params).fit(frames[data])).copy()
    if model_params:
        model._set(**model_params)
    check_parity(spark, model, tmp_path / "m", X_SCORE, sparse=sparse, record=record_property)


def test_linear_svc(spark, frames, tmp_path, record_property):
    from pyspark.ml.classification import LinearSVC

    model = LinearSVC(maxIter=10, regParam=0.01).fit(frames["bin"])
    check_parity(spark, model, tmp_path / "a", X_SCORE, record=record_property)
    model.setThreshold(0.25)
    check_parity(spark, model, tmp_path / "b", X_SCORE, sparse=True, record=record_property)


# --------------------------------------------------------------------------------------- naive bayes
X_COUNTS = np.floor(np.abs(X_TRAIN) * 3)
X_BINARY = (X_TRAIN > 0).astype(float)
NB_CASES = {
    "multinomial": (X_COUNTS, np.vstack([X_COUNTS[:40], np.zeros(N_FEAT), [1e4, 0, 3, 1e6]]), {}),
    "complement": (X_COUNTS, np.vstack([X_COUNTS[:40], np.zeros(N_FEAT), [1e4, 0, 3, 1e6]]), {}),
    "bernoulli": (X_BINARY, np.vstack([X_BINARY[:40], np.zeros(N_FEAT), np.ones(N_FEAT)]), {}),
    "gaussian": (X_TRAIN, X_SCORE[:-1], {"thresholds": [0.3, 0.3, 0.4]}),
}


@pytest.mark.parametrize("model_type", sorted(NB_CASES))
def test_naive_bayes(spark, tmp_path, record_property, model_type):
    from pyspark.ml.classification import NaiveBayes

    x_train, x_score, model_params = NB_CASES[model_type]
    model = NaiveBayes(modelType=model_type, smoothing=0.5).fit(_train_df(spark, x_train, Y_3))
    model._set(**model_params) if model_params else None
    check_parity(
        spark, model, tmp_path / "m", x_score, sparse=model_type != "gaussian", record=record_property
    )
    if model_type in ("multinomial", "bernoulli"):
        bad = x_score[:3].copy()
        bad[0, 1] = -1.0 if model_type == "multinomial" else 0.5
        with pytest.raises(FeatureValueError):
            twin_for(StageFiles.open(tmp_path / "m")).transform({"features": bad})
        sdf = spark.createDataFrame([(v,) for v in _vectors(bad, False)], ["features"])
        with pytest.raises(Exception):  # noqa: B017 - Spark raises a JVM error for the same row
            model.transform(sdf).collect()


# -------------------------------------------------------------------------------------------- trees
N_CAT = 3  # features 0 and 1 are categorical with 3 values in training


@pytest.fixture(scope="module")
def tree_data(spark: Any) -> dict[str, Any]:
    from pyspark.ml.feature import VectorIndexer

    rng = np.random.default_rng(SEED + 1)
    n = 160
    x = rng.normal(size=(n, 5))
    x[:, 0] = rng.integers(0, N_CAT, n)
    x[:, 1] = rng.integers(0, N_CAT, n)
    x[rng.random((n, 5)) < 0.2] = 0.0
    y_bin = ((x[:, 0] == 1) ^ (x[:, 2] + 0.3 * x[:, 3] > 0.2)).astype(float)
    y_3 = np.where(x[:, 1] == 2, 2.0, (x[:, 2] > 0).astype(float))
    y_reg = 2.0 * (x[:, 0] == 2) + x[:, 2] - 0.5 * x[:, 3] + rng.normal(0, 0.1, n)
    rows = [
        (v, float(a), float(b), float(c))
        for v, a, b, c in zip(_vectors(x, False), y_bin, y_3, y_reg, strict=True)
    ]
    df = spark.createDataFrame(rows, ["raw", "bin", "multi", "reg"])
    indexer = VectorIndexer(inputCol="raw", outputCol="features", maxCategories=N_CAT).fit(df)
    assert sorted(indexer.categoryMaps) == [0, 1]
    score = np.vstack(
        [
            x[:50],
            np.zeros(5),
            [5.0, 1.0, 1e6, -1e6, 0.0],  # unseen category 5
            [-1.0, 2.5, -1e300, 1e300, 3.0],  # negative / fractional category values
            [2.0, 0.0, np.nan, 0.1, np.nan],  # NaN goes right on continuous splits
            [1.0, 2.0, 1e-300, -1e-300, 7.0],
        ]
    )
    return {"train": indexer.transform(df).cache(), "score": score}


TREE_CASES = {
    "dtc": ("DecisionTreeClassifier", "multi", {"maxDepth": 5}),
    "rfc": ("RandomForestClassifier", "multi", {"numTrees": 5, "maxDepth": 4, "seed": SEED}),
    "gbtc": ("GBTClassifier", "bin", {"maxIter": 5, "maxDepth": 3, "seed": SEED}),
    "dtr": ("DecisionTreeRegressor", "reg", {"maxDepth": 5, "varianceCol": "variance"}),
    "rfr": ("RandomForestRegressor", "reg", {"numTrees": 5, "maxDepth": 4, "seed": SEED}),
    "gbtr": ("GBTRegressor", "reg", {"maxIter": 5, "maxDepth": 3, "seed": SEED}),
}


@pytest.mark.parametrize("case", sorted(TREE_CASES))
def test_trees(spark, tree_data, tmp_path, record_property, case):
    import pyspark.ml.classification as cls
    import pyspark.ml.regression as reg

    name, label, params = TREE_CASES[case]
    est_cls = getattr(cls, name, None) or getattr(reg, name)
    model = est_cls(labelCol=label, **params).fit(tree_data["train"])
    x = tree_data["score"]
    res = check_parity(spark, model, tmp_path / "dense", x, record=record_property)
    twin = res["twin"]
    assert twin.forest.cat_table.shape[0] > 0 or case.startswith("gbt"), "expected categorical splits"
    check_parity(
        spark, model, tmp_path / "sparse", np.nan_to_num(x, nan=0.0), sparse=True, record=record_property
    )
    if name == "RandomForestClassifier":
        model.setThresholds([0.2, 0.5, 0.3])
        check_parity(spark, model, tmp_path / "thr", x, record=record_property)


# ---------------------------------------------------------------------------------------------- MLP
def test_multilayer_perceptron(spark, frames, tmp_path, record_property):
    from pyspark.ml.classification import MultilayerPerceptronClassifier

    model = MultilayerPerceptronClassifier(layers=[N_FEAT, 5, 4, 3], maxIter=30, seed=SEED).fit(
        frames["multi"]
    )
    check_parity(spark, model, tmp_path / "a", X_SCORE, record=record_property)
    model.setRawPredictionCol("")
    check_parity(spark, model, tmp_path / "b", X_SCORE, sparse=True, record=record_property)


# -------------------------------------------------------------------------------- linear regressions
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_linear_regression(spark, frames, fitted, tmp_path, record_property, sparse):
    from pyspark.ml.regression import LinearRegression

    model = fitted("linreg", lambda: LinearRegression(regParam=0.1, elasticNetParam=0.5).fit(frames["reg"]))
    check_parity(spark, model, tmp_path / "m", X_SCORE, sparse=sparse, record=record_property)


Y_POS = np.exp(0.3 * X_TRAIN[:, 0] - 0.2 * X_TRAIN[:, 1] + 0.5) * RNG.uniform(0.7, 1.3, N_TRAIN)
GLM_CASES = [
    ("gaussian", "identity", {}),
    ("gaussian", "log", {}),
    ("gaussian", "inverse", {}),
    ("binomial", "logit", {}),
    ("binomial", "probit", {}),
    ("binomial", "cloglog", {}),
    ("poisson", "log", {}),
    ("poisson", "identity", {}),
    ("poisson", "sqrt", {}),
    ("gamma", "inverse", {}),
    ("gamma", "identity", {}),
    ("gamma", "log", {}),
    ("binomial", None, {}),
    ("poisson", None, {}),
    ("gamma", None, {}),
    ("tweedie", None, {"variancePower": 1.5}),
    ("tweedie", None, {"variancePower": 1.5, "linkPower": 0.0}),
    ("tweedie", None, {"variancePower": 0.0, "linkPower": 1.0}),
    ("tweedie", None, {"variancePower": 1.0, "linkPower": 0.5}),
    ("tweedie", None, {"variancePower": 2.0, "linkPower": -1.0}),
    ("tweedie", None, {"variancePower": 1.2, "linkPower": 0.3}),
]


@pytest.mark.parametrize(
    "family,link,params",
    GLM_CASES,
    ids=[f"{f}-{lk or ''}{'-'.join(f'{k}={v}' for k, v in p.items())}" for f, lk, p in GLM_CASES],
)
def test_glm(spark, fitted, tmp_path, record_property, family, link, params):
    """Every family/link pair Spark accepts, on one fitted coefficient vector.

    Prediction only depends on the coefficients and the family/link params, so the test fits once
    (gaussian, positive response) and sets family/link on copies; Spark's side is the model it loads
    back from disk, which derives its link afresh from the saved params.
    """
    from pyspark.ml.regression import GeneralizedLinearRegression, GeneralizedLinearRegressionModel

    base = fitted(
        "glm",
        lambda: GeneralizedLinearRegression(maxIter=5, regParam=0.01).fit(_train_df(spark, X_TRAIN, Y_POS)),
    )
    model = base.copy()
    model._set(family=family, **({"link": link} if link else {}), **params)
    model.write().overwrite().save(str(tmp_path / "saved"))
    loaded = GeneralizedLinearRegressionModel.load(str(tmp_path / "saved"))
    x = np.vstack(
        [X_TRAIN[:40], np.zeros(N_FEAT), [30.0, -30.0, 5.0, 5.0], [-1e3, 1e3, 0.0, 0.0], [1e4, 1e4, 1e4, 1e4]]
    )
    check_parity(spark, loaded, tmp_path / "m", x, record=record_property)


def test_glm_offset_and_link_prediction(spark, tmp_path, record_property):
    from pyspark.ml.regression import GeneralizedLinearRegression

    offset = RNG.uniform(-0.2, 0.2, N_TRAIN)
    train = _train_df(spark, X_TRAIN, Y_POS, extra={"off": offset})
    model = GeneralizedLinearRegression(
        family="poisson", link="log", offsetCol="off", linkPredictionCol="eta", maxIter=5
    ).fit(train)
    x = np.vstack([X_TRAIN[:40], np.zeros(N_FEAT), [30.0, -30.0, 5.0, 5.0]])
    off = np.concatenate([offset[:40], [0.5, -2.0]])
    res = check_parity(
        spark, model, tmp_path / "m", x, sparse=True, extra={"off": off}, record=record_property
    )
    assert "eta" in res["twin"].output_cols


# --------------------------------------------------------------------------------------- clustering
@pytest.mark.parametrize("measure", ["euclidean", "cosine"])
def test_kmeans(spark, frames, tmp_path, record_property, measure):
    from pyspark.ml.clustering import KMeans

    model = KMeans(k=4, seed=SEED, maxIter=10, distanceMeasure=measure).fit(frames["bin"])
    centers = np.vstack(model.clusterCenters())
    x = np.vstack([X_SCORE, centers, (centers[0] + centers[1]) / 2])  # centers and a midpoint
    with np.errstate(over="ignore"):
        zero_norm = np.sqrt(np.sum(x * x, axis=1)) == 0  # the all-zero and the 1e-300 rows
    if measure == "cosine":
        x = x[~zero_norm]
    check_parity(spark, model, tmp_path / "m", x, record=record_property)
    check_parity(spark, model, tmp_path / "s", x, sparse=True, record=record_property)
    if measure == "cosine":  # Spark refuses zero-length vectors under cosine distance; so does the twin
        _assert_both_fail(spark, model, tmp_path / "m", EXTREME[[0, 4]])


def _assert_both_fail(spark: Any, model: Any, path: Path, x: np.ndarray) -> None:
    for row in x:
        with pytest.raises(FeatureValueError):
            twin_for(StageFiles.open(path)).transform({"features": row[None, :]})
        with pytest.raises(Exception):  # noqa: B017 - Spark raises a JVM error for the same row
            model.transform(
                spark.createDataFrame([(v,) for v in _vectors(row[None, :], False)], ["features"])
            ).collect()


@pytest.mark.parametrize("measure", ["euclidean", "cosine"])
def test_bisecting_kmeans(spark, frames, tmp_path, record_property, measure):
    from pyspark.ml.clustering import BisectingKMeans

    model = BisectingKMeans(k=5, seed=SEED, maxIter=10, distanceMeasure=measure).fit(frames["bin"])
    x = np.delete(X_SCORE, [40, 44], axis=0) if measure == "cosine" else X_SCORE  # zero-norm rows
    check_parity(spark, model, tmp_path / "m", x, record=record_property)
    check_parity(spark, model, tmp_path / "s", x, sparse=True, record=record_property)
    if measure == "cosine":
        _assert_both_fail(spark, model, tmp_path / "m", EXTREME[[0, 4]])


def test_gaussian_mixture(spark, frames, tmp_path, record_property):
    from pyspark.ml.clustering import GaussianMixture

    model = GaussianMixture(k=3, seed=SEED, maxIter=20).fit(frames["bin"])
    x = np.vstack([X_TRAIN[:40], np.zeros(N_FEAT), [5.0, -5.0, 3.0, 3.0], [50.0, 50.0, -50.0, 50.0]])
    check_parity(spark, model, tmp_path / "m", x, record=record_property)


# --------------------------------------------------------------------------------------------- ALS
@pytest.fixture(scope="module")
def als_ratings(spark: Any) -> Any:
    rng = np.random.default_rng(SEED + 2)
    users, items = rng.integers(0, 15, 200), rng.integers(0, 12, 200)
    ratings = np.clip(np.round((users % 5) * 0.5 + (items % 4) + rng.normal(0, 0.5, 200)), 0, 5)
    pairs = {(int(u), int(i)): float(r) for u, i, r in zip(users, items, ratings, strict=True)}
    return spark.createDataFrame(
        [(u, i, r) for (u, i), r in pairs.items()], ["user", "item", "rating"]
    ).cache()


@pytest.mark.parametrize("strategy", ["nan", "drop"])
def test_als(spark, als_ratings, fitted, tmp_path, record_property, strategy):
    from pyspark.ml.recommendation import ALS

    model = fitted("als", lambda: ALS(rank=4, maxIter=5, regParam=0.1, seed=SEED).fit(als_ratings)).copy()
    model.setColdStartStrategy(strategy)
    path = tmp_path / "als"
    model.write().overwrite().save(str(path))
    users = np.array([u for u in range(-1, 17) for _ in range(13)], dtype=float)
    items = np.array([i for _ in range(-1, 17) for i in range(-1, 12)], dtype=float)
    sdf = spark.createDataFrame(
        [(k, int(u), int(i)) for k, (u, i) in enumerate(zip(users, items, strict=True))],
        ["rid", "user", "item"],
    )
    out = {r["rid"]: r["prediction"] for r in model.transform(sdf).collect()}
    twin = twin_for(StageFiles.open(path))
    frame = {"user": users, "item": items}
    twin.transform(frame)
    cold = frame[COLD_START_COL]
    if strategy == "drop":
        assert sorted(out) == np.flatnonzero(~cold).tolist()
    else:
        assert sorted(out) == list(range(users.size))
    want = np.array([out.get(k, np.nan) for k in range(users.size)], dtype=np.float64)
    got = np.where(cold, np.nan, frame["prediction"])
    assert np.isnan(frame["prediction"][cold]).all()
    assert_same(got, want, exact=True, what="ALS.prediction (bit-for-bit float32)")
    record_property("max_abs_diff", {"prediction": 0.0})

    subset = spark.createDataFrame([(u,) for u in (0, 3, 7, 99)], ["user"])
    recs = {r["user"]: r["recommendations"] for r in model.recommendForUserSubset(subset, 5).collect()}
    assert 99 not in recs
    for u, rec in recs.items():
        ids, scores = twin.recommend_for_user(u, 5)
        assert ids.tolist() == [r["item"] for r in rec]
        assert_same(scores, np.array([r["rating"] for r in rec]), exact=False, what="ALS recommend scores")
    assert twin.recommend_for_user(99, 5)[0].size == 0
    with pytest.raises(FeatureValueError):
        twin.transform({"user": np.array([1.5]), "item": np.array([1.0])})
