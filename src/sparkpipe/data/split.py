"""Deterministic train / validation / test splits that need no sort and no cache.

``DataFrame.randomSplit`` draws a random number per row in partition order, so to be repeatable it
sorts every partition by every column each time a split is read (and caches when it cannot sort). At
tens of millions of rows that sort is the most expensive part of every pass over the data.

Here each row's place is a pure function of its values: a 64-bit hash of the row (``xxhash64`` of
every hashable column and the seed) mapped to ``[0, 1)``. A split is a filter on that number, so

- the same row lands in the same split whatever the partitioning, the row order or the cluster;
- reading a split costs one hash per row and nothing else (no shuffle, sort or cache);
- exact duplicate rows always share a split (no leakage of duplicates from train into test).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_TWO_53 = float(1 << 53)


def split_value(df: DataFrame, seed: int) -> Column:
    """A number in ``[0, 1)`` per row, uniform over rows and determined by the row's values and ``seed``.

    Map columns are left out of the hash (Spark cannot hash maps); every other type, vectors
    included, takes part.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import MapType

    cols = [F.col(f"`{f.name}`") for f in df.schema.fields if not isinstance(f.dataType, MapType)]
    h = F.xxhash64(*cols, F.lit(int(seed)).cast("long"))
    return F.shiftrightunsigned(h, 11).cast("double") / F.lit(_TWO_53)


def split_bounds(weights: Sequence[float]) -> list[tuple[float, float]]:
    """Cumulative ``[lo, hi)`` intervals of ``weights`` (normalised to sum to one)."""
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"split weights must be non-negative with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    bounds, lo = [], 0.0
    for i, w in enumerate(weights):
        hi = 1.0 if i == len(weights) - 1 else lo + w / total
        bounds.append((lo, hi))
        lo = hi
    return bounds


def split_conditions(u: Column, weights: Sequence[float]) -> list[Column]:
    """One boolean column per weight: whether a row whose :func:`split_value` is ``u`` belongs to that
    part (parts are disjoint and cover every row)."""
    return [(u >= lo) & (u < hi) if lo > 0.0 else u < hi for lo, hi in split_bounds(weights)]


def hash_split(df: DataFrame, weights: Sequence[float], seed: int) -> list[DataFrame]:
    """Split ``df`` into ``len(weights)`` disjoint parts of about the given proportions.

    A drop-in for ``df.randomSplit(weights, seed)`` that is repeatable without sorting or caching
    (see the module docstring).
    """
    return [df.where(cond) for cond in split_conditions(split_value(df, seed), weights)]
