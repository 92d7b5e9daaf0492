"""Spark ML ``metadata`` files written and read without a Spark job when the driver's disk is the
file system.

Every save of a Spark ML stage or pipeline from Python writes one JSON line to
``<path>/metadata/part-*``, and every load from Python reads it back. PySpark does both with Spark jobs:
a write of a frame made from Python rows (which also starts a Python worker) and a ``spark.read.text``.
Loading a pipeline reads the metadata of the pipeline and of every stage (the stage's class is read
from it first), so a 9-stage pipeline with Python stages costs about 13 such jobs to load and 4 to save,
some 60-150 ms each on a small machine: more than a second per load.

In local mode (a ``local[...]`` master and the ``file:`` default file system) the driver's disk is the
one Spark would write to, so :func:`install` makes PySpark's ``DefaultParamsWriter.saveMetadata`` and
``DefaultParamsReader.loadMetadata`` write and read that line directly: the same JSON (PySpark's own
``_get_metadata_to_save``) in the same place (``metadata/part-00000`` and ``_SUCCESS``), which Spark
reads back as it reads its own. Anything else -- a cluster master, HDFS or object storage, a Spark
Connect session, a directory that is already there, several or compressed part files -- takes
PySpark's own path unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter

_CODECS = (".gz", ".bz2", ".deflate", ".snappy", ".lz4", ".zst", ".zstd", ".br")
_ORIGINAL: dict[str, Any] = {}


def local_dir(session: Any, path: str) -> Path | None:
    """``path`` as a directory of this machine when ``session`` (a SparkSession or SparkContext) writes
    to the driver's own disk (local master, ``file:`` paths); else ``None``."""
    try:
        sc = session.sparkContext if hasattr(session, "sparkContext") else session
        if not str(sc.master).startswith("local"):
            return None
        parsed = urlparse(path)
        if parsed.scheme == "file":
            return Path(parsed.path)
        if parsed.scheme:
            return None
        default_fs = sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
    except Exception:  # a Spark Connect session has no SparkContext: PySpark's own path
        return None
    return Path(path) if default_fs.startswith("file:") else None


def write_text_line(session: Any, path: str, line: str) -> bool:
    """Write ``line`` as the text dataset ``path`` (Spark's layout: one part file and ``_SUCCESS``)
    when ``path`` is local and new; return whether it was written (``False``: use Spark)."""
    target = local_dir(session, path)
    if target is None:
        return False
    try:
        target.mkdir(parents=True)
    except FileExistsError:  # Spark's own write gives its own error (or overwrite semantics)
        return False
    (target / "part-00000").write_text(line + "\n", encoding="utf-8")
    (target / "_SUCCESS").touch()
    return True


def read_text_line(session: Any, path: str) -> str | None:
    """The first line of the one data file of the local text dataset ``path``, or ``None`` (not local,
    not there, several or compressed files: use Spark)."""
    target = local_dir(session, path)
    if target is None or not target.is_dir():
        return None
    files = [f for f in target.iterdir() if not f.name.startswith(("_", ".")) and f.is_file()]
    if len(files) != 1 or files[0].name.endswith(_CODECS):
        return None
    with files[0].open(encoding="utf-8") as fh:
        line = fh.readline()
    return line.rstrip("\r\n") if line else None


def _save_metadata(
    instance: Any,
    path: str,
    sc: Any,
    extraMetadata: dict[str, Any] | None = None,
    paramMap: dict[str, Any] | None = None,
) -> None:
    metadata = DefaultParamsWriter._get_metadata_to_save(instance, sc, extraMetadata, paramMap)
    if not write_text_line(sc, os.path.join(path, "metadata"), metadata):
        _ORIGINAL["save"](instance, path, sc, extraMetadata, paramMap)


def _load_metadata(path: str, sc: Any, expectedClassName: str = "") -> dict[str, Any]:
    line = read_text_line(sc, os.path.join(path, "metadata"))
    if line is None:
        return _ORIGINAL["load"](path, sc, expectedClassName)
    return DefaultParamsReader._parseMetaData(line, expectedClassName)


def install() -> None:
    """Route PySpark's metadata save and load through the local fast path (idempotent)."""
    if _ORIGINAL:
        return
    _ORIGINAL["save"] = DefaultParamsWriter.saveMetadata
    _ORIGINAL["load"] = DefaultParamsReader.loadMetadata
    DefaultParamsWriter.saveMetadata = staticmethod(_save_metadata)  # type: ignore[method-assign]
    DefaultParamsReader.loadMetadata = staticmethod(_load_metadata)  # type: ignore[method-assign]


__all__ = ["install", "local_dir", "read_text_line", "write_text_line"]
