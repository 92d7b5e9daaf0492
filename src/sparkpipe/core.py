"""The values passed between the stages of a run, and names every layer shares.

The lowest layer besides :mod:`sparkpipe.errors`: no pyspark, no MLflow, no config. The training path
(:mod:`sparkpipe.flow`) is ``prepare → fit → evaluate → publish`` and each arrow carries one of the
frozen dataclasses below:

- :class:`PreparedData`: the input read, labelled and split (``flow.prepare``);
- :class:`FitResult`: the served ``PipelineModel`` and what was learned fitting it (``flow.fit``);
- :class:`Evaluation`: metrics per split, the chosen decision threshold (``flow.evaluate``);
- :class:`RunResult`: what a published run produced (``flow.publish``; written to ``run.json``).

:class:`ModelRef` is the one parser of model references (``name``, ``name@alias``, ``name/N``,
optionally ``models:/``-prefixed) and the resolved registry version the registry readers return. The
Spark type-name sets are the one list of Spark SQL type names (``df.dtypes`` / ``simpleString`` forms).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ModelError

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame

    from sparkpipe.features.plan import FeaturePlan
    from sparkpipe.models.algorithms import AlgorithmSpec

# ------------------------------------------------------------------------------------- column names
LABEL_COL = "label"
"""The label column every estimator and metric reads (the target cast or indexed)."""
WEIGHT_COL = "__sparkpipe_weight"
"""Per-row training weight (``model.class_weight: balanced``); only the estimator reads it."""

# ---------------------------------------------------------------------------------- Spark type names
INTEGRAL_TYPES = frozenset({"tinyint", "byte", "smallint", "short", "int", "integer", "bigint", "long"})
"""Spark integral type names, SQL (``df.dtypes``) and JSON-schema spellings."""
FRACTIONAL_TYPES = frozenset({"float", "double"})
NUMERIC_TYPES = INTEGRAL_TYPES | FRACTIONAL_TYPES | {"decimal"}
TIME_TYPES = frozenset({"timestamp", "timestamp_ntz", "date"})
"""Spark types of a point in time."""
KEY_TYPES = frozenset({"string", "boolean"} | {"tinyint", "smallint", "int", "bigint"})
"""Types a categorical key (group-by, lookup) may have."""
SPARK_TO_MLFLOW = {
    **{t: "integer" for t in ("int", "integer", "smallint", "tinyint", "short", "byte")},
    "bigint": "long",
    "long": "long",
    "double": "double",
    "float": "float",
    "string": "string",
    "boolean": "boolean",
    **{t: "datetime" for t in TIME_TYPES},
}
"""Spark simple type → MLflow column type of a model signature (anything else is a string)."""


def base_type(dtype: str) -> str:
    """``decimal(10,2)`` → ``decimal``: a Spark type name without its parameters, lower case."""
    return dtype.lower().split("(", 1)[0].strip()


def is_numeric(dtype: str) -> bool:
    """Whether a Spark type name (``df.dtypes`` form) is a number type."""
    return base_type(dtype) in NUMERIC_TYPES


def is_integral(dtype: str) -> bool:
    return base_type(dtype) in INTEGRAL_TYPES


# ------------------------------------------------------------------------------- model references
MODEL_REF_RE = re.compile(
    r"^(?:models:/)?(?P<name>[^@/\s]+)(?:@(?P<alias>[^/\s]+)|/(?P<version>\d+|latest))?$"
)
"""``name``, ``name@alias``, ``name/N`` or ``name/latest``, each optionally prefixed with ``models:/``."""


@dataclass(frozen=True)
class ModelRef:
    """A reference to a registered model: as written (:meth:`parse`: name with an alias or a version,
    or neither) or resolved by a registry (one version, with its run, source, aliases and tags)."""

    name: str
    version: str | None = None
    run_id: str | None = None
    source: str | None = None
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    alias: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        """The reference written as ``ref`` (see :data:`MODEL_REF_RE`).

        Raises
        ------
        ModelError
            ``ref`` is not such a reference.
        """
        m = MODEL_REF_RE.match(ref.strip())
        if not m:
            raise ModelError(f"model reference {ref!r} is not NAME, NAME@ALIAS or NAME/VERSION")
        return cls(name=m.group("name"), alias=m.group("alias"), version=m.group("version"))

    @property
    def uri(self) -> str:
        """``models:/name/version`` (``name@alias`` or ``name`` while unresolved)."""
        if self.version:
            return f"models:/{self.name}/{self.version}"
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}"


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``(name, alias, version)`` of a model reference: :meth:`ModelRef.parse` as a tuple."""
    parsed = ModelRef.parse(ref)
    return parsed.name, parsed.alias, parsed.version


def model_name_of(ref: str) -> str | None:
    """The model name of a reference (``models:/churn@champion`` → ``churn``); ``None`` if not one."""
    m = MODEL_REF_RE.match(ref.strip())
    return m.group("name") if m else None


# ----------------------------------------------------------------------------------- stage values
@dataclass(frozen=True)
class PreparedData:
    """Data after reading and splitting, with the resolved task and columns (``flow.prepare``).

    ``lineage`` is the run's one lineage record: later stages add counts to it (rows per split,
    rows dropped), so every result that shares it reports the same numbers.
    """

    train: DataFrame
    validation: DataFrame | None
    test: DataFrame | None
    task: str
    target: str | None
    label_labels: list[str] | None
    lineage: dict[str, Any]
    user_col: str | None = None
    item_col: str | None = None
    num_classes: int | None = None
    cached: list[DataFrame] = field(default_factory=list)

    def with_(self, **changes: Any) -> PreparedData:
        """A copy with ``changes`` (same lineage record and cache list)."""
        return replace(self, **changes)

    def release(self) -> None:
        """Unpersist what ``prepare_data`` cached."""
        for df in self.cached:
            df.unpersist()
        self.cached.clear()


@dataclass(frozen=True)
class FitResult:
    """The served model of one algorithm and what fitting it decided (``flow.fit``).

    ``data`` is the prepared data as this model sees it: rows a ``missing_values: drop`` removed
    are gone, and a recommender's id columns are the indexed ones the model reads.
    """

    model: PipelineModel
    plan: FeaturePlan
    spec: AlgorithmSpec
    algorithm: str
    data: PreparedData
    num_features: int | None
    num_classes: int | None
    tuning: dict[str, Any] | None = None
    class_weights: dict[str, float] | None = None
    train_seconds: float = 0.0

    @property
    def task(self) -> str:
        return self.data.task


@dataclass(frozen=True)
class Evaluation:
    """Metrics of a fitted model on the held-out splits (``flow.evaluate``).

    ``predictions`` (when kept for the report) are the scored rows of ``report_split``, persisted;
    :meth:`release` unpersists them.
    """

    metrics: dict[str, float]
    threshold: dict[str, Any] | None = None
    report_split: str | None = None
    predictions: DataFrame | None = None

    def release(self) -> None:
        if self.predictions is not None:
            self.predictions.unpersist()


@dataclass(frozen=True)
class RunResult:
    """What one pipeline run produced (written to ``<output_path>/runs/<run_id>/run.json``; the latest
    run's copy is ``<output_path>/run.json``). Built step by step with :meth:`with_`."""

    run_id: str | None
    task: str
    algorithm: str
    metrics: dict[str, float]
    registered_name: str | None = None
    registered_version: str | None = None
    model_uri: str | None = None
    output_path: str | None = None
    tracking_uri: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None
    report_path: str | None = None
    decision_threshold: dict[str, Any] | None = None
    """``evaluation.threshold: auto``: the chosen threshold, its validation F1 (and F1 at 0.5)."""
    warnings: list[str] = field(default_factory=list)
    """Analysis steps (explain, report) that failed; the model itself is complete and published."""
    record_path: str | None = None
    promotion: dict[str, Any] | None = None
    """The promotion gate's decision for the registered version: ``decision`` (champion|challenger),
    ``alias``, ``reason`` and the compared metric values."""

    def with_(self, **changes: Any) -> RunResult:
        """A copy with ``changes`` (the same ``warnings`` list)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
