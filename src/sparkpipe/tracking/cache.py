"""The local cache of downloaded model versions: one folder per store, entries published atomically
and checked against a size + SHA-256 marker. Needs no MLflow import."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparkpipe.core import ModelRef
from sparkpipe.errors import ModelError

log = logging.getLogger(__name__)


def model_cache_dir(tracking_uri: str, base: str | Path | None = None) -> Path:
    """Absolute local cache of downloaded model versions for one tracking store.

    ``base`` (default ``$SPARKPIPE_MODEL_CACHE`` or ``.sparkpipe/models``) gets one folder per store, so
    ``name/version`` from two stores never share an entry. Needs no MLflow import.
    """
    import hashlib

    root = Path(base or os.environ.get("SPARKPIPE_MODEL_CACHE", ".sparkpipe/models"))
    return (root / hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]).resolve()


CACHE_MARKER = ".sparkpipe-complete.json"
"""Written last into a cached model version: the size and SHA-256 of every file in it."""


def _tree_digest(path: Path) -> dict[str, list[Any]]:
    import hashlib

    out: dict[str, list[Any]] = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = f.relative_to(path).as_posix()
        if rel == CACHE_MARKER:
            continue
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[rel] = [f.stat().st_size, h.hexdigest()]
    return out


def cache_entry_ok(path: Path) -> bool:
    """True when a cached model directory is complete and unchanged since it was published (its
    :data:`CACHE_MARKER` lists exactly the files present, with their sizes and checksums)."""
    import json

    try:
        recorded = json.loads((path / CACHE_MARKER).read_text())
        return (path / "MLmodel").is_file() and recorded.get("files") == _tree_digest(path)
    except (OSError, ValueError, AttributeError):
        return False


def publish_model_dir(root: Path, ref: ModelRef, fetch: Callable[[Path], Path]) -> Path:
    """``<root>/<name>/<version>`` (absolute), filled by ``fetch`` and published atomically.

    An entry that passes :func:`cache_entry_ok` is returned as is (versions are immutable). Anything
    else -- missing, half-copied, truncated or edited since -- is fetched again: ``fetch(tmp)`` writes
    the model somewhere under a fresh temporary directory next to the entry and returns that directory
    (or one above the ``MLmodel`` file); the checksum marker is written into it last and it is moved
    into place with one ``os.replace``, so readers never see a partial copy. The temporary directory is
    always removed.
    """
    dst = (root / ref.name / ref.version).resolve()  # absolute: the JVM resolves paths from its own cwd
    if cache_entry_ok(dst):
        return dst
    if dst.exists():
        log.warning("cached %s is incomplete or damaged; fetching it again", ref.uri)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ref.version}-", dir=dst.parent))
    try:
        src = fetch(tmp)
        if not (src / "MLmodel").is_file():
            found = next(src.rglob("MLmodel"), None)
            if found is None:
                raise ModelError(f"{ref.uri} has no MLmodel file; is it a model logged by sparkpipe?")
            src = found.parent
        (src / CACHE_MARKER).write_text(json.dumps({"uri": ref.uri, "files": _tree_digest(src)}))
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(src, dst)  # atomic publish of a complete copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def discard_cache_entry(path: Path) -> None:
    """Remove a cached model version so the next fetch copies it again."""
    shutil.rmtree(path, ignore_errors=True)
