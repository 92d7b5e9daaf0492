"""``publish``: the one function that logs, explains, reports, records and registers a fitted model.

Order (a promotion gate slots in before the registry steps)::

    log run data (config, params, lineage, profile, metrics, tuning)   MLflow run
    explain   (a failure is a run warning)                              <output>/explain
    log the PipelineModel to the run (or save it locally, MLflow off)
    report    (a failure is a run warning)                              <output>/report.html
    write the run record                                                <output>/runs/<id>/run.json
    register the version and move the alias                             LAST: a run that fails before
                                                                        here leaves the registry as it was
    the run record updated with the registered version

``run``, ``train``, ``compare`` (its winner), tuning runs and ``/train`` jobs all publish through
:func:`publish`, so what a model carries (:func:`model_metadata`) cannot drift between them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.config import PipelineConfig
from sparkpipe.core import SPARK_TO_MLFLOW, Evaluation, FitResult, RunResult, base_type
from sparkpipe.flow.fit import classifier_stage
from sparkpipe.progress import Progress

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame

    from sparkpipe.features.plan import FeaturePlan
    from sparkpipe.tracking import RunInfo, Tracker

log = logging.getLogger(__name__)

ReportFn = Callable[[RunResult], str]
"""Builds the run's report from the result so far; returns the page's path."""
RecordFn = Callable[[RunResult], RunResult]
"""Writes the run's record (before registering, and again with the registered version); returns the
result as recorded (``record_path`` set)."""


def publish(
    cfg: PipelineConfig,
    tracker: Tracker,
    run: RunInfo | None,
    fit: FitResult,
    evaluation: Evaluation,
    progress: Progress | None = None,
    *,
    raw_yaml: str | None = None,
    report: ReportFn | None = None,
    record: RecordFn | None = None,
    register_tags: dict[str, str] | None = None,
    started: float | None = None,
) -> RunResult:
    """Publish one fitted and evaluated model (see the module docstring for the order of steps).

    Parameters
    ----------
    cfg
        The run's config (``mlflow``, ``evaluation.report``, ``data.output_path``, ``model.class_weight``;
        the registered name is :meth:`~sparkpipe.config.PipelineConfig.registered_model_name` with
        ``model.algorithm`` set to ``fit.algorithm``).
    tracker, run
        The tracker and its open run (``None`` when MLflow is disabled: the model is saved under
        ``<output_path>/model`` and nothing is registered).
    report
        Builds the report (default :func:`sparkpipe.report.run_report`); only when ``evaluation.report``.
    record
        Writes the run's record (default: ``run.json`` by :func:`write_run_outputs`).
    register_tags
        Extra tags of the registered version (besides ``task`` and ``algorithm``).
    started
        ``time.perf_counter()`` at the start of the run, for ``timings.total``.

    Returns
    -------
    RunResult
    """
    progress = progress or Progress()
    data = fit.data
    result = RunResult(
        run_id=run.run_id if run else None,
        tracking_uri=run.tracking_uri if run else None,
        task=data.task,
        algorithm=fit.algorithm,
        metrics=evaluation.metrics,
        output_path=cfg.data.output_path,
        lineage=data.lineage,
        tuning=fit.tuning,
        decision_threshold=evaluation.threshold,
    )
    with progress.step("log to MLflow"):
        _log_run(tracker, cfg, raw_yaml, fit, evaluation)
    # explain before the model is published: a failure there is reported, never half-published
    _explain(cfg, fit, tracker if run else None, result, progress)
    if run is not None:
        with progress.step("log model"):
            result = result.with_(model_uri=_log_model(tracker, cfg, fit, evaluation))
    if cfg.evaluation.report:
        with progress.step("report"), _analysis_step("report", result):
            result = result.with_(
                report_path=(report or _default_report(cfg, fit, evaluation, tracker))(result)
            )
    if result.warnings and run is not None:
        tracker.set_tags({"sparkpipe.warnings": " | ".join(result.warnings)[:5000]})
    record = record or _default_record(cfg, fit, run)
    result = record(_with_timings(result, progress, started))
    if run is not None and result.record_path:
        tracker.log_artifact(result.record_path)
    # last: only a run whose every step succeeded moves the registry
    if run is not None and cfg.mlflow.register_model:
        with progress.step("register model"):
            result = _register(tracker, cfg, fit, evaluation, result, register_tags)
        result = record(_with_timings(result, progress, started))
    return result


def _explain(
    cfg: PipelineConfig, fit: FitResult, tracker: Tracker | None, result: RunResult, progress: Progress
) -> None:
    """Feature importances per source column into ``<output>/explain`` (a failure is a run warning)."""
    if fit.plan.feature_names:
        from sparkpipe.features.explain import explain_run

        with progress.step("explain"), _analysis_step("explain", result):
            explain_run(fit.model, fit.plan, Path(cfg.data.output_path) / "explain", tracker)


def _default_record(cfg: PipelineConfig, fit: FitResult, run: RunInfo | None) -> RecordFn:
    """Writes ``run.json`` (:func:`write_run_outputs`); with MLflow off the model is saved beside it
    (with a recommender's index)."""
    save = fit.model if run is None else None

    def record(res: RunResult) -> RunResult:
        if save is None or res.model_uri is not None:
            return write_run_outputs(cfg, res, None)
        with _recommend_index(cfg, fit) as extra:
            return write_run_outputs(cfg, res, save, extra)

    return record


def _register(
    tracker: Tracker,
    cfg: PipelineConfig,
    fit: FitResult,
    evaluation: Evaluation,
    result: RunResult,
    tags: dict[str, str] | None,
) -> RunResult:
    """Register the logged model as a new version, then let the promotion gate
    (:mod:`sparkpipe.flow.promote`) give it ``mlflow.alias`` (champion) or the challenger alias."""
    from sparkpipe.flow.promote import decide
    from sparkpipe.tracking import Registry, move_aliases

    named = cfg.model_copy(update={"model": cfg.model.model_copy(update={"algorithm": fit.algorithm})})
    name = named.registered_model_name()
    version = tracker.register(
        str(result.model_uri),
        name,
        alias=None,
        tags={"task": fit.task, "algorithm": fit.algorithm, **(tags or {})},
    )
    result = result.with_(registered_name=name, registered_version=version)
    if not cfg.mlflow.alias:  # no alias configured: registered only
        return result
    registry = Registry(cfg.mlflow)
    decision = decide(cfg, registry, name, version, fit, evaluation, model_metadata(fit, evaluation))
    run = result.run_id
    move_aliases(
        registry,
        name,
        {decision.alias: version},
        reason=f"promotion gate: {decision.reason}",
        actor=f"sparkpipe training run {run}" if run else "sparkpipe training run",
    )
    log.info("%s v%s -> %s: %s", name, version, decision.alias, decision.reason)
    return result.with_(promotion=decision.to_dict())


def _with_timings(result: RunResult, progress: Progress, started: float | None) -> RunResult:
    timings = dict(progress.timings)
    if started is not None:
        timings["total"] = time.perf_counter() - started
    return result.with_(timings=timings)


def _default_report(
    cfg: PipelineConfig, fit: FitResult, evaluation: Evaluation, tracker: Tracker
) -> ReportFn:
    def build(result: RunResult) -> str:
        from sparkpipe.report import run_report

        return run_report(cfg, result, fit, evaluation, tracker if tracker.info is not None else None)

    return build


def model_metadata(fit: FitResult, evaluation: Evaluation) -> dict[str, Any]:
    """What a published model carries about itself (``MLmodel`` metadata ``sparkpipe``): task, target,
    labels, input schema, feature names, the training profile (drift reference), threshold, weights."""
    data, plan = fit.data, fit.plan
    return {
        "task": data.task,
        "algorithm": fit.algorithm,
        "target": data.target,
        "label_labels": data.label_labels,
        **feature_names_meta(plan),
        "input_schema": [list(x) for x in plan.input_schema],
        "user_col": data.user_col,
        "item_col": data.item_col,
        "profile": plan.profile,  # training-data profile, for drift checks
        "decision_threshold": evaluation.threshold["threshold"] if evaluation.threshold else None,
        "class_weights": fit.class_weights,
    }


def _log_run(
    tracker: Tracker, cfg: PipelineConfig, raw_yaml: str | None, fit: FitResult, evaluation: Evaluation
) -> None:
    """Config, params, lineage, profile, metrics and tuning summary into the open run."""
    lineage, threshold = fit.data.lineage, evaluation.threshold
    tracker.log_config(cfg, raw_yaml)
    tracker.log_params(
        {"task": fit.task, "num_features": fit.num_features, "hyperparameters": model_params(fit.model)}
    )
    tracker.log_params({f"lineage.{k}": v for k, v in lineage.items() if not isinstance(v, dict)})
    tracker.log_params(_imbalance_params(cfg.model.class_weight, fit, threshold))
    if threshold:
        tracker.log_metrics({"validation_threshold_f1": threshold["f1"]})
    tracker.log_dict(lineage, "data/lineage.json")
    if input_table_tags(lineage):
        tracker.set_tags(input_table_tags(lineage))
    tracker.log_metrics(quarantine_metrics(lineage))
    if fit.plan.profile:
        tracker.log_dict(fit.plan.profile, "data/profile.json")
    tracker.log_metrics(evaluation.metrics)
    if fit.tuning:
        tracker.log_dict(fit.tuning, "tuning/summary.json")


def _log_model(tracker: Tracker, cfg: PipelineConfig, fit: FitResult, evaluation: Evaluation) -> str:
    """Log the PipelineModel to the open run (signature, input example, metadata); its ``runs:/`` URI."""
    plan = fit.plan
    input_cols = [n for n, _ in plan.input_schema]
    example = (
        _input_example(fit.data.train, input_cols) if cfg.mlflow.log_input_example and input_cols else None
    )
    signature = model_signature(plan.input_schema, fit.task, probability=fit.task == "classification")
    with _recommend_index(cfg, fit) as extra:
        return tracker.log_spark_model(
            fit.model,
            input_example=example,
            signature=signature,
            metadata={"sparkpipe": model_metadata(fit, evaluation)},
            extra_dirs=extra,
        )


@contextlib.contextmanager
def _recommend_index(cfg: PipelineConfig, fit: FitResult) -> Iterator[dict[str, str] | None]:
    """A recommender's ``recommend/`` index (seen items, popularity, cold-start policy) written to a
    temporary directory for the model directory to copy; ``None`` for other models."""
    from sparkpipe.flow.recommend_index import als_stage, write_recommend_index

    if fit.task != "recommendation" or als_stage(fit.model) is None:
        yield None
        return
    import tempfile

    from sparkpipe.scoring.recommend import INDEX_DIR

    with tempfile.TemporaryDirectory(prefix="sparkpipe-recommend-") as tmp:
        # the training split as read (raw ids): the pipeline's own stages index string ids
        write_recommend_index(fit.model, fit.data.train, tmp, cfg.features.cold_start)
        yield {INDEX_DIR: str(Path(tmp) / INDEX_DIR)}


MAX_META_FEATURE_NAMES = 4096
"""Feature-slot names kept in a logged model's metadata at most (a hashed 2^18-slot vector would put
megabytes of YAML into ``MLmodel``, which every model load parses)."""


def feature_names_meta(plan: FeaturePlan | Any) -> dict[str, Any]:
    """``feature_names`` (empty beyond :data:`MAX_META_FEATURE_NAMES` slots) and ``num_features``
    for a model's metadata."""
    names = list(getattr(plan, "feature_names", []) or [])
    return {
        "feature_names": names if len(names) <= MAX_META_FEATURE_NAMES else [],
        "num_features": len(names),
    }


def model_signature(input_schema: list[tuple[str, str]], task: str, probability: bool) -> Any:
    """An MLflow signature from the ordered raw input schema the feature plan needs."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema

    def spec(name: str, t: str) -> Any:
        if t == "vector":  # an ML vector column (libsvm): a list of numbers in a request
            return ColSpec(Array(DataType.double), name)
        return ColSpec(SPARK_TO_MLFLOW.get(base_type(t), "string"), name)

    inputs = Schema([spec(n, t) for n, t in input_schema])
    outputs = [ColSpec("double", "prediction")]
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def _input_example(df: DataFrame, columns: list[str], rows: int = 3) -> Any:
    from pyspark.ml.functions import vector_to_array

    types = dict(df.dtypes)
    cols = [vector_to_array(c).alias(c) if types[c] == "vector" else c for c in columns]
    pdf = df.select(*cols).limit(rows).toPandas()
    for c in pdf.columns:  # MLflow's JSON example cannot hold NaT/tz objects
        if str(pdf[c].dtype).startswith("datetime64"):
            pdf[c] = pdf[c].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return pdf


def _imbalance_params(class_weight: str | None, fit: FitResult, threshold: dict[str, Any] | None) -> dict:
    """MLflow params of ``model.class_weight`` (and each class's weight) and the decision threshold."""
    out: dict[str, Any] = {"class_weight": class_weight}
    for label, w in (fit.class_weights or {}).items():
        out[f"class_weight.{label}"] = w
    if threshold:
        out["decision_threshold"] = threshold["threshold"]
    return out


@contextlib.contextmanager
def _analysis_step(step: str, result: RunResult) -> Iterator[None]:
    """Run an analysis step (explain, report) whose failure must not fail a finished model.

    The model is trained and evaluated; the failure is logged with its cause, recorded in
    ``result.warnings`` (``run.json``, the MLflow tag ``sparkpipe.warnings``) and printed by the CLI,
    and the run carries on to register the model.
    """
    try:
        yield
    except Exception as exc:
        cause = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        message = f"the {step} step failed ({type(exc).__name__}: {cause}); the model is complete, without the {step}"
        log.error(message)
        log.debug("%s step failure", step, exc_info=exc)
        result.warnings.append(message)


def input_table_tags(lineage: dict[str, Any]) -> dict[str, str]:
    """Run tags naming a Delta input table and the version the run read (``{}`` for other formats):
    with them, ``mlflow.search_runs(filter_string="tags.sparkpipe.input_delta_version = '3'")`` finds the
    runs trained on a table version, and ``data.version`` re-reads exactly that data."""
    if lineage.get("format") != "delta" or lineage.get("delta_version") is None:
        return {}
    return {
        "sparkpipe.input_table": str(lineage.get("resolved_path") or lineage.get("path")),
        "sparkpipe.input_delta_version": str(lineage["delta_version"]),
    }


def quarantine_metrics(lineage: dict[str, Any]) -> dict[str, float]:
    """``data.quarantined_rows`` and ``data.quarantined.<column or check>`` (rows set aside at read)."""
    out = {"data.quarantined_rows": float(lineage.get("quarantined_count") or 0)}
    for reason, n in (lineage.get("quarantined_by_reason") or {}).items():
        out[f"data.quarantined.{reason.strip('()').replace(' ', '_')}"] = float(n)
    return out


def model_params(model: PipelineModel) -> dict[str, Any]:
    """The model stage's scalar Params (no column names), as logged under ``hyperparameters``."""
    out: dict[str, Any] = {}
    for p, v in classifier_stage(model).extractParamMap().items():
        if not p.name.endswith("Col") and not isinstance(v, (list, dict)):
            out[p.name] = v
    return out


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp sibling and ``os.replace`` (readers never see half)."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    tmp.write_text(text)
    os.replace(tmp, path)


def write_run_outputs(
    cfg: PipelineConfig,
    result: RunResult,
    model: PipelineModel | None = None,
    extra_dirs: dict[str, str] | None = None,
) -> RunResult:
    """Write the run's record (and the model itself when MLflow is disabled) under the output path.

    Every run keeps its own ``<output_path>/runs/<run_id>/run.json`` (a local id when MLflow is off), so
    concurrent runs sharing an output path never overwrite each other's record. ``runs/latest`` (the id)
    and ``<output_path>/run.json`` (a copy) point at the run that finished last; all writes go through a
    temp file and ``os.replace``. Returns ``result`` with ``record_path`` (and ``model_uri`` when the
    model was saved here).
    """
    out = Path(cfg.data.output_path)
    out.mkdir(parents=True, exist_ok=True)
    if model is not None:
        target = out / "model"
        staging = out / f".model.{uuid.uuid4().hex}"
        model.save(str(staging))
        for name, src in (extra_dirs or {}).items():  # a recommender's index, beside the stages
            shutil.copytree(src, staging / name)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        result = result.with_(model_uri=str(target.resolve()))
    record_id = result.run_id or f"local-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    run_dir = out / "runs" / record_id
    run_dir.mkdir(parents=True, exist_ok=True)
    result = result.with_(record_path=str(run_dir / "run.json"))
    text = json.dumps(result.to_dict(), indent=2, default=str)
    _atomic_write(run_dir / "run.json", text)
    _atomic_write(out / "runs" / "latest", record_id + "\n")
    _atomic_write(out / "run.json", text)
    return result
