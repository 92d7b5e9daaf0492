"""The algorithm registry: config names → Spark MLlib estimators, defaults and search spaces.

Every algorithm the YAML may name lives in :data:`ALGORITHMS`, keyed by ``(task, name)``. Four names
(``random_forest``, ``gbt``, ``decision_tree``, ``xgboost``) exist for both classification and
regression; the task (``model.task_type`` or one inferred from the target column) picks the variant.
``xgboost`` is xgboost's own Spark estimator (``xgboost.spark``): its hyperparameters keep xgboost's
snake_case names, and sparkpipe checks their types and ranges itself (its Params convert nothing).

Everything here except :func:`build_estimator` works **without pyspark**: hyperparameter names and
their Spark type converters come from the generated table in :mod:`sparkpipe.models.params`, whose
pure-Python converters check values, so a config is validated without importing ``pyspark.ml``.

Search spaces use one neutral format that tuning turns into grids or Optuna distributions::

    {"regParam": {"type": "loguniform", "low": 1e-4, "high": 1.0},
     "maxDepth": {"type": "int", "low": 2, "high": 10, "step": 1},
     "impurity": {"type": "choice", "values": ["gini", "entropy"]},
     "elasticNetParam": {"type": "uniform", "low": 0.0, "high": 1.0}}
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from sparkpipe.core import INTEGRAL_TYPES
from sparkpipe.errors import ConfigError, ModelError, UnknownNameError

if TYPE_CHECKING:
    from pyspark.ml import Estimator

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("classification", "regression", "clustering", "recommendation")

SEARCH_TYPES: tuple[str, ...] = ("choice", "uniform", "loguniform", "int")


# ------------------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class AlgorithmSpec:
    """Everything sparkpipe knows about one algorithm for one task.

    Attributes
    ----------
    name
        The config name (``model.algorithm``), e.g. ``"random_forest"``.
    task
        ``classification``, ``regression``, ``clustering`` or ``recommendation``.
    estimator
        Import path of the Spark estimator class, e.g. ``pyspark.ml.classification.LogisticRegression``.
    defaults
        Hyperparameters sparkpipe sets unless the user overrides them (Spark Param names, plus the
        friendly extras in ``extra_params``).
    search_space
        Default tuning space in the neutral format (see the module docstring).
    description
        One line for listings (``sparkpipe models list``, docs).
    needs_nonnegative_features
        The algorithm rejects negative feature values (naive Bayes with ``modelType`` multinomial,
        complement or bernoulli). Use :func:`requires_nonnegative_features` for the answer given a
        concrete set of hyperparameters.
    supports_probability
        The fitted model writes a ``probability`` column.
    binary_only
        Spark's implementation accepts labels 0 and 1 only (``linear_svc``, ``gbt`` classification).
    supports_sparse
        Works well on high-dimensional sparse vectors (hashed text, 10,000+ features). ``False`` means
        cost grows with the square of the feature count or the features are densified; feature
        engineering should then prefer compact encodings.
    max_features
        Hard limit Spark puts on the feature count (GLM's IRLS solver: 4096), or ``None``.
    extra_params
        Friendly hyperparameters that are not Spark Params (e.g. MLP ``hidden_layers``), mapped to a
        description of the value they expect.
    choices
        Allowed values of string Params, checked before Spark sees them.
    param_types
        Value type of Params whose own type converter accepts anything (xgboost's snake_case Params),
        as a Spark ``TypeConverters`` name (``toInt``, ``toFloat``, ``toString``, ``toBoolean``).
    bounds
        Numeric ranges ``(low, high, low_inclusive, high_inclusive)`` of this estimator's Params, on
        top of the shared ones of MLlib's camelCase Params.
    blocked_params
        Params of the estimator that cannot be set from the config, mapped to the reason.
    """

    name: str
    task: str
    estimator: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    search_space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    needs_nonnegative_features: bool = False
    supports_probability: bool = False
    binary_only: bool = False
    supports_sparse: bool = True
    max_features: int | None = None
    extra_params: Mapping[str, str] = field(default_factory=dict)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    param_types: Mapping[str, str] = field(default_factory=dict)
    bounds: Mapping[str, tuple[float, float, bool, bool]] = field(default_factory=dict)
    blocked_params: Mapping[str, str] = field(default_factory=dict)

    @property
    def default_params(self) -> Mapping[str, Any]:
        """Alias of :attr:`defaults`."""
        return self.defaults

    @property
    def key(self) -> tuple[str, str]:
        """The registry key ``(task, name)``."""
        return (self.task, self.name)

    def estimator_class(self) -> type[Estimator]:
        """Import and return the Spark estimator class (no JVM is started)."""
        module, _, cls = self.estimator.rpartition(".")
        return getattr(importlib.import_module(module), cls)


# --------------------------------------------------------------------------------- choices and bounds
_TREE_CLF_IMPURITY = ("gini", "entropy")
_FEATURE_SUBSET = ("auto", "all", "onethird", "sqrt", "log2")
_STORAGE_LEVELS = (
    "MEMORY_ONLY",
    "MEMORY_ONLY_2",
    "MEMORY_ONLY_SER",
    "MEMORY_AND_DISK",
    "MEMORY_AND_DISK_2",
    "MEMORY_AND_DISK_SER",
    "DISK_ONLY",
    "DISK_ONLY_2",
    "OFF_HEAP",
)
_NB_MODEL_TYPES = ("gaussian", "multinomial", "bernoulli", "complement")
_NONNEGATIVE_NB_TYPES = frozenset({"multinomial", "bernoulli", "complement"})

#: Spark compares these string Params case-insensitively; all others must match exactly.
_CASE_INSENSITIVE = frozenset({"impurity", "lossType", "family", "link", "featureSubsetStrategy"})

#: Numeric ranges (low, high, low_inclusive, high_inclusive) that hold for every estimator using the name.
_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "maxDepth": (0, 30, True, True),
    "numTrees": (1, math.inf, True, True),
    "maxIter": (0, math.inf, True, True),
    "regParam": (0, math.inf, True, True),
    "elasticNetParam": (0, 1, True, True),
    "subsamplingRate": (0, 1, False, True),
    "stepSize": (0, math.inf, False, True),
    "maxBins": (2, math.inf, True, True),
    "minInstancesPerNode": (1, math.inf, True, True),
    "minInfoGain": (0, math.inf, True, True),
    "minWeightFractionPerNode": (0, 0.5, True, False),
    "k": (2, math.inf, True, True),
    "rank": (1, math.inf, True, True),
    "smoothing": (0, math.inf, True, True),
    "tol": (0, math.inf, True, True),
    "alpha": (0, math.inf, True, True),
    "blockSize": (1, math.inf, True, True),
    "numUserBlocks": (1, math.inf, True, True),
    "numItemBlocks": (1, math.inf, True, True),
    "aggregationDepth": (2, math.inf, True, True),
    "initSteps": (1, math.inf, True, True),
    "minDivisibleClusterSize": (0, math.inf, False, True),
    "maxMemoryInMB": (0, math.inf, True, True),
    "maxBlockSizeInMB": (0, math.inf, True, True),
    "validationTol": (0, math.inf, True, True),
}

#: What a value must look like, per Spark type converter (for error messages).
_CONVERTER_WORDS: dict[str, str] = {
    "toInt": "an integer",
    "toFloat": "a number",
    "toString": "a string",
    "toBoolean": "true or false",
    "toListInt": "a list of integers",
    "toListFloat": "a list of numbers",
    "toListString": "a list of strings",
    "toListListFloat": "a list of lists of numbers",
    "toVector": "a list of numbers",
    "toMatrix": "a Spark Matrix (cannot be written in YAML)",
}


# ------------------------------------------------------------------------------------------ registry
def _spec(**kwargs: Any) -> AlgorithmSpec:
    return AlgorithmSpec(**kwargs)


_TREE_SPACE_CLF: dict[str, dict[str, Any]] = {
    "maxDepth": {"type": "int", "low": 3, "high": 12},
    "minInstancesPerNode": {"type": "int", "low": 1, "high": 20},
    "impurity": {"type": "choice", "values": ["gini", "entropy"]},
}
_TREE_SPACE_REG: dict[str, dict[str, Any]] = {
    "maxDepth": {"type": "int", "low": 3, "high": 12},
    "minInstancesPerNode": {"type": "int", "low": 1, "high": 20},
}
_FOREST_SPACE: dict[str, dict[str, Any]] = {
    "numTrees": {"type": "int", "low": 20, "high": 200, "step": 10},
    "maxDepth": {"type": "int", "low": 3, "high": 12},
    "featureSubsetStrategy": {"type": "choice", "values": ["auto", "sqrt", "log2", "onethird"]},
    "minInstancesPerNode": {"type": "int", "low": 1, "high": 10},
}
_GBT_SPACE: dict[str, dict[str, Any]] = {
    "maxIter": {"type": "int", "low": 20, "high": 150, "step": 10},
    "maxDepth": {"type": "int", "low": 2, "high": 8},
    "stepSize": {"type": "loguniform", "low": 0.01, "high": 0.3},
    "subsamplingRate": {"type": "uniform", "low": 0.5, "high": 1.0},
}
_LINEAR_SPACE: dict[str, dict[str, Any]] = {
    "regParam": {"type": "loguniform", "low": 1e-4, "high": 1.0},
    "elasticNetParam": {"type": "uniform", "low": 0.0, "high": 1.0},
}

# xgboost.spark (SparkXGBClassifier / SparkXGBRegressor): snake_case xgboost parameter names. Its
# Params convert nothing, so sparkpipe checks their types and ranges itself.
_XGB_DEFAULTS: dict[str, Any] = {
    "n_estimators": 100,
    "max_depth": 6,
    "learning_rate": 0.3,
    "tree_method": "hist",
    "verbose": False,  # no per-round training log lines on the console
}
_XGB_SPACE: dict[str, dict[str, Any]] = {
    "n_estimators": {"type": "int", "low": 50, "high": 300, "step": 50},
    "max_depth": {"type": "int", "low": 3, "high": 10},
    "learning_rate": {"type": "loguniform", "low": 0.02, "high": 0.3},
    "subsample": {"type": "uniform", "low": 0.5, "high": 1.0},
    "colsample_bytree": {"type": "uniform", "low": 0.5, "high": 1.0},
    "min_child_weight": {"type": "loguniform", "low": 0.5, "high": 20.0},
    "reg_lambda": {"type": "loguniform", "low": 0.1, "high": 10.0},
}
_XGB_TYPES: dict[str, str] = {
    **dict.fromkeys(
        (
            "n_estimators",
            "max_depth",
            "max_leaves",
            "max_bin",
            "num_parallel_tree",
            "max_cat_to_onehot",
            "max_cat_threshold",
            "early_stopping_rounds",
            "random_state",
            "verbosity",
        ),
        "toInt",
    ),
    **dict.fromkeys(
        (
            "learning_rate",
            "gamma",
            "min_child_weight",
            "max_delta_step",
            "subsample",
            "colsample_bytree",
            "colsample_bylevel",
            "colsample_bynode",
            "reg_alpha",
            "reg_lambda",
            "scale_pos_weight",
            "base_score",
            "missing",
        ),
        "toFloat",
    ),
    **dict.fromkeys(
        ("tree_method", "booster", "objective", "grow_policy", "sampling_method", "device", "multi_strategy"),
        "toString",
    ),
    **dict.fromkeys(("validate_parameters", "verbose"), "toBoolean"),
}
_XGB_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "n_estimators": (1, math.inf, True, True),
    "max_depth": (0, math.inf, True, True),
    "max_leaves": (0, math.inf, True, True),
    "max_bin": (2, math.inf, True, True),
    "num_parallel_tree": (1, math.inf, True, True),
    "learning_rate": (0, 1, False, True),
    "gamma": (0, math.inf, True, True),
    "min_child_weight": (0, math.inf, True, True),
    "max_delta_step": (0, math.inf, True, True),
    "subsample": (0, 1, False, True),
    "colsample_bytree": (0, 1, False, True),
    "colsample_bylevel": (0, 1, False, True),
    "colsample_bynode": (0, 1, False, True),
    "reg_alpha": (0, math.inf, True, True),
    "reg_lambda": (0, math.inf, True, True),
    "scale_pos_weight": (0, math.inf, False, True),
    "num_workers": (1, math.inf, True, True),
    "early_stopping_rounds": (1, math.inf, True, True),
}
_XGB_CHOICES: dict[str, tuple[str, ...]] = {
    "tree_method": ("hist", "approx", "auto"),  # "exact" is not distributed: xgboost.spark rejects it
    "booster": ("gbtree", "dart", "gblinear"),
    "grow_policy": ("depthwise", "lossguide"),
    "sampling_method": ("uniform", "gradient_based"),
    "device": ("cpu", "cuda", "gpu"),
}
_XGB_BLOCKED: dict[str, str] = {
    "callbacks": "Python callables cannot be written in the config",
    "xgb_model": "an initial Booster object cannot be written in the config",
    "coll_cfg": "the collective configuration is an object, not a config value",
    "feature_names": "sparkpipe names the features itself (the assembled feature vector)",
    "validationIndicatorCol": "sparkpipe splits the data itself (data.validation_split)",
}
_XGB_COMMON: dict[str, Any] = {
    "defaults": _XGB_DEFAULTS,
    "search_space": _XGB_SPACE,
    "param_types": _XGB_TYPES,
    "bounds": _XGB_BOUNDS,
    "blocked_params": _XGB_BLOCKED,
}
_ALL_SPECS: tuple[AlgorithmSpec, ...] = (
    # ---------------------------------------------------------------- classification
    _spec(
        name="logistic_regression",
        task="classification",
        estimator="pyspark.ml.classification.LogisticRegression",
        defaults={"maxIter": 100, "regParam": 0.01, "elasticNetParam": 0.0},
        search_space=_LINEAR_SPACE,
        description="logistic regression (binomial or multinomial, elastic-net regularised)",
        supports_probability=True,
        choices={"family": ("auto", "binomial", "multinomial")},
    ),
    _spec(
        name="random_forest",
        task="classification",
        estimator="pyspark.ml.classification.RandomForestClassifier",
        defaults={"numTrees": 50, "maxDepth": 8},
        search_space=_FOREST_SPACE,
        description="random forest classifier",
        supports_probability=True,
        choices={"impurity": _TREE_CLF_IMPURITY, "featureSubsetStrategy": _FEATURE_SUBSET},
    ),
    _spec(
        name="gbt",
        task="classification",
        estimator="pyspark.ml.classification.GBTClassifier",
        defaults={"maxIter": 50, "maxDepth": 5, "stepSize": 0.1},
        search_space=_GBT_SPACE,
        description="gradient-boosted trees classifier (binary labels only in Spark)",
        supports_probability=True,
        binary_only=True,
        choices={
            "impurity": ("variance",),
            "lossType": ("logistic",),
            "featureSubsetStrategy": _FEATURE_SUBSET,
        },
    ),
    _spec(
        name="naive_bayes",
        task="classification",
        estimator="pyspark.ml.classification.NaiveBayes",
        defaults={"modelType": "gaussian", "smoothing": 1.0},
        search_space={"smoothing": {"type": "loguniform", "low": 0.01, "high": 10.0}},
        description=(
            "naive Bayes; modelType gaussian by default, multinomial/complement/bernoulli need "
            "non-negative features (bernoulli: 0/1)"
        ),
        needs_nonnegative_features=True,
        supports_probability=True,
        choices={"modelType": _NB_MODEL_TYPES},
    ),
    _spec(
        name="linear_svc",
        task="classification",
        estimator="pyspark.ml.classification.LinearSVC",
        defaults={"maxIter": 100, "regParam": 0.01},
        search_space={
            "regParam": {"type": "loguniform", "low": 1e-4, "high": 1.0},
            "maxIter": {"type": "choice", "values": [50, 100, 200]},
        },
        description="linear support vector machine (binary labels only in Spark, no probabilities)",
        binary_only=True,
    ),
    _spec(
        name="mlp",
        task="classification",
        estimator="pyspark.ml.classification.MultilayerPerceptronClassifier",
        defaults={"hidden_layers": [32, 16], "maxIter": 200, "blockSize": 128, "solver": "l-bfgs"},
        search_space={
            "hidden_layers": {"type": "choice", "values": [[16], [32, 16], [64, 32]]},
            "maxIter": {"type": "int", "low": 50, "high": 300, "step": 50},
            "blockSize": {"type": "choice", "values": [64, 128, 256]},
        },
        description="multilayer perceptron; layers = [num_features, *hidden_layers, num_classes]",
        supports_probability=True,
        supports_sparse=False,
        extra_params={"hidden_layers": "a list of positive integers (sizes of the hidden layers)"},
        choices={"solver": ("l-bfgs", "gd")},
    ),
    _spec(
        name="decision_tree",
        task="classification",
        estimator="pyspark.ml.classification.DecisionTreeClassifier",
        defaults={"maxDepth": 8},
        search_space=_TREE_SPACE_CLF,
        description="decision tree classifier",
        supports_probability=True,
        choices={"impurity": _TREE_CLF_IMPURITY},
    ),
    _spec(
        name="xgboost",
        task="classification",
        estimator="xgboost.spark.SparkXGBClassifier",
        description=(
            "XGBoost gradient-boosted trees (xgboost.spark, histogram method; binary and multiclass; "
            "xgboost's snake_case parameter names)"
        ),
        supports_probability=True,
        choices={
            **_XGB_CHOICES,
            "objective": (
                "binary:logistic",
                "binary:logitraw",
                "binary:hinge",
                "multi:softprob",
                "multi:softmax",
            ),
        },
        **_XGB_COMMON,
    ),
    # ---------------------------------------------------------------- regression
    _spec(
        name="linear_regression",
        task="regression",
        estimator="pyspark.ml.regression.LinearRegression",
        defaults={"maxIter": 100, "regParam": 0.0, "elasticNetParam": 0.0},
        search_space=_LINEAR_SPACE,
        description="linear regression (elastic-net regularised; huber loss optional)",
        choices={"solver": ("auto", "normal", "l-bfgs"), "loss": ("squaredError", "huber")},
    ),
    _spec(
        name="random_forest",
        task="regression",
        estimator="pyspark.ml.regression.RandomForestRegressor",
        defaults={"numTrees": 50, "maxDepth": 8},
        search_space=dict(_FOREST_SPACE),
        description="random forest regressor",
        choices={"impurity": ("variance",), "featureSubsetStrategy": _FEATURE_SUBSET},
    ),
    _spec(
        name="gbt",
        task="regression",
        estimator="pyspark.ml.regression.GBTRegressor",
        defaults={"maxIter": 50, "maxDepth": 5, "stepSize": 0.1},
        search_space=_GBT_SPACE,
        description="gradient-boosted trees regressor",
        choices={
            "impurity": ("variance",),
            "lossType": ("squared", "absolute"),
            "featureSubsetStrategy": _FEATURE_SUBSET,
        },
    ),
    _spec(
        name="glm",
        task="regression",
        estimator="pyspark.ml.regression.GeneralizedLinearRegression",
        defaults={"maxIter": 50, "regParam": 0.0},
        search_space={"regParam": {"type": "loguniform", "low": 1e-4, "high": 1.0}},
        description=(
            "generalized linear model; family chosen from the label unless set (0/1 → binomial, "
            "non-negative integers → poisson, else gaussian); at most 4096 features"
        ),
        supports_sparse=False,
        max_features=4096,
        choices={
            "family": ("gaussian", "binomial", "poisson", "gamma", "tweedie"),
            "link": ("identity", "log", "inverse", "logit", "probit", "cloglog", "sqrt"),
            "solver": ("irls",),
        },
    ),
    _spec(
        name="decision_tree",
        task="regression",
        estimator="pyspark.ml.regression.DecisionTreeRegressor",
        defaults={"maxDepth": 8},
        search_space=_TREE_SPACE_REG,
        description="decision tree regressor",
        choices={"impurity": ("variance",)},
    ),
    _spec(
        name="xgboost",
        task="regression",
        estimator="xgboost.spark.SparkXGBRegressor",
        description=(
            "XGBoost gradient-boosted trees regressor (xgboost.spark, histogram method; xgboost's "
            "snake_case parameter names)"
        ),
        choices={
            **_XGB_CHOICES,
            "objective": (
                "reg:squarederror",
                "reg:squaredlogerror",
                "reg:pseudohubererror",
                "reg:absoluteerror",
                "reg:logistic",
                "count:poisson",
                "reg:gamma",
                "reg:tweedie",
            ),
        },
        **_XGB_COMMON,
    ),
    # ---------------------------------------------------------------- clustering
    _spec(
        name="kmeans",
        task="clustering",
        estimator="pyspark.ml.clustering.KMeans",
        defaults={"k": 3, "maxIter": 20},
        search_space={
            "k": {"type": "int", "low": 2, "high": 10},
            "initMode": {"type": "choice", "values": ["k-means||", "random"]},
        },
        description="k-means (k-means|| initialisation)",
        choices={
            "initMode": ("k-means||", "random"),
            "distanceMeasure": ("euclidean", "cosine"),
            "solver": ("auto", "row", "block"),
        },
    ),
    _spec(
        name="bisecting_kmeans",
        task="clustering",
        estimator="pyspark.ml.clustering.BisectingKMeans",
        defaults={"k": 3, "maxIter": 20},
        search_space={
            "k": {"type": "int", "low": 2, "high": 10},
            "minDivisibleClusterSize": {"type": "uniform", "low": 1.0, "high": 10.0},
        },
        description="bisecting (hierarchical, divisive) k-means",
        choices={"distanceMeasure": ("euclidean", "cosine")},
    ),
    _spec(
        name="gmm",
        task="clustering",
        estimator="pyspark.ml.clustering.GaussianMixture",
        defaults={"k": 3, "maxIter": 100},
        search_space={
            "k": {"type": "int", "low": 2, "high": 8},
            "tol": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
        },
        description="Gaussian mixture model (soft clustering; covariance grows with features²)",
        supports_probability=True,
        supports_sparse=False,
    ),
    # ---------------------------------------------------------------- recommendation
    _spec(
        name="als",
        task="recommendation",
        estimator="pyspark.ml.recommendation.ALS",
        defaults={
            "rank": 10,
            "maxIter": 10,
            "regParam": 0.1,
            "nonnegative": True,
            "implicitPrefs": False,
            "coldStartStrategy": "drop",
        },
        search_space={
            "rank": {"type": "int", "low": 5, "high": 50, "step": 5},
            "regParam": {"type": "loguniform", "low": 1e-3, "high": 1.0},
            "maxIter": {"type": "int", "low": 5, "high": 20, "step": 5},
        },
        description="alternating least squares matrix factorisation (explicit or implicit feedback)",
        choices={
            "coldStartStrategy": ("nan", "drop"),
            "intermediateStorageLevel": _STORAGE_LEVELS,
            "finalStorageLevel": _STORAGE_LEVELS,
        },
    ),
)

#: The registry: ``(task, name)`` → :class:`AlgorithmSpec`.
ALGORITHMS: dict[tuple[str, str], AlgorithmSpec] = {s.key: s for s in _ALL_SPECS}

#: Alternative spellings accepted in the config, mapped to the canonical name.
ALIASES: dict[str, str] = {
    "lr": "logistic_regression",
    "logistic": "logistic_regression",
    "rf": "random_forest",
    "gbm": "gbt",
    "gradient_boosting": "gbt",
    "gradient_boosted_trees": "gbt",
    "xgb": "xgboost",
    "xgboost_spark": "xgboost",
    "nb": "naive_bayes",
    "svm": "linear_svc",
    "svc": "linear_svc",
    "multilayer_perceptron": "mlp",
    "dt": "decision_tree",
    "linear": "linear_regression",
    "generalized_linear_regression": "glm",
    "k_means": "kmeans",
    "bisecting_k_means": "bisecting_kmeans",
    "gaussian_mixture": "gmm",
}


# -------------------------------------------------------------------------------------------- lookup
def normalize_name(name: str) -> str:
    """Canonical config spelling of an algorithm name (lower case, ``_`` for ``-``/space, aliases)."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    return ALIASES.get(key, key)


def algorithm_names(task: str | None = None) -> list[str]:
    """Sorted algorithm names, for one task or for all tasks."""
    return sorted({n for (t, n) in ALGORITHMS if task is None or t == task})


def tasks_for(name: str) -> list[str]:
    """The tasks an algorithm name exists for (empty when the name is unknown)."""
    key = normalize_name(name)
    return [t for t in TASKS if (t, key) in ALGORITHMS]


def describe_registry() -> str:
    """Valid names grouped by task, e.g. ``classification: gbt, ...; regression: ...``."""
    return "; ".join(f"{t}: {', '.join(algorithm_names(t))}" for t in TASKS)


def _did_you_mean(name: str, valid: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name_error(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> UnknownNameError:
    """An :class:`UnknownNameError` whose message also suggests the closest valid name."""
    err = UnknownNameError(kind, name, valid)
    err.args = (err.args[0] + _did_you_mean(name, valid),)
    return err


def _check_task_name(task: str) -> None:
    if task not in TASKS:
        raise unknown_name_error("task", task, TASKS)


def check_task(algorithm: str, task: str) -> None:
    """Raise :class:`ConfigError` unless ``algorithm`` exists for ``task``.

    Parameters
    ----------
    algorithm
        Config name of the algorithm.
    task
        The requested task (``model.task_type`` or the inferred one).

    Raises
    ------
    UnknownNameError
        ``algorithm`` or ``task`` is not a known name at all.
    ConfigError
        The algorithm exists, but not for this task (e.g. ``kmeans`` for classification).
    """
    _check_task_name(task)
    tasks = tasks_for(algorithm)
    if not tasks:
        raise unknown_name_error("algorithm", algorithm, algorithm_names())
    if task not in tasks:
        raise ConfigError([("model.task_type", task_mismatch_message(algorithm, task))])


def task_mismatch_message(algorithm: str, task: str) -> str:
    """Why ``algorithm`` cannot be used for ``task``, and the two ways to fix it."""
    tasks = tasks_for(algorithm)
    return (
        f"algorithm {algorithm!r} is a {' / '.join(tasks)} algorithm, not {task}; "
        f"either set model.task_type: {tasks[0]} or pick a {task} algorithm: "
        f"{', '.join(algorithm_names(task))}"
    )


def get_variants(name: str) -> list[AlgorithmSpec]:
    """Every task's spec for an algorithm name (``random_forest`` → classification and regression).

    Raises
    ------
    UnknownNameError
        The name is not in the registry; the message lists every valid name.
    """
    key = normalize_name(name)
    found = [ALGORITHMS[(t, key)] for t in TASKS if (t, key) in ALGORITHMS]
    if not found:
        raise unknown_name_error("algorithm", name, algorithm_names())
    return found


def get_algorithm(name: str, task: str | None = None) -> AlgorithmSpec:
    """Look an algorithm up by config name.

    Parameters
    ----------
    name
        ``model.algorithm`` (aliases such as ``svm`` or ``gaussian_mixture`` are accepted).
    task
        Needed for names that exist for several tasks (``random_forest``, ``gbt``,
        ``decision_tree``, ``xgboost``); optional otherwise.

    Returns
    -------
    AlgorithmSpec

    Raises
    ------
    UnknownNameError
        Unknown name (valid names of ``task`` are listed when the task is given) or unknown task.
    ConfigError
        The name exists but not for ``task``, or the name is ambiguous and ``task`` is missing.
    """
    key = normalize_name(name)
    if task is not None:
        _check_task_name(task)
        if (task, key) in ALGORITHMS:
            return ALGORITHMS[(task, key)]
        if not tasks_for(key):
            raise unknown_name_error(f"{task} algorithm", name, algorithm_names(task))
        raise ConfigError([("model.task_type", task_mismatch_message(key, task))])
    variants = get_variants(name)
    if len(variants) > 1:
        tasks = [v.task for v in variants]
        raise ConfigError(
            [
                (
                    "model.task_type",
                    f"algorithm {key!r} exists for {' and '.join(tasks)}; set model.task_type to one "
                    "of them (or let sparkpipe infer it from the target column)",
                )
            ]
        )
    return variants[0]


# ---------------------------------------------------------------------------------------- task logic
_CATEGORICAL_TYPES = ("string", "boolean", "bool", "categorical", "category", "object")
#: An integral target with at most this many distinct values is treated as a class label.
MAX_CLASSES_FOR_INTEGER_TARGET = 20


def infer_task(target_type: str | None, n_distinct: int | None, algorithm: str) -> str:
    """Decide the task from the algorithm and, when it is ambiguous, from the target column.

    Parameters
    ----------
    target_type
        Spark simple type name of the target (``"double"``, ``"int"``, ``"string"``, ...), or ``None``
        when there is no target.
    n_distinct
        Number of distinct target values (an estimate is fine), or ``None`` when unknown.
    algorithm
        Config name of the algorithm.

    Returns
    -------
    str
        The task. Algorithms that exist for one task return it whatever the target. For
        ``random_forest`` / ``gbt`` / ``decision_tree`` / ``xgboost``: string or boolean targets and
        targets with at most two distinct values → classification; integral targets with at most
        :data:`MAX_CLASSES_FOR_INTEGER_TARGET` distinct values → classification; other numeric
        targets → regression.

    Raises
    ------
    ConfigError
        The algorithm is ambiguous and nothing is known about the target.
    """
    tasks = [v.task for v in get_variants(algorithm)]
    if len(tasks) == 1:
        return tasks[0]
    kind = (target_type or "").strip().lower()
    if kind.startswith("decimal"):
        kind = "decimal"
    if kind in _CATEGORICAL_TYPES:
        return "classification"
    if n_distinct is not None and n_distinct <= 2:
        return "classification"
    if kind in INTEGRAL_TYPES and n_distinct is not None and n_distinct <= MAX_CLASSES_FOR_INTEGER_TARGET:
        return "classification"
    if kind or n_distinct is not None:
        return "regression"
    raise ConfigError(
        [
            (
                "model.task_type",
                f"cannot tell whether {normalize_name(algorithm)!r} should do classification or "
                "regression without a target column; set model.task_type (and features.target)",
            )
        ]
    )


# ----------------------------------------------------------------------------------- hyperparameters
@cache
def _spark_params(estimator_path: str) -> dict[str, str]:
    """Param name → Spark converter name of an estimator class (from the generated table, no import)."""
    from sparkpipe.models.params import param_names

    return param_names(estimator_path)


def is_column_param(name: str) -> bool:
    """Column-name Params (``featuresCol``, ``labelCol``, ``userCol``, xgboost's ``qid_col``, ...) are
    set by sparkpipe."""
    return name.endswith(("Col", "Cols", "_col", "_cols"))


def spark_params(spec: AlgorithmSpec) -> list[str]:
    """Every Spark Param name of the estimator, column params included (no JVM)."""
    return sorted(_spark_params(spec.estimator))


def valid_params(spec: AlgorithmSpec) -> list[str]:
    """Hyperparameter names a user may set for ``spec`` (no JVM is started).

    The Spark Params of the estimator class minus column params (``featuresCol``, ``labelCol``,
    ``predictionCol``, ... — sparkpipe wires those itself), plus the friendly extras of
    ``spec.extra_params`` (e.g. MLP ``hidden_layers``).
    """
    names = {
        n for n in _spark_params(spec.estimator) if not is_column_param(n) and n not in spec.blocked_params
    }
    names.update(spec.extra_params)
    return sorted(names)


def _param_converter(spec: AlgorithmSpec, name: str, converter: str) -> tuple[str, Any]:
    """The converter name and function that check a value of Param ``name`` (whose Spark converter is
    ``converter``): the Param's own, or the one ``spec.param_types`` names for Params whose converter
    accepts anything (xgboost)."""
    from sparkpipe.models.params import converter_of

    conv = spec.param_types.get(name, converter)
    return conv, converter_of(conv)


def _check_hidden_layers(value: Any) -> str | None:
    ok = (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    )
    if not ok:
        return f"must be a non-empty list of positive integers such as [64, 32] (got {value!r})"
    return None


def check_param_value(spec: AlgorithmSpec, name: str, value: Any) -> str | None:
    """Check one value of a known hyperparameter without a JVM.

    Returns
    -------
    str or None
        A message saying what is wrong and what is allowed, or ``None`` when the value is fine.
    """
    if name == "hidden_layers":
        return _check_hidden_layers(value)
    param = _spark_params(spec.estimator).get(name)
    if param is None:
        return None
    conv, convert = _param_converter(spec, name, param)
    if conv == "toMatrix":
        return "is a Spark Matrix parameter and cannot be set from the config"
    try:
        converted = convert(value)
    except (TypeError, ValueError):
        words = _CONVERTER_WORDS.get(conv, "a different type")
        return f"must be {words}, got {value!r} ({type(value).__name__})"
    if name in spec.choices:
        allowed = spec.choices[name]
        text = str(converted)
        folded = name in _CASE_INSENSITIVE
        ok = (text.lower() in {a.lower() for a in allowed}) if folded else (text in allowed)
        if not ok and name == "featureSubsetStrategy":
            try:
                ok = float(text) > 0
            except ValueError:
                ok = False
        if not ok:
            extra = " or a number n > 0 as a string" if name == "featureSubsetStrategy" else ""
            return f"{value!r} is not allowed; use one of: {', '.join(allowed)}{extra}" + _did_you_mean(
                text, allowed
            )
    bounds = spec.bounds.get(name) or _BOUNDS.get(name)
    if bounds is not None and isinstance(converted, int | float) and not isinstance(converted, bool):
        low, high, low_inc, high_inc = bounds
        below = converted < low or (converted == low and not low_inc)
        above = converted > high or (converted == high and not high_inc)
        if below or above or (isinstance(converted, float) and math.isnan(converted)):
            lo = "[" if low_inc else "("
            hi = "]" if high_inc else ")"
            high_txt = "inf" if math.isinf(high) else f"{high:g}"
            return f"{value!r} is out of range; allowed: {lo}{low:g}, {high_txt}{hi}"
    if name == "layers" and isinstance(converted, list) and (len(converted) < 2 or min(converted) < 1):
        return f"must list at least input and output sizes, all >= 1 (got {value!r}); prefer hidden_layers"
    return None


def _unknown_param_message(spec: AlgorithmSpec, name: str) -> str:
    valid = valid_params(spec)
    if name in spec.blocked_params:
        return f"{name!r} cannot be set for {spec.name}: {spec.blocked_params[name]}"
    if is_column_param(name) and name in _spark_params(spec.estimator):
        return (
            f"{name!r} is a column parameter; sparkpipe sets column names itself (features.target, "
            "features.user_col / item_col), so remove it from the hyperparameters"
        )
    hint = _did_you_mean(name, valid)
    lower = {v.lower(): v for v in valid}
    if not hint and name.lower().replace("_", "") in {k.replace("_", "") for k in lower}:
        match = next(v for k, v in lower.items() if k.replace("_", "") == name.lower().replace("_", ""))
        style = (
            "xgboost parameter names are snake_case" if "_" in match else "Spark Param names are camelCase"
        )
        hint = f" (did you mean {match!r}? {style})"
    return (
        f"unknown hyperparameter {name!r} for {spec.name} ({spec.task}){hint}. Valid: {', '.join(valid)} "
        "(column parameters such as featuresCol/labelCol are set by sparkpipe)"
    )


def hyperparameter_problems(
    spec: AlgorithmSpec, params: Mapping[str, Any] | None, key_path: str = "model.hyperparameters"
) -> list[tuple[str, str]]:
    """All problems with a hyperparameter mapping, as ``(key_path, message)`` pairs (no JVM)."""
    problems: list[tuple[str, str]] = []
    valid = set(valid_params(spec))
    for name, value in (params or {}).items():
        path = f"{key_path}.{name}"
        if name not in valid:
            problems.append((path, _unknown_param_message(spec, str(name))))
            continue
        msg = check_param_value(spec, name, value)
        if msg:
            problems.append((path, msg))
    if params and "hidden_layers" in params and "layers" in params:
        problems.append(
            (f"{key_path}.layers", "set either hidden_layers or layers, not both (hidden_layers is simpler)")
        )
    if params and params.get("enable_sparse_data_optim") is True and spec.name == "xgboost":
        missing = params.get("missing", math.nan)
        if not (isinstance(missing, int | float) and missing == 0):
            problems.append(
                (
                    f"{key_path}.enable_sparse_data_optim",
                    "xgboost reads sparse vectors as sparse only when zeros mean missing; set "
                    "missing: 0.0 as well (or drop enable_sparse_data_optim)",
                )
            )
    return problems


def check_hyperparameters(
    spec: AlgorithmSpec, params: Mapping[str, Any] | None, key_path: str = "model.hyperparameters"
) -> None:
    """Raise :class:`ConfigError` listing every unknown or ill-typed hyperparameter (no JVM).

    Parameters
    ----------
    spec
        The algorithm.
    params
        Hyperparameters as written in the config (Spark Param names).
    key_path
        Prefix of the key paths in the error, e.g. ``model.hyperparameters``.
    """
    problems = hyperparameter_problems(spec, params, key_path)
    if problems:
        raise ConfigError(problems)


# -------------------------------------------------------------------------------------- search space
_SEARCH_KEYS: dict[str, set[str]] = {
    "choice": {"type", "values"},
    "uniform": {"type", "low", "high"},
    "loguniform": {"type", "low", "high"},
    "int": {"type", "low", "high", "step", "log"},
}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def search_space_problems(
    spec: AlgorithmSpec, space: Mapping[str, Any] | None, key_path: str = "tuning.search_space"
) -> list[tuple[str, str]]:
    """Check a search space in the neutral format against ``spec`` (no JVM).

    Each entry is ``{type: choice, values: [...]}``, ``{type: uniform|loguniform, low, high}`` or
    ``{type: int, low, high, step?, log?}``; names must be valid hyperparameters and the values must
    fit the Param's type and range.
    """
    problems: list[tuple[str, str]] = []
    valid = set(valid_params(spec))
    for name, entry in (space or {}).items():
        problems += _search_entry_problems(spec, valid, name, entry, f"{key_path}.{name}")
    return problems


def _search_entry_problems(
    spec: AlgorithmSpec, valid: set[str], name: Any, entry: Any, path: str
) -> list[tuple[str, str]]:
    """The problems of one search-space entry (``path`` is its key path)."""
    if name not in valid:
        return [(path, _unknown_param_message(spec, str(name)))]
    if not isinstance(entry, Mapping):
        return [(path, f"must be a mapping with a 'type' ({', '.join(SEARCH_TYPES)}), got {entry!r}")]
    kind = entry.get("type")
    if kind not in _SEARCH_KEYS:
        return [(f"{path}.type", f"{kind!r} is not a search type; use one of: {', '.join(SEARCH_TYPES)}")]
    problems: list[tuple[str, str]] = []
    extra = set(entry) - _SEARCH_KEYS[kind]
    if extra:
        problems.append(
            (
                path,
                f"unknown key(s) {', '.join(sorted(map(str, extra)))} for type {kind}; allowed: "
                f"{', '.join(sorted(_SEARCH_KEYS[kind]))}",
            )
        )
    if kind == "choice":
        values = entry.get("values")
        if not isinstance(values, list) or not values:
            problems.append((f"{path}.values", f"must be a non-empty list, got {values!r}"))
            return problems
        for i, v in enumerate(values):
            msg = check_param_value(spec, name, v)
            if msg:
                problems.append((f"{path}.values[{i}]", msg))
        return problems
    return problems + _search_range_problems(spec, name, kind, entry, path)


def _search_range_problems(
    spec: AlgorithmSpec, name: Any, kind: str, entry: Mapping[str, Any], path: str
) -> list[tuple[str, str]]:
    """The problems of a ``uniform``, ``loguniform`` or ``int`` entry's ``low``/``high`` (and ``step``,
    ``log``): numbers, in order, of the Param's type and range."""
    problems: list[tuple[str, str]] = []
    low, high = entry.get("low"), entry.get("high")
    for key, v in (("low", low), ("high", high)):
        if not _is_number(v):
            problems.append((f"{path}.{key}", f"must be a finite number, got {v!r}"))
    if problems:
        return problems
    if kind == "int":
        bad = _int_range_problems(entry, low, high, path, problems)
    else:
        bad = False
        if low >= high:
            problems.append((path, f"low ({low}) must be < high ({high})"))
            bad = True
        if kind == "loguniform" and low <= 0:
            problems.append((f"{path}.low", f"must be > 0 for loguniform, got {low!r}"))
            bad = True
        param = _spark_params(spec.estimator).get(name)
        if param is not None and _param_converter(spec, name, param)[0] == "toInt":
            problems.append((f"{path}.type", f"{name} takes integers; use type: int"))
            bad = True
    if bad:
        return problems
    for key, v in (("low", low), ("high", high)):
        msg = check_param_value(spec, name, int(v) if kind == "int" else float(v))
        if msg:
            problems.append((f"{path}.{key}", msg))
    return problems


def _int_range_problems(
    entry: Mapping[str, Any], low: Any, high: Any, path: str, problems: list[tuple[str, str]]
) -> bool:
    """Append the problems of an ``int`` entry's bounds, ``step`` and ``log`` to ``problems``; True when
    the bounds cannot be checked against the Param."""
    bad = False
    for key, v in (("low", low), ("high", high)):
        if not float(v).is_integer():
            problems.append((f"{path}.{key}", f"must be an integer for type int, got {v!r}"))
            bad = True
    step = entry.get("step", 1)
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 1):
        problems.append((f"{path}.step", f"must be an integer >= 1, got {step!r}"))
        bad = True
    if low > high:
        problems.append((path, f"low ({low}) must be <= high ({high})"))
        bad = True
    if entry.get("log") and low <= 0:
        problems.append((f"{path}.low", "must be > 0 when log: true"))
    return bad


def param_grid_problems(
    spec: AlgorithmSpec, grid: Mapping[str, Any] | None, key_path: str = "tuning.param_grid"
) -> list[tuple[str, str]]:
    """Check a flat param grid ``{param: [values...]}`` against ``spec`` (no JVM)."""
    problems: list[tuple[str, str]] = []
    valid = set(valid_params(spec))
    for name, values in (grid or {}).items():
        path = f"{key_path}.{name}"
        if name not in valid:
            problems.append((path, _unknown_param_message(spec, str(name))))
            continue
        if not isinstance(values, list) or not values:
            problems.append((path, f"must be a non-empty list of values, got {values!r}"))
            continue
        for i, v in enumerate(values):
            msg = check_param_value(spec, name, v)
            if msg:
                problems.append((f"{path}[{i}]", msg))
    return problems


# ------------------------------------------------------------------------------------------ building
def requires_nonnegative_features(
    spec: AlgorithmSpec, hyperparameters: Mapping[str, Any] | None = None
) -> bool:
    """Whether the features must be non-negative for these hyperparameters.

    Naive Bayes needs it for ``modelType`` multinomial, complement and bernoulli (bernoulli also
    needs 0/1 values), not for the default gaussian. Feature engineering uses this to pick min-max
    scaling instead of standardisation.
    """
    if not spec.needs_nonnegative_features:
        return False
    if spec.name == "naive_bayes":
        merged = {**spec.defaults, **(hyperparameters or {})}
        return str(merged.get("modelType", "multinomial")) in _NONNEGATIVE_NB_TYPES
    return True


def glm_family_for(label_stats: Mapping[str, Any] | None) -> str:
    """Default GLM family from label statistics.

    Parameters
    ----------
    label_stats
        Optional keys ``min``, ``max``, ``is_integer`` (bool) and ``n_distinct``.

    Returns
    -------
    str
        ``binomial`` for 0/1 labels, ``poisson`` for non-negative integer (count) labels with more
        than two values, ``gaussian`` otherwise or when nothing is known.
    """
    if not label_stats:
        return "gaussian"
    lo, hi = label_stats.get("min"), label_stats.get("max")
    is_int = bool(label_stats.get("is_integer"))
    n = label_stats.get("n_distinct")
    if lo is not None and hi is not None and is_int and lo >= 0:
        if hi <= 1 and (n is None or n <= 2):
            return "binomial"
        return "poisson"
    return "gaussian"


def check_num_classes(spec: AlgorithmSpec, num_classes: int | None) -> None:
    """Raise :class:`ConfigError` when a binary-only algorithm meets a multiclass label."""
    if spec.binary_only and num_classes is not None and num_classes > 2:
        others = [
            n for n in algorithm_names("classification") if not ALGORITHMS[("classification", n)].binary_only
        ]
        raise ConfigError(
            [
                (
                    "model.algorithm",
                    f"{spec.name} supports binary labels (0/1) only in Spark MLlib, but the label has "
                    f"{num_classes} classes; use a multiclass algorithm instead: {', '.join(others)}",
                )
            ]
        )


# ------------------------------------------------------------------------------ class imbalance
def supports_class_weight(spec: AlgorithmSpec) -> bool:
    """A classifier whose Spark estimator has ``weightCol`` (``model.class_weight: balanced``)."""
    return spec.task == "classification" and "weightCol" in _spark_params(spec.estimator)


def supports_auto_threshold(spec: AlgorithmSpec) -> bool:
    """A classifier with probabilities whose fitted model has Spark's ``thresholds`` Param
    (``evaluation.threshold: auto``)."""
    return (
        spec.task == "classification"
        and spec.supports_probability
        and "thresholds" in _spark_params(spec.estimator)
    )


def class_weight_algorithms() -> list[str]:
    """Classification algorithms that accept ``model.class_weight: balanced``."""
    return [
        n
        for n in algorithm_names("classification")
        if supports_class_weight(ALGORITHMS[("classification", n)])
    ]


def auto_threshold_algorithms() -> list[str]:
    """Classification algorithms that accept ``evaluation.threshold: auto``."""
    return [
        n
        for n in algorithm_names("classification")
        if supports_auto_threshold(ALGORITHMS[("classification", n)])
    ]


def imbalance_problems(
    specs: list[AlgorithmSpec],
    class_weight: str,
    threshold: str | None,
    hyperparameters: Mapping[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """Problems of ``model.class_weight`` / ``evaluation.threshold`` for the algorithm's variants
    (several when the task is not known yet: a ``random_forest`` may still turn out a classifier)."""
    problems: list[tuple[str, str]] = []
    if not specs:
        return problems
    classifiers = [s for s in specs if s.task == "classification"]
    name = specs[0].name
    tasks = "/".join(sorted({s.task for s in specs}))
    if class_weight == "balanced":
        if not classifiers:
            problems.append(
                (
                    "model.class_weight",
                    f"balanced applies to classifiers only, and {name} is a {tasks} "
                    "algorithm here; remove model.class_weight (or set it to none)",
                )
            )
        elif not any(supports_class_weight(s) for s in classifiers):
            problems.append(
                (
                    "model.class_weight",
                    f"balanced needs an estimator with weightCol, which {name} does not "
                    f"have; use one of {', '.join(class_weight_algorithms())}, or set model.class_weight: none",
                )
            )
    if threshold == "auto":
        if not classifiers:
            problems.append(
                (
                    "evaluation.threshold",
                    f"auto applies to binary classifiers only, and {name} is a {tasks} "
                    "algorithm here; remove evaluation.threshold",
                )
            )
        elif not any(supports_auto_threshold(s) for s in classifiers):
            problems.append(
                (
                    "evaluation.threshold",
                    f"auto needs predicted probabilities and a thresholds Param, which "
                    f"{name} does not have; use one of {', '.join(auto_threshold_algorithms())}, or remove "
                    "evaluation.threshold",
                )
            )
        clash = sorted(set(hyperparameters or {}) & {"threshold", "thresholds"})
        if clash:
            problems.append(
                (
                    "evaluation.threshold",
                    f"auto chooses the threshold itself, but model.hyperparameters sets "
                    f"{', '.join(clash)}; remove one of them",
                )
            )
    return problems


def check_imbalance_task(
    class_weight: str, threshold: str | None, task: str, num_classes: int | None
) -> None:
    """Raise :class:`ConfigError` once the task and class count are known (inferred at run time)."""
    problems: list[tuple[str, str]] = []
    if class_weight == "balanced" and task != "classification":
        problems.append(
            (
                "model.class_weight",
                f"balanced applies to classifiers only, but this run's task is {task}; "
                "remove model.class_weight (or set it to none)",
            )
        )
    if threshold == "auto" and (task != "classification" or (num_classes or 0) != 2):
        what = f"{num_classes} classes" if task == "classification" else f"task {task}"
        problems.append(
            (
                "evaluation.threshold",
                f"auto applies to binary classifiers only, but this run has {what}; "
                "remove evaluation.threshold",
            )
        )
    if problems:
        raise ConfigError(problems)


def mlp_layers(
    hyperparameters: Mapping[str, Any] | None, num_features: int | None, num_classes: int | None
) -> list[int]:
    """MLP ``layers``: ``[num_features, *hidden_layers, num_classes]``, or the user's full ``layers``.

    Raises
    ------
    ConfigError
        A user-given ``layers`` does not start with the feature count or end with the class count.
    ModelError
        ``num_features`` or ``num_classes`` is missing and ``layers`` was not given.
    """
    user = dict(hyperparameters or {})
    if "layers" in user:
        layers = [int(v) for v in user["layers"]]
        for idx, expected, what in (
            (0, num_features, "feature vector length"),
            (-1, num_classes, "class count"),
        ):
            if expected is not None and layers[idx] != expected:
                raise ConfigError(
                    [
                        (
                            "model.hyperparameters.layers",
                            f"layers[{idx}] is {layers[idx]} but the {what} is {expected}; write "
                            "hidden_layers: [...] instead and sparkpipe computes input and output sizes",
                        )
                    ]
                )
        return layers
    if num_features is None or num_classes is None:
        raise ModelError(
            "mlp needs num_features and num_classes to compute its layers "
            "([num_features, *hidden_layers, num_classes]); pass them to build_estimator"
        )
    hidden = user.get("hidden_layers", ALGORITHMS[("classification", "mlp")].defaults["hidden_layers"])
    return [int(num_features), *[int(h) for h in hidden], int(num_classes)]


def xgboost_num_workers(sc: Any) -> int:
    """Worker count for xgboost.spark: Spark's default parallelism, capped by the task slots.

    xgboost.spark trains in one barrier stage where every worker holds a task slot at the same time,
    so asking for more workers than slots would wait for slots that never come. Each worker uses
    ``spark.task.cpus`` threads.
    """
    workers = max(1, int(sc.defaultParallelism))
    try:
        from xgboost.spark.utils import _get_max_num_concurrent_tasks

        slots = int(_get_max_num_concurrent_tasks(sc))
    except Exception as exc:  # an older xgboost or a cluster manager that cannot tell
        log.debug("xgboost: cannot read the number of task slots (%s)", exc)
        slots = 0
    return min(workers, slots) if slots > 0 else workers


def build_estimator(
    spec: AlgorithmSpec,
    hyperparameters: Mapping[str, Any] | None = None,
    features_col: str = "features",
    label_col: str = "label",
    prediction_col: str = "prediction",
    seed: int | None = None,
    num_classes: int | None = None,
    num_features: int | None = None,
    user_col: str | None = "user",
    item_col: str | None = "item",
    rating_col: str | None = "rating",
    label_stats: Mapping[str, Any] | None = None,
    weight_col: str | None = None,
) -> Estimator:
    """Create the configured Spark estimator (needs an active SparkSession).

    Parameters
    ----------
    spec
        The algorithm (from :func:`get_algorithm`).
    hyperparameters
        User hyperparameters; they override ``spec.defaults``.
    features_col, label_col, prediction_col
        Column names wired into the estimator (where it has such Params).
    seed
        Seed for estimators with a ``seed`` Param (usually ``data.seed``; xgboost's ``random_state``),
        unless the user set one.
    num_classes
        Number of label classes; checked against binary-only algorithms and used for MLP layers.
    num_features
        Length of the feature vector; used for MLP layers and GLM's 4096-feature limit.
    user_col, item_col, rating_col
        ALS columns (``None`` means ``user``, ``item``, ``rating``).
    label_stats
        Optional ``min``/``max``/``is_integer``/``n_distinct`` of the label; picks GLM's family
        when the user did not set one (see :func:`glm_family_for`).
    weight_col
        Column of per-row weights (``model.class_weight: balanced``); the estimator must have
        ``weightCol`` (see :func:`supports_class_weight`).

    Notes
    -----
    ``xgboost`` gets ``num_workers`` from :func:`xgboost_num_workers` (Spark's default parallelism,
    capped by the task slots) unless the config sets it, and ``random_state`` from ``seed``.

    Returns
    -------
    pyspark.ml.Estimator

    Raises
    ------
    ConfigError
        Bad hyperparameters, a binary-only algorithm on a multiclass label, inconsistent MLP
        layers, or too many features for GLM.
    ModelError
        No active SparkSession, or Spark rejected the parameters.
    """
    from pyspark import SparkContext

    check_hyperparameters(spec, hyperparameters)
    check_num_classes(spec, num_classes)
    _check_max_features(spec, num_features)
    if SparkContext._active_spark_context is None:
        raise ModelError(
            "build_estimator needs an active SparkSession; start one first with sparkpipe.session.get_spark"
        )
    user = dict(hyperparameters or {})
    params: dict[str, Any] = {**spec.defaults, **user}
    spark_names = _spark_params(spec.estimator)
    _algorithm_specifics(spec, params, user, num_features, num_classes, label_stats, seed)
    wiring = _column_wiring(
        spec, spark_names, features_col, label_col, prediction_col, user_col, item_col, rating_col, weight_col
    )
    return _instantiate(spec, _spark_param_values(spec, params, user, spark_names, wiring, seed))


def _spark_param_values(
    spec: AlgorithmSpec,
    params: dict[str, Any],
    user: Mapping[str, Any],
    spark_names: Mapping[str, Any],
    wiring: Mapping[str, str],
    seed: int | None,
) -> dict[str, Any]:
    """``params`` with the column wiring and the seed added, reduced to the estimator's Params and
    converted to the types the library expects."""
    for name, value in wiring.items():
        if name in spark_names:
            params[name] = value
    if seed is not None and "seed" in spark_names and "seed" not in user:
        params["seed"] = int(seed)
    for name in list(params):
        if name not in spark_names:  # friendly extras already translated
            params.pop(name)
        elif name in spec.param_types:  # YAML's 3.0 for an integer Param, as the library expects it
            params[name] = _param_converter(spec, name, spark_names[name])[1](params[name])
    return params


def _check_max_features(spec: AlgorithmSpec, num_features: int | None) -> None:
    """GLM (and any algorithm with ``max_features``) refuses a wider feature vector."""
    if spec.max_features is not None and num_features is not None and num_features > spec.max_features:
        raise ConfigError(
            [
                (
                    "model.algorithm",
                    f"{spec.name} supports at most {spec.max_features} features in Spark, the feature "
                    f"vector has {num_features}; reduce features (features.selection) or use "
                    "linear_regression / gbt / random_forest",
                )
            ]
        )


def _algorithm_specifics(
    spec: AlgorithmSpec,
    params: dict[str, Any],
    user: Mapping[str, Any],
    num_features: int | None,
    num_classes: int | None,
    label_stats: Mapping[str, Any] | None,
    seed: int | None,
) -> None:
    """Fill in ``params`` what one algorithm computes from the data: MLP layers, GLM's family, xgboost's
    workers and random state."""
    if spec.name == "mlp":
        params["layers"] = mlp_layers(user, num_features, num_classes)
    if spec.name == "glm" and "family" not in user:
        params["family"] = glm_family_for(label_stats)
        log.info(
            "glm: family %r chosen from the label (set model.hyperparameters.family to change)",
            params["family"],
        )
    if spec.name == "naive_bayes" and requires_nonnegative_features(spec, params):
        log.info("naive_bayes modelType %r needs non-negative features", params.get("modelType"))
    if spec.name == "xgboost":
        from pyspark import SparkContext

        if "num_workers" not in user:
            params["num_workers"] = xgboost_num_workers(SparkContext._active_spark_context)
        if seed is not None and "random_state" not in user:
            params["random_state"] = int(seed)


def _column_wiring(
    spec: AlgorithmSpec,
    spark_names: Mapping[str, Any],
    features_col: str,
    label_col: str,
    prediction_col: str,
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    weight_col: str | None,
) -> dict[str, str]:
    """The column Params to wire into the estimator (only those it has are set)."""
    wiring = {
        "featuresCol": features_col,
        "labelCol": label_col,
        "predictionCol": prediction_col,
        "userCol": user_col or "user",
        "itemCol": item_col or "item",
        "ratingCol": rating_col or "rating",
    }
    if spec.task == "recommendation":
        wiring.pop("labelCol")
    if weight_col:
        if "weightCol" not in spark_names:
            raise ConfigError(
                [
                    (
                        "model.class_weight",
                        f"balanced needs an estimator with weightCol, which {spec.name} does not have; use "
                        f"one of {', '.join(class_weight_algorithms())}, or set model.class_weight: none",
                    )
                ]
            )
        wiring["weightCol"] = weight_col
    return wiring


def _instantiate(spec: AlgorithmSpec, params: dict[str, Any]) -> Estimator:
    """The estimator with ``params`` set one by one (constructors do not all accept every Param: ALS)."""
    cls = spec.estimator_class()
    try:
        estimator = cls()
        for name, value in params.items():
            estimator.set(estimator.getParam(name), value)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build {spec.name} with {params!r}: {exc}") from exc
    log.debug("built %s with %s", cls.__name__, params)
    return estimator
