"""A model version ready to score (:class:`LoadedModel`), and loading one from a local MLflow model
directory: the NumPy plan when every stage has a twin, else the warm Spark fallback.

The model directory is read without MLflow: the ``MLmodel`` file (sparkpipe's recorded input schema or
the MLflow signature) and the saved input example, which also warms the scorer up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ModelError, UnsupportedStageError
from sparkpipe.serving.rows import ANY, BOOL, INT, NUM, STR, TIME, VEC, BadValue, check_value, type_kind
from sparkpipe.serving.schemas import ApiError, invalid

if TYPE_CHECKING:
    from sparkpipe.serving.metrics import ServiceMetrics
    from sparkpipe.serving.settings import ServingSettings

log = logging.getLogger(__name__)

_OMITTED = object()
"""A column the request left out (scored as a missing value)."""


@dataclass(eq=False)
class LoadedModel:
    """One model version ready to score.

    Attributes
    ----------
    name, version
        Registered name and version.
    path
        The local model directory (``MLmodel`` + ``sparkml/``).
    scorer
        A compiled NumPy pipeline or a :class:`~sparkpipe.serving.fallback.SparkFallbackScorer`.
    serving_path
        ``numpy`` or ``spark-fallback``.
    input_schema
        Ordered ``(name, spark type)`` of the raw input columns.
    """

    name: str
    version: str
    path: Path
    scorer: Any
    serving_path: str
    input_schema: list[tuple[str, str]]
    aliases: list[str] = field(default_factory=list)
    run_id: str | None = None
    example_rows: list[dict[str, Any]] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    unsupported: list[str] = field(default_factory=list)
    recommender: Any = None
    """A :class:`~sparkpipe.scoring.recommend.Recommender` when the model is an ALS recommender."""

    def __post_init__(self) -> None:
        self.names = tuple(n for n, _ in self.input_schema)
        self.names_set = frozenset(self.names)
        self.checks = tuple((n, type_kind(t), t) for n, t in self.input_schema)
        self.label = (self.name, self.version)
        self.is_fallback = self.serving_path == "spark-fallback"
        self.scores_records = not self.is_fallback and self.recommender is None
        """The scorer takes validated records as well as columns (the NumPy plan of a non-ALS model)."""

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    # ------------------------------------------------------------------ input conversion
    def columns_from_list(self, values: list[Any], where: str, out: dict[str, list[Any]]) -> None:
        """Append one positional row (validated) to the column lists ``out``."""
        checks = self.checks
        if len(values) != len(checks):
            raise ApiError(
                422,
                f"{where}: expected {len(checks)} values in this order: "
                f"{', '.join(self.names)}; got {len(values)}",
                [(where, f"expected {len(checks)} values ({', '.join(self.names)}), got {len(values)}")],
            )
        for i, (name, kind, stype) in enumerate(checks):
            try:
                out[name].append(check_value(values[i], kind, stype))
            except BadValue as exc:
                raise invalid(f"{where}[{i}]", f"column {name!r}: {exc}") from None

    def columns_from_dict(
        self, row: dict[str, Any], where: str, out: dict[str, list[Any]], omitted: set[str] | None = None
    ) -> None:
        """Append one named row (validated by :meth:`values_from_dict`) to the column lists ``out``."""
        for name, value in zip(self.names, self.values_from_dict(row, where, omitted), strict=True):
            out[name].append(value)

    def values_from_dict(self, row: dict[str, Any], where: str, omitted: set[str] | None = None) -> list[Any]:
        """One named row's values, validated, in input-schema order.

        ``omitted`` given: a column the row leaves out is a missing value (``None``, imputed like a
        null) and its name is added to ``omitted``; then a key that is not an input column is refused
        (a misspelt name must not be silently imputed). ``omitted`` not given: every column is required
        and extra keys are ignored (input examples).
        """
        values: list[Any] = []
        present = 0
        for name, kind, stype in self.checks:
            value = row.get(name, _OMITTED)
            if value is _OMITTED:
                if omitted is None:
                    raise invalid(f"{where}.{name}", f"missing; this model needs {', '.join(self.names)}")
                omitted.add(name)
                values.append(None)
                continue
            present += 1
            t = type(value)
            if (
                value is None
                or (t is str and kind == STR)
                or (t is float and kind == NUM and value - value == 0.0)
            ):
                values.append(value)  # what check_value returns for these (a finite float: x - x is 0)
                continue
            try:
                values.append(check_value(value, kind, stype))
            except BadValue as exc:
                raise invalid(f"{where}.{name}", str(exc)) from None
        if omitted is not None and len(row) > present:
            self._refuse_unknown(row, where)
        return values

    def _refuse_unknown(self, row: dict[str, Any], where: str) -> None:
        unknown = [str(k) for k in row if k not in self.names_set]
        if not unknown:
            return
        import difflib

        key = unknown[0]
        close = difflib.get_close_matches(key, self.names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise invalid(
            f"{where}.{key[:60]}",
            f"unknown column; {hint}this model's columns are {', '.join(self.names)} "
            "(leave a column out or send null to have it imputed)",
        )

    def empty_columns(self) -> dict[str, list[Any]]:
        return {n: [] for n in self.names}

    # ------------------------------------------------------------------ scoring
    def score(self, columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Score validated columns synchronously (NumPy path or a blocking fallback call)."""
        return self.scorer.predict(columns)

    def example_request(self) -> dict[str, Any]:
        """A ``/predict`` body this model accepts as is."""
        row = self.example_rows[0] if self.example_rows else synthesize_row(self.input_schema)
        return {"model_id": self.name, "features": {n: row.get(n) for n in self.names}}

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "serving_path": self.serving_path,
            "aliases": list(self.aliases),
            "run_id": self.run_id,
            "input_schema": [{"name": n, "type": t} for n, t in self.input_schema],
            "input_example": self.example_request(),
            "loaded_at": self.loaded_at,
            "load_seconds": round(self.load_seconds, 3),
        }
        if self.unsupported:
            info["unsupported_stages"] = list(self.unsupported)
        if self.recommender is not None:
            info["recommender"] = self.recommender.describe()
        return info

    def close(self) -> None:
        closer = getattr(self.scorer, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()


def synthesize_row(schema: list[tuple[str, str]]) -> dict[str, Any]:
    """A plausible row for a schema (used when the model carries no input example)."""
    values = {NUM: 0.0, INT: 0, STR: "", BOOL: False, TIME: "2024-01-01T00:00:00", ANY: None, VEC: None}
    return {n: values[type_kind(t)] for n, t in schema}


# ============================================================================ model directory
def read_model_metadata(path: Path) -> dict[str, Any]:
    """The ``MLmodel`` file of an MLflow model directory as a dict (empty when absent)."""
    mlmodel = path / "MLmodel"
    if not mlmodel.is_file():
        return {}
    import yaml

    try:
        return yaml.safe_load(mlmodel.read_text()) or {}
    except yaml.YAMLError:
        return {}


_MLFLOW_TO_SPARK = {
    "double": "double",
    "float": "double",
    "long": "long",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
    "datetime": "timestamp",
    "binary": "binary",
}


def _mlflow_column_type(col: dict[str, Any]) -> str:
    """Spark type of one MLflow signature column (an array of numbers is an ML vector input)."""
    if col.get("type") == "array" and (col.get("items") or {}).get("type") in ("double", "float"):
        return "vector"
    return _MLFLOW_TO_SPARK.get(col.get("type", "string"), "string")


def schema_from_metadata(meta: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The raw input schema recorded by sparkpipe (``metadata.sparkpipe.input_schema``) or the
    MLflow signature, else ``None``."""
    sp = (meta.get("metadata") or {}).get("sparkpipe") or {}
    if sp.get("input_schema"):
        return [(str(n), str(t)) for n, t in sp["input_schema"]]
    sig = (meta.get("signature") or {}).get("inputs")
    if sig:
        try:
            cols = json.loads(sig) if isinstance(sig, str) else sig
            return [(c["name"], _mlflow_column_type(c)) for c in cols if c.get("name")]
        except (ValueError, TypeError, KeyError):
            return None
    return None


def read_input_example(path: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the model's ``input_example.json`` (MLflow's split/records/inputs layouts)."""
    name = ((meta.get("saved_input_example_info") or {}).get("artifact_path")) or "input_example.json"
    f = path / name
    if not f.is_file():
        return []
    try:
        data = json.loads(f.read_text())
    except (ValueError, OSError):
        return []
    if isinstance(data, dict) and "dataframe_split" in data:
        data = data["dataframe_split"]
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return [
            dict(zip(data["columns"], row, strict=False)) for row in data["data"] if isinstance(row, list)
        ]
    if isinstance(data, dict) and "inputs" in data:
        data = data["inputs"]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return data
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        n = min((len(v) for v in data.values()), default=0)
        return [{k: v[i] for k, v in data.items()} for i in range(n)]
    return []


def _example_is_valid(model: LoadedModel, row: dict[str, Any]) -> bool:
    try:
        model.columns_from_dict(row, "features", model.empty_columns())
        return True
    except ApiError:
        return False


# ============================================================================ loading
def load_model_dir(
    path: Path,
    name: str,
    version: str,
    settings: ServingSettings,
    metrics: ServiceMetrics,
    aliases: list[str] | None = None,
    run_id: str | None = None,
) -> LoadedModel:
    """Compile a local model directory (NumPy path) or load it into the Spark fallback."""
    t0 = time.perf_counter()
    meta = read_model_metadata(path)
    schema = schema_from_metadata(meta)
    examples = read_input_example(path, meta)
    unsupported: list[str] = []
    try:
        from sparkpipe.scoring.compile import compile_pipeline

        scorer: Any = compile_pipeline(path, input_schema=schema)
        schema = [(str(n), str(t)) for n, t in scorer.input_schema]
        serving_path = "numpy"
    except UnsupportedStageError as exc:
        with contextlib.suppress(Exception):
            from sparkpipe.scoring.compile import unsupported_stages

            unsupported = list(unsupported_stages(path))
        schema = _fallback_schema(schema, examples, f"{name}/{version}", exc)
        log.warning("%s/%s: %s; serving it with the warm Spark fallback", name, version, exc)
        scorer = _fallback_scorer(path, schema, settings, metrics)
        serving_path = "spark-fallback"
    model = LoadedModel(
        name=name,
        version=str(version),
        path=path,
        scorer=scorer,
        serving_path=serving_path,
        input_schema=schema,
        aliases=list(aliases or []),
        run_id=run_id,
        unsupported=unsupported,
        recommender=_recommender(scorer, path) if serving_path == "numpy" else None,
    )
    model.example_rows = [r for r in examples if _example_is_valid(model, r)][:5]
    _warm_up(model)
    model.load_seconds = time.perf_counter() - t0
    log.info(
        "loaded %s/%s (%s, %d input columns) in %.2fs",
        name,
        version,
        serving_path,
        len(schema),
        model.load_seconds,
    )
    return model


def _recommender(plan: Any, path: Path) -> Any:
    """The :class:`~sparkpipe.scoring.recommend.Recommender` of an ALS pipeline (its fit-time index
    read from ``<path>/recommend``), else ``None``."""
    from sparkpipe.scoring.models import ALSTwin
    from sparkpipe.scoring.recommend import Recommender

    if not isinstance(plan.model_stage, ALSTwin):
        return None
    return Recommender.from_model_dir(plan, path)


def _fallback_schema(
    schema: list[tuple[str, str]] | None, examples: list[dict[str, Any]], ref: str, exc: Exception
) -> list[tuple[str, str]]:
    """The input schema the Spark fallback scores with: the recorded one, else inferred from the input
    example (a model with neither cannot be served)."""
    if schema:
        return schema
    if not examples:
        raise ModelError(
            f"{ref} needs the Spark fallback ({exc}) but records no input schema, signature or input example"
        ) from exc
    return [(k, _infer_type(v)) for k, v in examples[0].items()]


def _fallback_scorer(
    path: Path, schema: list[tuple[str, str]], settings: ServingSettings, metrics: ServiceMetrics
) -> Any:
    """A warm-Spark-session scorer of a model with a stage that has no NumPy twin."""
    from sparkpipe.serving.fallback import SparkFallbackScorer

    return SparkFallbackScorer(
        path,
        schema,
        master=settings.fallback_master,
        max_batch_rows=settings.fallback_max_batch_rows,
        batch_wait_ms=settings.fallback_batch_wait_ms,
        on_batch=metrics.fallback_batch.observe,
    )


def _warm_up(model: LoadedModel) -> None:
    """Score one example (or synthesized) row so the first request pays no first-call costs."""
    warm = model.example_rows[:1] or [synthesize_row(model.input_schema)]
    cols = model.empty_columns()
    try:
        model.columns_from_dict(warm[0], "example", cols)
        if model.is_fallback:
            model.scorer.warm_up(cols)
        else:
            model.scorer.predict(cols)
    except Exception as exc:  # a synthesized row may not suit the model; warm-up is best effort
        log.debug("warm-up of %s/%s skipped: %s", model.name, model.version, exc)


def _infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return "string"
