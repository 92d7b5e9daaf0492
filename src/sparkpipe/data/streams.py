"""Streaming sources for ``sparkpipe stream``: a directory of files (csv, json, parquet) or a Kafka
topic (``kafka://host:port/topic``), read with Spark Structured Streaming under the model's schema, with
the same permissive parsing as the batch readers so that malformed records can be quarantined per
micro-batch (:func:`split_batch`) instead of failing the query or being dropped.

A Kafka source needs Spark's ``spark-sql-kafka-0-10`` package on the cluster's classpath; its absence is
an error that says how to add it (:func:`require_kafka`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from sparkpipe.data.paths import _is_local, _local_path, _string_options, detect_format
from sparkpipe.data.quarantine import (
    CORRUPT_COLUMN,
    _csv_checks,
    _describe_reasons,
    _json_checks,
    _parse_schema,
    _permissive_options,
    _reason,
)
from sparkpipe.errors import DataError, UnknownNameError

log = logging.getLogger(__name__)

KAFKA_PREFIX = "kafka://"
#: The JVM class of Spark's Kafka source (package ``org.apache.spark:spark-sql-kafka-0-10_2.13``).
KAFKA_PROVIDER = "org.apache.spark.sql.kafka010.KafkaSourceProvider"
#: Formats of a file source.
FILE_FORMATS = ("csv", "json", "parquet")
_SOURCE_COLUMN = "_sparkpipe_source"


@dataclass
class StreamSource:
    """A streaming DataFrame and how to tell its malformed records apart.

    ``corrupt`` names the column that holds a malformed record's raw text (``None``: the format cannot
    be malformed row by row, e.g. parquet); ``checks`` are the per-column reasons (see
    :mod:`sparkpipe.data.quarantine`); ``schema`` is the data schema (without the corrupt column).
    """

    df: DataFrame
    kind: str
    schema: StructType
    corrupt: str | None = None
    checks: list[tuple[str, Column]] = field(default_factory=list)


def kafka_options(source: str, options: dict[str, Any] | None = None) -> dict[str, str]:
    """Spark Kafka reader options of ``kafka://host:port[,host:port...]/topic[,topic...]``.

    Topics are subscribed from the earliest offset unless ``options`` say otherwise (``startingOffsets``,
    ``subscribePattern``, ``kafka.security.protocol``...: any Spark Kafka option passes through).

    Raises
    ------
    DataError
        The URI has no broker or no topic; the message shows the expected form.
    """
    parts = urlsplit(source)
    topics = parts.path.strip("/")
    opts = _string_options(options or {})
    if parts.scheme != "kafka" or not parts.netloc or not (topics or "subscribePattern" in opts):
        raise DataError(
            f"--source {source!r} is not a Kafka source: use kafka://HOST:PORT/TOPIC "
            "(several brokers: kafka://b1:9092,b2:9092/topic; several topics: topic1,topic2)"
        )
    out = {"kafka.bootstrap.servers": parts.netloc, "startingOffsets": "earliest", "failOnDataLoss": "true"}
    if topics and "subscribePattern" not in opts and "assign" not in opts:
        out["subscribe"] = topics
    out.update(opts)
    return out


def require_kafka(spark: SparkSession) -> None:
    """Raise a :class:`DataError` saying how to add the Kafka package when Spark lacks it."""
    try:
        spark._jvm.java.lang.Class.forName(KAFKA_PROVIDER)  # type: ignore[union-attr]
        return
    except Exception:
        pass
    version = spark.version
    raise DataError(
        "a kafka:// source needs Spark's Kafka connector, which this Spark does not have "
        f"({KAFKA_PROVIDER} is not on the classpath). Start Spark with it: in the config, "
        f'spark: {{conf: {{spark.jars.packages: "org.apache.spark:spark-sql-kafka-0-10_2.13:{version}"}}}} '
        "(needs Maven access), or put the jar and its dependencies in $SPARK_HOME/jars on every node"
    )


def model_schema(input_schema: Sequence[Sequence[str]] | None, spark: SparkSession) -> StructType:
    """The model's input schema (``[[name, spark type], ...]`` from its metadata) as a StructType."""
    cols = [(str(c[0]), str(c[1])) for c in input_schema or []]
    if not cols:
        return StructType([])
    ddl = ", ".join(f"`{n.replace('`', '``')}` {t}" for n, t in cols)
    return _parse_schema(spark, ddl)


def stream_schema(
    spark: SparkSession,
    source: str,
    fmt: str,
    model_fields: StructType,
    ddl: str | None,
    options: dict[str, str],
) -> StructType:
    """The schema the stream reads ``source`` with.

    ``ddl`` (``--schema``) wins. Otherwise the columns of the files already in the source (a CSV header,
    the fields of JSON lines, a parquet schema) in their order; CSV and JSON columns the model reads are
    typed as it reads them (a value that does not convert is quarantined), the others pass through
    (CSV: as text); parquet keeps its own types. With no files yet, the model's own
    columns. A model column the files lack is an error naming it.
    """
    if ddl:
        schema = _parse_schema(spark, ddl)
    else:
        existing = _existing_schema(spark, source, fmt, options)
        if existing is None:
            log.warning(
                "no files in %s yet: reading the model's columns only (%s); pass --schema to keep other "
                "columns such as ids",
                source,
                ", ".join(model_fields.names),
            )
            schema = model_fields
        elif fmt == "parquet":  # typed files: their own types (the model casts what it reads)
            schema = existing
        else:
            typed = {f.name: f for f in model_fields.fields}
            schema = StructType([typed.get(f.name, f) for f in existing.fields])
    missing = [n for n in model_fields.names if n not in schema.names]
    if missing:
        raise DataError(
            f"--source {source}: missing column(s) {', '.join(missing)} that the model needs; the stream "
            f"reads: {', '.join(schema.names)}. Add them to the data or to --schema"
        )
    corrupt = options.get("columnNameOfCorruptRecord", CORRUPT_COLUMN)
    if corrupt in schema.names:
        raise DataError(
            f"the input already has a column named {corrupt!r}; pass --source-option "
            "columnNameOfCorruptRecord=<another name>"
        )
    return schema


def _existing_schema(
    spark: SparkSession, source: str, fmt: str, options: dict[str, str]
) -> StructType | None:
    if _is_local(source):
        local = _local_path(source)
        visible = (
            [n for n in os.listdir(local) if not n.startswith((".", "_"))] if os.path.isdir(local) else []
        )
        if not visible:
            return None
    try:
        if fmt == "csv":
            opts = {"header": "true", **{k: v for k, v in options.items() if k not in ("mode",)}}
            opts.pop("inferSchema", None)
            names = spark.read.options(**opts).csv(source).columns
            return StructType([StructField(n, StringType(), True) for n in names])
        if fmt == "json":
            return spark.read.options(**options).json(source).schema
        return spark.read.options(**options).parquet(source).schema
    except Exception as exc:
        raise DataError(
            f"cannot read the files in --source {source} as {fmt}: {exc}".splitlines()[0]
        ) from exc


def source_format(source: str, fmt: str, spark: SparkSession) -> str:
    """``csv``, ``json``, ``parquet`` or ``kafka``: ``fmt`` checked, or ``auto`` resolved from the files."""
    if source.startswith(KAFKA_PREFIX):
        return "kafka"
    fmt = fmt.lower()
    if fmt == "auto":
        try:
            fmt = detect_format(source, spark)
        except DataError:
            raise DataError(
                f"cannot tell the format of --source {source} (no files with a known extension yet): "
                f"pass --source-format, one of {', '.join(FILE_FORMATS)}"
            ) from None
    if fmt not in FILE_FORMATS:
        raise UnknownNameError("stream source format", fmt, list(FILE_FORMATS))
    return fmt


def open_stream(
    spark: SparkSession,
    source: str,
    fmt: str,
    model_fields: StructType,
    ddl: str | None = None,
    options: dict[str, Any] | None = None,
    max_per_trigger: int | None = None,
) -> StreamSource:
    """A streaming DataFrame over ``source`` (a directory or ``kafka://...``) with permissive parsing.

    Raises
    ------
    DataError
        Missing source directory, unknown format, model columns missing, no Kafka connector.
    """
    opts = _string_options(options or {})
    kind = source_format(source, fmt, spark)
    if kind == "kafka":
        return _kafka_stream(spark, source, model_fields, ddl, opts, max_per_trigger)
    if _is_local(source):
        local = _local_path(source)
        if not os.path.isdir(local):
            raise DataError(f"--source {source}: no such directory (a stream reads a directory of files)")
        source = os.path.abspath(local)
    schema = stream_schema(spark, source, kind, model_fields, ddl, opts)
    reader = spark.readStream
    if max_per_trigger:
        reader = reader.option("maxFilesPerTrigger", str(max_per_trigger))
    if kind == "parquet":
        df = reader.options(**opts).schema(schema).parquet(source)
        return StreamSource(df.select("*", F.col("_metadata.file_path").alias(_SOURCE_COLUMN)), kind, schema)
    base = {"header": "true", **opts} if kind == "csv" else opts
    popts, corrupt = _permissive_options(base, kind)
    if popts.get("mode") == "FAILFAST":
        raise DataError(
            "--source-option mode=FAILFAST would stop the stream at the first bad record; "
            "malformed records are quarantined instead (drop the option)"
        )
    full = StructType([*schema.fields, StructField(corrupt, StringType(), True)])
    df = reader.options(**popts).schema(full).format(kind).load(source)
    checks = (
        _csv_checks(F.col(corrupt), schema, popts)
        if kind == "csv"
        else _json_checks(F.col(corrupt), schema, popts)
    )
    df = df.select("*", F.col("_metadata.file_path").alias(_SOURCE_COLUMN))
    return StreamSource(df, kind, schema, corrupt, checks)


def _kafka_stream(
    spark: SparkSession,
    source: str,
    model_fields: StructType,
    ddl: str | None,
    opts: dict[str, str],
    max_per_trigger: int | None,
) -> StreamSource:
    """Kafka records whose value is a JSON object with the model's fields (or ``--schema``)."""
    schema = _parse_schema(spark, ddl) if ddl else model_fields
    missing = [n for n in model_fields.names if n not in schema.names]
    if missing:
        raise DataError(f"--schema lacks column(s) {', '.join(missing)} that the model needs")
    reader_opts = kafka_options(source, opts)
    require_kafka(spark)
    if max_per_trigger:
        reader_opts.setdefault("maxOffsetsPerTrigger", str(max_per_trigger))
    raw = spark.readStream.format("kafka").options(**reader_opts).load()
    corrupt = CORRUPT_COLUMN
    full = StructType([*schema.fields, StructField(corrupt, StringType(), True)])
    value = F.col("value").cast("string")
    parsed = F.from_json(value, full, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": corrupt})
    where = F.concat(
        F.lit(source + "#"), F.col("partition").cast("string"), F.lit("@"), F.col("offset").cast("string")
    )
    df = raw.select(parsed.alias("r"), value.alias("_value"), where.alias(_SOURCE_COLUMN))
    # a value that is not JSON at all parses to NULL fields: its raw text becomes the corrupt record
    df = df.select(
        *[F.col(f"r.`{f.name}`").alias(f.name) for f in schema.fields],
        F.coalesce(F.col(f"r.`{corrupt}`"), F.when(F.col("r").isNull(), F.col("_value"))).alias(corrupt),
        _SOURCE_COLUMN,
    )
    return StreamSource(df, "kafka", schema, corrupt, _json_checks(F.col(corrupt), schema, {}))


@dataclass
class BatchSplit:
    """One micro-batch split: the good rows (persisted; :meth:`release` when done), the quarantine rows
    (``raw, reason, source_file, quarantined_at``) and the counts."""

    good: DataFrame
    bad: DataFrame | None
    rows: int
    quarantined: int
    by_reason: dict[str, int]
    _persisted: DataFrame

    def release(self) -> None:
        self._persisted.unpersist()


def split_batch(batch: DataFrame, source: StreamSource) -> BatchSplit:
    """Split a micro-batch of ``source`` into good rows and quarantine rows, counted in one pass.

    The batch is persisted first for the reason :func:`sparkpipe.data.quarantine._split_malformed`
    gives (a parse that later queries would redo differently).
    """
    parsed = batch.persist(StorageLevel.MEMORY_AND_DISK)
    if source.corrupt is None:
        total = parsed.count()
        good = parsed.drop(_SOURCE_COLUMN)
        return BatchSplit(good, None, total, 0, {}, parsed)
    corrupt = source.corrupt
    is_bad = F.col(corrupt).isNotNull()
    per_check = [F.count(F.when(is_bad, c)) for _, c in source.checks]
    counts = parsed.agg(F.count(F.lit(1)), F.count(F.col(corrupt)), *per_check).first()
    total, bad = int(counts[0]), int(counts[1])  # type: ignore[index]
    by_reason = {name: int(n) for (name, _), n in zip(source.checks, counts[2:], strict=True) if n}  # type: ignore[index]
    good = parsed.where(~is_bad).drop(corrupt, _SOURCE_COLUMN)
    bad_rows = None
    if bad:
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        bad_rows = parsed.where(is_bad).select(
            F.col(corrupt).alias("raw"),
            _reason(source.checks).alias("reason"),
            F.col(_SOURCE_COLUMN).alias("source_file"),
            F.lit(now).alias("quarantined_at"),
        )
        log.warning(
            "%d of %d records of the micro-batch are malformed (%s)", bad, total, _describe_reasons(by_reason)
        )
    return BatchSplit(good, bad_rows, total, bad, by_reason, parsed)
