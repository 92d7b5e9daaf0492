"""The categorical step: null handling, rare-category grouping and encoding of categorical columns
(one-hot, or for high cardinality hashing, target encoding or the string index).

When the exact value counts of every categorical column are known at planning, the imputer, the
rare-category grouper and the ``StringIndexer`` are built already fitted from them (no pass over the
data each).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ConfigError
from sparkpipe.features.plan import OneHotBlock, PlanContext, Stage, VectorBlock
from sparkpipe.features.roles import top_values
from sparkpipe.features.stages import (
    MISSING_CATEGORY,
    RARE_CATEGORY,
    CategoricalImputer,
    CategoricalImputerModel,
    RareCategoryGrouper,
    RareCategoryGrouperModel,
    category_counts,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from sparkpipe.config import CategoricalConfig, MissingValuesConfig

log = logging.getLogger(__name__)


def _imputed_counts(counts: dict[str | None, int], strategy: str, fill: str) -> tuple[dict[str, int], str]:
    """Value counts after :class:`CategoricalImputer` (nulls folded into the fill value) and that
    fill value (``mode``: the most frequent value, ties to the smallest, as ``F.mode(deterministic)``)."""
    counts = dict(counts)
    nulls = counts.pop(None, 0)
    if strategy == "mode" and counts:
        fill = min(counts, key=lambda v: (-counts[v], v))  # type: ignore[arg-type,return-value]
    if nulls:
        counts[fill] = counts.get(fill, 0) + nulls
    return counts, fill  # type: ignore[return-value]


def _indexer_labels(
    counts: dict[str | None, int], strategy: str, fill: str, rare_threshold: int = 0
) -> list[str]:
    """The labels ``StringIndexer(frequencyDesc)`` will learn after :class:`CategoricalImputer` and,
    with ``rare_threshold``, :class:`RareCategoryGrouper`."""
    imputed, _ = _imputed_counts(counts, strategy, fill)
    if rare_threshold:
        grouped: dict[str, int] = {}
        for v, n in imputed.items():
            key = v if n >= rare_threshold else RARE_CATEGORY
            grouped[key] = grouped.get(key, 0) + n
        imputed = grouped
    return sorted(imputed, key=lambda v: (-imputed[v], v))


def _fitted_string_indexer(labels: list[list[str]], inputs: list[str], outputs: list[str]) -> Stage:
    """A ``StringIndexerModel`` (``handleInvalid='keep'``) with ``labels`` per column, as fitting
    ``StringIndexer(frequencyDesc)`` yields. pyspark's ``from_arrays_of_labels`` pads label lists of
    unequal length with nulls (its Java array is rectangular), so the jagged array is built here."""
    from pyspark.ml.feature import StringIndexerModel
    from pyspark.ml.util import is_remote

    if is_remote() or len({len(x) for x in labels}) <= 1:
        return StringIndexerModel.from_arrays_of_labels(
            labels, inputCols=inputs, outputCols=outputs, handleInvalid="keep"
        )
    from pyspark.core.context import SparkContext

    sc = SparkContext._active_spark_context
    assert sc is not None and sc._gateway is not None
    string = sc._gateway.jvm.java.lang.String
    jagged = sc._gateway.new_array(string, len(labels), 0)
    for i, column_labels in enumerate(labels):
        row = sc._gateway.new_array(string, len(column_labels))
        for j, label in enumerate(column_labels):
            row[j] = label
        jagged[i] = row
    model = StringIndexerModel._create_from_java_class(
        "org.apache.spark.ml.feature.StringIndexerModel", jagged
    )
    return model.setInputCols(inputs).setOutputCols(outputs).setHandleInvalid("keep")


def _fitted_imputer(
    df: DataFrame,
    cols: list[str],
    outputs: list[str],
    counts: list[dict[str | None, int]],
    strategy: str,
    fill: str,
) -> CategoricalImputerModel:
    """The :class:`CategoricalImputerModel` that fitting :class:`CategoricalImputer` on ``df`` yields,
    from exact value counts (no pass over the data)."""
    from sparkpipe.features.stages import _field_type

    fills = [_imputed_counts(c, strategy, fill)[1] for c in counts]
    types = [_field_type(df, c).simpleString() for c in cols]
    model = CategoricalImputerModel(inputCols=cols, outputCols=outputs, fillValues=fills, inputTypes=types)
    return model._set(strategy=strategy, fillValue=fill)


def _fitted_grouper(
    inputs: list[str],
    outputs: list[str],
    counts: list[dict[str | None, int]],
    strategy: str,
    fill: str,
    min_count: int,
) -> RareCategoryGrouperModel:
    """The :class:`RareCategoryGrouperModel` fitting :class:`RareCategoryGrouper` after the imputer
    yields, from exact value counts (no pass over the data)."""
    kept = []
    for c in counts:
        imputed, _ = _imputed_counts(c, strategy, fill)
        kept.append(sorted(v for v, n in imputed.items() if n >= min_count))
    model = RareCategoryGrouperModel(inputCols=inputs, outputCols=outputs, keptCategories=json.dumps(kept))
    return model._set(minCount=min_count)


EXACT_COUNT_MAX_DISTINCT = 100_000
"""Categorical columns with more (approximate) distinct values skip the exact value count at planning."""


def _binary_target(ctx: PlanContext, what: str) -> str:
    """``targetType`` for a label-using stage, or a ConfigError naming why none applies."""
    if ctx.label_col is None or ctx.task not in ("classification", "regression"):
        raise ConfigError([(what, f"needs a target (classification or regression), task is {ctx.task!r}")])
    if ctx.task == "regression":
        return "continuous"
    target = ctx.roles.target
    distinct = ctx.profile["columns"][target].get("approx_distinct", 0) if target else 0
    if distinct > 2:
        raise ConfigError(
            [(what, f"target encoding supports binary classification; {target!r} has ~{distinct} classes. "
                    "Use high_cardinality: hashing or index")]
        )  # fmt: skip
    return "binary"


def step_categorical(ctx: PlanContext) -> list[Stage]:
    """Null handling, rare-category grouping and encoding of categorical columns.

    Columns whose cardinality (after rare grouping) is at most ``max_onehot_cardinality`` are one-hot
    encoded; the others follow ``high_cardinality``: ``hashing`` (one Spark ``FeatureHasher`` block of
    ``hash_buckets`` slots per column), ``target`` (Spark 4 ``TargetEncoder`` on the string index,
    unseen -> the global statistic) or ``index`` (the string index itself as one slot).
    """
    cols = [c for c in ctx.roles.types if c in set(ctx.roles.categorical)]
    if not cols:
        return []
    mv, enc = ctx.cfg.missing_values, ctx.cfg.categorical_encoding
    strategy, fill = _fill_strategy(mv)
    counts, labels = _count_values(ctx, cols, strategy, fill, enc.rare_threshold)
    # The exact counts of every column are known: the imputer, the grouper and the indexer are built
    # fitted from them (each would otherwise count the same values again, one pass over the data
    # each). Not when rows are dropped after planning (missing_values: drop): the counts would differ.
    prefit = len(counts) == len(cols) and mv.strategy != "drop"
    stages, filled = _fill_and_group(ctx, cols, counts, strategy, fill, enc.rare_threshold, prefit)
    kinds = _encoding_kinds(ctx, cols, labels, enc)
    to_index = [i for i, k in enumerate(kinds) if k in ("onehot", "target", "index")]
    indexed = {i: ctx.new_col(f"{cols[i]}__idx") for i in to_index}
    indexer = _indexer(to_index, labels, filled, indexed, prefit)
    if indexer is not None:
        stages.append(indexer)
    stages += _one_hot(ctx, cols, kinds, to_index, indexed, labels, indexer)
    stages += _target_encoding(ctx, cols, kinds, to_index, indexed, enc)
    for i in to_index:
        if kinds[i] == "index":  # the index itself is the feature
            ctx.add_ready(indexed[i], cols[i], cols[i])
    stages += _hashing(ctx, cols, kinds, filled, enc)
    ctx.consumed.update(cols)
    return stages


def _fill_strategy(mv: MissingValuesConfig) -> tuple[str, str]:
    """``(strategy, fill value)`` of the categorical imputer (``missing_values.categorical_strategy``)."""
    strategy, fill = "constant", MISSING_CATEGORY
    if mv.categorical_strategy == "mode":
        strategy = "mode"
    elif mv.categorical_strategy == "constant" and isinstance(mv.fill_value, str):
        fill = mv.fill_value
    return strategy, fill


def _count_values(
    ctx: PlanContext, cols: list[str], strategy: str, fill: str, rare_threshold: int
) -> tuple[dict[int, dict[str | None, int]], dict[int, list[str]]]:
    """Exact value counts of the columns with at most :data:`EXACT_COUNT_MAX_DISTINCT` values (by
    column index), and the labels the indexer will learn from them. The counts also become each
    column's drift reference in the profile."""
    stats = ctx.profile["columns"]
    counted = [
        i for i, c in enumerate(cols) if stats[c].get("approx_distinct", 0) <= EXACT_COUNT_MAX_DISTINCT
    ]
    counts = dict(zip(counted, category_counts(ctx.df, [cols[i] for i in counted]), strict=True))
    for i in counted:  # the drift reference of each categorical column, from the counts just taken
        stats[cols[i]].update(top_values(counts[i]))
    labels: dict[int, list[str]] = {
        i: _indexer_labels(counts[i], strategy, fill, rare_threshold) for i in counted
    }
    return counts, labels


def _fill_and_group(
    ctx: PlanContext,
    cols: list[str],
    counts: dict[int, dict[str | None, int]],
    strategy: str,
    fill: str,
    rare_threshold: int,
    prefit: bool,
) -> tuple[list[Stage], list[str]]:
    """The imputer and (``rare_threshold``) the rare-category grouper; returns them and the columns
    they write."""
    filled = [ctx.new_col(f"{c}__cat") for c in cols]
    stages: list[Stage] = [
        _fitted_imputer(ctx.df, cols, filled, [counts[i] for i in range(len(cols))], strategy, fill)
        if prefit
        else CategoricalImputer(inputCols=cols, outputCols=filled, strategy=strategy, fillValue=fill)
    ]
    if rare_threshold:
        grouped = [ctx.new_col(f"{c}__grp") for c in cols]
        stages.append(
            _fitted_grouper(
                filled, grouped, [counts[i] for i in range(len(cols))], strategy, fill, rare_threshold
            )
            if prefit
            else RareCategoryGrouper(inputCols=filled, outputCols=grouped, minCount=rare_threshold)
        )
        filled = grouped
    return stages, filled


def _encoding_kinds(
    ctx: PlanContext, cols: list[str], labels: dict[int, list[str]], enc: CategoricalConfig
) -> list[str]:
    """Per column: ``onehot`` up to ``max_onehot_cardinality`` values, else ``high_cardinality``."""
    stats = ctx.profile["columns"]
    kinds: list[str] = []
    for i, c in enumerate(cols):
        card = len(labels[i]) if i in labels else stats[c].get("approx_distinct", 0)
        kind = "onehot" if card <= enc.max_onehot_cardinality else enc.high_cardinality
        if kind != "onehot":
            log.info("categorical column %r has ~%d values (> max_onehot_cardinality %d): %s encoding",
                     c, card, enc.max_onehot_cardinality, kind)  # fmt: skip
        kinds.append(kind)
    return kinds


def _indexer(
    to_index: list[int],
    labels: dict[int, list[str]],
    filled: list[str],
    indexed: dict[int, str],
    prefit: bool,
) -> Any:
    """One ``StringIndexer`` (fitted from the labels when ``prefit``) over the columns to index."""
    if to_index and prefit:
        return _fitted_string_indexer(
            [labels[i] for i in to_index], [filled[i] for i in to_index], [indexed[i] for i in to_index]
        )
    if to_index:
        from pyspark.ml.feature import StringIndexer

        return StringIndexer(
            inputCols=[filled[i] for i in to_index],
            outputCols=[indexed[i] for i in to_index],
            handleInvalid="keep",
            stringOrderType="frequencyDesc",
        )
    return None


def _one_hot(
    ctx: PlanContext,
    cols: list[str],
    kinds: list[str],
    to_index: list[int],
    indexed: dict[int, str],
    labels: dict[int, list[str]],
    indexer: Any,
) -> list[Stage]:
    """``OneHotEncoder`` of the indexed one-hot columns (one block of slots each)."""
    onehot = [i for i in to_index if kinds[i] == "onehot"]
    if not onehot:
        return []
    from pyspark.ml.feature import OneHotEncoder

    oh_out = [ctx.new_col(f"{cols[i]}__ohe") for i in onehot]
    stage = OneHotEncoder(
        inputCols=[indexed[i] for i in onehot], outputCols=oh_out, handleInvalid="keep", dropLast=True
    )
    for i, out in zip(onehot, oh_out, strict=True):
        ctx.blocks.append(OneHotBlock(cols[i], out, labels.get(i, []), indexer, to_index.index(i)))
    return [stage]


def _target_encoding(
    ctx: PlanContext,
    cols: list[str],
    kinds: list[str],
    to_index: list[int],
    indexed: dict[int, str],
    enc: CategoricalConfig,
) -> list[Stage]:
    """Spark's ``TargetEncoder`` on the string index of the ``target`` columns (needs the label)."""
    target_cols = [i for i in to_index if kinds[i] == "target"]
    if not target_cols:
        return []
    from pyspark.ml.feature import TargetEncoder

    target_type = _binary_target(ctx, "features.categorical_encoding.high_cardinality")
    te_out = [ctx.new_col(f"{cols[i]}__te") for i in target_cols]
    stage = TargetEncoder(
        inputCols=[indexed[i] for i in target_cols],
        outputCols=te_out,
        labelCol=ctx.label_col,
        targetType=target_type,
        smoothing=enc.target_smoothing,
        handleInvalid="keep",
    )
    ctx.needs_label = True
    for i, out in zip(target_cols, te_out, strict=True):
        ctx.add_ready(out, f"{cols[i]}__target", cols[i])
    return [stage]


def _hashing(
    ctx: PlanContext, cols: list[str], kinds: list[str], filled: list[str], enc: CategoricalConfig
) -> list[Stage]:
    """One ``FeatureHasher`` block of ``hash_buckets`` slots per ``hashing`` column."""
    hashed = [i for i, k in enumerate(kinds) if k == "hashing"]
    if not hashed:
        return []
    from pyspark.ml.feature import FeatureHasher

    stages: list[Stage] = []
    for i in hashed:
        out = ctx.new_col(f"{cols[i]}__hash")
        stages.append(FeatureHasher(inputCols=[filled[i]], outputCol=out, numFeatures=enc.hash_buckets))
        ctx.blocks.append(VectorBlock(cols[i], out, enc.hash_buckets, "h"))
    return stages
