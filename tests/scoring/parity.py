"""Parity helper: prove a NumPy twin gives Spark's answers.

Reuse it for any stage or model::

    from .parity import assert_parity

    def test_my_stage(spark, tmp_path):
        model = Pipeline(stages=[...]).fit(train_df)
        assert_parity(model, test_df, tmp_path)

It saves the fitted model, compiles it with :func:`sparkpipe.scoring.compile.compile_pipeline`, feeds the
same rows (collected to Python dicts, as a request would carry them) through the twins and compares
every output column with Spark's ``transform``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparkpipe.errors import InputError
from sparkpipe.scoring.base import RowFallback
from sparkpipe.scoring.compile import CompiledPipeline, compile_pipeline

ATOL = 1e-9
RTOL = 1e-12
"""Relative part of the tolerance: float summation order, not a different computation."""

_ROW = "__parity_row"


def spark_simple_type(dtype: Any) -> str | None:
    """The compile input-schema type name of a Spark SQL data type (None when not an input type)."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    simple = {
        T.DoubleType: "double",
        T.FloatType: "float",
        T.LongType: "long",
        T.IntegerType: "integer",
        T.ShortType: "short",
        T.ByteType: "byte",
        T.BooleanType: "boolean",
        T.StringType: "string",
        T.TimestampType: "timestamp",
        T.TimestampNTZType: "timestamp",
        T.DateType: "date",
    }
    for cls, name in simple.items():
        if isinstance(dtype, cls):
            return name
    if isinstance(dtype, VectorUDT):
        return "vector"
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.StringType):
        return "array<string>"
    return None


def _python_value(v: Any) -> Any:
    if isinstance(v, dt.datetime) and v.tzinfo is None:
        return v.astimezone(dt.UTC)  # pyspark collects timestamps as naive local time
    return v


def save_and_compile(
    spark_model: Any, df: Any, tmp_path: Path, input_schema: Sequence[tuple[str, str]] | None = None
) -> tuple[CompiledPipeline, list[dict[str, Any]]]:
    """Save ``spark_model`` (a PipelineModel or a single fitted stage) under ``tmp_path``, compile it
    and return the compiled pipeline with ``df``'s rows as request records."""
    from pyspark.ml import PipelineModel

    model = spark_model if isinstance(spark_model, PipelineModel) else PipelineModel(stages=[spark_model])
    path = Path(tmp_path) / f"model_{model.uid}"
    model.write().overwrite().save(str(path))
    if input_schema is None:
        input_schema = [(f.name, t) for f in df.schema.fields if (t := spark_simple_type(f.dataType))]
    compiled = compile_pipeline(path, input_schema=input_schema)
    records = [{k: _python_value(v) for k, v in r.asDict().items()} for r in df.collect()]
    return compiled, records


def _to_dense_rows(values: list[Any]) -> np.ndarray:
    rows = []
    width = next((len(v.toArray()) for v in values if v is not None), 0)
    for v in values:
        rows.append(np.full(width, np.nan) if v is None else np.asarray(v.toArray(), dtype=np.float64))
    return np.vstack(rows) if rows else np.zeros((0, width))


def _assert_numbers(col: str, expected: np.ndarray, actual: np.ndarray, atol: float) -> None:
    assert expected.shape == actual.shape, f"{col}: shape {actual.shape} != Spark's {expected.shape}"
    nan_e, nan_a = np.isnan(expected), np.isnan(actual)
    bad_nan = nan_e != nan_a
    assert not bad_nan.any(), (
        f"{col}: null/NaN mismatch at rows {sorted(set(np.argwhere(bad_nan)[:, 0].tolist()))[:10]}; "
        f"Spark {expected[bad_nan][:5]} vs twin {actual[bad_nan][:5]}"
    )
    finite = ~nan_e
    e, a = expected[finite], actual[finite]
    integral = bool(np.all(e == np.round(e))) if e.size else True
    if integral:
        diff = e != a
        assert not diff.any(), f"{col}: exact values differ: Spark {e[diff][:5]} vs twin {a[diff][:5]}"
    else:
        # absolute near zero, relative for large values (a raw score of 9.4e6 on an extreme row is
        # one ulp = 1.9e-9 away when Spark and NumPy sum in another order)
        same_inf = (e == a) | (np.abs(e - a) <= atol + RTOL * np.abs(e))
        assert same_inf.all(), (
            f"{col}: max abs diff {np.nanmax(np.abs(e - a)):.3g} > {atol} + {RTOL:g} x |value|; "
            f"Spark {e[~same_inf][:5]} vs twin {a[~same_inf][:5]}"
        )


def assert_column_equal(col: str, spark_values: list[Any], twin_values: Any, atol: float = ATOL) -> None:
    """Assert one output column equal: strings/lists exactly; numbers and vectors exactly when Spark's
    values are all integral (indices, labels, class predictions), else within ``atol``; Spark null
    equals twin NaN (numbers) or None (strings); sparse vectors are densified."""
    from pyspark.ml.linalg import Vector

    sample = next((v for v in spark_values if v is not None), None)
    if isinstance(sample, Vector) or sp.issparse(twin_values) or getattr(twin_values, "ndim", 1) == 2:
        expected = _to_dense_rows(spark_values)
        actual = (
            twin_values.toarray() if sp.issparse(twin_values) else np.asarray(twin_values, dtype=np.float64)
        )
        if actual.ndim == 1:
            actual = actual.reshape(-1, 1)
        if expected.shape[1] == 0 and all(v is None for v in spark_values):
            assert np.isnan(actual).all(), f"{col}: Spark gives null vectors, twin {actual[:3]}"
            return
        _assert_numbers(col, expected, actual, atol)
    elif isinstance(sample, str) or (
        sample is None and getattr(twin_values, "dtype", None) is np.dtype(object)
    ):
        assert list(twin_values) == spark_values, (
            f"{col}: Spark {spark_values[:8]} vs twin {list(twin_values)[:8]}"
        )
    elif isinstance(sample, list):
        assert [None if v is None else list(v) for v in twin_values] == spark_values, (
            f"{col}: Spark {spark_values[:5]} vs twin {list(twin_values)[:5]}"
        )
    else:
        expected = np.asarray([math.nan if v is None else float(v) for v in spark_values], dtype=np.float64)
        _assert_numbers(col, expected, np.asarray(twin_values, dtype=np.float64), atol)


def assert_parity(
    spark_model: Any,
    df: Any,
    tmp_path: Path,
    columns: Sequence[str] | None = None,
    input_schema: Sequence[tuple[str, str]] | None = None,
    atol: float = ATOL,
) -> CompiledPipeline:
    """Assert the compiled NumPy pipeline reproduces Spark's ``transform`` on ``df``.

    Parameters
    ----------
    spark_model
        A fitted ``PipelineModel`` or a single fitted stage / transformer.
    df
        Spark DataFrame of test rows (keep it small); every row must be accepted by Spark.
    tmp_path
        Directory to save the model in (pytest's ``tmp_path``).
    columns
        Output columns to compare; default every column any stage adds.
    input_schema
        Override of the compile input schema; default derived from ``df.schema``.
    atol
        Absolute tolerance for non-integral numbers (default 1e-9).

    Returns
    -------
    CompiledPipeline
        The compiled pipeline, for further checks.
    """
    compiled, records = save_and_compile(spark_model, df, tmp_path, input_schema)
    assert_plan_matches_spark(compiled, spark_model, df, records, columns, atol)
    return compiled


def assert_plan_matches_spark(
    compiled: CompiledPipeline,
    spark_model: Any,
    df: Any,
    records: list[dict[str, Any]] | None = None,
    columns: Sequence[str] | None = None,
    atol: float = ATOL,
) -> None:
    """Assert an already compiled plan (e.g. a registered version's, compiled from its directory as
    serving does) reproduces ``spark_model.transform`` on ``df``: all rows at once, each row alone,
    and on the row path. ``records`` are ``df``'s rows as request records (default: collected)."""
    from pyspark.sql import functions as F

    if records is None:
        records = [{k: _python_value(v) for k, v in r.asDict().items()} for r in df.collect()]
    # Spark's rows in input order (the order of ``records``): a stage that joins (ALS) reorders them
    indexed = df.withColumn(_ROW, F.monotonically_increasing_id())
    out_rows = sorted(spark_model.transform(indexed).collect(), key=lambda r: r[_ROW])
    assert len(out_rows) == len(records), "Spark dropped rows (handleInvalid='skip'?): use assert_both_reject"
    frame = compiled.transform(compiled.frame_from_records(records))
    cols = list(columns) if columns is not None else compiled.all_output_columns
    assert cols, "nothing to compare: the pipeline declares no output columns"
    for c in cols:
        assert_column_equal(c, [r[c] for r in out_rows], frame[c], atol)
    # twins may take single-row fast paths (serving): each row alone must match Spark too
    singles = [compiled.transform(compiled.frame_from_records([rec])) for rec in records]
    for c in cols:
        for i, single in enumerate(singles):
            assert_column_equal(f"{c} (row {i} scored alone)", [out_rows[i][c]], single[c], atol)
    assert_row_path(compiled, records, out_rows, cols, atol)


def row_value_as_column(value: Any, spark_value: Any = None) -> Any:
    """One row-path value as the one-row frame column the comparisons take (a list is a vector, or a
    token list when Spark's value is a list too)."""
    if isinstance(value, list) and isinstance(spark_value, list):
        out = np.empty(1, dtype=object)
        out[0] = value
        return out
    if isinstance(value, list):
        return np.asarray([value], dtype=np.float64)
    if value is None or isinstance(value, str):
        return np.asarray([value], dtype=object)
    return np.asarray([value], dtype=np.float64)


def assert_row_path(
    compiled: CompiledPipeline,
    records: list[dict[str, Any]],
    out_rows: list[Any],
    cols: Sequence[str],
    atol: float,
) -> None:
    """The row path (small requests) gives Spark's answers too: each record alone, then all together
    as one small request. A row may leave its case to the batch path (:class:`RowFallback`), but not
    every row may: the row path must score the usual rows itself."""
    if not compiled.has_row_path:
        return
    scored = 0
    for i, rec in enumerate(records):
        try:
            (row,) = compiled.score_rows([rec])
        except RowFallback:
            continue
        scored += 1
        for c in cols:
            like = out_rows[i][c]
            assert_column_equal(f"{c} (row {i}, row path)", [like], row_value_as_column(row[c], like), atol)
        predicted = compiled.predict([rec], columns=cols)[0]
        for c in cols:  # predict takes the row path and returns the same values
            like = out_rows[i][c]
            np.testing.assert_array_equal(
                row_value_as_column(predicted[c], like), row_value_as_column(row[c], like), c
            )
    assert scored or not records, "the row path left every row to the batch path"


def assert_both_reject(spark_model: Any, df: Any, tmp_path: Path, field: str | None = None) -> InputError:
    """Assert Spark fails (or, for ``handleInvalid='skip'``, drops rows) on ``df`` and the twin raises
    :class:`InputError` (naming ``field`` when given, e.g. ``instances[2].city``)."""
    import pytest

    compiled, records = save_and_compile(spark_model, df, tmp_path)
    try:
        n_out = len(spark_model.transform(df).collect())
        spark_failed = n_out < len(records)
    except Exception:  # Spark surfaces the failure as a Py4J/Spark exception
        spark_failed = True
    assert spark_failed, "Spark accepted every row; the twin must not reject them"
    with pytest.raises(InputError) as info:
        compiled.transform(compiled.frame_from_records(records))
    if field is not None:
        assert info.value.field == field, f"InputError names {info.value.field!r}, expected {field!r}"
    return info.value
