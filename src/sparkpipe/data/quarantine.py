"""Malformed rows set aside: permissive CSV/JSON parsing, per-column type checks, type inference on
the first rows (majority rule), and the quarantine directory they are written to."""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from sparkpipe.config import DataConfig
from sparkpipe.data.paths import _first_line, _missing_path_error
from sparkpipe.data.writers import write_dataset
from sparkpipe.errors import DataError

log = logging.getLogger(__name__)

#: Default name of the column that holds the raw text of a malformed CSV/JSON record.
CORRUPT_COLUMN = "_sparkpipe_corrupt_record"


_SOURCE_COLUMN = "_sparkpipe_source_file"


#: Keys of ``lineage.quarantined_by_reason`` for whole-record failures (other keys are column names).
WRONG_FIELD_COUNT = "(wrong number of fields)"


NOT_JSON = "(not valid JSON)"


#: A column is typed as text only when fewer than this share of its sampled values parse as the best
#: non-text type (number, boolean, date, timestamp); otherwise the values that do not parse are quarantined.
TYPED_MAJORITY = 0.5


#: A text column where at least this share of sampled values would parse as another type is logged loudly.
TEXT_WARN_SHARE = 0.1


@dataclass
class _ReadOutput:
    """What a format reader hands back to :func:`read_dataset`."""

    df: DataFrame
    row_count: int | None = None  # good rows, when the reader already knows it
    quarantined: int = 0
    quarantine_path: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)


def _parse_schema(spark: SparkSession, ddl: str) -> StructType:
    """A DDL string such as ``"age INT, plan STRING"`` -> StructType (error names ``data.schema``)."""
    try:
        parsed = spark.createDataFrame([], ddl).schema
    except Exception as exc:
        raise DataError(
            f"data.schema {ddl!r} is not a valid Spark DDL schema: {_first_line(exc)}. "
            "Use e.g. 'age INT, plan STRING, signup_ts TIMESTAMP'"
        ) from exc
    return parsed


@contextlib.contextmanager
def _spark_errors(path: str, fmt: str) -> Iterator[None]:
    """Turn Spark / library failures while reading into a :class:`DataError` naming the path and format."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:
        text = str(exc)
        if "PATH_NOT_FOUND" in text or "Path does not exist" in text:
            raise _missing_path_error(path) from exc
        raise DataError(
            f"cannot read {path!r} as {fmt} (data.format={fmt!r}): {_first_line(exc)}. Check that "
            "data.format matches the files, or set data.format: auto"
        ) from exc


def _quarantine_dir(data_cfg: DataConfig) -> str:
    """``<output_path>/quarantine/<UTC timestamp>-<input name>-<short id>`` (unique per read)."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data_cfg.input_path.rstrip("/")).name).strip("_") or "input"
    return f"{data_cfg.output_path.rstrip('/')}/quarantine/{stamp}-{stem}-{uuid.uuid4().hex[:8]}"


def _simple_type(dtype: DataType) -> bool:
    return not isinstance(dtype, (StringType, BinaryType, StructType, ArrayType, MapType))


def _converted(value: Column, dtype: DataType, options: dict[str, str]) -> Column:
    """``value`` (a string) converted to ``dtype`` or NULL when it does not convert."""
    if isinstance(dtype, (TimestampType, TimestampNTZType)) and options.get("timestampFormat"):
        return F.try_to_timestamp(value, F.lit(options["timestampFormat"]))
    if isinstance(dtype, DateType) and options.get("dateFormat"):
        return F.try_to_timestamp(value, F.lit(options["dateFormat"]))
    return value.try_cast(dtype)


def _reason(checks: Sequence[tuple[str, Column]]) -> Column:
    joined = F.concat_ws("; ", *[c for _, c in checks]) if checks else F.lit("")
    return F.coalesce(F.nullif(joined, F.lit("")), F.lit("record does not match the schema"))


def _type_checks(
    values: Sequence[tuple[StructField, Column]], null_value: str, options: dict[str, str]
) -> list[tuple[str, Column]]:
    """``(column name, message-or-NULL)`` for each simple-typed field whose text does not convert."""
    checks: list[tuple[str, Column]] = []
    for fld, value in values:
        if not _simple_type(fld.dataType):
            continue
        bad = value.isNotNull() & (F.trim(value) != F.lit("")) & (value != F.lit(null_value))
        bad = bad & _converted(F.trim(value), fld.dataType, options).isNull()
        msg = F.concat(
            F.lit(f"column '{fld.name}' ({fld.dataType.simpleString()}): cannot convert '"), value, F.lit("'")
        )
        checks.append((fld.name, F.when(bad, msg)))
    return checks


_CSV_PARSE_OPTIONS = (
    "sep",
    "delimiter",
    "quote",
    "escape",
    "encoding",
    "charToEscapeQuoteEscaping",
    "ignoreLeadingWhiteSpace",
    "ignoreTrailingWhiteSpace",
    "locale",
)


def _csv_checks(raw: Column, schema: StructType, options: dict[str, str]) -> list[tuple[str, Column]]:
    """Why a CSV record is malformed, per check: field count, then each column that fails to convert."""
    sep = options.get("sep", options.get("delimiter", ","))
    quote = options.get("quote", '"')
    n = len(schema.fields)
    text = raw
    if len(quote) == 1:  # drop quoted sections so separators inside quotes are not counted
        q = re.escape(quote)
        text = F.regexp_replace(raw, f"{q}([^{q}]|{q}{q})*{q}", "")
    fields = F.lit(1)
    if len(sep) >= 1:
        fields = (F.length(text) - F.length(F.replace(text, F.lit(sep), F.lit("")))) / F.lit(
            len(sep)
        ) + F.lit(1)
        fields = fields.cast("int")
    count_msg = F.concat(
        F.lit("wrong number of fields: got "), fields.cast("string"), F.lit(f", expected {n}")
    )
    checks = [(WRONG_FIELD_COUNT, F.when(fields != F.lit(n), count_msg))]
    parse_opts = {k: v for k, v in options.items() if k in _CSV_PARSE_OPTIONS}
    token_schema = ", ".join(f"c{i} STRING" for i in range(n))
    parsed = F.from_csv(raw, token_schema, parse_opts)
    values = [(fld, parsed.getField(f"c{i}")) for i, fld in enumerate(schema.fields)]
    checks += _type_checks(values, options.get("nullValue", ""), options)
    return checks


def _json_path(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"$.{name}"
    return "$['" + name.replace("'", "\\'") + "']"


def _json_checks(raw: Column, schema: StructType, options: dict[str, str]) -> list[tuple[str, Column]]:
    """Why a JSON record is malformed, per check: not JSON at all, or each field that does not convert."""
    checks = [(NOT_JSON, F.when(F.get_json_object(raw, "$").isNull(), F.lit("not valid JSON")))]
    values = [(fld, F.get_json_object(raw, _json_path(fld.name))) for fld in schema.fields]
    checks += _type_checks(values, "null", options)
    return checks


def _split_malformed(
    raw: DataFrame,
    corrupt: str,
    checks: Sequence[tuple[str, Column]],
    path: str,
    data_cfg: DataConfig,
) -> _ReadOutput:
    """Persist a permissive parse, quarantine the rows with a corrupt record, return the good ones.

    The parse is persisted (memory and disk) because Spark (a) refuses queries that reference only the
    corrupt-record column of a raw file and (b) with CSV column pruning would re-parse only the columns
    a later query needs, flagging different rows; the persisted parse fixes the good/bad split once.
    Rows, malformed rows and malformed rows per check (``checks``: column name or whole-record check
    -> message or NULL) are counted in that same single aggregation.
    """
    parsed = raw.select("*", F.col("_metadata.file_path").alias(_SOURCE_COLUMN)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    is_bad = F.col(corrupt).isNotNull()
    per_check = [F.count(F.when(is_bad, c)) for _, c in checks]
    counts = parsed.agg(F.count(F.lit(1)), F.count(F.col(corrupt)), *per_check).first()
    total, bad = int(counts[0]), int(counts[1])  # type: ignore[index]
    by_reason = {name: int(n) for (name, _), n in zip(checks, counts[2:], strict=True) if n}  # type: ignore[index]
    good = parsed.where(F.col(corrupt).isNull()).drop(corrupt, _SOURCE_COLUMN)
    qpath: str | None = None
    if bad:
        bad_rows = parsed.where(F.col(corrupt).isNotNull())
        if not data_cfg.quarantine:
            examples = [r[0] for r in bad_rows.select(corrupt).limit(3).collect()]
            parsed.unpersist()
            raise DataError(
                f"{bad} of {total} rows of {path!r} are malformed ({_describe_reasons(by_reason)}; e.g. "
                f"{examples!r}) and data.quarantine is false. Fix the input, or set data.quarantine: true "
                f"to set malformed rows aside in {data_cfg.output_path}/quarantine/ and continue with the "
                "good rows"
            )
        qpath = _quarantine_dir(data_cfg)
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        out = bad_rows.select(
            F.col(corrupt).alias("raw"),
            _reason(checks).alias("reason"),
            F.col(_SOURCE_COLUMN).alias("source_file"),
            F.lit(now).alias("quarantined_at"),
        )
        write_dataset(out, qpath, "json", mode="error")
        log.warning(
            "%d of %d rows of %s are malformed (%s); quarantined to %s (raw text and reason, JSON lines)",
            bad,
            total,
            path,
            _describe_reasons(by_reason),
            qpath,
        )
    return _ReadOutput(
        good,
        row_count=total - bad,
        quarantined=bad,
        quarantine_path=qpath,
        lineage={"rows_read": total, "quarantined_by_reason": by_reason},
    )


def _describe_reasons(by_reason: dict[str, int]) -> str:
    """``"monthly_charges: 10, age: 10"`` (or a generic phrase when no check named the cause)."""
    return ", ".join(f"{k}: {v}" for k, v in by_reason.items()) or "records that do not match the schema"


def _permissive_options(options: dict[str, str], fmt: str) -> tuple[dict[str, str], str]:
    opts = dict(options)
    corrupt = opts.pop("columnNameOfCorruptRecord", CORRUPT_COLUMN)
    mode = opts.pop("mode", "PERMISSIVE").upper()
    if mode == "FAILFAST":
        opts["mode"] = "FAILFAST"
    elif mode != "PERMISSIVE":
        log.warning(
            "data.options.mode=%s for %s is replaced by PERMISSIVE: malformed rows are quarantined, "
            "never dropped",
            mode,
            fmt,
        )
    opts.setdefault("mode", "PERMISSIVE")
    opts["columnNameOfCorruptRecord"] = corrupt
    return opts, corrupt


_INT_RE = r"^[+-]?[0-9]+$"


_DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


# without a timestampFormat, a timestamp must look like one (a cast alone reads "01234" as year 1234)
_TS_RE = r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"


_INFER_CHUNK = 200  # columns per aggregation (keeps generated code small on very wide inputs)


def _quoted(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def _parse_counts(value: Column, null_value: str, options: dict[str, str]) -> list[Column]:
    """Sampled values that are present, and those that parse as int, bigint, double, boolean, date
    and timestamp (what Spark's own reader would accept for that type)."""
    v = F.trim(value)
    present = v.isNotNull() & (v != F.lit("")) & (value != F.lit(null_value))
    integral = v.rlike(_INT_RE)
    date_ok = _converted(v, DateType(), options).isNotNull()
    if not options.get("dateFormat"):
        date_ok = date_ok & v.rlike(_DATE_RE)
    ts_ok = _converted(v, TimestampType(), options).isNotNull()
    if not options.get("timestampFormat"):
        ts_ok = ts_ok & v.rlike(_TS_RE)
    conds = [
        F.lit(True),
        integral & v.try_cast("int").isNotNull(),
        integral & v.try_cast("bigint").isNotNull(),
        v.try_cast("double").isNotNull(),
        F.lower(v).isin("true", "false"),
        date_ok,
        ts_ok,
    ]
    return [F.count(F.when(present & c, 1)) for c in conds]


def _decide_type(counts: Sequence[int], timestamp: DataType) -> tuple[DataType, str, float]:
    """(type, best non-text type name, share of present values it covers) from :func:`_parse_counts`."""
    n, c_int, c_long, c_dbl, c_bool, c_date, c_ts = counts
    if n == 0:
        return StringType(), "string", 0.0
    number: DataType = IntegerType() if c_int == c_dbl else LongType() if c_long == c_dbl else DoubleType()
    when: DataType = DateType() if c_date == c_ts else timestamp
    best, count = max(((number, c_dbl), (BooleanType(), c_bool), (when, c_ts)), key=lambda t: t[1])
    share = count / n
    return (best if share >= TYPED_MAJORITY else StringType()), best.simpleString(), share


def _sample_counts(
    text: DataFrame, schema: StructType, rows: int, options: dict[str, str], null_value: str
) -> dict[str, list[int]]:
    """:func:`_parse_counts` of every column on the first ``rows`` rows of ``text`` (columns as strings).

    The sample is persisted (it is bounded) and aggregated in chunks of columns; one row of counts per
    chunk reaches the driver.
    """
    sample = text.limit(rows).persist(StorageLevel.MEMORY_AND_DISK)
    counts: dict[str, list[int]] = {}
    try:
        for start in range(0, len(schema.fields), _INFER_CHUNK):
            chunk = schema.fields[start : start + _INFER_CHUNK]
            exprs = [e for f in chunk for e in _parse_counts(_quoted(f.name), null_value, options)]
            row = sample.agg(*exprs).first()
            for i, f in enumerate(chunk):
                counts[f.name] = [int(x) for x in row[i * 7 : i * 7 + 7]]  # type: ignore[index]
    finally:
        sample.unpersist()
    return counts


def _json_native_counts(
    spark: SparkSession, path: str, names: list[str], rows: int, options: dict[str, str]
) -> dict[str, list[int]]:
    """Sampled values of each field that Spark's JSON parser reads as int, bigint, double and boolean.

    JSON numbers and booleans only: Spark's parser refuses a quoted ``"12"`` for a numeric field, so the
    text of the value (which cannot tell ``12`` from ``"12"``) is not enough. One bounded read per type.
    """
    out: dict[str, list[int]] = {n: [] for n in names}
    for dtype in (IntegerType(), LongType(), DoubleType(), BooleanType()):
        for start in range(0, len(names), _INFER_CHUNK):
            chunk = names[start : start + _INFER_CHUNK]
            typed = StructType([StructField(n, dtype, True) for n in chunk])
            sample = spark.read.options(**options).schema(typed).json(path).limit(rows)
            row = sample.agg(*[F.count(_quoted(n)) for n in chunk]).first()
            for n, c in zip(chunk, row, strict=True):  # type: ignore[arg-type]
                out[n].append(int(c))
    return out


def _decide_types(
    spark: SparkSession, schema: StructType, counts: dict[str, list[int]], rows: int
) -> tuple[StructType, dict[str, Any]]:
    """Column types from the sampled counts (see :func:`_decide_type`); a text column that a sizeable
    share (:data:`TEXT_WARN_SHARE`) of values would have typed is logged loudly, naming it."""
    tz = spark.conf.get("spark.sql.timestampType", "TIMESTAMP_LTZ") or ""
    timestamp: DataType = TimestampNTZType() if tz.upper() == "TIMESTAMP_NTZ" else TimestampType()
    fields: list[StructField] = []
    loud: dict[str, str] = {}
    for f in schema.fields:
        dtype, best, share = _decide_type(counts[f.name], timestamp)
        fields.append(StructField(f.name, dtype, True))
        if isinstance(dtype, StringType) and share >= TEXT_WARN_SHARE:
            loud[f.name] = f"{share:.0%} of sampled values parse as {best}"
    for name, what in loud.items():
        log.warning(
            "COLUMN %r IS READ AS TEXT: only %s (a column is typed when at least %.0f%% do), so its "
            "numbers become categories. Fix the values, or set data.schema to type it (values that do "
            "not convert are then quarantined)",
            name,
            what,
            100 * TYPED_MAJORITY,
        )
    return StructType(fields), {"type_inference": {"sample_rows": rows, "text_despite_typed_values": loud}}


def read_quarantine(spark: SparkSession, quarantine_path: str) -> DataFrame:
    """Read back quarantined rows (columns ``raw``, ``reason``, ``source_file``, ``quarantined_at``)."""
    return spark.read.schema("raw STRING, reason STRING, source_file STRING, quarantined_at STRING").json(
        quarantine_path
    )
