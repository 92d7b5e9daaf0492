"""The feature steps of :data:`sparkpipe.features.auto.STEP_BUILDERS`: each turns the columns' roles and the
``features`` config into Spark stages (time parts, elapsed time, casts, outliers, ratios, group
aggregations, imputation, missing indicators, categoricals, text, vectors, assembly, selection, scaling).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from sparkpipe.config import TextConfig
from sparkpipe.core import KEY_TYPES, TIME_TYPES, base_type
from sparkpipe.errors import ConfigError
from sparkpipe.features.roles import is_numeric_type, top_values
from sparkpipe.features.stages import (
    DEFAULT_TIME_PARTS,
    MISSING_CATEGORY,
    RARE_CATEGORY,
    CastToDouble,
    CategoricalImputer,
    CategoricalImputerModel,
    ClipVector,
    ConstantImputer,
    ElapsedTime,
    GroupAggregator,
    ImportanceSelector,
    MissingIndicator,
    OutlierHandler,
    PairwiseProduct,
    RareCategoryGrouper,
    RareCategoryGrouperModel,
    SafeRatio,
    TimeFeatures,
    category_counts,
    time_feature_names,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
from sparkpipe.features.plan import (
    FEATURES_COL,
    WITH_MEAN_MAX_WIDTH,
    OneHotBlock,
    PlanContext,
    Stage,
    VectorBlock,
)

log = logging.getLogger(__name__)


def step_time_features(ctx: PlanContext) -> list[Stage]:
    """Calendar parts of timestamp columns (``features.time_features``)."""
    tcfg = ctx.time_cfg
    cols = ctx.roles.timestamp
    if not cols:
        return []
    if not tcfg.enabled:
        log.info("time_features disabled: timestamp columns %s are not used", cols)
        return []
    parts = list(tcfg.parts or DEFAULT_TIME_PARTS)
    for c in cols:
        for name in time_feature_names(c, parts, tcfg.cyclic):
            if name in ctx.taken:
                raise ConfigError(
                    [
                        (
                            "features.time_features",
                            f"time feature column {name!r} clashes with an input column; rename or exclude it",
                        )
                    ]
                )
            ctx.taken.add(name)
            ctx.pending.append((name, name))
            ctx.sources[name] = c
    ctx.consumed.update(cols)
    ctx.dropna_subset += cols
    return [TimeFeatures(inputCols=list(cols), parts=parts, cyclic=tcfg.cyclic)]


def step_cast_double(ctx: PlanContext) -> list[Stage]:
    """Numeric and boolean columns to double (Imputer and VectorAssembler need doubles)."""
    cols = [c for c in ctx.roles.types if c in set(ctx.roles.numeric) | set(ctx.roles.boolean)]
    if not cols:
        return []
    outs = [ctx.new_col(f"{c}__dbl") for c in cols]
    ctx.pending += list(zip(outs, cols, strict=True))
    ctx.consumed.update(cols)
    ctx.dropna_subset += cols
    return [CastToDouble(inputCols=cols, outputCols=outs)]


def step_missing_indicator(ctx: PlanContext) -> list[Stage]:
    """``c__missing`` 0/1 columns for inputs that had nulls in the build frame (``add_indicator``)."""
    if not ctx.cfg.missing_values.add_indicator:
        return []
    stats = ctx.profile["columns"]
    cols = [
        c
        for c in ctx.roles.types
        if c in set(ctx.roles.numeric) | set(ctx.roles.boolean) | (set(ctx.roles.timestamp) & ctx.consumed)
        and (stats[c]["null_count"] > 0 or stats[c].get("nan_count", 0) > 0)
    ]
    if not cols:
        return []
    outs = [ctx.new_col(f"{c}__missing") for c in cols]
    for c, o in zip(cols, outs, strict=True):
        ctx.add_ready(o, f"{c}__missing", c)
    return [MissingIndicator(inputCols=cols, outputCols=outs)]


def step_impute(ctx: PlanContext) -> list[Stage]:
    """Impute null/NaN of the pending double columns (``missing_values.strategy``)."""
    from pyspark.ml.feature import Imputer

    if not ctx.pending:
        return []
    mv = ctx.cfg.missing_values
    cols = [c for c, _ in ctx.pending]
    names = [n for _, n in ctx.pending]
    ctx.pending = []
    if mv.strategy in ("none", "drop"):
        ctx.ready += list(zip(cols, names, strict=True))
        return []
    outs = [ctx.new_col(f"{c.removesuffix('__dbl')}__imp") for c in cols]
    ctx.ready += list(zip(outs, names, strict=True))
    if mv.strategy == "constant":
        try:
            fill = float(mv.fill_value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(
                [
                    (
                        "features.missing_values.fill_value",
                        f"strategy 'constant' on numeric columns needs a number (got {mv.fill_value!r})",
                    )
                ]
            ) from None
        return [ConstantImputer(inputCols=cols, outputCols=outs, fillValue=fill)]
    return [Imputer(inputCols=cols, outputCols=outs, strategy=mv.strategy)]


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
    from pyspark.ml.feature import (
        FeatureHasher,
        OneHotEncoder,
        StringIndexer,
        TargetEncoder,
    )

    cols = [c for c in ctx.roles.types if c in set(ctx.roles.categorical)]
    if not cols:
        return []
    mv, enc = ctx.cfg.missing_values, ctx.cfg.categorical_encoding
    strategy, fill = "constant", MISSING_CATEGORY
    if mv.categorical_strategy == "mode":
        strategy = "mode"
    elif mv.categorical_strategy == "constant" and isinstance(mv.fill_value, str):
        fill = mv.fill_value
    stats = ctx.profile["columns"]
    counted = [
        i for i, c in enumerate(cols) if stats[c].get("approx_distinct", 0) <= EXACT_COUNT_MAX_DISTINCT
    ]
    counts = dict(zip(counted, category_counts(ctx.df, [cols[i] for i in counted]), strict=True))
    for i in counted:  # the drift reference of each categorical column, from the counts just taken
        stats[cols[i]].update(top_values(counts[i]))
    labels: dict[int, list[str]] = {
        i: _indexer_labels(counts[i], strategy, fill, enc.rare_threshold) for i in counted
    }
    # The exact counts of every column are known: the imputer, the grouper and the indexer are built
    # fitted from them (each would otherwise count the same values again, one pass over the data
    # each). Not when rows are dropped after planning (missing_values: drop): the counts would differ.
    prefit = len(counted) == len(cols) and mv.strategy != "drop"
    filled = [ctx.new_col(f"{c}__cat") for c in cols]
    stages: list[Stage] = [
        _fitted_imputer(ctx.df, cols, filled, [counts[i] for i in range(len(cols))], strategy, fill)
        if prefit
        else CategoricalImputer(inputCols=cols, outputCols=filled, strategy=strategy, fillValue=fill)
    ]
    if enc.rare_threshold:
        grouped = [ctx.new_col(f"{c}__grp") for c in cols]
        stages.append(
            _fitted_grouper(
                filled, grouped, [counts[i] for i in range(len(cols))], strategy, fill, enc.rare_threshold
            )
            if prefit
            else RareCategoryGrouper(inputCols=filled, outputCols=grouped, minCount=enc.rare_threshold)
        )
        filled = grouped
    kinds: list[str] = []
    for i, c in enumerate(cols):
        card = len(labels[i]) if i in labels else stats[c].get("approx_distinct", 0)
        kind = "onehot" if card <= enc.max_onehot_cardinality else enc.high_cardinality
        if kind != "onehot":
            log.info("categorical column %r has ~%d values (> max_onehot_cardinality %d): %s encoding",
                     c, card, enc.max_onehot_cardinality, kind)  # fmt: skip
        kinds.append(kind)
    to_index = [i for i, k in enumerate(kinds) if k in ("onehot", "target", "index")]
    indexed = {i: ctx.new_col(f"{cols[i]}__idx") for i in to_index}
    indexer = None
    if to_index and prefit:
        indexer = _fitted_string_indexer(
            [labels[i] for i in to_index], [filled[i] for i in to_index], [indexed[i] for i in to_index]
        )
        stages.append(indexer)
    elif to_index:
        indexer = StringIndexer(
            inputCols=[filled[i] for i in to_index],
            outputCols=[indexed[i] for i in to_index],
            handleInvalid="keep",
            stringOrderType="frequencyDesc",
        )
        stages.append(indexer)
    onehot = [i for i in to_index if kinds[i] == "onehot"]
    if onehot:
        oh_out = [ctx.new_col(f"{cols[i]}__ohe") for i in onehot]
        stages.append(
            OneHotEncoder(
                inputCols=[indexed[i] for i in onehot], outputCols=oh_out, handleInvalid="keep", dropLast=True
            )
        )
        for i, out in zip(onehot, oh_out, strict=True):
            ctx.blocks.append(OneHotBlock(cols[i], out, labels.get(i, []), indexer, to_index.index(i)))
    target_cols = [i for i in to_index if kinds[i] == "target"]
    if target_cols:
        target_type = _binary_target(ctx, "features.categorical_encoding.high_cardinality")
        te_out = [ctx.new_col(f"{cols[i]}__te") for i in target_cols]
        stages.append(
            TargetEncoder(
                inputCols=[indexed[i] for i in target_cols],
                outputCols=te_out,
                labelCol=ctx.label_col,
                targetType=target_type,
                smoothing=enc.target_smoothing,
                handleInvalid="keep",
            )
        )
        ctx.needs_label = True
        for i, out in zip(target_cols, te_out, strict=True):
            ctx.add_ready(out, f"{cols[i]}__target", cols[i])
    for i in to_index:
        if kinds[i] == "index":  # the index itself is the feature
            ctx.add_ready(indexed[i], cols[i], cols[i])
    for i, k in enumerate(kinds):
        if k == "hashing":
            out = ctx.new_col(f"{cols[i]}__hash")
            stages.append(FeatureHasher(inputCols=[filled[i]], outputCol=out, numFeatures=enc.hash_buckets))
            ctx.blocks.append(VectorBlock(cols[i], out, enc.hash_buckets, "h"))
    ctx.consumed.update(cols)
    return stages


def step_text(ctx: PlanContext) -> list[Stage]:
    """Text columns: null -> ``""``, ``RegexTokenizer``, ``StopWordsRemover`` (``stop_words``),
    ``HashingTF`` (``num_features``) and ``IDF`` (``idf``, ``min_doc_freq``): one sparse block each."""
    from pyspark.ml.feature import IDF, HashingTF, RegexTokenizer, StopWordsRemover

    cols = [c for c in ctx.roles.types if c in set(ctx.roles.text)]
    if not cols:
        return []
    if ctx.cfg.text is None:
        # Thousands of hashed term slots help linear models but dilute tree ensembles' feature
        # sampling, so free text is used only when asked for.
        log.info(
            "text column(s) %s recognised but not used; add `features.text: {}` (or list the columns "
            "under features.text.columns) to turn them into TF-IDF features",
            cols,
        )
        return []
    tcfg = ctx.cfg.text if isinstance(ctx.cfg.text, TextConfig) else TextConfig()
    filled = [ctx.new_col(f"{c}__txt") for c in cols]
    stages: list[Stage] = [
        CategoricalImputer(inputCols=cols, outputCols=filled, strategy="constant", fillValue="")
    ]
    for c, f in zip(cols, filled, strict=True):
        tokens = ctx.new_col(f"{c}__tokens")
        stages.append(
            RegexTokenizer(
                inputCol=f, outputCol=tokens, pattern=tcfg.pattern, gaps=True,
                minTokenLength=tcfg.min_token_length, toLowercase=True,
            )
        )  # fmt: skip
        if tcfg.stop_words:
            kept = ctx.new_col(f"{c}__words")
            stages.append(StopWordsRemover(inputCol=tokens, outputCol=kept))
            tokens = kept
        tf = ctx.new_col(f"{c}__tf")
        stages.append(HashingTF(inputCol=tokens, outputCol=tf, numFeatures=tcfg.num_features))
        out = tf
        if tcfg.idf:
            out = ctx.new_col(f"{c}__tfidf")
            stages.append(IDF(inputCol=tf, outputCol=out, minDocFreq=tcfg.min_doc_freq))
        ctx.blocks.append(VectorBlock(c, out, tcfg.num_features, "tf"))
    ctx.consumed.update(cols)
    return stages


def _assembled_col(ctx: PlanContext) -> str:
    return ctx.new_col(f"{FEATURES_COL}__raw")


def step_assemble(ctx: PlanContext) -> list[Stage]:
    """VectorAssembler over dense slots then vector blocks (one-hot, hashed, text).

    The assembler uses ``handleInvalid='error'`` when imputation runs: after it no null or NaN can
    remain, so one would be a bug and must fail loudly rather than score NaN. With strategy
    ``none``/``drop`` it uses ``'keep'`` (NaN passes through; the user opted out of imputation).
    The assembled vector is sparse whenever most slots are zero (Spark compresses it).
    """
    from pyspark.ml.feature import VectorAssembler

    inputs = [c for c, _ in ctx.ready] + [b.vector_col for b in ctx.blocks]
    if not inputs:
        raise ConfigError(
            [
                (
                    "features",
                    f"no usable feature columns; roles: {ctx.roles.as_dict()}. List columns under features.numeric/categorical",
                )
            ]
        )
    imputing = ctx.cfg.missing_values.strategy not in ("none", "drop")
    raw = _assembled_col(ctx)
    ctx.vector_col = raw
    return [VectorAssembler(inputCols=inputs, outputCol=raw, handleInvalid="error" if imputing else "keep")]


def step_selection(ctx: PlanContext) -> list[Stage]:
    """Feature selection on the assembled (unscaled) vector (``features.selection``), in this order:

    ``variance_threshold`` (Spark ``VarianceThresholdSelector``), ``univariate`` (Spark
    ``UnivariateFeatureSelector``; label type from the task) and ``top_k_importance``
    (:class:`~sparkpipe.features.stages.ImportanceSelector`: a quick random forest, then a
    ``VectorSlicer`` of the top-k slots).
    """
    from pyspark.ml.feature import UnivariateFeatureSelector, VarianceThresholdSelector

    sel = ctx.cfg.selection
    if sel is None or ctx.vector_col is None:
        return []
    stages: list[Stage] = []
    if sel.variance_threshold is not None:
        out = ctx.new_col(f"{FEATURES_COL}__var")
        stages.append(
            VarianceThresholdSelector(
                featuresCol=ctx.vector_col, outputCol=out, varianceThreshold=sel.variance_threshold
            )
        )
        ctx.vector_col = out
        ctx.selectors.append(out)
    if sel.univariate is not None:
        u = sel.univariate
        if ctx.label_col is None or ctx.task not in ("classification", "regression"):
            raise ConfigError([("features.selection.univariate", f"needs a target; task is {ctx.task!r}")])
        out = ctx.new_col(f"{FEATURES_COL}__uni")
        selector = UnivariateFeatureSelector(
            featuresCol=ctx.vector_col, outputCol=out, labelCol=ctx.label_col, selectionMode=u.selection_mode
        )
        selector.setFeatureType(u.feature_type)
        selector.setLabelType("categorical" if ctx.task == "classification" else "continuous")
        if u.selection_threshold is not None:
            selector.setSelectionThreshold(u.selection_threshold)
        stages.append(selector)
        ctx.needs_label = True
        ctx.vector_col = out
        ctx.selectors.append(out)
    if sel.top_k_importance is not None:
        if ctx.label_col is None or ctx.task not in ("classification", "regression"):
            raise ConfigError(
                [("features.selection.top_k_importance", f"needs a target; task is {ctx.task!r}")]
            )
        out = ctx.new_col(f"{FEATURES_COL}__topk")
        stages.append(
            ImportanceSelector(
                featuresCol=ctx.vector_col, outputCol=out, labelCol=ctx.label_col, k=sel.top_k_importance,
                task=ctx.task, numTrees=sel.importance_trees, seed=ctx.seed,
            )
        )  # fmt: skip
        ctx.needs_label = True
        ctx.vector_col = out
        ctx.selectors.append(out)
    return stages


def step_scale(ctx: PlanContext) -> list[Stage]:
    """The scaler (``features.scaling``) from the (selected) vector to ``features``.

    ``standard`` is ``StandardScaler(withStd=True)`` with ``withMean=True`` only when the vector is all
    dense slots (no one-hot/hashed/text block) and at most :data:`WITH_MEAN_MAX_WIDTH` wide: centring
    densifies sparse vectors, and the models that care (linear, SVC) standardise internally anyway.
    ``maxabs`` keeps sparsity too. ``nonnegative`` (Naive Bayes) forces ``MinMaxScaler`` followed by
    :class:`~sparkpipe.features.stages.ClipVector` (values in [0, 1], also for rows outside the
    training range).
    """
    from pyspark.ml.feature import MaxAbsScaler, MinMaxScaler, StandardScaler

    if ctx.vector_col is None:
        return []
    scaling = ctx.cfg.scaling
    if ctx.nonnegative and scaling != "minmax":
        log.info("nonnegative features requested: MinMaxScaler instead of scaling=%r", scaling)
        scaling = "minmax"
    raw = ctx.vector_col
    if scaling == "standard":
        width = len(ctx.ready)
        with_mean = not ctx.blocks and width <= WITH_MEAN_MAX_WIDTH
        stage: Stage = StandardScaler(
            inputCol=raw, outputCol=ctx.features_col, withStd=True, withMean=with_mean
        )
    elif scaling == "minmax" and ctx.nonnegative:
        # rows outside the training range would scale below 0 (Naive Bayes fails on them): clip
        scaled = ctx.new_col(f"{FEATURES_COL}__minmax")
        ctx.vector_col = ctx.features_col
        return [
            MinMaxScaler(inputCol=raw, outputCol=scaled),
            ClipVector(inputCol=scaled, outputCol=ctx.features_col, lower=0.0, upper=1.0),
        ]
    elif scaling == "minmax":
        stage = MinMaxScaler(inputCol=raw, outputCol=ctx.features_col)
    elif scaling == "maxabs":
        stage = MaxAbsScaler(inputCol=raw, outputCol=ctx.features_col)
    else:
        return []
    ctx.vector_col = ctx.features_col
    return [stage]


def step_assemble_and_scale(ctx: PlanContext) -> list[Stage]:
    """v1 compatibility: :func:`step_assemble` then :func:`step_scale`."""
    return step_assemble(ctx) + step_scale(ctx)


def _check_exists(ctx: PlanContext, key: str, cols: list[str]) -> None:
    missing = [c for c in cols if c not in ctx.roles.types]
    if missing:
        raise ConfigError(
            [(key, f"column(s) {', '.join(map(repr, missing))} not in the data; columns are: {', '.join(ctx.roles.types)}")]
        )  # fmt: skip


def _check_not_target(ctx: PlanContext, key: str, cols: list[str]) -> None:
    if ctx.roles.target is not None and ctx.roles.target in cols:
        raise ConfigError(
            [
                (
                    key,
                    f"the target {ctx.roles.target!r} cannot be a feature input here: it would leak the label",
                )
            ]
        )


def step_elapsed(ctx: PlanContext) -> list[Stage]:
    """Elapsed time between two timestamp columns (``features.time_features.elapsed``).

    Raises :class:`ConfigError` when a side is the target, or when on the build frame the elapsed time
    reproduces a numeric target (|correlation| > 0.999: e.g. dropoff - pickup for a trip-duration
    target), which would leak the label into the features.
    """
    from pyspark.sql import functions as F

    items = ctx.time_cfg.elapsed
    if not items:
        return []
    starts, ends, outs, units = [], [], [], []
    for k, e in enumerate(items):
        key = f"features.time_features.elapsed[{k}]"
        _check_exists(ctx, key, [e.start, e.end])
        _check_not_target(ctx, key, [e.start, e.end])
        for c in (e.start, e.end):
            kind = ctx.roles.types[c]
            if not (kind in TIME_TYPES or kind.startswith("string")):
                raise ConfigError([(key, f"column {c!r} has type {kind}; elapsed time needs timestamps")])
        name = e.name or f"{e.end}_minus_{e.start}_{e.unit}"
        out = ctx.new_col(name)
        starts.append(e.start)
        ends.append(e.end)
        outs.append(out)
        units.append(e.unit)
        ctx.pending.append((out, name))
        ctx.sources[name] = name
    stage = ElapsedTime(startCols=starts, endCols=ends, outputCols=outs, units=units)
    target = ctx.roles.target
    if target is not None and is_numeric_type(ctx.roles.types[target]):
        probe = stage.transform(ctx.df.select(*dict.fromkeys([*starts, *ends, target])))
        row = probe.agg(*[F.corr(F.col(f"`{o}`"), F.col(f"`{target}`").cast("double")).alias(f"c{i}")
                          for i, o in enumerate(outs)]).collect()[0]  # fmt: skip
        for i, o in enumerate(outs):
            r = row[f"c{i}"]
            if r is not None and abs(r) > LEAK_CORRELATION:
                raise ConfigError(
                    [(f"features.time_features.elapsed[{i}]",
                      f"elapsed time {o!r} reproduces the target {target!r} (correlation {r:.4f}): it leaks "
                      "the label; drop it (e.g. a dropoff time is only known after the trip)")]
                )  # fmt: skip
    ctx.consumed.update(starts + ends)
    ctx.dropna_subset += starts + ends
    return [stage]


LEAK_CORRELATION = 0.999
"""An elapsed-time feature this correlated with a numeric target is refused as a leak."""


def _numeric_source(ctx: PlanContext, key: str, c: str) -> str:
    """The current double column of numeric input ``c`` (cast/clipped), or ``c`` itself when unused."""
    _check_exists(ctx, key, [c])
    _check_not_target(ctx, key, [c])
    for col, name in ctx.pending:
        if name == c:
            return col
    if not is_numeric_type(ctx.roles.types[c]) and ctx.roles.types[c] != "boolean":
        raise ConfigError([(key, f"column {c!r} has type {ctx.roles.types[c]}; it must be numeric")])
    ctx.consumed.add(c)
    return c


def step_outliers(ctx: PlanContext) -> list[Stage]:
    """z-score or IQR outlier handling of numeric columns (``features.outliers``), bounds learned at fit
    time by :class:`~sparkpipe.features.stages.OutlierHandler`. ``clip`` replaces the column by its
    winsorized value; ``flag`` adds a ``c__outlier`` 0/1 slot and keeps the value."""
    oc = ctx.cfg.outliers
    if isinstance(oc, bool) or oc.method == "none":
        return []
    numeric = [c for c in ctx.roles.types if c in set(ctx.roles.numeric)]
    cols = list(oc.columns) if oc.columns is not None else numeric
    if oc.columns is not None:
        _check_exists(ctx, "features.outliers.columns", cols)
        bad = [c for c in cols if c not in numeric]
        if bad:
            raise ConfigError(
                [("features.outliers.columns", f"{bad} are not numeric feature columns; numeric: {numeric}")]
            )
    index = {name: k for k, (_, name) in enumerate(ctx.pending)}
    cols = [c for c in cols if c in index]
    if not cols:
        return []
    inputs = [ctx.pending[index[c]][0] for c in cols]
    if oc.action == "clip":
        outs = [ctx.new_col(f"{c}__clip") for c in cols]
        for c, o in zip(cols, outs, strict=True):
            ctx.pending[index[c]] = (o, c)
    else:
        outs = [ctx.new_col(f"{c}__outlier") for c in cols]
        for c, o in zip(cols, outs, strict=True):
            ctx.add_ready(o, f"{c}__outlier", c)
    return [
        OutlierHandler(
            inputCols=inputs, outputCols=outs, method=oc.method, threshold=oc.threshold, action=oc.action
        )
    ]


def step_ratios(ctx: PlanContext) -> list[Stage]:
    """Ratios ``a_per_b`` of every numerator by every denominator (:class:`SafeRatio`: zero or null
    denominator -> null, imputed next) and, with ``pairwise_products``, products ``a_x_b`` of every pair
    of ``product_cols`` (default: the numerator and denominator columns)."""
    rc = ctx.cfg.ratios
    if rc is None:
        return []
    stages: list[Stage] = []
    left, right, outs = [], [], []
    for a in rc.numerator_cols:
        for b in rc.denominator_cols:
            if a == b:
                continue
            left.append(_numeric_source(ctx, "features.ratios.numerator_cols", a))
            right.append(_numeric_source(ctx, "features.ratios.denominator_cols", b))
            name = f"{a}_per_{b}"
            outs.append(ctx.new_col(name))
            ctx.pending.append((outs[-1], name))
            ctx.sources[name] = name
    if outs:
        stages.append(SafeRatio(leftCols=left, rightCols=right, outputCols=outs))
    if rc.pairwise_products:
        cols = list(
            dict.fromkeys(
                rc.product_cols if rc.product_cols is not None else rc.numerator_cols + rc.denominator_cols
            )
        )
        left, right, outs = [], [], []
        for i, a in enumerate(cols):
            for b in cols[i + 1 :]:
                left.append(_numeric_source(ctx, "features.ratios.product_cols", a))
                right.append(_numeric_source(ctx, "features.ratios.product_cols", b))
                name = f"{a}_x_{b}"
                outs.append(ctx.new_col(name))
                ctx.pending.append((outs[-1], name))
                ctx.sources[name] = name
        if outs:
            stages.append(PairwiseProduct(leftCols=left, rightCols=right, outputCols=outs))
        elif len(cols) < 2:
            raise ConfigError(
                [("features.ratios.pairwise_products", "needs at least two columns to multiply")]
            )
    return stages


def step_aggregations(ctx: PlanContext) -> list[Stage]:
    """Per-entity aggregates (``features.aggregations``) learned from the training rows only, kept as a
    lookup table in :class:`~sparkpipe.features.stages.GroupAggregatorModel` and joined at transform
    time; unseen entities get the global aggregate (count: 0)."""
    stages: list[Stage] = []
    for k, ac in enumerate(ctx.cfg.aggregations):
        key = f"features.aggregations[{k}]"
        _check_exists(ctx, key + ".group_cols", ac.group_cols)
        _check_exists(ctx, key + ".agg_cols", ac.agg_cols)
        _check_not_target(ctx, key, ac.group_cols + ac.agg_cols)
        for g in ac.group_cols:
            if base_type(ctx.roles.types[g]) not in KEY_TYPES:
                raise ConfigError(
                    [(key + ".group_cols", f"column {g!r} has type {ctx.roles.types[g]}; group keys must be "
                                           "string, integral or boolean")]
                )  # fmt: skip
        for a in ac.agg_cols:
            if not is_numeric_type(ctx.roles.types[a]) and ctx.roles.types[a] != "boolean":
                raise ConfigError(
                    [(key + ".agg_cols", f"column {a!r} has type {ctx.roles.types[a]}; must be numeric")]
                )
        by = "_".join(ac.group_cols)
        aggs, fns, outs = [], [], []
        for fn in dict.fromkeys(ac.functions):
            for a in ["*"] if fn == "count" else ac.agg_cols:
                name = f"count_by_{by}" if fn == "count" else f"{a}_{fn}_by_{by}"
                aggs.append(a)
                fns.append(fn)
                outs.append(ctx.new_col(name))
                ctx.add_ready(outs[-1], name, name)
        stages.append(
            GroupAggregator(groupCols=list(ac.group_cols), aggCols=aggs, functions=fns, outputCols=outs)
        )
        ctx.consumed.update(ac.group_cols + ac.agg_cols)
    return stages


def _vector_width(ctx: PlanContext, col: str) -> int:
    """Width of vector column ``col``: its ML attribute metadata (libsvm sets it), else the profile."""
    meta = ctx.df.schema[col].metadata.get("ml_attr") or {}
    if meta.get("num_attrs"):
        return int(meta["num_attrs"])
    stats = ctx.profile["columns"].get(col, {})
    lo, hi = stats.get("size_min"), stats.get("size_max")
    if lo is None or hi is None or lo != hi:
        raise ConfigError(
            [
                (
                    "features",
                    f"vector column {col!r} has vectors of sizes {lo}..{hi}; every row needs the same "
                    "size to be a feature (or list it under features.exclude)",
                )
            ]
        )
    return int(hi)


def step_vectors(ctx: PlanContext) -> list[Stage]:
    """ML vector columns (libsvm's ``features``...) as blocks of slots ``col#v0``, ``col#v1``...

    A ``VectorSizeHint`` records each one's width, so the assembler knows it on any input (a request
    included) and a vector of another size is an error, not a silently shifted feature vector.
    """
    from pyspark.ml.feature import VectorSizeHint

    stages: list[Stage] = []
    for c in ctx.roles.vector:
        width = _vector_width(ctx, c)
        stages.append(VectorSizeHint(inputCol=c, size=width, handleInvalid="error"))
        ctx.blocks.append(VectorBlock(c, c, width, "v"))
        ctx.consumed.add(c)
        ctx.dropna_subset.append(c)
    return stages
