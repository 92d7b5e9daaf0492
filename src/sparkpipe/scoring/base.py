"""The contract every NumPy twin of a fitted Spark stage follows.

A *frame* is a plain ``dict`` mapping column name to a NumPy array with one entry per row:

========================  ==========================================================================
Spark column type         frame representation
========================  ==========================================================================
numeric (int/long/float/  ``float64`` 1-D array; null is ``NaN``
double/decimal), boolean
string                    ``object`` 1-D array of ``str``; null is ``None``
timestamp / date          ``datetime64[us]`` 1-D array (UTC); null is ``NaT``
vector (dense)            ``float64`` 2-D array of shape ``(n_rows, size)``
vector (sparse)           ``scipy.sparse.csr_matrix`` of shape ``(n_rows, size)``
array<string>             ``object`` 1-D array whose items are ``list[str]`` (tokenizer output)
========================  ==========================================================================

A twin reads its input columns from the frame and **adds** its output columns to it (it never removes
columns), exactly as Spark's ``transform`` appends columns. Twins must be vectorised over the batch and
must give the same results as Spark for nulls, unseen categories, out-of-range values and constant
columns (parity tests demand equality of predictions and 1e-9 on numbers).

Twins are registered by the Java (or Python) class name found in the saved stage's metadata, e.g.
``org.apache.spark.ml.feature.ImputerModel`` or ``sparkpipe.features.stages.TimeFeatures``::

    @register("org.apache.spark.ml.feature.ImputerModel")
    class ImputerTwin(Twin):
        def __init__(self, stage: StageFiles):
            ...

        def transform(self, frame: Frame) -> None:
            ...

**The row path.** A twin may also offer :meth:`Twin.row_fn`: a closure scoring *one* row held in a
plain ``dict`` (column name -> Python value), with no NumPy call on the way. Row values:

========================  ==========================================================================
Spark column type         row representation
========================  ==========================================================================
numeric, boolean          ``float``; null is ``NaN``
string                    ``str``; null is ``None``
timestamp / date          ``int`` microseconds since the epoch (UTC); null is ``None``
vector                    ``list`` of ``float`` (dense; never mutated once stored)
========================  ==========================================================================

A row function handles the common case exactly as :meth:`Twin.transform` does (same IEEE operations
where the order matters) and raises :class:`RowFallback` for anything else (an error Spark would raise,
an unusual value type, a year outside 1-9999, ...): the compiled pipeline then scores the whole request
on the batch path, which gives the reference answer or the reference error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sparkpipe.errors import ScoringError, UnsupportedStageError

Frame = dict[str, Any]
"""Column name -> NumPy array (or scipy.sparse matrix for sparse vectors)."""

Row = dict[str, Any]
"""Column name -> Python value of one row (see the row path in the module docstring)."""

RowFn = Callable[[Row], None]
"""A twin's row function: reads its inputs from the row and adds its outputs to it."""


class RowFallback(Exception):
    """Raised by a row function for a case it leaves to the batch path (see the module docstring)."""


def generated_function(
    lines: list[str], name: str, namespace: dict[str, Any], label: str
) -> Callable[..., Any]:
    """Compile generated Python source (``lines``, defining function ``name``) in ``namespace`` (the
    names it uses; ``RowFallback`` and ``nan`` are added) and return the function. Row functions are
    generated where straight-line code beats a loop over the stage's columns."""
    ns = {"RowFallback": RowFallback, "nan": float("nan"), **namespace}
    exec(compile("\n".join(lines) + "\n", f"<{label}>", "exec"), ns)
    return ns[name]


TWINS: dict[str, type[Twin]] = {}
"""Registry: class name in the stage metadata -> twin class."""


def register(*class_names: str) -> Callable[[type[Twin]], type[Twin]]:
    """Class decorator registering a twin for one or more Spark stage class names."""

    def deco(cls: type[Twin]) -> type[Twin]:
        for name in class_names:
            if name in TWINS and TWINS[name] is not cls:
                raise ScoringError(
                    f"two twins registered for {name}: {TWINS[name].__name__} and {cls.__name__}"
                )
            TWINS[name] = cls
        cls.spark_classes = tuple(class_names)
        return cls

    return deco


@dataclass
class StageFiles:
    """One saved stage directory: its metadata and lazily read data files.

    Attributes
    ----------
    path
        The stage directory (``.../stages/03_StringIndexer_abc``).
    metadata
        The parsed JSON line of ``metadata/part-00000``.
    """

    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> StageFiles:
        path = Path(path)
        meta_dir = path / "metadata"
        parts = sorted(meta_dir.glob("part-*")) if meta_dir.is_dir() else []
        if not parts:
            raise ScoringError(f"{path} is not a saved Spark ML stage (no metadata/part-* file)")
        line = parts[0].read_text().strip().splitlines()[0]
        return cls(path=path, metadata=json.loads(line))

    @property
    def class_name(self) -> str:
        return self.metadata["class"]

    @property
    def uid(self) -> str:
        return self.metadata.get("uid", "")

    @cached_property
    def params(self) -> dict[str, Any]:
        """Explicit params over default params (what the fitted stage actually used)."""
        merged = dict(self.metadata.get("defaultParamMap", {}))
        merged.update(self.metadata.get("paramMap", {}))
        return merged

    def param(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def read_table(self, subdir: str = "data"):
        """Read ``<stage>/<subdir>`` parquet files into one pyarrow Table."""
        import pyarrow.parquet as pq

        d = self.path / subdir
        files = sorted(p for p in d.glob("*.parquet")) if d.is_dir() else []
        if not files:
            raise ScoringError(f"stage {self.path.name} has no parquet data in {subdir}/")
        import pyarrow as pa

        # ParquetFile, not pq.read_table: the latter imports pyarrow.dataset (~0.4 s of service start-up)
        return pa.concat_tables([pq.ParquetFile(f).read() for f in files])

    def read_rows(self, subdir: str = "data") -> list[dict[str, Any]]:
        return self.read_table(subdir).to_pylist()


class Twin:
    """Base class of a NumPy twin. Subclasses parse the stage in ``__init__`` (once, at compile time)
    and implement :meth:`transform` (per batch, hot path)."""

    spark_classes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, stage: StageFiles):
        self.stage = stage
        self.uid = stage.uid

    @property
    def input_cols(self) -> list[str]:
        p = self.stage.params
        if "inputCols" in p:
            return list(p["inputCols"])
        if "inputCol" in p:
            return [p["inputCol"]]
        if "featuresCol" in p:
            return [p["featuresCol"]]
        return []

    @property
    def output_cols(self) -> list[str]:
        """Columns this twin adds; models override to list prediction/probability/rawPrediction."""
        p = self.stage.params
        if "outputCols" in p:
            return list(p["outputCols"])
        if "outputCol" in p:
            return [p["outputCol"]]
        return []

    def bind_types(self, types: dict[str, str]) -> None:
        """Compile-time hook, called once in pipeline order before any :meth:`transform`.

        ``types`` maps every column known so far to its Spark simple type name (``double``,
        ``integer``, ``string``, ``boolean``, ``timestamp``, ``vector``, ...): the input schema plus what
        earlier twins recorded. A twin whose result depends on the declared type (Spark casts an
        integer column's imputed value back to integer, hashes a boolean as ``col=true``, ...) reads
        its inputs' types here, and may record its outputs' types for later stages. Default: no-op.
        """

    def transform(self, frame: Frame) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def row_fn(self) -> RowFn | None:
        """Compile-time hook, called once after :meth:`bind_types`: the row function of this twin, or
        ``None`` when it has none (the pipeline then scores every batch size on the batch path)."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"class": self.stage.class_name, "uid": self.uid, "twin": type(self).__name__}


# ------------------------------------------------------------------------------------ vector helpers
def vector_from_struct(v: dict[str, Any] | None) -> np.ndarray:
    """Decode Spark's parquet vector struct (type 0 sparse, 1 dense) to a dense float64 array."""
    if v is None:
        raise ScoringError("missing vector in saved stage data")
    if v["type"] == 1:
        return np.asarray(v["values"], dtype=np.float64)
    out = np.zeros(int(v["size"]), dtype=np.float64)
    out[np.asarray(v["indices"], dtype=np.int64)] = np.asarray(v["values"], dtype=np.float64)
    return out


def matrix_from_struct(m: dict[str, Any]) -> np.ndarray:
    """Decode Spark's parquet matrix struct (dense or CSC sparse, maybe transposed) to a dense array."""
    rows, cols = int(m["numRows"]), int(m["numCols"])
    values = np.asarray(m["values"], dtype=np.float64)
    if m["type"] == 1:  # dense, column-major unless transposed
        if m.get("isTransposed"):
            return values.reshape(rows, cols)
        return values.reshape(cols, rows).T.copy()
    out = np.zeros((rows, cols), dtype=np.float64)
    col_ptrs = np.asarray(m["colPtrs"], dtype=np.int64)
    row_idx = np.asarray(m["rowIndices"], dtype=np.int64)
    if m.get("isTransposed"):  # CSR: colPtrs are row pointers, rowIndices are column indices
        for r in range(rows):
            sl = slice(col_ptrs[r], col_ptrs[r + 1])
            out[r, row_idx[sl]] = values[sl]
    else:
        for c in range(cols):
            sl = slice(col_ptrs[c], col_ptrs[c + 1])
            out[row_idx[sl], c] = values[sl]
    return out


def n_rows(frame: Frame) -> int:
    for v in frame.values():
        return v.shape[0]
    return 0


def as_2d(x: Any) -> Any:
    """A vector column as a 2-D array or sparse matrix (1-D arrays become one column)."""
    if hasattr(x, "tocsr"):
        return x
    x = np.asarray(x)
    return x.reshape(-1, 1) if x.ndim == 1 else x


def twin_for(stage: StageFiles) -> Twin:
    """Instantiate the registered twin for a saved stage or raise :class:`UnsupportedStageError`."""
    cls = TWINS.get(stage.class_name)
    if cls is None:
        raise UnsupportedStageError(f"no NumPy twin for {stage.class_name} (stage {stage.path.name})")
    return cls(stage)
