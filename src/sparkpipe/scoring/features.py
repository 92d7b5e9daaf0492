"""NumPy twins of Spark's built-in feature stages (``org.apache.spark.ml.feature.*``).

Each twin reproduces the fitted stage's ``transform`` on a :data:`~sparkpipe.scoring.base.Frame`.
Spark behaviours the twins reproduce (checked against Spark 4.3 by the parity tests):

* **Null vs NaN.** A frame cannot tell a numeric null from NaN (both are ``NaN``); JSON requests have no
  NaN, so twins give a ``NaN`` input the *null* semantics wherever Spark distinguishes the two
  (``Bucketizer(keep)``: null -> null but NaN -> extra bucket; ``Imputer(missingValue=-1)``: null is
  imputed but NaN is kept; ``OneHotEncoder``: null -> null vector). A null vector is a row of ``NaN``.
* **Errors become :class:`~sparkpipe.errors.InputError`.** Where Spark's job would fail
  (``handleInvalid='error'`` on an unseen label or null, a null text for ``Tokenizer``, a value outside
  ``Bucketizer`` splits) the twin raises ``InputError`` naming the column and the row. Where Spark would
  silently *drop* the row (``handleInvalid='skip'``) a scorer must not misalign its responses, so the
  twin raises ``InputError`` as well.
"""

from __future__ import annotations

import logging
import math
import re
from itertools import repeat
from operator import itemgetter, mul, sub
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparkpipe.errors import InputError, ScoringError, UnsupportedStageError
from sparkpipe.scoring.base import (
    Frame,
    Row,
    RowFallback,
    RowFn,
    StageFiles,
    Twin,
    as_2d,
    generated_function,
    matrix_from_struct,
    register,
    vector_from_struct,
)

logger = logging.getLogger(__name__)

_F = "org.apache.spark.ml.feature."
DENSE_MAX = 512
"""Vectors up to this many elements are produced as dense 2-D arrays, wider ones as CSR matrices."""
ROW_VECTOR_MAX = 4096
"""Hashed term vectors up to this width have a row path (a dense list); wider ones only the batch path."""

INTEGRAL_TYPES = frozenset({"integer", "long", "short", "byte"})
_OBJECT = np.dtype(object)
_F64 = np.dtype(np.float64)


# ------------------------------------------------------------------------------------------ helpers
def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _dense(x: Any) -> np.ndarray:
    """A vector column as a dense 2-D float64 array."""
    if type(x) is np.ndarray and x.ndim == 2:
        return x
    if sp.issparse(x):
        return x.toarray()
    return as_2d(np.asarray(x, dtype=np.float64))


def _java_double_str(x: float, single: bool = False) -> str:
    """``Double.toString`` (or ``Float.toString`` with ``single``) as Spark's cast to string prints it."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    value = np.float32(x) if single else np.float64(x)
    mant, exp_text = np.format_float_scientific(value, unique=True, trim="-").split("e")
    exp = int(exp_text)
    neg = "-" if mant.startswith("-") else ""
    digs = mant.lstrip("-").replace(".", "").rstrip("0") or "0"
    if 1e-3 <= abs(float(value)) < 1e7:
        if exp >= 0:
            int_part = digs[: exp + 1].ljust(exp + 1, "0")
            frac = digs[exp + 1 :] or "0"
        else:
            int_part = "0"
            frac = "0" * (-exp - 1) + digs
        return f"{neg}{int_part}.{frac}"
    return f"{neg}{digs[0]}.{digs[1:] or '0'}E{exp}"


def _to_spark_strings(values: np.ndarray, spark_type: str | None) -> list[Any]:
    """Spark's ``cast(col as string)`` of a frame column (strings pass through; null stays None)."""
    if values.dtype == object:
        return list(values)
    out: list[Any] = []
    for v in values.tolist():
        if v != v:  # NaN: null in a frame
            out.append(None)
        elif spark_type in INTEGRAL_TYPES:
            out.append(str(int(v)))
        elif spark_type == "boolean":
            out.append("true" if v else "false")
        else:
            out.append(_java_double_str(v, single=spark_type == "float"))
    return out


def _spark_string_one(v: Any, spark_type: str | None) -> str | None:
    """:func:`_to_spark_strings` of one row-path value (a string, ``None`` or a float)."""
    if v is None or type(v) is str:
        return v
    if type(v) is not float:
        raise RowFallback  # a timestamp (int microseconds): the batch path decides
    if v != v:
        return None
    if spark_type in INTEGRAL_TYPES:
        return str(int(v))
    if spark_type == "boolean":
        return "true" if v else "false"
    return _java_double_str(v, single=spark_type == "float")


def _handle_invalid(stage: StageFiles, default: str = "error") -> str:
    return str(stage.param("handleInvalid", default))


def _pairs(stage: StageFiles) -> list[tuple[str, str]]:
    p = stage.params
    if p.get("inputCols"):
        return list(zip(p["inputCols"], p["outputCols"], strict=True))
    return [(p["inputCol"], p["outputCol"])]


# -------------------------------------------------------------------------------------- murmur3 x86_32
_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _mix_k1(k1: int) -> int:
    k1 = (k1 * 0xCC9E2D51) & _M32
    k1 = _rotl(k1, 15)
    return (k1 * 0x1B873593) & _M32


def _mix_h1(h1: int, k1: int) -> int:
    h1 ^= k1
    h1 = _rotl(h1, 13)
    return (h1 * 5 + 0xE6546B64) & _M32


def _fmix(h1: int, length: int) -> int:
    h1 ^= length
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & _M32
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & _M32
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def murmur3_bytes(data: bytes, seed: int = 42, legacy: bool = False) -> int:
    """Spark's ``Murmur3_x86_32.hashUnsafeBytes2`` (standard MurmurHash3 x86_32) as a signed int.

    With ``legacy`` the pre-3.0 ``hashUnsafeBytes`` variant (each tail byte mixed as a signed int)
    used by models saved with Spark 2.x.
    """
    n = len(data)
    aligned = n - n % 4
    h1 = seed & _M32
    for i in range(0, aligned, 4):
        h1 = _mix_h1(h1, _mix_k1(int.from_bytes(data[i : i + 4], "little")))
    if legacy:
        for i in range(aligned, n):
            b = data[i] - 256 if data[i] > 127 else data[i]
            h1 = _mix_h1(h1, _mix_k1(b & _M32))
    else:
        k1 = 0
        for shift, i in enumerate(range(aligned, n)):
            k1 ^= data[i] << (8 * shift)
        h1 ^= _mix_k1(k1)
    return _fmix(h1, n)


def murmur3_int(value: int, seed: int = 42) -> int:
    """Spark's ``Murmur3_x86_32.hashInt``."""
    return _fmix(_mix_h1(seed & _M32, _mix_k1(value & _M32)), 4)


def murmur3_long(value: int, seed: int = 42) -> int:
    """Spark's ``Murmur3_x86_32.hashLong``."""
    value &= 0xFFFFFFFFFFFFFFFF
    h1 = _mix_h1(seed & _M32, _mix_k1(value & _M32))
    h1 = _mix_h1(h1, _mix_k1(value >> 32))
    return _fmix(h1, 8)


def spark_hash(term: Any, legacy: bool = False) -> int:
    """``FeatureHasher.murmur3Hash`` of one term (seed 42), as HashingTF and FeatureHasher use it."""
    if term is None:
        return 42
    if isinstance(term, str):
        return murmur3_bytes(term.encode("utf-8"), 42, legacy)
    if isinstance(term, bool):
        return murmur3_int(1 if term else 0)
    if isinstance(term, int):
        return murmur3_int(term) if -(2**31) <= term < 2**31 else murmur3_long(term)
    if isinstance(term, float):
        bits = int(np.float64(term).view(np.int64))
        return murmur3_long(bits)
    raise ScoringError(f"cannot hash term of type {type(term).__name__}")


class _HashCache:
    """term -> non-negative bucket index, cached (the hash is the hot part of HashingTF)."""

    def __init__(self, num_features: int, legacy: bool = False):
        self.n = num_features
        self.legacy = legacy
        self.cache: dict[Any, int] = {}

    def __call__(self, term: Any) -> int:
        idx = self.cache.get(term)
        if idx is None:
            idx = spark_hash(term, self.legacy) % self.n
            if len(self.cache) < 1_000_000:
                self.cache[term] = idx
        return idx


def _rows_to_csr(rows: list[dict[int, float]], size: int) -> sp.csr_matrix:
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indices: list[int] = []
    data: list[float] = []
    for i, r in enumerate(rows):
        if r:
            keys = sorted(r)
            indices.extend(keys)
            data.extend(r[k] for k in keys)
        indptr[i + 1] = len(indices)
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int64), indptr),
        shape=(len(rows), size),
    )


# ---------------------------------------------------------------------------------------- Imputer
@register(_F + "ImputerModel")
class ImputerTwin(Twin):
    """Replace null (and values equal to ``missingValue``) by the fitted surrogate.

    Spark: ``when(isnull, s).when(col === missingValue, s).otherwise(col).cast(inputType)``, so the
    surrogate is truncated for integral columns and rounded to float32 for float columns.
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.pairs = _pairs(stage)
        row = stage.read_rows()[0]
        self.surrogates = {c: float(row[c]) for c, _ in self.pairs}
        self.missing = float(stage.param("missingValue", "NaN"))
        self.cast: dict[str, str | None] = {c: None for c, _ in self.pairs}
        self._inputs = [c for c, _ in self.pairs]
        self._outputs = [o for _, o in self.pairs]
        self._missing_is_number = not math.isnan(self.missing)
        self._fill = self._fill_column()

    def bind_types(self, types: dict[str, str]) -> None:
        for c, o in self.pairs:
            self.cast[c] = types.get(c)
            if c in types:
                types[o] = types[c]
        self._fill = self._fill_column()

    def _surrogate(self, col: str) -> float:
        s, t = self.surrogates[col], self.cast[col]
        if t in INTEGRAL_TYPES:
            return float(math.trunc(s))
        if t == "float":
            return float(np.float32(s))
        return s

    def _fill_column(self) -> np.ndarray:
        """The surrogates (cast to each input's type) as a ``(n_inputs, 1)`` column."""
        return np.array([self._surrogate(c) for c in self._inputs], dtype=np.float64).reshape(-1, 1)

    def transform(self, frame: Frame) -> None:
        # every input column at once (a few numpy calls instead of a few per column): one
        # (n_inputs, n_rows) block, each output column a row of the result
        cols = [frame[c] for c in self._inputs]
        x = np.concatenate(cols).reshape(len(cols), cols[0].shape[0])
        mask = np.isnan(x)
        if self._missing_is_number:
            mask |= x == self.missing
        if np.count_nonzero(mask):
            x = np.where(mask, self._fill, x)
        # zip is not strict on purpose: the names run out first, so the iteration over the array never
        # reaches its end (which numpy signals with a costly IndexError)
        frame.update(zip(self._outputs, x, strict=False))

    def row_fn(self) -> RowFn:
        # straight-line code: each column's null (or missingValue) test and fill
        lines = ["def impute(row):"]
        test = "v != v or v == missing" if self._missing_is_number else "v != v"
        for k, (c, o) in enumerate(self.pairs):
            lines += [
                f"    v = row[{c!r}]",
                "    if type(v) is not float:",
                "        raise RowFallback",
                f"    row[{o!r}] = F{k} if {test} else v",
            ]
        fills = {f"F{k}": f for k, f in enumerate(self._fill[:, 0].tolist())}
        return generated_function(lines, "impute", {**fills, "missing": self.missing}, f"Imputer {self.uid}")


# ----------------------------------------------------------------------------------- StringIndexer
@register(_F + "StringIndexerModel")
class StringIndexerTwin(Twin):
    """Label -> index from the fitted ``labelsArray``; numeric inputs are cast to string as Spark does.

    ``keep``: unseen and null -> ``numLabels``. ``error``: unseen or null -> InputError. ``skip`` (Spark
    drops the row) -> InputError.
    """

    consumes = "string"

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.pairs = _pairs(stage)
        row = stage.read_rows()[0]
        labels = row.get("labelsArray") or [row["labels"]]
        self.maps = [{lab: float(i) for i, lab in enumerate(ls)} for ls in labels]
        self.sizes = [float(len(ls)) for ls in labels]
        self.invalid = _handle_invalid(stage)
        self.types: dict[str, str | None] = {}
        self._outputs = [o for _, o in self.pairs]

    def bind_types(self, types: dict[str, str]) -> None:
        for c, o in self.pairs:
            self.types[c] = types.get(c)
            types[o] = "double"

    def transform(self, frame: Frame) -> None:
        keep = self.invalid == "keep"
        indices: list[float] = []  # every output column's indices, one after the other
        n = 0
        for (c, _), m, size in zip(self.pairs, self.maps, self.sizes, strict=True):
            x = frame[c]
            vals = x.tolist() if x.dtype is _OBJECT else _to_spark_strings(x, self.types.get(c))
            n = len(vals)
            if keep:
                indices += map(m.get, vals, repeat(size))
            else:
                out = list(map(m.get, vals))
                if None in out:
                    i = out.index(None)
                    v = vals[i]
                    what = "null" if v is None else f"unseen label {v!r}"
                    raise InputError.at(
                        c,
                        i,
                        f"{what}; the model (handleInvalid={self.invalid!r}) knows {int(size)} labels",
                        expected=f"one of {int(size)} known labels",
                    )
                indices += out
        block = np.array(indices, dtype=np.float64).reshape(len(self.pairs), n)
        frame.update(zip(self._outputs, block, strict=False))  # not strict: see ImputerTwin.transform

    def row_fn(self) -> RowFn:
        specs = [(c, o, m, self.types.get(c)) for (c, o), m in zip(self.pairs, self.maps, strict=True)]
        sizes = self.sizes if self.invalid == "keep" else [None] * len(specs)
        specs2 = [(*sp_, size) for sp_, size in zip(specs, sizes, strict=True)]

        def index(row: Row) -> None:
            for c, o, m, t, size in specs2:
                v = row[c]
                if type(v) is not str:
                    v = _spark_string_one(v, t)
                i = m.get(v, size)
                if i is None:
                    raise RowFallback  # unseen or null under handleInvalid error/skip
                row[o] = i

        return index


# ----------------------------------------------------------------------------------- OneHotEncoder
@register(_F + "OneHotEncoderModel")
class OneHotEncoderTwin(Twin):
    """Index -> one-hot vector (``dropLast``, ``handleInvalid`` keep/error); null -> null vector."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.pairs = _pairs(stage)
        self.cat_sizes = [int(s) for s in stage.read_rows()[0]["categorySizes"]]
        self.drop_last = bool(stage.param("dropLast", True))
        self.keep = _handle_invalid(stage) == "keep"
        sizes = []
        for s in self.cat_sizes:
            if self.keep and not self.drop_last:
                sizes.append(s + 1)
            elif not self.keep and self.drop_last:
                sizes.append(s - 1)
            else:
                sizes.append(s)
        self.sizes = sizes
        self.eyes = [
            np.eye(orig + 1, size, dtype=np.float64) if size <= DENSE_MAX else None
            for orig, size in zip(self.cat_sizes, sizes, strict=True)
        ]
        # row i of eye as a (1, size) array, for the single-row path
        self.one_rows = [None if eye is None else list(eye[:, None, :]) for eye in self.eyes]
        self._specs = list(zip(self.pairs, self.cat_sizes, self.sizes, self.eyes, self.one_rows, strict=True))

    def bind_types(self, types: dict[str, str]) -> None:
        for _, o in self.pairs:
            types[o] = "vector"

    def transform(self, frame: Frame) -> None:
        for (c, o), orig, size, eye, one_rows in self._specs:
            x = frame[c]
            if one_rows is not None and x.shape == (1,) and 0.0 <= (v := x.item()) < orig:  # one row
                frame[o] = one_rows[int(v)].copy()
                continue
            valid = (x >= 0) & (x < orig)  # NaN (null) is not valid
            null = None
            if valid.all():
                idx = x.astype(np.int64)  # truncation, as Spark's idx.toInt
            else:
                null = np.isnan(x)
                bad = ~valid & ~null
                if not self.keep and bad.any():
                    i = _first_bad(bad)
                    raise InputError.at(
                        c, i, f"category index {x[i]!r} outside [0, {orig})", expected=f"index in [0, {orig})"
                    )
                idx = np.where(valid, x, orig).astype(np.int64)  # invalid -> the extra category
                if not null.any():
                    null = None
            if eye is not None:
                out = eye[idx]  # row idx of eye(orig + 1, size) is the one-hot (or all-zero) vector
                if null is not None:
                    out[null] = np.nan
            else:
                rows = np.flatnonzero(idx < size)
                out = sp.csr_matrix((np.ones(rows.size), (rows, idx[rows])), shape=(x.shape[0], size))
                if null is not None:
                    out = out.tolil()
                    out[np.flatnonzero(null)] = np.nan
                    out = out.tocsr()
            frame[o] = out

    def row_fn(self) -> RowFn | None:
        if any(eye is None for eye in self.eyes):
            return None  # a wide vector: the batch path's sparse matrices
        specs = [
            (c, o, float(orig), [row.tolist() for row in eye], [math.nan] * size, self.keep)
            for (c, o), orig, size, eye in zip(self.pairs, self.cat_sizes, self.sizes, self.eyes, strict=True)
        ]

        def encode(row: Row) -> None:
            for c, o, orig, vectors, null, keep in specs:
                v = row[c]
                if type(v) is not float:
                    raise RowFallback
                if 0.0 <= v < orig:
                    row[o] = vectors[int(v)]
                elif v != v:
                    row[o] = null
                elif keep:
                    row[o] = vectors[-1]  # the extra category (all zeros with dropLast)
                else:
                    raise RowFallback

        return encode


# --------------------------------------------------------------------------------- VectorSizeHint
@register(_F + "VectorSizeHint")
class VectorSizeHintTwin(Twin):
    """Check the width of a vector input; the column passes through unchanged.

    ``error`` and ``skip``: a vector of another size is an InputError naming the column (Spark raises
    or drops the row); ``optimistic``: no check. A null vector never reaches it (the input cast refuses).
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.col = stage.param("inputCol")
        self.size = int(stage.param("size"))
        self.invalid = _handle_invalid(stage, "error")

    def transform(self, frame: Frame) -> None:
        if self.invalid == "optimistic":
            return
        x = frame[self.col]
        width = x.shape[1] if getattr(x, "ndim", 1) == 2 and x.shape[0] else self.size
        if width != self.size:
            raise InputError.at(
                self.col, None, f"expected a vector of {self.size} numbers, got {width}", expected="vector"
            )


# --------------------------------------------------------------------------------- VectorAssembler
@register(_F + "VectorAssembler")
class VectorAssemblerTwin(Twin):
    """Concatenate scalar and vector columns (dense or CSR).

    ``error``: a null or NaN scalar, or a null vector, raises InputError; ``keep`` passes NaN (a null
    vector becomes NaNs); ``skip`` raises InputError (Spark would drop the row).
    """

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.cols = list(stage.param("inputCols"))
        self.out = stage.param("outputCol")
        self.invalid = _handle_invalid(stage)

    def bind_types(self, types: dict[str, str]) -> None:
        self._kinds = {
            c: ("vector" if types.get(c) == "vector" else "scalar") if c in types else None for c in self.cols
        }
        types[self.out] = "vector"

    def _check(self, col: str, part: Any) -> None:
        if sp.issparse(part):
            bad = np.isnan(part.data)
            if not bad.any():
                return
            coo = part.tocoo()
            i = int(coo.row[np.isnan(coo.data)].min())
        else:
            nan = np.isnan(part)
            bad = nan if part.ndim == 1 else (nan.all(axis=1) if self.invalid == "error" else nan.any(axis=1))
            if not bad.any():
                return
            i = _first_bad(bad)
        raise InputError.at(
            col,
            i,
            f"null or NaN not allowed (VectorAssembler handleInvalid={self.invalid!r})",
            expected="a non-null number",
        )

    def transform(self, frame: Frame) -> None:
        values = [frame[c] for c in self.cols]
        out = _concat_one_row(values)
        if out is None:
            parts = []
            any_sparse = False
            for v in values:
                if type(v) is np.ndarray:
                    parts.append(v[:, None] if v.ndim == 1 else v)
                elif sp.issparse(v):
                    any_sparse = True
                    parts.append(v)
                else:
                    parts.append(as_2d(np.asarray(v, dtype=np.float64)))
            if any_sparse:
                out = sp.hstack(parts, format="csr", dtype=np.float64)
                has_nan = _has_nan(out.data)
            else:
                out = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0].copy()
                has_nan = _has_nan(out)
        else:
            has_nan = _has_nan(out)
        if has_nan and self.invalid != "keep":
            for c, v in zip(self.cols, values, strict=True):
                self._check(
                    c, v if type(v) is np.ndarray or sp.issparse(v) else as_2d(np.asarray(v, np.float64))
                )
        frame[self.out] = out

    def row_fn(self) -> RowFn:
        return _assemble_row_fn(self.cols, self.out, self.invalid == "keep", getattr(self, "_kinds", {}))


def _assemble_row_fn(cols: list[str], out_col: str, keep: bool, kinds: dict[str, str | None]) -> RowFn:
    if cols:
        # straight-line code, one list display; an input of unknown kind (no stage recorded its type)
        # is checked for both
        lines = ["def assemble(row):"]
        parts = []
        for k, c in enumerate(cols):
            kind = kinds.get(c)
            lines.append(f"    a{k} = row[{c!r}]")
            if kind is None:
                lines += [
                    f"    if type(a{k}) is float:",
                    f"        a{k} = (a{k},)",
                    f"    elif type(a{k}) is not list:",
                    "        raise RowFallback",
                ]
            else:
                lines += [
                    f"    if type(a{k}) is not {'list' if kind == 'vector' else 'float'}:",
                    "        raise RowFallback",
                ]
            parts.append(f"a{k}" if kind == "scalar" else f"*a{k}")
        lines.append(f"    out = [{', '.join(parts)}]")
        if not keep:  # some NaN (or inf - inf): the batch path checks which rows Spark refuses
            lines += ["    total = sum(out)", "    if total != total:", "        raise RowFallback"]
        lines.append(f"    row[{out_col!r}] = out")
        return generated_function(lines, "assemble", {}, f"VectorAssembler {out_col}")

    def assemble(row: Row) -> None:
        out: list[float] = []
        for c in cols:
            v = row[c]
            tv = type(v)
            if tv is float:
                out.append(v)
            elif tv is list:
                out += v
            else:
                raise RowFallback
        if not keep:
            total = sum(out)
            if total != total:  # some NaN (or inf - inf): the batch path checks which rows Spark refuses
                raise RowFallback
        row[out_col] = out

    return assemble


def _slice_row_fn(inp: str, out: str, indices: list[int]) -> RowFn:
    """A row function keeping the elements ``indices`` of a dense vector (a list)."""
    pick = itemgetter(*indices) if indices else None

    def slice_vector(row: Row) -> None:
        x = row[inp]
        if type(x) is not list:
            raise RowFallback
        if pick is None:
            row[out] = []
        elif len(indices) == 1:
            row[out] = [x[indices[0]]]
        else:
            row[out] = list(pick(x))  # IndexError when too short: the batch path decides

    return slice_vector


def _concat_one_row(values: list[Any]) -> np.ndarray | None:
    """Columns of a one-row frame side by side as a ``(1, width)`` array, in one call that flattens
    every part (``None`` when the frame has more rows or a part is not a dense numeric array)."""
    if not values or type(values[0]) is not np.ndarray or values[0].shape[0] != 1:
        return None
    try:
        out = np.concatenate(values, axis=None)
    except (TypeError, ValueError):
        return None
    return None if out.dtype.kind == "O" else out.reshape(1, -1)  # object: a sparse part, or strings


def _has_nan(x: np.ndarray) -> bool:
    return np.count_nonzero(np.isnan(x)) > 0  # cheaper than np.isnan(x).any() on small arrays


# ------------------------------------------------------------------------------------------ scalers
def _scale_dense_or_sparse(x: Any, scale: np.ndarray) -> Any:
    if type(x) is np.ndarray and x.ndim == 2:
        return x * scale
    if sp.issparse(x):
        return sp.csr_matrix(x.multiply(scale.reshape(1, -1)))
    return _dense(x) * scale


@register(_F + "StandardScalerModel")
class StandardScalerTwin(Twin):
    """``(x - mean) * (1/std)``; zero-variance features give 0 (Spark's scale is 0 when std == 0)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        row = stage.read_rows()[0]
        std = vector_from_struct(row["std"])
        self.mean = vector_from_struct(row["mean"])
        self.with_mean = bool(stage.param("withMean", False))
        self.with_std = bool(stage.param("withStd", True))
        with np.errstate(divide="ignore"):
            self.scale = np.where(std == 0.0, 0.0, 1.0 / std)
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        x = frame[self.inp]
        if self.with_mean:
            y = _dense(x) - self.mean
            frame[self.out] = y * self.scale if self.with_std else y
        elif self.with_std:
            frame[self.out] = _scale_dense_or_sparse(x, self.scale)
        else:
            frame[self.out] = x.copy()

    def row_fn(self) -> RowFn:
        inp, out, size = self.inp, self.out, self.scale.size
        scale, mean = self.scale.tolist(), self.mean.tolist()
        with_mean, with_std = self.with_mean, self.with_std

        def standardize(row: Row) -> None:
            x = row[inp]
            if type(x) is not list or len(x) != size:
                raise RowFallback
            if with_mean:
                y = list(map(sub, x, mean))
                row[out] = list(map(mul, y, scale)) if with_std else y
            elif with_std:
                row[out] = list(map(mul, x, scale))
            else:
                row[out] = x

        return standardize


@register(_F + "MinMaxScalerModel")
class MinMaxScalerTwin(Twin):
    """Rescale to ``[min, max]``; constant features map to ``(min + max) / 2``; NaN stays NaN."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        row = stage.read_rows()[0]
        self.omin = vector_from_struct(row["originalMin"])
        omax = vector_from_struct(row["originalMax"])
        self.lo = float(stage.param("min", 0.0))
        self.hi = float(stage.param("max", 1.0))
        scale = self.hi - self.lo
        rng = omax - self.omin
        with np.errstate(divide="ignore", invalid="ignore"):
            self.scale_arr = np.where(rng != 0, scale / rng, 0.0)
        self.const = self.scale_arr == 0
        self.const_value = 0.5 * scale + self.lo
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        x = _dense(frame[self.inp])
        y = (x - self.omin) * self.scale_arr + self.lo
        y = np.where(self.const, self.const_value, y)
        frame[self.out] = np.where(np.isnan(x), x, y)


@register(_F + "MaxAbsScalerModel")
class MaxAbsScalerTwin(Twin):
    """``x * (1/maxAbs)`` (scale 1 where maxAbs == 0); sparse stays sparse."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        m = vector_from_struct(stage.read_rows()[0]["maxAbs"])
        with np.errstate(divide="ignore"):
            self.scale = np.where(m == 0.0, 1.0, 1.0 / m)
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        frame[self.out] = _scale_dense_or_sparse(frame[self.inp], self.scale)


# -------------------------------------------------------------------------------------------- text
_JAVA_WS = re.compile(r"[ \t\n\x0b\f\r]")


def _java_split(pattern: re.Pattern[str], text: str) -> list[str]:
    """``java.lang.String.split(regex)`` (limit 0): no leading empty string for a zero-width match at
    the start, trailing empty strings removed, no match -> ``[text]``."""
    out: list[str] = []
    index = 0
    matched = False
    for m in pattern.finditer(text):
        if index == 0 and m.start() == 0 and m.end() == 0:
            continue
        matched = True
        out.append(text[index : m.start()])
        index = m.end()
    if not matched:
        return [text]
    out.append(text[index:])
    while out and out[-1] == "":
        out.pop()
    return out


def _utf16_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-16-le")) // 2


def _check_text(col: str, values: np.ndarray) -> None:
    for i, v in enumerate(values.tolist()):
        if not isinstance(v, str):
            raise InputError.at(col, i, "null text cannot be tokenized (Spark fails on it)", "string")


@register(_F + "Tokenizer")
class TokenizerTwin(Twin):
    """``text.toLowerCase().split("\\\\s")`` (Java semantics); a null text raises InputError."""

    consumes = "string"

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        vals = frame[self.inp]
        _check_text(self.inp, vals)
        out = np.empty(len(vals), dtype=object)
        out[:] = [_java_split(_JAVA_WS, v.lower()) for v in vals.tolist()]
        frame[self.out] = out

    def row_fn(self) -> RowFn:
        inp, out = self.inp, self.out

        def tokenize(row: Row) -> None:
            v = row[inp]
            if type(v) is not str:
                raise RowFallback  # null text: Spark fails, the batch path names the row
            row[out] = _java_split(_JAVA_WS, v.lower())

        return tokenize


@register(_F + "RegexTokenizer")
class RegexTokenizerTwin(Twin):
    """Split on (``gaps``) or find all matches of ``pattern``; keep tokens of ``minTokenLength`` UTF-16
    units or more. Java regexes are compiled with ``re.ASCII`` (Java's ``\\w``, ``\\s``, ``\\d`` are ASCII)."""

    consumes = "string"

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols
        pattern = stage.param("pattern", "\\s+")
        try:
            self.regex = re.compile(pattern, re.ASCII)
        except re.error as exc:
            raise UnsupportedStageError(
                f"RegexTokenizer pattern {pattern!r} is not expressible as a Python regex: {exc}"
            ) from exc
        self.gaps = bool(stage.param("gaps", True))
        self.min_len = int(stage.param("minTokenLength", 1))
        self.lower = bool(stage.param("toLowercase", True))

    def _tokens(self, text: str) -> list[str]:
        if self.lower:
            text = text.lower()
        toks = _java_split(self.regex, text) if self.gaps else [m.group(0) for m in self.regex.finditer(text)]
        return [t for t in toks if _utf16_len(t) >= self.min_len]

    def transform(self, frame: Frame) -> None:
        vals = frame[self.inp]
        _check_text(self.inp, vals)
        out = np.empty(len(vals), dtype=object)
        out[:] = [self._tokens(v) for v in vals.tolist()]
        frame[self.out] = out

    def row_fn(self) -> RowFn:
        inp, out, tokens = self.inp, self.out, self._tokens

        def tokenize(row: Row) -> None:
            v = row[inp]
            if type(v) is not str:
                raise RowFallback  # null text: Spark fails, the batch path names the row
            row[out] = tokens(v)

        return tokenize


def _lower(s: str, locale: str) -> str:
    if locale.split("_")[0].lower() in ("tr", "az"):
        s = s.replace("I", "\u0131").replace("\u0130", "i")
    return s.lower()


@register(_F + "StopWordsRemover")
class StopWordsRemoverTwin(Twin):
    """Drop stop words (the list is saved in the stage params); case-insensitive compare lowercases
    both sides with the stage's ``locale`` (Turkish/Azeri dotted and dotless i honoured)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.pairs = _pairs(stage)
        words = list(stage.param("stopWords", []))
        self.case_sensitive = bool(stage.param("caseSensitive", False))
        self.locale = str(stage.param("locale", "en"))
        self.words = set(words) if self.case_sensitive else {_lower(w, self.locale) for w in words}

    def transform(self, frame: Frame) -> None:
        for c, o in self.pairs:
            vals = frame[c]
            out = np.empty(len(vals), dtype=object)
            words = self.words
            res = []
            for i, toks in enumerate(vals.tolist()):
                if toks is None:
                    raise InputError.at(c, i, "null token list", "array<string>")
                if self.case_sensitive:
                    res.append([t for t in toks if t not in words])
                else:
                    res.append([t for t in toks if t is None or _lower(t, self.locale) not in words])
            out[:] = res
            frame[o] = out

    def row_fn(self) -> RowFn:
        pairs, words, locale, case_sensitive = self.pairs, self.words, self.locale, self.case_sensitive

        def remove(row: Row) -> None:
            for c, o in pairs:
                toks = row[c]
                if type(toks) is not list:
                    raise RowFallback  # null token list: the batch path names the row
                if case_sensitive:
                    row[o] = [t for t in toks if t not in words]
                else:
                    row[o] = [t for t in toks if t is None or _lower(t, locale) not in words]

        return remove


@register(_F + "NGram")
class NGramTwin(Twin):
    """Space-joined sliding windows of ``n`` tokens."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols
        self.n = int(stage.param("n", 2))

    def transform(self, frame: Frame) -> None:
        vals = frame[self.inp]
        n = self.n
        out = np.empty(len(vals), dtype=object)
        out[:] = [[" ".join(t[i : i + n]) for i in range(len(t) - n + 1)] for t in vals.tolist()]
        frame[self.out] = out


@register(_F + "HashingTF")
class HashingTFTwin(Twin):
    """Term frequencies hashed with MurmurHash3 x86_32 (seed 42) over UTF-8 bytes into ``numFeatures``
    buckets (``binary`` -> 1.0); output is CSR. Models saved by Spark < 3 use the legacy hash."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols
        self.n = int(stage.param("numFeatures", 1 << 18))
        self.binary = bool(stage.param("binary", False))
        major = int(str(stage.metadata.get("sparkVersion", "3")).split(".")[0] or 3)
        self.hash = _HashCache(self.n, legacy=major < 3)

    def bind_types(self, types: dict[str, str]) -> None:
        types[self.out] = "vector"

    def transform(self, frame: Frame) -> None:
        h = self.hash
        rows: list[dict[int, float]] = []
        for i, toks in enumerate(frame[self.inp].tolist()):
            if toks is None:
                raise InputError.at(self.inp, i, "null token list", "array<string>")
            r: dict[int, float] = {}
            if self.binary:
                for t in toks:
                    r[h(t)] = 1.0
            else:
                for t in toks:
                    k = h(t)
                    r[k] = r.get(k, 0.0) + 1.0
            rows.append(r)
        frame[self.out] = _rows_to_csr(rows, self.n)

    def row_fn(self) -> RowFn | None:
        if self.n > ROW_VECTOR_MAX:
            return None  # the batch path's sparse matrices
        inp, out, n, h, binary = self.inp, self.out, self.n, self.hash, self.binary

        def hashing_tf(row: Row) -> None:
            toks = row[inp]
            if type(toks) is not list:
                raise RowFallback  # null token list: the batch path names the row
            v = [0.0] * n
            if binary:
                for t in toks:
                    v[h(t)] = 1.0
            else:
                for t in toks:
                    v[h(t)] += 1.0
            row[out] = v

        return hashing_tf


@register(_F + "CountVectorizerModel")
class CountVectorizerTwin(Twin):
    """Counts of vocabulary terms (``minTF`` absolute or fractional, ``binary``); output CSR."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols
        vocab = stage.read_rows()[0]["vocabulary"]
        self.index = {t: i for i, t in enumerate(vocab)}
        self.size = len(vocab)
        self.min_tf = float(stage.param("minTF", 1.0))
        self.binary = bool(stage.param("binary", False))

    def transform(self, frame: Frame) -> None:
        rows: list[dict[int, float]] = []
        idx = self.index
        for i, toks in enumerate(frame[self.inp].tolist()):
            if toks is None:
                raise InputError.at(self.inp, i, "null token list", "array<string>")
            r: dict[int, float] = {}
            for t in toks:
                k = idx.get(t)
                if k is not None:
                    r[k] = r.get(k, 0.0) + 1.0
            thr = self.min_tf if self.min_tf >= 1.0 else self.min_tf * len(toks)
            r = {k: (1.0 if self.binary else v) for k, v in r.items() if v >= thr}
            rows.append(r)
        frame[self.out] = _rows_to_csr(rows, self.size)


@register(_F + "FeatureHasher")
class FeatureHasherTwin(Twin):
    """Hash numeric columns as ``hash(name) -> value`` and string/boolean/categorical columns as
    ``hash("name=value") -> 1.0`` (values printed as Spark's ``toString``); nulls are skipped."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.cols = list(stage.param("inputCols"))
        self.out = stage.param("outputCol")
        self.n = int(stage.param("numFeatures", 1 << 18))
        self.categorical = set(stage.param("categoricalCols", []) or [])
        self.hash = _HashCache(self.n)
        self.types: dict[str, str | None] = {}

    def bind_types(self, types: dict[str, str]) -> None:
        for c in self.cols:
            self.types[c] = types.get(c)
        types[self.out] = "vector"

    def transform(self, frame: Frame) -> None:
        n = len(frame[self.cols[0]]) if self.cols else 0
        rows: list[dict[int, float]] = [{} for _ in range(n)]
        h = self.hash
        for c in self.cols:
            v = frame[c]
            t = self.types.get(c)
            is_str = v.dtype == object
            if not is_str and t != "boolean" and c not in self.categorical:
                k = h(c)
                for i, x in enumerate(v.tolist()):
                    if x == x:
                        r = rows[i]
                        r[k] = r.get(k, 0.0) + x
                continue
            for i, s in enumerate(_to_spark_strings(v, t)):
                if s is not None:
                    k = h(f"{c}={s}")
                    r = rows[i]
                    r[k] = r.get(k, 0.0) + 1.0
        frame[self.out] = _rows_to_csr(rows, self.n)


@register(_F + "IDFModel")
class IDFTwin(Twin):
    """Multiply term frequencies by the fitted ``idf`` vector (sparse stays sparse)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.idf = vector_from_struct(stage.read_rows()[0]["idf"])
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        frame[self.out] = _scale_dense_or_sparse(frame[self.inp], self.idf)

    def row_fn(self) -> RowFn:
        inp, out, idf = self.inp, self.out, self.idf.tolist()
        size = len(idf)

        def scale(row: Row) -> None:
            x = row[inp]
            if type(x) is not list or len(x) != size:
                raise RowFallback
            row[out] = list(map(mul, x, idf))

        return scale


# -------------------------------------------------------------------------------------- Bucketizer
@register(_F + "Bucketizer")
class BucketizerTwin(Twin):
    """Bucket index by ``splits`` (the last split closes the last bucket). Out-of-bounds values raise
    InputError (as Spark does under every ``handleInvalid``); null -> null (NaN)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.pairs = _pairs(stage)
        p = stage.params
        splits = p["splitsArray"] if p.get("splitsArray") else [p["splits"]]
        self.splits = [np.asarray([float(s) for s in sp_], dtype=np.float64) for sp_ in splits]
        self.invalid = _handle_invalid(stage)
        self.zero_pos = [
            int(np.searchsorted(s, 0.0, side="left")) if bool((s == 0.0).any()) else None for s in self.splits
        ]

    def bind_types(self, types: dict[str, str]) -> None:
        for _, o in self.pairs:
            types[o] = "double"

    def transform(self, frame: Frame) -> None:
        for (c, o), s, zero in zip(self.pairs, self.splits, self.zero_pos, strict=True):
            x = frame[c]
            idx = np.searchsorted(s, x, side="right") - 1  # NaN sorts last
            last = len(s) - 2
            if zero is not None:  # Java's binarySearch orders -0.0 before 0.0
                negz = (x == 0.0) & np.signbit(x)
                if negz.any():
                    idx[negz] = zero - 1
            if idx.min(initial=0) >= 0 and idx.max(initial=0) <= last:
                frame[o] = idx.astype(np.float64)
                continue
            null = np.isnan(x)
            if self.invalid == "skip" and null.any():
                raise InputError.at(c, _first_bad(null), "null not allowed (Bucketizer handleInvalid='skip')")
            oob = ~null & ((idx < 0) | (x > s[-1]))
            if oob.any():
                i = _first_bad(oob)
                raise InputError.at(
                    c,
                    i,
                    f"value {x[i]!r} outside Bucketizer bounds [{s[0]}, {s[-1]}]",
                    f"in [{s[0]}, {s[-1]}]",
                )
            idx = np.minimum(idx, last).astype(np.float64)  # x == the last split closes the last bucket
            frame[o] = np.where(null, np.nan, idx)


# ---------------------------------------------------------------------------------- IndexToString
@register(_F + "IndexToString")
class IndexToStringTwin(Twin):
    """Index -> label from the stage's ``labels`` param; a null index or one outside the labels raises
    InputError (Spark fails with "Unseen index")."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        labels = stage.param("labels")
        if not labels:
            raise UnsupportedStageError(
                f"IndexToString {stage.uid} has no 'labels' param (it reads them from column metadata, "
                "which a saved model does not carry); set labels=... when building the pipeline"
            )
        self.labels = np.asarray(list(labels), dtype=object)
        self.k = len(labels)
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def bind_types(self, types: dict[str, str]) -> None:
        types[self.out] = "string"

    def transform(self, frame: Frame) -> None:
        x = frame[self.inp]
        idx = np.trunc(x)
        bad = ~((idx >= 0) & (idx < self.k))  # NaN (null) is bad
        if bad.any():
            null = np.isnan(x)
            i = _first_bad(bad)
            what = "null index" if null[i] else f"index {x[i]!r} has no label"
            raise InputError.at(
                self.inp, i, f"{what} (the stage knows {self.k} labels)", f"index in [0, {self.k})"
            )
        frame[self.out] = self.labels[idx.astype(np.int64)]

    def row_fn(self) -> RowFn:
        inp, out, labels, k = self.inp, self.out, self.labels.tolist(), float(self.k)

        def label(row: Row) -> None:
            v = row[inp]
            if type(v) is not float or (not (0.0 <= v < k) and not (-1.0 < v < 0.0)):
                raise RowFallback  # null or no label: the batch path names the row
            row[out] = labels[int(v)]  # int() truncates as np.trunc does

        return label


# ---------------------------------------------------------------------------------- vector stages
@register(_F + "VectorSlicer")
class VectorSlicerTwin(Twin):
    """Select vector elements by ``indices`` (feature ``names`` need column metadata: unsupported)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        if stage.param("names"):
            raise UnsupportedStageError(
                f"VectorSlicer {stage.uid} selects by names, which need column metadata; use indices"
            )
        self.indices = np.asarray(stage.param("indices", []), dtype=np.int64)
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        x = frame[self.inp]
        frame[self.out] = x[:, self.indices].tocsr() if sp.issparse(x) else as_2d(x)[:, self.indices]

    def row_fn(self) -> RowFn:
        return _slice_row_fn(self.inp, self.out, self.indices.tolist())


class _SelectorTwin(Twin):
    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.indices = np.sort(np.asarray(stage.read_rows()[0]["selectedFeatures"], dtype=np.int64))
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        x = frame[self.inp]
        frame[self.out] = x[:, self.indices].tocsr() if sp.issparse(x) else as_2d(x)[:, self.indices]

    def row_fn(self) -> RowFn:
        return _slice_row_fn(self.inp, self.out, self.indices.tolist())


@register(
    _F + "VarianceThresholdSelectorModel", _F + "UnivariateFeatureSelectorModel", _F + "ChiSqSelectorModel"
)
class SelectorTwin(_SelectorTwin):
    """Keep the fitted ``selectedFeatures`` (in ascending index order, as Spark does)."""


@register(_F + "Normalizer")
class NormalizerTwin(Twin):
    """Divide each vector by its p-norm (unchanged when the norm is 0)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.p = float(stage.param("p", 2.0))
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        x = _dense(frame[self.inp])
        a = np.abs(x)
        p = self.p
        if p == 1.0:
            norm = a.sum(axis=1)
        elif p == 2.0:
            norm = np.sqrt((x * x).sum(axis=1))
        elif math.isinf(p):
            norm = a.max(axis=1) if x.shape[1] else np.zeros(x.shape[0])
        else:
            norm = np.power(np.power(a, p).sum(axis=1), 1.0 / p)
        safe = np.where(norm == 0.0, 1.0, norm)
        y = x / safe[:, None]
        frame[self.out] = sp.csr_matrix(y) if sp.issparse(frame[self.inp]) else y


@register(_F + "ElementwiseProduct")
class ElementwiseProductTwin(Twin):
    """Multiply by the ``scalingVec`` param."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        v = stage.param("scalingVec")
        self.vec = (
            vector_from_struct(v) if isinstance(v, dict) and "type" in v else np.asarray(v, dtype=float)
        )
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        frame[self.out] = _scale_dense_or_sparse(frame[self.inp], self.vec)


def _poly_size(num_features: int, degree: int) -> int:
    return math.comb(num_features + degree, degree)


@register(_F + "PolynomialExpansion")
class PolynomialExpansionTwin(Twin):
    """Spark's monomial order (its recursive ``expandDense``), evaluated column-wise over the batch with
    the same multiplication order."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.degree = int(stage.param("degree", 2))
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        x = _dense(frame[self.inp])
        n, d = x.shape
        out = np.zeros((n, _poly_size(d, self.degree) - 1), dtype=np.float64)

        def expand(last: int, degree: int, mult: np.ndarray, cur: int) -> int:
            if degree == 0 or last < 0:
                if cur >= 0:
                    out[:, cur] = mult
            else:
                v = x[:, last]
                alpha = mult
                start = cur
                for i in range(degree + 1):
                    start = expand(last - 1, degree - i, alpha, start)
                    alpha = alpha * v
            return cur + _poly_size(last + 1, degree)

        expand(d - 1, self.degree, np.ones(n), -1)
        frame[self.out] = out


@register(_F + "PCAModel")
class PCATwin(Twin):
    """Project onto the fitted principal components (``pc`` is features x k)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.pc = matrix_from_struct(stage.read_rows()[0]["pc"])
        (self.inp,) = self.input_cols
        (self.out,) = self.output_cols

    def transform(self, frame: Frame) -> None:
        x = frame[self.inp]
        frame[self.out] = np.asarray(x @ self.pc) if sp.issparse(x) else _dense(x) @ self.pc


@register(_F + "Binarizer")
class BinarizerTwin(Twin):
    """``1.0`` where the value is above ``threshold``, else ``0.0`` (scalar columns and vectors)."""

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.pairs = _pairs(stage)
        p = stage.params
        th = p.get("thresholds") or [p.get("threshold", 0.0)] * len(self.pairs)
        self.thresholds = [float(t) for t in th]

    def transform(self, frame: Frame) -> None:
        for (c, o), t in zip(self.pairs, self.thresholds, strict=True):
            x = frame[c]
            if sp.issparse(x):
                y = x.copy().astype(np.float64)
                y.data = (y.data > t).astype(np.float64)
                y.eliminate_zeros()
                frame[o] = y
            else:
                x = np.asarray(x, dtype=np.float64)
                frame[o] = (
                    np.where(np.isnan(x), np.nan, (x > t).astype(np.float64))
                    if x.ndim == 1
                    else ((x > t).astype(np.float64))
                )


# ---------------------------------------------------------------------------------- TargetEncoder
@register(_F + "TargetEncoderModel")
class TargetEncoderTwin(Twin):
    """Category index -> smoothed target statistic (Spark 4 ``TargetEncoderModel``).

    The saved data holds, per input column, the seen categories with their counts and statistics and a
    global entry; the encoding of a category is ``w * stat + (1 - w) * global`` with
    ``w = count / (count + smoothing)`` (binary targets divide the positive count by the count first).
    A null seen in training is a category of its own (saved as ``-1``); unseen categories (and nulls
    not seen in training) get the global value under ``keep`` and raise InputError under ``error``.
    """

    UNSEEN = float(2**31 - 1)
    NULL = -1.0

    def __init__(self, stage: StageFiles):
        super().__init__(stage)
        self.pairs = _pairs(stage)
        self.smoothing = float(stage.param("smoothing", 0.0))
        self.binary = str(stage.param("targetType", "binary")) == "binary"
        self.keep = _handle_invalid(stage) == "keep"
        self.maps: list[dict[float, float]] = [{} for _ in self.pairs]
        self.globals: list[float] = [math.nan] * len(self.pairs)
        self.nulls: list[float | None] = [None] * len(self.pairs)
        for row in stage.read_rows():
            i = int(row["index"])
            enc = self._encodings(row["categories"], row["counts"], row["stats"])
            self.globals[i] = enc.pop(self.UNSEEN)
            self.nulls[i] = enc.pop(self.NULL, None)  # nulls seen in training are a category of their own
            self.maps[i] = enc

    @property
    def input_cols(self) -> list[str]:
        return [c for c, _ in self.pairs]

    def _encodings(self, cats: list[float], counts: list[float], stats: list[float]) -> dict[float, float]:
        g = cats.index(self.UNSEEN)
        gc, gs = counts[g], stats[g]
        gval = gs / gc if self.binary else gs
        out = {}
        for c, n, s in zip(cats, counts, stats, strict=True):
            w = n / (n + self.smoothing)
            out[float(c)] = w * (s / n) + (1 - w) * gval if self.binary else w * s + (1 - w) * gval
        return out

    def bind_types(self, types: dict[str, str]) -> None:
        for _, o in self.pairs:
            types[o] = "double"

    def transform(self, frame: Frame) -> None:
        for (c, o), m, g, null_enc in zip(self.pairs, self.maps, self.globals, self.nulls, strict=True):
            vals = np.asarray(frame[c], dtype=np.float64).tolist()
            out = [m.get(v) for v in vals]
            for i, e in enumerate(out):
                if e is None:
                    if null_enc is not None and vals[i] != vals[i]:
                        out[i] = null_enc
                    elif self.keep:
                        out[i] = g
                    else:
                        v = vals[i]
                        what = "null" if v != v else f"unseen category {v!r}"
                        raise InputError.at(c, i, f"{what} (TargetEncoder handleInvalid='error')")
            frame[o] = np.asarray(out, dtype=np.float64)

    def row_fn(self) -> RowFn:
        specs = list(zip(self.pairs, self.maps, self.globals, self.nulls, strict=True))
        keep = self.keep

        def encode(row: Row) -> None:
            for (c, o), m, g, null_enc in specs:
                v = row[c]
                if type(v) is not float:
                    raise RowFallback
                e = m.get(v)
                if e is None:
                    if null_enc is not None and v != v:
                        e = null_enc
                    elif keep:
                        e = g
                    else:
                        raise RowFallback  # the batch path names the row
                row[o] = e

        return encode
