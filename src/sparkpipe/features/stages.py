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
ClipVector
    Clips every slot of a vector into ``[lower, upper]`` (after min-max scaling for Naive Bayes).
CategoricalImputer / CategoricalImputerModel
    Casts categorical columns to string and fills nulls with ``"__missing__"`` (its own category),
    a constant, or the training mode.
OutlierHandler / OutlierHandlerModel
    z-score or IQR bounds learned at fit time; clip (winsorize) or flag (``features.outliers``).
SafeRatio, PairwiseProduct
    ``a / b`` with safe division and ``a * b``; never an infinity (``features.ratios``).
ElapsedTime
    Time between two timestamp columns (``features.time_features.elapsed``).
RareCategoryGrouper / RareCategoryGrouperModel
    Categories seen fewer than ``rare_threshold`` times become ``"__rare__"`` (learned at fit time).
GroupAggregator / GroupAggregatorModel
    Per-entity aggregates learned from training data, kept as a parquet lookup table inside the stage
    directory (custom writer/reader) and joined at transform time (``features.aggregations``).
ImportanceSelector
    Fits a quick forest and returns a Spark ``VectorSlicer`` of the top-k slots (``selection``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

from pyspark import keyword_only
from pyspark.ml import Estimator, Model, Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasFeaturesCol,
    HasInputCol,
    HasInputCols,
    HasLabelCol,
    HasOutputCol,
    HasOutputCols,
    HasSeed,
)
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLWritable,
)
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

from sparkpipe.core import INTEGRAL_TYPES
from sparkpipe.features import mlio

log = logging.getLogger(__name__)
mlio.install()  # every sparkpipe model imports this module before it is saved or loaded

MISSING_CATEGORY = "__missing__"
"""The category a null categorical value becomes (``missing_values.categorical_strategy: category``)."""

TIME_PARTS: tuple[str, ...] = ("hour", "day_of_week", "month", "is_weekend", "day_of_month", "year", "minute")
"""Calendar parts :class:`TimeFeatures` can emit."""

CYCLIC_PERIODS: dict[str, float] = {"hour": 24.0, "day_of_week": 7.0, "month": 12.0}
"""Parts that get ``_sin``/``_cos`` encodings when ``cyclic`` is on, with their periods."""

DEFAULT_TIME_PARTS: tuple[str, ...] = ("hour", "day_of_week", "month", "is_weekend")


class ParamsWriter(DefaultParamsWriter):
    """:class:`~pyspark.ml.util.DefaultParamsWriter` that writes the same ``metadata`` file from the JVM.

    PySpark writes a Python stage's metadata from ``createDataFrame([(json,)])``: a frame of pickled
    Python rows, so the write runs a Python worker (measured on a warm session: 0.26 s per stage save).
    This writes the same JSON line (the same fields, through PySpark's own :meth:`_get_metadata_to_save`)
    to the same place, one text file, from a one-row ``range`` in the JVM: 0.13 s; in local mode
    :mod:`sparkpipe.features.mlio` writes the file itself, without a Spark job.
    :class:`~pyspark.ml.util.DefaultParamsReader` reads it back unchanged.
    """

    def saveImpl(self, path: str) -> None:
        spark = self.sparkSession
        metadata = DefaultParamsWriter._get_metadata_to_save(self.instance, spark)
        target = os.path.join(path, "metadata")
        if not mlio.write_text_line(spark, target, metadata):  # local mode: no Spark job at all
            spark.range(0, 1, 1, 1).select(F.lit(metadata).alias("value")).write.text(target)


class ParamsWritable(DefaultParamsWritable):
    """:class:`~pyspark.ml.util.DefaultParamsWritable` saving through :class:`ParamsWriter`."""

    def write(self) -> ParamsWriter:
        return ParamsWriter(self)


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


class TimeFeatures(Transformer, HasInputCols, DefaultParamsReadable, ParamsWritable):
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
class CastToDouble(Transformer, HasInputCols, HasOutputCols, DefaultParamsReadable, ParamsWritable):
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
class ConstantImputer(Transformer, HasInputCols, HasOutputCols, DefaultParamsReadable, ParamsWritable):
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
class MissingIndicator(Transformer, HasInputCols, HasOutputCols, DefaultParamsReadable, ParamsWritable):
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


# ------------------------------------------------------------------------------------- ClipVector
class ClipVector(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, ParamsWritable):
    """Every slot of a vector clipped into ``[lower, upper]``; NaN stays NaN; the output is dense.

    After ``MinMaxScaler`` for Naive Bayes: a validation or served row below the training minimum
    (or above the maximum) would otherwise scale outside ``[0, 1]``, and a negative value makes
    multinomial Naive Bayes fail. Built from ``transform`` over ``vector_to_array`` (JVM only).
    """

    lower: Param[float] = Param(
        Params._dummy(), "lower", "smallest value kept", typeConverter=TypeConverters.toFloat
    )
    upper: Param[float] = Param(
        Params._dummy(), "upper", "largest value kept", typeConverter=TypeConverters.toFloat
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str | None = None,
        outputCol: str | None = None,
        lower: float = 0.0,
        upper: float = 1.0,
    ):
        super().__init__()
        self._setDefault(lower=0.0, upper=1.0)
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCol: str | None = None,
        outputCol: str | None = None,
        lower: float = 0.0,
        upper: float = 1.0,
    ) -> ClipVector:
        """Set params by keyword."""
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pyspark.ml.functions import array_to_vector, vector_to_array

        src, lo, hi = self.getInputCol(), F.lit(self.getOrDefault("lower")), F.lit(self.getOrDefault("upper"))
        clipped = F.transform(
            vector_to_array(_col(src)),
            lambda x: F.when(F.isnan(x), x).otherwise(F.least(F.greatest(x, lo), hi)),
        )
        meta = dataset.schema[src].metadata
        return dataset.withColumn(self.getOutputCol(), array_to_vector(clipped).alias("v", metadata=meta))


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


class CategoricalImputer(Estimator, _CategoricalImputerParams, DefaultParamsReadable, ParamsWritable):
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


class CategoricalImputerModel(Model, _CategoricalImputerParams, DefaultParamsReadable, ParamsWritable):
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


# ------------------------------------------------------------------------------------ shared helpers
def _double(dataset: DataFrame, name: str) -> Column:
    """A numeric/boolean (or numeric string) column as ``double``; NaN becomes null."""
    dtype = _field_type(dataset, name)
    if isinstance(dtype, StringType):
        x = _col(name).try_cast("double")
    elif isinstance(dtype, BooleanType | NumericType):
        x = _col(name).cast("double")
    else:
        raise ValueError(f"column {name!r} has type {dtype.simpleString()}; need a number, boolean or string")
    return F.when(~F.isnan(x), x)


def _finite_or_null(x: Column) -> Column:
    """``x`` where it is a finite double, else null (never NaN or an infinity)."""
    return F.when(~F.isnan(x) & (F.abs(x) != F.lit(math.inf)), x)


def _list_param(name: str, doc: str) -> Param[list[str]]:
    return Param(Params._dummy(), name, doc, typeConverter=TypeConverters.toListString)


# ---------------------------------------------------------------------------------- OutlierHandler
OUTLIER_METHODS: tuple[str, ...] = ("zscore", "iqr")
OUTLIER_ACTIONS: tuple[str, ...] = ("clip", "flag")


class _OutlierParams(HasInputCols, HasOutputCols):
    method: Param[str] = Param(
        Params._dummy(),
        "method",
        "'zscore' (mean +- threshold * std) or 'iqr' (q1 - threshold * IQR, q3 + threshold * IQR)",
        typeConverter=TypeConverters.toString,
    )
    threshold: Param[float] = Param(
        Params._dummy(), "threshold", "width of the accepted band", typeConverter=TypeConverters.toFloat
    )
    action: Param[str] = Param(
        Params._dummy(),
        "action",
        "'clip' (winsorize to the bounds) or 'flag' (1.0 outside the bounds, else 0.0)",
        typeConverter=TypeConverters.toString,
    )
    accuracy: Param[int] = Param(
        Params._dummy(),
        "accuracy",
        "percentile_approx accuracy for the quartiles (method 'iqr')",
        typeConverter=TypeConverters.toInt,
    )

    def getMethod(self) -> str:
        return str(self.getOrDefault(self.method))

    def getThreshold(self) -> float:
        return float(self.getOrDefault(self.threshold))

    def getAction(self) -> str:
        return str(self.getOrDefault(self.action))

    def getAccuracy(self) -> int:
        return int(self.getOrDefault(self.accuracy))

    def _set_outlier_defaults(self) -> None:
        self._setDefault(method="iqr", threshold=1.5, action="clip", accuracy=10000)


class OutlierHandler(Estimator, _OutlierParams, DefaultParamsReadable, ParamsWritable):
    """Learn per-column outlier bounds at fit time; clip (winsorize) or flag values outside them.

    ``zscore``: bounds ``mean -+ threshold * std`` (sample standard deviation); ``iqr``: bounds
    ``q1 - threshold * (q3 - q1)`` and ``q3 + threshold * (q3 - q1)`` with the quartiles from
    ``percentile_approx``. Null and NaN are ignored when learning. One aggregation job for all columns.
    The fitted :class:`OutlierHandlerModel` holds the bounds as plain float-list params.
    """

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        method: str = "iqr",
        threshold: float = 1.5,
        action: str = "clip",
        accuracy: int = 10000,
    ):
        super().__init__()
        self._set_outlier_defaults()
        kwargs = self._input_kwargs
        self.setParams(**kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        method: str = "iqr",
        threshold: float = 1.5,
        action: str = "clip",
        accuracy: int = 10000,
    ) -> OutlierHandler:
        """Set params by keyword."""
        kwargs = self._input_kwargs
        return self._set(**kwargs)

    def _fit(self, dataset: DataFrame) -> OutlierHandlerModel:
        inputs, outputs = self.getInputCols(), self.getOutputCols()
        _check_lengths(inputs, outputs, "OutlierHandler")
        method, action, t = self.getMethod(), self.getAction(), self.getThreshold()
        if method not in OUTLIER_METHODS:
            raise ValueError(
                f"OutlierHandler: unknown method {method!r}; valid: {', '.join(OUTLIER_METHODS)}"
            )
        if action not in OUTLIER_ACTIONS:
            raise ValueError(
                f"OutlierHandler: unknown action {action!r}; valid: {', '.join(OUTLIER_ACTIONS)}"
            )
        exprs: list[Column] = [F.lit(1).alias("_one")]
        for i, c in enumerate(inputs):
            x = _double(dataset, c)
            if method == "zscore":
                exprs += [F.avg(x).alias(f"a{i}"), F.stddev_samp(x).alias(f"b{i}")]
            else:
                q = F.percentile_approx(x, [0.25, 0.75], self.getAccuracy())
                exprs += [q[0].alias(f"a{i}"), q[1].alias(f"b{i}")]
        row = dataset.agg(*exprs).collect()[0]
        lower, upper = [], []
        for i, c in enumerate(inputs):
            a, b = row[f"a{i}"], row[f"b{i}"]
            if a is None:  # no value at all: nothing to bound
                lo, hi = -_MAX_DOUBLE, _MAX_DOUBLE
            elif method == "zscore":
                std = 0.0 if b is None else float(b)
                lo, hi = float(a) - t * std, float(a) + t * std
            else:
                iqr = float(b) - float(a)
                lo, hi = float(a) - t * iqr, float(b) + t * iqr
            lower.append(lo)
            upper.append(hi)
            log.debug("outlier bounds of %s: [%g, %g]", c, lo, hi)
        model = OutlierHandlerModel(
            inputCols=inputs, outputCols=outputs, lowerBounds=lower, upperBounds=upper
        )
        return self._copyValues(model)


_MAX_DOUBLE = 1.7976931348623157e308


class OutlierHandlerModel(Model, _OutlierParams, DefaultParamsReadable, ParamsWritable):
    """Fitted :class:`OutlierHandler`.

    ``action='clip'``: ``least(greatest(x, lower), upper)`` as ``double`` (null and NaN pass through,
    ``+-Infinity`` are clipped). ``action='flag'``: ``1.0`` where ``x < lower`` or ``x > upper``, else
    ``0.0`` (null and NaN are not outliers: ``0.0``).

    Parameters
    ----------
    lowerBounds, upperBounds
        One bound per input column (fitted state).
    """

    lowerBounds: Param[list[float]] = Param(
        Params._dummy(),
        "lowerBounds",
        "lower bound per input column",
        typeConverter=TypeConverters.toListFloat,
    )
    upperBounds: Param[list[float]] = Param(
        Params._dummy(),
        "upperBounds",
        "upper bound per input column",
        typeConverter=TypeConverters.toListFloat,
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        lowerBounds: list[float] | None = None,
        upperBounds: list[float] | None = None,
    ):
        super().__init__()
        self._set_outlier_defaults()
        kwargs = self._input_kwargs
        self._set(**kwargs)

    def getLowerBounds(self) -> list[float]:
        return [float(v) for v in self.getOrDefault(self.lowerBounds)]

    def getUpperBounds(self) -> list[float]:
        return [float(v) for v in self.getOrDefault(self.upperBounds)]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        inputs, outputs = self.getInputCols(), self.getOutputCols()
        lows, highs = self.getLowerBounds(), self.getUpperBounds()
        _check_lengths(inputs, outputs, "OutlierHandlerModel")
        if not len(lows) == len(highs) == len(inputs):
            raise ValueError("OutlierHandlerModel: lowerBounds/upperBounds need one value per input column")
        flag = self.getAction() == "flag"
        new_cols: dict[str, Column] = {}
        for src, dst, lo, hi in zip(inputs, outputs, lows, highs, strict=True):
            dtype = _field_type(dataset, src)
            x = _col(src).try_cast("double") if isinstance(dtype, StringType) else _col(src).cast("double")
            lo_c, hi_c = F.lit(lo).cast("double"), F.lit(hi).cast("double")
            valid = x.isNotNull() & ~F.isnan(x)
            if flag:
                new_cols[dst] = F.when(valid & ((x < lo_c) | (x > hi_c)), F.lit(1.0)).otherwise(F.lit(0.0))
            else:
                new_cols[dst] = F.when(~valid, x).when(x < lo_c, lo_c).when(x > hi_c, hi_c).otherwise(x)
        return dataset.withColumns(new_cols)


# ---------------------------------------------------------------------- SafeRatio / PairwiseProduct
class _BinaryArithmetic(Transformer, HasOutputCols, DefaultParamsReadable, ParamsWritable):
    leftCols: Param[list[str]] = _list_param("leftCols", "left operand column per output")
    rightCols: Param[list[str]] = _list_param("rightCols", "right operand column per output")

    @keyword_only
    def __init__(
        self,
        *,
        leftCols: list[str] | None = None,
        rightCols: list[str] | None = None,
        outputCols: list[str] | None = None,
    ):
        super().__init__()
        kwargs = self._input_kwargs
        self._set(**kwargs)

    def getLeftCols(self) -> list[str]:
        return list(self.getOrDefault(self.leftCols))

    def getRightCols(self) -> list[str]:
        return list(self.getOrDefault(self.rightCols))

    def _op(self, left: Column, right: Column) -> Column:  # pragma: no cover - interface
        raise NotImplementedError

    def _transform(self, dataset: DataFrame) -> DataFrame:
        left, right, outputs = self.getLeftCols(), self.getRightCols(), self.getOutputCols()
        name = type(self).__name__
        _check_lengths(left, outputs, name)
        _check_lengths(right, outputs, name)
        new_cols = {
            o: _finite_or_null(self._op(_double(dataset, a), _double(dataset, b)))
            for a, b, o in zip(left, right, outputs, strict=True)
        }
        return dataset.withColumns(new_cols)


class SafeRatio(_BinaryArithmetic):
    """``left / right`` as ``double`` with safe division: a null, NaN or zero denominator (or a null/NaN
    numerator) gives null, and so does a non-finite result (overflow): never an infinity or NaN. The
    nulls are imputed by the next step like any missing value."""

    def _op(self, left: Column, right: Column) -> Column:
        return F.when(right != F.lit(0.0), F.try_divide(left, right))


class PairwiseProduct(_BinaryArithmetic):
    """``left * right`` as ``double``; null when either side is null/NaN or the product overflows."""

    def _op(self, left: Column, right: Column) -> Column:
        return left * right


# ------------------------------------------------------------------------------------- ElapsedTime
ELAPSED_UNITS: dict[str, int] = {
    "seconds": 1_000_000,
    "minutes": 60_000_000,
    "hours": 3_600_000_000,
    "days": 86_400_000_000,
}
"""Microseconds per unit of :class:`ElapsedTime`."""


def _epoch_micros(dataset: DataFrame, name: str) -> Column:
    dtype = _field_type(dataset, name)
    if isinstance(dtype, TimestampType):
        ts = _col(name)
    elif isinstance(dtype, TimestampNTZType | DateType):
        ts = _col(name).cast("timestamp")
    elif isinstance(dtype, StringType):
        ts = _col(name).try_cast("timestamp")
    else:
        raise ValueError(
            f"ElapsedTime: column {name!r} has type {dtype.simpleString()}; need timestamp, date or string"
        )
    return F.unix_micros(ts)


class ElapsedTime(Transformer, HasOutputCols, DefaultParamsReadable, ParamsWritable):
    """Time from ``startCols[i]`` to ``endCols[i]`` in ``units[i]`` (seconds, minutes, hours, days).

    ``(unix_micros(end) - unix_micros(start)) / micros_per_unit`` as ``double`` (negative when end is
    before start); null when either side is null or an unparseable string. Dates are midnight UTC.
    """

    startCols: Param[list[str]] = _list_param("startCols", "start timestamp column per output")
    endCols: Param[list[str]] = _list_param("endCols", "end timestamp column per output")
    units: Param[list[str]] = _list_param("units", f"unit per output, one of {list(ELAPSED_UNITS)}")

    @keyword_only
    def __init__(
        self,
        *,
        startCols: list[str] | None = None,
        endCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        units: list[str] | None = None,
    ):
        super().__init__()
        kwargs = self._input_kwargs
        self._set(**kwargs)

    def getStartCols(self) -> list[str]:
        return list(self.getOrDefault(self.startCols))

    def getEndCols(self) -> list[str]:
        return list(self.getOrDefault(self.endCols))

    def getUnits(self) -> list[str]:
        if not self.isDefined(self.units):
            return ["seconds"] * len(self.getOutputCols())
        return list(self.getOrDefault(self.units))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        starts, ends, outputs, units = (
            self.getStartCols(),
            self.getEndCols(),
            self.getOutputCols(),
            self.getUnits(),
        )
        for what in (starts, ends, units):
            _check_lengths(what, outputs, "ElapsedTime")
        bad = [u for u in units if u not in ELAPSED_UNITS]
        if bad:
            raise ValueError(f"ElapsedTime: unknown unit(s) {bad}; valid: {', '.join(ELAPSED_UNITS)}")
        new_cols = {
            o: (_epoch_micros(dataset, e) - _epoch_micros(dataset, s)).cast("double")
            / F.lit(float(ELAPSED_UNITS[u]))
            for s, e, o, u in zip(starts, ends, outputs, units, strict=True)
        }
        return dataset.withColumns(new_cols)


# ------------------------------------------------------------------------------ RareCategoryGrouper
RARE_CATEGORY = "__rare__"
"""The category rare (and unseen) values become (``categorical_encoding.rare_threshold``)."""


def category_counts(dataset: DataFrame, cols: list[str]) -> list[dict[str | None, int]]:
    """Value counts (``None`` = null) of each column cast to string, in one grouped job."""
    if not cols:
        return []
    pairs = F.array(
        *[F.struct(F.lit(i).alias("k"), _as_string(dataset, c).alias("v")) for i, c in enumerate(cols)]
    )
    rows = dataset.select(F.explode(pairs).alias("p")).groupBy("p.k", "p.v").count().collect()
    out: list[dict[str | None, int]] = [{} for _ in cols]
    for r in rows:
        out[r["k"]][r["v"]] = int(r["count"])
    return out


class _RareParams(HasInputCols, HasOutputCols):
    minCount: Param[int] = Param(
        Params._dummy(),
        "minCount",
        "categories seen fewer times than this in training become rareLabel",
        typeConverter=TypeConverters.toInt,
    )
    rareLabel: Param[str] = Param(
        Params._dummy(), "rareLabel", "the category rare values become", typeConverter=TypeConverters.toString
    )

    def getMinCount(self) -> int:
        return int(self.getOrDefault(self.minCount))

    def getRareLabel(self) -> str:
        return str(self.getOrDefault(self.rareLabel))


class RareCategoryGrouper(Estimator, _RareParams, DefaultParamsReadable, ParamsWritable):
    """Group categories seen fewer than ``minCount`` times in training into ``rareLabel`` (``__rare__``).

    The fitted :class:`RareCategoryGrouperModel` keeps the frequent categories of each column; any other
    value (rare in training, or never seen) becomes ``rareLabel`` at transform time. Inputs are cast to
    string; null stays null (impute before, e.g. with :class:`CategoricalImputer`).
    """

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        minCount: int = 1,
        rareLabel: str = RARE_CATEGORY,
    ):
        super().__init__()
        self._setDefault(minCount=1, rareLabel=RARE_CATEGORY)
        kwargs = self._input_kwargs
        self._set(**kwargs)

    def _fit(self, dataset: DataFrame) -> RareCategoryGrouperModel:
        inputs, outputs = self.getInputCols(), self.getOutputCols()
        _check_lengths(inputs, outputs, "RareCategoryGrouper")
        threshold = self.getMinCount()
        kept = [
            sorted(v for v, n in counts.items() if v is not None and n >= threshold)
            for counts in category_counts(dataset, inputs)
        ]
        model = RareCategoryGrouperModel(
            inputCols=inputs, outputCols=outputs, keptCategories=json.dumps(kept)
        )
        return self._copyValues(model)


class RareCategoryGrouperModel(Model, _RareParams, DefaultParamsReadable, ParamsWritable):
    """Fitted :class:`RareCategoryGrouper`: ``CASE WHEN x IN (kept...) THEN x ELSE rareLabel END``.

    Parameters
    ----------
    keptCategories
        JSON list (one entry per input column) of the sorted categories that stay themselves.
    """

    keptCategories: Param[str] = Param(
        Params._dummy(),
        "keptCategories",
        "JSON list of kept categories per input column",
        typeConverter=TypeConverters.toString,
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        outputCols: list[str] | None = None,
        keptCategories: str | None = None,
    ):
        super().__init__()
        self._setDefault(minCount=1, rareLabel=RARE_CATEGORY)
        kwargs = self._input_kwargs
        self._set(**kwargs)

    def getKeptCategories(self) -> list[list[str]]:
        return [list(k) for k in json.loads(self.getOrDefault(self.keptCategories))]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        inputs, outputs, kept = self.getInputCols(), self.getOutputCols(), self.getKeptCategories()
        _check_lengths(inputs, outputs, "RareCategoryGrouperModel")
        rare = F.lit(self.getRareLabel())
        new_cols: dict[str, Column] = {}
        for src, dst, keep in zip(inputs, outputs, kept, strict=True):
            x = _as_string(dataset, src)
            new_cols[dst] = (
                F.when(x.isNull(), x).when(x.isin(*keep), x).otherwise(rare)
                if keep
                else (F.when(x.isNull(), x).otherwise(rare))
            )
        return dataset.withColumns(new_cols)


# ------------------------------------------------------------------------------------ GroupAggregator
AGG_FUNCTIONS: tuple[str, ...] = ("count", "mean", "sum", "min", "max", "std")
"""Per-entity aggregate functions of :class:`GroupAggregator`."""

DEFAULT_BROADCAST_MAX_ROWS = 2_000_000


def _agg_expr(fn: str, x: Column) -> Column:
    exprs = {
        "count": lambda: F.count(F.lit(1)),
        "mean": lambda: F.avg(x),
        "sum": lambda: F.sum(x),
        "min": lambda: F.min(x),
        "max": lambda: F.max(x),
        "std": lambda: F.stddev_samp(x),
    }
    if fn not in exprs:
        raise ValueError(f"GroupAggregator: unknown function {fn!r}; valid: {', '.join(AGG_FUNCTIONS)}")
    return exprs[fn]().cast("double")


class _GroupAggParams(HasOutputCols):
    groupCols: Param[list[str]] = _list_param("groupCols", "entity key columns (string, integral or boolean)")
    aggCols: Param[list[str]] = _list_param("aggCols", "aggregated column per output ('*' for count)")
    functions: Param[list[str]] = _list_param(
        "functions", f"function per output, one of {list(AGG_FUNCTIONS)}"
    )
    broadcastMaxRows: Param[int] = Param(
        Params._dummy(),
        "broadcastMaxRows",
        "broadcast the lookup table in the join when it has at most this many entities",
        typeConverter=TypeConverters.toInt,
    )

    def getGroupCols(self) -> list[str]:
        return list(self.getOrDefault(self.groupCols))

    def getAggCols(self) -> list[str]:
        return list(self.getOrDefault(self.aggCols))

    def getFunctions(self) -> list[str]:
        return list(self.getOrDefault(self.functions))

    def getBroadcastMaxRows(self) -> int:
        return int(self.getOrDefault(self.broadcastMaxRows))


class GroupAggregator(Estimator, _GroupAggParams, DefaultParamsReadable, ParamsWritable):
    """Learn per-entity aggregates (count, mean, sum, min, max, std) of the training data.

    ``outputCols[i]`` is ``functions[i]`` of ``aggCols[i]`` over the training rows sharing the
    ``groupCols`` key. Rows whose key has a null are not an entity. Global aggregates over all training
    rows are the defaults for unseen entities (and for an entity whose aggregate is null, e.g. the std
    of a single row); the default count is ``0.0`` (an unseen entity was seen zero times). NaN values
    are ignored like nulls. The fitted :class:`GroupAggregatorModel` stores the lookup table as parquet
    inside its stage directory.
    """

    @keyword_only
    def __init__(
        self,
        *,
        groupCols: list[str] | None = None,
        aggCols: list[str] | None = None,
        functions: list[str] | None = None,
        outputCols: list[str] | None = None,
        broadcastMaxRows: int = DEFAULT_BROADCAST_MAX_ROWS,
    ):
        super().__init__()
        self._setDefault(broadcastMaxRows=DEFAULT_BROADCAST_MAX_ROWS)
        kwargs = self._input_kwargs
        self._set(**kwargs)

    def _fit(self, dataset: DataFrame) -> GroupAggregatorModel:
        groups, aggs, fns, outputs = (
            self.getGroupCols(),
            self.getAggCols(),
            self.getFunctions(),
            self.getOutputCols(),
        )
        _check_lengths(aggs, outputs, "GroupAggregator aggCols")
        _check_lengths(fns, outputs, "GroupAggregator functions")
        if not groups:
            raise ValueError("GroupAggregator: groupCols is empty")
        types = []
        for g in groups:
            dtype = _field_type(dataset, g)
            if not isinstance(dtype, StringType | BooleanType) and not (
                isinstance(dtype, NumericType) and dtype.simpleString() in INTEGRAL_TYPES
            ):
                raise ValueError(
                    f"GroupAggregator: group column {g!r} has type {dtype.simpleString()}; use a string, "
                    "integral or boolean key"
                )
            types.append(dtype.simpleString())
        keys = [_as_string(dataset, g).alias(f"k{i}") for i, g in enumerate(groups)]
        not_null = F.lit(True)
        for i in range(len(groups)):
            not_null = not_null & F.col(f"k{i}").isNotNull()
        table = dataset.select(*keys, *[_col(a) for a in dict.fromkeys(a for a in aggs if a != "*")])
        values = [
            _agg_expr(fn, F.lit(1) if fn == "count" else _double(table, a)).alias(f"v{j}")
            for j, (a, fn) in enumerate(zip(aggs, fns, strict=True))
        ]
        table = table.where(not_null).groupBy(*[f"k{i}" for i in range(len(groups))]).agg(*values).cache()
        glob = dataset.agg(
            *[
                _agg_expr(fn, F.lit(1) if fn == "count" else _double(dataset, a)).alias(f"v{j}")
                for j, (a, fn) in enumerate(zip(aggs, fns, strict=True))
            ]
        ).collect()[0]
        defaults = [
            0.0 if fn == "count" or glob[f"v{j}"] is None else float(glob[f"v{j}"])
            for j, fn in enumerate(fns)
        ]
        n = table.count()
        log.info("GroupAggregator over %s: %d entities, %d aggregates", groups, n, len(outputs))
        model = GroupAggregatorModel(
            groupCols=groups,
            aggCols=aggs,
            functions=fns,
            outputCols=outputs,
            defaults=defaults,
            groupTypes=types,
            numEntities=n,
            broadcastMaxRows=self.getBroadcastMaxRows(),
        )
        model.setTable(table)
        return self._copyValues(model)


class GroupAggregatorModelWriter(ParamsWriter):
    """Writes the params (``metadata/``) and the lookup table as parquet (``data/``)."""

    def saveImpl(self, path: str) -> None:
        super().saveImpl(path)
        table = self.instance.getTable()
        table.coalesce(1).write.mode("overwrite").parquet(os.path.join(path, "data"))


class GroupAggregatorModelReader(DefaultParamsReader):
    """Reads the params and points the model at the stored lookup table (read lazily, as ALS does)."""

    def load(self, path: str) -> GroupAggregatorModel:
        model = super().load(path)
        model.setTable(self.sparkSession.read.parquet(os.path.join(path, "data")))
        return model


class GroupAggregatorModel(Model, _GroupAggParams, MLReadable, MLWritable):
    """Fitted :class:`GroupAggregator`: a lookup table joined to the rows at transform time.

    The table (columns ``k0..`` = the group keys cast to string, ``v0..`` = the aggregates) is
    left-joined on the keys (broadcast when it has at most ``broadcastMaxRows`` entities, which keeps
    the rows in order); missing entities and null aggregates take ``defaults``.

    Parameters
    ----------
    defaults
        Global value per output (fitted state).
    groupTypes
        Spark simple type of each group column at fit time (the twin formats keys like Spark's cast).
    numEntities
        Rows of the lookup table.
    """

    defaults: Param[list[float]] = Param(
        Params._dummy(),
        "defaults",
        "value per output for unseen entities",
        typeConverter=TypeConverters.toListFloat,
    )
    groupTypes: Param[list[str]] = _list_param("groupTypes", "Spark type of each group column at fit time")
    numEntities: Param[int] = Param(
        Params._dummy(), "numEntities", "entities in the lookup table", typeConverter=TypeConverters.toInt
    )

    @keyword_only
    def __init__(
        self,
        *,
        groupCols: list[str] | None = None,
        aggCols: list[str] | None = None,
        functions: list[str] | None = None,
        outputCols: list[str] | None = None,
        defaults: list[float] | None = None,
        groupTypes: list[str] | None = None,
        numEntities: int = 0,
        broadcastMaxRows: int = DEFAULT_BROADCAST_MAX_ROWS,
    ):
        super().__init__()
        self._setDefault(broadcastMaxRows=DEFAULT_BROADCAST_MAX_ROWS, numEntities=0)
        self._table: DataFrame | None = None
        kwargs = self._input_kwargs
        self._set(**kwargs)

    def getDefaults(self) -> list[float]:
        return [float(v) for v in self.getOrDefault(self.defaults)]

    def getNumEntities(self) -> int:
        return int(self.getOrDefault(self.numEntities))

    def setTable(self, table: DataFrame) -> GroupAggregatorModel:
        """Attach the lookup table (``k0..``, ``v0..`` columns)."""
        self._table = table
        return self

    def getTable(self) -> DataFrame:
        """The lookup table (``k0..`` keys as strings, ``v0..`` aggregates)."""
        if self._table is None:
            raise ValueError("GroupAggregatorModel has no lookup table; fit or load it")
        return self._table

    def lookup(self) -> dict[tuple[str, ...], list[float | None]]:
        """The whole lookup table collected to the driver (for inspection and tests)."""
        n_keys = len(self.getGroupCols())
        out: dict[tuple[str, ...], list[float | None]] = {}
        for r in self.getTable().collect():
            out[tuple(r[f"k{i}"] for i in range(n_keys))] = [
                r[f"v{j}"] for j in range(len(self.getOutputCols()))
            ]
        return out

    def _transform(self, dataset: DataFrame) -> DataFrame:
        groups, outputs, defaults = self.getGroupCols(), self.getOutputCols(), self.getDefaults()
        _check_lengths(defaults, outputs, "GroupAggregatorModel defaults")
        clash = [o for o in outputs if o in dataset.columns]
        if clash:
            raise ValueError(f"GroupAggregatorModel: output column(s) {clash} already exist in the frame")
        tag = self.uid.replace("-", "_")
        keys = [f"__k{i}_{tag}" for i in range(len(groups))]
        vals = [f"__v{j}_{tag}" for j in range(len(outputs))]
        table = self.getTable().select(
            *[F.col(f"k{i}").alias(k) for i, k in enumerate(keys)],
            *[F.col(f"v{j}").alias(v) for j, v in enumerate(vals)],
        )
        if self.getNumEntities() <= self.getBroadcastMaxRows():
            table = F.broadcast(table)
        left = dataset.withColumns({k: _as_string(dataset, g) for k, g in zip(keys, groups, strict=True)})
        joined = left.join(table, on=keys, how="left")
        out = joined.select(
            *[_col(c) for c in dataset.columns],
            *[
                F.coalesce(F.col(v), F.lit(d).cast("double")).alias(o)
                for v, o, d in zip(vals, outputs, defaults, strict=True)
            ],
        )
        return out

    def write(self) -> GroupAggregatorModelWriter:
        """Writer that stores params and the lookup table."""
        return GroupAggregatorModelWriter(self)

    @classmethod
    def read(cls) -> GroupAggregatorModelReader:
        """Reader that restores params and the lookup table."""
        return GroupAggregatorModelReader(cls)


# ------------------------------------------------------------------------------- ImportanceSelector
class ImportanceSelector(Estimator, HasFeaturesCol, HasOutputCol, HasLabelCol, HasSeed,
                         DefaultParamsReadable, ParamsWritable):  # fmt: skip
    """Keep the ``k`` vector slots a quick random forest finds most important.

    Fitting trains a small random forest (``numTrees``, ``maxDepth``) on ``featuresCol`` and
    ``labelCol`` and returns a Spark ``VectorSlicer`` with the top-``k`` slot indices in ascending order
    (ties broken by the lower index), so the fitted pipeline holds a built-in stage with a NumPy twin.
    With ``k`` >= the vector size every slot is kept.
    """

    k: Param[int] = Param(Params._dummy(), "k", "slots to keep", typeConverter=TypeConverters.toInt)
    task: Param[str] = Param(
        Params._dummy(), "task", "'classification' or 'regression'", typeConverter=TypeConverters.toString
    )
    numTrees: Param[int] = Param(
        Params._dummy(), "numTrees", "trees of the quick forest", TypeConverters.toInt
    )
    maxDepth: Param[int] = Param(
        Params._dummy(), "maxDepth", "depth of the quick forest", TypeConverters.toInt
    )

    @keyword_only
    def __init__(
        self,
        *,
        featuresCol: str = "features",
        outputCol: str | None = None,
        labelCol: str = "label",
        k: int = 50,
        task: str = "classification",
        numTrees: int = 20,
        maxDepth: int = 5,
        seed: int = 42,
    ):
        super().__init__()
        self._setDefault(k=50, task="classification", numTrees=20, maxDepth=5, seed=42)
        kwargs = self._input_kwargs
        self._set(**kwargs)

    def getK(self) -> int:
        return int(self.getOrDefault(self.k))

    def getTask(self) -> str:
        return str(self.getOrDefault(self.task))

    def _fit(self, dataset: DataFrame) -> Transformer:
        from pyspark.ml.classification import RandomForestClassifier
        from pyspark.ml.feature import VectorSlicer
        from pyspark.ml.regression import RandomForestRegressor

        task = self.getTask()
        if task not in ("classification", "regression"):
            raise ValueError(f"ImportanceSelector: task must be classification or regression, got {task!r}")
        cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
        forest = cls(
            featuresCol=self.getFeaturesCol(),
            labelCol=self.getLabelCol(),
            numTrees=int(self.getOrDefault(self.numTrees)),
            maxDepth=int(self.getOrDefault(self.maxDepth)),
            seed=int(self.getSeed()),
        ).fit(dataset)
        imp = forest.featureImportances.toArray()
        order = sorted(range(len(imp)), key=lambda i: (-imp[i], i))
        keep = sorted(order[: self.getK()])
        log.info("ImportanceSelector: kept %d of %d slots", len(keep), len(imp))
        return VectorSlicer(inputCol=self.getFeaturesCol(), outputCol=self.getOutputCol(), indices=keep)


CUSTOM_STAGES: tuple[type[Any], ...] = (
    TimeFeatures,
    CastToDouble,
    ConstantImputer,
    MissingIndicator,
    ClipVector,
    CategoricalImputer,
    CategoricalImputerModel,
    OutlierHandler,
    OutlierHandlerModel,
    SafeRatio,
    PairwiseProduct,
    ElapsedTime,
    RareCategoryGrouper,
    RareCategoryGrouperModel,
    GroupAggregator,
    GroupAggregatorModel,
    ImportanceSelector,
)

"""Every custom stage class (a contract test runs each through the same checks)."""
