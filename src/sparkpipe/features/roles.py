"""Infer the role of every input column from its Spark type and light statistics.

One aggregation pass over the data computes, per column, the non-null count, an approximate distinct
count (``approx_count_distinct``) and type-specific summaries (min/max/mean for numbers and times,
average length and share of values with a space for strings). Nothing but that one row of aggregates is
collected. From the schema and those statistics every column gets exactly one role:

==============  =================================================================================
role            rule (explicit ``features.*`` lists in the config always win over inference)
==============  =================================================================================
target          ``features.target`` (or the ``target`` argument)
excluded        ``features.exclude``, or not in ``features.columns`` when that list is given
constant        no non-null value, or a single distinct value (a string column with one value and
                some nulls is kept: value vs missing is information)
id_like         name looks like an identifier (``id``, ``*_id``, ``*Id``, ``uuid``, ``guid``,
                ``*_key``, ...) and the values are near-unique (>= 90 % approximate distinct); only string
                and integral columns. Dropped when ``features.drop_id_like`` (the default).
boolean         Spark ``boolean``
timestamp       Spark ``timestamp``, ``timestamp_ntz`` or ``date``
numeric         any Spark numeric type (integral columns with at most ``int_categorical_max``
                distinct values become categorical when that argument is given)
text            strings where most values contain a space and values are long (average length
                >= 30) or long-ish (>= 12) and mostly distinct with more distinct values than
                ``categorical_encoding.max_onehot_cardinality``
categorical     every other string column
vector          Spark ML ``vector`` columns (e.g. libsvm's ``features``): assembled as they are
ignored         any other type (arrays, maps, structs, binary)
==============  =================================================================================

The statistics double as a *profile* (type, null ratio, approximate cardinality, min/max/mean) kept
with the run for later drift checks.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sparkpipe.core import FRACTIONAL_TYPES, INTEGRAL_TYPES, TIME_TYPES
from sparkpipe.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType

    from sparkpipe.config import FeaturesConfig

log = logging.getLogger(__name__)

ROLE_NAMES: tuple[str, ...] = (
    "numeric",
    "categorical",
    "boolean",
    "timestamp",
    "text",
    "vector",
    "id_like",
    "constant",
    "excluded",
    "ignored",
)
"""Every role a non-target column can get (the target is held separately)."""

ID_NAME_RE = re.compile(
    r"(?i)^(id|uuid|guid|key|pk|index|row_?num(ber)?)$|(_id|_uuid|_guid|_key|_pk)$|[a-z]Id$|^id_"
)
"""Column names that look like identifiers."""

ID_UNIQUE_RATIO = 0.9
"""An id-like name needs at least this share of distinct values among non-null values (the count is
``approx_count_distinct``, about 5 % relative error, hence the margin)."""

TEXT_SPACE_SHARE = 0.5
TEXT_LONG_AVG_LEN = 30.0
TEXT_MIN_AVG_LEN = 12.0
TEXT_DISTINCT_RATIO = 0.5


def simple_type(dtype: DataType) -> str:
    """Spark's simple type name (``int``, ``bigint``, ``double``, ``string``, ``decimal(10,2)`` ...)."""
    return dtype.simpleString()


def _kind(type_name: str) -> str:
    """Coarse kind of a Spark simple type name: integral, fractional, decimal, boolean, string, time, other."""
    if type_name in INTEGRAL_TYPES:
        return "integral"
    if type_name in FRACTIONAL_TYPES:
        return "fractional"
    if type_name.startswith("decimal"):
        return "decimal"
    if type_name == "boolean":
        return "boolean"
    if type_name.startswith(("string", "varchar", "char")):
        return "string"
    if type_name in TIME_TYPES:
        return "time"
    if type_name == "vector":
        return "vector"
    return "other"


def is_numeric_type(type_name: str) -> bool:
    """Whether a Spark simple type name is a number type."""
    return _kind(type_name) in ("integral", "fractional", "decimal")


@dataclass
class ColumnRoles:
    """The role of every column of the input frame.

    Attributes
    ----------
    target
        The target (label) column, or ``None`` (clustering, or not configured).
    numeric, categorical, boolean, timestamp, text
        Columns used as features of that kind, in frame order.
    id_like, constant
        Columns recognised as identifiers or constants; they are not consumed.
    excluded
        Columns the config excluded (``features.exclude`` / not in ``features.columns``).
    vector
        Spark ML vector columns, used as features slot by slot.
    ignored
        Columns of types feature engineering cannot use (arrays, maps, structs, binary).
    types
        Column name -> Spark simple type name, for every column of the frame.
    reasons
        Column name -> short human explanation of its role (for logs and reports).
    """

    target: str | None = None
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    boolean: list[str] = field(default_factory=list)
    timestamp: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    vector: list[str] = field(default_factory=list)
    id_like: list[str] = field(default_factory=list)
    constant: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def role_of(self, column: str) -> str:
        """The role name of ``column`` (``"target"`` for the target)."""
        if column == self.target:
            return "target"
        for name in ROLE_NAMES:
            if column in getattr(self, name):
                return name
        raise KeyError(f"column {column!r} has no role; known columns: {', '.join(self.types)}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view: ``{"target": ..., "numeric": [...], ...}``."""
        out: dict[str, Any] = {"target": self.target}
        for name in ROLE_NAMES:
            out[name] = list(getattr(self, name))
        return out

    @property
    def feature_columns(self) -> list[str]:
        """Columns the feature stages consume (numeric, categorical, boolean, timestamp, text), frame order."""
        used = (
            set(self.numeric)
            | set(self.categorical)
            | set(self.boolean)
            | set(self.timestamp)
            | set(self.text)
        )
        return [c for c in self.types if c in used]


# --------------------------------------------------------------------------------------- profiling
def _json_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if hasattr(v, "__float__") and not isinstance(v, bool | int):  # Decimal
        return float(v)
    return v


PROFILE_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
"""Approximate quantiles of numeric columns kept in the profile (``percentile_approx``)."""

QUANTILE_ACCURACY = 1000
"""``percentile_approx`` accuracy of the profile (relative error about 1 / accuracy)."""

TOP_VALUES = 20
"""Most frequent values of a string column kept in the profile (``top_values``), the drift reference of
categorical columns."""

TOP_VALUE_CHARS = 100
"""String values are cut to this many characters before counting (bounds what a text column sends)."""


def _quantile_key(q: float) -> str:
    return f"p{round(q * 100):02d}"


def profile_exprs(
    df: DataFrame, columns: list[str] | None = None
) -> tuple[list[Column], Callable[[dict[str, Any]], dict[str, Any]]]:
    """The aggregate expressions of :func:`profile_frame` and the function that turns their values
    (a row as a dict) into the profile."""
    from pyspark.sql import functions as F

    columns = list(df.columns) if columns is None else columns
    types = {f.name: simple_type(f.dataType) for f in df.schema.fields}
    exprs = [F.count(F.lit(1)).alias("__rows")]
    plan: dict[str, list[str]] = {}
    for i, name in enumerate(columns):
        col = F.col(f"`{name}`")
        kind = _kind(types[name])
        stats = ["non_null"]
        exprs.append(F.count(col).alias(f"c{i}_non_null"))
        if kind not in ("other", "vector"):
            exprs.append(F.approx_count_distinct(col).alias(f"c{i}_approx_distinct"))
            stats.append("approx_distinct")
        if kind in ("integral", "fractional", "decimal"):
            num = col.cast("double")
            finite = F.when(~F.isnan(num), num)
            exprs += [
                F.min(num).alias(f"c{i}_min"),
                F.max(num).alias(f"c{i}_max"),
                F.avg(num).alias(f"c{i}_mean"),
                F.stddev_samp(finite).alias(f"c{i}_std"),
                F.percentile_approx(finite, list(PROFILE_QUANTILES), QUANTILE_ACCURACY).alias(
                    f"c{i}_quantiles"
                ),
            ]
            stats += ["min", "max", "mean", "std", "quantiles"]
        elif kind == "boolean":
            exprs.append(F.avg(col.cast("double")).alias(f"c{i}_mean"))
            stats.append("mean")
        elif kind == "time":
            exprs += [F.min(col).alias(f"c{i}_min"), F.max(col).alias(f"c{i}_max")]
            stats += ["min", "max"]
        elif kind == "vector":  # width of the vectors (the slots they add)
            from pyspark.ml.functions import vector_to_array

            size = F.when(col.isNotNull(), F.size(vector_to_array(col)))  # size(null) is -1 without ANSI
            exprs += [F.min(size).alias(f"c{i}_size_min"), F.max(size).alias(f"c{i}_size_max")]
            stats += ["size_min", "size_max"]
        elif kind == "string":
            exprs += [
                F.avg(F.length(col)).alias(f"c{i}_avg_length"),
                F.avg((F.instr(col, " ") > 0).cast("double")).alias(f"c{i}_space_share"),
            ]
            stats += ["avg_length", "space_share"]
        if kind == "fractional":
            exprs.append(F.sum(F.isnan(col).cast("long")).alias(f"c{i}_nan_count"))
            stats.append("nan_count")
        plan[name] = stats

    def finish(row: dict[str, Any]) -> dict[str, Any]:
        n = int(row["__rows"])
        out: dict[str, Any] = {"row_count": n, "columns": {}}
        for i, name in enumerate(columns):
            stats = {s: None if s == "quantiles" else _json_value(row[f"c{i}_{s}"]) for s in plan[name]}
            non_null = int(stats.pop("non_null") or 0)
            entry: dict[str, Any] = {"type": types[name], "null_count": n - non_null}
            entry["null_ratio"] = (n - non_null) / n if n else 0.0
            for key, value in stats.items():
                if key == "quantiles":
                    qs = row[f"c{i}_quantiles"]
                    entry[key] = {
                        _quantile_key(q): (None if qs is None else _json_value(v))
                        for q, v in zip(PROFILE_QUANTILES, qs or [None] * len(PROFILE_QUANTILES), strict=True)
                    }
                else:
                    entry[key] = int(value or 0) if key in ("approx_distinct", "nan_count") else value
            out["columns"][name] = entry
        log.debug("profiled %d columns over %d rows", len(columns), n)
        return out

    return exprs, finish


def top_values(counts: dict[str | None, int]) -> dict[str, Any]:
    """``top_values`` (share of the non-null values for the :data:`TOP_VALUES` most frequent) and
    ``other_share`` (the share of every other value) from a column's value counts (``None``: null).

    The feature plan adds them to the profile of each categorical column from the exact counts it
    takes anyway (:func:`sparkpipe.features.stages.category_counts`), so the drift reference costs no
    pass and nothing on the driver grows with the rows (a list of the values would)."""
    counted = {str(v)[:TOP_VALUE_CHARS]: c for v, c in counts.items() if v is not None}
    n = sum(counted.values())
    top = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_VALUES]
    shares = {v: c / n for v, c in top} if n else {}
    return {"top_values": shares, "other_share": max(0.0, 1.0 - sum(shares.values())) if n else 0.0}


def profile_frame(df: DataFrame, columns: list[str] | None = None) -> dict[str, Any]:
    """Profile columns in a single aggregation pass.

    Parameters
    ----------
    df
        The input frame.
    columns
        Columns to profile (default: all).

    Returns
    -------
    dict
        ``{"row_count": n, "columns": {name: {"type", "null_count", "null_ratio", "approx_distinct",
        "min", "max", "mean", ...}}}``; numbers add ``std`` and ``quantiles`` (``{"p01": ..., "p50":
        ..., "p99": ...}`` from ``percentile_approx`` in the same pass, NaN ignored), strings add
        ``avg_length`` and ``space_share`` (the feature plan adds ``top_values`` and ``other_share``
        to categorical columns, see :func:`top_values`), floating columns add ``nan_count``. Every value is
        JSON-friendly (timestamps as ISO strings).
    """
    exprs, finish = profile_exprs(df, columns)
    return finish(df.agg(*exprs).collect()[0].asDict())


# ---------------------------------------------------------------------------------------- inference
def _looks_like_text(stats: dict[str, Any], non_null: int, max_onehot: int) -> bool:
    avg_len = stats.get("avg_length") or 0.0
    spaces = stats.get("space_share") or 0.0
    distinct = stats.get("approx_distinct", 0)
    if spaces < TEXT_SPACE_SHARE:
        return False
    if avg_len >= TEXT_LONG_AVG_LEN:
        return True
    return (
        avg_len >= TEXT_MIN_AVG_LEN
        and non_null > 0
        and distinct / non_null >= TEXT_DISTINCT_RATIO
        and distinct > max_onehot
    )


def _check_columns(kind: str, names: list[str] | None, known: dict[str, str]) -> list[str]:
    names = list(names or [])
    missing = [c for c in names if c not in known]
    if missing:
        raise ConfigError(
            [
                (
                    f"features.{kind}",
                    f"column(s) {', '.join(map(repr, missing))} not in the data; columns are: {', '.join(known)}",
                )
            ]
        )
    return names


_FORCED_KINDS: dict[str, tuple[str, ...]] = {
    "numeric": ("integral", "fractional", "decimal", "boolean", "string"),
    "boolean": ("boolean", "integral", "fractional", "decimal"),
    "timestamp": ("time", "string"),
    "categorical": ("string", "integral", "boolean"),
    "text": ("string",),
}


def _check_forced_type(name: str, role: str, type_name: str) -> None:
    kinds = _FORCED_KINDS.get(role)
    if kinds is not None and _kind(type_name) not in kinds:
        hint = (
            "cast it to int or string in the data, or list it under features.numeric"
            if role == "categorical"
            else f"{role} columns must have one of the kinds {', '.join(kinds)}"
        )
        raise ConfigError(
            [(f"features.{role}", f"column {name!r} has type {type_name}, which cannot be {role}; {hint}")]
        )


def _configured_roles(
    cfg: FeaturesConfig, types: dict[str, str]
) -> tuple[dict[str, str], set[str], set[str] | None]:
    """Roles the config gives (column → role), the excluded columns, and ``features.columns`` (or
    ``None``), each checked against the data's columns.

    Raises
    ------
    ConfigError
        A configured column does not exist, or one column is given two roles.
    """
    explicit: dict[str, list[str]] = {
        "numeric": _check_columns("numeric", cfg.numeric, types),
        "categorical": _check_columns("categorical", cfg.categorical, types),
        "timestamp": _check_columns("timestamp", cfg.timestamp, types),
        "boolean": _check_columns("boolean", cfg.boolean, types),
        "id_like": _check_columns("id_columns", cfg.id_columns, types),
    }
    text_cfg = cfg.text
    explicit["text"] = _check_columns("text", text_cfg.columns if text_cfg is not None else None, types)
    exclude = set(_check_columns("exclude", cfg.exclude, types))
    allowed = set(_check_columns("columns", cfg.columns, types)) if cfg.columns is not None else None
    forced: dict[str, str] = {}
    for role, names in explicit.items():
        for name in names:
            if name in forced and forced[name] != role:
                raise ConfigError(
                    [
                        (
                            f"features.{role}",
                            f"column {name!r} is also listed as {forced[name]}; give it one role",
                        )
                    ]
                )
            forced[name] = role
    tf = cfg.time_features  # time feature columns are timestamp columns too
    if not isinstance(tf, bool) and tf.columns:
        for name in _check_columns("time_features.columns", tf.columns, types):
            forced.setdefault(name, "timestamp")

    return forced, exclude, allowed


def _decide_role(
    name: str,
    type_name: str,
    profile: dict[str, Any],
    cfg: FeaturesConfig,
    forced: dict[str, str],
    exclude: set[str],
    allowed: set[str] | None,
    int_categorical_max: int | None,
    max_onehot: int,
) -> tuple[str, str]:
    """``(role, reason)`` of one column from the config, its type and its profile."""
    stats = profile["columns"][name]
    non_null = profile["row_count"] - stats["null_count"]
    distinct = stats.get("approx_distinct", 0)
    kind = _kind(type_name)
    if name in exclude:
        return "excluded", "features.exclude"
    elif allowed is not None and name not in allowed and name not in forced:
        return "excluded", "not in features.columns"
    elif name in forced:
        role = forced[name]
        if role == "id_like" and not cfg.drop_id_like:
            role = "numeric" if is_numeric_type(type_name) else "categorical"
        return role, f"configured as {role}"
    elif kind == "vector":
        return "vector", "ML vector (its slots are features)"
    elif kind == "other":
        return "ignored", f"type {type_name} is not supported by feature engineering"
    elif distinct == 0 or (distinct == 1 and (stats["null_count"] == 0 or kind != "string")):
        return "constant", f"{distinct} distinct non-null value(s)"
    elif (
        cfg.drop_id_like
        and kind in ("integral", "string")
        and ID_NAME_RE.search(name)
        and non_null > 0
        and distinct >= ID_UNIQUE_RATIO * non_null
    ):
        return "id_like", f"id-like name with {distinct} distinct of {non_null} values"
    elif kind == "boolean":
        return "boolean", "boolean type"
    elif kind == "time":
        return "timestamp", f"{type_name} type"
    elif kind == "integral" and int_categorical_max is not None and distinct <= int_categorical_max:
        return "categorical", f"integral with {distinct} <= {int_categorical_max} distinct values"
    elif kind in ("integral", "fractional", "decimal"):
        return "numeric", f"{type_name} type"
    elif _looks_like_text(stats, non_null, max_onehot):
        return "text", f"free text (average length {stats.get('avg_length') or 0:.1f}, spaces)"
    else:
        return "categorical", f"string with ~{distinct} distinct values"


def infer_roles(
    df: DataFrame,
    features_cfg: FeaturesConfig | None = None,
    target: str | None = None,
    *,
    int_categorical_max: int | None = None,
    profile: dict[str, Any] | None = None,
) -> tuple[ColumnRoles, dict[str, Any]]:
    """Give every column of ``df`` a role and profile it, in one aggregation pass.

    Parameters
    ----------
    df
        The raw input frame (target included when there is one).
    features_cfg
        The ``features`` section of the config; its explicit role lists, ``exclude``, ``columns``,
        ``id_columns`` and ``target`` win over inference. ``None`` means all defaults.
    target
        The target column when the config does not name one (e.g. from ``model`` settings).
    int_categorical_max
        When given, integral columns with at most this many distinct values are categorical instead
        of numeric. Off by default.
    profile
        A profile of ``df`` from :func:`profile_frame` to reuse instead of running the aggregation.

    Returns
    -------
    tuple of (ColumnRoles, dict)
        The roles and the profile (see :func:`profile_frame`).

    Raises
    ------
    ConfigError
        When a configured column does not exist in the data.
    """
    from sparkpipe.config import FeaturesConfig

    cfg = features_cfg or FeaturesConfig()
    types = {f.name: simple_type(f.dataType) for f in df.schema.fields}
    target = cfg.target or target
    if target is not None and target not in types:
        raise ConfigError(
            [
                (
                    "features.target",
                    f"target column {target!r} is not in the data; columns are: {', '.join(types)}",
                )
            ]
        )

    forced, exclude, allowed = _configured_roles(cfg, types)
    for name, role in forced.items():
        if name in types and name not in exclude:
            _check_forced_type(name, role, types[name])
    if profile is None or set(profile.get("columns", {})) != set(types):
        profile = profile_frame(df)
    roles = ColumnRoles(target=target, types=dict(types))
    max_onehot = cfg.categorical_encoding.max_onehot_cardinality

    for name, type_name in types.items():
        if name == target:
            roles.reasons[name] = "target"
            continue
        role, reason = _decide_role(
            name, type_name, profile, cfg, forced, exclude, allowed, int_categorical_max, max_onehot
        )
        getattr(roles, role).append(name)
        roles.reasons[name] = reason
    log.info(
        "column roles: %s",
        ", ".join(f"{r}={getattr(roles, r)}" for r in ROLE_NAMES if getattr(roles, r))
        + (f", target={target}" if target else ""),
    )
    return roles, profile
