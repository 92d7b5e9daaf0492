"""Compatibility names: the training path lives in :mod:`sparkpipe.flow` and its values in
:mod:`sparkpipe.core`. Kept so ``from sparkpipe.pipeline import run_pipeline`` (and the other names
below) keeps working; new code imports from ``sparkpipe.flow.*``."""

from __future__ import annotations

from sparkpipe.core import LABEL_COL, WEIGHT_COL, FitResult, PreparedData, RunResult
from sparkpipe.flow.batch import batch_predict, evaluate_saved, load_spark_model
from sparkpipe.flow.evaluate import choose_threshold, evaluate_model, metrics_of, score_for_metrics
from sparkpipe.flow.fit import (
    PROFILE_MAX_ROWS,
    _training_columns,
    balanced_class_weights,
    classifier_stage,
    fit_model,
    set_decision_threshold,
)
from sparkpipe.flow.prepare import SPLIT_COL, prepare_data, resolve_columns, setup_logging
from sparkpipe.flow.publish import (
    MAX_META_FEATURE_NAMES,
    feature_names_meta,
    model_metadata,
    model_signature,
    quarantine_metrics,
    write_run_outputs,
)
from sparkpipe.flow.run import run_pipeline

__all__ = [
    "LABEL_COL",
    "MAX_META_FEATURE_NAMES",
    "PROFILE_MAX_ROWS",
    "SPLIT_COL",
    "WEIGHT_COL",
    "FitResult",
    "PreparedData",
    "RunResult",
    "_training_columns",
    "balanced_class_weights",
    "batch_predict",
    "choose_threshold",
    "classifier_stage",
    "evaluate_model",
    "evaluate_saved",
    "feature_names_meta",
    "fit_model",
    "load_spark_model",
    "metrics_of",
    "model_metadata",
    "model_signature",
    "prepare_data",
    "quarantine_metrics",
    "resolve_columns",
    "run_pipeline",
    "score_for_metrics",
    "set_decision_threshold",
    "setup_logging",
    "write_run_outputs",
]
