"""The promotion gate: does a newly registered version become ``champion``, or ``challenger``?

``publish`` registers a version without an alias, then asks :func:`decide` and moves one alias through
:func:`sparkpipe.tracking.move_aliases` (so the decision and its reason are in the model's history):

- the first version of a model is promoted;
- ``--promote`` / ``--no-promote`` (``deployment.promotion.force``) decide without scoring;
- ``deployment.promotion.auto: false`` holds every version as challenger (promote by hand);
- a version whose input schema (or class labels) differ from the champion's is held
  (``require_same_schema``): a live service would answer its clients 422 after the swap;
- otherwise the champion is scored on the *same held-out rows* as the new version (the new run's test
  split, else validation) and the new version is promoted when it beats it by ``min_improvement`` in
  the gate metric's direction (default metric: the task's primary one).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sparkpipe.config import PipelineConfig
from sparkpipe.core import FRACTIONAL_TYPES, Evaluation, FitResult, base_type, is_numeric

if TYPE_CHECKING:
    from sparkpipe.tracking import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Promotion:
    """What the gate decided for a new version (kept in ``run.json`` as ``promotion``)."""

    decision: str
    """``"champion"`` (promoted) or ``"challenger"`` (held)."""
    alias: str
    """The alias the new version got."""
    reason: str
    metric: str | None = None
    new_value: float | None = None
    champion_version: str | None = None
    champion_value: float | None = None

    @property
    def promoted(self) -> bool:
        return self.decision == "champion"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _held(cfg: PipelineConfig, reason: str, **extra: Any) -> Promotion:
    return Promotion("challenger", cfg.deployment.promotion.challenger_alias, reason, **extra)


def _promoted(cfg: PipelineConfig, reason: str, **extra: Any) -> Promotion:
    return Promotion("champion", str(cfg.mlflow.alias), reason, **extra)


def decide(
    cfg: PipelineConfig,
    registry: Registry,
    name: str,
    version: str,
    fit: FitResult,
    evaluation: Evaluation,
    metadata: dict[str, Any],
) -> Promotion:
    """The gate's decision for ``name`` version ``version`` (see the module docstring)."""
    pcfg = cfg.deployment.promotion
    champion_alias = str(cfg.mlflow.alias)
    current = registry.aliases(name).get(champion_alias)
    if current is None or current == str(version):
        return _promoted(cfg, f"first version with a {champion_alias!r} alias of {name!r}")
    if pcfg.force is True:
        return _promoted(cfg, f"forced by --promote (was v{current})", champion_version=current)
    if pcfg.force is False:
        return _held(
            cfg, f"held by --no-promote ({champion_alias} stays v{current})", champion_version=current
        )
    if not pcfg.auto:
        return _held(
            cfg,
            f"deployment.promotion.auto is false: promote by hand with "
            f"`sparkpipe models promote {name} {version}`",
            champion_version=current,
        )
    try:
        from sparkpipe.flow.batch import load_spark_model

        champion, champion_meta = load_spark_model(f"models:/{name}/{current}", cfg.mlflow)
    except Exception as exc:  # an unloadable champion cannot be compared: keep it, say why
        return _held(
            cfg, f"champion v{current} could not be loaded to compare ({exc})", champion_version=current
        )
    if pcfg.require_same_schema:
        differs = schema_difference(champion_meta, metadata)
        if differs:
            return _held(
                cfg,
                f"input schema differs from champion v{current} ({differs}); "
                "set deployment.promotion.require_same_schema: false or promote by hand",
                champion_version=current,
            )
    return _compare(cfg, champion, current, fit, evaluation)


def schema_difference(champion: dict[str, Any], new: dict[str, Any]) -> str | None:
    """How the new version's inputs or class labels differ from the champion's (``None``: same). A number
    column widened to ``double`` is no difference (see :func:`_widened`)."""
    old_schema = {c: t for c, t in champion.get("input_schema") or []}
    new_schema = {c: t for c, t in new.get("input_schema") or []}
    parts = []
    missing = sorted(set(old_schema) - set(new_schema))
    added = sorted(set(new_schema) - set(old_schema))
    retyped = sorted(
        c
        for c in set(old_schema) & set(new_schema)
        if old_schema[c] != new_schema[c] and not _widened(old_schema[c], new_schema[c])
    )
    if missing:
        parts.append(f"columns no longer read: {', '.join(missing[:8])}")
    if added:
        parts.append(f"new required columns: {', '.join(added[:8])}")
    if retyped:
        parts.append(
            f"types changed: {', '.join(f'{c} {old_schema[c]}->{new_schema[c]}' for c in retyped[:8])}"
        )
    if champion.get("task") and champion.get("task") != new.get("task"):
        parts.append(f"task {champion.get('task')} -> {new.get('task')}")
    if (champion.get("label_labels") or None) != (new.get("label_labels") or None):
        parts.append("class labels differ")
    return "; ".join(parts) or None


def _widened(old: str, new: str) -> bool:
    """A number column that became a fractional one (``int`` → ``double``, as a CSV read infers it): every
    request the champion accepted still fits, so it is no schema change for clients."""
    return is_numeric(old) and base_type(new) in FRACTIONAL_TYPES


def _compare(
    cfg: PipelineConfig, champion: Any, current: str, fit: FitResult, evaluation: Evaluation
) -> Promotion:
    """Score the champion on the new run's held-out split and compare on the gate metric."""
    from sparkpipe.evaluation import default_primary_metric, get_metric
    from sparkpipe.flow.evaluate import evaluate_model

    pcfg, data = cfg.deployment.promotion, fit.data
    metric = pcfg.metric or default_primary_metric(data.task, fit.num_classes)
    direction = get_metric(data.task, metric).direction
    split_name, held_out = ("test", data.test) if data.test is not None else ("validation", data.validation)
    if held_out is None:
        return _held(cfg, "no held-out split to compare on (data.test_split and validation_split are 0)")
    new_value = evaluation.metrics.get(f"{split_name}_{metric}")
    ecfg = cfg.evaluation.model_copy(update={data.task: [metric]})
    try:
        champion_value = evaluate_model(
            champion, held_out, ecfg, data.task, fit.num_classes, data.user_col, data.item_col
        ).get(metric)
    except Exception as exc:
        return _held(cfg, f"champion v{current} could not be scored on this run's {split_name} split ({exc})")
    if new_value is None:  # the metric was not in evaluation.<task>: score the new model the same way
        new_value = evaluate_model(
            fit.model, held_out, ecfg, data.task, fit.num_classes, data.user_col, data.item_col
        ).get(metric)
    values = {
        "metric": f"{split_name}_{metric}",
        "new_value": None if new_value is None else float(new_value),
        "champion_version": current,
        "champion_value": None if champion_value is None else float(champion_value),
    }
    if new_value is None or not math.isfinite(new_value):
        return _held(cfg, f"{split_name} {metric} of the new version is not a number", **values)
    if champion_value is None or not math.isfinite(champion_value):
        return _promoted(cfg, f"champion v{current} has no finite {split_name} {metric}", **values)
    gain = (new_value - champion_value) if direction == "max" else (champion_value - new_value)
    versus = (
        f"{split_name} {metric} {new_value:.4f} vs champion v{current} {champion_value:.4f} "
        f"({'+' if gain >= 0 else ''}{gain:.4f} {'better' if gain >= 0 else 'worse'}; "
        f"min_improvement {pcfg.min_improvement:g})"
    )
    if gain >= pcfg.min_improvement:
        return _promoted(cfg, versus, **values)
    return _held(cfg, versus, **values)
