"""Checks of a valid config against the machine, made before Spark starts (no JVM, seconds at most).

The schema and the registries (:mod:`sparkpipe.config`, :mod:`sparkpipe.config_checks`) know nothing
about the world outside the file. These checks do, cheaply: the ``spark://`` master answers a TCP
connect; an object-store path (``s3a://``, ``gs://``, ``abfss://``) has its Hadoop connector; a local
input path exists; a classification or regression model has a target column, present in the file's
header (CSV) or schema (parquet); a built-in data set's task fits the algorithm.

``sparkpipe validate`` reports these together with every config problem; ``run``, ``train`` and
``compare`` call :func:`check_preflight` before building their SparkSession, so a run that cannot work
fails in seconds with the fix instead of after a JVM start.
"""

from __future__ import annotations

import csv
import difflib
import glob
import logging
import os
from typing import TYPE_CHECKING

from sparkpipe.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from sparkpipe.config import PipelineConfig

log = logging.getLogger(__name__)

Problems = list[tuple[str, str]]
_SUPERVISED = ("classification", "regression")


def preflight_problems(cfg: PipelineConfig, *, probe_master: bool = True) -> Problems:
    """Every problem the cheap checks find, as ``(key_path, message)`` pairs (empty when fine).

    ``probe_master=False`` leaves the ``spark://`` master out (``validate`` on a machine where the
    cluster is not up yet: it reports that as a note, not a problem of the file).
    """
    from sparkpipe.data.io import object_store_problem
    from sparkpipe.session import master_problem

    problems: Problems = []
    found = master_problem(cfg.spark.master) if probe_master else None
    if found:
        problems.append(("spark.master", found.removeprefix("spark.master: ")))
    for key, path in (("data.input_path", cfg.data.input_path), ("data.output_path", cfg.data.output_path)):
        found = object_store_problem(
            path, key, dict(cfg.spark.conf), cfg.spark.master, cfg.data.format, cfg.data.options
        )
        if found:
            problems.append((key, found.removeprefix(f"{key}: ")))
    problems += _input_problems(cfg)
    return problems


def check_preflight(cfg: PipelineConfig, source: str | None = None) -> None:
    """Raise one :class:`ConfigError` listing every preflight problem of ``cfg``."""
    problems = preflight_problems(cfg)
    if problems:
        raise ConfigError(problems, source)


# ------------------------------------------------------------------------------------------- data
def _resolved_task(cfg: PipelineConfig, dataset_task: str | None) -> str | None:
    from sparkpipe.models.algorithms import tasks_for

    if cfg.model.task_type:
        return cfg.model.task_type
    tasks = tasks_for(cfg.model.algorithm)
    if dataset_task in tasks:
        return dataset_task
    return tasks[0] if len(tasks) == 1 else None


def _input_problems(cfg: PipelineConfig) -> Problems:
    from sparkpipe.data.io import BUILTIN_PREFIX, _is_local, _local_path

    path = cfg.data.input_path.strip()
    if path.startswith(BUILTIN_PREFIX):
        return _builtin_problems(cfg, path[len(BUILTIN_PREFIX) :])
    if not _is_local(path):
        return []  # remote: Spark checks (the connector was checked above)
    local = _local_path(path)
    matches = sorted(glob.glob(local)) if any(ch in local for ch in "*?[") else [local]
    if not matches or not os.path.exists(matches[0]):
        return [
            (
                "data.input_path",
                f"{path!r} does not exist (resolved to {os.path.abspath(local)}); fix the path (or pass "
                "--set data.input_path=...), or use a built-in data set such as 'builtin:churn'",
            )
        ]
    task = _resolved_task(cfg, None)
    if task not in _SUPERVISED:
        return []
    types = _columns_of(matches[0], cfg)
    columns = list(types) if types is not None else None
    target = cfg.features.target
    listed = f": {', '.join(columns[:30])}" if columns else ""
    if not target:
        return [("features.target", f"a {task} model needs a target column; set features.target{listed}")]
    if columns is not None and target not in columns:
        close = difflib.get_close_matches(target, columns, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [("features.target", f"column {target!r} is not in {path!r}{hint}; its columns{listed}")]
    kind = (types or {}).get(target)
    if task == "regression" and kind in ("string", "bool"):
        key = "model.task_type" if cfg.model.task_type else "model.algorithm"
        return [
            (
                key,
                f"regression needs a numeric target, and {target!r} is a {kind} column; use a "
                "classification algorithm (or model.task_type: classification) or another target",
            )
        ]
    return []


def _builtin_problems(cfg: PipelineConfig, name: str) -> Problems:
    from sparkpipe.data.datasets import dataset_info
    from sparkpipe.models.algorithms import algorithm_names

    try:
        info = dataset_info(name)
    except UnknownNameError as exc:
        return [("data.input_path", str(exc))]
    task = _resolved_task(cfg, info.task)
    if info.task in _SUPERVISED and task in _SUPERVISED and task != info.task:
        key = "model.task_type" if cfg.model.task_type else "model.algorithm"
        return [
            (
                key,
                f"builtin:{name} is a {info.task} data set (target {info.target!r}), but the model is "
                f"{cfg.model.algorithm} for {task}; use a {info.task} algorithm "
                f"({', '.join(algorithm_names(info.task))}) or another data set",
            )
        ]
    target = cfg.features.target
    if target and info.task in _SUPERVISED and target not in info.columns:
        return [
            (
                "features.target",
                f"builtin:{name} has no column {target!r}; its target is {info.target!r} "
                f"(columns: {', '.join(info.columns)})",
            )
        ]
    return []


def _first_file(path: str, suffixes: tuple[str, ...]) -> str | None:
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
            for name in sorted(files):
                if name.lower().endswith(suffixes) and not name.startswith(("_", ".")):
                    return os.path.join(root, name)
    return None


def _columns_of(path: str, cfg: PipelineConfig) -> dict[str, str | None] | None:
    """Column name → kind (``numeric``, ``string``, ``bool``, ``other``; ``None`` for CSV, untyped)
    from a local CSV header or parquet footer; ``None`` when not cheaply known (other formats, no
    header, a schema in the config, hive-partitioned directories)."""
    if os.path.isdir(path) and any("=" in d for d in os.listdir(path)):
        return None  # partition columns live in directory names
    fmt = cfg.data.format
    lower = path.lower()
    options = {str(k): str(v).lower() for k, v in cfg.data.options.items()}
    try:
        if fmt == "csv" or (fmt == "auto" and lower.endswith((".csv", ".tsv"))):
            if options.get("header", "true") != "true" or cfg.data.schema_:
                return None
            default_sep = "\t" if lower.endswith(".tsv") else ","
            sep = cfg.data.options.get("sep", cfg.data.options.get("delimiter", default_sep))
            file = _first_file(path, (".csv", ".tsv", ".txt"))
            if file is None:
                return None
            with open(file, newline="", encoding="utf-8", errors="replace") as fh:
                header = next(csv.reader(fh, delimiter=str(sep)), None)
            return dict.fromkeys(h.strip() for h in header) if header else None
        if fmt == "parquet" or (fmt == "auto" and (lower.endswith(".parquet") or os.path.isdir(path))):
            file = _first_file(path, (".parquet",))
            if file is None or os.path.isdir(os.path.join(path, "_delta_log")):
                return None
            import pyarrow as pa
            import pyarrow.parquet as pq

            def kind(t: pa.DataType) -> str:
                if pa.types.is_string(t) or pa.types.is_large_string(t):
                    return "string"
                if pa.types.is_boolean(t):
                    return "bool"
                return "numeric" if pa.types.is_integer(t) or pa.types.is_floating(t) else "other"

            return {f.name: kind(f.type) for f in pq.read_schema(file)}
    except Exception as exc:  # unreadable here: Spark will say why
        log.debug("preflight: cannot read the columns of %s: %s", path, exc)
    return None
