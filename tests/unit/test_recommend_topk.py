"""``top_k`` (the recommender's vectorised top-k) against a plain sort, on random scores with ties at the
boundary, excluded (``-inf``) items, NaN and ``+inf``; ``check_k`` bounds."""

from __future__ import annotations

import numpy as np
import pytest

from sparkpipe.errors import InputError
from sparkpipe.scoring.models import top_k
from sparkpipe.scoring.recommend import MAX_K, check_k


def _reference(scores: np.ndarray, ids: np.ndarray, k: int) -> list[int]:
    """Spark's order (score descending, ties: the larger id first) over the finite scores."""
    finite = [i for i in range(scores.size) if np.isfinite(scores[i])]
    return sorted(finite, key=lambda i: (-float(scores[i]), -int(ids[i])))[: max(k, 0)]


def test_top_k_matches_a_full_sort() -> None:
    rng = np.random.default_rng(3)
    for trial in range(3000):
        n = int(rng.integers(1, 60))
        scores = rng.integers(-3, 4, n).astype(np.float32)  # few distinct values: many ties
        scores[rng.random(n) < 0.2] = -np.inf  # items a user has seen
        if trial % 3 == 0:
            scores[rng.random(n) < 0.1] = np.nan
        if trial % 5 == 0:
            scores[rng.random(n) < 0.1] = np.inf
        ids = rng.permutation(1000)[:n]
        k = int(rng.integers(0, n + 3))
        assert top_k(scores, ids, k).tolist() == _reference(scores, ids, k), (scores, ids, k)


def test_top_k_on_a_large_catalogue() -> None:
    rng = np.random.default_rng(4)
    scores = rng.standard_normal(10_000).astype(np.float32)
    scores[rng.choice(10_000, 50, replace=False)] = -np.inf
    ids = np.arange(10_000) * 7
    assert top_k(scores, ids, 25).tolist() == _reference(scores, ids, 25)


@pytest.mark.parametrize("bad", [0, -1, MAX_K + 1, 2.0, "10", True, None])
def test_check_k_names_the_field(bad) -> None:
    with pytest.raises(InputError) as exc:
        check_k(bad)
    assert exc.value.field == "k"


def test_check_k_accepts_the_bounds() -> None:
    assert check_k(1) == 1 and check_k(MAX_K) == MAX_K and check_k(np.int64(5)) == 5


def test_raw_ids_are_looked_up_as_the_string_indexer_saw_them():
    """A number sent for an indexed id column is keyed by Spark's cast of the column's type to string
    (the StringIndexer twin's rule), so ``5`` finds the label ``"5.0"`` of a ``double`` column."""
    from sparkpipe.scoring.recommend import _indexer_key, typed_id

    assert _indexer_key(5, "double", "user") == "5.0" and _indexer_key(2.5, "float", "user") == "2.5"
    assert _indexer_key(5, "bigint", "user") == "5" and _indexer_key(2**60 + 1, "long", "user") == str(
        2**60 + 1
    )
    assert _indexer_key(5, "string", "user") == "5" and _indexer_key("u7", "string", "user") == "u7"
    with pytest.raises(InputError, match="user"):
        _indexer_key(True, "string", "user")
    assert typed_id("12", "bigint", "user") == 12 and typed_id("12", "string", "user") == "12"
    with pytest.raises(InputError, match="must be an integer id"):
        typed_id("1.5", "int", "item")
