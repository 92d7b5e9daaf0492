"""Atomic writes of data sets: temp sibling + rename on local filesystems; Delta commits."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame

from sparkpipe.data.paths import (
    _delta_uri,
    _first_line,
    _hidden,
    _is_local,
    _local_path,
    _string_options,
    has_delta_spark,
)
from sparkpipe.errors import DataError, UnknownNameError

log = logging.getLogger(__name__)

_WRITE_MODES = {
    "overwrite": "overwrite",
    "append": "append",
    "error": "error",
    "errorifexists": "error",
    "ignore": "ignore",
}


def _spark_write(
    df: DataFrame, path: str, fmt: str, partition_by: Sequence[str] | None, options: dict[str, str], mode: str
) -> None:
    writer = df.write.format(fmt).mode(mode).options(**options)
    if fmt == "csv":
        writer = writer.option("header", options.get("header", "true"))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def _move_contents(src: str, dst: str) -> None:
    """Move the visible files of ``src`` into ``dst`` keeping relative directories (for appends)."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        rel = os.path.relpath(dirpath, src)
        target_dir = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(target_dir, exist_ok=True)
        for name in filenames:
            if _hidden(name):
                continue
            target = os.path.join(target_dir, name)
            if os.path.exists(target):
                root, ext = os.path.splitext(name)
                target = os.path.join(target_dir, f"{root}-{uuid.uuid4().hex[:8]}{ext}")
            os.replace(os.path.join(dirpath, name), target)


def _write_delta(
    df: DataFrame, path: str, mode: str, partition_by: Sequence[str] | None, options: dict[str, str]
) -> None:
    spark = df.sparkSession
    if has_delta_spark(spark):
        _spark_write(df, path, "delta", partition_by, options, mode)
        return
    try:
        from deltalake import write_deltalake
    except ImportError as exc:  # pragma: no cover - deltalake is a core dependency
        raise DataError("writing Delta tables without delta-spark needs 'pip install deltalake'") from exc
    from pyspark.sql.pandas.types import to_arrow_schema

    delta_mode = {"error": "error", "overwrite": "overwrite", "append": "append", "ignore": "ignore"}[mode]
    target = _delta_uri(path)
    schema_mode = "overwrite" if mode == "overwrite" else None
    arrow_schema = to_arrow_schema(df.schema, timezone="UTC")
    if not _is_local(path):
        data: Any = df.toArrow()  # remote targets: collected on the driver (moderate sizes)
        write_deltalake(
            target,
            data,
            mode=delta_mode,
            partition_by=list(partition_by or []) or None,
            schema_mode=schema_mode,
            storage_options=None,
        )
        return
    import pyarrow.dataset as pads

    parent = os.path.dirname(os.path.abspath(target)) or "."
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(target)}.staging-{uuid.uuid4().hex[:12]}")
    try:
        # Spark writes in parallel; delta-rs then streams the batches into the table (bounded memory)
        df.write.mode("overwrite").parquet(staging)
        dataset = pads.dataset(staging, format="parquet", schema=arrow_schema)
        reader = dataset.scanner(batch_size=64 * 1024).to_reader()
        write_deltalake(
            target,
            reader,
            mode=delta_mode,
            partition_by=list(partition_by or []) or None,
            schema_mode=schema_mode,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_local(
    df: DataFrame, path: str, fmt: str, partition_by: Sequence[str] | None, opts: dict[str, str], mode: str
) -> None:
    """A local write: Spark writes a hidden temp sibling, renamed into place only when it succeeded."""
    target = os.path.abspath(_local_path(path))
    exists = os.path.exists(target)
    if exists and mode == "error":
        raise DataError(f"output {path!r} already exists; remove it or write with mode='overwrite'")
    if exists and mode == "ignore":
        log.info("output %s exists; not written (mode=ignore)", path)
        return
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        _spark_write(df, tmp, fmt, partition_by, opts, "overwrite")
        if exists and mode == "append":
            _move_contents(tmp, target)
        elif exists:
            old = os.path.join(parent, f".{os.path.basename(target)}.old-{uuid.uuid4().hex[:12]}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_dataset(
    df: DataFrame,
    path: str,
    format: str,
    mode: str = "overwrite",
    partition_by: Sequence[str] | None = None,
    options: dict[str, Any] | None = None,
) -> str:
    """Write ``df`` atomically.

    Local filesystem paths: Spark writes to a hidden temp sibling (``.<name>.tmp-<id>``) and the result
    is renamed into place only when the write succeeded (``overwrite`` swaps the old directory out and
    deletes it afterwards; ``append`` moves the new files into the existing directory). A failed write
    leaves the previous output untouched and no temp directory behind. Readers may observe the target
    missing for the instant between the two renames of an overwrite, never a half-written directory.

    Remote URIs (``s3a://``, ``hdfs://``, ``abfss://`` ...) are written directly by Spark: rename is not
    atomic (or not cheap) on object stores, so atomicity there is the output committer's job; prefer
    Delta for transactional remote writes.

    Delta: commits are atomic by themselves. With delta-spark on the classpath Spark writes the table;
    otherwise, for local tables, Spark writes parquet to a staging directory in parallel and
    ``deltalake.write_deltalake`` streams those files into the table in 64k-row Arrow batches (memory
    stays bounded, but the data passes through the driver process once, so throughput is that of one
    machine). For remote Delta targets without delta-spark the DataFrame is collected with
    ``toArrow()`` — fine for moderate data only.

    Parameters
    ----------
    df
        Data to write.
    path
        Target directory or URI.
    format
        ``csv``, ``parquet``, ``json``, ``orc``, ``libsvm`` or ``delta``.
    mode
        ``overwrite`` (default), ``append``, ``error``/``errorifexists`` or ``ignore``.
    partition_by
        Partition columns.
    options
        Extra writer options (CSV gets ``header=true`` unless given).

    Returns
    -------
    str
        The path written.

    Raises
    ------
    DataError
        The target exists with ``mode='error'``, or the write failed.
    UnknownNameError
        Unknown format or mode.
    """
    fmt, spark_mode = _check_write(df, format, mode, partition_by)
    opts = _string_options(options or {})
    try:
        if fmt == "delta":
            _write_delta(df, path, spark_mode, partition_by, opts)
            return path
        if not _is_local(path):
            _spark_write(df, path, fmt, partition_by, opts, spark_mode)
            return path
        _write_local(df, path, fmt, partition_by, opts, spark_mode)
        return path
    except (DataError, UnknownNameError):
        raise
    except Exception as exc:
        raise DataError(f"could not write {fmt} to {path!r}: {_first_line(exc)}") from exc


def _check_write(
    df: DataFrame, format: str, mode: str, partition_by: Sequence[str] | None
) -> tuple[str, str]:
    """``(format, Spark write mode)`` of a :func:`write_dataset` call, after checking the format and mode
    names and that the partition columns exist."""
    fmt = format.lower()
    from sparkpipe.data.readers import READERS  # the registry of format names

    if fmt not in READERS:
        raise UnknownNameError("data format", format, list(READERS))
    try:
        spark_mode = _WRITE_MODES[mode.lower()]
    except KeyError:
        raise UnknownNameError("write mode", mode, list(_WRITE_MODES)) from None
    missing = [c for c in (partition_by or []) if c not in df.columns]
    if missing:
        raise DataError(
            f"partition_by columns {missing} not in the data; available columns: {', '.join(df.columns)}"
        )
    return fmt, spark_mode
