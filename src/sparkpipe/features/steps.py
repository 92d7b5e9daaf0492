"""The feature steps of :data:`sparkpipe.features.auto.STEP_BUILDERS`: each turns the columns' roles and the
``features`` config into Spark stages. Here: time parts, casts, missing indicators, imputation, text,
vectors, assembly, selection and scaling; the categorical step is in :mod:`~sparkpipe.features.categorical`,
the derived features (elapsed time, outliers, ratios, group aggregations) in
:mod:`~sparkpipe.features.derived`.
"""

from __future__ import annotations

import logging

from sparkpipe.config import TextConfig
from sparkpipe.errors import ConfigError
from sparkpipe.features.plan import FEATURES_COL, WITH_MEAN_MAX_WIDTH, PlanContext, Stage, VectorBlock
from sparkpipe.features.stages import (
    DEFAULT_TIME_PARTS,
    CastToDouble,
    CategoricalImputer,
    ClipVector,
    ConstantImputer,
    ImportanceSelector,
    MissingIndicator,
    TimeFeatures,
    time_feature_names,
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
