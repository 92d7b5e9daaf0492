"""Automated feature engineering: from a frame and the ``features`` config to unfitted Spark stages.

:func:`build_feature_stages` infers column roles (:mod:`sparkpipe.features.roles`), then runs the
*steps* of :data:`STEPS` in order. A step is a function ``(ctx: PlanContext) -> list[stage]``: it reads
the roles and config from the context, appends its stages and records the columns it produced, so a
later step picks them up. Later issues add outliers, ratios, aggregations, text, hashing/target encoding
and selection as further entries of :data:`STEP_BUILDERS` and :data:`DEFAULT_STEPS`.

v1 stage order and column naming (``c`` is a raw column)::

    label        StringIndexerModel.from_labels(target -> "label")   string target (classification)
                 CastToDouble(target -> "label", skipMissing)        boolean target (classification)
    time         TimeFeatures(ts -> ts_hour, ts_day_of_week, ts_month, ts_is_weekend, [..._sin/_cos])
    cast         CastToDouble(c -> c__dbl)                           numeric and boolean columns
    impute       Imputer(mean|median|mode) / ConstantImputer(x -> x__imp)
    indicator    MissingIndicator(c -> c__missing)                    missing_values.add_indicator
    categorical  CategoricalImputer(c -> c__cat)  null -> "__missing__" (or mode / constant)
                 StringIndexer(c__cat -> c__idx, keep, frequencyDesc)
                 OneHotEncoder(c__idx -> c__ohe, keep, dropLast)
    assemble     VectorAssembler(dense slots..., one-hot blocks... -> features | features__raw)
    scale        StandardScaler / MinMaxScaler / MaxAbsScaler(features__raw -> features)

Vector slot order: time parts, numeric and boolean columns (frame order), missing indicators, then the
one-hot blocks (frame order). Feature (vector slot) names: the raw column name for numeric and boolean slots (``monthly_charges``),
the time column names (``signup_ts_hour``), ``c__missing`` for indicators, ``c=<category>`` for one-hot
slots (``plan=basic``) and ``c=__unknown`` for the slot that unseen categories light up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sparkpipe.config import TASK_TYPES, FeaturesConfig, TimeFeaturesConfig
from sparkpipe.errors import ConfigError, UnknownNameError
from sparkpipe.features.roles import ColumnRoles, infer_roles, is_numeric_type
from sparkpipe.features.stages import (
    DEFAULT_TIME_PARTS,
    MISSING_CATEGORY,
    CastToDouble,
    CategoricalImputer,
    ConstantImputer,
    MissingIndicator,
    TimeFeatures,
    time_feature_names,
)

if TYPE_CHECKING:
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

FEATURES_COL = "features"
UNKNOWN_SLOT = "__unknown"
"""Spark's name for the extra one-hot slot of ``StringIndexer(handleInvalid='keep')`` (unseen values)."""

WITH_MEAN_MAX_WIDTH = 1000
"""StandardScaler centres (``withMean=True``) only all-dense vectors up to this width."""

Stage = Any  # a pyspark.ml PipelineStage (Estimator or Transformer)


@dataclass
class OneHotBlock:
    """One categorical column's slice of the feature vector (for naming slots)."""

    column: str
    vector_col: str
    labels: list[str]
    indexer: Stage
    index_in_indexer: int

    def names(self, labels: list[str] | None = None) -> list[str]:
        labels = self.labels if labels is None else labels
        return [f"{self.column}={v}" for v in labels] + [f"{self.column}={UNKNOWN_SLOT}"]


@dataclass
class FeaturePlan:
    """The unfitted feature stages and everything known about them.

    Attributes
    ----------
    stages
        Unfitted feature stages, in order (the model goes after them). They never read the target, so
        a fitted pipeline of them serves rows without a label.
    label_stages
        Already-fitted transformers that derive ``label_col`` from the target (string → index,
        boolean → double). Apply them to training/evaluation data; they are *not* part of ``stages``
        and must not be part of a served model.
    features_col
        The assembled (and scaled) feature vector column; ``None`` for recommendation.
    label_col
        The column the model trains on: ``"label"`` when a string/boolean target is indexed, the
        target itself when numeric, ``None`` for clustering. For recommendation, the rating column.
    label_labels
        For an indexed string target, the labels by index (give them to ``IndexToString`` after the
        model to map predictions back); ``None`` otherwise.
    roles, profile
        Column roles and the one-pass profile (for drift checks).
    input_schema
        ``(name, Spark simple type)`` of each raw input column the stages need, frame order,
        target excluded.
    feature_names
        The name of every slot of ``features_col``, in order. Computed from the build frame's category
        frequencies, which is exact when the stages are fitted on the same frame; call
        :meth:`resolve_feature_names` after fitting to read them from the fitted model.
    """

    stages: list[Stage]
    features_col: str | None
    label_col: str | None
    roles: ColumnRoles
    profile: dict[str, Any]
    input_schema: list[tuple[str, str]]
    feature_names: list[str]
    task: str
    target: str | None = None
    label_labels: list[str] | None = None
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    dropna_subset: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    slots: list[str | OneHotBlock] = field(default_factory=list, repr=False)
    label_stages: list[Stage] = field(default_factory=list)

    def pipeline(self) -> Pipeline:
        """A ``Pipeline`` of the feature stages alone."""
        from pyspark.ml import Pipeline

        return Pipeline(stages=list(self.stages))

    def resolve_feature_names(self, model: PipelineModel) -> list[str]:
        """Read the one-hot labels from a fitted model and update :attr:`feature_names`.

        Parameters
        ----------
        model
            A fitted ``PipelineModel`` containing this plan's stages (possibly followed by a model).
        """
        fitted = {s.uid: s for s in _flatten(model.stages)}
        names: list[str] = []
        for slot in self.slots:
            if isinstance(slot, str):
                names.append(slot)
                continue
            indexer = fitted.get(slot.indexer.uid)
            if indexer is None:
                raise ValueError(f"the fitted model has no StringIndexer {slot.indexer.uid} of this plan")
            names += slot.names(list(indexer.labelsArray[slot.index_in_indexer]))
        self.feature_names = names
        return names


def _flatten(stages: list[Any]) -> list[Any]:
    out: list[Any] = []
    for s in stages:
        out.append(s)
        if hasattr(s, "stages") and isinstance(s.stages, list):
            out += _flatten(s.stages)
    return out


@dataclass
class PlanContext:
    """State shared by the step builders while a plan is built.

    Attributes
    ----------
    pending
        ``(column, feature name)`` of double columns that still need imputation.
    ready
        ``(column, feature name)`` of double columns ready to assemble.
    blocks
        One-hot vector blocks to assemble after the dense slots.
    consumed
        Raw input columns some stage reads.
    """

    df: DataFrame
    cfg: FeaturesConfig
    roles: ColumnRoles
    profile: dict[str, Any]
    task: str
    nonnegative: bool = False
    stages: list[Stage] = field(default_factory=list)
    pending: list[tuple[str, str]] = field(default_factory=list)
    ready: list[tuple[str, str]] = field(default_factory=list)
    blocks: list[OneHotBlock] = field(default_factory=list)
    consumed: set[str] = field(default_factory=set)
    taken: set[str] = field(default_factory=set)
    features_col: str = FEATURES_COL
    dropna_subset: list[str] = field(default_factory=list)

    def new_col(self, name: str) -> str:
        """Reserve a column name, suffixing ``__2``, ``__3``... on a clash with an existing column."""
        candidate, i = name, 1
        while candidate in self.taken:
            i += 1
            candidate = f"{name}__{i}"
        self.taken.add(candidate)
        return candidate

    @property
    def time_cfg(self) -> TimeFeaturesConfig:
        tf = self.cfg.time_features
        return tf if isinstance(tf, TimeFeaturesConfig) else TimeFeaturesConfig(enabled=bool(tf))


StepBuilder = Callable[[PlanContext], list[Stage]]


# ------------------------------------------------------------------------------------------- steps
def step_time_features(ctx: PlanContext) -> list[Stage]:
    """Calendar parts of timestamp columns (``features.time_features``)."""
    tcfg = ctx.time_cfg
    cols = ctx.roles.timestamp
    if not cols:
        return []
    if not tcfg.enabled:
        log.info("time_features disabled: timestamp columns %s are not used", cols)
        return []
    if tcfg.elapsed:
        log.warning("features.time_features.elapsed is not implemented in feature engineering v1; ignored")
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
    ctx.ready += list(zip(outs, [f"{c}__missing" for c in cols], strict=True))
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


def _category_counts(df: DataFrame, cols: list[str]) -> list[dict[str | None, int]]:
    """Value counts (``None`` = null) of each column as strings, in one grouped job."""
    from pyspark.sql import functions as F

    if not cols:
        return []
    pairs = F.array(
        *[
            F.struct(F.lit(i).alias("k"), F.col(f"`{c}`").cast("string").alias("v"))
            for i, c in enumerate(cols)
        ]
    )
    rows = df.select(F.explode(pairs).alias("p")).groupBy("p.k", "p.v").count().collect()
    out: list[dict[str | None, int]] = [{} for _ in cols]
    for r in rows:
        out[r["k"]][r["v"]] = int(r["count"])
    return out


def _indexer_labels(counts: dict[str | None, int], strategy: str, fill: str) -> list[str]:
    """The labels ``StringIndexer(frequencyDesc)`` will learn after :class:`CategoricalImputer`."""
    counts = dict(counts)
    nulls = counts.pop(None, 0)
    if nulls:
        if strategy == "mode" and counts:
            fill = min(counts, key=lambda v: (-counts[v], v))
        counts[fill] = counts.get(fill, 0) + nulls
    return sorted(counts, key=lambda v: (-counts[v], v))


def step_categorical(ctx: PlanContext) -> list[Stage]:
    """Null handling, indexing and one-hot encoding of categorical columns."""
    from pyspark.ml.feature import OneHotEncoder, StringIndexer

    cols = [c for c in ctx.roles.types if c in set(ctx.roles.categorical)]
    if not cols:
        return []
    mv, enc = ctx.cfg.missing_values, ctx.cfg.categorical_encoding
    strategy, fill = "constant", MISSING_CATEGORY
    if mv.categorical_strategy == "mode":
        strategy = "mode"
    elif mv.categorical_strategy == "constant" and isinstance(mv.fill_value, str):
        fill = mv.fill_value
    if enc.rare_threshold:
        log.warning(
            "features.categorical_encoding.rare_threshold is not implemented in feature engineering v1; ignored"
        )
    filled = [ctx.new_col(f"{c}__cat") for c in cols]
    indexed = [ctx.new_col(f"{c}__idx") for c in cols]
    imputer = CategoricalImputer(inputCols=cols, outputCols=filled, strategy=strategy, fillValue=fill)
    indexer = StringIndexer(
        inputCols=filled, outputCols=indexed, handleInvalid="keep", stringOrderType="frequencyDesc"
    )
    stats = ctx.profile["columns"]
    onehot_cols: list[int] = []
    for i, c in enumerate(cols):
        card = stats[c].get("approx_distinct", 0)
        if card > enc.max_onehot_cardinality and enc.high_cardinality == "index":
            continue
        if card > enc.max_onehot_cardinality:
            log.warning(
                "categorical column %r has ~%d values (> max_onehot_cardinality %d); high_cardinality=%r is not in "
                "feature engineering v1, so it is one-hot encoded",
                c, card, enc.max_onehot_cardinality, enc.high_cardinality,
            )  # fmt: skip
        onehot_cols.append(i)
    counts = _category_counts(ctx.df, [cols[i] for i in onehot_cols])
    stages: list[Stage] = [imputer, indexer]
    oh_in = [indexed[i] for i in onehot_cols]
    oh_out = [ctx.new_col(f"{cols[i]}__ohe") for i in onehot_cols]
    for i, c in enumerate(cols):  # high-cardinality 'index' columns: the index itself is the feature
        if i not in onehot_cols:
            ctx.ready.append((indexed[i], c))
    for j, i in enumerate(onehot_cols):
        labels = _indexer_labels(counts[j], strategy, fill)
        ctx.blocks.append(OneHotBlock(cols[i], oh_out[j], labels, indexer, i))
    if oh_in:
        stages.append(OneHotEncoder(inputCols=oh_in, outputCols=oh_out, handleInvalid="keep", dropLast=True))
    ctx.consumed.update(cols)
    return stages


def _assembled_col(ctx: PlanContext) -> str:
    scaling = ctx.cfg.scaling
    return ctx.new_col(f"{FEATURES_COL}__raw") if (scaling != "none" or ctx.nonnegative) else ctx.features_col


def step_assemble_and_scale(ctx: PlanContext) -> list[Stage]:
    """VectorAssembler over dense slots then one-hot blocks, then the scaler (``features.scaling``).

    The assembler uses ``handleInvalid='error'`` when imputation runs: after it no null or NaN can
    remain, so one would be a bug and must fail loudly rather than score NaN. With strategy
    ``none``/``drop`` it uses ``'keep'`` (NaN passes through; the user opted out of imputation).

    Scaling: ``standard`` is ``StandardScaler(withStd=True)`` with ``withMean=True`` only when the
    vector is all dense slots (no one-hot block) and at most :data:`WITH_MEAN_MAX_WIDTH` wide:
    centring densifies sparse vectors, and the models that care (linear, SVC) standardise internally
    anyway. ``nonnegative`` (Naive Bayes) forces ``MinMaxScaler`` (values in [0, 1] on the training range).
    """
    from pyspark.ml.feature import MaxAbsScaler, MinMaxScaler, StandardScaler, VectorAssembler

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
    stages: list[Stage] = [
        VectorAssembler(inputCols=inputs, outputCol=raw, handleInvalid="error" if imputing else "keep")
    ]
    scaling = ctx.cfg.scaling
    if ctx.nonnegative and scaling != "minmax":
        log.info("nonnegative features requested: MinMaxScaler instead of scaling=%r", scaling)
        scaling = "minmax"
    if scaling == "standard":
        width = len(ctx.ready)
        with_mean = not ctx.blocks and width <= WITH_MEAN_MAX_WIDTH
        stages.append(
            StandardScaler(inputCol=raw, outputCol=ctx.features_col, withStd=True, withMean=with_mean)
        )
    elif scaling == "minmax":
        stages.append(MinMaxScaler(inputCol=raw, outputCol=ctx.features_col))
    elif scaling == "maxabs":
        stages.append(MaxAbsScaler(inputCol=raw, outputCol=ctx.features_col))
    return stages


STEP_BUILDERS: dict[str, StepBuilder] = {
    "time_features": step_time_features,
    "cast_double": step_cast_double,
    "missing_indicator": step_missing_indicator,
    "impute": step_impute,
    "categorical": step_categorical,
    "assemble": step_assemble_and_scale,
}
"""Step name -> builder. Later issues add outliers, ratios, aggregations, text, encoding, selection."""

DEFAULT_STEPS: tuple[str, ...] = (
    "time_features",
    "cast_double",
    "impute",
    "missing_indicator",
    "categorical",
    "assemble",
)
"""The v1 step order."""


def _warn_unimplemented(cfg: FeaturesConfig, roles: ColumnRoles) -> None:
    outliers = cfg.outliers
    if not isinstance(outliers, bool) and outliers.method != "none":
        log.warning("features.outliers is not implemented in feature engineering v1; ignored")
    for key in ("aggregations", "ratios", "selection"):
        if getattr(cfg, key):
            log.warning("features.%s is not implemented in feature engineering v1; ignored", key)
    if roles.text:
        log.warning("text columns %s are recognised but not used by feature engineering v1", roles.text)


# ------------------------------------------------------------------------------------------- entry
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
    if task not in TASK_TYPES:
        raise UnknownNameError("task", task, TASK_TYPES)
    cfg = features_cfg or FeaturesConfig()
    names = list(steps) if steps is not None else list(DEFAULT_STEPS)
    for name in names:
        if name not in STEP_BUILDERS:
            raise UnknownNameError("feature step", name, list(STEP_BUILDERS))
    roles, profile = infer_roles(df, cfg, label_col, int_categorical_max=int_categorical_max, profile=profile)
    if task == "recommendation":
        return _recommendation_plan(df, cfg, roles, profile, label_col)
    _warn_unimplemented(cfg, roles)
    taken = set(df.columns)
    label_stages, label, label_labels = _label_stage(df, roles, task, taken)
    ctx = PlanContext(
        df=df, cfg=cfg, roles=roles, profile=profile, task=task, nonnegative=nonnegative, taken=taken
    )
    ctx.features_col = ctx.new_col(FEATURES_COL)
    for name in names:
        ctx.stages += STEP_BUILDERS[name](ctx)
    slots: list[str | OneHotBlock] = [n for _, n in ctx.ready]
    slots += ctx.blocks
    feature_names: list[str] = []
    for slot in slots:
        feature_names += [slot] if isinstance(slot, str) else slot.names()
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
        steps=names,
        slots=slots,
    )
