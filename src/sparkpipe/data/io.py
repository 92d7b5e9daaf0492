"""Reading and writing data sets: a registry of formats, quarantine of malformed rows, lineage.

Entry points
------------
:func:`read_dataset`
    ``data`` config -> :class:`LoadResult` (the good rows, lineage, quarantine count and path).
:func:`write_dataset`
    Atomic writes (temp sibling + rename on local filesystems; Delta commits).
:func:`require_columns`
    A clear error when a configured column is missing.

Formats are looked up by name in :data:`READERS` (``csv, parquet, json, libsvm, delta, orc``);
``format: auto`` infers the format from the path (:func:`detect_format`). Built-in data sets are
addressed as ``builtin:<name>`` and come from :mod:`sparkpipe.data.datasets`.

Nothing is silently dropped: CSV and JSON are parsed with ``mode=PERMISSIVE`` and a corrupt-record
column; rows that fail to parse (bad JSON, wrong number of CSV fields, a value that does not convert to
its column type) are written to ``<output_path>/quarantine/<run>/`` as JSON lines with the raw text and
the reason, counted and logged, and only the good rows are returned.

Delta Lake goes through ``delta-spark`` when it is on the cluster's classpath, otherwise through the
``deltalake`` package (delta-rs): the table's parquet files are read by Spark in parallel (the driver
only reads the transaction log), with partition values joined back from the log.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from sparkpipe.config import DataConfig
from sparkpipe.data.paths import (
    BUILTIN_PREFIX,
    DELTA_READER_OPTION,
    _fingerprint,
    _input_files,
    _missing_path_error,
    _path_exists,
    _string_options,
    detect_format,
    has_delta_spark,
    input_fingerprint,
    object_store_problem,
    spark_hadoop_version,
    uri_scheme,
)
from sparkpipe.data.paths import _is_local as _is_local  # re-exported (preflight, batch)
from sparkpipe.data.paths import _local_path as _local_path  # re-exported (preflight, batch)
from sparkpipe.data.quarantine import (
    CORRUPT_COLUMN,
    NOT_JSON,
    TEXT_WARN_SHARE,
    TYPED_MAJORITY,
    WRONG_FIELD_COUNT,
    _spark_errors,
    read_quarantine,
)
from sparkpipe.data.readers import READERS, ReaderFn, get_reader
from sparkpipe.data.readers import _open_delta as _open_delta  # re-exported (preflight, batch)
from sparkpipe.data.writers import write_dataset
from sparkpipe.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class LoadResult:
    """What :func:`read_dataset` returns.

    Attributes
    ----------
    df
        The good rows (malformed ones removed and quarantined).
    lineage
        Where the data came from and what it looked like; JSON-friendly (logged to MLflow).
    quarantined
        Number of malformed rows set aside.
    quarantine_path
        Directory they were written to, or ``None`` when there were none.
    """

    df: DataFrame
    lineage: dict[str, Any]
    quarantined: int = 0
    quarantine_path: str | None = None


def _columns(df: DataFrame) -> dict[str, str]:
    return {f.name: f.dataType.simpleString() for f in df.schema.fields}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _read_builtin(spark: SparkSession, data_cfg: DataConfig) -> LoadResult:
    from sparkpipe.data.datasets import dataset_info, load_builtin

    name = data_cfg.input_path[len(BUILTIN_PREFIX) :].strip()
    info = dataset_info(name)
    df = load_builtin(spark, info.name, rows=data_cfg.rows, seed=data_cfg.seed)
    rows = (data_cfg.rows or info.default_rows) if info.synthetic else None
    lineage: dict[str, Any] = {
        "path": data_cfg.input_path,
        "format": "builtin",
        "name": info.name,
        "rows": rows,
        "seed": data_cfg.seed,
        "task": info.task,
        "target": info.target,
        "columns": _columns(df),
        "quarantined_count": 0,
        "read_at": _now(),
    }
    lineage["row_count"] = int(rows) if rows is not None else df.count()
    lineage["rows"] = lineage["row_count"]
    return LoadResult(df=df, lineage=lineage)


def read_dataset(spark: SparkSession, data_cfg: DataConfig) -> LoadResult:
    """Read the configured data set: format lookup, quarantine of malformed rows, lineage.

    Parameters
    ----------
    spark
        Active session.
    data_cfg
        The ``data`` section: ``input_path`` (a path, glob, URI or ``builtin:<name>``), ``format``
        (``auto`` infers it), ``options`` (passed to Spark's reader), ``schema`` (DDL string, CSV/JSON/
        parquet/ORC), ``version`` (Delta time travel), ``rows`` and ``seed`` (built-ins),
        ``quarantine`` and ``output_path`` (quarantine goes below it). ``sample_fraction`` is *not*
        applied here: the caller samples (the pipeline does, after reading), so it happens once.

    Returns
    -------
    LoadResult
        Good rows, lineage dict, quarantined count and path. For CSV/JSON the returned DataFrame is
        backed by a persisted parse (see :func:`_split_malformed`).

    Raises
    ------
    DataError
        Missing path (names ``data.input_path``), unreadable data, a format that does not match,
        an empty data set, or malformed rows with ``data.quarantine: false``.
    UnknownNameError
        Unknown ``data.format`` or built-in data set name.
    """
    path = data_cfg.input_path.strip()
    if path.startswith(BUILTIN_PREFIX):
        return _read_builtin(spark, data_cfg)
    fmt = data_cfg.format.lower()
    if fmt != "auto":
        get_reader(fmt)  # unknown names fail before touching the filesystem
    if _path_exists(spark, path) is False:
        raise _missing_path_error(path)
    if fmt == "auto":
        fmt = detect_format(path, spark)
        log.info("data.format auto: %s is %s", path, fmt)
    reader = get_reader(fmt)
    options = _string_options(data_cfg.options)
    # a relative local path means the working directory of this process; the JVM's may differ (a
    # session reused after os.chdir in a notebook or in-process tests)
    spark_path = os.path.abspath(_local_path(path)) if _is_local(path) else path
    with _spark_errors(path, fmt):
        out = reader(spark, spark_path, data_cfg, options)
        df = out.df
        row_count = out.row_count if out.row_count is not None else df.count()
    if row_count == 0:
        extra = (
            f"; all {out.quarantined} rows were malformed and are in {out.quarantine_path}"
            if out.quarantined
            else ""
        )
        raise DataError(f"the data set at {path!r} (data.input_path) has no rows{extra}")
    lineage: dict[str, Any] = {
        "path": path,
        "resolved_path": os.path.abspath(_local_path(path)) if _is_local(path) else path,
        "format": fmt,
        "row_count": int(row_count),
        "quarantined_count": int(out.quarantined),
        "quarantine_path": out.quarantine_path,
        "columns": _columns(df),
        "read_at": _now(),
    }
    lineage.update(out.lineage)
    if fmt == "delta":
        lineage.setdefault("delta_version", None)
    files = _input_files(spark, path)  # listed once: the fingerprint and the size come from it
    if fmt != "delta":
        lineage["fingerprint"] = _fingerprint(files)
    if files is not None:
        lineage["input_bytes"] = sum(size for _, size, _ in files)
    log.info("read %s (%s): %d rows, %d quarantined", path, fmt, lineage["row_count"], out.quarantined)
    return LoadResult(
        df=df, lineage=lineage, quarantined=int(out.quarantined), quarantine_path=out.quarantine_path
    )


def require_columns(df: DataFrame, cols: Sequence[str] | str | None, key: str) -> None:
    """Raise a :class:`DataError` naming the config ``key`` unless every column in ``cols`` exists.

    Parameters
    ----------
    df
        The data.
    cols
        Required column name(s); ``None`` entries are ignored.
    key
        Config key the names come from, e.g. ``features.target``.
    """
    wanted = [cols] if isinstance(cols, str) else [c for c in (cols or []) if c]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        raise DataError(
            f"{key}: {noun} {', '.join(repr(c) for c in missing)} not found in the data; available columns: "
            f"{', '.join(df.columns)}"
        )


__all__ = [
    "BUILTIN_PREFIX",
    "CORRUPT_COLUMN",
    "DELTA_READER_OPTION",
    "NOT_JSON",
    "READERS",
    "TEXT_WARN_SHARE",
    "TYPED_MAJORITY",
    "WRONG_FIELD_COUNT",
    "LoadResult",
    "ReaderFn",
    "detect_format",
    "get_reader",
    "has_delta_spark",
    "input_fingerprint",
    "object_store_problem",
    "read_dataset",
    "read_quarantine",
    "require_columns",
    "spark_hadoop_version",
    "uri_scheme",
    "write_dataset",
]
