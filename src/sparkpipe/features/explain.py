"""Explain a fitted model in terms of the original input columns.

Tree models give ``featureImportances``; linear models give coefficients (the absolute value is the
importance; multinomial models average the absolute coefficients over classes). Each vector slot is
named by the feature plan (:attr:`~sparkpipe.features.auto.FeaturePlan.feature_names`) and mapped to
the input column it comes from (:attr:`~sparkpipe.features.auto.FeaturePlan.feature_sources`): the
one-hot slots of ``plan``, the hashed slots of ``city``, the term-frequency slots of ``notes`` and the
calendar parts of ``signup_ts`` are each summed into one importance of their source column.

:func:`explain_model` computes the tables; :func:`write_explanation` writes
``feature_importance.csv`` (per source column), ``feature_importance.json`` (per column and per
slot) and ``feature_importance.png`` (a bar chart of the top columns); :func:`explain_run` does both
and logs the files to the active MLflow run under ``explain/``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel

    from sparkpipe.features.plan import FeaturePlan
    from sparkpipe.tracking import Tracker

log = logging.getLogger(__name__)

TOP_N_CHART = 25
MAX_JSON_SLOTS = 2000
"""Slots listed in feature_importance.json at most (the most important; column totals cover all)."""
"""Columns shown in the bar chart."""


@dataclass
class Explanation:
    """Importances of one fitted model.

    Attributes
    ----------
    kind
        ``"feature_importances"`` (trees) or ``"coefficients"`` (linear models).
    model_class
        The Spark model class name.
    columns
        ``(source column, importance, slots)`` sorted by decreasing importance; importances of a tree
        model sum to 1, of a linear model they are sums of absolute coefficients.
    slots
        ``(slot name, source column, importance, signed value)`` for every vector slot, in vector order.
    """

    kind: str
    model_class: str
    columns: list[tuple[str, float, int]] = field(default_factory=list)
    slots: list[tuple[str, str, float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "kind": self.kind,
            "model_class": self.model_class,
            "columns": [{"column": c, "importance": v, "slots": n} for c, v, n in self.columns],
            "slots": [
                {"feature": f, "column": c, "importance": v, "value": s} for f, c, v, s in self.top_slots()
            ],
            "slots_total": len(self.slots),
        }

    def top_slots(self, n: int | None = None) -> list[tuple[str, str, float, float]]:
        """The ``n`` (default :data:`MAX_JSON_SLOTS`) most important slots, in slot order when all fit.

        A hashed vector has hundreds of thousands of slots, nearly all with no weight; the per-column
        totals in ``columns`` still cover every slot.
        """
        n = MAX_JSON_SLOTS if n is None else n
        if len(self.slots) <= n:
            return list(self.slots)
        return sorted(self.slots, key=lambda t: -abs(t[2]))[:n]


_EXPLAINABLE = ("featureImportances", "coefficients", "coefficientMatrix", "get_feature_importances")


def _model_stage(model: PipelineModel) -> Any | None:
    # Asked of the class, not the instance: the properties call into the JVM, and a multinomial
    # LogisticRegressionModel's ``coefficients`` raises a Py4JJavaError (not an AttributeError, which
    # is all hasattr() swallows) because its coefficients are a matrix.
    for stage in reversed(model.stages):
        if any(hasattr(type(stage), name) for name in _EXPLAINABLE):
            return stage
    return None


def _xgboost_importances(stage: Any, n_slots: int) -> np.ndarray | None:
    """Total gain per slot of an ``xgboost.spark`` model (slots never split on get 0)."""
    try:
        gains = stage.get_feature_importances(importance_type="total_gain")
    except Exception as exc:  # an unexpected booster layout: explain is best effort
        log.warning("explain: cannot read xgboost importances: %s", exc)
        return None
    imp = np.zeros(n_slots, dtype=np.float64)
    for key, value in gains.items():
        index = int(key[1:]) if key.startswith("f") and key[1:].isdigit() else -1
        if 0 <= index < n_slots:
            imp[index] = float(value)
    total = imp.sum()
    return imp / total if total > 0 else imp


def _slot_values(stage: Any, n_slots: int) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(kind, importance per slot, signed value per slot) of a Spark model, or None when unsupported."""
    if hasattr(stage, "get_feature_importances"):
        imp = _xgboost_importances(stage, n_slots)
        return None if imp is None else ("feature_importances", imp, imp)
    if hasattr(stage, "featureImportances"):
        imp = np.asarray(stage.featureImportances.toArray(), dtype=np.float64)
        return "feature_importances", imp, imp
    matrix = None
    if hasattr(type(stage), "coefficientMatrix"):
        # one row per class for a multinomial model (a binomial one has a single row)
        matrix = np.asarray(stage.coefficientMatrix.toArray(), dtype=np.float64)
    if matrix is not None and matrix.ndim == 2 and matrix.shape[0] > 1:
        return "coefficients", np.abs(matrix).mean(axis=0), matrix.mean(axis=0)
    if matrix is not None and matrix.ndim == 2 and matrix.shape[0] == 1:
        return "coefficients", np.abs(matrix[0]), matrix[0]
    if hasattr(type(stage), "coefficients"):
        coef = np.asarray(stage.coefficients.toArray(), dtype=np.float64)
        return "coefficients", np.abs(coef), coef
    return None


def explain_model(
    model: PipelineModel, feature_names: list[str], feature_sources: list[str]
) -> Explanation | None:
    """Importances of the model at the end of ``model`` mapped to source columns.

    Parameters
    ----------
    model
        A fitted PipelineModel ending with a Spark model (``IndexToString`` after it is fine).
    feature_names, feature_sources
        Slot names and their source columns (same length as the model's feature vector).

    Returns
    -------
    Explanation or None
        ``None`` when the model has neither importances nor coefficients (naive Bayes, MLP,
        clustering, ALS) or when the names do not match the vector width (logged).
    """
    stage = _model_stage(model)
    if stage is None:
        log.info("explain: the model exposes neither feature importances nor coefficients")
        return None
    values = _slot_values(stage, len(feature_names))
    if values is None:
        return None
    kind, imp, signed = values
    if len(feature_names) != imp.shape[0] or len(feature_sources) != imp.shape[0]:
        log.warning(
            "explain: %d feature names for a %d-slot model; skipped", len(feature_names), imp.shape[0]
        )
        return None
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for src, v in zip(feature_sources, imp.tolist(), strict=True):
        totals[src] = totals.get(src, 0.0) + v
        counts[src] = counts.get(src, 0) + 1
    columns = sorted(((c, totals[c], counts[c]) for c in totals), key=lambda t: (-t[1], t[0]))
    slots = [
        (n, s, float(v), float(w))
        for n, s, v, w in zip(feature_names, feature_sources, imp.tolist(), signed.tolist(), strict=True)
    ]
    return Explanation(kind=kind, model_class=type(stage).__name__, columns=columns, slots=slots)


def write_explanation(explanation: Explanation, out_dir: str | Path) -> list[Path]:
    """Write ``feature_importance.csv``, ``.json`` and ``.png`` under ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, png_path = (out / f"feature_importance.{ext}" for ext in ("csv", "json", "png"))
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "column", "importance", "slots"])
        for rank, (col, value, n) in enumerate(explanation.columns, start=1):
            writer.writerow([rank, col, f"{value:.10g}", n])
    json_path.write_text(json.dumps(explanation.as_dict(), indent=1))
    top = explanation.columns[:TOP_N_CHART][::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(top) + 1)))
    ax.barh([c for c, _, _ in top], [v for _, v, _ in top], color="#3b7dd8")
    label = (
        "importance (sum over slots)" if explanation.kind == "feature_importances" else "sum of |coefficient|"
    )
    ax.set_xlabel(label)
    ax.set_title(f"{explanation.model_class}: top {len(top)} input columns")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return [csv_path, json_path, png_path]


def explain_run(
    model: PipelineModel, plan: FeaturePlan, out_dir: str | Path, tracker: Tracker | None = None
) -> Explanation | None:
    """Explain ``model`` with ``plan``'s slot names, write the files and log them under ``explain/``.

    Parameters
    ----------
    model
        The served PipelineModel (feature stages + model).
    plan
        The :class:`~sparkpipe.features.auto.FeaturePlan` (after ``resolve_feature_names``).
    out_dir
        Directory for the files (``<output_path>/explain``).
    tracker
        A :class:`~sparkpipe.tracking.Tracker` with an active run, or ``None``.
    """
    names = list(getattr(plan, "feature_names", []) or [])
    sources = list(getattr(plan, "feature_sources", []) or []) or names
    explanation = explain_model(model, names, sources)
    if explanation is None:
        return None
    paths = write_explanation(explanation, out_dir)
    if tracker is not None:
        for p in paths:
            tracker.log_artifact(p, "explain")
    top = ", ".join(f"{c}={v:.3g}" for c, v, _ in explanation.columns[:5])
    log.info("explain (%s): top columns %s", explanation.kind, top)
    return explanation
