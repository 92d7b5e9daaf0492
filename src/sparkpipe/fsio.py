"""Directory outputs made visible all at once: written into a hidden temp sibling, then swapped into place.

Readers of ``target`` see the old directory or the new one, never a half-written one. Used by every
writer of local directories (Spark's atomic dataset writes, the recommendation table).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def temp_sibling(target: str | Path, tag: str = "tmp") -> Path:
    """A new hidden path beside ``target``: ``.<name>.<tag>-<12 hex>`` (not created)."""
    t = Path(target)
    return t.parent / f".{t.name}.{tag}-{uuid.uuid4().hex[:12]}"


def swap_into_place(tmp: str | Path, target: str | Path) -> None:
    """Rename the finished directory ``tmp`` to ``target``; an existing ``target`` is renamed aside
    first (one ``os.replace`` each) and removed afterwards."""
    if os.path.exists(target):
        old = temp_sibling(target, "old")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


__all__ = ["swap_into_place", "temp_sibling"]
