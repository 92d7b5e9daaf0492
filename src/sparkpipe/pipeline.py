"""Orchestration of one pipeline run, end to end.

``run_pipeline(cfg)``: session → data (read, quarantine) → split → features (fitted once) → model
(optionally tuned) → evaluation on validation and test → one MLflow run with config, lineage, metrics and
the fitted ``PipelineModel`` → registered model version with the ``champion`` alias.

The served artifact is a single ``PipelineModel``: feature stages + model (+ ``IndexToString`` when the
label was a string). The label indexer is *not* part of it, so serving never needs the target column.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.config import DataConfig, PipelineConfig, SparkConfig
from sparkpipe.errors import DataError, ModelError, SparkpipeError
from sparkpipe.progress import Progress

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

LABEL_COL = "label"
SPLIT_COL = "__sparkpipe_split"
WEIGHT_COL = "__sparkpipe_weight"
"""Per-row training weight (``model.class_weight: balanced``); only the estimator reads it."""
SOURCE_CACHE_MAX_ROWS = 100_000
"""Inputs up to this many rows are persisted (memory and disk) for the run; larger ones are streamed."""
PROFILE_MAX_ROWS = 100_000
"""Training rows profiled at most (a seeded sample beyond that); see :func:`_bounded_profile`."""
_NUMERIC = (
    "double",
    "float",
    "int",
    "bigint",
    "smallint",
    "tinyint",
    "decimal",
    "long",
    "integer",
    "short",
    "byte",
)


@dataclass
class RunResult:
    """What one pipeline run produced (written to ``<output_path>/runs/<run_id>/run.json``; the latest
    run's copy is ``<output_path>/run.json``)."""

    run_id: str | None
    task: str
    algorithm: str
    metrics: dict[str, float]
    registered_name: str | None = None
    registered_version: str | None = None
    model_uri: str | None = None
    output_path: str | None = None
    tracking_uri: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None
    report_path: str | None = None
    decision_threshold: dict[str, Any] | None = None
    """``evaluation.threshold: auto``: the chosen threshold, its validation F1 (and F1 at 0.5)."""
    warnings: list[str] = field(default_factory=list)
    """Analysis steps (explain, report) that failed; the model itself is complete and published."""
    record_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PreparedData:
    """Data after reading and splitting, with the resolved task and columns."""

    train: DataFrame
    validation: DataFrame | None
    test: DataFrame | None
    task: str
    target: str | None
    label_labels: list[str] | None
    lineage: dict[str, Any]
    user_col: str | None = None
    item_col: str | None = None
    num_classes: int | None = None
    cached: list[DataFrame] = field(default_factory=list)

    def release(self) -> None:
        """Unpersist what :func:`prepare_data` cached."""
        for df in self.cached:
            df.unpersist()
        self.cached.clear()


# ----------------------------------------------------------------------------------- logging set-up
def setup_logging(cfg: PipelineConfig) -> None:
    """Configure the root logger from ``logging.level/format/file`` (idempotent)."""
    root = logging.getLogger()
    root.setLevel(cfg.logging.level)
    if not any(getattr(h, "_sparkpipe", False) for h in root.handlers):
        handler: logging.Handler = logging.StreamHandler()
        handler._sparkpipe = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(cfg.logging.format))
        root.addHandler(handler)
        if cfg.logging.file:
            fh = logging.FileHandler(cfg.logging.file)
            fh._sparkpipe = True  # type: ignore[attr-defined]
            fh.setFormatter(logging.Formatter(cfg.logging.format))
            root.addHandler(fh)
    for noisy in ("py4j", "py4j.clientserver", "alembic", "mlflow.store", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ------------------------------------------------------------------------------------------ data
def resolve_columns(cfg: PipelineConfig) -> tuple[str | None, str | None, str | None, str | None]:
    """(target, task_type, user_col, item_col) from config, filled in from built-in data set metadata."""
    from sparkpipe.data.datasets import dataset_info

    target, task = cfg.features.target, cfg.model.task_type
    user_col, item_col = cfg.features.user_col, cfg.features.item_col
    src = cfg.data.input_path
    if src.startswith("builtin:"):
        info = dataset_info(src.split(":", 1)[1])
        target = target or info.target
        task = task or _task_for(cfg.model.algorithm, info.task)
        user_col = user_col or getattr(info, "user_col", None)
        item_col = item_col or getattr(info, "item_col", None)
    return target, task, user_col, item_col


def _task_for(algorithm: str, dataset_task: str | None) -> str | None:
    """The task an algorithm implies, preferring the data set's own task when the algorithm allows it."""
    from sparkpipe.models.algorithms import tasks_for

    tasks = tasks_for(algorithm)
    if dataset_task in tasks:
        return dataset_task
    return tasks[0] if len(tasks) == 1 else dataset_task


def prepare_data(spark: SparkSession, cfg: PipelineConfig, progress: Progress | None = None) -> PreparedData:
    """Read the input (quarantining malformed rows), resolve target and task, add the label, split."""
    from pyspark.sql import functions as F

    from sparkpipe.data.io import read_dataset, require_columns
    from sparkpipe.data.split import split_conditions, split_value
    from sparkpipe.models.algorithms import infer_task

    progress = progress or Progress()
    with progress.step("read data"):
        loaded = read_dataset(spark, cfg.data)
    df = loaded.df
    lineage = dict(loaded.lineage)
    target, task, user_col, item_col = resolve_columns(cfg)
    if cfg.spark.shuffle_partitions is None and lineage.get("input_bytes"):
        from sparkpipe.session import shuffle_partitions_for

        partitions = shuffle_partitions_for(lineage["input_bytes"], spark.sparkContext.defaultParallelism)
        spark.conf.set("spark.sql.shuffle.partitions", str(partitions))

    cached: list[DataFrame] = []
    if cfg.data.sample_fraction:
        df = df.sample(fraction=cfg.data.sample_fraction, seed=cfg.data.seed)
    if cfg.optimization.repartition and cfg.optimization.num_partitions:
        df = df.repartition(cfg.optimization.num_partitions)
    # A large input is never cached: a cached copy of a wide input (text, many columns) is what
    # exhausted the heap at 1M rows, and each pass re-reads only what it needs. A small one is (its
    # memory is bounded by SOURCE_CACHE_MAX_ROWS, and it spills): feature steps and metrics make many
    # passes, each of which would otherwise parse or generate it again. Each row's split is a pure
    # function of its values (data/split.py), so no pass has to sort the data as randomSplit does.
    rows = lineage.get("row_count")
    if rows is not None and rows <= SOURCE_CACHE_MAX_ROWS and not cfg.data.sample_fraction:
        from pyspark import StorageLevel

        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(df)
    df = df.withColumn(SPLIT_COL, split_value(df, cfg.data.seed))
    weights = [
        1.0 - cfg.data.validation_split - cfg.data.test_split,
        cfg.data.validation_split,
        cfg.data.test_split,
    ]
    names = [n for n, w in zip(("train", "validation", "test"), weights, strict=True) if w > 0]

    if task is None and target is None:
        task = infer_task(None, None, cfg.model.algorithm)
    if task in ("classification", "regression") and target is None:
        raise DataError(f"a {task} model needs a target column: set features.target to one of {df.columns}")
    if task == "recommendation":
        user_col, item_col = user_col or "userId", item_col or "movieId"
        target = target or "rating"
        require_columns(df, [user_col, item_col, target], "features.user_col/item_col/target")
    if target is not None:
        require_columns(df, [target], "features.target")

    # one cheap pass over the target column: rows without a label, the task when it must be inferred,
    # and the number of classes of a numeric label
    with progress.step("split"):
        stats = _target_stats(df, target, task)
    if task is None:
        dtype = dict(df.dtypes)[target]
        task = infer_task(dtype, stats.get("approx_distinct"), cfg.model.algorithm)
        log.info("task inferred from target %r (%s): %s", target, dtype, task)
    if stats:
        lineage["labelled_rows"] = stats["rows"] - stats["null_target"]
    elif not cfg.data.sample_fraction:  # no target: every row read is used (a sample is not counted)
        lineage["labelled_rows"] = lineage.get("row_count")

    label_labels: list[str] | None = None
    num_classes: int | None = None
    if target is not None:
        before = None
        if task in ("classification", "regression", "recommendation"):
            # rows without a label cannot be trained on: count them (never silently drop)
            before = stats["null_target"]
            if before:
                log.warning(
                    "%d rows have no value in target %r; they are excluded from training and counted "
                    "in lineage.null_target_rows",
                    before,
                    target,
                )
                df = df.filter(F.col(f"`{target}`").isNotNull())
        lineage["null_target_rows"] = before or 0
        if target == LABEL_COL and not dict(df.dtypes)[target].startswith(_NUMERIC):
            # a string target called "label" would collide with the indexed label column
            target = f"{LABEL_COL}__target"
            df = df.withColumnRenamed(LABEL_COL, target)
        if task == "classification":
            dtype = dict(df.dtypes)[target]
            if dtype.startswith(_NUMERIC) or dtype == "boolean":
                df = df.withColumn(LABEL_COL, F.col(f"`{target}`").cast("double"))
                top = stats.get("max")
                num_classes = int(top) + 1 if top is not None else None
            else:
                from pyspark.ml.feature import StringIndexer

                indexer = StringIndexer(
                    inputCol=target, outputCol=LABEL_COL, stringOrderType="alphabetAsc"
                ).fit(df)
                label_labels = list(indexer.labels)
                num_classes = len(label_labels)
                df = indexer.transform(df)
        elif task in ("regression", "recommendation"):
            df = df.withColumn(LABEL_COL, F.col(f"`{target}`").cast("double"))

    conditions = split_conditions(F.col(SPLIT_COL), [w for w in weights if w > 0])
    parts = {n: df.where(c).drop(SPLIT_COL) for n, c in zip(names, conditions, strict=True)}
    train = parts["train"]
    validation = parts.get("validation")
    test = parts.get("test")
    return PreparedData(
        train,
        validation,
        test,
        task,
        target,
        label_labels,
        lineage,
        user_col,
        item_col,
        num_classes=num_classes,
        cached=cached,
    )


def _target_stats(df: DataFrame, target: str | None, task: str | None) -> dict[str, Any]:
    """Rows without a label, the target's approximate distinct count (when the task is still unknown)
    and its maximum (the class count of a numeric label), in one aggregation that reads the target
    column only. Rows per split are counted where the splits are read anyway (see ``run_pipeline``)."""
    from pyspark.sql import functions as F

    if target is None:
        return {}
    col = F.col(f"`{target}`")
    exprs = [F.count(F.lit(1)).alias("rows"), F.count(F.when(col.isNull(), 1)).alias("null_target")]
    numeric = dict(df.dtypes)[target].startswith(_NUMERIC) or dict(df.dtypes)[target] == "boolean"
    if task is None and numeric:
        exprs.append(F.approx_count_distinct(col).alias("approx_distinct"))
    if task in (None, "classification") and numeric:
        exprs.append(F.max(col.cast("double")).alias("max"))
    return df.agg(*exprs).first().asDict()


# ------------------------------------------------------------------------------------------ model
def fit_model(
    spark: SparkSession,
    cfg: PipelineConfig,
    data: PreparedData,
    progress: Progress | None = None,
    algorithm: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    tracker: Any = None,
) -> tuple[PipelineModel, dict[str, Any]]:
    """Fit feature stages once, then the estimator (tuned when configured); return the served model.

    ``tracker`` (a :class:`~sparkpipe.tracking.Tracker` with an active run) makes tuning log each
    trial as a nested child run.

    Returns
    -------
    (PipelineModel, info)
        ``info`` has ``feature_plan``, ``tuning`` (or ``None``) and ``num_features``.
    """
    from pyspark import StorageLevel
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import IndexToString

    from sparkpipe.features.auto import build_feature_stages
    from sparkpipe.models.algorithms import (
        build_estimator,
        check_imbalance_task,
        get_algorithm,
        requires_nonnegative_features,
    )

    progress = progress or Progress()
    algorithm = algorithm or cfg.model.algorithm
    spec = get_algorithm(algorithm, data.task)
    params = dict(cfg.model.hyperparameters if hyperparameters is None else hyperparameters)
    label_col = LABEL_COL if data.task != "clustering" else None

    with progress.step("feature engineering"):
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
            _drop_missing(data, plan.dropna_subset)
        if cfg.features.missing_values.strategy == "none" and spec.estimator.startswith("pyspark."):
            _refuse_missing(data.train, plan.nan_inputs, algorithm)  # MLlib fails on NaN features
        feature_model = Pipeline(stages=list(plan.stages)).fit(data.train)
        plan.resolve_feature_names(feature_model)
        num_features = len(plan.feature_names) or None
        if data.task == "recommendation":  # string ids are indexed by the plan into *__idx columns
            data.user_col, data.item_col = plan.user_col or data.user_col, plan.item_col or data.item_col
        num_classes = len(data.label_labels) if data.label_labels else data.num_classes
        if data.task == "classification" and num_classes is None:
            num_classes = int(data.train.agg({LABEL_COL: "max"}).first()[0]) + 1
        check_imbalance_task(cfg.model.class_weight, cfg.evaluation.threshold, data.task, num_classes)
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
        features_col=plan.features_col,
        label_col=label_col or "label",
        seed=cfg.data.seed,
        num_classes=num_classes,
        num_features=num_features,
        user_col=data.user_col,
        item_col=data.item_col,
        rating_col=LABEL_COL,
        weight_col=WEIGHT_COL if weights else None,
    )
    tuning_info = None
    with progress.step(f"train {algorithm}"):
        if cfg.tuning.enabled:
            from sparkpipe.tuning import tune

            model, tuning_info = tune(spark, cfg, spec, estimator, train_features, data, tracker=tracker)
        else:
            model = estimator.fit(train_features)
    if cfg.optimization.cache_data:
        train_features.unpersist()
    stages = [*feature_model.stages, model]
    if data.label_labels:
        stages.append(
            IndexToString(inputCol="prediction", outputCol="predictedLabel", labels=data.label_labels)
        )
    return PipelineModel(stages=stages), {
        "feature_plan": plan,
        "tuning": tuning_info,
        "num_features": num_features,
        "num_classes": num_classes,
        "spec": spec,
        "class_weights": _named_weights(weights, data.label_labels) if weights else None,
    }


MAX_META_FEATURE_NAMES = 4096
"""Feature-slot names kept in a logged model's metadata at most (a hashed 2^18-slot vector would put
megabytes of YAML into ``MLmodel``, which every model load parses)."""


def feature_names_meta(plan: Any) -> dict[str, Any]:
    """``feature_names`` (empty beyond :data:`MAX_META_FEATURE_NAMES` slots) and ``num_features``
    for a model's metadata."""
    names = list(getattr(plan, "feature_names", []) or [])
    return {
        "feature_names": names if len(names) <= MAX_META_FEATURE_NAMES else [],
        "num_features": len(names),
    }


def _expected_train_rows(cfg: PipelineConfig, data: PreparedData) -> int | None:
    """Training rows to expect from the labelled rows and the split fractions (before they are counted)."""
    rows = data.lineage.get("labelled_rows") or data.lineage.get("row_count")
    return int(rows * (1.0 - cfg.data.validation_split - cfg.data.test_split)) if rows else None


def _drops_rows(model: PipelineModel) -> bool:
    """Whether ``model``'s predictions can have fewer rows than its input (ALS with
    ``coldStartStrategy: drop`` leaves out pairs of unseen users or items)."""
    last = model.stages[-1] if model.stages else None
    return last is not None and last.hasParam("coldStartStrategy") and last.getColdStartStrategy() == "drop"


def _count_split_rows(data: PreparedData, counted: dict[str, int]) -> None:
    """Record rows per split: validation and test as scored, train as the labelled rest (before the
    rows a ``missing_values: drop`` removed from it, which are counted separately)."""
    lineage = data.lineage
    for name, n in counted.items():
        lineage[f"{name}_rows"] = n
    labelled = lineage.get("labelled_rows")
    if labelled is not None:
        held_out = sum(counted.values()) + sum(
            lineage.get(f"dropped_missing_rows_{name}", 0) for name in counted
        )
        lineage["train_rows"] = int(labelled) - held_out


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


def _drop_missing(data: PreparedData, subset: list[str]) -> None:
    """Drop rows with missing feature values from every split and record how many (strategy ``drop``).

    Raises :class:`DataError` (the count and the fix) when no training row is left."""
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
        setattr(data, name, kept)


def evaluate_model(
    model: PipelineModel,
    df: DataFrame | None,
    cfg: PipelineConfig,
    task: str,
    num_classes: int | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``df`` for the configured metric list of ``task``."""
    if df is None:
        return {}
    predictions = score_for_metrics(model, df, task, user_col, item_col)
    try:
        return metrics_of(predictions, model, cfg, task, num_classes, user_col, item_col)
    finally:
        predictions.unpersist()


def score_for_metrics(
    model: PipelineModel, df: DataFrame, task: str, user_col: str | None = None, item_col: str | None = None
) -> DataFrame:
    """``model``'s predictions on ``df``, narrowed to the columns metrics and plots read and persisted
    (spilling to disk): every metric and plot then reads this, not the source. Unpersist when done."""
    from pyspark import StorageLevel

    predictions = model.transform(df)
    keep = [LABEL_COL, "prediction", "probability", "rawPrediction", user_col, item_col]
    if task == "clustering":  # silhouette and friends read the feature vectors
        keep.append("features")
    cols = [c for c in dict.fromkeys(keep) if c and c in predictions.columns]
    return predictions.select(*cols).persist(StorageLevel.MEMORY_AND_DISK)


def metrics_of(
    predictions: DataFrame,
    model: PipelineModel,
    cfg: PipelineConfig,
    task: str,
    num_classes: int | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
) -> dict[str, float]:
    """The configured metrics of ``task`` on predictions from :func:`score_for_metrics`."""
    from sparkpipe.evaluation import evaluate

    extra: dict[str, Any] = {}
    if task == "recommendation":
        extra = {"model": model.stages[-1], "user_col": user_col, "item_col": item_col}
    return evaluate(
        predictions,
        task,
        list(getattr(cfg.evaluation, task)),
        label_col=LABEL_COL,
        k=cfg.evaluation.k,
        num_classes=num_classes,
        **extra,
    )


# ------------------------------------------------------------------------------------- signature
_MLFLOW_TYPES = {
    "double": "double",
    "float": "float",
    "int": "integer",
    "integer": "integer",
    "bigint": "long",
    "long": "long",
    "smallint": "integer",
    "tinyint": "integer",
    "short": "integer",
    "byte": "integer",
    "string": "string",
    "boolean": "boolean",
    "timestamp": "datetime",
    "timestamp_ntz": "datetime",
    "date": "datetime",
}


def model_signature(input_schema: list[tuple[str, str]], task: str, probability: bool) -> Any:
    """An MLflow signature from the ordered raw input schema the feature plan needs."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema

    def spec(name: str, t: str) -> Any:
        if t == "vector":  # an ML vector column (libsvm): a list of numbers in a request
            return ColSpec(Array(DataType.double), name)
        return ColSpec(_MLFLOW_TYPES.get(t.split("(")[0], "string"), name)

    inputs = Schema([spec(n, t) for n, t in input_schema])
    outputs = [ColSpec("double", "prediction")]
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def _input_example(df: DataFrame, columns: list[str], rows: int = 3) -> Any:
    from pyspark.ml.functions import vector_to_array

    types = dict(df.dtypes)
    cols = [vector_to_array(c).alias(c) if types[c] == "vector" else c for c in columns]
    pdf = df.select(*cols).limit(rows).toPandas()
    for c in pdf.columns:  # MLflow's JSON example cannot hold NaT/tz objects
        if str(pdf[c].dtype).startswith("datetime64"):
            pdf[c] = pdf[c].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return pdf


# ----------------------------------------------------------------------------------------- run
def run_pipeline(
    cfg: PipelineConfig, raw_yaml: str | None = None, spark: SparkSession | None = None
) -> RunResult:
    """Run the whole pipeline for ``cfg``; return what it produced.

    Parameters
    ----------
    cfg
        The validated configuration.
    raw_yaml
        The YAML text as the user wrote it, logged to MLflow next to the resolved config.
    spark
        An existing session to reuse (tests, notebooks); by default one is built from ``cfg.spark``.
    """
    from sparkpipe.session import get_spark
    from sparkpipe.tracking import Tracker

    setup_logging(cfg)
    t_start = time.perf_counter()
    report_predictions: DataFrame | None = None
    if spark is None:
        from sparkpipe.preflight import check_preflight

        check_preflight(cfg)  # master reachable, connectors, input and target: before any JVM
    spark = spark or get_spark(cfg.spark, cfg.optimization)
    progress = Progress(spark=spark)
    data = prepare_data(spark, cfg, progress)
    tracker = Tracker(cfg)
    # the run is open while training, so tuning trials are logged as its child runs
    with tracker.run(
        run_name=f"{cfg.model.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"sparkpipe.task": data.task, "sparkpipe.algorithm": cfg.model.algorithm},
    ) as run:
        model, info = fit_model(spark, cfg, data, progress, tracker=tracker)
        plan = info["feature_plan"]
        if info.get("class_weights"):
            data.lineage["class_weights"] = info["class_weights"]
        threshold = None
        if cfg.evaluation.threshold == "auto" and data.validation is not None:
            with progress.step("choose threshold"):
                threshold = choose_threshold(model, data)

        with progress.step("evaluate"):
            metrics: dict[str, float] = {}
            # the report plots the test split (else validation) from the predictions scored here
            report_split = "test" if data.test is not None else "validation"
            counted: dict[str, int] = {}
            for split_name, split_df in (("validation", data.validation), ("test", data.test)):
                if split_df is None:
                    continue
                scored = score_for_metrics(model, split_df, data.task, data.user_col, data.item_col)
                values = metrics_of(
                    scored, model, cfg, data.task, info["num_classes"], data.user_col, data.item_col
                )
                metrics.update({f"{split_name}_{name}": v for name, v in values.items()})
                # rows of the split: read from the persisted predictions unless the model drops some
                counted[split_name] = (split_df if _drops_rows(model) else scored).count()
                if split_name == report_split and cfg.evaluation.report:
                    report_predictions = scored
                else:
                    scored.unpersist()
            _count_split_rows(data, counted)

        result = RunResult(
            run_id=None,
            task=data.task,
            algorithm=cfg.model.algorithm,
            metrics=metrics,
            output_path=cfg.data.output_path,
            lineage=data.lineage,
            tuning=info["tuning"],
            decision_threshold=threshold,
        )
        sp_meta = {
            "task": data.task,
            "algorithm": cfg.model.algorithm,
            "target": data.target,
            "label_labels": data.label_labels,
            **feature_names_meta(plan),
            "input_schema": [list(x) for x in plan.input_schema],
            "user_col": data.user_col,
            "item_col": data.item_col,
            "profile": getattr(plan, "profile", None),  # training-data profile, for drift checks
            "decision_threshold": threshold["threshold"] if threshold else None,
            "class_weights": info.get("class_weights"),
        }
        name = cfg.registered_model_name()
        with progress.step("log to MLflow"):
            tracker.log_config(cfg, raw_yaml)
            tracker.log_params(
                {
                    "task": data.task,
                    "num_features": info["num_features"],
                    "hyperparameters": _model_params(model),
                }
            )
            tracker.log_params(
                {f"lineage.{k}": v for k, v in data.lineage.items() if not isinstance(v, dict)}
            )
            tracker.log_params(_imbalance_params(cfg, info, threshold))
            if threshold:
                tracker.log_metrics({"validation_threshold_f1": threshold["f1"]})
            tracker.log_dict(data.lineage, "data/lineage.json")
            tracker.log_metrics(quarantine_metrics(data.lineage))
            if getattr(plan, "profile", None):
                tracker.log_dict(plan.profile, "data/profile.json")
            tracker.log_metrics(metrics)
            if info["tuning"]:
                tracker.log_dict(info["tuning"], "tuning/summary.json")
            input_cols = [n for n, _ in plan.input_schema]
            example = (
                _input_example(data.train, input_cols)
                if cfg.mlflow.log_input_example and input_cols
                else None
            )
            signature = model_signature(
                plan.input_schema, data.task, probability=data.task == "classification"
            )
        # explain before the model is published: a failure there is reported, never half-published
        if getattr(plan, "feature_names", None):
            from sparkpipe.features.explain import explain_run

            with progress.step("explain"), _analysis_step("explain", result):
                explain_run(
                    model, plan, Path(cfg.data.output_path) / "explain", tracker if run is not None else None
                )
        if run is not None:
            with progress.step("register model"):
                result.model_uri = tracker.log_spark_model(
                    model, input_example=example, signature=signature, metadata={"sparkpipe": sp_meta}
                )
                if cfg.mlflow.register_model:
                    result.registered_version = tracker.register(
                        result.model_uri,
                        name,
                        alias=cfg.mlflow.alias,
                        tags={"task": data.task, "algorithm": cfg.model.algorithm},
                    )
                    result.registered_name = name
            result.run_id, result.tracking_uri = run.run_id, run.tracking_uri
        if cfg.evaluation.report:
            from sparkpipe.report import run_report

            with progress.step("report"), _analysis_step("report", result):
                result.report_path = run_report(
                    cfg, result, model, data, info, tracker, predictions=report_predictions
                )
        if result.warnings and run is not None:
            tracker.set_tags({"sparkpipe.warnings": " | ".join(result.warnings)[:5000]})
        result.timings = dict(progress.timings)
        result.timings["total"] = time.perf_counter() - t_start
        run_dir = write_run_outputs(cfg, result, model if run is None else None)
        if run is not None:
            tracker.log_artifact(run_dir / "run.json")
    if report_predictions is not None:
        report_predictions.unpersist()
    data.release()
    return result


def choose_threshold(model: PipelineModel, data: PreparedData) -> dict[str, Any]:
    """``evaluation.threshold: auto``: the F1-optimal threshold on the validation split's predictions
    (:func:`sparkpipe.evaluation.f1_optimal_threshold`, a bounded aggregation), set on ``model``'s
    classifier stage (:func:`set_decision_threshold`) so the saved and served model predict with it."""
    from sparkpipe.evaluation import f1_optimal_threshold

    predictions = score_for_metrics(model, data.validation, data.task)
    try:
        chosen = f1_optimal_threshold(predictions, LABEL_COL)
    finally:
        predictions.unpersist()
    set_decision_threshold(model, chosen["threshold"])
    log.info(
        "evaluation.threshold: auto chose %.3f (validation F1 %.4f; %.4f at 0.5)",
        chosen["threshold"],
        chosen["f1"],
        chosen["f1_at_0_5"],
    )
    return {"method": "auto", **chosen}


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


def _imbalance_params(cfg: PipelineConfig, info: dict[str, Any], threshold: dict[str, Any] | None) -> dict:
    """MLflow params of ``model.class_weight`` (and each class's weight) and the decision threshold."""
    out: dict[str, Any] = {"class_weight": cfg.model.class_weight}
    for label, w in (info.get("class_weights") or {}).items():
        out[f"class_weight.{label}"] = w
    if threshold:
        out["decision_threshold"] = threshold["threshold"]
    return out


@contextlib.contextmanager
def _analysis_step(step: str, result: RunResult) -> Iterator[None]:
    """Run an analysis step (explain, report) whose failure must not fail a finished model.

    The model is trained, evaluated and (for the report) already registered; the failure is logged
    with its cause, recorded in ``result.warnings`` (``run.json``, the MLflow tag ``sparkpipe.warnings``)
    and printed by the CLI, and the run carries on.
    """
    try:
        yield
    except Exception as exc:
        cause = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        where = (
            f"model {result.registered_name} version {result.registered_version} is registered"
            if result.registered_version
            else "the model is complete"
        )
        message = f"the {step} step failed ({type(exc).__name__}: {cause}); {where}, without the {step}"
        log.error(message)
        log.debug("%s step failure", step, exc_info=exc)
        result.warnings.append(message)


def quarantine_metrics(lineage: dict[str, Any]) -> dict[str, float]:
    """``data.quarantined_rows`` and ``data.quarantined.<column or check>`` (rows set aside at read)."""
    out = {"data.quarantined_rows": float(lineage.get("quarantined_count") or 0)}
    for reason, n in (lineage.get("quarantined_by_reason") or {}).items():
        out[f"data.quarantined.{reason.strip('()').replace(' ', '_')}"] = float(n)
    return out


def _model_params(model: PipelineModel) -> dict[str, Any]:
    last = (
        model.stages[-2]
        if model.stages and type(model.stages[-1]).__name__ == "IndexToString"
        else model.stages[-1]
    )
    out: dict[str, Any] = {}
    for p, v in last.extractParamMap().items():
        if not p.name.endswith("Col") and not isinstance(v, (list, dict)):
            out[p.name] = v
    return out


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp sibling and ``os.replace`` (readers never see half)."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    tmp.write_text(text)
    os.replace(tmp, path)


def write_run_outputs(cfg: PipelineConfig, result: RunResult, model: PipelineModel | None = None) -> Path:
    """Write the run's record (and the model itself when MLflow is disabled) under the output path.

    Every run keeps its own ``<output_path>/runs/<run_id>/run.json`` (a local id when MLflow is off), so
    concurrent runs sharing an output path never overwrite each other's record. ``runs/latest`` (the id)
    and ``<output_path>/run.json`` (a copy) point at the run that finished last; all writes go through a
    temp file and ``os.replace``. Returns the run's own directory.
    """
    out = Path(cfg.data.output_path)
    out.mkdir(parents=True, exist_ok=True)
    if model is not None:
        target = out / "model"
        staging = out / f".model.{uuid.uuid4().hex}"
        model.save(str(staging))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        result.model_uri = str(target.resolve())
    record_id = result.run_id or f"local-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    run_dir = out / "runs" / record_id
    run_dir.mkdir(parents=True, exist_ok=True)
    result.record_path = str(run_dir / "run.json")
    text = json.dumps(result.to_dict(), indent=2, default=str)
    _atomic_write(run_dir / "run.json", text)
    _atomic_write(out / "runs" / "latest", record_id + "\n")
    _atomic_write(out / "run.json", text)
    return run_dir


# ------------------------------------------------------------------------------ scoring with Spark
def load_spark_model(model_uri: str, mlflow_cfg: Any = None) -> tuple[PipelineModel, dict[str, Any]]:
    """Load a PipelineModel from an MLflow URI (``models:/...``, ``runs:/...``) or a local directory.

    Returns the model and sparkpipe's metadata (task, target, input schema) when available.
    """
    from pyspark.ml import PipelineModel

    from sparkpipe.tracking import Registry

    path = Path(model_uri)
    if path.exists():
        local = path
    else:
        import mlflow.artifacts

        reg = Registry(mlflow_cfg)
        if model_uri.startswith("models:/") or (
            "://" not in model_uri and not model_uri.startswith("runs:/")
        ):
            ref = reg.resolve(model_uri)
            local = reg.download(ref)
        else:
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
            except Exception as exc:
                raise ModelError(f"cannot download model {model_uri!r}: {exc}") from exc
    meta: dict[str, Any] = {}
    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        import yaml

        meta = (yaml.safe_load(mlmodel.read_text()).get("metadata") or {}).get("sparkpipe", {})
        local = local / "sparkml"
    try:
        return PipelineModel.load(str(local)), meta
    except Exception as exc:
        raise ModelError(f"{model_uri!r} is not a loadable Spark PipelineModel: {exc}") from exc


def batch_predict(
    model_uri: str,
    input_path: str,
    output_path: str,
    spark_cfg: SparkConfig | None = None,
    fmt: str = "auto",
    output_format: str = "parquet",
    mlflow_cfg: Any = None,
    spark: SparkSession | None = None,
    write_mode: str = "overwrite",
) -> dict[str, Any]:
    """Score ``input_path`` with Spark and write predictions atomically to ``output_path``.

    ``write_mode``: ``overwrite`` or ``error`` (refuse an existing output), see
    :func:`sparkpipe.data.io.write_dataset`.

    The output keeps the input columns and adds ``prediction`` (and ``probability``, ``predictedLabel``
    when the model has them). Vectors are arrays in parquet/json/delta; CSV has no array type, so there
    each vector or array column becomes one column per element (``probability_0``, ``probability_1``...).
    ``rows`` in the result is the number of rows written, read back from the output.

    Raises
    ------
    DataError
        The input lacks columns the model needs (all of them are named).
    """
    from sparkpipe.data.io import read_dataset, write_dataset
    from sparkpipe.session import get_spark

    spark = spark or get_spark(spark_cfg)
    model, meta = load_spark_model(model_uri, mlflow_cfg)
    # local paths are this process's: the JVM may have started in another working directory
    input_path, output_path = _abs_local(input_path), _abs_local(output_path)
    loaded = read_dataset(
        spark, DataConfig(input_path=input_path, output_path=str(Path(output_path).parent), format=fmt)
    )
    _require_model_inputs(loaded.df, meta, model_uri, input_path)
    scored = model.transform(loaded.df)
    keep = list(loaded.df.columns)
    extra = [
        f.name for f in scored.schema.fields if f.name in ("prediction", "probability", "predictedLabel")
    ]
    out_df = scored.select(*keep, *extra)
    out_df = _flat_for_csv(out_df, model) if output_format == "csv" else _vectors_as_arrays(out_df)
    write_dataset(out_df, output_path, output_format, mode=write_mode)
    return {
        "model": model_uri,
        "input_path": input_path,
        "output_path": output_path,
        "rows": _written_rows(spark, output_path, output_format),
        "quarantined": loaded.quarantined,
        "task": meta.get("task"),
    }


def _abs_local(path: str) -> str:
    """A relative local path made absolute; URIs (``s3a://``, ``file:``) and ``builtin:`` unchanged."""
    return path if ":" in path or os.path.isabs(path) else os.path.abspath(path)


def _require_model_inputs(df: Any, meta: dict[str, Any], model_uri: str, input_path: str) -> None:
    """A clear error naming every input column the model needs that the data lacks."""
    needed = [str(c[0]) for c in meta.get("input_schema") or []]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(
            f"--input {input_path}: missing column(s) {', '.join(missing)} that model {model_uri} needs; "
            f"the data has: {', '.join(df.columns)}; the model reads: {', '.join(needed)}"
        )


def _is_vector(f: Any) -> bool:
    return "Vector" in type(f.dataType).__name__


def _vectors_as_arrays(df: Any) -> Any:
    from pyspark.ml.functions import vector_to_array

    return df.select(
        *[
            vector_to_array(df[f.name]).alias(f.name) if _is_vector(f) else df[f.name]
            for f in df.schema.fields
        ]
    )


def _vector_size(df: Any, name: str, model: Any) -> int:
    """Elements of vector/array column ``name``: the model's class count, else the first row's size."""
    from pyspark.sql import functions as F

    if name in ("probability", "rawPrediction"):
        for stage in reversed(getattr(model, "stages", [model])):
            k = getattr(stage, "numClasses", None) or getattr(stage, "getK", lambda: None)()
            if isinstance(k, int) and k > 0:
                return k
    first = df.select(F.size(df[name]).alias("n")).first()
    return int(first["n"]) if first is not None and first["n"] is not None else 0


def _flat_for_csv(df: Any, model: Any) -> Any:
    """CSV has no arrays: each vector/array column becomes ``<name>_0 .. <name>_{k-1}``; maps and
    structs become JSON text."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, MapType, StructType

    df = _vectors_as_arrays(df)
    cols = []
    for f in df.schema.fields:
        if isinstance(f.dataType, ArrayType):
            k = _vector_size(df, f.name, model)
            cols += [df[f.name].getItem(i).alias(f"{f.name}_{i}") for i in range(k)]
        elif isinstance(f.dataType, MapType | StructType):
            cols.append(F.to_json(df[f.name]).alias(f.name))
        else:
            cols.append(df[f.name])
    return df.select(*cols)


def _written_rows(spark: SparkSession, path: str, fmt: str) -> int:
    """Rows in the written output (Delta read through delta-rs: no delta-spark needed)."""
    if fmt == "delta":
        from sparkpipe.data.io import _open_delta

        return int(_open_delta(path, None).to_pyarrow_dataset().count_rows())
    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", "true")
    return int(reader.load(path).count())


def evaluate_saved(
    model_uri: str,
    data_path: str,
    cfg: PipelineConfig,
    target: str | None = None,
    spark: SparkSession | None = None,
) -> dict[str, float]:
    """Evaluate a saved model on a labelled data set (``sparkpipe evaluate``)."""
    from pyspark.sql import functions as F

    from sparkpipe.data.io import read_dataset, require_columns
    from sparkpipe.session import get_spark

    spark = spark or get_spark(cfg.spark, cfg.optimization)
    model, meta = load_spark_model(model_uri, cfg.mlflow)
    task = meta.get("task") or cfg.model.task_type
    target = target or meta.get("target") or cfg.features.target
    if task is None:
        raise SparkpipeError("the model has no sparkpipe metadata; pass --task and --target")
    data_cfg = cfg.data.model_copy(update={"input_path": data_path})
    df = read_dataset(spark, data_cfg).df
    if task != "clustering":
        if not target:
            raise DataError("evaluation needs the target column: pass --target")
        require_columns(df, [target], "--target")
        labels = meta.get("label_labels")
        if labels:
            mapping = F.create_map(
                *[x for i, lab in enumerate(labels) for x in (F.lit(lab), F.lit(float(i)))]
            )
            df = df.withColumn(LABEL_COL, mapping[F.col(target).cast("string")])
            df = df.filter(F.col(LABEL_COL).isNotNull())
        else:
            df = df.withColumn(LABEL_COL, F.col(target).cast("double"))
    return evaluate_model(
        model,
        df,
        cfg,
        task,
        len(meta.get("label_labels") or []) or None,
        meta.get("user_col"),
        meta.get("item_col"),
    )
