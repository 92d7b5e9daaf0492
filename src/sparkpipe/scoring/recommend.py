"""Top-k recommendations and similar items from a compiled ALS pipeline, without a JVM.

A recommender model directory holds, beside the saved pipeline (``sparkml/`` in an MLflow model
directory), the index :mod:`sparkpipe.flow.recommend_index` writes when the fitted model is published::

    recommend/
      recommend.json     {"format": 1, "cold_start": "popular", "popular": [item ids], "popular_counts": [...]}
      seen/part-*.parquet (user int, item int): every (user, item) pair of the training split

Ids in the index are the ALS model's ids (after a ``StringIndexer`` of string ids); :class:`Recommender`
maps the ids a client sends (the raw ``user_col``/``item_col`` values) through the pipeline's own
indexer twin and back.

Scores are Spark's: ``dot(userFactor, itemFactor)`` accumulated in float32 over the rank, one rank
column at a time for all items (vectorised over the catalogue); the top ``k`` is chosen with
``np.argpartition`` and ordered like Spark's ``recommendForUserSubset`` (score descending, ties: the
larger item id first). Items the user rated in training are excluded unless ``exclude_seen=False``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparkpipe.core import FRACTIONAL_TYPES, NUMERIC_TYPES, base_type
from sparkpipe.errors import InputError, ScoringError
from sparkpipe.scoring.features import _spark_string_one
from sparkpipe.scoring.models import ALSTwin, top_k

log = logging.getLogger(__name__)

INDEX_DIR = "recommend"
"""The index's directory inside a model directory (beside ``sparkml/``)."""
META_FILE = "recommend.json"
SEEN_DIR = "seen"
INDEX_FORMAT = 1
COLD_START_POLICIES = ("popular", "none", "error")
"""What an unknown user gets: the most popular training items, an empty list, or an error."""
MAX_K = 1000
"""Largest ``k`` a request may ask for (also the number of popular items kept at fit time)."""
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


class UnknownIdError(InputError):
    """A user or item id the model has no factors for (the serving layer answers 404)."""


@dataclass
class Recommendations:
    """One answer: raw item ids, their scores (``None`` for a cold-start popularity answer), and flags."""

    user: Any
    items: list[Any]
    scores: list[float] | None
    cold_start: bool = False
    seen_excluded: bool = True
    popularity: list[int] | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.scores is not None:
            items = [{"item": i, "score": s} for i, s in zip(self.items, self.scores, strict=True)]
        else:
            pops = self.popularity or [None] * len(self.items)
            items = [{"item": i, "popularity": p} for i, p in zip(self.items, pops, strict=True)]
        out: dict[str, Any] = {"user": self.user, "items": items, "cold_start": self.cold_start}
        if not self.cold_start:
            out["seen_excluded"] = self.seen_excluded
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class RecommendIndex:
    """Items each user rated in training (ALS ids) and the most popular items, with the cold-start policy."""

    seen_users: np.ndarray  # int32, sorted
    seen_items: np.ndarray  # int32, in the order of seen_users
    popular: np.ndarray  # int64 ALS item ids, most rated first
    popular_counts: np.ndarray
    cold_start: str = "popular"
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, model_dir: str | Path) -> RecommendIndex | None:
        """The index of a model directory (``<dir>/recommend``); ``None`` when the model has none."""
        root = Path(model_dir) / INDEX_DIR
        meta_path = root / META_FILE
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ScoringError(f"{meta_path}: unreadable recommendation index ({exc})") from exc
        if meta.get("format") != INDEX_FORMAT:
            raise ScoringError(f"{meta_path}: index format {meta.get('format')!r}, expected {INDEX_FORMAT}")
        users, items = _read_seen(root / SEEN_DIR)
        order = np.lexsort((items, users))
        policy = meta.get("cold_start", "popular")
        if policy not in COLD_START_POLICIES:
            raise ScoringError(
                f"{meta_path}: cold_start {policy!r} is not one of {list(COLD_START_POLICIES)}"
            )
        return cls(
            seen_users=users[order],
            seen_items=items[order],
            popular=np.asarray(meta.get("popular") or [], dtype=np.int64),
            popular_counts=np.asarray(meta.get("popular_counts") or [], dtype=np.int64),
            cold_start=policy,
            meta=meta,
        )

    def seen(self, user_id: int) -> np.ndarray:
        """ALS item ids ``user_id`` rated in training."""
        lo = np.searchsorted(self.seen_users, user_id, "left")
        hi = np.searchsorted(self.seen_users, user_id, "right")
        return self.seen_items[lo:hi]


def _read_seen(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) pairs as int32 arrays (ALS ids are 32-bit: 8 bytes a pair in memory)."""
    if not path.exists():
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    import pyarrow.parquet as pq

    table = pq.read_table(str(path), columns=["user", "item"])
    return (
        np.asarray(table.column("user").to_numpy(), dtype=np.int32),
        np.asarray(table.column("item").to_numpy(), dtype=np.int32),
    )


class Recommender:
    """Recommendations, similar items and cold-start flags from a compiled ALS pipeline.

    Parameters
    ----------
    plan
        A :class:`~sparkpipe.scoring.compile.CompiledPipeline` whose model stage is an ALS model.
    index
        The fit-time :class:`RecommendIndex` (``None``: nothing to exclude, no popularity; unknown
        users then get an empty list flagged ``cold_start``).
    """

    def __init__(self, plan: Any, index: RecommendIndex | None = None):
        twin = plan.model_stage
        if not isinstance(twin, ALSTwin):
            raise ScoringError(f"{plan.source}: not a recommender (its model stage is {type(twin).__name__})")
        self.twin = twin
        self.index = index
        self.cold_start = index.cold_start if index is not None else "none"
        self.user_col, self._user_map, self._user_types = self._raw_column(plan, twin.user_col)
        self.item_col, self._item_map, self._item_types = self._raw_column(plan, twin.item_col)
        self._user_labels = _labels(self._user_map)
        self._item_labels = _labels(self._item_map)
        self._unit_factors: np.ndarray | None = None  # for /similar, built on first use
        if twin.user_ids.size:  # the transposed item factors the scores read, built now (warm-up)
            twin.item_scores(0)
        self.user_type = dict(plan.input_schema).get(self.user_col, "integer")
        self.item_type = dict(plan.input_schema).get(self.item_col, "integer")

    @classmethod
    def from_model_dir(cls, plan: Any, model_dir: str | Path) -> Recommender:
        return cls(plan, RecommendIndex.load(model_dir))

    @staticmethod
    def _raw_column(plan: Any, model_col: str) -> tuple[str, dict[str, float] | None, Any]:
        """The raw input column behind an ALS id column, and the indexer's label map when indexed."""
        for t in plan.stages:
            if t.stage.class_name.endswith("StringIndexerModel"):
                for (c, o), m in zip(t.pairs, t.maps, strict=True):
                    if o == model_col:
                        return c, m, t.types.get(c)
        return model_col, None, None

    @property
    def n_items(self) -> int:
        return int(self.twin.item_ids.size)

    @property
    def n_users(self) -> int:
        return int(self.twin.user_ids.size)

    def describe(self) -> dict[str, Any]:
        return {
            "user_col": self.user_col,
            "item_col": self.item_col,
            "users": self.n_users,
            "items": self.n_items,
            "rank": int(self.twin.rank),
            "cold_start": self.cold_start,
            "seen_index": self.index is not None,
        }

    # ------------------------------------------------------------------------------------- ids
    def _model_id(
        self, raw: Any, mapping: dict[str, float] | None, spark_type: str | None, what: str
    ) -> int | None:
        """The ALS id of a raw id (``None`` when the indexer has not seen it); bad values raise."""
        if mapping is not None:
            if raw is None:
                return None
            idx = mapping.get(_indexer_key(raw, spark_type, what))
            return None if idx is None else int(idx)
        if isinstance(raw, bool) or raw is None:
            raise InputError(what, f"must be an integer id, got {raw!r}")
        try:
            v = float(raw)
        except (TypeError, ValueError):
            raise InputError(what, f"must be an integer id, got {raw!r}") from None
        if math.isnan(v) or v != math.trunc(v) or not _INT_MIN <= v <= _INT_MAX:
            raise InputError(what, f"must be an integer id in the 32-bit range, got {raw!r}")
        return int(v)

    def _raw_items(self, model_ids: np.ndarray) -> list[Any]:
        if self._item_labels is not None:
            labels = self._item_labels
            return [labels[i] if 0 <= i < len(labels) else None for i in model_ids.tolist()]
        return model_ids.tolist()

    def raw_users(self) -> list[Any]:
        """Every user the model has factors for, as the client knows them (raw ids)."""
        if self._user_labels is not None:
            labels = self._user_labels
            return [labels[i] for i in self.twin.user_ids.tolist() if 0 <= i < len(labels)]
        return self.twin.user_ids.tolist()

    def user_position(self, user: Any) -> int | None:
        """Row of ``user`` in the user factors (``None``: unknown user)."""
        uid = self._model_id(user, self._user_map, self._user_types, "user")
        return _position(self.twin.user_ids, uid)

    def item_position(self, item: Any) -> int | None:
        iid = self._model_id(item, self._item_map, self._item_types, "item")
        return _position(self.twin.item_ids, iid)

    # ---------------------------------------------------------------------------------- scoring
    def recommend(self, user: Any, k: int, exclude_seen: bool = True) -> Recommendations:
        """Top-``k`` items for ``user`` (a raw id), without the items it rated in training.

        Raises
        ------
        UnknownIdError
            ``user`` is unknown and the cold-start policy is ``error``.
        InputError
            ``user`` is not a valid id for this model.
        """
        k = check_k(k)
        upos = self.user_position(user)
        if upos is None:
            return self._cold(user, k)
        scores = self.twin.item_scores(upos)
        excluded = False
        if exclude_seen and self.index is not None:
            seen = self.index.seen(int(self.twin.user_ids[upos]))
            if seen.size:
                pos = np.searchsorted(self.twin.item_ids, seen)
                inside = pos < self.n_items
                pos, seen = pos[inside], seen[inside]
                scores[pos[self.twin.item_ids[pos] == seen]] = -np.inf
            excluded = True
        best = top_k(scores, self.twin.item_ids, k)
        return Recommendations(
            user=user,
            items=self._raw_items(self.twin.item_ids[best]),
            scores=scores[best].astype(np.float64).tolist(),
            seen_excluded=excluded,
        )

    def _cold(self, user: Any, k: int) -> Recommendations:
        reason = f"unknown user {user!r}: not in the training data"
        if self.cold_start == "error":
            raise UnknownIdError("user", f"{reason} (this model's cold_start policy is 'error')")
        if self.cold_start == "popular" and self.index is not None:
            ids = self.index.popular[:k]
            counts = self.index.popular_counts[:k]
            return Recommendations(
                user=user,
                items=self._raw_items(ids),
                scores=None,
                popularity=counts.tolist(),
                cold_start=True,
                reason=f"{reason}; the most popular items instead",
            )
        return Recommendations(user=user, items=[], scores=None, cold_start=True, reason=reason)

    def similar(self, item: Any, k: int) -> dict[str, Any]:
        """The ``k`` items closest to ``item`` by cosine similarity of the item factors (itself
        excluded), most similar first (ties: the larger item id first)."""
        k = check_k(k)
        ipos = self.item_position(item)
        if ipos is None:
            raise UnknownIdError("item", f"unknown item {item!r}: not in the training data")
        unit = self._unit
        sims = unit @ unit[ipos]
        sims[ipos] = -np.inf
        best = top_k(sims, self.twin.item_ids, k)
        items = self._raw_items(self.twin.item_ids[best])
        return {
            "item": item,
            "items": [{"item": i, "similarity": s} for i, s in zip(items, sims[best].tolist(), strict=True)],
        }

    @property
    def _unit(self) -> np.ndarray:
        """Item factors scaled to unit length (float64), computed once on the first ``similar``."""
        unit = self._unit_factors
        if unit is None:
            f = self.twin.item_factors.astype(np.float64)
            norms = np.linalg.norm(f, axis=1)
            unit = self._unit_factors = f / np.where(norms > 0, norms, 1.0)[:, None]
        return unit

    def pair_reasons(self, users: list[Any], items: list[Any]) -> list[str | None]:
        """Why each (user, item) pair cannot be scored (``None``: it can): an unknown user, item or both."""
        out: list[str | None] = []
        for u, i in zip(users, items, strict=True):
            try:
                ukn = self.user_position(u) is None
                ikn = self.item_position(i) is None
            except InputError:
                out.append(None)  # the scorer names bad values itself
                continue
            parts = ([f"unknown user {u!r}"] if ukn else []) + ([f"unknown item {i!r}"] if ikn else [])
            out.append(" and ".join(parts) + " (not in the training data)" if parts else None)
        return out


def _position(known: np.ndarray, model_id: int | None) -> int | None:
    if model_id is None or known.size == 0:
        return None
    pos = int(np.searchsorted(known, model_id))
    return pos if pos < known.size and int(known[pos]) == model_id else None


def _labels(mapping: dict[str, float] | None) -> list[str] | None:
    """An indexer's labels by index (``None`` for an id column that is not indexed)."""
    if mapping is None:
        return None
    labels = [""] * len(mapping)
    for label, i in mapping.items():
        labels[int(i)] = label
    return labels


def _indexer_key(raw: Any, spark_type: str | None, what: str) -> str | None:
    """A raw id as the pipeline's ``StringIndexer`` sees it: Spark's cast of the column's type to string
    (the StringIndexer twin's rule: ``5`` in a ``double`` column is ``"5.0"``)."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InputError(what, f"must be an id (a number or a string), got {raw!r}")
    if isinstance(raw, int) and base_type(spark_type or "") not in FRACTIONAL_TYPES:
        return str(raw)  # exact beyond 2**53
    return _spark_string_one(float(raw), spark_type)


_INT_ID = re.compile(r"^[+-]?\d{1,10}$")


def typed_id(value: Any, column_type: str, field: str) -> Any:
    """An id given as text (a query string, a CLI argument) typed for the model's id column: an int when
    the column is numeric (an :class:`InputError` naming ``field`` when it is not an integer), else as is."""
    if not isinstance(value, str) or base_type(column_type) not in NUMERIC_TYPES:
        return value
    if not _INT_ID.match(value.strip()):
        raise InputError(
            field, f"must be an integer id (this model's id column is {column_type}), got {value!r}"
        )
    return int(value)


def check_k(k: Any) -> int:
    """``k`` as an int in ``1..MAX_K``; an :class:`InputError` naming ``k`` otherwise."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputError("k", f"must be an integer from 1 to {MAX_K}, got {k!r}")
    if not 1 <= int(k) <= MAX_K:
        raise InputError("k", f"must be from 1 to {MAX_K}, got {k}")
    return int(k)


__all__ = [
    "COLD_START_POLICIES",
    "INDEX_DIR",
    "MAX_K",
    "RecommendIndex",
    "Recommendations",
    "Recommender",
    "UnknownIdError",
    "check_k",
    "top_k",
    "typed_id",
]
