"""``fit``: feature stages fitted once, then the estimator (tuned when configured) → :class:`FitResult`.

The served artifact is one ``PipelineModel``: feature stages + model (+ ``IndexToString`` when the
label was a string). The label indexer is *not* part of it, so serving never needs the target column.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sparkpipe.config import PipelineConfig
from sparkpipe.core import LABEL_COL, WEIGHT_COL, FitResult, PreparedData
from sparkpipe.errors import DataError, ModelError
from sparkpipe.progress import Progress

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

    from sparkpipe.features.plan import FeaturePlan
    from sparkpipe.models.algorithms import AlgorithmSpec
    from sparkpipe.tracking import Tracker

log = logging.getLogger(__name__)

PROFILE_MAX_ROWS = 100_000
"""Training rows profiled at most (a seeded sample beyond that); see :func:`_bounded_profile`."""


def fit_model(
    spark: SparkSession,
    cfg: PipelineConfig,
    data: PreparedData,
    progress: Progress | None = None,
    algorithm: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    tracker: Tracker | None = None,
) -> FitResult:
    """Fit feature stages once, then the estimator (tuned when ``tuning.enabled``); return the served
    model and what fitting it decided.

    Parameters
    ----------
    algorithm, hyperparameters
        Default ``model.algorithm`` and ``model.hyperparameters``.
    tracker
        A :class:`~sparkpipe.tracking.Tracker` with an active run makes tuning log each trial as a
        nested child run.
    """
    from pyspark import StorageLevel

    from sparkpipe.models.algorithms import build_estimator, get_algorithm

    t0 = time.perf_counter()
    progress = progress or Progress()
    algorithm = algorithm or cfg.model.algorithm
    spec = get_algorithm(algorithm, data.task)
    params = dict(cfg.model.hyperparameters if hyperparameters is None else hyperparameters)
    with progress.step("feature engineering"):
        plan, feature_model, data = _fit_features(cfg, data, spec, params, algorithm)
        num_features = len(plan.feature_names) or None
        num_classes = _class_count(cfg, data)
        weights = balanced_class_weights(data.train) if cfg.model.class_weight == "balanced" else None
        # only what the estimator reads: a cache of every intermediate column exhausted the heap
        train_features = _training_columns(
            feature_model.transform(data.train), plan.features_col, data, weights
        )
        if cfg.optimization.cache_data:
            train_features = train_features.persist(StorageLevel.MEMORY_AND_DISK)

    estimator = build_estimator(
        spec,
        params,
        **_estimator_columns(plan, data, bool(weights)),
        seed=cfg.data.seed,
        num_classes=num_classes,
        num_features=num_features,
    )
    with progress.step(f"train {algorithm}"):
        model, tuning_info = _fit_estimator(spark, cfg, spec, estimator, train_features, data, tracker)
    if cfg.optimization.cache_data:
        train_features.unpersist()
    class_weights = _named_weights(weights, data.label_labels) if weights else None
    if class_weights:
        data.lineage["class_weights"] = class_weights
    return FitResult(
        model=_served_model(feature_model, model, data.label_labels),
        plan=plan,
        spec=spec,
        algorithm=algorithm,
        data=data,
        num_features=num_features,
        num_classes=num_classes,
        tuning=tuning_info,
        class_weights=class_weights,
        train_seconds=time.perf_counter() - t0,
    )


def _fit_estimator(
    spark: SparkSession,
    cfg: PipelineConfig,
    spec: AlgorithmSpec,
    estimator: Any,
    train_features: DataFrame,
    data: PreparedData,
    tracker: Tracker | None,
) -> tuple[Any, dict[str, Any] | None]:
    """The fitted model and the tuning summary (``None`` without ``tuning.enabled``)."""
    if cfg.tuning.enabled:
        from sparkpipe.tuning import tune

        return tune(spark, cfg, spec, estimator, train_features, data, tracker=tracker)
    return estimator.fit(train_features), None


def _served_model(feature_model: PipelineModel, model: Any, label_labels: list[str] | None) -> PipelineModel:
    """Feature stages + model (+ ``IndexToString`` back to the string labels) as one PipelineModel."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import IndexToString

    stages = [*feature_model.stages, model]
    if label_labels:
        stages.append(IndexToString(inputCol="prediction", outputCol="predictedLabel", labels=label_labels))
    return PipelineModel(stages=stages)


def _fit_features(
    cfg: PipelineConfig, data: PreparedData, spec: AlgorithmSpec, params: dict[str, Any], algorithm: str
) -> tuple[FeaturePlan, PipelineModel, PreparedData]:
    """The feature plan, its stages fitted on the training split, and the data as the model sees it
    (rows ``missing_values: drop`` removed; a recommender's ids replaced by their indexed columns)."""
    from pyspark.ml import Pipeline

    from sparkpipe.features.auto import build_feature_stages
    from sparkpipe.models.algorithms import requires_nonnegative_features

    features_cfg = cfg.features.model_copy(update={"user_col": data.user_col, "item_col": data.item_col})
    raw_train = (
        data.train.drop(LABEL_COL)
        if LABEL_COL in data.train.columns and data.target != LABEL_COL
        else data.train
    )
    plan = build_feature_stages(
        raw_train,
        features_cfg,
        data.task,
        data.target,
        nonnegative=requires_nonnegative_features(spec, params),
        seed=cfg.data.seed,
        profile=_bounded_profile(raw_train, _expected_train_rows(cfg, data), cfg.data.seed),
    )
    if plan.dropna_subset:  # missing_values.strategy: drop — count what is dropped, per split
        data = _drop_missing(data, plan.dropna_subset)
    if cfg.features.missing_values.strategy == "none" and spec.estimator.startswith("pyspark."):
        _refuse_missing(data.train, plan.nan_inputs, algorithm)  # MLlib fails on NaN features
    feature_model = Pipeline(stages=list(plan.stages)).fit(data.train)
    plan.resolve_feature_names(feature_model)
    if data.task == "recommendation":  # string ids are indexed by the plan into *__idx columns
        data = data.with_(user_col=plan.user_col or data.user_col, item_col=plan.item_col or data.item_col)
    return plan, feature_model, data


def _estimator_columns(plan: FeaturePlan, data: PreparedData, weighted: bool) -> dict[str, str | None]:
    """The columns an estimator reads: features, label (the rating of a recommender), ids, weight."""
    return {
        "features_col": plan.features_col,
        "label_col": LABEL_COL,
        "user_col": data.user_col,
        "item_col": data.item_col,
        "rating_col": LABEL_COL,
        "weight_col": WEIGHT_COL if weighted else None,
    }


def _class_count(cfg: PipelineConfig, data: PreparedData) -> int | None:
    """Classes of a classification label (``None`` for other tasks), checked against the imbalance
    settings (``model.class_weight``, ``evaluation.threshold``)."""
    from sparkpipe.models.algorithms import check_imbalance_task

    num_classes = len(data.label_labels) if data.label_labels else data.num_classes
    if data.task == "classification" and num_classes is None:
        num_classes = int(data.train.agg({LABEL_COL: "max"}).first()[0]) + 1
    check_imbalance_task(cfg.model.class_weight, cfg.evaluation.threshold, data.task, num_classes)
    return num_classes


def _expected_train_rows(cfg: PipelineConfig, data: PreparedData) -> int | None:
    """Training rows to expect from the labelled rows and the split fractions (before they are counted)."""
    rows = data.lineage.get("labelled_rows") or data.lineage.get("row_count")
    return int(rows * (1.0 - cfg.data.validation_split - cfg.data.test_split)) if rows else None


def _training_columns(
    df: DataFrame, features_col: str, data: PreparedData, weights: dict[float, float] | None = None
) -> DataFrame:
    """The columns an estimator reads: features, label, the ids of a recommender, and the row weight
    (:data:`WEIGHT_COL`, from the label) when ``weights`` (label → weight) are given."""
    from pyspark.sql import functions as F

    keep = [features_col, LABEL_COL, data.user_col, data.item_col]
    cols: list[Any] = [c for c in dict.fromkeys(keep) if c and c in df.columns]
    if weights:
        by_label = F.create_map(*[F.lit(x) for label, w in weights.items() for x in (float(label), float(w))])
        cols.append(by_label[F.col(LABEL_COL)].alias(WEIGHT_COL))
    return df.select(*cols)


def balanced_class_weights(train: DataFrame) -> dict[float, float]:
    """``label → n_rows / (n_classes * n_rows_of_label)`` over the training split (scikit-learn's
    ``balanced``), from one aggregation whose result has one row per class (the driver holds
    nothing that grows with the rows)."""
    counts = {float(r[0]): int(r[1]) for r in train.groupBy(LABEL_COL).count().collect() if r[0] is not None}
    total = sum(counts.values())
    if not counts or not total:
        raise DataError("model.class_weight: balanced found no labelled training rows to weigh")
    return {label: total / (len(counts) * n) for label, n in sorted(counts.items())}


def _named_weights(weights: dict[float, float], labels: list[str] | None) -> dict[str, float]:
    """Class weights keyed by the class as the user knows it (the string label, else the number)."""
    out = {}
    for label, w in weights.items():
        name = labels[int(label)] if labels and 0 <= int(label) < len(labels) else f"{label:g}"
        out[name] = round(w, 6)
    return out


def _bounded_profile(train: DataFrame, rows: int | None, seed: int) -> dict[str, Any] | None:
    """The column profile (roles, drift reference) of a seeded sample of at most about
    :data:`PROFILE_MAX_ROWS` training rows; ``None`` (profile every row) for smaller data.

    Its sketches (distinct counts, quantiles) cost far more per row than a pass over the data, and a
    hundred thousand rows decide roles and describe distributions as well as all of them.
    """
    if not rows or rows <= PROFILE_MAX_ROWS:
        return None
    from sparkpipe.features.roles import profile_frame

    fraction = PROFILE_MAX_ROWS / rows
    profile = profile_frame(train.sample(fraction=fraction, seed=seed))
    profile["sampled_from_rows"] = int(rows)
    log.info("profiled a %.2f%% sample (%d of %d training rows)", 100 * fraction, profile["row_count"], rows)
    return profile


def _missing_counts(df: DataFrame, cols: list[str]) -> tuple[int, int, dict[str, int]]:
    """(rows, rows with a null/NaN in any of ``cols``, per-column counts), in one aggregation."""
    from pyspark.sql import functions as F

    types = dict(df.dtypes)

    def missing(c: str) -> Any:
        col = F.col(f"`{c}`")
        return col.isNull() | F.isnan(col) if types[c] in ("double", "float") else col.isNull()

    any_missing = F.lit(False)
    for c in cols:
        any_missing = any_missing | missing(c)
    exprs = [F.count(F.lit(1)), F.count(F.when(any_missing, 1))]
    row = df.agg(*exprs, *[F.count(F.when(missing(c), 1)) for c in cols]).first()
    per_col = {c: int(n) for c, n in zip(cols, row[2:], strict=True) if n}  # type: ignore[index]
    return int(row[0]), int(row[1]), per_col  # type: ignore[index]


def _worst(per_col: dict[str, int], n: int = 5) -> str:
    top = sorted(per_col.items(), key=lambda kv: -kv[1])[:n]
    more = f", and {len(per_col) - n} more columns" if len(per_col) > n else ""
    return ", ".join(f"{c}: {k}" for c, k in top) + more


def _refuse_missing(train: DataFrame, cols: list[str], algorithm: str) -> None:
    """``missing_values.strategy: none``: fail with the count and the fix when training rows have
    missing feature values (Spark MLlib refuses NaN features with a JVM error mid-fit)."""
    if not cols:
        return
    rows, bad, per_col = _missing_counts(train, cols)
    if bad:
        raise DataError(
            f"features.missing_values.strategy is 'none' but {bad} of {rows} training rows have missing "
            f"values ({_worst(per_col)}), and {algorithm} cannot train on missing (NaN) features. Set "
            "features.missing_values.strategy to median (or mean, mode, constant) to impute them, or to "
            "drop to leave those rows out"
        )


def _drop_missing(data: PreparedData, subset: list[str]) -> PreparedData:
    """Drop rows with missing feature values from every split and record how many (strategy ``drop``).

    Returns the data without those rows. Raises :class:`DataError` (the count and the fix) when no
    training row is left."""
    kept_parts: dict[str, DataFrame] = {}
    for name in ("train", "validation", "test"):
        df = getattr(data, name)
        if df is None:
            continue
        kept = df.dropna(subset=subset)
        total, left = df.count(), kept.count()
        dropped = total - left
        if name == "train" and total and not left:
            _, _, per_col = _missing_counts(df, subset)
            raise DataError(
                f"features.missing_values.strategy: drop removed all {total} training rows: every row "
                f"has a missing value in a feature column ({_worst(per_col)}). Set "
                "features.missing_values.strategy to median (or mean, mode, constant) to impute instead, "
                "or exclude the mostly empty columns with features.exclude"
            )
        data.lineage[f"dropped_missing_rows_{name}"] = dropped
        if dropped:
            log.warning(
                "%d %s rows with missing values in %s were dropped (missing_values.strategy: drop)",
                dropped,
                name,
                subset,
            )
        kept_parts[name] = kept
    return data.with_(**kept_parts)


def classifier_stage(model: PipelineModel) -> Any:
    """The model stage of a served PipelineModel (before a trailing ``IndexToString``)."""
    last = model.stages[-1]
    return model.stages[-2] if type(last).__name__ == "IndexToString" else last


def set_decision_threshold(model: PipelineModel, threshold: float) -> None:
    """Make the binary classifier of ``model`` predict 1 when ``probability[1] > threshold``.

    Logistic regression takes Spark's ``threshold``; the other probabilistic classifiers take
    ``thresholds = [1 - t, t]`` (Spark predicts the argmax of ``p / thresholds``). The Param is
    saved with the stage, so the served model (and its NumPy twin) use it.
    """
    stage = classifier_stage(model)
    if stage.hasParam("threshold") and stage.hasParam("thresholds"):  # logistic regression
        stage.clear(stage.getParam("thresholds"))
        stage.set(stage.getParam("threshold"), float(threshold))
    elif stage.hasParam("thresholds"):
        stage.set(stage.getParam("thresholds"), [1.0 - float(threshold), float(threshold)])
    else:
        raise ModelError(f"{type(stage).__name__} has no thresholds Param; evaluation.threshold cannot apply")
