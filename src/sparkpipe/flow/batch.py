"""Scoring and evaluating saved models with Spark: ``sparkpipe predict`` (batch), ``sparkpipe evaluate``,
and ``/predict/batch`` jobs."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.config import DataConfig, MlflowConfig, PipelineConfig, SparkConfig
from sparkpipe.core import LABEL_COL
from sparkpipe.errors import DataError, ModelError, SparkpipeError
from sparkpipe.flow.evaluate import evaluate_model

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def load_spark_model(
    model_uri: str, mlflow_cfg: MlflowConfig | None = None
) -> tuple[PipelineModel, dict[str, Any]]:
    """Load a PipelineModel from an MLflow URI (``models:/...``, ``runs:/...``) or a local directory.

    Returns the model and sparkpipe's metadata (task, target, input schema) when available, plus
    ``model_name`` and ``model_version`` (:func:`model_identity`): what every streamed row and every
    Delta commit of its predictions names.
    """
    from pyspark.ml import PipelineModel

    from sparkpipe.tracking import Registry

    path = Path(model_uri)
    identity: dict[str, str] = {}
    if path.exists():
        local = path
        identity["model_name"] = path.resolve().name
    else:
        import mlflow.artifacts

        reg = Registry(mlflow_cfg)
        if model_uri.startswith("models:/") or (
            "://" not in model_uri and not model_uri.startswith("runs:/")
        ):
            ref = reg.resolve(model_uri)
            local = reg.download(ref)
            identity = {"model_name": ref.name, "model_version": str(ref.version)}
        else:
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
            except Exception as exc:
                raise ModelError(f"cannot download model {model_uri!r}: {exc}") from exc
    meta: dict[str, Any] = {}
    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        import yaml

        doc = yaml.safe_load(mlmodel.read_text()) or {}
        meta = dict((doc.get("metadata") or {}).get("sparkpipe", {}))
        if "model_version" not in identity and doc.get("run_id"):
            identity["model_version"] = f"run:{doc['run_id']}"
        local = local / "sparkml"
    if model_uri.startswith("runs:/"):
        identity.setdefault("model_name", model_uri[len("runs:/") :].split("/", 1)[-1] or "model")
    identity.setdefault("model_name", local.name)
    identity.setdefault("model_version", "unregistered")
    meta.update(identity)
    try:
        return PipelineModel.load(str(local)), meta
    except Exception as exc:
        raise ModelError(f"{model_uri!r} is not a loadable Spark PipelineModel: {exc}") from exc


def batch_predict(
    model_uri: str,
    input_path: str,
    output_path: str,
    spark_cfg: SparkConfig | None = None,
    fmt: str = "auto",
    output_format: str = "parquet",
    mlflow_cfg: MlflowConfig | None = None,
    spark: SparkSession | None = None,
    write_mode: str = "overwrite",
) -> dict[str, Any]:
    """Score ``input_path`` with Spark and write predictions atomically to ``output_path``.

    ``write_mode``: ``overwrite`` or ``error`` (refuse an existing output), see
    :func:`sparkpipe.data.io.write_dataset`.

    The output keeps the input columns and adds ``prediction`` (and ``probability``, ``predictedLabel``
    when the model has them). Vectors are arrays in parquet/json/delta; CSV has no array type, so there
    each vector or array column becomes one column per element (``probability_0``, ``probability_1``...).
    ``rows`` in the result is the number of rows written, read back from the output.

    Raises
    ------
    DataError
        The input lacks columns the model needs (all of them are named).
    """
    from sparkpipe.data.io import read_dataset, write_dataset
    from sparkpipe.session import get_spark

    spark = spark or get_spark(spark_cfg)
    model, meta = load_spark_model(model_uri, mlflow_cfg)
    # local paths are this process's: the JVM may have started in another working directory
    input_path, output_path = _abs_local(input_path), _abs_local(output_path)
    loaded = read_dataset(
        spark, DataConfig(input_path=input_path, output_path=str(Path(output_path).parent), format=fmt)
    )
    _require_model_inputs(loaded.df, meta, model_uri, input_path)
    scored = model.transform(loaded.df)
    keep = list(loaded.df.columns)
    extra = [
        f.name for f in scored.schema.fields if f.name in ("prediction", "probability", "predictedLabel")
    ]
    out_df = scored.select(*keep, *extra)
    out_df = _flat_for_csv(out_df, model) if output_format == "csv" else _vectors_as_arrays(out_df)
    lineage = {
        "sparkpipe.model": model_uri,
        "sparkpipe.model_name": meta["model_name"],
        "sparkpipe.model_version": meta["model_version"],
        "sparkpipe.input_path": input_path,
        "sparkpipe.input_delta_version": loaded.lineage.get("delta_version"),
    }
    write_dataset(out_df, output_path, output_format, mode=write_mode, delta_metadata=lineage)
    result = {
        "model": model_uri,
        "model_name": meta["model_name"],
        "model_version": meta["model_version"],
        "input_path": input_path,
        "output_path": output_path,
        "rows": _written_rows(spark, output_path, output_format),
        "quarantined": loaded.quarantined,
        "quarantine_path": loaded.quarantine_path,
        "task": meta.get("task"),
    }
    if loaded.lineage.get("format") == "delta":
        result["input_delta_version"] = loaded.lineage.get("delta_version")
    if output_format == "delta":
        result["output_delta_version"] = output_delta_version(output_path)
    if mlflow_cfg is not None and mlflow_cfg.enabled and meta["model_version"] != "unregistered":
        result.update(_log_scoring(mlflow_cfg, result, output_format))
    return result


def _log_scoring(mlflow_cfg: MlflowConfig, result: dict[str, Any], output_format: str) -> dict[str, Any]:
    """The job as an MLflow run (lineage: model version, input and output paths and Delta versions,
    rows); a failure to log is a warning in the result: the predictions are already written."""
    from sparkpipe.tracking import log_scoring_run

    tags = {
        "sparkpipe.kind": "batch_predict",
        "sparkpipe.model": result["model"],
        "sparkpipe.model_name": result["model_name"],
        "sparkpipe.model_version": result["model_version"],
        "sparkpipe.input_path": result["input_path"],
        "sparkpipe.input_delta_version": result.get("input_delta_version"),
        "sparkpipe.output_path": result["output_path"],
        "sparkpipe.output_format": output_format,
        "sparkpipe.output_delta_version": result.get("output_delta_version"),
    }
    name = f"predict {result['model_name']} v{result['model_version']}"
    try:
        run_id = log_scoring_run(
            mlflow_cfg, name, tags, {"rows": result["rows"], "quarantined": result["quarantined"]}
        )
    except Exception as exc:
        log.warning("the predictions were written, but logging the scoring run failed: %s", exc)
        return {"warnings": [f"scoring run not logged to MLflow: {exc}"]}
    return {"run_id": run_id}


def output_delta_version(path: str) -> int | None:
    """The latest version of the Delta table at ``path`` (read with delta-rs), ``None`` if unreadable."""
    from sparkpipe.data.io import _open_delta

    try:
        return int(_open_delta(path, None).version())
    except SparkpipeError:
        return None


def _abs_local(path: str) -> str:
    """A relative local path made absolute; URIs (``s3a://``, ``file:``) and ``builtin:`` unchanged."""
    return path if ":" in path or os.path.isabs(path) else os.path.abspath(path)


def _require_model_inputs(df: DataFrame, meta: dict[str, Any], model_uri: str, input_path: str) -> None:
    """A clear error naming every input column the model needs that the data lacks."""
    needed = [str(c[0]) for c in meta.get("input_schema") or []]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(
            f"--input {input_path}: missing column(s) {', '.join(missing)} that model {model_uri} needs; "
            f"the data has: {', '.join(df.columns)}; the model reads: {', '.join(needed)}"
        )


def _is_vector(f: Any) -> bool:
    return "Vector" in type(f.dataType).__name__


def _vectors_as_arrays(df: DataFrame) -> DataFrame:
    from pyspark.ml.functions import vector_to_array

    return df.select(
        *[
            vector_to_array(df[f.name]).alias(f.name) if _is_vector(f) else df[f.name]
            for f in df.schema.fields
        ]
    )


def _vector_size(df: DataFrame, name: str, model: PipelineModel) -> int:
    """Elements of vector/array column ``name``: the model's class count, else the first row's size."""
    from pyspark.sql import functions as F

    if name in ("probability", "rawPrediction"):
        for stage in reversed(getattr(model, "stages", [model])):
            k = getattr(stage, "numClasses", None) or getattr(stage, "getK", lambda: None)()
            if isinstance(k, int) and k > 0:
                return k
    first = df.select(F.size(df[name]).alias("n")).first()
    return int(first["n"]) if first is not None and first["n"] is not None else 0


def _flat_for_csv(df: DataFrame, model: PipelineModel) -> DataFrame:
    """CSV has no arrays: each vector/array column becomes ``<name>_0 .. <name>_{k-1}``; maps and
    structs become JSON text."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, MapType, StructType

    df = _vectors_as_arrays(df)
    cols = []
    for f in df.schema.fields:
        if isinstance(f.dataType, ArrayType):
            k = _vector_size(df, f.name, model)
            cols += [df[f.name].getItem(i).alias(f"{f.name}_{i}") for i in range(k)]
        elif isinstance(f.dataType, MapType | StructType):
            cols.append(F.to_json(df[f.name]).alias(f.name))
        else:
            cols.append(df[f.name])
    return df.select(*cols)


def _written_rows(spark: SparkSession, path: str, fmt: str) -> int:
    """Rows in the written output (Delta read through delta-rs: no delta-spark needed)."""
    if fmt == "delta":
        from sparkpipe.data.io import _open_delta

        return int(_open_delta(path, None).to_pyarrow_dataset().count_rows())
    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", "true")
    return int(reader.load(path).count())


def evaluate_saved(
    model_uri: str,
    data_path: str,
    cfg: PipelineConfig,
    target: str | None = None,
    spark: SparkSession | None = None,
) -> dict[str, float]:
    """Evaluate a saved model on a labelled data set (``sparkpipe evaluate``)."""
    from pyspark.sql import functions as F

    from sparkpipe.data.io import read_dataset, require_columns
    from sparkpipe.session import get_spark

    spark = spark or get_spark(cfg.spark, cfg.optimization)
    model, meta = load_spark_model(model_uri, cfg.mlflow)
    task = meta.get("task") or cfg.model.task_type
    target = target or meta.get("target") or cfg.features.target
    if task is None:
        raise SparkpipeError("the model has no sparkpipe metadata; pass --task and --target")
    data_cfg = cfg.data.model_copy(update={"input_path": data_path})
    df = read_dataset(spark, data_cfg).df
    if task != "clustering":
        if not target:
            raise DataError("evaluation needs the target column: pass --target")
        require_columns(df, [target], "--target")
        labels = meta.get("label_labels")
        if labels:
            mapping = F.create_map(
                *[x for i, lab in enumerate(labels) for x in (F.lit(lab), F.lit(float(i)))]
            )
            df = df.withColumn(LABEL_COL, mapping[F.col(target).cast("string")])
            df = df.filter(F.col(LABEL_COL).isNotNull())
        else:
            df = df.withColumn(LABEL_COL, F.col(target).cast("double"))
    return evaluate_model(
        model,
        df,
        cfg.evaluation,
        task,
        len(meta.get("label_labels") or []) or None,
        meta.get("user_col"),
        meta.get("item_col"),
    )
