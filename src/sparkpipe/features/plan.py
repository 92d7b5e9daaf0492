"""What a feature plan is: :class:`FeaturePlan` (the unfitted stages and everything known about them)
and :class:`PlanContext` (what each step reads and appends to while the plan is built).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sparkpipe.config import FeaturesConfig, TimeFeaturesConfig
from sparkpipe.features.roles import ColumnRoles

if TYPE_CHECKING:
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

FEATURES_COL = "features"


UNKNOWN_SLOT = "__unknown"
"""Spark's name for the extra one-hot slot of ``StringIndexer(handleInvalid='keep')`` (unseen values)."""


WITH_MEAN_MAX_WIDTH = 1000
"""StandardScaler centres (``withMean=True``) only all-dense vectors up to this width."""


Stage = Any  # a pyspark.ml PipelineStage (Estimator or Transformer)


@dataclass
class OneHotBlock:
    """One categorical column's slice of the feature vector (for naming slots)."""

    column: str
    vector_col: str
    labels: list[str]
    indexer: Stage
    index_in_indexer: int

    def names(self, labels: list[str] | None = None) -> list[str]:
        labels = self.labels if labels is None else labels
        return [f"{self.column}={v}" for v in labels] + [f"{self.column}={UNKNOWN_SLOT}"]


@dataclass
class VectorBlock:
    """A fixed-width vector block of one source column: hashed categories (``kind='h'``, slots
    ``city#h0``...), hashed text term frequencies (``kind='tf'``, slots ``notes#tf0``...) or an input
    ML vector column (``kind='v'``, slots ``features#v0``...)."""

    column: str
    vector_col: str
    size: int
    kind: str

    def names(self) -> list[str]:
        return [f"{self.column}#{self.kind}{i}" for i in range(self.size)]


@dataclass
class FeaturePlan:
    """The unfitted feature stages and everything known about them.

    Attributes
    ----------
    stages
        Unfitted feature stages, in order (the model goes after them). They never read the target, so
        a fitted pipeline of them serves rows without a label.
    label_stages
        Already-fitted transformers that derive ``label_col`` from the target (string → index,
        boolean → double). Apply them to training/evaluation data; they are *not* part of ``stages``
        and must not be part of a served model.
    features_col
        The assembled (and scaled) feature vector column; ``None`` for recommendation.
    label_col
        The column the model trains on: ``"label"`` when a string/boolean target is indexed, the
        target itself when numeric, ``None`` for clustering. For recommendation, the rating column.
    label_labels
        For an indexed string target, the labels by index (give them to ``IndexToString`` after the
        model to map predictions back); ``None`` otherwise.
    roles, profile
        Column roles and the one-pass profile (for drift checks).
    input_schema
        ``(name, Spark simple type)`` of each raw input column the stages need, frame order,
        target excluded.
    feature_names
        The name of every slot of ``features_col``, in order. Computed from the build frame's category
        frequencies, which is exact when the stages are fitted on the same frame; call
        :meth:`resolve_feature_names` after fitting to read them from the fitted model.
    dropna_subset, nan_inputs
        The raw columns whose missing values reach the feature vector as NaN unless imputed:
        ``dropna_subset`` only with ``missing_values.strategy: drop`` (rows to drop), ``nan_inputs``
        always (what ``strategy: none`` checks before fitting).
    """

    stages: list[Stage]
    features_col: str | None
    label_col: str | None
    roles: ColumnRoles
    profile: dict[str, Any]
    input_schema: list[tuple[str, str]]
    feature_names: list[str]
    task: str
    target: str | None = None
    label_labels: list[str] | None = None
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    dropna_subset: list[str] = field(default_factory=list)
    nan_inputs: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    slots: list[str | OneHotBlock | VectorBlock] = field(default_factory=list, repr=False)
    label_stages: list[Stage] = field(default_factory=list)
    feature_sources: list[str] = field(default_factory=list)
    selectors: list[str] = field(default_factory=list)
    needs_label: bool = False
    slot_sources: dict[str, str] = field(default_factory=dict, repr=False)

    def pipeline(self) -> Pipeline:
        """A ``Pipeline`` of the feature stages alone."""
        from pyspark.ml import Pipeline

        return Pipeline(stages=list(self.stages))

    def resolve_feature_names(self, model: PipelineModel) -> list[str]:
        """Read the one-hot labels from a fitted model and update :attr:`feature_names`.

        Parameters
        ----------
        model
            A fitted ``PipelineModel`` containing this plan's stages (possibly followed by a model).
        """
        stages = _flatten(model.stages)
        fitted = {s.uid: s for s in stages}
        names: list[str] = []
        sources: list[str] = []
        for slot in self.slots:
            if isinstance(slot, str):
                names.append(slot)
                sources.append(self.slot_sources.get(slot, slot))
                continue
            if isinstance(slot, VectorBlock):
                block = slot.names()
            else:
                indexer = fitted.get(slot.indexer.uid)
                if indexer is None:
                    raise ValueError(f"the fitted model has no StringIndexer {slot.indexer.uid} of this plan")
                block = slot.names(list(indexer.labelsArray[slot.index_in_indexer]))
            names += block
            sources += [slot.column] * len(block)
        by_output = {
            s.getOutputCol(): s for s in stages if s.hasParam("outputCol") and s.isDefined("outputCol")
        }
        for out in self.selectors:
            sel = by_output.get(out)
            if sel is None:
                raise ValueError(f"the fitted model has no selection stage writing {out!r}")
            idx = list(sel.getIndices()) if hasattr(sel, "getIndices") else sorted(sel.selectedFeatures)
            names = [names[i] for i in idx]
            sources = [sources[i] for i in idx]
        self.feature_names = names
        self.feature_sources = sources
        return names


def _flatten(stages: list[Any]) -> list[Any]:
    out: list[Any] = []
    for s in stages:
        out.append(s)
        if hasattr(s, "stages") and isinstance(s.stages, list):
            out += _flatten(s.stages)
    return out


@dataclass
class PlanContext:
    """State shared by the step builders while a plan is built.

    Attributes
    ----------
    pending
        ``(column, feature name)`` of double columns that still need imputation.
    ready
        ``(column, feature name)`` of double columns ready to assemble.
    blocks
        One-hot vector blocks to assemble after the dense slots.
    consumed
        Raw input columns some stage reads.
    """

    df: DataFrame
    cfg: FeaturesConfig
    roles: ColumnRoles
    profile: dict[str, Any]
    task: str
    nonnegative: bool = False
    stages: list[Stage] = field(default_factory=list)
    pending: list[tuple[str, str]] = field(default_factory=list)
    ready: list[tuple[str, str]] = field(default_factory=list)
    blocks: list[OneHotBlock] = field(default_factory=list)
    consumed: set[str] = field(default_factory=set)
    taken: set[str] = field(default_factory=set)
    features_col: str = FEATURES_COL
    dropna_subset: list[str] = field(default_factory=list)
    label_col: str | None = None
    needs_label: bool = False
    sources: dict[str, str] = field(default_factory=dict)
    selectors: list[str] = field(default_factory=list)
    vector_col: str | None = None
    seed: int = 42

    def add_ready(self, col: str, name: str, source: str) -> None:
        """A double column ready to assemble, its slot name and the input column it comes from."""
        self.ready.append((col, name))
        self.sources[name] = source

    def new_col(self, name: str) -> str:
        """Reserve a column name, suffixing ``__2``, ``__3``... on a clash with an existing column."""
        candidate, i = name, 1
        while candidate in self.taken:
            i += 1
            candidate = f"{name}__{i}"
        self.taken.add(candidate)
        return candidate

    @property
    def time_cfg(self) -> TimeFeaturesConfig:
        tf = self.cfg.time_features
        return tf if isinstance(tf, TimeFeaturesConfig) else TimeFeaturesConfig(enabled=bool(tf))


StepBuilder = Callable[[PlanContext], list[Stage]]
