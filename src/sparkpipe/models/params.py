"""The Params of every registered estimator, as data: checking a config needs neither pyspark nor a JVM.

Loading and validating a YAML file is the first thing every command does (``serve`` and each ``/train``
job included), so it must not import ``pyspark.ml`` (a second of imports) or ``xgboost.spark``.
:data:`ESTIMATOR_PARAMS` lists each estimator class's Param names with the name of its Spark type
converter, and :data:`CONVERTERS` reproduces those converters (``pyspark.ml.param.TypeConverters``) for
the values a config or a search space can hold.

The table is generated from the installed pyspark and xgboost and checked against them by
``tests/unit/test_algorithms.py``; after upgrading either, regenerate it::

    .venv/bin/python -m sparkpipe.models.params && .venv/bin/ruff format src/sparkpipe/models
"""

from __future__ import annotations

import array
from collections.abc import Callable
from typing import Any

from sparkpipe.models._param_table import ESTIMATOR_PARAMS

__all__ = ["CONVERTERS", "ESTIMATOR_PARAMS", "converter_of", "param_names"]


def param_names(estimator_path: str) -> dict[str, str]:
    """Param name → converter name of an estimator class (``pyspark.ml.classification.LogisticRegression``)."""
    try:
        return ESTIMATOR_PARAMS[estimator_path]
    except KeyError:
        raise KeyError(
            f"{estimator_path} is not in the Param table; regenerate it: python -m sparkpipe.models.params"
        ) from None


# ------------------------------------------------------- TypeConverters, without importing pyspark.ml
def _is_numeric(value: Any) -> bool:
    import numpy as np

    return type(value) in (int, float, np.float64, np.int64)


def _is_integer(value: Any) -> bool:
    return _is_numeric(value) and float(value).is_integer()


def _is_string(value: Any) -> bool:
    import numpy as np

    return isinstance(value, str) or type(value) in (np.bytes_, np.str_)


def _as_list(value: Any) -> list[Any]:
    import numpy as np

    if isinstance(value, list):
        return value
    if isinstance(value, np.ndarray | tuple | range | array.array):
        return list(value)
    raise TypeError(f"Could not convert {value!r} to list")


def to_int(value: Any) -> int:
    if _is_integer(value):
        return int(value)
    raise TypeError(f"Could not convert {value!r} to int")


def to_float(value: Any) -> float:
    if _is_numeric(value):
        return float(value)
    raise TypeError(f"Could not convert {value!r} to float")


def to_string(value: Any) -> str:
    if _is_string(value):
        return str(value)
    raise TypeError(f"Could not convert {type(value)} to string type")


def to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(f"Boolean Param requires value of type bool. Found {type(value)}.")


def to_list_int(value: Any) -> list[int]:
    values = _as_list(value)
    if all(_is_integer(v) for v in values):
        return [int(v) for v in values]
    raise TypeError(f"Could not convert {value!r} to list of ints")


def to_list_float(value: Any) -> list[float]:
    values = _as_list(value)
    if all(_is_numeric(v) for v in values):
        return [float(v) for v in values]
    raise TypeError(f"Could not convert {value!r} to list of floats")


def to_list_string(value: Any) -> list[str]:
    values = _as_list(value)
    if all(_is_string(v) for v in values):
        return [str(v) for v in values]
    raise TypeError(f"Could not convert {value!r} to list of strings")


def to_list_list_float(value: Any) -> list[list[float]]:
    return [to_list_float(v) for v in _as_list(value)]


def to_matrix(value: Any) -> Any:
    raise TypeError("a Spark Matrix cannot be written in a config")


def identity(value: Any) -> Any:
    return value


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "toInt": to_int,
    "toFloat": to_float,
    "toString": to_string,
    "toBoolean": to_boolean,
    "toListInt": to_list_int,
    "toListFloat": to_list_float,
    "toListString": to_list_string,
    "toListListFloat": to_list_list_float,
    "toVector": to_list_float,  # a config holds the list; Spark makes the vector when the estimator is built
    "toMatrix": to_matrix,
    "identity": identity,
}


def converter_of(name: str) -> Callable[[Any], Any]:
    """The pure-Python converter for a Spark converter name (``identity`` for unknown ones)."""
    return CONVERTERS.get(name, identity)


# ------------------------------------------------------------------------------------ generation
def live_params(estimator_path: str) -> dict[str, str]:
    """Param name → converter name read from the installed estimator class (imports it)."""
    import importlib

    from pyspark.ml.param import Param

    module, _, cls_name = estimator_path.rpartition(".")
    cls = getattr(importlib.import_module(module), cls_name)
    out: dict[str, str] = {}
    for attr in dir(cls):
        value = getattr(cls, attr, None)
        if isinstance(value, Param):
            out[value.name] = getattr(value.typeConverter, "__name__", "identity")
    return dict(sorted(out.items()))


def generate() -> str:
    """The source of ``_param_table.py`` for every estimator in the algorithm registry."""
    import pprint

    import pyspark

    from sparkpipe.models.algorithms import ALGORITHMS

    try:
        import xgboost

        versions = f"pyspark {pyspark.__version__}, xgboost {xgboost.__version__}"
    except ImportError:  # pragma: no cover - xgboost is a dependency
        versions = f"pyspark {pyspark.__version__}"
    table = {path: live_params(path) for path in sorted({s.estimator for s in ALGORITHMS.values()})}
    body = pprint.pformat(table, width=110, sort_dicts=True)
    return (
        f'"""Generated from {versions} by ``python -m sparkpipe.models.params``; do not edit."""\n\n'
        f"ESTIMATOR_PARAMS: dict[str, dict[str, str]] = {body}\n"
    )


if __name__ == "__main__":
    from pathlib import Path

    source = generate()  # before opening the file: generating imports the current table
    target = Path(__file__).with_name("_param_table.py")
    target.write_text(source)
    print(f"wrote {target}")
