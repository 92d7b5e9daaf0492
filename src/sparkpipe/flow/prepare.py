"""``prepare``: read the input (quarantining malformed rows), resolve target and task, label, split.

Also the run's set-up (:func:`start`: logging, preflight, session, progress), shared by every entry
point of the training path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sparkpipe.config import PipelineConfig
from sparkpipe.core import LABEL_COL, PreparedData, is_numeric
from sparkpipe.errors import DataError
from sparkpipe.progress import Progress

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SPLIT_COL = "__sparkpipe_split"
SOURCE_CACHE_MAX_ROWS = 100_000
"""Inputs up to this many rows are persisted (memory and disk) for the run; larger ones are streamed."""


def start(cfg: PipelineConfig, spark: SparkSession | None = None) -> tuple[SparkSession, Progress]:
    """Set up a run: logging, the preflight checks (before any JVM, only when no session is given),
    the session and the step timer."""
    from sparkpipe.session import get_spark

    setup_logging(cfg)
    if spark is None:
        from sparkpipe.preflight import check_preflight

        check_preflight(cfg)  # master reachable, connectors, input and target: before any JVM
        spark = get_spark(cfg.spark, cfg.optimization)
    return spark, Progress(spark=spark)


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

    from sparkpipe.data.split import split_conditions

    progress = progress or Progress()
    df, lineage, cached = _read(spark, cfg, progress)
    target, task, user_col, item_col = _resolve_roles(df, cfg)
    # one cheap pass over the target column: rows without a label, the task when it must be inferred,
    # and the number of classes of a numeric label
    with progress.step("split"):
        stats = _target_stats(df, target, task)
    if task is None:
        from sparkpipe.models.algorithms import infer_task

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
        df, target, label_labels, num_classes = _add_label(df, target, task, stats, lineage)

    weights = [
        1.0 - cfg.data.validation_split - cfg.data.test_split,
        cfg.data.validation_split,
        cfg.data.test_split,
    ]
    names = [n for n, w in zip(("train", "validation", "test"), weights, strict=True) if w > 0]
    conditions = split_conditions(F.col(SPLIT_COL), [w for w in weights if w > 0])
    parts = {n: df.where(c).drop(SPLIT_COL) for n, c in zip(names, conditions, strict=True)}
    return PreparedData(
        parts["train"],
        parts.get("validation"),
        parts.get("test"),
        task,
        target,
        label_labels,
        lineage,
        user_col,
        item_col,
        num_classes=num_classes,
        cached=cached,
    )


def _read(
    spark: SparkSession, cfg: PipelineConfig, progress: Progress
) -> tuple[DataFrame, dict[str, Any], list[DataFrame]]:
    """The input with each row's split value, its lineage, and what was cached for the run."""
    from sparkpipe.data.io import read_dataset
    from sparkpipe.data.split import split_value

    with progress.step("read data"):
        loaded = read_dataset(spark, cfg.data)
    df = loaded.df
    lineage = dict(loaded.lineage)
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
    return df.withColumn(SPLIT_COL, split_value(df, cfg.data.seed)), lineage, cached


def _resolve_roles(
    df: DataFrame, cfg: PipelineConfig
) -> tuple[str | None, str | None, str | None, str | None]:
    """(target, task, user_col, item_col), checked against the columns ``df`` has."""
    from sparkpipe.data.io import require_columns
    from sparkpipe.models.algorithms import infer_task

    target, task, user_col, item_col = resolve_columns(cfg)
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
    return target, task, user_col, item_col


def _add_label(
    df: DataFrame, target: str, task: str, stats: dict[str, Any], lineage: dict[str, Any]
) -> tuple[DataFrame, str, list[str] | None, int | None]:
    """Rows without a label left out (and counted), :data:`LABEL_COL` added from ``target``.

    Returns the frame, the target (renamed when a string target is called ``label``), the labels of a
    string target by index and the class count of a classification label."""
    from pyspark.sql import functions as F

    label_labels: list[str] | None = None
    num_classes: int | None = None
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
    if target == LABEL_COL and not is_numeric(dict(df.dtypes)[target]):
        # a string target called "label" would collide with the indexed label column
        target = f"{LABEL_COL}__target"
        df = df.withColumnRenamed(LABEL_COL, target)
    if task == "classification":
        dtype = dict(df.dtypes)[target]
        if is_numeric(dtype) or dtype == "boolean":
            df = df.withColumn(LABEL_COL, F.col(f"`{target}`").cast("double"))
            top = stats.get("max")
            num_classes = int(top) + 1 if top is not None else None
        else:
            from pyspark.ml.feature import StringIndexer

            indexer = StringIndexer(inputCol=target, outputCol=LABEL_COL, stringOrderType="alphabetAsc").fit(
                df
            )
            label_labels = list(indexer.labels)
            num_classes = len(label_labels)
            df = indexer.transform(df)
    elif task in ("regression", "recommendation"):
        df = df.withColumn(LABEL_COL, F.col(f"`{target}`").cast("double"))
    return df, target, label_labels, num_classes


def _target_stats(df: DataFrame, target: str | None, task: str | None) -> dict[str, Any]:
    """Rows without a label, the target's approximate distinct count (when the task is still unknown)
    and its maximum (the class count of a numeric label), in one aggregation that reads the target
    column only. Rows per split are counted where the splits are read anyway (see :func:`sparkpipe.flow.evaluate.evaluate_fit`)."""
    from pyspark.sql import functions as F

    if target is None:
        return {}
    col = F.col(f"`{target}`")
    exprs = [F.count(F.lit(1)).alias("rows"), F.count(F.when(col.isNull(), 1)).alias("null_target")]
    dtype = dict(df.dtypes)[target]
    numeric = is_numeric(dtype) or dtype == "boolean"
    if task is None and numeric:
        exprs.append(F.approx_count_distinct(col).alias("approx_distinct"))
    if task in (None, "classification") and numeric:
        exprs.append(F.max(col.cast("double")).alias("max"))
    return df.agg(*exprs).first().asDict()
