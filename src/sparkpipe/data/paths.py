"""Where data lives: local and Hadoop paths, input fingerprints, object-store connectors, format detection."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pyspark.sql import SparkSession

from sparkpipe.errors import DataError

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"


#: Reader option (popped before Spark sees it) choosing the Delta read path without delta-spark:
#: ``auto`` (default), ``files`` (Spark reads the table's parquet files) or ``arrow`` (via the driver).
DELTA_READER_OPTION = "deltaReader"


_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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
    from sparkpipe.data.readers import READERS  # the registry sits above the paths

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


def _string_options(options: dict[str, Any]) -> dict[str, str]:
    return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (options or {}).items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


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
