"""Steps that derive numeric features from the inputs: elapsed time between timestamps, outlier
handling, ratios and pairwise products, per-entity group aggregates. Each checks that the columns it
names exist and are not the target (a feature computed from the label leaks it).
"""

from __future__ import annotations

from sparkpipe.core import KEY_TYPES, TIME_TYPES, base_type
from sparkpipe.errors import ConfigError
from sparkpipe.features.plan import PlanContext, Stage
from sparkpipe.features.roles import is_numeric_type
from sparkpipe.features.stages import ElapsedTime, GroupAggregator, OutlierHandler, PairwiseProduct, SafeRatio


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
