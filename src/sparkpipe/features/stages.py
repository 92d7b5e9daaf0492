"""Custom persistable Spark ML stages built only from Spark SQL expressions.

Every stage here

* is made of ``pyspark.sql.functions`` expressions (no Python UDFs), so it runs in the JVM and
  executors need nothing installed;
* lives at this stable import path (a saved stage is re-created from the ``class`` field of its
  metadata, e.g. ``sparkpipe.features.stages.TimeFeatures``): never move or rename one without leaving
  an alias here;
* persists through :class:`~pyspark.ml.util.DefaultParamsWritable` /
  :class:`~pyspark.ml.util.DefaultParamsReadable`, with fitted state held as plain JSON-friendly
  Params, so it round-trips inside a saved ``PipelineModel``;
* has a NumPy twin in :mod:`sparkpipe.scoring.custom` proven equal by the parity tests.

Stages
------
TimeFeatures
    Calendar parts of timestamp/date (or timestamp string) columns.
CastToDouble
    Booleans, numbers (and numeric strings) to ``double``.
ConstantImputer
    Fills null/NaN doubles with one constant (``missing_values.strategy: constant``).
MissingIndicator
    ``1.0`` where a value is null or NaN, else ``0.0`` (``missing_values.add_indicator``).
CategoricalImputer / CategoricalImputerModel
    Casts categorical columns to string and fills nulls with ``"__missing__"`` (its own category),
    a constant, or the training mode.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pyspark import keyword_only
from pyspark.ml import Estimator, Model, Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCols, HasOutputCols
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DataType,
    DateType,
    NumericType,
    StringType,
    TimestampNTZType,
    TimestampType,
)

log = logging.getLogger(__name__)

MISSING_CATEGORY = "__missing__"
"""The category a null categorical value becomes (``missing_values.categorical_strategy: category``)."""

TIME_PARTS: tuple[str, ...] = ("hour", "day_of_week", "month", "is_weekend", "day_of_month", "year", "minute")
"""Calendar parts :class:`TimeFeatures` can emit."""

CYCLIC_PERIODS: dict[str, float] = {"hour": 24.0, "day_of_week": 7.0, "month": 12.0}
"""Parts that get ``_sin``/``_cos`` encodings when ``cyclic`` is on, with their periods."""

DEFAULT_TIME_PARTS: tuple[str, ...] = ("hour", "day_of_week", "month", "is_weekend")


def _col(name: str) -> Column:
    return F.col(f"`{name}`")


def _field_type(dataset: DataFrame, name: str) -> DataType:
    try:
        return dataset.schema[name].dataType
    except KeyError:
        raise ValueError(
            f"input column {name!r} is not in the frame; columns are: {', '.join(dataset.columns)}"
        ) from None


def _check_lengths(inputs: list[str], outputs: list[str], what: str) -> None:
    if len(inputs) != len(outputs):
        raise ValueError(
            f"{what}: {len(inputs)} inputCols but {len(outputs)} outputCols; give one output per input"
        )


# ------------------------------------------------------------------------------------- TimeFeatures
def time_feature_names(column: str, parts: list[str] | tuple[str, ...], cyclic: bool) -> list[str]:
    """Output column names of :class:`TimeFeatures` for one input column, in emission order.

    ``<col>_<part>`` for each part in ``parts``, then, when ``cyclic``, ``<col>_<part>_sin`` and
    ``<col>_<part>_cos`` for each of hour, day_of_week and month that is in ``parts``.
    """
    names = [f"{column}_{p}" for p in parts]
    if cyclic:
        for p in parts:
            if p in CYCLIC_PERIODS:
                names += [f"{column}_{p}_sin", f"{column}_{p}_cos"]
    return names


def cyclic_offset(part: str) -> float:
    """The value subtracted before the sin/cos angle (month runs 1..12, the others start at 0)."""
    return 1.0 if part == "month" else 0.0


class TimeFeatures(Transformer, HasInputCols, DefaultParamsReadable, DefaultParamsWritable):
    """Calendar features of timestamp, date or timestamp-string columns.

    For each input column ``c`` and each part in ``parts`` a ``double`` column ``c_<part>``:

    ``hour`` (0-23), ``minute`` (0-59), ``day_of_week`` (**0 = Monday ... 6 = Sunday**, ISO order as in
    Python's ``datetime.weekday()`` and Spark's ``weekday()``; *not* Spark's ``dayofweek`` which counts
    1 = Sunday), ``day_of_month`` (1-31), ``month`` (1-12), ``year`` and ``is_weekend`` (1.0 on Saturday
    and Sunday, else 0.0). With ``cyclic`` it adds ``c_<part>_sin``/``c_<part>_cos`` =
    ``sin/cos(2*pi*(value - offset)/period)`` for hour (period 24), day_of_week (7) and month (12,
    offset 1). Times are read in the session time zone, which sparkpipe sets to UTC. Dates are midnight.
    Strings are cast with ``try_cast`` (unparseable -> null). A null time gives null parts (imputed
    downstream).

    Parameters
    ----------
    inputCols
        Timestamp, timestamp_ntz, date or string columns.
    parts
        Parts to emit, a subset of :data:`TIME_PARTS` (default hour, day_of_week, month, is_weekend).
    cyclic
        Also emit sin/cos encodings of hour, day_of_week and month.
    """

    parts: Param[list[str]] = Param(
        Params._dummy(),
        "parts",
        f"calendar parts to emit, any of {list(TIME_PARTS)}",
        typeConverter=TypeConverters.toListString,
    )
    cyclic: Param[bool] = Param(
        Params._dummy(),
        "cyclic",
        "also emit sin/cos of hour, day_of_week and month",
        typeConverter=TypeConverters.toBoolean,
    )

    @keyword_only
    def __init__(
        self, *, inputCols: list[str] | None = None, parts: list[str] | None = None, cyclic: bool = False
    ):
        super().__init__()
        self._setDefault(parts=list(DEFAULT_TIME_PARTS), cyclic=False)
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self, *, inputCols: list[str] | None = None, parts: list[str] | None = None, cyclic: bool = False
    ) -> TimeFeatures:
        """Set params by keyword."""
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    def getParts(self) -> list[str]:
        return list(self.getOrDefault(self.parts))

    def getCyclic(self) -> bool:
        return bool(self.getOrDefault(self.cyclic))

    def getOutputCols(self) -> list[str]:
        """All output column names, input column by input column."""
        out: list[str] = []
        for c in self.getInputCols():
            out += time_feature_names(c, self.getParts(), self.getCyclic())
        return out

    def _transform(self, dataset: DataFrame) -> DataFrame:
        parts = self.getParts()
        unknown = [p for p in parts if p not in TIME_PARTS]
        if unknown:
            raise ValueError(f"TimeFeatures: unknown part(s) {unknown}; valid parts: {', '.join(TIME_PARTS)}")
        cyclic = self.getCyclic()
        new_cols: dict[str, Column] = {}
        for name in self.getInputCols():
            dtype = _field_type(dataset, name)
            if isinstance(dtype, TimestampType | TimestampNTZType):
                ts = _col(name)
            elif isinstance(dtype, DateType):
                ts = _col(name).cast("timestamp")
            elif isinstance(dtype, StringType):
                ts = _col(name).try_cast("timestamp")
            else:
                raise ValueError(
                    f"TimeFeatures: column {name!r} has type {dtype.simpleString()}; need timestamp, date or string"
                )
            values: dict[str, Column] = {
                "hour": F.hour(ts),
                "minute": F.minute(ts),
                "day_of_week": F.weekday(ts),
                "day_of_month": F.dayofmonth(ts),
                "month": F.month(ts),
                "year": F.year(ts),
                "is_weekend": (F.weekday(ts) >= F.lit(5)),
            }
            for p in parts:
                new_cols[f"{name}_{p}"] = values[p].cast("double")
            if cyclic:
                for p in parts:
                    if p in CYCLIC_PERIODS:
                        angle = (values[p].cast("double") - F.lit(cyclic_offset(p))) * F.lit(
                            2.0 * math.pi / CYCLIC_PERIODS[p]
                        )
                        new_cols[f"{name}_{p}_sin"] = F.sin(angle)
                        new_cols[f"{name}_{p}_cos"] = F.cos(angle)
        return dataset.withColumns(new_cols)


# ------------------------------------------------------------------------------------- CastToDouble
class CastToDouble(Transformer, HasInputCols, HasOutputCols, DefaultParamsReadable, DefaultParamsWritable):
    """Cast boolean, numeric (and numeric string) columns to ``double``.

    Booleans become 1.0/0.0, numbers their double value, strings ``try_cast`` to double (trimmed,
    ``NaN``/``Infinity`` and a trailing ``d``/``f`` accepted; unparseable -> null). Null stays null.

    Parameters
    ----------
    inputCols, outputCols
        One output column per input column.
    skipMissing
        Silently skip input columns absent from the frame (used for the label, which is absent at
        prediction time, as Spark's ``StringIndexerModel`` does).
    """

    skipMissing: Param[bool] = Param(
        Params._dummy(),
        "skipMissing",
        "skip input columns absent from the frame",
        typeConverter=TypeConverters.toBoolean,
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        skipMissing: bool = False,
    ):
        super().__init__()
        self._setDefault(skipMissing=False)
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        skipMissing: bool = False,
    ) -> CastToDouble:
        """Set params by keyword."""
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    def getSkipMissing(self) -> bool:
        return bool(self.getOrDefault(self.skipMissing))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        inputs, outputs = self.getInputCols(), self.getOutputCols()
        _check_lengths(inputs, outputs, "CastToDouble")
        new_cols: dict[str, Column] = {}
        for src, dst in zip(inputs, outputs, strict=True):
            if self.getSkipMissing() and src not in dataset.columns:
                continue
            dtype = _field_type(dataset, src)
            if isinstance(dtype, BooleanType | NumericType):
                new_cols[dst] = _col(src).cast("double")
            elif isinstance(dtype, StringType):
                new_cols[dst] = _col(src).try_cast("double")
            else:
                raise ValueError(
                    f"CastToDouble: column {src!r} has type {dtype.simpleString()}; need boolean, number or string"
                )
        return dataset.withColumns(new_cols) if new_cols else dataset


# ---------------------------------------------------------------------------------- ConstantImputer
class ConstantImputer(Transformer, HasInputCols, HasOutputCols, DefaultParamsReadable, DefaultParamsWritable):
    """Replace null and NaN in numeric columns by one constant; output is ``double``.

    Spark's ``Imputer`` has mean/median/mode only; this covers ``missing_values.strategy: constant``.
    """

    fillValue: Param[float] = Param(
        Params._dummy(), "fillValue", "value that replaces null and NaN", typeConverter=TypeConverters.toFloat
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        fillValue: float = 0.0,
    ):
        super().__init__()
        self._setDefault(fillValue=0.0)
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        fillValue: float = 0.0,
    ) -> ConstantImputer:
        """Set params by keyword."""
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    def getFillValue(self) -> float:
        return float(self.getOrDefault(self.fillValue))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        inputs, outputs = self.getInputCols(), self.getOutputCols()
        _check_lengths(inputs, outputs, "ConstantImputer")
        fill = F.lit(self.getFillValue()).cast("double")
        new_cols = {}
        for src, dst in zip(inputs, outputs, strict=True):
            x = _col(src).cast("double")
            new_cols[dst] = F.when(x.isNull() | F.isnan(x), fill).otherwise(x)
        return dataset.withColumns(new_cols)


# --------------------------------------------------------------------------------- MissingIndicator
class MissingIndicator(
    Transformer, HasInputCols, HasOutputCols, DefaultParamsReadable, DefaultParamsWritable
):
    """``1.0`` where the input is null (or NaN for floating columns), else ``0.0``."""

    @keyword_only
    def __init__(self, *, inputCols: list[str] | None = None, outputCols: list[str] | None = None):
        super().__init__()
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self, *, inputCols: list[str] | None = None, outputCols: list[str] | None = None
    ) -> MissingIndicator:
        """Set params by keyword."""
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        inputs, outputs = self.getInputCols(), self.getOutputCols()
        _check_lengths(inputs, outputs, "MissingIndicator")
        new_cols = {}
        for src, dst in zip(inputs, outputs, strict=True):
            dtype = _field_type(dataset, src)
            missing = _col(src).isNull()
            if isinstance(dtype, NumericType):
                missing = missing | F.isnan(_col(src).cast("double"))
            new_cols[dst] = missing.cast("double")
        return dataset.withColumns(new_cols)


# ------------------------------------------------------------------------------ CategoricalImputer
def _as_string(dataset: DataFrame, name: str) -> Column:
    dtype = _field_type(dataset, name)
    if isinstance(dtype, StringType):
        return _col(name)
    return _col(name).cast("string")


class _CategoricalImputerParams(HasInputCols, HasOutputCols):
    strategy: Param[str] = Param(
        Params._dummy(),
        "strategy",
        "'constant' (nulls become fillValue, by default '__missing__') or 'mode' (the most frequent value)",
        typeConverter=TypeConverters.toString,
    )
    fillValue: Param[str] = Param(
        Params._dummy(),
        "fillValue",
        "the category that replaces null with strategy 'constant'",
        typeConverter=TypeConverters.toString,
    )

    def getStrategy(self) -> str:
        return str(self.getOrDefault(self.strategy))

    def getFillValue(self) -> str:
        return str(self.getOrDefault(self.fillValue))


class CategoricalImputer(Estimator, _CategoricalImputerParams, DefaultParamsReadable, DefaultParamsWritable):
    """Cast categorical columns to string and replace null by a category.

    With ``strategy='constant'`` (default) null becomes ``fillValue`` (default ``"__missing__"``), so
    missing is its own category for ``StringIndexer`` (indexed when seen in training; otherwise it
    lands in the indexer's ``handleInvalid='keep'`` bucket like any unseen value). With
    ``strategy='mode'`` null becomes the most frequent training value (ties: the smallest string);
    a column with no value at all falls back to ``fillValue``.

    Non-string inputs (integers, booleans) are cast to string first (``3``, ``true``).
    """

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        strategy: str = "constant",
        fillValue: str = MISSING_CATEGORY,
    ):
        super().__init__()
        self._setDefault(strategy="constant", fillValue=MISSING_CATEGORY)
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        strategy: str = "constant",
        fillValue: str = MISSING_CATEGORY,
    ) -> CategoricalImputer:
        """Set params by keyword."""
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    def _fit(self, dataset: DataFrame) -> CategoricalImputerModel:
        inputs, outputs = self.getInputCols(), self.getOutputCols()
        _check_lengths(inputs, outputs, "CategoricalImputer")
        strategy = self.getStrategy()
        if strategy not in ("constant", "mode"):
            raise ValueError(f"CategoricalImputer: unknown strategy {strategy!r}; valid: constant, mode")
        types = [_field_type(dataset, c).simpleString() for c in inputs]
        fills = [self.getFillValue()] * len(inputs)
        if strategy == "mode" and inputs:
            row = dataset.agg(
                *[F.mode(_as_string(dataset, c), True).alias(f"m{i}") for i, c in enumerate(inputs)]
            ).collect()[0]
            fills = [
                self.getFillValue() if row[f"m{i}"] is None else str(row[f"m{i}"]) for i in range(len(inputs))
            ]
        model = CategoricalImputerModel(
            inputCols=inputs, outputCols=outputs, fillValues=fills, inputTypes=types
        )
        return self._copyValues(model)


class CategoricalImputerModel(Model, _CategoricalImputerParams, DefaultParamsReadable, DefaultParamsWritable):
    """Fitted :class:`CategoricalImputer`: ``coalesce(cast(col as string), fillValues[i])``.

    Parameters
    ----------
    fillValues
        One replacement category per input column (fitted state).
    inputTypes
        Spark simple type names of the inputs seen at fit time (lets the NumPy twin format numbers
        exactly as Spark's cast to string does).
    """

    fillValues: Param[list[str]] = Param(
        Params._dummy(),
        "fillValues",
        "replacement category per input column",
        typeConverter=TypeConverters.toListString,
    )
    inputTypes: Param[list[str]] = Param(
        Params._dummy(),
        "inputTypes",
        "Spark type of each input column at fit time",
        typeConverter=TypeConverters.toListString,
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        fillValues: list[str] | None = None,
        inputTypes: list[str] | None = None,
    ):
        super().__init__()
        self._setDefault(strategy="constant", fillValue=MISSING_CATEGORY)
        kwargs = self._input_kwargs
        self._set(**kwargs)

    def getFillValues(self) -> list[str]:
        return list(self.getOrDefault(self.fillValues))

    def getInputTypes(self) -> list[str]:
        return list(self.getOrDefault(self.inputTypes))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        inputs, outputs, fills = self.getInputCols(), self.getOutputCols(), self.getFillValues()
        _check_lengths(inputs, outputs, "CategoricalImputerModel")
        new_cols = {
            dst: F.coalesce(_as_string(dataset, src), F.lit(fill))
            for src, dst, fill in zip(inputs, outputs, fills, strict=True)
        }
        return dataset.withColumns(new_cols)


CUSTOM_STAGES: tuple[type[Any], ...] = (
    TimeFeatures,
    CastToDouble,
    ConstantImputer,
    MissingIndicator,
    CategoricalImputer,
    CategoricalImputerModel,
)
"""Every custom stage class (a contract test runs each through the same checks)."""
