"""Atomic writes of data sets: temp sibling + rename on local filesystems; Delta commits."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

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
from sparkpipe.fsio import swap_into_place, temp_sibling

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


@dataclass(frozen=True)
class DeltaCommit:
    """What a Delta write did: the table version it made (``None``: nothing committed, e.g. a replayed
    stream batch or ``mode='ignore'``), the files and rows it added, and whether it was skipped."""

    version: int | None
    files: int = 0
    rows: int = 0
    skipped: bool = False


def delta_schema_problem(table_fields: dict[str, str], new_fields: dict[str, str]) -> str | None:
    """Why data with ``new_fields`` cannot be appended to a table with ``table_fields`` (name -> Delta
    type name), naming every column; ``None`` when the schemas agree (column order does not matter)."""
    missing = [c for c in table_fields if c not in new_fields]
    extra = [c for c in new_fields if c not in table_fields]
    changed = [
        f"{c} ({table_fields[c]} in the table, {new_fields[c]} in the data)"
        for c in table_fields
        if c in new_fields and table_fields[c] != new_fields[c]
    ]
    parts = []
    if missing:
        parts.append(f"column(s) missing from the data: {', '.join(missing)}")
    if extra:
        parts.append(f"column(s) not in the table: {', '.join(extra)}")
    if changed:
        parts.append(f"column(s) of another type: {'; '.join(changed)}")
    return "; ".join(parts) or None


def _delta_types(schema: Any) -> dict[str, str]:
    """``{column: Delta type}`` of a ``deltalake.Schema``: ``long``, ``array<double>``,
    ``map<string,long>``, ``struct<a:long>`` (nullability ignored: Spark's differs from write to write)."""

    def name(t: Any) -> str:
        if isinstance(t, str):
            return t
        kind = t.get("type")
        if kind == "array":
            return f"array<{name(t['elementType'])}>"
        if kind == "map":
            return f"map<{name(t['keyType'])},{name(t['valueType'])}>"
        if kind == "struct":
            return "struct<" + ",".join(f"{f['name']}:{name(f['type'])}" for f in t["fields"]) + ">"
        return json.dumps(t, sort_keys=True)

    return {f["name"]: name(f["type"]) for f in json.loads(schema.to_json())["fields"]}


def _nullable_arrow_schema(df: DataFrame) -> Any:
    """The Arrow schema of ``df`` with every field nullable (a later append's nullability may differ)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(df.schema, timezone="UTC")
    return pa.schema([f.with_nullable(True) for f in schema])


def _partition_values(rel_dir: str) -> dict[str, str | None]:
    """``{"region": "n"}`` from Spark's ``region=n`` directories (Hive escaping undone, null marker)."""
    values: dict[str, str | None] = {}
    for part in [p for p in rel_dir.split(os.sep) if p and p != "."]:
        key, _, value = part.partition("=")
        raw = unquote(value)
        values[unquote(key)] = None if raw == "__HIVE_DEFAULT_PARTITION__" else raw
    return values


def _spark_parquet_files(df: DataFrame, staging: str, partition_by: Sequence[str] | None) -> None:
    """Spark writes ``df`` as parquet under ``staging`` with microsecond timestamps (what Delta expects;
    Spark's default INT96 is not a Delta type)."""
    spark = df.sparkSession
    key = "spark.sql.parquet.outputTimestampType"
    before = spark.conf.get(key, None)
    spark.conf.set(key, "TIMESTAMP_MICROS")
    try:
        writer = df.write.mode("overwrite")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(staging)
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def _adopt_files(staging: str, target: str) -> tuple[list[Any], int]:
    """Move the parquet files Spark wrote under ``staging`` into the table directory ``target`` (same
    relative directories; each rename is atomic) and describe them as Delta add actions."""
    import time

    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    actions, rows = [], 0
    for dirpath, dirnames, filenames in os.walk(staging):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        rel_dir = os.path.relpath(dirpath, staging)
        for name in sorted(filenames):
            if _hidden(name) or not name.endswith(".parquet"):
                continue
            src = os.path.join(dirpath, name)
            n = int(pq.read_metadata(src).num_rows)
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            dst = os.path.join(target, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
            actions.append(
                AddAction(
                    path=rel.replace(os.sep, "/"),
                    size=os.path.getsize(dst),
                    partition_values=_partition_values(rel_dir),
                    modification_time=int(time.time() * 1000),
                    data_change=True,
                    stats=json.dumps({"numRecords": n}),
                )
            )
            rows += n
    return actions, rows


def commit_delta(
    df: DataFrame,
    path: str,
    mode: str = "append",
    partition_by: Sequence[str] | None = None,
    app_transaction: tuple[str, int] | None = None,
    commit_metadata: dict[str, Any] | None = None,
) -> DeltaCommit:
    """Write ``df`` to the local Delta table ``path`` in ONE transaction, without delta-spark.

    Spark writes the parquet files in parallel into a hidden staging directory inside the table; they
    are moved into the table directory and committed with delta-rs as add actions of a single commit
    (``DeltaTable.create_write_transaction``, or ``create_table_with_add_actions`` for a new table).
    The data never passes through the driver. A failure before the commit leaves only unreferenced
    files (readers never see them; ``VACUUM`` removes them).

    Parameters
    ----------
    mode
        ``append``, ``overwrite``, ``error`` or ``ignore``. ``append`` checks the schema first and
        refuses a mismatch with an error naming the columns; ``overwrite`` replaces data and schema.
    app_transaction
        ``(app_id, version)``: the commit also records Delta's ``txn`` action; when the table already
        holds a version ``>= version`` for ``app_id`` nothing is written (``skipped``). This is what
        makes a replayed stream batch idempotent.
    commit_metadata
        Extra ``commitInfo`` entries (lineage: model, batch id...).
    """
    from deltalake import CommitProperties, DeltaTable, Schema, Transaction
    from deltalake.transaction import create_table_with_add_actions

    target = os.path.abspath(_local_path(path))
    exists = DeltaTable.is_deltatable(target)
    if exists and mode == "error":
        raise DataError(
            f"could not write delta to {path!r}: the table exists; remove it or write with mode "
            "'overwrite' or 'append'"
        )
    if exists and mode == "ignore":
        log.info("Delta table %s exists; not written (mode=ignore)", path)
        return DeltaCommit(version=None, skipped=True)
    dt = DeltaTable(target) if exists else None
    if dt is not None and app_transaction is not None:
        done = dt.transaction_version(app_transaction[0])
        if done is not None and done >= app_transaction[1]:
            log.info(
                "Delta table %s already holds %s version %d: not written again",
                path,
                app_transaction[0],
                app_transaction[1],
            )
            return DeltaCommit(version=None, skipped=True)
    schema = Schema.from_arrow(_nullable_arrow_schema(df))
    if dt is not None and mode == "append":
        schema, partition_by = _append_layout(dt, schema, path, partition_by)
    props = CommitProperties(
        custom_metadata={k: v for k, v in (commit_metadata or {}).items() if v is not None} or None,
        app_transactions=[Transaction(*app_transaction)] if app_transaction else None,
    )
    os.makedirs(target, exist_ok=True)
    staging = os.path.join(target, f".sparkpipe-staging-{uuid.uuid4().hex[:12]}")
    try:
        _spark_parquet_files(df, staging, partition_by)
        actions, rows = _adopt_files(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    parts = list(partition_by or []) or None
    if dt is None:
        create_table_with_add_actions(
            target, schema, actions, mode="error", partition_by=parts, commit_properties=props
        )
    else:
        dt.create_write_transaction(
            actions, "overwrite" if mode == "overwrite" else "append", schema, parts, commit_properties=props
        )
    version = int(DeltaTable(target).version())
    log.info(
        "committed %d file(s), %d rows to Delta table %s as version %d", len(actions), rows, path, version
    )
    return DeltaCommit(version=version, files=len(actions), rows=rows)


def _append_layout(
    dt: Any, new_schema: Any, path: str, partition_by: Sequence[str] | None
) -> tuple[Any, list[str]]:
    """The table's schema and partition columns for an append of data with ``new_schema``; a schema
    or partitioning that differs is refused with an error naming the columns."""
    problem = delta_schema_problem(_delta_types(dt.schema()), _delta_types(new_schema))
    if problem:
        raise DataError(
            f"cannot append to Delta table {path!r}: the data's schema differs from the table's "
            f"({problem}). Select/cast the columns to the table's schema, or write with mode "
            "'overwrite' to replace the table and its schema"
        )
    table_parts = list(dt.metadata().partition_columns or [])
    if list(partition_by or []) not in ([], table_parts):
        raise DataError(
            f"cannot append to Delta table {path!r} partitioned by {table_parts or 'nothing'} "
            f"with partition_by={list(partition_by or [])}"
        )
    return dt.schema(), table_parts


def _write_delta(
    df: DataFrame,
    path: str,
    mode: str,
    partition_by: Sequence[str] | None,
    options: dict[str, str],
    commit_metadata: dict[str, Any] | None = None,
) -> None:
    spark = df.sparkSession
    if has_delta_spark(spark):
        _spark_write(df, path, "delta", partition_by, options, mode)
        return
    try:
        import deltalake
    except ImportError as exc:  # pragma: no cover - deltalake is a core dependency
        raise DataError("writing Delta tables without delta-spark needs 'pip install deltalake'") from exc
    if _is_local(path):
        commit_delta(df, path, mode, partition_by, commit_metadata=commit_metadata)
        return
    # remote targets without delta-spark: collected on the driver (moderate sizes), one commit
    meta = {k: v for k, v in (commit_metadata or {}).items() if v is not None}
    deltalake.write_deltalake(
        _delta_uri(path),
        df.toArrow(),
        mode=mode,  # type: ignore[arg-type]
        partition_by=list(partition_by or []) or None,
        schema_mode="overwrite" if mode == "overwrite" else None,
        commit_properties=deltalake.CommitProperties(custom_metadata=meta) if meta else None,
    )


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
    tmp = str(temp_sibling(target))
    try:
        _spark_write(df, tmp, fmt, partition_by, opts, "overwrite")
        if exists and mode == "append":
            _move_contents(tmp, target)
        else:
            swap_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_dataset(
    df: DataFrame,
    path: str,
    format: str,
    mode: str = "overwrite",
    partition_by: Sequence[str] | None = None,
    options: dict[str, Any] | None = None,
    delta_metadata: dict[str, Any] | None = None,
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
    otherwise, for local tables, Spark writes the parquet files in parallel into a hidden staging
    directory inside the table, they are moved into place and committed by delta-rs as the add actions
    of ONE transaction (:func:`commit_delta`: no row passes through the driver; ``append`` checks the
    schema and names the columns that differ). For remote Delta targets without delta-spark the
    DataFrame is collected with ``toArrow()`` — fine for moderate data only.

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
    delta_metadata
        Delta only: extra ``commitInfo`` entries of the commit (lineage such as the model version).

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
            _write_delta(df, path, spark_mode, partition_by, opts, delta_metadata)
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
