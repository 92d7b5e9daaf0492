"""Row checks: JSON request values validated against a model's input schema, and every request body
form (``/predict`` features or instances, MLflow's ``/invocations`` JSON and CSV) turned into validated
column lists for the scorer.

A value that does not fit its column is a 422 naming the field (``features.age``,
``instances[3].city``, ``dataframe_split.data[2][0]``), never a 500.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import TYPE_CHECKING, Any

from sparkpipe.core import FRACTIONAL_TYPES, INTEGRAL_TYPES, TIME_TYPES, base_type
from sparkpipe.serving.schemas import ApiError, invalid

if TYPE_CHECKING:
    from sparkpipe.serving.loading import LoadedModel

# ============================================================================ input type checking
NUM, INT, STR, BOOL, TIME, ANY, VEC = range(7)
_KIND_NAMES = {
    NUM: "a number",
    INT: "an integer",
    STR: "a string",
    BOOL: "true or false",
    TIME: "an ISO-8601 timestamp string or epoch seconds",
    ANY: "a value",
    VEC: "a list of numbers",
}
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_FLOAT_MAX = 1.7976931348623157e308


def type_kind(spark_type: str) -> int:
    """Classify a Spark type name into one of the checked kinds."""
    base = base_type(spark_type)
    if base in FRACTIONAL_TYPES or base in ("decimal", "real"):
        return NUM
    if base in INTEGRAL_TYPES:
        return INT
    if base in ("string", "varchar", "char"):
        return STR
    if base == "boolean":
        return BOOL
    if base in TIME_TYPES or base == "datetime":
        return TIME
    if base == "vector":
        return VEC
    return ANY


class BadValue(Exception):
    """A single value does not fit its column (message only; the caller adds the field)."""


def check_value(value: Any, kind: int, spark_type: str) -> Any:
    """Validate and normalise one JSON value for a column of ``kind``; raise :class:`BadValue`."""
    if value is None:
        return None
    t = type(value)
    if kind == NUM:
        if t is float:
            if value != value or value in (math.inf, -math.inf):
                raise BadValue(f"expected a finite number ({spark_type}), got {value!r}")
            return value
        if t is int:
            if -_FLOAT_MAX <= value <= _FLOAT_MAX:
                return float(value)
            raise BadValue(f"expected a number ({spark_type}), got an integer too large for a double")
    elif kind == INT:
        if t is int:
            if _INT_MIN <= value <= _INT_MAX:
                return value
            raise BadValue(f"expected an integer ({spark_type}), got one outside the 64-bit range")
        if t is float and value.is_integer() and _INT_MIN <= value <= _INT_MAX:
            return int(value)
    elif kind == STR:
        if t is str:
            return value
    elif kind == BOOL:
        if t is bool:
            return value
    elif kind == TIME:
        if t is str:
            try:
                dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise BadValue(f"expected {_KIND_NAMES[TIME]} ({spark_type}), got {short(value)}") from None
            return value
        if t in (int, float) and math.isfinite(value) and abs(value) < 1e11:
            return value
    elif kind == VEC:  # an ML vector input (libsvm features): its width is checked by the model
        if t is list and all(type(v) in (int, float) and math.isfinite(v) for v in value):
            return [float(v) for v in value]
        if t is list:
            raise BadValue(f"expected {_KIND_NAMES[VEC]} ({spark_type}) with finite numbers only")
    else:
        if t in (dict, list):
            raise BadValue(f"expected a scalar value ({spark_type}), got {type_name(value)}")
        return value
    raise BadValue(f"expected {_KIND_NAMES[kind]} ({spark_type}), got {type_name(value)} {short(value)}")


def type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ============================================================================ request bodies
def check_predict_body(payload: Any) -> None:
    """A ``/predict`` body is an object with only ``model_id``, ``features`` and ``instances``."""
    if type(payload) is not dict:
        raise invalid(
            "body",
            f"expected a JSON object with model_id and features or instances, got {type_name(payload)}",
        )
    unknown = payload.keys() - {"model_id", "features", "instances"}
    if unknown:
        raise invalid(sorted(map(str, unknown))[0], "unknown field; allowed: model_id, features, instances")


def predict_columns(
    model: LoadedModel, payload: dict[str, Any], max_rows: int
) -> tuple[dict[str, list[Any]], int, str | None, set[str]]:
    """The validated columns of a checked ``/predict`` body: ``(columns, rows, error prefix, columns
    some named row left out)``."""
    features = payload.get("features")
    instances = payload.get("instances")
    cols = model.empty_columns()
    omitted: set[str] = set()
    if features is not None and instances is not None:
        raise invalid("features", "send either features (one row) or instances (many rows), not both")
    if features is not None:
        if type(features) is list:
            model.columns_from_list(features, "features", cols)
        elif type(features) is dict:
            model.columns_from_dict(features, "features", cols, omitted)
        else:
            raise invalid(
                "features",
                f"expected a list of {len(model.names)} values "
                f"({', '.join(model.names)}) or an object of named columns, got {type_name(features)}",
            )
        return cols, 1, "features", omitted
    if instances is not None:
        n = rows_into(model, instances, "instances", cols, max_rows, omitted)
        return cols, n, None, omitted
    raise invalid(
        "features",
        f"required: a list in the order {', '.join(model.names)} or an object of "
        "named columns (or instances: a list of rows)",
    )


def invocations_columns(model: LoadedModel, payload: Any, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    """The validated columns and row count of an MLflow scoring-protocol JSON body."""
    cols = model.empty_columns()
    if type(payload) is not dict:
        raise invalid(
            "body",
            "expected a JSON object with one of dataframe_split, dataframe_records, instances, inputs",
        )
    keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload]
    extra = payload.keys() - {"dataframe_split", "dataframe_records", "instances", "inputs", "params"}
    if len(keys) != 1 or extra:
        raise invalid(
            "body",
            "send exactly one of dataframe_split, dataframe_records, instances, inputs"
            + (f" (unknown: {', '.join(sorted(map(str, extra)))})" if extra else ""),
        )
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        n = split_into(model, data, cols, max_rows)
    elif type(data) is dict:  # columnar {"col": [values]} (or one row of scalars)
        n = columnar_into(model, data, key, cols, max_rows)
    else:
        n = rows_into(model, data, key, cols, max_rows)
    return cols, n


def csv_columns(model: LoadedModel, body: bytes, max_rows: int) -> tuple[dict[str, list[Any]], int]:
    """The validated columns and row count of a ``text/csv`` body (header row of column names)."""
    import csv
    import io

    try:
        text = body.decode("utf-8")
        rows = list(csv.reader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ApiError(400, f"the body is not valid UTF-8 CSV: {exc}", [("body", "malformed CSV")]) from None
    if not rows:
        raise invalid("body", "empty CSV; send a header row and data rows")
    header, data = rows[0], [r for r in rows[1:] if r]
    split = {
        "columns": header,
        "data": [
            [csv_value(v, model, header[j] if j < len(header) else "") for j, v in enumerate(r)] for r in data
        ],
    }
    cols = model.empty_columns()
    return cols, split_into(model, split, cols, max_rows)


def check_rows(n: int, where: str, max_rows: int) -> None:
    """Refuse an empty batch or one over ``max_rows``."""
    if n == 0:
        raise invalid(where, "at least one row is required")
    if n > max_rows:
        raise invalid(where, f"{n} rows exceed max_batch_rows ({max_rows}); split the request")


def rows_into(
    model: LoadedModel,
    rows: Any,
    where: str,
    cols: dict[str, list[Any]],
    max_rows: int,
    omitted: set[str] | None = None,
) -> int:
    """Append a list of rows (lists or objects) to ``cols``; return the row count."""
    if type(rows) is not list:
        raise invalid(where, f"expected a list of rows, got {type_name(rows)}")
    check_rows(len(rows), where, max_rows)
    for i, row in enumerate(rows):
        t = type(row)
        if t is dict:
            model.columns_from_dict(row, f"{where}[{i}]", cols, omitted)
        elif t is list:
            model.columns_from_list(row, f"{where}[{i}]", cols)
        else:
            raise invalid(f"{where}[{i}]", f"expected a row (list or object), got {type_name(row)}")
    return len(rows)


def split_into(model: LoadedModel, data: Any, cols: dict[str, list[Any]], max_rows: int) -> int:
    """Append a ``dataframe_split`` body (``columns`` + ``data``) to ``cols``; return the row count."""
    where = "dataframe_split"
    if type(data) is not dict:
        raise invalid(where, f"expected an object with columns and data, got {type_name(data)}")
    columns, rows = data.get("columns"), data.get("data")
    if type(rows) is not list:
        raise invalid(f"{where}.data", "required: a list of rows")
    if columns is None:
        return rows_into(model, rows, f"{where}.data", cols, max_rows)
    if type(columns) is not list or not all(type(c) is str for c in columns):
        raise invalid(f"{where}.columns", "expected a list of column names")
    index = {c: i for i, c in enumerate(columns)}
    missing = [n for n in model.names if n not in index]
    if missing:
        raise invalid(
            f"{where}.columns",
            f"missing column(s) {', '.join(missing)}; this model needs {', '.join(model.names)}",
        )
    check_rows(len(rows), f"{where}.data", max_rows)
    width = len(columns)
    for r, row in enumerate(rows):
        if type(row) is not list or len(row) != width:
            raise invalid(f"{where}.data[{r}]", f"expected a list of {width} values (one per column)")
        for name, kind, stype in model.checks:
            j = index[name]
            try:
                cols[name].append(check_value(row[j], kind, stype))
            except BadValue as exc:
                raise invalid(f"{where}.data[{r}][{j}]", f"column {name!r}: {exc}") from None
    return len(rows)


def columnar_into(
    model: LoadedModel, data: dict[str, Any], where: str, cols: dict[str, list[Any]], max_rows: int
) -> int:
    """Append a columnar body (``{"col": [values]}``, or one row of scalars) to ``cols``."""
    if data and all(type(v) is not list for v in data.values()):
        model.columns_from_dict(data, where, cols)  # a single row given as scalars
        return 1
    n = None
    for name, kind, stype in model.checks:
        if name not in data:
            raise invalid(f"{where}.{name}", f"missing; this model needs {', '.join(model.names)}")
        values = data[name]
        if type(values) is not list:
            raise invalid(f"{where}.{name}", "expected a list of values (one per row)")
        if n is None:
            n = len(values)
            check_rows(n, f"{where}.{name}", max_rows)
        elif len(values) != n:
            raise invalid(f"{where}.{name}", f"has {len(values)} values, other columns have {n}")
        out = cols[name]
        for i, v in enumerate(values):
            try:
                out.append(check_value(v, kind, stype))
            except BadValue as exc:
                raise invalid(f"{where}.{name}[{i}]", str(exc)) from None
    return n or 0


def csv_value(text: str, model: LoadedModel, column: str) -> Any:
    """A CSV cell converted by its column's type (empty means null)."""
    if text == "":
        return None
    kind = next((k for n, k, _ in model.checks if n == column), ANY)
    try:
        if kind == NUM:
            return float(text)
        if kind == INT:
            return int(text)
    except ValueError:
        return text  # reported as a type error naming the cell
    if kind == BOOL and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text
