"""NumPy twins of sparkpipe's own feature stages (:mod:`sparkpipe.features.stages`).

Each twin is registered under the class path PySpark writes into the saved stage's metadata
(``sparkpipe.features.stages.<Class>``) and reproduces the Spark SQL expressions of its stage on a
frame (see :mod:`sparkpipe.scoring.base` for the frame representation). This module imports neither
PySpark nor :mod:`sparkpipe.features`, so the serving process stays JVM- and PySpark-free; the few
shared constants are repeated here and a test checks they agree.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from sparkpipe.core import INTEGRAL_TYPES
from sparkpipe.errors import ScoringError
from sparkpipe.scoring.base import (
    Frame,
    Row,
    RowFallback,
    RowFn,
    StageFiles,
    Twin,
    generated_function,
    n_rows,
    register,
)

STAGES_MODULE = "sparkpipe.features.stages"

CYCLIC_PERIODS: dict[str, float] = {"hour": 24.0, "day_of_week": 7.0, "month": 12.0}
"""Same as :data:`sparkpipe.features.stages.CYCLIC_PERIODS`."""

DEFAULT_TIME_PARTS: tuple[str, ...] = ("hour", "day_of_week", "month", "is_weekend")

_US_PER_DAY = 86_400_000_000
_US_PER_HOUR = 3_600_000_000
_US_PER_MINUTE = 60_000_000
_NAT = np.iinfo(np.int64).min
_US_DTYPE = np.dtype("datetime64[us]")
_F64 = np.dtype(np.float64)


def _column(frame: Frame, name: str, stage: str) -> Any:
    try:
        return frame[name]
    except KeyError:
        raise ScoringError(
            f"{stage}: input column {name!r} is missing; columns present: {', '.join(frame)}"
        ) from None


# ------------------------------------------------------------------------------ timestamp parsing
_TS_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<mo>\d{1,2})(?:-(?P<d>\d{1,2})"
    r"(?:[ T](?P<h>\d{1,2})(?::(?P<mi>\d{1,2})(?::(?P<s>\d{1,2})(?:\.(?P<f>\d{0,9}))?)?)?)?)?)?"
    r"\s*(?P<z>Z|UTC|GMT|[+-]\d{1,2}(?::?\d{2})?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_spark_timestamp(text: str | None) -> int | None:
    """Microseconds since the epoch (UTC) of a string as Spark's ``try_cast(... as timestamp)`` reads it.

    Covers the forms Spark accepts that matter in practice: ``yyyy``, ``yyyy-M``, ``yyyy-M-d``, then an
    optional ``' '`` or ``'T'`` and ``H[:m[:s[.fraction]]]`` (fraction truncated to microseconds) and an
    optional zone ``Z``/``UTC``/``GMT``/``+hh[:mm]``/``+hhmm``; surrounding whitespace is ignored; a
    string without zone is in UTC (the session time zone). Anything else, or an impossible date, gives
    ``None`` (null), as ``try_cast`` does. Region zone ids (``Europe/Paris``) are not supported.
    """
    if text is None:
        return None
    m = _TS_RE.match(text.strip())
    if m is None:
        return None
    g = m.groupdict()
    try:
        t = datetime(
            int(g["y"]),
            int(g["mo"] or 1),
            int(g["d"] or 1),
            int(g["h"] or 0),
            int(g["mi"] or 0),
            int(g["s"] or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    frac = (g["f"] or "")[:6].ljust(6, "0")
    us = (t - _EPOCH) // timedelta(microseconds=1) + int(frac)
    zone = g["z"]
    if zone and zone[0] in "+-":
        digits = zone[1:].replace(":", "")
        hh, mm = (int(digits[:-2]), int(digits[-2:])) if len(digits) > 2 else (int(digits), 0)
        if hh > 18 or mm > 59:
            return None
        offset = (hh * 60 + mm) * _US_PER_MINUTE
        us -= offset if zone[0] == "+" else -offset
    return us


def to_epoch_micros(values: Any) -> np.ndarray:
    """A timestamp/date/string column as int64 microseconds since the epoch; null -> ``INT64_MIN``."""
    arr = np.asarray(values)
    if arr.dtype.kind == "M":  # datetime64
        return arr.astype(_US_DTYPE).view(np.int64)
    if arr.dtype == object:
        out = np.full(arr.shape[0], _NAT, dtype=np.int64)
        for i, v in enumerate(arr):
            if v is None:
                continue
            if isinstance(v, str):
                us = parse_spark_timestamp(v)
                if us is not None:
                    out[i] = us
            else:
                out[i] = np.datetime64(v, "us").astype(np.int64)
        return out
    if arr.dtype.kind == "U":
        return to_epoch_micros(arr.astype(object))
    raise ScoringError(f"TimeFeatures: expected timestamps, dates or strings, got an array of {arr.dtype}")


def calendar_parts(micros: np.ndarray, parts: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Spark's calendar functions on epoch microseconds (UTC), as float64 with NaN for null.

    ``hour``, ``minute``, ``day_of_week`` (0 = Monday, Spark's ``weekday``), ``day_of_month``,
    ``month``, ``year`` and ``is_weekend``; proleptic Gregorian calendar like Spark 3+. ``parts`` names
    the keys the caller needs (default: all); the result holds at least those.
    """
    if micros.shape[0] == 1 and (us := int(micros[0])) != _NAT:  # one request: plain Python is faster
        one = _calendar_parts_one(us, parts or _CALENDAR_PARTS)
        if one is not None:
            return one
    null = micros == _NAT
    us = np.where(null, 0, micros)
    days = np.floor_divide(us, _US_PER_DAY)
    in_day = us - days * _US_PER_DAY
    want = set(parts or _CALENDAR_PARTS)  # only the parts asked for (calendar conversions cost)
    d = days.astype("datetime64[D]") if want & {"day_of_month", "month", "year"} else None
    months = d.astype("datetime64[M]") if want & {"day_of_month", "month"} else None
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    compute = {
        "hour": lambda: in_day // _US_PER_HOUR,
        "minute": lambda: (in_day // _US_PER_MINUTE) % 60,
        "day_of_week": lambda: weekday,
        "day_of_month": lambda: (d - months).astype(np.int64) + 1,
        "month": lambda: months.astype(np.int64) % 12 + 1,
        "year": lambda: d.astype("datetime64[Y]").astype(np.int64) + 1970,
        "is_weekend": lambda: (weekday >= 5).astype(np.int64),
    }
    return {k: np.where(null, np.nan, compute[k]().astype(np.float64)) for k in _CALENDAR_PARTS if k in want}


_CALENDAR_PARTS = ("hour", "minute", "day_of_week", "day_of_month", "month", "year", "is_weekend")
_PART_INDEX = {p: i for i, p in enumerate(_CALENDAR_PARTS)}
_ORDINAL_1970 = date(1970, 1, 1).toordinal()


def _calendar_values(d: date, hour: int, minute: int) -> tuple[int, ...]:
    """Every :data:`_CALENDAR_PARTS` value of one day and time of day, in that order."""
    weekday = d.weekday()
    return (hour, minute, weekday, d.day, d.month, d.year, 1 if weekday >= 5 else 0)


def _calendar_parts_one(us: int, parts: Sequence[str]) -> dict[str, np.ndarray] | None:
    """:func:`calendar_parts` of ``parts`` for a single non-null timestamp (years 1-9999, else
    ``None``); one array holds every part, each part is a one-element view of it."""
    days, in_day = divmod(us, _US_PER_DAY)
    try:
        d = date.fromordinal(days + _ORDINAL_1970)
    except (ValueError, OverflowError):
        return None
    every = _calendar_values(d, in_day // _US_PER_HOUR, in_day // _US_PER_MINUTE % 60)
    values = np.array([every[_PART_INDEX[p]] for p in parts], dtype=np.float64)
    # not strict: the names run out first, so the array iterator never raises its (slow) IndexError
    return dict(zip(parts, values[:, None], strict=False))


@register(f"{STAGES_MODULE}.TimeFeatures")
class TimeFeaturesTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.TimeFeatures`."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.parts = list(stage.param("parts", list(DEFAULT_TIME_PARTS)))
        self.cyclic = bool(stage.param("cyclic", False))
        unknown = [p for p in self.parts if p not in _PART_INDEX]
        if unknown:
            raise ScoringError(f"TimeFeatures {self.uid}: unknown part(s) {unknown}")
        self._inputs = self.input_cols
        self._part_index = [_PART_INDEX[p] for p in self.parts]
        self._output_names = [f"{c}_{p}" for c in self._inputs for p in self.parts]
        self._specs = [
            (
                [(p, f"{c}_{p}") for p in self.parts],
                [(p, f"{c}_{p}_sin", f"{c}_{p}_cos") for p in self.parts if p in CYCLIC_PERIODS],
            )
            for c in self._inputs
        ]

    @property
    def output_cols(self) -> list[str]:
        out: list[str] = []
        for c in self.input_cols:
            out += [f"{c}_{p}" for p in self.parts]
            if self.cyclic:
                for p in self.parts:
                    if p in CYCLIC_PERIODS:
                        out += [f"{c}_{p}_sin", f"{c}_{p}_cos"]
        return out

    def _one_row(self, inputs: list[Any]) -> list[int] | None:
        """The parts of every input of a one-row frame of ``datetime64[us]`` columns, computed in plain
        Python (``None`` for anything else: more rows, other types, null, years outside 1-9999)."""
        flat: list[int] = []
        index = self._part_index
        for x in inputs:
            if type(x) is not np.ndarray or x.shape != (1,) or x.dtype != _US_DTYPE:
                return None
            t = x.item()  # a datetime for years 1-9999; None (NaT) or an int otherwise
            if type(t) is not datetime:
                return None
            every = _calendar_values(t, t.hour, t.minute)
            flat += [every[i] for i in index]
        return flat

    def transform(self, frame: Frame) -> None:
        try:
            inputs = [frame[c] for c in self._inputs]
        except KeyError:
            for c in self._inputs:
                _column(frame, c, "TimeFeatures")  # raises, naming the missing column
            raise
        if not self.cyclic and (flat := self._one_row(inputs)) is not None:
            # one request: one array holds every output, each output column is a view of it
            block = np.array(flat, dtype=np.float64)[:, None]
            for name, column in zip(self._output_names, block, strict=False):  # not strict: as above
                frame[name] = column
            return
        for (names, cyclic), x in zip(self._specs, inputs, strict=True):
            values = calendar_parts(to_epoch_micros(x), self.parts)
            for p, name in names:
                frame[name] = values[p]
            if self.cyclic:
                for p, sin_name, cos_name in cyclic:
                    offset = 1.0 if p == "month" else 0.0
                    angle = (values[p] - offset) * (2.0 * math.pi / CYCLIC_PERIODS[p])
                    frame[sin_name] = np.sin(angle)
                    frame[cos_name] = np.cos(angle)

    def row_fn(self) -> RowFn:
        # generated straight-line code: one block per input column, only the parts asked for
        exprs = {
            "hour": "float(in_day // _US_PER_HOUR)",
            "minute": "float(in_day // _US_PER_MINUTE % 60)",
            "day_of_week": "float(w)",
            "day_of_month": "float(d.day)",
            "month": "float(d.month)",
            "year": "float(d.year)",
            "is_weekend": "1.0 if w >= 5 else 0.0",
        }
        need_date = any(p in ("day_of_month", "month", "year") for p in self.parts)
        need_weekday = any(p in ("day_of_week", "is_weekend") for p in self.parts)
        lines = ["def time_parts(row):"]
        for c, (names, cyclic) in zip(self._inputs, self._specs, strict=True):
            lines += [
                f"    us = row[{c!r}]",
                "    if type(us) is str:",
                "        us = parse_spark_timestamp(us)",
                "    if type(us) is int:",
                "        days, in_day = divmod(us, _US_PER_DAY)",
            ]
            if need_date:
                lines += [
                    "        try:",
                    "            d = date.fromordinal(days + _ORDINAL_1970)",
                    "        except (ValueError, OverflowError):",
                    "            raise RowFallback from None",
                ]
            if need_weekday:
                lines.append("        w = (days + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday")
            for k, (p, name) in enumerate(names):
                lines += [f"        v{k} = {exprs[p]}", f"        row[{name!r}] = v{k}"]
            for p, sin_name, cos_name in cyclic if self.cyclic else []:
                k = self.parts.index(p)
                offset = 1.0 if p == "month" else 0.0
                angle = f"(v{k} - {offset!r}) * {2.0 * math.pi / CYCLIC_PERIODS[p]!r}"
                lines += [
                    f"        row[{sin_name!r}] = sin({angle})",
                    f"        row[{cos_name!r}] = cos({angle})",
                ]
            lines.append("    elif us is None:")
            nulls = [name for _, name in names]
            if self.cyclic:
                nulls += [n for _, sin_name, cos_name in cyclic for n in (sin_name, cos_name)]
            lines += [f"        row[{name!r}] = nan" for name in nulls]
            lines += ["    else:", "        raise RowFallback"]
        namespace: dict[str, Any] = {
            "parse_spark_timestamp": parse_spark_timestamp,
            "date": date,
            "sin": math.sin,
            "cos": math.cos,
            "_US_PER_DAY": _US_PER_DAY,
            "_US_PER_HOUR": _US_PER_HOUR,
            "_US_PER_MINUTE": _US_PER_MINUTE,
            "_ORDINAL_1970": _ORDINAL_1970,
        }
        return generated_function(lines, "time_parts", namespace, f"TimeFeatures {self.uid}")


# ------------------------------------------------------------------------------------ CastToDouble
_NUM_SUFFIX_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[dDfF]$")


def parse_spark_double(text: str | None) -> float:
    """A string as Spark's ``try_cast(... as double)`` reads it (whitespace trimmed, ``NaN``,
    ``Infinity``/``inf``, a trailing ``d``/``f``); anything else is NaN (null)."""
    if text is None:
        return math.nan
    s = text.strip()
    if not s or "_" in s:
        return math.nan
    m = _NUM_SUFFIX_RE.match(s)
    if m:
        s = m.group(1)
    try:
        return float(s)
    except ValueError:
        return math.nan


def to_float64(values: Any) -> np.ndarray:
    """A numeric, boolean or string column as float64 (null -> NaN), like Spark's cast to double."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64)
    if arr.dtype == object or arr.dtype.kind == "U":
        out = np.empty(arr.shape[0], dtype=np.float64)
        for i, v in enumerate(arr):
            if v is None:
                out[i] = math.nan
            elif isinstance(v, str):
                out[i] = parse_spark_double(v)
            elif isinstance(v, bool | int | float | np.number | np.bool_):
                out[i] = float(v)
            else:
                raise ScoringError(f"cannot cast {type(v).__name__} value {v!r} to double")
        return out
    raise ScoringError(f"cannot cast an array of {arr.dtype} to double")


def _row_double(v: Any) -> float:
    """:func:`to_float64` of one row-path value."""
    if type(v) is float:
        return v
    if v is None:
        return math.nan
    if type(v) is str:
        return parse_spark_double(v)
    raise RowFallback  # a timestamp (int microseconds): the batch path decides


@register(f"{STAGES_MODULE}.CastToDouble")
class CastToDoubleTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.CastToDouble`."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.skip_missing = bool(stage.param("skipMissing", False))
        self.pairs = list(zip(self.input_cols, self.output_cols, strict=True))

    def transform(self, frame: Frame) -> None:
        for src, dst in self.pairs:
            if src not in frame:
                if self.skip_missing:
                    continue
                _column(frame, src, "CastToDouble")  # raises, naming the column
            x = frame[src]
            # a numeric array is what to_float64 copies as float64 (skipping its checks)
            frame[dst] = x.astype(_F64) if type(x) is np.ndarray and x.dtype.kind in "biuf" else to_float64(x)

    def row_fn(self) -> RowFn:
        pairs, skip_missing = self.pairs, self.skip_missing

        def cast(row: Row) -> None:
            for src, dst in pairs:
                v = row.get(src, row)
                if v is row:
                    if skip_missing:
                        continue
                    raise RowFallback
                tv = type(v)
                if tv is float:
                    row[dst] = v
                elif tv is str:
                    row[dst] = parse_spark_double(v)
                elif v is None:
                    row[dst] = math.nan
                else:
                    raise RowFallback  # a timestamp: the batch path decides

        return cast


@register(f"{STAGES_MODULE}.ConstantImputer")
class ConstantImputerTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.ConstantImputer`."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.fill = float(stage.param("fillValue", 0.0))
        self.pairs = list(zip(self.input_cols, self.output_cols, strict=True))

    def transform(self, frame: Frame) -> None:
        for src, dst in self.pairs:
            x = to_float64(_column(frame, src, "ConstantImputer"))
            frame[dst] = np.where(np.isnan(x), self.fill, x)

    def row_fn(self) -> RowFn:
        pairs, fill = self.pairs, self.fill

        def impute(row: Row) -> None:
            for src, dst in pairs:
                v = _row_double(row[src])
                row[dst] = fill if v != v else v

        return impute


@register(f"{STAGES_MODULE}.ClipVector")
class ClipVectorTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.ClipVector` (dense out; NaN stays NaN)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.lo = float(stage.param("lower", 0.0))
        self.hi = float(stage.param("upper", 1.0))
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def bind_types(self, types: dict[str, str]) -> None:
        types[self.out] = "vector"

    def transform(self, frame: Frame) -> None:
        x = _column(frame, self.inp, "ClipVector")
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x, dtype=np.float64)
        x = x.reshape(-1, 1) if x.ndim == 1 else x
        frame[self.out] = np.where(np.isnan(x), x, np.minimum(np.maximum(x, self.lo), self.hi))


def _is_missing(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if np.issubdtype(arr.dtype, np.datetime64):
        return np.isnat(arr)
    if arr.dtype == object:
        return np.fromiter(
            (v is None or (isinstance(v, float) and math.isnan(v)) for v in arr),
            dtype=bool,
            count=arr.shape[0],
        )
    return np.zeros(arr.shape[0], dtype=bool)


@register(f"{STAGES_MODULE}.MissingIndicator")
class MissingIndicatorTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.MissingIndicator`."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.pairs = list(zip(self.input_cols, self.output_cols, strict=True))

    def transform(self, frame: Frame) -> None:
        for src, dst in self.pairs:
            frame[dst] = _is_missing(_column(frame, src, "MissingIndicator")).astype(np.float64)

    def row_fn(self) -> RowFn:
        pairs = self.pairs

        def indicate(row: Row) -> None:
            for src, dst in pairs:
                v = row[src]
                row[dst] = 1.0 if v is None or (type(v) is float and v != v) else 0.0

        return indicate


# ---------------------------------------------------------------------------- CategoricalImputer


def spark_string(value: Any, spark_type: str) -> str | None:
    """One value as Spark's ``cast(x as string)`` writes it, for string, integral and boolean types."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    if spark_type == "boolean":
        return "true" if bool(value) else "false"
    if spark_type in INTEGRAL_TYPES:
        return str(int(value))
    return str(value)


def _row_string(v: Any, spark_type: str) -> str | None:
    """One row-path value as the batch path's string columns hold it (see :func:`spark_string`)."""
    if v is None or type(v) is str:
        return v
    if type(v) is float:
        return spark_string(v, spark_type)
    raise RowFallback  # a timestamp (int microseconds): the batch path decides


@register(f"{STAGES_MODULE}.CategoricalImputerModel")
class CategoricalImputerModelTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.CategoricalImputerModel`: cast to string, fill nulls."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        fills = list(stage.param("fillValues", []))
        types = list(stage.param("inputTypes", ["string"] * len(fills)))
        if not (len(fills) == len(types) == len(self.input_cols) == len(self.output_cols)):
            raise ScoringError(
                f"CategoricalImputerModel {self.uid}: inputCols/outputCols/fillValues lengths differ"
            )
        self.specs = list(zip(self.input_cols, self.output_cols, fills, types, strict=True))

    def transform(self, frame: Frame) -> None:
        rows = n_rows(frame)
        for src, dst, fill, spark_type in self.specs:
            values = np.asarray(
                frame[src] if src in frame else _column(frame, src, "CategoricalImputerModel")
            )
            if spark_type == "string" and values.dtype == object and None not in values.tolist():
                frame[dst] = values.copy()  # nothing to fill
                continue
            out = np.empty(rows, dtype=object)
            if values.dtype == object and spark_type == "string":
                for i, v in enumerate(values):
                    out[i] = fill if v is None else v
            else:
                for i, v in enumerate(values.tolist()):
                    s = spark_string(v, spark_type)
                    out[i] = fill if s is None else s
            frame[dst] = out

    def row_fn(self) -> RowFn:
        specs = self.specs

        def impute(row: Row) -> None:
            for src, dst, fill, spark_type in specs:
                v = row[src]
                if v is None:
                    row[dst] = fill
                elif type(v) is str:
                    row[dst] = v
                elif type(v) is float:
                    s = spark_string(v, spark_type)
                    row[dst] = fill if s is None else s
                else:
                    raise RowFallback  # a timestamp: the batch path decides

        return impute


# -------------------------------------------------------------------------------- OutlierHandlerModel
@register(f"{STAGES_MODULE}.OutlierHandlerModel")
class OutlierHandlerModelTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.OutlierHandlerModel` (clip or flag with fitted bounds)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        lows = [float(v) for v in stage.param("lowerBounds", [])]
        highs = [float(v) for v in stage.param("upperBounds", [])]
        if not (len(lows) == len(highs) == len(self.input_cols) == len(self.output_cols)):
            raise ScoringError(f"OutlierHandlerModel {self.uid}: bounds do not match the input columns")
        self.flag = str(stage.param("action", "clip")) == "flag"
        self.specs = list(zip(self.input_cols, self.output_cols, lows, highs, strict=True))

    def bind_types(self, types: dict[str, str]) -> None:
        for _, dst, _, _ in self.specs:
            types[dst] = "double"

    def transform(self, frame: Frame) -> None:
        for src, dst, lo, hi in self.specs:
            x = to_float64(_column(frame, src, "OutlierHandlerModel"))
            if self.flag:
                frame[dst] = ((x < lo) | (x > hi)).astype(np.float64)  # NaN compares False: 0.0
            else:
                frame[dst] = np.where(x < lo, lo, np.where(x > hi, hi, x))

    def row_fn(self) -> RowFn:
        specs, flag = self.specs, self.flag

        def outliers(row: Row) -> None:
            for src, dst, lo, hi in specs:
                x = _row_double(row[src])
                if flag:
                    row[dst] = 1.0 if x < lo or x > hi else 0.0  # NaN compares False: 0.0
                else:
                    row[dst] = lo if x < lo else (hi if x > hi else x)

        return outliers


# ------------------------------------------------------------------------ SafeRatio / PairwiseProduct
def _nan_if_not_finite(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, np.nan)


class _BinaryArithmeticTwin(Twin):
    name = ""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        left = list(stage.param("leftCols", []))
        right = list(stage.param("rightCols", []))
        if not (len(left) == len(right) == len(self.output_cols)):
            raise ScoringError(f"{self.name} {self.uid}: leftCols/rightCols/outputCols lengths differ")
        self.specs = list(zip(left, right, self.output_cols, strict=True))

    @property
    def input_cols(self) -> list[str]:
        return list(dict.fromkeys(c for a, b, _ in self.specs for c in (a, b)))

    def bind_types(self, types: dict[str, str]) -> None:
        for _, _, dst in self.specs:
            types[dst] = "double"

    def _op(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def transform(self, frame: Frame) -> None:
        for a, b, dst in self.specs:
            x = to_float64(_column(frame, a, self.name))
            y = to_float64(_column(frame, b, self.name))
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                frame[dst] = _nan_if_not_finite(self._op(x, y))

    def _row_op(self, a: float, b: float) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def row_fn(self) -> RowFn:
        specs, op, isfinite, nan = self.specs, self._row_op, math.isfinite, math.nan

        def arithmetic(row: Row) -> None:
            for a, b, dst in specs:
                v = op(_row_double(row[a]), _row_double(row[b]))
                row[dst] = v if isfinite(v) else nan

        return arithmetic


@register(f"{STAGES_MODULE}.SafeRatio")
class SafeRatioTwin(_BinaryArithmeticTwin):
    """Twin of :class:`sparkpipe.features.stages.SafeRatio`: zero/null denominators and non-finite
    results give NaN (null)."""

    name = "SafeRatio"

    def _op(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(b == 0.0, np.nan, a / np.where(b == 0.0, 1.0, b))

    def _row_op(self, a: float, b: float) -> float:
        return math.nan if b == 0.0 else a / b  # b NaN: a / NaN is NaN


@register(f"{STAGES_MODULE}.PairwiseProduct")
class PairwiseProductTwin(_BinaryArithmeticTwin):
    """Twin of :class:`sparkpipe.features.stages.PairwiseProduct`."""

    name = "PairwiseProduct"

    def _op(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * b

    def _row_op(self, a: float, b: float) -> float:
        return a * b


# --------------------------------------------------------------------------------------- ElapsedTime
ELAPSED_UNITS: dict[str, int] = {
    "seconds": 1_000_000,
    "minutes": 60_000_000,
    "hours": 3_600_000_000,
    "days": 86_400_000_000,
}
"""Same as :data:`sparkpipe.features.stages.ELAPSED_UNITS`."""


@register(f"{STAGES_MODULE}.ElapsedTime")
class ElapsedTimeTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.ElapsedTime`."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        starts = list(stage.param("startCols", []))
        ends = list(stage.param("endCols", []))
        units = list(stage.param("units", ["seconds"] * len(self.output_cols)))
        if not (len(starts) == len(ends) == len(units) == len(self.output_cols)):
            raise ScoringError(f"ElapsedTime {self.uid}: startCols/endCols/units/outputCols lengths differ")
        bad = [u for u in units if u not in ELAPSED_UNITS]
        if bad:
            raise ScoringError(f"ElapsedTime {self.uid}: unknown unit(s) {bad}")
        self.specs = list(zip(starts, ends, self.output_cols, units, strict=True))

    @property
    def input_cols(self) -> list[str]:
        return list(dict.fromkeys(c for s, e, _, _ in self.specs for c in (s, e)))

    def bind_types(self, types: dict[str, str]) -> None:
        for _, _, dst, _ in self.specs:
            types[dst] = "double"

    def transform(self, frame: Frame) -> None:
        for s, e, dst, unit in self.specs:
            start = to_epoch_micros(_column(frame, s, "ElapsedTime"))
            end = to_epoch_micros(_column(frame, e, "ElapsedTime"))
            null = (start == _NAT) | (end == _NAT)
            diff = np.where(null, 0, end - start).astype(np.float64) / float(ELAPSED_UNITS[unit])
            frame[dst] = np.where(null, np.nan, diff)

    def row_fn(self) -> RowFn:
        specs = [(s, e, dst, float(ELAPSED_UNITS[unit])) for s, e, dst, unit in self.specs]

        def micros(v: Any) -> int | None:
            if type(v) is str:
                return parse_spark_timestamp(v)
            if v is None or type(v) is int:
                return v
            raise RowFallback

        def elapsed(row: Row) -> None:
            for s, e, dst, unit in specs:
                start, end = micros(row[s]), micros(row[e])
                if start is None or end is None:
                    row[dst] = math.nan
                else:
                    row[dst] = float(end - start) / unit

        return elapsed


# ------------------------------------------------------------------------- RareCategoryGrouperModel
RARE_CATEGORY = "__rare__"
"""Same as :data:`sparkpipe.features.stages.RARE_CATEGORY`."""


@register(f"{STAGES_MODULE}.RareCategoryGrouperModel")
class RareCategoryGrouperModelTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.RareCategoryGrouperModel`: kept categories stay, any
    other value becomes ``rareLabel``; null stays null."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        kept = json.loads(stage.param("keptCategories", "[]"))
        if not (len(kept) == len(self.input_cols) == len(self.output_cols)):
            raise ScoringError(f"RareCategoryGrouperModel {self.uid}: keptCategories do not match inputCols")
        self.rare = str(stage.param("rareLabel", RARE_CATEGORY))
        self.specs = [(i, o, set(k)) for i, o, k in zip(self.input_cols, self.output_cols, kept, strict=True)]
        self.types: dict[str, str] = {}

    def bind_types(self, types: dict[str, str]) -> None:
        for src, dst, _ in self.specs:
            self.types[src] = types.get(src, "string")
            types[dst] = "string"

    def transform(self, frame: Frame) -> None:
        rows = n_rows(frame)
        for src, dst, keep in self.specs:
            values = np.asarray(_column(frame, src, "RareCategoryGrouperModel"))
            spark_type = self.types.get(src, "string")
            strings = (
                values.tolist()
                if values.dtype == object
                else [spark_string(v, spark_type) for v in values.tolist()]
            )
            out = np.empty(rows, dtype=object)
            out[:] = [None if v is None else (v if v in keep else self.rare) for v in strings]
            frame[dst] = out

    def row_fn(self) -> RowFn:
        specs = [(src, dst, keep, self.types.get(src, "string")) for src, dst, keep in self.specs]
        rare = self.rare

        def group(row: Row) -> None:
            for src, dst, keep, spark_type in specs:
                v = _row_string(row[src], spark_type)
                row[dst] = None if v is None else (v if v in keep else rare)

        return group


# ----------------------------------------------------------------------------- GroupAggregatorModel
@register(f"{STAGES_MODULE}.GroupAggregatorModel")
class GroupAggregatorModelTwin(Twin):
    """Twin of :class:`sparkpipe.features.stages.GroupAggregatorModel`: an in-memory dict lookup.

    The stored parquet table (``k0..`` string keys, ``v0..`` aggregates) becomes a ``dict`` from the key
    tuple to its aggregate row; a row whose key is unknown or has a null gets the global ``defaults``,
    and so does a null aggregate (as Spark's ``coalesce``).
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.groups = list(stage.param("groupCols", []))
        self.types = list(stage.param("groupTypes", ["string"] * len(self.groups)))
        self.defaults = np.asarray([float(v) for v in stage.param("defaults", [])], dtype=np.float64)
        if len(self.defaults) != len(self.output_cols) or len(self.types) != len(self.groups):
            raise ScoringError(f"GroupAggregatorModel {self.uid}: defaults/groupTypes do not match")
        table = stage.read_table("data").to_pydict()
        keys = list(zip(*[table[f"k{i}"] for i in range(len(self.groups))], strict=True))
        width = len(self.output_cols)
        values = (
            np.asarray(
                [[math.nan if v is None else float(v) for v in table[f"v{j}"]] for j in range(width)],
                dtype=np.float64,
            )
            .reshape(width, len(keys))
            .T
        )
        values = np.where(np.isnan(values), self.defaults, values)
        self.table: dict[tuple[str, ...], np.ndarray] = dict(zip(keys, values, strict=True))

    @property
    def input_cols(self) -> list[str]:
        return list(self.groups)

    def bind_types(self, types: dict[str, str]) -> None:
        for o in self.output_cols:
            types[o] = "double"

    def lookup(self, key: tuple[str, ...]) -> np.ndarray:
        """The aggregates of one entity key (strings as Spark casts them), defaults when unknown."""
        return self.table.get(key, self.defaults)

    def transform(self, frame: Frame) -> None:
        rows = n_rows(frame)
        cols = []
        for g, t in zip(self.groups, self.types, strict=True):
            values = np.asarray(_column(frame, g, "GroupAggregatorModel"))
            cols.append(
                values.tolist() if values.dtype == object else [spark_string(v, t) for v in values.tolist()]
            )
        table, defaults = self.table, self.defaults
        out = np.empty((rows, len(self.output_cols)), dtype=np.float64)
        for i, key in enumerate(zip(*cols, strict=True)) if cols else ():
            out[i] = table.get(key, defaults)
        for j, o in enumerate(self.output_cols):
            frame[o] = out[:, j].copy()

    def row_fn(self) -> RowFn:
        table = {k: v.tolist() for k, v in self.table.items()}
        defaults = self.defaults.tolist()
        groups = list(zip(self.groups, self.types, strict=True))
        outputs = self.output_cols

        def aggregate(row: Row) -> None:
            key = tuple([_row_string(row[g], t) for g, t in groups])
            row.update(zip(outputs, table.get(key, defaults), strict=True))

        return aggregate


TWIN_CLASSES: tuple[type[Twin], ...] = (
    TimeFeaturesTwin,
    CastToDoubleTwin,
    ConstantImputerTwin,
    MissingIndicatorTwin,
    CategoricalImputerModelTwin,
    OutlierHandlerModelTwin,
    SafeRatioTwin,
    PairwiseProductTwin,
    ElapsedTimeTwin,
    RareCategoryGrouperModelTwin,
    GroupAggregatorModelTwin,
)
