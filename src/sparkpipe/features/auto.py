"""Automated feature engineering: from a frame and the ``features`` config to unfitted Spark stages.

:func:`build_feature_stages` infers column roles (:mod:`sparkpipe.features.roles`), then runs the
*steps* of :data:`DEFAULT_STEPS` in order. A step is a function ``(ctx: PlanContext) -> list[stage]``
registered in :data:`STEP_BUILDERS`: it reads the roles and config from the context, appends its stages
and records the columns it produced, so a later step picks them up. :data:`V1_STEPS` is the v1 order.

Stage order and column naming (``c`` is a raw column; custom stages live in
:mod:`sparkpipe.features.stages`, everything else is a Spark built-in)::

    label        StringIndexerModel / CastToDouble(target -> "label")   plan.label_stages, never served
    time         TimeFeatures(ts -> ts_hour, ts_day_of_week, ts_month, ts_is_weekend, [..._sin/_cos])
    elapsed      ElapsedTime(start, end -> name)                       time_features.elapsed (leak-checked)
    cast         CastToDouble(c -> c__dbl)                             numeric and boolean columns
    outliers     OutlierHandler(c__dbl -> c__clip | c__outlier)        zscore/iqr bounds learned at fit
    ratios       SafeRatio(a, b -> a_per_b), PairwiseProduct(a, b -> a_x_b)
    aggregations GroupAggregator(keys, x -> x_mean_by_key, count_by_key, ...)  lookup table in the model
    impute       Imputer(mean|median|mode) / ConstantImputer(x -> x__imp)
    indicator    MissingIndicator(c -> c__missing)                     missing_values.add_indicator
    categorical  CategoricalImputer(c -> c__cat), RareCategoryGrouper(c__cat -> c__grp, "__rare__"),
                 StringIndexer(-> c__idx) + OneHotEncoder(-> c__ohe)   cardinality <= max_onehot_cardinality
                 FeatureHasher(-> c__hash) | TargetEncoder(c__idx -> c__te) | the index   high cardinality
    text         CategoricalImputer(null -> ""), RegexTokenizer, StopWordsRemover, HashingTF, IDF
    assemble     VectorAssembler(dense slots..., vector blocks... -> features__raw)
    selection    VarianceThresholdSelector, UnivariateFeatureSelector, ImportanceSelector (-> VectorSlicer)
    scale        StandardScaler (withMean only when all-dense) / MinMaxScaler / MaxAbsScaler -> features

Vector slot order: dense slots (aggregates, time parts, elapsed, numeric and boolean columns, ratios,
products, outlier flags, missing indicators, target encodings) then the blocks (one-hot, hashed
categories, text). Slot names: the raw column name for numeric slots, ``c=<category>`` for one-hot
(``c=__unknown`` for unseen values), ``c#h<i>`` for hashed categories, ``c#tf<i>`` for text terms;
:attr:`FeaturePlan.feature_sources` maps each slot back to its input column (for explanations).
Selection keeps a subset of slots; :meth:`FeaturePlan.resolve_feature_names` reads which after fitting.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sparkpipe.config import TASK_TYPES, FeaturesConfig
from sparkpipe.errors import ConfigError, UnknownNameError
from sparkpipe.features.categorical import step_categorical
from sparkpipe.features.derived import step_aggregations, step_elapsed, step_outliers, step_ratios
from sparkpipe.features.plan import (
    FEATURES_COL,
    FeaturePlan,
    OneHotBlock,
    PlanContext,
    Stage,
    StepBuilder,
    VectorBlock,
)
from sparkpipe.features.roles import ColumnRoles, infer_roles, is_numeric_type
from sparkpipe.features.stages import (
    CastToDouble,
)
from sparkpipe.features.steps import (
    step_assemble,
    step_assemble_and_scale,
    step_cast_double,
    step_impute,
    step_missing_indicator,
    step_scale,
    step_selection,
    step_text,
    step_time_features,
    step_vectors,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


STEP_BUILDERS: dict[str, StepBuilder] = {
    "time_features": step_time_features,
    "elapsed": step_elapsed,
    "cast_double": step_cast_double,
    "outliers": step_outliers,
    "ratios": step_ratios,
    "aggregations": step_aggregations,
    "missing_indicator": step_missing_indicator,
    "impute": step_impute,
    "categorical": step_categorical,
    "text": step_text,
    "vectors": step_vectors,
    "assemble": step_assemble,
    "selection": step_selection,
    "scale": step_scale,
    "assemble_and_scale": step_assemble_and_scale,
}
"""Step name -> builder."""


DEFAULT_STEPS: tuple[str, ...] = (
    "time_features",
    "elapsed",
    "cast_double",
    "outliers",
    "ratios",
    "aggregations",
    "impute",
    "missing_indicator",
    "categorical",
    "text",
    "vectors",
    "assemble",
    "selection",
    "scale",
)
"""The full step order."""


V1_STEPS: tuple[str, ...] = (
    "time_features",
    "cast_double",
    "impute",
    "missing_indicator",
    "categorical",
    "assemble",
    "scale",
)
"""The feature engineering v1 step order (for comparisons): config sections of later steps are unused."""


def _label_stage(
    df: DataFrame, roles: ColumnRoles, task: str, taken: set[str]
) -> tuple[list[Stage], str | None, list[str] | None]:
    from pyspark.ml.feature import StringIndexerModel
    from pyspark.sql import functions as F

    target = roles.target
    if target is None:
        if task in ("classification", "regression"):
            raise ConfigError(
                [("features.target", f"task {task!r} needs a target column; set features.target")]
            )
        return [], None, None
    if task == "clustering":
        return [], None, None
    ttype = roles.types[target]
    if is_numeric_type(ttype):
        return [], target, None
    label = "label" if "label" not in taken else f"{target}__label"
    taken.add(label)
    if task == "regression":
        raise ConfigError(
            [("features.target", f"regression needs a numeric target; {target!r} has type {ttype}")]
        )
    if ttype == "boolean":
        return (
            [CastToDouble(inputCols=[target], outputCols=[label], skipMissing=True)],
            label,
            ["false", "true"],
        )
    if ttype != "string":
        raise ConfigError(
            [("features.target", f"target {target!r} has type {ttype}; use a string, boolean or number")]
        )
    rows = (
        df.where(F.col(f"`{target}`").isNotNull()).groupBy(F.col(f"`{target}`").alias("v")).count().collect()
    )
    labels = [r["v"] for r in sorted(rows, key=lambda r: (-r["count"], r["v"]))]
    if len(labels) < 2:
        raise ConfigError(
            [
                (
                    "features.target",
                    f"target {target!r} has {len(labels)} distinct value(s); classification needs 2+",
                )
            ]
        )
    indexer = StringIndexerModel.from_labels(labels, inputCol=target, outputCol=label, handleInvalid="error")
    return [indexer], label, labels


def _recommendation_plan(
    df: DataFrame, cfg: FeaturesConfig, roles: ColumnRoles, profile: dict[str, Any], label_col: str | None
) -> FeaturePlan:
    from pyspark.ml.feature import StringIndexer

    rating = roles.target or label_col
    missing = [
        k for k, v in (("features.user_col", cfg.user_col), ("features.item_col", cfg.item_col)) if v is None
    ]
    if missing:
        raise ConfigError(
            [
                (
                    k,
                    "recommendation (ALS) needs user and item columns; set features.user_col and features.item_col",
                )
                for k in missing
            ]
        )
    assert cfg.user_col is not None and cfg.item_col is not None
    for key, col in (("features.user_col", cfg.user_col), ("features.item_col", cfg.item_col)):
        if col not in roles.types:
            raise ConfigError(
                [(key, f"column {col!r} is not in the data; columns are: {', '.join(roles.types)}")]
            )
    stages: list[Stage] = []
    user, item = cfg.user_col, cfg.item_col
    to_index = [c for c in (user, item) if not is_numeric_type(roles.types[c])]
    if to_index:  # ALS needs integer ids: index string ids (unseen -> an id ALS has no factors for)
        outs = [f"{c}__idx" for c in to_index]
        stages.append(
            StringIndexer(
                inputCols=to_index, outputCols=outs, handleInvalid="keep", stringOrderType="frequencyDesc"
            )
        )
        user = outs[to_index.index(user)] if user in to_index else user
        item = outs[to_index.index(item)] if item in to_index else item
    schema = [(c, roles.types[c]) for c in roles.types if c in (cfg.user_col, cfg.item_col)]
    return FeaturePlan(
        stages=stages,
        features_col=None,
        label_col=rating,
        roles=roles,
        profile=profile,
        input_schema=schema,
        feature_names=[],
        task="recommendation",
        target=roles.target,
        user_col=user,
        item_col=item,
        rating_col=rating,
    )


def _step_names(task: str, steps: tuple[str, ...] | list[str] | None) -> list[str]:
    """The steps to run (default :data:`DEFAULT_STEPS`), each checked against the registry."""
    if task not in TASK_TYPES:
        raise UnknownNameError("task", task, TASK_TYPES)
    names = list(steps) if steps is not None else list(DEFAULT_STEPS)
    for name in names:
        if name not in STEP_BUILDERS:
            raise UnknownNameError("feature step", name, list(STEP_BUILDERS))
    return names


def _slots(ctx: PlanContext) -> tuple[list[str | OneHotBlock | VectorBlock], list[str], list[str]]:
    """The feature vector's slots in order (plain columns, then one-hot and vector blocks), the name of
    every slot and the source column each comes from."""
    slots: list[str | OneHotBlock | VectorBlock] = [n for _, n in ctx.ready]
    slots += ctx.blocks
    feature_names: list[str] = []
    feature_sources: list[str] = []
    for slot in slots:
        block = [slot] if isinstance(slot, str) else slot.names()
        feature_names += block
        feature_sources += (
            [ctx.sources.get(slot, slot)] if isinstance(slot, str) else [slot.column] * len(block)
        )
    return slots, feature_names, feature_sources


def build_feature_stages(
    df: DataFrame,
    features_cfg: FeaturesConfig | None,
    task: str,
    label_col: str | None = None,
    *,
    nonnegative: bool = False,
    steps: tuple[str, ...] | list[str] | None = None,
    int_categorical_max: int | None = None,
    profile: dict[str, Any] | None = None,
    seed: int = 42,
) -> FeaturePlan:
    """Infer roles and build the unfitted feature stages for a task.

    Parameters
    ----------
    df
        The frame the stages will be fitted on (training data, target included).
    features_cfg
        The ``features`` config section (``None``: defaults).
    task
        ``classification``, ``regression``, ``clustering`` or ``recommendation``.
    label_col
        The target column when ``features.target`` is not set.
    nonnegative
        Produce non-negative features (Naive Bayes): ``MinMaxScaler`` replaces the configured scaler.
    steps
        Step names to run, in order (default :data:`DEFAULT_STEPS`).
    int_categorical_max
        Integral columns with at most this many distinct values become categorical (off by default).
    profile
        A profile of ``df`` (:func:`~sparkpipe.features.roles.profile_frame`) to reuse instead of
        running the profiling aggregation again.
    seed
        Seed of the quick forest of ``selection.top_k_importance``.

    Returns
    -------
    FeaturePlan
        Stages, feature/label columns, roles, profile, input schema and feature names.

    Raises
    ------
    ConfigError
        A configured column is missing, a role cannot apply to a column's type, or no feature is left.
    UnknownNameError
        An unknown task or step name.
    """
    names = _step_names(task, steps)
    cfg = features_cfg or FeaturesConfig()
    roles, profile = infer_roles(df, cfg, label_col, int_categorical_max=int_categorical_max, profile=profile)
    if task == "recommendation":
        return _recommendation_plan(df, cfg, roles, profile, label_col)
    taken = set(df.columns)
    label_stages, label, label_labels = _label_stage(df, roles, task, taken)
    ctx = PlanContext(
        df=df, cfg=cfg, roles=roles, profile=profile, task=task, nonnegative=nonnegative, taken=taken,
        label_col=label, seed=seed,
    )  # fmt: skip
    ctx.features_col = ctx.new_col(FEATURES_COL)
    for name in names:
        ctx.stages += STEP_BUILDERS[name](ctx)
    if ctx.vector_col is not None and ctx.vector_col != ctx.features_col:
        ctx.stages[-1]._set(outputCol=ctx.features_col)  # no scaler: the last vector stage writes features
    return _finished_plan(ctx, names, label_stages, label_labels)


def _finished_plan(
    ctx: PlanContext, names: list[str], label_stages: list[Stage], label_labels: list[str] | None
) -> FeaturePlan:
    """The :class:`FeaturePlan` of a context every step has run on."""
    roles, profile, cfg, task, label = ctx.roles, ctx.profile, ctx.cfg, ctx.task, ctx.label_col
    slots, feature_names, feature_sources = _slots(ctx)
    selectors = [ctx.features_col if c == ctx.vector_col else c for c in ctx.selectors]
    consumed = ctx.consumed
    input_schema = [(c, t) for c, t in roles.types.items() if c in consumed and c != roles.target]
    log.info(
        "feature plan: %d stages, %d input columns, %d feature slots (%s)",
        len(ctx.stages), len(input_schema), len(feature_names), ", ".join(type(s).__name__ for s in ctx.stages),
    )  # fmt: skip
    return FeaturePlan(
        stages=ctx.stages,
        features_col=ctx.features_col,
        label_col=label,
        label_labels=label_labels,
        label_stages=label_stages,
        roles=roles,
        profile=profile,
        input_schema=input_schema,
        feature_names=feature_names,
        task=task,
        target=roles.target,
        dropna_subset=list(dict.fromkeys(ctx.dropna_subset)) if cfg.missing_values.strategy == "drop" else [],
        nan_inputs=list(dict.fromkeys(ctx.dropna_subset)),
        steps=names,
        slots=slots,
        feature_sources=feature_sources,
        selectors=selectors,
        needs_label=ctx.needs_label,
        slot_sources=dict(ctx.sources),
    )
