"""The format readers by ``data.format`` name (:data:`READERS`): csv and json (with quarantine),
parquet, orc, libsvm, and Delta (delta-spark, or delta-rs through parquet files or Arrow)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    StringType,
    StructField,
    StructType,
)

from sparkpipe.config import DataConfig
from sparkpipe.data.paths import DELTA_READER_OPTION, _delta_uri, _first_line, has_delta_spark
from sparkpipe.data.quarantine import (
    _csv_checks,
    _decide_types,
    _json_checks,
    _json_native_counts,
    _parse_schema,
    _permissive_options,
    _ReadOutput,
    _sample_counts,
    _split_malformed,
)
from sparkpipe.errors import DataError, UnknownNameError

log = logging.getLogger(__name__)

#: Above this size (bytes) a Delta table read through the driver (``arrow`` path) logs a warning.
DELTA_ARROW_WARN_BYTES = 512 * 1024 * 1024


# Delta reader features the parquet-files read path understands (anything else -> arrow path).
_FILES_SAFE_READER_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})


ReaderFn = Callable[[SparkSession, str, DataConfig, dict[str, str]], _ReadOutput]


def _read_csv(spark: SparkSession, path: str, data_cfg: DataConfig, options: dict[str, str]) -> _ReadOutput:
    opts, corrupt = _permissive_options({"header": "true", **options}, "csv")
    inference: dict[str, Any] = {}
    if data_cfg.schema_:
        schema = _parse_schema(spark, data_cfg.schema_)
    else:  # every column as text (only the header is read), then types decided on a bounded sample
        text_opts = {
            k: v
            for k, v in opts.items()
            if k not in ("mode", "columnNameOfCorruptRecord", "inferSchema", "samplingRatio")
        }
        text = spark.read.options(**text_opts).csv(path)
        schema = text.schema
        if opts.pop("inferSchema", "true").lower() != "false":
            rows = data_cfg.infer_rows
            counts = _sample_counts(text, schema, rows, opts, opts.get("nullValue", ""))
            schema, inference = _decide_types(spark, schema, counts, rows)
    if corrupt in schema.names:
        raise DataError(
            f"the input already has a column named {corrupt!r}; set data.options.columnNameOfCorruptRecord"
        )
    opts.pop("samplingRatio", None)
    full = StructType([*schema.fields, StructField(corrupt, StringType(), True)])
    raw = spark.read.options(**opts).schema(full).csv(path)
    out = _split_malformed(raw, corrupt, _csv_checks(F.col(corrupt), schema, opts), path, data_cfg)
    out.lineage.update(inference)
    return out


def _read_json(spark: SparkSession, path: str, data_cfg: DataConfig, options: dict[str, str]) -> _ReadOutput:
    opts, corrupt = _permissive_options(options, "json")
    inference: dict[str, Any] = {}
    if data_cfg.schema_:
        schema = _parse_schema(spark, data_cfg.schema_)
    else:  # inference already puts malformed lines in the corrupt column when there are any
        schema = spark.read.options(**opts).json(path).schema
        schema = StructType([f for f in schema.fields if f.name != corrupt])
        # Spark types a field as text when any value is text: re-decide text fields on a bounded sample
        texts = [f for f in schema.fields if isinstance(f.dataType, StringType)]
        if texts:
            text_schema = StructType([StructField(f.name, StringType(), True) for f in texts])
            text = spark.read.options(**opts).schema(text_schema).json(path)
            rows = data_cfg.infer_rows
            counts = _sample_counts(text, text_schema, rows, opts, "null")
            native = _json_native_counts(spark, path, text_schema.names, rows, opts)
            for name, (c_int, c_long, c_dbl, c_bool) in native.items():
                counts[name][1:5] = [c_int, c_long, c_dbl, c_bool]
            decided, inference = _decide_types(spark, text_schema, counts, rows)
            by_name = {f.name: f for f in decided.fields}
            schema = StructType([by_name.get(f.name, f) for f in schema.fields])
    data_schema = StructType([f for f in schema.fields if f.name != corrupt])
    full = StructType([*data_schema.fields, StructField(corrupt, StringType(), True)])
    raw = spark.read.options(**opts).schema(full).json(path)
    out = _split_malformed(raw, corrupt, _json_checks(F.col(corrupt), data_schema, opts), path, data_cfg)
    out.lineage.update(inference)
    return out


def _simple_reader(fmt: str) -> ReaderFn:
    def read(spark: SparkSession, path: str, data_cfg: DataConfig, options: dict[str, str]) -> _ReadOutput:
        reader = spark.read.format(fmt).options(**options)
        if data_cfg.schema_ and fmt != "libsvm":
            reader = reader.schema(_parse_schema(spark, data_cfg.schema_))
        elif data_cfg.schema_:
            log.warning(
                "data.schema is ignored for libsvm (columns are always label DOUBLE, features VECTOR)"
            )
        return _ReadOutput(reader.load(path))

    read.__name__ = f"_read_{fmt}"
    read.__doc__ = f"Read {fmt} with Spark's built-in reader."
    return read


def _open_delta(path: str, version: int | None) -> Any:
    try:
        from deltalake import DeltaTable
    except ImportError as exc:  # pragma: no cover - deltalake is a core dependency
        raise DataError("reading Delta tables without delta-spark needs 'pip install deltalake'") from exc
    try:
        return DeltaTable(_delta_uri(path), version=version)
    except Exception as exc:
        text = str(exc)
        if version is not None and ("version" in text.lower() or "not found" in text.lower()):
            latest = None
            with contextlib.suppress(Exception):
                latest = DeltaTable(_delta_uri(path)).version()
            hint = f"; the latest version is {latest}" if latest is not None else ""
            raise DataError(
                f"data.version={version} of Delta table {path!r} cannot be read: {_first_line(exc)}{hint}"
            ) from exc
        raise DataError(
            f"{path!r} is not a readable Delta table (data.input_path): {_first_line(exc)}"
        ) from exc


def _files_route_ok(dt: Any) -> bool:
    """Whether Spark can read the table's parquet files directly (no deletion vectors, column mapping...)."""
    proto = dt.protocol()
    features = set(proto.reader_features or [])
    if proto.min_reader_version >= 2 and not features:
        return False  # reader version 2 = column mapping
    if not features <= _FILES_SAFE_READER_FEATURES:
        return False
    mapping = (dt.metadata().configuration or {}).get("delta.columnMapping.mode")
    return mapping in (None, "none")


def _delta_spark_schema(dt: Any) -> StructType:
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(pa.schema(dt.schema().to_arrow()))


def _delta_via_files(spark: SparkSession, dt: Any) -> DataFrame | None:
    """Spark reads the table's parquet files in parallel; partition values are joined from the log.

    Returns ``None`` when this path cannot be used (the caller falls back to the Arrow path).
    """
    import pyarrow as pa

    schema = _delta_spark_schema(dt)
    part_cols = list(dt.metadata().partition_columns or [])
    uris = list(dt.file_uris())
    if not uris:
        return spark.createDataFrame([], schema)
    uris = [("s3a://" + u[len("s3://") :]) if u.startswith("s3://") else u for u in uris]
    data_schema = StructType([f for f in schema.fields if f.name not in part_cols])
    df = spark.read.schema(data_schema).parquet(*uris)
    if not part_cols:
        return df.select(*[F.col(f"`{f.name}`") for f in schema.fields])
    actions = pa.table(dt.get_add_actions(flatten=True))
    names = [unquote(p).rsplit("/", 1)[-1] for p in actions.column("path").to_pylist()]
    if len(set(names)) != len(names):
        log.warning(
            "Delta table %s has data files with the same name in different directories; "
            "reading it through the driver instead",
            dt.table_uri,
        )
        return None
    key = "__sparkpipe_file"
    cols = {key: pa.array(names, pa.string())}
    for c in part_cols:
        cols[c] = actions.column(f"partition.{c}")
    lookup = spark.createDataFrame(pa.table(cols))
    lookup = lookup.select(
        key,
        *[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in schema.fields if f.name in part_cols],
    )
    joined = df.select("*", F.col("_metadata.file_name").alias(key)).join(F.broadcast(lookup), key, "left")
    return joined.select(*[F.col(f"`{f.name}`") for f in schema.fields])


def _delta_via_arrow(spark: SparkSession, dt: Any) -> DataFrame:
    """Read the table on the driver with delta-rs (handles every Delta feature; moderate sizes only)."""
    with contextlib.suppress(Exception):
        import pyarrow as pa

        size = sum(pa.table(dt.get_add_actions(flatten=True)).column("size_bytes").to_pylist())
        if size > DELTA_ARROW_WARN_BYTES:
            log.warning(
                "reading Delta table %s (%.1f GB) through the driver; install delta-spark on the "
                "cluster for a parallel read",
                dt.table_uri,
                size / 1e9,
            )
    table = dt.to_pyarrow_table()
    if table.num_rows == 0:
        return spark.createDataFrame([], _delta_spark_schema(dt))
    return spark.createDataFrame(table)


def _read_delta(spark: SparkSession, path: str, data_cfg: DataConfig, options: dict[str, str]) -> _ReadOutput:
    opts = dict(options)
    route = opts.pop(DELTA_READER_OPTION, "auto").lower()
    if route not in ("auto", "files", "arrow"):
        raise DataError(f"data.options.{DELTA_READER_OPTION} must be auto, files or arrow, got {route!r}")
    if has_delta_spark(spark):
        reader = spark.read.format("delta").options(**opts)
        if data_cfg.version is not None:
            reader = reader.option("versionAsOf", data_cfg.version)
        df = reader.load(path)
        version = data_cfg.version
        if version is None:
            with contextlib.suppress(Exception):
                row = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").select("version").first()
                version = int(row[0]) if row else None
        return _ReadOutput(df, lineage={"delta_version": version, "delta_reader": "delta-spark"})
    if data_cfg.schema_:
        log.warning("data.schema is ignored for Delta tables (the table's own schema is used)")
    dt = _open_delta(path, data_cfg.version)
    df: DataFrame | None = None
    used = "arrow"
    if route == "files" or (route == "auto" and _files_route_ok(dt)):
        df = _delta_via_files(spark, dt)
        used = "files"
    if df is None:
        df, used = _delta_via_arrow(spark, dt), "arrow"
    return _ReadOutput(df, lineage={"delta_version": int(dt.version()), "delta_reader": f"deltalake-{used}"})


#: Readers by ``data.format`` name.
READERS: dict[str, ReaderFn] = {
    "csv": _read_csv,
    "json": _read_json,
    "parquet": _simple_reader("parquet"),
    "orc": _simple_reader("orc"),
    "libsvm": _simple_reader("libsvm"),
    "delta": _read_delta,
}


def get_reader(fmt: str) -> ReaderFn:
    """The reader registered for ``fmt``.

    Raises
    ------
    UnknownNameError
        ``fmt`` is not a known data format; the message lists the valid ones.
    """
    try:
        return READERS[fmt.lower()]
    except KeyError:
        raise UnknownNameError("data format", fmt, [*READERS, "auto"]) from None
