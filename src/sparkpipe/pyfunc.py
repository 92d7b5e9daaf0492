"""The ``python_function`` flavor of every model sparkpipe logs: the NumPy plan inside MLflow.

A model logged by :meth:`sparkpipe.tracking.Tracker.log_spark_model` keeps MLflow's ``spark`` flavor
(``mlflow.spark.load_model`` returns the ``PipelineModel``) and gets this module as the loader of its
``python_function`` flavor, in the same ``MLmodel`` and over the same ``sparkml/`` directory::

    flavors:
      python_function: {loader_module: sparkpipe.pyfunc, data: sparkml, code: code, scorer: numpy, ...}
      spark: {model_data: sparkml, pyspark_version: 4.3.0, ...}

``mlflow.pyfunc.load_model``, ``mlflow models serve``, ``mlflow.pyfunc.spark_udf`` and batch jobs then
compile the saved pipeline into sparkpipe's NumPy plan (:func:`sparkpipe.scoring.compile_pipeline`):
no SparkSession, no JVM. ``predict`` returns what the spark flavor's pyfunc returns (the
``prediction`` column as a list); ``params={"output": "full"}`` (or ``model_config={"output": "full"}``
when loading) returns every output column instead (``rawPrediction``, ``probability``, ``prediction``
and a predicted label) as a pandas DataFrame.

The scorer travels with the model: ``code/sparkpipe/`` holds this module, ``errors.py`` and
``scoring/`` (pure Python over NumPy, SciPy and pyarrow), so the model's requirements are the scorer's
and an environment built from them (``--env-manager virtualenv``) has neither pyspark nor a JVM. A
pipeline with a stage that has no NumPy twin keeps pyspark in its requirements, and its loader falls
back to the spark flavor's pyfunc, logging the stages that caused it.

This module imports MLflow only when saving a model and when falling back; the scorer never does.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparkpipe.errors import InputError, ScoringError, UnsupportedStageError

log = logging.getLogger(__name__)

FLAVOR_DATA = "sparkml"
"""The saved PipelineModel inside the MLflow model directory (the spark flavor's ``model_data``)."""
CODE_DIR = "code"
OUTPUT_PARAM = "output"
OUTPUTS = ("prediction", "full")
"""``prediction``: the prediction column, as the spark flavor's pyfunc; ``full``: every output column."""

_SCORER_FILES = ("errors.py", "pyfunc.py", "scoring")
_INIT = '''"""sparkpipe's JVM-free scorer, shipped with an MLflow model (see sparkpipe.pyfunc)."""

# an installed sparkpipe (training, serving) stays importable next to this copy
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from sparkpipe.errors import SparkpipeError  # noqa: E402

__version__ = {version!r}
__all__ = ["SparkpipeError", "__version__"]
'''


# ====================================================================================== requirements
def scorer_requirements() -> list[str]:
    """What the NumPy plan needs to load and score (MLflow for the pyfunc machinery itself)."""
    import mlflow

    return [
        f"mlflow=={mlflow.__version__}",
        "numpy>=1.26",
        "pandas>=2.2,<3",
        "pyarrow>=15",
        "scipy>=1.11",
        "pyyaml>=6",
    ]


def _write_requirements(path: Path, reqs: list[str]) -> None:
    """Replace the pip requirements MLflow wrote (``requirements.txt`` and the ``pip`` list of
    ``conda.yaml``; ``python_env.yaml`` reads ``requirements.txt``)."""
    import yaml

    (path / "requirements.txt").write_text("\n".join(reqs) + "\n")
    conda = path / "conda.yaml"
    if conda.is_file():
        env = yaml.safe_load(conda.read_text()) or {}
        deps = env.setdefault("dependencies", [])
        for dep in deps:
            if isinstance(dep, dict) and "pip" in dep:
                dep["pip"] = list(reqs)
                break
        else:
            deps.append({"pip": list(reqs)})
        conda.write_text(yaml.safe_dump(env, default_flow_style=False, sort_keys=False))


# ============================================================================================ saving
def _copy_scorer(dst: Path) -> None:
    """``dst/sparkpipe/``: this module, ``errors.py`` and ``scoring/`` (sources only)."""
    import sparkpipe

    src = Path(sparkpipe.__file__).parent
    pkg = dst / "sparkpipe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(_INIT.format(version=sparkpipe.__version__))
    for name in _SCORER_FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src / name, pkg / name)


def _with_output_param(signature: Any) -> Any:
    """The signature with an ``output`` param (default ``prediction``) so that MLflow passes
    ``params={"output": "full"}`` through; inputs and outputs unchanged."""
    if signature is None or signature.params is not None:
        return signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    params = ParamSchema([ParamSpec(OUTPUT_PARAM, "string", OUTPUTS[0])])
    return ModelSignature(inputs=signature.inputs, outputs=signature.outputs, params=params)


def add_flavor(path: str | Path, mlflow_model: Any) -> dict[str, Any]:
    """Make ``sparkpipe.pyfunc`` the ``python_function`` loader of the spark model saved at ``path``.

    Copies the scorer into ``path/code``, replaces the requirements with :func:`scorer_requirements`
    when every stage has a NumPy twin (else keeps the Spark ones: the loader will fall back), and
    rewrites ``MLmodel``. Returns the flavor's configuration.
    """
    from mlflow import pyfunc
    from mlflow.models.model import MLMODEL_FILE_NAME

    from sparkpipe.scoring import unsupported_stages

    path = Path(path)
    try:
        missing = unsupported_stages(path)
    except ScoringError as exc:
        missing = [f"(not readable without Spark: {exc})"]
    conf: dict[str, Any] = {"scorer": "numpy" if not missing else "spark"}
    if missing:
        conf["no_twin"] = sorted(set(missing))
        log.warning(
            "the python_function flavor of this model will use Spark: no NumPy twin for %s; "
            "its requirements keep pyspark",
            ", ".join(conf["no_twin"]),
        )
    else:
        _write_requirements(path, scorer_requirements())
    _copy_scorer(path / CODE_DIR)
    old = mlflow_model.flavors.get(pyfunc.FLAVOR_NAME, {})
    env = old.get(pyfunc.ENV) or {}
    pyfunc.add_to_model(
        mlflow_model,
        loader_module=__name__,
        data=FLAVOR_DATA,
        code=CODE_DIR,
        conda_env=env.get("conda", "conda.yaml"),
        python_env=env.get("virtualenv", "python_env.yaml"),
        **conf,
    )
    mlflow_model.save(str(path / MLMODEL_FILE_NAME))
    return mlflow_model.flavors[pyfunc.FLAVOR_NAME]


def save_model(
    spark_model: Any,
    path: str | Path,
    mlflow_model: Any = None,
    signature: Any = None,
    extra_dirs: Mapping[str, str | Path] | None = None,
    **kwargs: Any,
) -> None:
    """``mlflow.spark.save_model`` plus this flavor (the MLflow flavor-module contract ``Model.log``
    calls). ``extra_dirs`` (name → local directory) are copied into the model directory under their
    names (a recommender's ``recommend/`` index). Other keyword arguments are ``mlflow.spark.save_model``'s."""
    import mlflow.spark
    from mlflow.models import Model

    mlflow_model = Model() if mlflow_model is None else mlflow_model
    mlflow.spark.save_model(
        spark_model, str(path), mlflow_model=mlflow_model, signature=_with_output_param(signature), **kwargs
    )
    for name, src in (extra_dirs or {}).items():
        shutil.copytree(src, Path(path) / name)
    add_flavor(path, mlflow_model)


def log_model(spark_model: Any, artifact_path: str, **kwargs: Any) -> Any:
    """Log ``spark_model`` with both flavors into the active run; return MLflow's ``ModelInfo``.

    The same path ``mlflow.spark.log_model`` takes for a local artifact store (the model is saved
    locally, then uploaded), with :func:`save_model` as the flavor.
    """
    from mlflow.models import Model

    return Model._log_v2(
        artifact_path=artifact_path, flavor=sys.modules[__name__], spark_model=spark_model, **kwargs
    )


# =========================================================================================== loading
def _load_pyfunc(path: str, model_config: Mapping[str, Any] | None = None) -> Any:
    """The MLflow loader-module contract: ``path`` is the model's ``sparkml/`` directory."""
    from sparkpipe.scoring import compile_pipeline

    model_dir = Path(path).parent
    output = _check_output((model_config or {}).get(OUTPUT_PARAM, OUTPUTS[0]), "model_config")
    try:
        plan = compile_pipeline(model_dir)
    except UnsupportedStageError as exc:
        log.warning("%s: scoring with Spark (mlflow.spark's pyfunc) instead of NumPy: %s", model_dir, exc)
        import mlflow.spark

        return mlflow.spark._load_pyfunc(path)
    return NumpyPipelineModel(plan, output=output)


def _check_output(value: Any, where: str) -> str:
    if value not in OUTPUTS:
        raise _bad_input(f"{where}.{OUTPUT_PARAM}: {value!r} is not one of {list(OUTPUTS)}")
    return str(value)


def _bad_input(message: str) -> Exception:
    """An MLflow ``INVALID_PARAMETER_VALUE`` error (a 400 from the scoring server)."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # scoring outside MLflow
        return ValueError(message)
    return MlflowException.invalid_parameter_value(message)


def _missing(v: Any) -> bool:
    import pandas as pd

    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)


class NumpyPipelineModel:
    """What ``mlflow.pyfunc.load_model`` wraps: a compiled plan with MLflow's ``predict`` contract.

    Parameters
    ----------
    plan
        The :class:`~sparkpipe.scoring.compile.CompiledPipeline`.
    output
        ``prediction`` (default) or ``full``; ``params={"output": ...}`` overrides it per call.
    """

    def __init__(self, plan: Any, output: str = OUTPUTS[0]):
        self.plan = plan
        self.output = output
        produced = set(plan.all_output_columns)
        model = plan.model_stage
        pred = "prediction" if "prediction" in produced else None
        if pred is None and model is not None:
            pred = model.stage.params.get("predictionCol")
        if pred is None:
            raise ScoringError(f"{plan.source}: the pipeline produces no 'prediction' column to return")
        self.prediction_column = pred

    def get_raw_model(self) -> Any:
        """The compiled NumPy plan (``describe()``, ``predict(records)``)."""
        return self.plan

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Score ``data``: a pandas DataFrame (what MLflow passes after schema enforcement), a dict of
        columns, a list of row dicts, or a 2-D array in input-schema order.

        Returns the prediction column as a list (as the spark flavor's pyfunc does), or with
        ``params={"output": "full"}`` a pandas DataFrame of every output column (vectors as lists).
        """
        output = self.output
        if params and params.get(OUTPUT_PARAM) is not None:
            output = _check_output(params[OUTPUT_PARAM], "params")
        cols = list(self.plan.output_columns) if output == "full" else [self.prediction_column]
        try:
            frame = self._frame(data)
            arrays = self.plan.predict_frame(frame, cols)
        except InputError as exc:
            raise _bad_input(f"{exc.field}: {exc}") from exc
        lists = self.plan.as_lists(arrays, cols)
        if output != "full":
            return lists[0]
        import pandas as pd

        return pd.DataFrame(dict(zip(cols, lists, strict=True)), columns=cols)

    # ------------------------------------------------------------------------------------ input
    def _frame(self, data: Any) -> dict[str, Any]:
        import numpy as np
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return self._frame_from_pandas(data)
        if isinstance(data, Mapping) or (
            isinstance(data, Sequence)
            and not isinstance(data, str)
            and all(isinstance(r, Mapping) for r in data)
        ):
            return self.plan.frame_from_records(data)
        if isinstance(data, np.ndarray) and data.ndim == 2:
            names = [n for n, _ in self.plan.input_schema]
            if data.shape[1] != len(names):
                raise InputError("data", f"expected {len(names)} columns ({names}), got {data.shape[1]}")
            return self._frame_from_pandas(pd.DataFrame(data, columns=names))
        raise InputError(
            "data",
            f"cannot score a {type(data).__name__}: pass a pandas DataFrame, a dict of columns, "
            "a list of row dicts or a 2-D array",
        )

    def _frame_from_pandas(self, df: Any) -> dict[str, Any]:
        import numpy as np
        import pandas as pd

        from sparkpipe.scoring.compile import cast_column

        frame: dict[str, Any] = {}
        for name, t in self.plan.input_schema:
            if name not in df.columns:
                raise InputError(name, f"missing column {name!r} (expected {t})", column=name, expected=t)
            s = df[name]
            if t in ("timestamp", "date") and pd.api.types.is_datetime64_any_dtype(s.dtype):
                if getattr(s.dtype, "tz", None) is not None:
                    s = s.dt.tz_convert("UTC").dt.tz_localize(None)
                arr = s.to_numpy(dtype="datetime64[us]")
                frame[name] = arr.astype("datetime64[D]").astype("datetime64[us]") if t == "date" else arr
                continue
            vals = s.tolist()
            if s.dtype.kind not in "fc" and s.hasnans:  # None, NaN, NaT, pd.NA: all a missing value
                vals = [None if _missing(v) else v for v in vals]
            if t in ("timestamp", "date"):
                vals = [v.to_pydatetime() if isinstance(v, pd.Timestamp) else v for v in vals]
            elif t == "vector":
                vals = [v.tolist() if isinstance(v, np.ndarray) else v for v in vals]
            frame[name] = cast_column(name, t, vals)
        return frame


__all__ = ["NumpyPipelineModel", "add_flavor", "log_model", "save_model", "scorer_requirements"]
