"""Compile a saved Spark ``PipelineModel`` into a JVM-free NumPy scoring plan.

``compile_pipeline(path)`` reads the saved stage directories (plain JSON + parquet through pyarrow; no
SparkSession, no JVM, no ``pyspark`` import), instantiates the registered NumPy twin of every stage and
returns a :class:`CompiledPipeline` that turns request records into a frame, runs the twins and returns
the model's outputs.

Input records are validated against the input schema: a missing column or a value that cannot be cast
to the column's type raises :class:`~sparkpipe.errors.InputError` naming the field
(``instances[3].age``). Extra columns the pipeline does not use are ignored.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import math
import warnings
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparkpipe.errors import InputError, ScoringError, UnsupportedStageError
from sparkpipe.scoring import features as _features  # noqa: F401  (registers the feature twins)
from sparkpipe.scoring.base import (
    TWINS,
    Frame,
    Row,
    RowFallback,
    RowFn,
    StageFiles,
    Twin,
    generated_function,
    n_rows,
)

logger = logging.getLogger(__name__)

for _mod in ("sparkpipe.scoring.models", "sparkpipe.scoring.custom"):
    try:
        importlib.import_module(_mod)
    except ModuleNotFoundError as _exc:  # only the module itself being absent is tolerated
        if _exc.name != _mod:
            raise
        logger.debug("optional twin module %s is not available", _mod)

PIPELINE_CLASSES = frozenset({"org.apache.spark.ml.PipelineModel", "pyspark.ml.pipeline.PipelineModel"})
NUMERIC_TYPES = frozenset({"double", "float", "long", "integer", "short", "byte"})
INTEGRAL_TYPES = frozenset({"long", "integer", "short", "byte"})
SIMPLE_TYPES = NUMERIC_TYPES | {"boolean", "string", "timestamp", "date"}
EXTRA_TYPES = frozenset({"vector", "array<string>"})
"""Accepted as well, for pipelines whose first stage consumes a vector or a token list."""

MLFLOW_TYPES = {
    "double": "double",
    "float": "float",
    "long": "long",
    "integer": "integer",
    "boolean": "boolean",
    "string": "string",
    "datetime": "timestamp",
    "binary": "string",
}
_TYPE_ALIASES = {
    "int": "integer",
    "bigint": "long",
    "smallint": "short",
    "tinyint": "byte",
    "bool": "boolean",
}
MODEL_OUTPUT_PARAMS = ("predictionCol", "probabilityCol", "rawPredictionCol")

_MISSING = object()
_NUMBER_TYPES = frozenset({float, int, bool, type(None), np.float64, np.float32, np.int64, np.int32})
_FAST_NUMBER_TYPES = frozenset({float, int})
_WHOLE_TYPES = frozenset({int, bool, type(None), np.int64, np.int32})
"""Value types that are integral (or null) by construction: an integral column needs no fraction check."""
_STRING_TYPES = frozenset({str, type(None)})
_STR_ONLY = {str}
_BOOL_TYPES = frozenset({bool, type(None)})
_F64 = np.dtype(np.float64)
_OBJECT = np.dtype(object)
_EPOCH = np.datetime64("1970-01-01T00:00:00", "us")
_PY_EPOCH = dt.datetime(1970, 1, 1)
_ONE_US = dt.timedelta(microseconds=1)
_NAT_US = np.iinfo(np.int64).min
_US_DTYPE = np.dtype("datetime64[us]")
_NAN = math.nan

ROW_PATH_MAX_ROWS = 12
"""Requests of at most this many rows take the row path (when every twin has one). Measured (CPU time,
2-core machine): the churn LR pipeline costs ~12 us per row on the row path against ~80 us for one row
and ~210-250 us for 4-32 rows on the batch path (crossover ~20 rows); the 100-tree forest ~34 us per row
against ~190 us for one row and ~330-410 us for 4-16 rows (crossover ~12 rows)."""


# ------------------------------------------------------------------------------------- locating stages
def _pipeline_root(path: Path) -> Path:
    """The directory holding ``metadata/`` and ``stages/`` (``path`` itself or MLflow's ``sparkml/``)."""
    if (path / "MLmodel").is_file():
        for cand in (path / "sparkml", path / "model" / "sparkml"):
            if (cand / "metadata").is_dir():
                return cand
        raise ScoringError(f"{path} is an MLflow model without a sparkml/ directory (not a Spark model)")
    if (path / "metadata").is_dir():
        return path
    raise ScoringError(f"{path} is neither a saved Spark PipelineModel nor an MLflow spark model directory")


def _stage_index(name: str) -> int:
    head = name.split("_", 1)[0]
    if not head.isdigit():
        raise ScoringError(f"stage directory {name!r} does not start with an index")
    return int(head)


def _read_stages(root: Path) -> list[StageFiles]:
    """Saved stages of the pipeline at ``root`` in order, nested PipelineModels flattened."""
    meta = StageFiles.open(root)
    if meta.class_name not in PIPELINE_CLASSES:
        return [meta]  # a single saved stage is a one-stage pipeline
    stages_dir = root / "stages"
    dirs = sorted((d for d in stages_dir.iterdir() if d.is_dir()), key=lambda d: _stage_index(d.name))
    uids = list(meta.param("stageUids", []) or [])
    found = [d.name.split("_", 1)[1] if "_" in d.name else "" for d in dirs]
    if uids and found != uids:
        raise ScoringError(
            f"stage directories of {root} do not match its metadata stageUids: {found} vs {uids}"
        )
    out: list[StageFiles] = []
    for d in dirs:
        st = StageFiles.open(d)
        if st.class_name in PIPELINE_CLASSES:
            out.extend(_read_stages(d))
        else:
            out.append(st)
    return out


def _normalise_type(name: str, t: str) -> str:
    t = _TYPE_ALIASES.get(t.lower(), t.lower())
    if t not in SIMPLE_TYPES and t not in EXTRA_TYPES:
        raise ScoringError(
            f"input column {name!r} has unsupported type {t!r}; use one of {sorted(SIMPLE_TYPES)}"
        )
    return t


def _mlflow_schema(path: Path) -> list[tuple[str, str]] | None:
    mlmodel = path / "MLmodel"
    if not mlmodel.is_file():
        return None
    import yaml

    doc = yaml.safe_load(mlmodel.read_text()) or {}
    inputs = (doc.get("signature") or {}).get("inputs")
    if not inputs:
        return None
    cols = json.loads(inputs) if isinstance(inputs, str) else inputs
    schema = []
    for c in cols:
        if "name" not in c:
            raise ScoringError(f"{mlmodel}: signature inputs must be named columns (got {c})")
        t = MLFLOW_TYPES.get(str(c.get("type", "double")))
        if c.get("type") == "array" and (c.get("items") or {}).get("type") in ("double", "float"):
            t = "vector"  # an ML vector input (e.g. libsvm's features)
        if t is None:
            raise ScoringError(
                f"{mlmodel}: column {c['name']!r} has unsupported MLflow type {c.get('type')!r}"
            )
        schema.append((c["name"], t))
    return schema


def _infer_schema(twins: list[Twin]) -> list[tuple[str, str]]:
    produced: set[str] = set()
    schema: list[tuple[str, str]] = []
    seen: set[str] = set()
    for t in twins:
        for c in t.input_cols:
            if c not in produced and c not in seen:
                seen.add(c)
                schema.append((c, "string" if getattr(t, "consumes", None) == "string" else "double"))
        produced.update(t.output_cols)
    return schema


def _open_twins(stages: list[StageFiles]) -> tuple[list[Twin], list[str]]:
    twins: list[Twin] = []
    problems: list[str] = []
    for st in stages:
        cls = TWINS.get(st.class_name)
        if cls is None:
            problems.append(f"{st.class_name} (stage {st.path.name})")
            continue
        try:
            twins.append(cls(st))
        except UnsupportedStageError as exc:
            problems.append(f"{st.class_name} (stage {st.path.name}): {exc}")
    return twins, problems


def unsupported_stages(path: str | Path) -> list[str]:
    """Class names of the saved pipeline's stages that have no NumPy twin (or whose twin cannot handle
    the stage's settings). Empty means :func:`compile_pipeline` will succeed.

    Parameters
    ----------
    path
        A saved PipelineModel directory or an MLflow spark model directory.
    """
    stages = _read_stages(_pipeline_root(Path(path)))
    _, problems = _open_twins(stages)
    return [p.split(" (", 1)[0] for p in problems]


def compile_pipeline(
    path: str | Path,
    input_schema: Sequence[tuple[str, str]] | Mapping[str, str] | None = None,
    output_columns: Sequence[str] | None = None,
    tracking_uri: str | None = None,
) -> CompiledPipeline:
    """Compile a saved Spark PipelineModel (or MLflow spark model) into a NumPy scoring plan.

    Parameters
    ----------
    path
        A saved ``PipelineModel`` directory (``metadata/`` + ``stages/``), an MLflow model directory
        (``MLmodel`` + ``sparkml/``), or a model URI: ``models:/churn_model@champion``,
        ``models:/churn_model/1``, ``runs:/<run id>/model``. A URI is resolved in the MLflow registry
        (``tracking_uri``, default ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``) and the version is
        copied once into the local model cache (see :func:`sparkpipe.tracking.local_model_dir`).
    input_schema
        Ordered ``(name, type)`` pairs (or a mapping) with Spark simple type names. Defaults to the
        MLflow signature's inputs, else to the columns the stages consume that no stage produces.
    output_columns
        Columns :meth:`CompiledPipeline.predict` returns; default: the final model's outputs (plus any
        ``IndexToString`` label after it), or the last stage's outputs for a feature-only pipeline.
    tracking_uri
        The MLflow store a model URI is resolved in (ignored for a directory).

    Returns
    -------
    CompiledPipeline

    Raises
    ------
    UnsupportedStageError
        Naming every stage without a twin (the caller may fall back to Spark).
    ScoringError
        The directory is not a saved Spark model.
    ModelError
        A model URI that does not resolve (naming the registered models, versions or aliases).
    """
    path = _model_dir(path, tracking_uri)
    stages = _read_stages(_pipeline_root(path))
    twins, problems = _open_twins(stages)
    if problems:
        err = UnsupportedStageError("no NumPy twin for: " + "; ".join(problems))
        err.stages = [p.split(" (", 1)[0] for p in problems]  # type: ignore[attr-defined]
        raise err
    if input_schema is not None:
        items = input_schema.items() if isinstance(input_schema, Mapping) else input_schema
        schema = [(n, _normalise_type(n, t)) for n, t in items]
        source = "argument"
    elif (ml := _mlflow_schema(path)) is not None:
        schema = ml
        source = "MLmodel signature"
    else:
        schema = _infer_schema(twins)
        source = "inferred"
    logger.info("compiled %s: %d stages, input schema (%s) %s", path, len(twins), source, schema)
    return CompiledPipeline(twins, schema, output_columns=output_columns, source=str(path))


def _model_dir(path: str | Path, tracking_uri: str | None) -> Path:
    """``path`` as a local directory: a ``models:/``/``runs:/`` URI is fetched into the model cache."""
    if isinstance(path, str) and path.startswith(("models:/", "runs:/")):
        from sparkpipe.config import MlflowConfig
        from sparkpipe.tracking import local_model_dir

        cfg = MlflowConfig(tracking_uri=tracking_uri) if tracking_uri else MlflowConfig()
        return local_model_dir(path, cfg)
    return Path(path)


# -------------------------------------------------------------------------------------- input casting
_FAST_CAST_ROWS = 64
"""Numeric columns longer than this (whose first value is a plain int or float) first try one C pass,
``array('d', values)``, that converts and type-checks at once: it takes ints, floats and bools and
raises on ``None``, strings, lists and dicts, after which the checked path names the value. JSON bodies
hold nothing else. Unlike the checked path it also takes a Python caller's other number types
(``Decimal``, ``Fraction``: anything with ``__float__``) as their float value (2x faster on 10k rows)."""


def _cast_numeric(t: str, name: str, vals: list[Any]) -> np.ndarray:
    if len(vals) > _FAST_CAST_ROWS and type(vals[0]) in _FAST_NUMBER_TYPES:
        try:
            x = np.frombuffer(array("d", vals), dtype=_F64)
        except (TypeError, OverflowError):
            pass
        else:
            if t in INTEGRAL_TYPES:
                with np.errstate(invalid="ignore"):
                    whole = type(vals[0]) is int and ((x - np.trunc(x)) == 0.0).all()  # not NaN, inf
                if not whole:
                    return _cast_numeric_checked(t, name, vals)
            elif t == "float":
                x = x.astype(np.float32).astype(np.float64)
            return x
    return _cast_numeric_checked(t, name, vals)


def _cast_numeric_checked(t: str, name: str, vals: list[Any]) -> np.ndarray:
    kinds = {type(vals[0])} if len(vals) == 1 else set(map(type, vals))
    if not kinds <= _NUMBER_TYPES:  # subclasses of int/float pass, anything else is named
        ok = _NUMBER_TYPES
        for i, v in enumerate(vals):
            if type(v) not in ok and not (isinstance(v, int | float) and not isinstance(v, str)):
                raise InputError.at(name, i, f"expected {t}, got {type(v).__name__} {v!r}", t)
    x = np.array(vals, _F64)
    if t in INTEGRAL_TYPES:
        if not kinds <= _WHOLE_TYPES:
            with np.errstate(invalid="ignore"):
                frac = x - np.trunc(x)  # NaN for null and +-inf
            if not (frac == 0.0).all():
                bad = (frac != 0.0) & ~np.isnan(x)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise InputError.at(name, i, f"expected {t}, got {vals[i]!r}", t)
    elif t == "float":
        x = x.astype(np.float32).astype(np.float64)
    return x


def _cast_string(name: str, vals: list[Any]) -> np.ndarray:
    if not ({type(vals[0])} if len(vals) == 1 else set(map(type, vals))) <= _STRING_TYPES:
        for i, v in enumerate(vals):
            if v is not None and type(v) is not str:
                raise InputError.at(name, i, f"expected string, got {type(v).__name__} {v!r}", "string")
    return np.array(vals, _OBJECT)  # str and None only: always one dimension


def _cast_bool(name: str, vals: list[Any]) -> np.ndarray:
    if ({type(vals[0])} if len(vals) == 1 else set(map(type, vals))) <= _BOOL_TYPES:
        return np.array(vals, _F64)  # True/False -> 1.0/0.0, None -> NaN
    out = np.empty(len(vals), dtype=np.float64)
    for i, v in enumerate(vals):
        if v is None:
            out[i] = np.nan
        elif v is True or v is False or (type(v) is int and v in (0, 1)):
            out[i] = float(v)
        else:
            raise InputError.at(name, i, f"expected boolean, got {type(v).__name__} {v!r}", "boolean")
    return out


def _to_utc_us(v: Any, is_date: bool) -> int:
    """Microseconds since the epoch (UTC) of one timestamp/date value; ``ValueError`` if it is none."""
    if isinstance(v, str):
        s = v.strip()
        try:
            if is_date and len(s) == 10:
                d = dt.date.fromisoformat(s)
                return (dt.datetime(d.year, d.month, d.day) - _PY_EPOCH) // _ONE_US
            v = dt.datetime.fromisoformat(s.replace(" ", "T", 1))
        except ValueError:
            raise ValueError(v) from None
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        if is_date:
            v = dt.datetime(v.year, v.month, v.day)
        if type(v) is dt.datetime:
            return (v - _PY_EPOCH) // _ONE_US
        return int(np.datetime64(v, "us").astype(np.int64))
    if isinstance(v, dt.date):
        return (dt.datetime(v.year, v.month, v.day) - _PY_EPOCH) // _ONE_US
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        ts = _EPOCH + np.timedelta64(round(v * 1_000_000), "us")
        if is_date:
            ts = ts.astype("datetime64[D]").astype("datetime64[us]")
        return int(ts.astype(np.int64))
    raise ValueError(v)


def _fast_iso_timestamps(vals: list[Any]) -> np.ndarray | None:
    """Vectorised parse of plain ISO-8601 timestamp strings (no offset), or ``None`` to take the exact
    per-value path (anything unusual: other types, offsets, short or odd strings, unparseable values)."""
    if not vals or set(map(type, vals)) != _STR_ONLY:  # C loops: no per-value Python frame
        return None
    lengths = list(map(len, vals))
    if min(lengths) < 10 or max(lengths) > 26:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy only warns on timezone offsets: take the exact path
            arr = np.array(vals, dtype="datetime64[us]")
    except (ValueError, TypeError, Warning):
        return None
    return None if np.isnat(arr).any() else arr


def _cast_time(t: str, name: str, vals: list[Any]) -> np.ndarray:
    if t != "date" and len(vals) > 1:
        fast = _fast_iso_timestamps(vals)
        if fast is not None:
            return fast
    is_date = t == "date"
    micros = []
    for i, v in enumerate(vals):
        if v is None:
            micros.append(_NAT_US)
            continue
        try:
            micros.append(_to_utc_us(v, is_date))
        except (ValueError, OverflowError):
            raise InputError.at(
                name, i, f"expected {t} (ISO-8601 string, datetime or epoch seconds), got {v!r}", t
            ) from None
    return np.array(micros, _US_DTYPE)  # integers are microseconds; INT64_MIN is NaT


def _cast_vector(name: str, vals: list[Any]) -> np.ndarray:
    rows = []
    for i, v in enumerate(vals):
        if hasattr(v, "toArray"):
            v = v.toArray()
        try:
            rows.append(np.asarray(v, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError):
            raise InputError.at(name, i, f"expected a list of numbers, got {v!r}", "vector") from None
    if not rows:
        return np.zeros((0, 0))
    if len({r.shape[0] for r in rows}) != 1:
        raise InputError.at(name, None, "vectors of different lengths in one batch", "vector")
    return np.vstack(rows)


def _cast_tokens(name: str, vals: list[Any]) -> np.ndarray:
    out = np.empty(len(vals), dtype=object)
    for i, v in enumerate(vals):
        if v is not None and not (isinstance(v, list | tuple) and all(type(s) is str for s in v)):
            raise InputError.at(name, i, f"expected a list of strings, got {v!r}", "array<string>")
        out[i] = None if v is None else list(v)
    return out


def _cast_unsupported(t: str, name: str, vals: list[Any]) -> np.ndarray:
    raise ScoringError(f"unsupported input type {t!r} for column {name!r}")


def _caster(t: str) -> Callable[[str, list[Any]], np.ndarray]:
    """The function ``(name, values) -> array`` casting a column of Spark type ``t``."""
    if t in NUMERIC_TYPES:
        return partial(_cast_numeric, t)
    if t == "string":
        return _cast_string
    if t == "boolean":
        return _cast_bool
    if t in ("timestamp", "date"):
        return partial(_cast_time, t)
    if t == "vector":
        return _cast_vector
    if t == "array<string>":
        return _cast_tokens
    return partial(_cast_unsupported, t)  # fails when a request comes, not at compile time


def cast_column(name: str, t: str, vals: list[Any]) -> np.ndarray:
    """Cast one column's Python values to the frame representation of Spark type ``t``.

    Raises
    ------
    InputError
        A value cannot be cast (the field names the row and column).
    """
    return _caster(t)(name, vals)


# ------------------------------------------------------------------------------------- row casting
# One value of a row-path request: the value as the row path holds it (see sparkpipe.scoring.base), or
# RowFallback for anything the batch caster treats in a less common way (it then casts, or names the
# field in its error, exactly as before).
def _row_double(v: Any) -> float:
    tv = type(v)
    if tv is float:
        return v
    if tv is int or tv is bool:
        return float(v)  # an int too large for a double raises OverflowError: the batch path decides
    if v is None:
        return _NAN
    raise RowFallback


def _row_integral(v: Any) -> float:
    tv = type(v)
    if tv is int or tv is bool:
        return float(v)
    if v is None:
        return _NAN
    if tv is float and (v != v or v.is_integer()):
        return v
    raise RowFallback


def _row_float32(v: Any) -> float:
    return float(np.float32(_row_double(v)))


def _row_string(v: Any) -> str | None:
    if v is None or type(v) is str:
        return v
    raise RowFallback


def _row_bool(v: Any) -> float:
    if v is True:
        return 1.0
    if v is False:
        return 0.0
    if v is None:
        return _NAN
    if type(v) is int and v in (0, 1):
        return float(v)
    raise RowFallback


def _row_time(is_date: bool, v: Any) -> int | None:
    if v is None:
        return None
    try:
        return _to_utc_us(v, is_date)
    except (ValueError, OverflowError):
        raise RowFallback from None


_ROW_CAST_CODE = {
    "double": [
        "t = type(v)",
        "if t is float:",
        "    x = v",
        "elif t is int or t is bool:",
        "    x = float(v)",
        "elif v is None:",
        "    x = nan",
        "else:",
        "    raise RowFallback",
    ],
    "integral": [
        "t = type(v)",
        "if t is int or t is bool:",
        "    x = float(v)",
        "elif v is None:",
        "    x = nan",
        "elif t is float and (v != v or v.is_integer()):",
        "    x = v",
        "else:",
        "    raise RowFallback",
    ],
    "string": ["if v is None or type(v) is str:", "    x = v", "else:", "    raise RowFallback"],
}
"""Inline row casts (value ``v`` to ``x``) of the usual types; the others call their row caster."""


def _row_record_casters(
    schema: list[tuple[str, str]], casters: list[tuple[str, Callable[[Any], Any]]]
) -> tuple[Callable[[Any], Row], Callable[[Any, int], Row]]:
    """Generated functions casting one record (``rec[name]``) and row ``i`` of columns
    (``cols[name][i]``) into a row dict: one straight-line pass over the input columns."""
    body: list[str] = []
    namespace: dict[str, Any] = {}
    for k, ((name, t), (_, cast)) in enumerate(zip(schema, casters, strict=True)):
        kind = "integral" if t in INTEGRAL_TYPES else t if t in ("double", "string") else None
        if kind is None and t in NUMERIC_TYPES and t != "float":
            kind = "double"
        body.append(f"v = SOURCE[{name!r}]ITEM")
        if kind is None:
            namespace[f"C{k}"] = cast
            body.append(f"x{k} = C{k}(v)")
        else:
            body += [line.replace("x = ", f"x{k} = ") for line in _ROW_CAST_CODE[kind]]
    result = "return {" + ", ".join(f"{name!r}: x{k}" for k, (name, _) in enumerate(schema)) + "}"

    def source(fn: str, args: str, src: str, item: str) -> list[str]:
        return [
            f"def {fn}({args}):",
            *(f"    {b.replace('SOURCE', src).replace('ITEM', item)}" for b in body),
            f"    {result}",
        ]

    return (
        generated_function(source("cast_record", "rec", "rec", ""), "cast_record", namespace, "row casts"),
        generated_function(
            source("cast_columns", "cols, i", "cols", "[i]"), "cast_columns", namespace, "row casts"
        ),
    )


def _row_caster(t: str) -> Callable[[Any], Any] | None:
    """The row-path caster of Spark type ``t`` (``None``: the type has no row path)."""
    if t in INTEGRAL_TYPES:
        return _row_integral
    if t == "float":
        return _row_float32
    if t in NUMERIC_TYPES:
        return _row_double
    if t == "string":
        return _row_string
    if t == "boolean":
        return _row_bool
    if t in ("timestamp", "date"):
        return partial(_row_time, t == "date")
    return None


def _records_of(cols: Sequence[str], lists: list[list[Any]]) -> list[dict[str, Any]]:
    """Column lists as one dict per row (dict displays for the usual few columns: faster than
    ``dict(zip(...))`` per row)."""
    if len(cols) == 1:
        (c0,) = cols
        return [{c0: a} for a in lists[0]]
    if len(cols) == 2:
        c0, c1 = cols
        return [{c0: a, c1: b} for a, b in zip(*lists, strict=True)]
    if len(cols) == 3:
        c0, c1, c2 = cols
        return [{c0: a, c1: b, c2: c} for a, b, c in zip(*lists, strict=True)]
    if len(cols) == 4:
        c0, c1, c2, c3 = cols
        return [{c0: a, c1: b, c2: c, c3: d} for a, b, c, d in zip(*lists, strict=True)]
    return [dict(zip(cols, row, strict=True)) for row in zip(*lists, strict=True)]


def _n_records(records: Sequence[Any] | Mapping[str, Any]) -> int:
    """Rows in a request (a list of records, or columns: the first column's length)."""
    if type(records) is list:
        return len(records)
    if type(records) is dict or isinstance(records, Mapping):
        for vals in records.values():
            return len(vals) if type(vals) is list or isinstance(vals, Sequence) else 1 << 30
        return 0
    return len(records)


# ----------------------------------------------------------------------------------- compiled pipeline
def _is_model(t: Twin) -> bool:
    return "predictionCol" in t.stage.params


class CompiledPipeline:
    """A fitted Spark pipeline as a sequence of NumPy twins.

    Parameters
    ----------
    stages
        The twins, in pipeline order.
    input_schema
        Ordered ``(name, type)`` pairs of the input columns.
    output_columns
        What :meth:`predict` returns (default: see :func:`compile_pipeline`).
    source
        Where the model was read from (for :meth:`describe`).
    """

    def __init__(
        self,
        stages: list[Twin],
        input_schema: Sequence[tuple[str, str]],
        output_columns: Sequence[str] | None = None,
        source: str = "",
    ):
        self.stages = list(stages)
        self.input_schema: list[tuple[str, str]] = [(n, t) for n, t in input_schema]
        self.source = source
        self._names = [n for n, _ in self.input_schema]
        self._casters = [(n, t, _caster(t)) for n, t in self.input_schema]  # (name, type, cast)
        self._getters = [itemgetter(n) for n in self._names]
        self.types: dict[str, str] = dict(self.input_schema)
        for t in self.stages:
            t.bind_types(self.types)
        produced: set[str] = set()
        for t in self.stages:
            produced.update(t.output_cols)
        self.all_output_columns = [c for t in self.stages for c in t.output_cols]
        self.output_columns = list(output_columns) if output_columns else self._default_outputs()
        unknown = [c for c in self.output_columns if c not in produced and c not in self.types]
        if unknown:
            raise ScoringError(
                f"output columns {unknown} are produced by no stage; known: {self.all_output_columns}"
            )
        model = self.model_stage
        self._int_prediction = model is not None and ".clustering." in model.stage.class_name
        self._pred_col = model.stage.params.get("predictionCol", "prediction") if model else None
        self._row_casters, self._row_fns = self._compile_rows()
        self.row_max_rows = ROW_PATH_MAX_ROWS if self._row_fns is not None else 0
        """Requests of up to this many rows take the row path (0: the pipeline has none)."""

    def _compile_rows(self) -> tuple[list[tuple[str, Callable[[Any], Any]]], list[RowFn] | None]:
        """The row casters of the input columns and every twin's row function, or ``None`` for the
        functions when an input type or a twin has no row path."""
        casters = []
        for name, t in self.input_schema:
            cast = _row_caster(t)
            if cast is None:
                return [], None
            casters.append((name, cast))
        fns = []
        for t in self.stages:
            fn = t.row_fn()
            if fn is None:
                logger.debug("no row path: %s has no row function", type(t).__name__)
                return [], None
            fns.append(fn)
        self._cast_record, self._cast_columns = _row_record_casters(self.input_schema, casters)
        return casters, fns

    @property
    def has_row_path(self) -> bool:
        """True when small requests are scored on the row path (every twin has a row function)."""
        return self._row_fns is not None

    # ------------------------------------------------------------------------------ introspection
    @property
    def model_stage(self) -> Twin | None:
        """The last stage that is a predictor/model (has prediction outputs), if any."""
        for t in reversed(self.stages):
            if _is_model(t):
                return t
        return None

    def _default_outputs(self) -> list[str]:
        if not self.stages:
            return []
        model = self.model_stage
        if model is None:
            return list(self.stages[-1].output_cols)
        cols = list(model.output_cols)
        after = self.stages[self.stages.index(model) + 1 :]
        for t in after:
            if t.stage.class_name.endswith("IndexToString"):
                cols.extend(t.output_cols)
        return cols

    def describe(self) -> dict[str, Any]:
        """Stages, input schema and outputs (what ``/models`` shows)."""
        return {
            "source": self.source,
            "engine": "numpy",
            "stages": [t.describe() for t in self.stages],
            "input_schema": [{"name": n, "type": t} for n, t in self.input_schema],
            "output_columns": list(self.output_columns),
        }

    # ----------------------------------------------------------------------------------- scoring
    def frame_from_records(self, records: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> Frame:
        """Build a frame from request records (a list of dicts, or a dict of column -> list).

        Only schema columns are read; extra keys are ignored.

        Raises
        ------
        InputError
            A schema column is missing or holds a value that cannot be cast to its type.
        """
        frame: Frame = {}
        if isinstance(records, Mapping):
            n = -1
            for name, t, cast in self._casters:
                if name not in records:
                    raise InputError(name, f"missing field {name!r} (expected {t})", column=name, expected=t)
                vals = records[name]
                if type(vals) is not list:
                    vals = list(vals)
                if len(vals) != n:
                    n = len(vals) if n == -1 else -2
                frame[name] = cast(name, vals)
            if n == -2:
                lengths = sorted({v.shape[0] for v in frame.values()})
                raise InputError("records", f"columns have different lengths: {lengths}")
            return frame
        if type(records) is list:
            try:  # each column in one C loop
                columns = [list(map(get, records)) for get in self._getters]
            except (KeyError, TypeError):
                pass  # a record lacks a column or is not a dict: the loop below names the field
            else:
                for (name, _, cast), vals in zip(self._casters, columns, strict=True):
                    frame[name] = cast(name, vals)
                return frame
        for name, t, cast in self._casters:
            vals = [r.get(name, _MISSING) for r in records]
            if _MISSING in vals:
                i = next(k for k, v in enumerate(vals) if v is _MISSING)
                if not isinstance(records[i], Mapping):
                    raise InputError(f"instances[{i}]", "each instance must be an object", row=i)
                raise InputError.at(name, i, f"missing field {name!r} (expected {t})", t)
            frame[name] = cast(name, vals)
        return frame

    def transform(self, frame: Frame) -> Frame:
        """Run every twin on ``frame`` (in place; also returned)."""
        for t in self.stages:
            t.transform(frame)
        return frame

    def score_rows(self, records: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> list[Row]:
        """Score records on the row path: one dict per row holding every input and output column
        (numbers as floats, vectors as lists, strings, timestamps as epoch microseconds).

        Raises
        ------
        RowFallback
            The pipeline has no row path, or a row holds a case it leaves to the batch path (a missing
            field, a value of an unusual type, a value Spark rejects, ...): score it with
            :meth:`transform` instead (:meth:`predict` does that by itself).
        """
        fns = self._row_fns
        if fns is None:
            raise RowFallback
        rows: list[Row] = []
        try:
            if type(records) is dict or isinstance(records, Mapping):
                n = -1
                for name, _ in self._row_casters:
                    size = len(records[name])
                    if size != n:
                        if n != -1:
                            raise RowFallback  # columns of different lengths
                        n = size
                cast = self._cast_columns
                rows = [cast(records, i) for i in range(max(n, 0))]
            else:
                cast = self._cast_record
                for rec in records:
                    if type(rec) is not dict:
                        raise RowFallback
                    rows.append(cast(rec))
        except (KeyError, TypeError, IndexError, OverflowError):
            raise RowFallback from None
        for row in rows:
            for fn in fns:
                fn(row)
        return rows

    def predict_frame(self, frame: Frame, columns: Sequence[str] | None = None) -> dict[str, Any]:
        """Score a frame; return the output columns as arrays (vectors as dense 2-D arrays)."""
        self.transform(frame)
        out: dict[str, Any] = {}
        for c in columns or self.output_columns:
            v = frame[c]
            out[c] = v if type(v) is np.ndarray else (v.toarray() if sp.issparse(v) else np.asarray(v))
        return out

    def predict(
        self,
        records: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
        columns: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Score request records; one dict per row with the output columns as Python values.

        ``prediction`` is a float (an int cluster id for clustering models), vectors
        (``probability``, ``rawPrediction``) are lists of floats, labels are strings.

        Raises
        ------
        InputError
            A record lacks a field, a value has the wrong type, or a value is rejected by a stage.
        """
        cols = columns or self.output_columns
        if self.row_max_rows and _n_records(records) <= self.row_max_rows:
            try:
                rows = self.score_rows(records)
            except Exception:
                pass
            else:
                if self._int_prediction and self._pred_col in cols:
                    for r in rows:
                        r[self._pred_col] = int(r[self._pred_col])
                return [{c: r[c] for c in cols} for r in rows]
        frame = self.frame_from_records(records)
        arrays = self.predict_frame(frame, cols)
        if not cols:
            return [{} for _ in range(n_rows(frame))]
        lists = self.as_lists(arrays, cols)
        if len(lists[0]) == 1:
            return [{c: v[0] for c, v in zip(cols, lists, strict=True)}]
        return _records_of(cols, lists)

    def as_lists(self, arrays: Mapping[str, Any], columns: Sequence[str]) -> list[list[Any]]:
        """Output arrays of :meth:`predict_frame` as Python lists, one per column: floats, an int
        cluster id for clustering models' prediction, lists of floats for vectors, strings for labels."""
        int_col = self._pred_col if self._int_prediction else None
        return [(arrays[c].astype(np.int64) if c == int_col else arrays[c]).tolist() for c in columns]

    def __repr__(self) -> str:
        return f"CompiledPipeline({len(self.stages)} stages, inputs={self._names}, outputs={self.output_columns})"


def iter_stage_classes(path: str | Path) -> Iterable[str]:
    """Class names of the saved pipeline's (flattened) stages, in order."""
    return [s.class_name for s in _read_stages(_pipeline_root(Path(path)))]


__all__ = [
    "CompiledPipeline",
    "cast_column",
    "compile_pipeline",
    "iter_stage_classes",
    "unsupported_stages",
]
