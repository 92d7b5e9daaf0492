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

import contextlib
import datetime as _dt
import glob
import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from sparkpipe.config import DataConfig
from sparkpipe.errors import DataError, UnknownNameError

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
#: Default name of the column that holds the raw text of a malformed CSV/JSON record.
CORRUPT_COLUMN = "_sparkpipe_corrupt_record"
_SOURCE_COLUMN = "_sparkpipe_source_file"
#: Keys of ``lineage.quarantined_by_reason`` for whole-record failures (other keys are column names).
WRONG_FIELD_COUNT = "(wrong number of fields)"
NOT_JSON = "(not valid JSON)"
#: A column is typed as text only when fewer than this share of its sampled values parse as the best
#: non-text type (number, boolean, date, timestamp); otherwise the values that do not parse are quarantined.
TYPED_MAJORITY = 0.5
#: A text column where at least this share of sampled values would parse as another type is logged loudly.
TEXT_WARN_SHARE = 0.1
#: Reader option (popped before Spark sees it) choosing the Delta read path without delta-spark:
#: ``auto`` (default), ``files`` (Spark reads the table's parquet files) or ``arrow`` (via the driver).
DELTA_READER_OPTION = "deltaReader"
#: Above this size (bytes) a Delta table read through the driver (``arrow`` path) logs a warning.
DELTA_ARROW_WARN_BYTES = 512 * 1024 * 1024
# Delta reader features the parquet-files read path understands (anything else -> arrow path).
_FILES_SAFE_READER_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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


@dataclass
class _ReadOutput:
    """What a format reader hands back to :func:`read_dataset`."""

    df: DataFrame
    row_count: int | None = None  # good rows, when the reader already knows it
    quarantined: int = 0
    quarantine_path: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)


ReaderFn = Callable[[SparkSession, str, DataConfig, dict[str, str]], _ReadOutput]


# ------------------------------------------------------------------------------------------ paths
def _is_local(path: str) -> bool:
    """``True`` for plain filesystem paths and ``file:`` URIs."""
    return not _URI_RE.match(path) or path.lower().startswith("file://")


def _local_path(path: str) -> str:
    """Filesystem path of a local path or ``file:`` URI."""
    if path.lower().startswith("file://"):
        return unquote(path[len("file://") :]) or "/"
    if path.lower().startswith("file:"):
        return unquote(path[len("file:") :])
    return os.path.expanduser(path)


def _has_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _hidden(name: str) -> bool:
    """Names Spark skips when listing input files."""
    return name.startswith(("_", "."))


def _list_local_files(root: str) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` of the visible files under a local path (or glob).

    Paths are relative to the directory given (or, for a glob, to the directory part of the pattern;
    for a single file, just its name), so moving a data set elsewhere keeps its fingerprint.
    """
    if _has_glob(root):
        roots, base = sorted(glob.glob(root)), os.path.dirname(root) or "."
    else:
        roots, base = [root], root if os.path.isdir(root) else os.path.dirname(root) or "."
    out: list[tuple[str, int, int]] = []
    for r in roots:
        if os.path.isfile(r):
            st = os.stat(r)
            out.append((os.path.relpath(r, base), st.st_size, st.st_mtime_ns))
            continue
        for dirpath, dirnames, filenames in os.walk(r):
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            for name in filenames:
                if not _hidden(name):
                    full = os.path.join(dirpath, name)
                    st = os.stat(full)
                    out.append((os.path.relpath(full, base), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _list_hadoop_files(spark: SparkSession, path: str) -> list[tuple[str, int, int]] | None:
    """Same as :func:`_list_local_files` through Hadoop's FileSystem (remote URIs); ``None`` on failure."""
    try:
        jvm = spark._jvm  # type: ignore[attr-defined]
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
        root = fs.makeQualified(hpath).toString().rstrip("/")
        it = fs.listFiles(hpath, True)
        out: list[tuple[str, int, int]] = []
        while it.hasNext():
            st = it.next()
            full = st.getPath().toString()
            rel = full[len(root) :].lstrip("/") or st.getPath().getName()
            if any(_hidden(part) for part in rel.split("/")):
                continue
            out.append((rel, int(st.getLen()), int(st.getModificationTime())))
        return sorted(out)
    except Exception as exc:
        log.debug("could not list %s through Hadoop FileSystem: %s", path, exc)
        return None


def input_fingerprint(spark: SparkSession | None, path: str) -> str | None:
    """SHA-256 over the sorted ``(relative path, size, mtime)`` of the input files.

    Cheap (no data is read) and changes whenever a file is added, removed, resized or rewritten.

    Parameters
    ----------
    spark
        Session used to list remote URIs through Hadoop's FileSystem (may be ``None`` for local paths).
    path
        File, directory, glob or URI.

    Returns
    -------
    str or None
        Hex digest, or ``None`` when the files cannot be listed.
    """
    return _fingerprint(_input_files(spark, path))


def _input_files(spark: SparkSession | None, path: str) -> list[tuple[str, int, int]] | None:
    """``(relative path, size, mtime)`` of the input files: local listing, else Hadoop's FileSystem."""
    files = _list_local_files(_local_path(path)) if _is_local(path) else None
    if files is None and spark is not None:
        files = _list_hadoop_files(spark, path)
    return files


def _fingerprint(files: list[tuple[str, int, int]] | None) -> str | None:
    """SHA-256 over a file listing from :func:`_input_files` (``None`` when there is none)."""
    if files is None:
        return None
    digest = hashlib.sha256()
    for rel, size, mtime in files:
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def _path_exists(spark: SparkSession, path: str) -> bool | None:
    """Whether ``path`` exists; ``None`` when that cannot be checked (then Spark will tell)."""
    if _is_local(path):
        local = _local_path(path)
        return bool(glob.glob(local)) if _has_glob(local) else os.path.exists(local)
    try:
        jvm = spark._jvm  # type: ignore[attr-defined]
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(spark._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
        if _has_glob(path):
            found = fs.globStatus(hpath)
            return found is not None and len(found) > 0
        return bool(fs.exists(hpath))
    except Exception as exc:
        log.debug("could not check whether %s exists: %s", path, exc)
        return None


def _missing_path_error(path: str) -> DataError:
    where = f" (resolved to {os.path.abspath(_local_path(path))})" if _is_local(path) else ""
    return DataError(
        f"data.input_path: {path!r} does not exist{where}. Fix data.input_path in the config (or pass "
        "--set data.input_path=...), or use a built-in data set such as 'builtin:churn'"
    )


# -------------------------------------------------------------------------------- object stores
@dataclass(frozen=True)
class _Connector:
    """The Hadoop connector behind an object-store URI scheme."""

    store: str
    artifact: str  # Maven artifact name, also the jar's file-name prefix
    package: str  # spark.jars.packages coordinate ({hadoop} = the Hadoop version Spark ships)
    impl: str | None = None  # fs.<scheme>.impl Spark needs set (None: the connector registers it)


_S3 = "s3a"
_CONNECTORS: dict[str, _Connector] = {
    **dict.fromkeys(
        ("s3", "s3a", "s3n"),
        _Connector("Amazon S3", "hadoop-aws", "org.apache.hadoop:hadoop-aws:{hadoop}"),
    ),
    "gs": _Connector(
        "Google Cloud Storage",
        "gcs-connector",
        "com.google.cloud.bigdataoss:gcs-connector:hadoop3-2.2.22",
        "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem",
    ),
    **dict.fromkeys(
        ("abfs", "abfss", "wasb", "wasbs"),
        _Connector("Azure storage", "hadoop-azure", "org.apache.hadoop:hadoop-azure:{hadoop}"),
    ),
}


def uri_scheme(path: str) -> str | None:
    """The lower-case URI scheme of ``path`` (``s3a``, ``hdfs``, ...), or ``None`` for a local path."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", path.strip())
    return m.group(1).lower() if m else None


def _spark_jars_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("SPARK_HOME"):
        dirs.append(Path(os.environ["SPARK_HOME"]) / "jars")
    with contextlib.suppress(ImportError):
        import pyspark

        dirs.append(Path(pyspark.__file__).parent / "jars")
    return [d for d in dirs if d.is_dir()]


def spark_hadoop_version() -> str | None:
    """The Hadoop version of the Spark jars on this machine (``hadoop-client-api-<v>.jar``), if found."""
    for d in _spark_jars_dirs():
        for jar in d.glob("hadoop-client-api-*.jar"):
            return jar.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    return None


def object_store_problem(
    path: str, key: str, conf: dict[str, Any], master: str, data_format: str = "auto", options: Any = None
) -> str | None:
    """Why Spark cannot open the object-store URI ``path`` with this config, or ``None`` (no JVM).

    Spark reads ``s3a://``, ``gs://``, ``abfss://`` ... through Hadoop connectors that pyspark does not
    ship. Without one, a run fails deep inside Spark with ``No FileSystem for scheme "s3"``. This
    checks, before Spark starts, that the connector is there: its jar in the Spark jars directory, or
    its package in ``spark.conf`` (``spark.jars.packages`` / ``spark.jars``); ``s3://`` (and ``gs://``)
    also need ``spark.hadoop.fs.<scheme>.impl``. On ``yarn`` and ``k8s://`` masters the cluster's Spark
    distribution decides, so nothing is checked. A Delta table read with ``deltaReader: arrow`` goes
    through delta-rs, which needs no connector.

    Parameters
    ----------
    path
        The configured URI.
    key
        Config key it came from (``data.input_path``), named in the message.
    conf, master
        ``spark.conf`` entries and ``spark.master``.
    data_format, options
        ``data.format`` and ``data.options``.
    """
    scheme = uri_scheme(path)
    connector = _CONNECTORS.get(scheme or "")
    if connector is None or master == "yarn" or master.startswith("k8s://"):
        return None
    if data_format == "delta" and str((options or {}).get(DELTA_READER_OPTION, "")).lower() == "arrow":
        return None
    conf = {str(k): str(v) for k, v in (conf or {}).items()}
    listed = " ".join(conf.get(k, "") for k in ("spark.jars.packages", "spark.jars"))
    has_jar = connector.artifact in listed or any(
        any(d.glob(f"{connector.artifact}-*.jar")) for d in _spark_jars_dirs()
    )
    impl_key = f"spark.hadoop.fs.{scheme}.impl"
    hadoop = spark_hadoop_version() or "<the Hadoop version of your Spark>"
    package = connector.package.format(hadoop=hadoop)
    if not has_jar:
        impl = connector.impl or ("org.apache.hadoop.fs.s3a.S3AFileSystem" if scheme == "s3" else None)
        also = f" and {impl_key}: {impl}" if impl else ""
        return (
            f"{key}: {path!r} is on {connector.store} ({scheme}://), and Spark here has no {connector.artifact} "
            f"connector. Add it under spark.conf: spark.jars.packages: {package}{also} (downloaded from Maven "
            f"at start), or put the jar in {(_spark_jars_dirs() or [Path('$SPARK_HOME/jars')])[0]}, or run on "
            "a cluster whose Spark has it (yarn / k8s masters are not checked); see the README, 'Data on S3'"
        )
    needs_impl = scheme == "s3" or (connector.impl is not None and scheme == "gs")
    if needs_impl and impl_key not in conf:
        impl = connector.impl or "org.apache.hadoop.fs.s3a.S3AFileSystem"
        fix = f"write {_S3}://{path.split('://', 1)[1]} instead, or set " if scheme == "s3" else "set "
        return f"{key}: Spark has no FileSystem for {scheme}://; {fix}spark.conf {impl_key}: {impl}"
    return None


# ------------------------------------------------------------------------------------ format detection
_EXTENSIONS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".orc": "orc",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".libsvm": "libsvm",
    ".svm": "libsvm",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".snappy", ".zst", ".zstd", ".lz4", ".deflate", ".xz")
_LIBSVM_LINE = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?(\s+\d+:\S+)*\s*$")


def _format_of_name(name: str, sniff: Callable[[], str | None] | None = None) -> str | None:
    lower = name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if lower.endswith(suffix) and not lower.endswith((".snappy.parquet", ".snappy.orc")):
            lower = lower[: -len(suffix)]
            break
    ext = os.path.splitext(lower)[1]
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    if ext == ".txt" and sniff is not None:
        return sniff()
    return None


def _sniff_libsvm(file: str) -> str | None:
    """``'libsvm'`` when the first non-empty lines of a text file look like ``label idx:val ...``."""
    try:
        with open(file, encoding="utf-8", errors="replace") as fh:
            lines = [ln for ln in (fh.readline() for _ in range(20)) if ln.strip()]
    except OSError:
        return None
    if lines and all(_LIBSVM_LINE.match(ln) for ln in lines) and any(":" in ln for ln in lines):
        return "libsvm"
    return None


def detect_format(path: str, spark: SparkSession | None = None) -> str:
    """Infer the data format of ``path`` (what ``data.format: auto`` does).

    Rules: a directory with ``_delta_log/`` is Delta; otherwise the extension of the path or of the
    files inside the directory decides (``.parquet``, ``.orc``, ``.csv``/``.tsv``, ``.json``/``.jsonl``,
    ``.libsvm``; ``.txt`` when its lines look like libsvm). Compression suffixes (``.gz`` ...) are ignored.

    Raises
    ------
    DataError
        The format cannot be inferred; the message asks to set ``data.format``.
    """
    valid = ", ".join(sorted(READERS))
    if path.startswith(BUILTIN_PREFIX):
        return "builtin"
    if _is_local(path):
        local = _local_path(path)
        if os.path.isdir(local):
            if os.path.isdir(os.path.join(local, "_delta_log")):
                return "delta"
            counts: dict[str, int] = {}
            for rel, _, _ in _list_local_files(local)[:1000]:
                fmt = _format_of_name(rel, lambda rel=rel: _sniff_libsvm(os.path.join(local, rel)))
                if fmt:
                    counts[fmt] = counts.get(fmt, 0) + 1
            if counts:
                return max(counts, key=lambda k: counts[k])
        else:
            candidates = sorted(glob.glob(local)) if _has_glob(local) else [local]
            for cand in candidates:
                if os.path.isdir(cand):
                    return detect_format(cand)
                fmt = _format_of_name(cand, lambda cand=cand: _sniff_libsvm(cand))
                if fmt:
                    return fmt
    else:
        if spark is not None and _path_exists(spark, path.rstrip("/") + "/_delta_log"):
            return "delta"
        fmt = _format_of_name(path.rstrip("/"))
        if fmt:
            return fmt
        if spark is not None:
            for rel, _, _ in (_list_hadoop_files(spark, path) or [])[:1000]:
                fmt = _format_of_name(rel)
                if fmt:
                    return fmt
    raise DataError(
        f"cannot infer the format of {path!r} (data.format is 'auto'): no _delta_log/ directory and no "
        f"recognised file extension. Set data.format to one of: {valid}"
    )


# --------------------------------------------------------------------------------------- helpers
def _string_options(options: dict[str, Any]) -> dict[str, str]:
    return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (options or {}).items()}


def _parse_schema(spark: SparkSession, ddl: str) -> StructType:
    """A DDL string such as ``"age INT, plan STRING"`` -> StructType (error names ``data.schema``)."""
    try:
        parsed = spark.createDataFrame([], ddl).schema
    except Exception as exc:
        raise DataError(
            f"data.schema {ddl!r} is not a valid Spark DDL schema: {_first_line(exc)}. "
            "Use e.g. 'age INT, plan STRING, signup_ts TIMESTAMP'"
        ) from exc
    return parsed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


@contextlib.contextmanager
def _spark_errors(path: str, fmt: str) -> Iterator[None]:
    """Turn Spark / library failures while reading into a :class:`DataError` naming the path and format."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:
        text = str(exc)
        if "PATH_NOT_FOUND" in text or "Path does not exist" in text:
            raise _missing_path_error(path) from exc
        raise DataError(
            f"cannot read {path!r} as {fmt} (data.format={fmt!r}): {_first_line(exc)}. Check that "
            "data.format matches the files, or set data.format: auto"
        ) from exc


def _quarantine_dir(data_cfg: DataConfig) -> str:
    """``<output_path>/quarantine/<UTC timestamp>-<input name>-<short id>`` (unique per read)."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data_cfg.input_path.rstrip("/")).name).strip("_") or "input"
    return f"{data_cfg.output_path.rstrip('/')}/quarantine/{stamp}-{stem}-{uuid.uuid4().hex[:8]}"


def _simple_type(dtype: DataType) -> bool:
    return not isinstance(dtype, (StringType, BinaryType, StructType, ArrayType, MapType))


def _converted(value: Column, dtype: DataType, options: dict[str, str]) -> Column:
    """``value`` (a string) converted to ``dtype`` or NULL when it does not convert."""
    if isinstance(dtype, (TimestampType, TimestampNTZType)) and options.get("timestampFormat"):
        return F.try_to_timestamp(value, F.lit(options["timestampFormat"]))
    if isinstance(dtype, DateType) and options.get("dateFormat"):
        return F.try_to_timestamp(value, F.lit(options["dateFormat"]))
    return value.try_cast(dtype)


def _reason(checks: Sequence[tuple[str, Column]]) -> Column:
    joined = F.concat_ws("; ", *[c for _, c in checks]) if checks else F.lit("")
    return F.coalesce(F.nullif(joined, F.lit("")), F.lit("record does not match the schema"))


def _type_checks(
    values: Sequence[tuple[StructField, Column]], null_value: str, options: dict[str, str]
) -> list[tuple[str, Column]]:
    """``(column name, message-or-NULL)`` for each simple-typed field whose text does not convert."""
    checks: list[tuple[str, Column]] = []
    for fld, value in values:
        if not _simple_type(fld.dataType):
            continue
        bad = value.isNotNull() & (F.trim(value) != F.lit("")) & (value != F.lit(null_value))
        bad = bad & _converted(F.trim(value), fld.dataType, options).isNull()
        msg = F.concat(
            F.lit(f"column '{fld.name}' ({fld.dataType.simpleString()}): cannot convert '"), value, F.lit("'")
        )
        checks.append((fld.name, F.when(bad, msg)))
    return checks


_CSV_PARSE_OPTIONS = (
    "sep",
    "delimiter",
    "quote",
    "escape",
    "encoding",
    "charToEscapeQuoteEscaping",
    "ignoreLeadingWhiteSpace",
    "ignoreTrailingWhiteSpace",
    "locale",
)


def _csv_checks(raw: Column, schema: StructType, options: dict[str, str]) -> list[tuple[str, Column]]:
    """Why a CSV record is malformed, per check: field count, then each column that fails to convert."""
    sep = options.get("sep", options.get("delimiter", ","))
    quote = options.get("quote", '"')
    n = len(schema.fields)
    text = raw
    if len(quote) == 1:  # drop quoted sections so separators inside quotes are not counted
        q = re.escape(quote)
        text = F.regexp_replace(raw, f"{q}([^{q}]|{q}{q})*{q}", "")
    fields = F.lit(1)
    if len(sep) >= 1:
        fields = (F.length(text) - F.length(F.replace(text, F.lit(sep), F.lit("")))) / F.lit(
            len(sep)
        ) + F.lit(1)
        fields = fields.cast("int")
    count_msg = F.concat(
        F.lit("wrong number of fields: got "), fields.cast("string"), F.lit(f", expected {n}")
    )
    checks = [(WRONG_FIELD_COUNT, F.when(fields != F.lit(n), count_msg))]
    parse_opts = {k: v for k, v in options.items() if k in _CSV_PARSE_OPTIONS}
    token_schema = ", ".join(f"c{i} STRING" for i in range(n))
    parsed = F.from_csv(raw, token_schema, parse_opts)
    values = [(fld, parsed.getField(f"c{i}")) for i, fld in enumerate(schema.fields)]
    checks += _type_checks(values, options.get("nullValue", ""), options)
    return checks


def _json_path(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"$.{name}"
    return "$['" + name.replace("'", "\\'") + "']"


def _json_checks(raw: Column, schema: StructType, options: dict[str, str]) -> list[tuple[str, Column]]:
    """Why a JSON record is malformed, per check: not JSON at all, or each field that does not convert."""
    checks = [(NOT_JSON, F.when(F.get_json_object(raw, "$").isNull(), F.lit("not valid JSON")))]
    values = [(fld, F.get_json_object(raw, _json_path(fld.name))) for fld in schema.fields]
    checks += _type_checks(values, "null", options)
    return checks


def _split_malformed(
    raw: DataFrame,
    corrupt: str,
    checks: Sequence[tuple[str, Column]],
    path: str,
    data_cfg: DataConfig,
) -> _ReadOutput:
    """Persist a permissive parse, quarantine the rows with a corrupt record, return the good ones.

    The parse is persisted (memory and disk) because Spark (a) refuses queries that reference only the
    corrupt-record column of a raw file and (b) with CSV column pruning would re-parse only the columns
    a later query needs, flagging different rows; the persisted parse fixes the good/bad split once.
    Rows, malformed rows and malformed rows per check (``checks``: column name or whole-record check
    -> message or NULL) are counted in that same single aggregation.
    """
    parsed = raw.select("*", F.col("_metadata.file_path").alias(_SOURCE_COLUMN)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    is_bad = F.col(corrupt).isNotNull()
    per_check = [F.count(F.when(is_bad, c)) for _, c in checks]
    counts = parsed.agg(F.count(F.lit(1)), F.count(F.col(corrupt)), *per_check).first()
    total, bad = int(counts[0]), int(counts[1])  # type: ignore[index]
    by_reason = {name: int(n) for (name, _), n in zip(checks, counts[2:], strict=True) if n}  # type: ignore[index]
    good = parsed.where(F.col(corrupt).isNull()).drop(corrupt, _SOURCE_COLUMN)
    qpath: str | None = None
    if bad:
        bad_rows = parsed.where(F.col(corrupt).isNotNull())
        if not data_cfg.quarantine:
            examples = [r[0] for r in bad_rows.select(corrupt).limit(3).collect()]
            parsed.unpersist()
            raise DataError(
                f"{bad} of {total} rows of {path!r} are malformed ({_describe_reasons(by_reason)}; e.g. "
                f"{examples!r}) and data.quarantine is false. Fix the input, or set data.quarantine: true "
                f"to set malformed rows aside in {data_cfg.output_path}/quarantine/ and continue with the "
                "good rows"
            )
        qpath = _quarantine_dir(data_cfg)
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        out = bad_rows.select(
            F.col(corrupt).alias("raw"),
            _reason(checks).alias("reason"),
            F.col(_SOURCE_COLUMN).alias("source_file"),
            F.lit(now).alias("quarantined_at"),
        )
        write_dataset(out, qpath, "json", mode="error")
        log.warning(
            "%d of %d rows of %s are malformed (%s); quarantined to %s (raw text and reason, JSON lines)",
            bad,
            total,
            path,
            _describe_reasons(by_reason),
            qpath,
        )
    return _ReadOutput(
        good,
        row_count=total - bad,
        quarantined=bad,
        quarantine_path=qpath,
        lineage={"rows_read": total, "quarantined_by_reason": by_reason},
    )


def _describe_reasons(by_reason: dict[str, int]) -> str:
    """``"monthly_charges: 10, age: 10"`` (or a generic phrase when no check named the cause)."""
    return ", ".join(f"{k}: {v}" for k, v in by_reason.items()) or "records that do not match the schema"


def _permissive_options(options: dict[str, str], fmt: str) -> tuple[dict[str, str], str]:
    opts = dict(options)
    corrupt = opts.pop("columnNameOfCorruptRecord", CORRUPT_COLUMN)
    mode = opts.pop("mode", "PERMISSIVE").upper()
    if mode == "FAILFAST":
        opts["mode"] = "FAILFAST"
    elif mode != "PERMISSIVE":
        log.warning(
            "data.options.mode=%s for %s is replaced by PERMISSIVE: malformed rows are quarantined, "
            "never dropped",
            mode,
            fmt,
        )
    opts.setdefault("mode", "PERMISSIVE")
    opts["columnNameOfCorruptRecord"] = corrupt
    return opts, corrupt


# ----------------------------------------------------------------------------------------- readers
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


# ---------------------------------------------------------------------------------- type inference
_INT_RE = r"^[+-]?[0-9]+$"
_DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# without a timestampFormat, a timestamp must look like one (a cast alone reads "01234" as year 1234)
_TS_RE = r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
_INFER_CHUNK = 200  # columns per aggregation (keeps generated code small on very wide inputs)


def _quoted(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def _parse_counts(value: Column, null_value: str, options: dict[str, str]) -> list[Column]:
    """Sampled values that are present, and those that parse as int, bigint, double, boolean, date
    and timestamp (what Spark's own reader would accept for that type)."""
    v = F.trim(value)
    present = v.isNotNull() & (v != F.lit("")) & (value != F.lit(null_value))
    integral = v.rlike(_INT_RE)
    date_ok = _converted(v, DateType(), options).isNotNull()
    if not options.get("dateFormat"):
        date_ok = date_ok & v.rlike(_DATE_RE)
    ts_ok = _converted(v, TimestampType(), options).isNotNull()
    if not options.get("timestampFormat"):
        ts_ok = ts_ok & v.rlike(_TS_RE)
    conds = [
        F.lit(True),
        integral & v.try_cast("int").isNotNull(),
        integral & v.try_cast("bigint").isNotNull(),
        v.try_cast("double").isNotNull(),
        F.lower(v).isin("true", "false"),
        date_ok,
        ts_ok,
    ]
    return [F.count(F.when(present & c, 1)) for c in conds]


def _decide_type(counts: Sequence[int], timestamp: DataType) -> tuple[DataType, str, float]:
    """(type, best non-text type name, share of present values it covers) from :func:`_parse_counts`."""
    n, c_int, c_long, c_dbl, c_bool, c_date, c_ts = counts
    if n == 0:
        return StringType(), "string", 0.0
    number: DataType = IntegerType() if c_int == c_dbl else LongType() if c_long == c_dbl else DoubleType()
    when: DataType = DateType() if c_date == c_ts else timestamp
    best, count = max(((number, c_dbl), (BooleanType(), c_bool), (when, c_ts)), key=lambda t: t[1])
    share = count / n
    return (best if share >= TYPED_MAJORITY else StringType()), best.simpleString(), share


def _sample_counts(
    text: DataFrame, schema: StructType, rows: int, options: dict[str, str], null_value: str
) -> dict[str, list[int]]:
    """:func:`_parse_counts` of every column on the first ``rows`` rows of ``text`` (columns as strings).

    The sample is persisted (it is bounded) and aggregated in chunks of columns; one row of counts per
    chunk reaches the driver.
    """
    sample = text.limit(rows).persist(StorageLevel.MEMORY_AND_DISK)
    counts: dict[str, list[int]] = {}
    try:
        for start in range(0, len(schema.fields), _INFER_CHUNK):
            chunk = schema.fields[start : start + _INFER_CHUNK]
            exprs = [e for f in chunk for e in _parse_counts(_quoted(f.name), null_value, options)]
            row = sample.agg(*exprs).first()
            for i, f in enumerate(chunk):
                counts[f.name] = [int(x) for x in row[i * 7 : i * 7 + 7]]  # type: ignore[index]
    finally:
        sample.unpersist()
    return counts


def _json_native_counts(
    spark: SparkSession, path: str, names: list[str], rows: int, options: dict[str, str]
) -> dict[str, list[int]]:
    """Sampled values of each field that Spark's JSON parser reads as int, bigint, double and boolean.

    JSON numbers and booleans only: Spark's parser refuses a quoted ``"12"`` for a numeric field, so the
    text of the value (which cannot tell ``12`` from ``"12"``) is not enough. One bounded read per type.
    """
    out: dict[str, list[int]] = {n: [] for n in names}
    for dtype in (IntegerType(), LongType(), DoubleType(), BooleanType()):
        for start in range(0, len(names), _INFER_CHUNK):
            chunk = names[start : start + _INFER_CHUNK]
            typed = StructType([StructField(n, dtype, True) for n in chunk])
            sample = spark.read.options(**options).schema(typed).json(path).limit(rows)
            row = sample.agg(*[F.count(_quoted(n)) for n in chunk]).first()
            for n, c in zip(chunk, row, strict=True):  # type: ignore[arg-type]
                out[n].append(int(c))
    return out


def _decide_types(
    spark: SparkSession, schema: StructType, counts: dict[str, list[int]], rows: int
) -> tuple[StructType, dict[str, Any]]:
    """Column types from the sampled counts (see :func:`_decide_type`); a text column that a sizeable
    share (:data:`TEXT_WARN_SHARE`) of values would have typed is logged loudly, naming it."""
    tz = spark.conf.get("spark.sql.timestampType", "TIMESTAMP_LTZ") or ""
    timestamp: DataType = TimestampNTZType() if tz.upper() == "TIMESTAMP_NTZ" else TimestampType()
    fields: list[StructField] = []
    loud: dict[str, str] = {}
    for f in schema.fields:
        dtype, best, share = _decide_type(counts[f.name], timestamp)
        fields.append(StructField(f.name, dtype, True))
        if isinstance(dtype, StringType) and share >= TEXT_WARN_SHARE:
            loud[f.name] = f"{share:.0%} of sampled values parse as {best}"
    for name, what in loud.items():
        log.warning(
            "COLUMN %r IS READ AS TEXT: only %s (a column is typed when at least %.0f%% do), so its "
            "numbers become categories. Fix the values, or set data.schema to type it (values that do "
            "not convert are then quarantined)",
            name,
            what,
            100 * TYPED_MAJORITY,
        )
    return StructType(fields), {"type_inference": {"sample_rows": rows, "text_despite_typed_values": loud}}


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


def has_delta_spark(spark: SparkSession) -> bool:
    """Whether the ``delta-spark`` JVM classes are on this session's classpath."""
    try:
        jvm = spark._jvm  # type: ignore[attr-defined]
        jvm.java.lang.Class.forName("org.apache.spark.sql.delta.DeltaLog")
        return True
    except Exception:
        return False


def _delta_uri(path: str) -> str:
    return _local_path(path) if _is_local(path) else path


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


# ------------------------------------------------------------------------------------------ public
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


# ------------------------------------------------------------------------------------------ writing
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
    fmt = format.lower()
    if fmt not in READERS:
        raise UnknownNameError("data format", format, list(READERS))
    try:
        spark_mode = _WRITE_MODES[mode.lower()]
    except KeyError:
        raise UnknownNameError("write mode", mode, list(_WRITE_MODES)) from None
    opts = _string_options(options or {})
    missing = [c for c in (partition_by or []) if c not in df.columns]
    if missing:
        raise DataError(
            f"partition_by columns {missing} not in the data; available columns: {', '.join(df.columns)}"
        )
    try:
        if fmt == "delta":
            _write_delta(df, path, spark_mode, partition_by, opts)
            return path
        if not _is_local(path):
            _spark_write(df, path, fmt, partition_by, opts, spark_mode)
            return path
        target = os.path.abspath(_local_path(path))
        exists = os.path.exists(target)
        if exists and spark_mode == "error":
            raise DataError(f"output {path!r} already exists; remove it or write with mode='overwrite'")
        if exists and spark_mode == "ignore":
            log.info("output %s exists; not written (mode=ignore)", path)
            return path
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            _spark_write(df, tmp, fmt, partition_by, opts, "overwrite")
            if exists and spark_mode == "append":
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
        return path
    except (DataError, UnknownNameError):
        raise
    except Exception as exc:
        raise DataError(f"could not write {fmt} to {path!r}: {_first_line(exc)}") from exc


def read_quarantine(spark: SparkSession, quarantine_path: str) -> DataFrame:
    """Read back quarantined rows (columns ``raw``, ``reason``, ``source_file``, ``quarantined_at``)."""
    return spark.read.schema("raw STRING, reason STRING, source_file STRING, quarantined_at STRING").json(
        quarantine_path
    )


__all__ = [
    "BUILTIN_PREFIX",
    "CORRUPT_COLUMN",
    "READERS",
    "LoadResult",
    "detect_format",
    "get_reader",
    "has_delta_spark",
    "input_fingerprint",
    "read_dataset",
    "read_quarantine",
    "require_columns",
    "write_dataset",
]
