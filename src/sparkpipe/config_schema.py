"""The schema of the pipeline YAML: one pydantic model per section (``extra="forbid"``), and the root
:class:`PipelineConfig`. Loading, overrides and error formatting are in :mod:`sparkpipe.config`, which
re-exports every name here.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger(__name__)

TaskType = Literal["classification", "regression", "clustering", "recommendation"]


TASK_TYPES: tuple[str, ...] = ("classification", "regression", "clustering", "recommendation")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class SparkConfig(_Strict):
    """How the SparkSession is built."""

    app_name: str = "sparkpipe"
    master: str = "local[*]"
    driver_memory: str | None = None
    executor_memory: str | None = None
    executor_cores: int | None = Field(default=None, ge=1)
    num_executors: int | None = Field(default=None, ge=1)
    shuffle_partitions: int | None = Field(default=None, ge=1)
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    ui_enabled: bool = True
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("driver_memory", "executor_memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d+[kKmMgGtT]?[bB]?", str(v)):
            raise ValueError(f"{v!r} is not a JVM memory size; use e.g. '512m', '4g'")
        return v

    @field_validator("master")
    @classmethod
    def _master(cls, v: str) -> str:
        ok = (
            re.fullmatch(r"local(\[(\*|\d+)(,\s*\d+)?\])?", v)
            or v.startswith(("spark://", "k8s://", "mesos://", "local-cluster["))
            or v in ("yarn",)
        )
        if not ok:
            raise ValueError(
                f"{v!r} is not a Spark master; use local[*], local[N], spark://HOST:PORT, k8s://URL or yarn"
            )
        return v


DataFormat = Literal["auto", "csv", "parquet", "json", "libsvm", "delta", "orc"]


class DataConfig(_Strict):
    """Where the data comes from, where outputs go, and how it is split."""

    input_path: str = "builtin:churn"
    output_path: str = "output"
    format: DataFormat = "auto"
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    schema_: str | None = Field(default=None, alias="schema")
    version: int | None = Field(default=None, ge=0, description="Delta table version (time travel)")
    rows: int | None = Field(default=None, ge=10, description="rows of a built-in data set")
    sample_fraction: float | None = Field(default=None, gt=0, le=1)
    validation_split: float = Field(default=0.15, ge=0, lt=1)
    test_split: float = Field(default=0.15, ge=0, lt=1)
    seed: int = 42
    quarantine: bool = True
    infer_rows: int = Field(
        default=10_000,
        ge=100,
        description="CSV/JSON: rows (the first ones) read to decide column types; never a full pass",
    )

    @model_validator(mode="after")
    def _splits(self) -> DataConfig:
        if self.validation_split + self.test_split >= 0.9:
            raise ValueError(
                f"validation_split ({self.validation_split}) + test_split ({self.test_split}) leaves "
                "less than 10% of rows for training; lower one of them"
            )
        return self


class MissingValuesConfig(_Strict):
    enabled: bool = Field(default=True, description="false: no imputation (strategy none)")
    strategy: Literal["mean", "median", "mode", "constant", "drop", "none"] = "median"
    fill_value: float | str | None = None
    categorical_strategy: Literal["mode", "constant", "category"] = "category"
    add_indicator: bool = False

    @model_validator(mode="after")
    def _const(self) -> MissingValuesConfig:
        if self.strategy == "constant" and self.fill_value is None:
            raise ValueError("strategy 'constant' needs fill_value, e.g. fill_value: 0")
        return self


class OutliersConfig(_Strict):
    enabled: bool = Field(default=True, description="false: no outlier handling (method none)")
    method: Literal["none", "zscore", "iqr"] = "none"
    threshold: float = Field(default=3.0, gt=0)
    action: Literal["clip", "flag"] = "clip"
    columns: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _enabled_means_a_method(cls, v: Any) -> Any:
        # the original format writes {enabled: true, threshold: 3.0}: on, with the default method (as
        # `outliers: true`)
        if isinstance(v, dict) and v.get("enabled") is True and "method" not in v:
            return {**v, "method": "iqr"}
        return v


class ElapsedConfig(_Strict):
    start: str
    end: str
    name: str | None = None
    unit: Literal["seconds", "minutes", "hours", "days"] = "seconds"


class TimeFeaturesConfig(_Strict):
    enabled: bool = True
    columns: list[str] | None = None
    parts: list[Literal["hour", "day_of_week", "month", "is_weekend", "day_of_month", "year", "minute"]] = [
        "hour",
        "day_of_week",
        "month",
        "is_weekend",
    ]
    cyclic: bool = False
    elapsed: list[ElapsedConfig] = Field(default_factory=list)


AggFunction = Literal["count", "mean", "sum", "min", "max", "std"]


class AggregationConfig(_Strict):
    """Per-entity aggregates learned from the training data (a lookup table inside the model)."""

    enabled: bool = True
    group_cols: list[str] = Field(min_length=1)
    agg_cols: list[str] = Field(default_factory=list)
    functions: list[AggFunction] = ["mean"]

    @model_validator(mode="after")
    def _needs_cols(self) -> AggregationConfig:
        if not self.agg_cols and any(f != "count" for f in self.functions):
            raise ValueError("functions other than count need agg_cols, e.g. agg_cols: [monthly_charges]")
        return self


class RatiosConfig(_Strict):
    """Every numerator / every denominator (safe division), optional pairwise products."""

    enabled: bool = True
    numerator_cols: list[str] = Field(default_factory=list)
    denominator_cols: list[str] = Field(default_factory=list)
    pairwise_products: bool = False
    product_cols: list[str] | None = Field(
        default=None, description="columns multiplied pairwise (default: numerator and denominator columns)"
    )


class CategoricalConfig(_Strict):
    enabled: bool = True
    max_onehot_cardinality: int = Field(default=32, ge=2)
    high_cardinality: Literal["hashing", "target", "index"] = "hashing"
    hash_buckets: int = Field(default=1024, ge=2)
    rare_threshold: int = Field(default=0, ge=0, description="categories seen fewer times become '__rare__'")
    target_smoothing: float = Field(default=10.0, ge=0, description="TargetEncoder smoothing")

    @field_validator("enabled")
    @classmethod
    def _always_on(cls, v: bool) -> bool:
        if not v:
            raise ValueError(
                "categorical columns always need an encoding; to leave them out, list them in "
                "features.exclude (or remove enabled: false)"
            )
        return v


class TextConfig(_Strict):
    enabled: bool = True
    columns: list[str] = Field(default_factory=list)
    num_features: int = Field(default=1 << 12, ge=2)
    stop_words: bool = True
    idf: bool = True
    min_doc_freq: int = Field(default=1, ge=0)
    pattern: str = Field(default="\\W+", description="RegexTokenizer split pattern (Java regex)")
    min_token_length: int = Field(default=2, ge=1)


class UnivariateSelectionConfig(_Strict):
    """Spark's ``UnivariateFeatureSelector`` (F-test / ANOVA / chi-squared by feature and label type)."""

    feature_type: Literal["continuous", "categorical"] = "continuous"
    selection_mode: Literal["numTopFeatures", "percentile", "fpr", "fdr", "fwe"] = "numTopFeatures"
    selection_threshold: float | None = Field(default=None, gt=0)


class SelectionConfig(_Strict):
    enabled: bool = True
    variance_threshold: float | None = Field(default=None, ge=0)
    univariate: UnivariateSelectionConfig | None = None
    top_k_importance: int | None = Field(default=None, ge=1)
    importance_trees: int = Field(default=20, ge=1, description="trees of the quick top-k forest")

    @field_validator("univariate", mode="before")
    @classmethod
    def _univariate(cls, v: Any) -> Any:
        if v is True:
            return {}
        if v is False:
            return None
        return v


class FeaturesConfig(_Strict):
    """Automated feature engineering. Every field is optional; roles are inferred from the schema."""

    target: str | None = None
    columns: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    numeric: list[str] | None = None
    categorical: list[str] | None = None
    timestamp: list[str] | None = None
    boolean: list[str] | None = None
    text: TextConfig | list[str] | None = None
    id_columns: list[str] | None = None
    drop_id_like: bool = True
    time_features: TimeFeaturesConfig | bool | list[str] = True
    aggregations: list[AggregationConfig] = Field(default_factory=list)
    ratios: RatiosConfig | None = None
    missing_values: MissingValuesConfig = Field(default_factory=MissingValuesConfig)
    outliers: OutliersConfig | bool = Field(default_factory=OutliersConfig)
    scaling: Literal["standard", "minmax", "maxabs", "none"] = "standard"
    categorical_encoding: CategoricalConfig = Field(default_factory=CategoricalConfig)
    selection: SelectionConfig | None = None
    # recommendation (ALS) columns
    user_col: str | None = None
    item_col: str | None = None
    cold_start: Literal["popular", "none", "error"] = Field(
        default="popular",
        description=(
            "recommenders: what GET /recommend answers for a user not in the training data: the most "
            "rated training items (popular), an empty list (none) or a 404 (error); always flagged cold_start"
        ),
    )

    @field_validator("aggregations", mode="before")
    @classmethod
    def _aggs(cls, v: Any) -> Any:
        if isinstance(v, dict):  # a single aggregation block
            v = [v]
        # a block switched off needs none of its other keys (group_cols is required when on)
        return [a for a in v or [] if not (isinstance(a, dict) and a.get("enabled") is False)]

    @model_validator(mode="after")
    def _switched_off(self) -> FeaturesConfig:
        """``enabled: false`` turns a section off: the consumers see the section's "off" value."""
        off: dict[str, Any] = {}
        if isinstance(self.outliers, OutliersConfig) and not self.outliers.enabled:
            off["outliers"] = self.outliers.model_copy(update={"method": "none"})
        if not self.missing_values.enabled:
            off["missing_values"] = self.missing_values.model_copy(update={"strategy": "none"})
        for name in ("ratios", "text", "selection"):
            section = getattr(self, name)
            if section is not None and getattr(section, "enabled", True) is False:
                off[name] = None
        for name, value in off.items():  # not setattr: validate_assignment would re-run this validator
            self.__dict__[name] = value
        return self

    @field_validator("time_features", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {"enabled": v}
        if isinstance(v, list):
            return {"enabled": True, "columns": v}
        return v

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if isinstance(v, list):
            return {"columns": v}
        return v

    @field_validator("outliers", mode="before")
    @classmethod
    def _outliers(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {"method": "iqr" if v else "none"}
        if isinstance(v, str):
            return {"method": v}
        return v


class ModelConfig(_Strict):
    algorithm: str = "logistic_regression"
    task_type: TaskType | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, description="registered model name")
    class_weight: Literal["none", "balanced"] = Field(
        default="none",
        description=(
            "classifiers: balanced weights each training row by n_rows / (n_classes * n_rows_of_its_class) "
            "(the estimator's weightCol)"
        ),
    )


class TuningConfig(_Strict):
    enabled: bool = False
    method: Literal["cross_validation", "train_validation_split"] = "cross_validation"
    search: Literal["grid", "random", "bayesian"] = "grid"
    num_folds: int = Field(default=3, ge=2)
    train_ratio: float = Field(default=0.8, gt=0, lt=1)
    parallelism: int = Field(default=2, ge=1)
    max_trials: int | None = Field(default=None, ge=1)
    timeout_minutes: float | None = Field(default=None, gt=0)
    metric: str | None = None
    seed: int = 42
    # {algorithm: {param: [values]}} or flat {param: [values]}; the shapes are checked per entry in
    # config_checks (a pydantic union of the two reported every error twice)
    param_grid: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, dict[str, Any]] = Field(default_factory=dict)
    pruning: bool = True


class CompareConfig(_Strict):
    algorithms: list[str] = Field(default_factory=list)
    tune: bool = False
    metric: str | None = None
    bootstrap_samples: int = Field(
        default=20,
        ge=0,
        description="bootstrap resamples of the validation set behind the leaderboard's ± std (0: no std)",
    )
    hyperparameters: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-algorithm hyperparameters, e.g. {random_forest: {numTrees: 50}}",
    )


class EvaluationConfig(_Strict):
    classification: list[str] = ["accuracy", "precision", "recall", "f1", "auc_roc", "auc_pr", "log_loss"]
    regression: list[str] = ["rmse", "mae", "r2", "mape"]
    clustering: list[str] = ["silhouette", "davies_bouldin"]
    recommendation: list[str] = ["rmse", "mae", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"]
    primary_metric: str | None = None
    k: int = Field(default=10, ge=1, description="cut-off for ranking metrics")
    report: bool = True
    threshold: Literal["auto"] | None = Field(
        default=None,
        description=(
            "binary classifiers with probabilities: auto picks the F1-optimal decision threshold on the "
            "validation split and sets it on the saved model"
        ),
    )


class MlflowConfig(_Strict):
    enabled: bool = True
    tracking_uri: str = "sqlite:///mlflow.db"
    registry_uri: str | None = None
    experiment_name: str = "sparkpipe"
    artifact_location: str | None = None
    registered_model_name: str | None = None
    register_model: bool = Field(default=True, alias="register")
    alias: str | None = Field(default="champion", description="alias given to a newly registered version")
    log_input_example: bool = True


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: str = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    file: str | None = None

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class OptimizationConfig(_Strict):
    cache_data: bool = Field(
        default=False,
        description=(
            "persist the training vectors (features + label, memory and disk) while the model trains; off "
            "by default because MLlib's estimators cache what they iterate on themselves, and a second "
            "copy competes with theirs for the heap"
        ),
    )
    repartition: bool = False
    num_partitions: int | None = Field(default=None, ge=1)
    broadcast_threshold: int | str | None = None
    adaptive: bool = True


class PromotionConfig(_Strict):
    """The promotion gate of newly registered versions (``deployment.promotion``)."""

    auto: bool = Field(
        default=True,
        description="the gate decides; false: every new version becomes challenger (promote by hand)",
    )
    metric: str | None = Field(
        default=None, description="metric compared on the held-out split (default: the task's primary metric)"
    )
    min_improvement: float = Field(
        default=0.0, description="how much better (in the metric's direction) a new version must be"
    )
    require_same_schema: bool = Field(
        default=True,
        description="hold a version whose input columns/types or classes differ from the champion's",
    )
    challenger_alias: str = Field(default="challenger", min_length=1, description="alias of a held version")
    force: bool | None = Field(
        default=None, description="set by --promote (true) / --no-promote (false): decide without the gate"
    )


class ABTestConfig(_Strict):
    """``deployment.ab_testing``: champion/challenger routing of ``POST /predict`` and its report."""

    enabled: bool = False
    model_name: str | None = Field(
        default=None, description="registered model whose bare-name requests are routed (default: model_name)"
    )
    champion: str = Field(default="champion", description="alias (or version number) of the champion")
    challenger: str = Field(default="challenger", description="alias (or version number) of the challenger")
    challenger_traffic: float = Field(default=0.1, ge=0, le=1)
    mode: Literal["split", "shadow", "bandit"] = "split"
    sticky_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$",
        description="request field whose value picks the variant (split); the request id when absent",
    )
    metric: Literal["conversion", "accuracy", "value", "abs_error"] = Field(
        default="conversion",
        description="online metric from feedback: conversion (share of label == 1), accuracy (prediction "
        "== label), value (mean of value), abs_error (mean |prediction - value|, lower is better)",
    )
    minimum_detectable_effect: float = Field(default=0.05, gt=0)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    power: float = Field(default=0.8, gt=0, lt=1)
    auto_promote: bool = False
    min_samples: int = Field(
        default=1000, ge=1, description="labelled outcomes per variant before auto-promotion"
    )
    max_error_rate: float | None = Field(
        default=0.05, ge=0, le=1, description="challenger error rate that stops routing to it (auto-rollback)"
    )
    min_requests_for_rollback: int = Field(default=50, ge=1)


class PredictionLogConfig(_Strict):
    """``deployment.prediction_log``: every prediction appended to a SQLite (WAL) file."""

    enabled: bool = True
    path: str | None = Field(default=None, description="SQLite file; default: predictions.db beside jobs_dir")
    flush_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    max_buffer: int = Field(default=50_000, ge=100)
    retention_days: float | None = Field(
        default=None, gt=0, description="predictions older than this are deleted (with their feedback)"
    )
    max_rows: int | None = Field(
        default=None, ge=1000, description="at most this many predictions are kept (the oldest go first)"
    )
    prune_interval_seconds: float = Field(
        default=300.0, ge=1, le=86_400, description="how often the writer thread applies the retention"
    )


class DriftConfig(_Strict):
    """``deployment.drift``: the training profile against a window of the prediction log
    (``GET /monitoring/{model}/drift``, ``sparkpipe monitor drift``). Defaults follow Evidently's."""

    window: int = Field(default=1000, ge=10, description="latest logged input rows compared by default")
    max_window: int = Field(
        default=100_000, ge=10, le=1_000_000, description="largest window a request may ask"
    )
    small_reference_rows: int = Field(
        default=1000,
        ge=1,
        description="a profile of at most this many rows is judged by p-values (KS, chi-square), a larger "
        "one by distances (PSI, Jensen-Shannon)",
    )
    p_value: float = Field(default=0.05, gt=0, lt=1, description="KS / chi-square: drift when p < this")
    psi_threshold: float = Field(default=0.1, gt=0, description="PSI: drift when PSI >= this")
    jensen_shannon_threshold: float = Field(
        default=0.1, gt=0, le=1, description="Jensen-Shannon distance: drift when >= this"
    )
    drift_share: float = Field(
        default=0.5, gt=0, le=1, description="the data set drifts when this share of features drift"
    )
    metrics_refresh_seconds: float = Field(
        default=60.0, ge=0, description="GET /metrics recomputes the drift gauges at most this often (0: off)"
    )


class DeploymentConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    model_name: str | None = None
    models: list[str] = Field(default_factory=list)
    api_key_env: str = "SPARKPIPE_API_KEY"
    allowed_data_roots: list[str] = Field(default_factory=lambda: ["."])
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_batch_rows: int = Field(default=10_000, ge=1)
    jobs_dir: str = ".sparkpipe/jobs"
    reload_interval_seconds: float = Field(default=30.0, ge=0)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    ab_testing: ABTestConfig = Field(default_factory=ABTestConfig)
    prediction_log: PredictionLogConfig = Field(default_factory=PredictionLogConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)


class PipelineConfig(_Strict):
    """The whole pipeline configuration (root of the YAML)."""

    spark: SparkConfig = Field(default_factory=SparkConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    compare: CompareConfig | None = None
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
        # Cross-field checks that need the algorithm registry run in validate_semantics() so this
        # module stays import-light; here only what the schema alone can tell.
        return self

    def registered_model_name(self) -> str:
        """Name under which the trained model is registered."""
        return self.mlflow.registered_model_name or self.model.name or _default_model_name(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True), sort_keys=False)


def _default_model_name(cfg: PipelineConfig) -> str:
    src = cfg.data.input_path
    base = src.split(":", 1)[1] if src.startswith("builtin:") else Path(src.rstrip("/")).stem
    base = re.sub(r"[^A-Za-z0-9_]+", "_", base).strip("_") or "data"
    return f"{base}_{cfg.model.algorithm}"
