"""Request and response shapes of the prediction service, and the one error type routes raise.

The hot endpoints (``/predict``, ``/invocations``) parse their JSON bodies themselves
(:func:`parse_json`) and validate rows against the model's input schema in
:mod:`sparkpipe.serving.service`: a pydantic union over every body form costs more than the model
itself. The pydantic models below still document those bodies in OpenAPI and validate the low-rate
endpoints (``/train``, ``/predict/batch``, alias promotion).
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

JSON_TYPES = ("application/json",)


class ApiError(Exception):
    """An error answered as JSON with a 4xx/5xx status, naming the offending field(s).

    Parameters
    ----------
    status
        HTTP status code.
    message
        One sentence: what is wrong and how to fix it.
    errors
        ``(field, message)`` pairs, e.g. ``("features[2]", "expected a number ...")``.
    headers
        Extra response headers (``WWW-Authenticate`` for 401).
    """

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        error_type: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.headers = headers
        self.error_type = error_type or _DEFAULT_TYPES.get(status, "error")

    def body(self) -> dict[str, Any]:
        """The JSON body: ``detail`` (message), ``error_code`` (MLflow style) and ``errors``."""
        out: dict[str, Any] = {
            "detail": self.message,
            "error_code": self.error_type.upper(),
            "message": self.message,
        }
        if self.errors:
            out["errors"] = [{"field": f, "message": m} for f, m in self.errors]
        return out


_DEFAULT_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal_error",
    503: "unavailable",
}


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming one field."""
    return ApiError(422, f"{field}: {message}", [(field, message)])


_LONG_DIGITS = re.compile(rb"\d{19}")
"""19 digits in a row: maybe an integer beyond orjson's 64 bits."""


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON; send null for a missing value")


def parse_json(body: bytes, content_type: str | None) -> Any:
    """Parse a JSON request body strictly; raise :class:`ApiError` 415/400 on anything else.

    ``NaN``/``Infinity`` literals are refused (they are not JSON), as are numbers that overflow to
    infinity and absurdly deep nesting.
    """
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype not in JSON_TYPES and not (ctype.startswith("application/") and ctype.endswith("+json")):
        raise ApiError(
            415,
            f"Content-Type must be application/json, got {ctype or 'none'!r}",
            [("Content-Type", "send the body as JSON with Content-Type: application/json")],
        )
    if not body or not body.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", [("body", "empty")])
    if _LONG_DIGITS.search(body) is None:
        # orjson accepts a subset of what json does and parses it to the same values, except integers
        # beyond 64 bits (floats there): those bodies, and any body orjson refuses, take json's path,
        # which gives the documented answers and messages
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "the JSON body is nested too deeply", [("body", "nested too deeply")]) from None
    except (ValueError, UnicodeDecodeError) as exc:
        msg = str(exc).splitlines()[0][:200]
        raise ApiError(
            400, f"the body is not valid JSON: {msg}", [("body", f"malformed JSON: {msg}")]
        ) from None


def validate_model(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data`` into ``model``; a failure becomes a 422 naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(
            422,
            "invalid request body: " + "; ".join(f"{f}: {m}" for f, m in validation_errors(exc)[:5]),
            validation_errors(exc),
        ) from None


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn a pydantic error into ``(field, message)`` pairs with dotted/indexed field names."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False)[:20]:
        out.append((format_loc(err.get("loc", ())) or "body", str(err.get("msg", "invalid"))[:300]))
    return out


def format_loc(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "instances", 0, "age")`` -> ``instances[0].age``."""
    parts = ""
    for item in loc:
        if item == "body" and not parts:
            continue
        if isinstance(item, int):
            parts += f"[{item}]"
        else:
            parts += ("." if parts else "") + str(item)
    return parts


def finite(value: Any) -> bool:
    """True unless ``value`` is a float that is NaN or infinite."""
    return not (isinstance(value, float) and not math.isfinite(value))


# ====================================================================== prediction (documentation)
Scalar = float | int | str | bool | None


class PredictRequest(BaseModel):
    """Body of ``POST /predict``: exactly one of ``features`` (one row) or ``instances`` (many)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"model_id": "rf_v1", "features": [1.2, 3.4, 5.6]},
                {"model_id": "churn@champion", "features": {"age": 42, "plan": "basic"}},
                {"model_id": "churn/3", "instances": [[42, "basic"], {"age": 31, "plan": "pro"}]},
            ]
        },
    )

    model_id: str | None = Field(default=None, description="name, name@alias or name/version")
    features: list[Scalar] | dict[str, Scalar] | None = None
    instances: list[list[Scalar] | dict[str, Scalar]] | None = None


class RecommendRequest(BaseModel):
    """Body of ``POST /recommend/{model}``: the users to recommend to (raw ids), ``k`` and whether the
    items each user rated in training are left out."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"users": [1, 2, 99999], "k": 10}]}
    )

    users: list[int | str] = Field(min_length=1, max_length=1000)
    k: int = Field(default=10, ge=1, le=1000)
    exclude_seen: bool = True


class PredictResponse(BaseModel):
    """Answer of ``POST /predict``."""

    model: str
    version: str
    predictions: list[dict[str, Any]]
    imputed_columns: list[str] | None = Field(
        default=None,
        description="input columns a named row left out, scored as missing values (imputed like null); "
        "absent when every column was sent",
    )
    variant: str | None = Field(
        default=None,
        description="champion or challenger when an A/B experiment routed the request, else null",
    )
    request_id: str | None = Field(
        default=None, description="the X-Request-ID sent, or a new id; POST /feedback refers to it"
    )
    latency_ms: float


class FeedbackRequest(BaseModel):
    """Body of ``POST /feedback``: the outcome of a logged prediction."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"request_id": "req-42", "label": 1}, {"request_id": "req-43", "value": 12.5}]
        },
    )

    request_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    label: float | int | bool | Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="the observed class (1 = converted for the conversion metric)"
    )
    value: float | None = Field(
        default=None, strict=True, description="the observed value (regression, revenue)"
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class RoutingUpdate(BaseModel):
    """Body of ``PUT /ab/{model}``: the routing fields to change (the rest is kept). Strict types:
    ``true`` is not a traffic share of 1.0, nor ``5.0`` a sample count."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"challenger": "challenger", "challenger_traffic": 0.2, "mode": "split"}]
        },
    )

    enabled: bool | None = None
    champion: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,100}$")
    challenger: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,100}$")
    challenger_traffic: float | None = Field(default=None, ge=0, le=1)
    mode: Literal["split", "shadow", "bandit"] | None = None
    sticky_key: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")
    metric: Literal["conversion", "accuracy", "value", "abs_error"] | None = None
    minimum_detectable_effect: float | None = Field(default=None, gt=0)
    alpha: float | None = Field(default=None, gt=0, lt=1)
    power: float | None = Field(default=None, gt=0, lt=1)
    auto_promote: bool | None = None
    min_samples: int | None = Field(default=None, ge=1)
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    min_requests_for_rollback: int | None = Field(default=None, ge=1)


class RollbackRequest(BaseModel):
    """Body of ``POST /models/{name}/rollback`` (optional)."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(default="champion", pattern=r"^[A-Za-z0-9_.\-]*[A-Za-z_.\-][A-Za-z0-9_.\-]*$")
    reason: str | None = Field(default=None, max_length=500)


class InvocationsRequest(BaseModel):
    """MLflow scoring protocol: exactly one of the four keys."""

    model_config = ConfigDict(extra="allow")

    dataframe_split: dict[str, Any] | None = Field(default=None, description="{columns, data}")
    dataframe_records: list[dict[str, Any]] | None = None
    instances: list[Any] | dict[str, Any] | None = None
    inputs: list[Any] | dict[str, Any] | None = None


class InvocationsResponse(BaseModel):
    predictions: list[Any]


class ErrorResponse(BaseModel):
    """Every error answer: a message and the offending fields."""

    detail: str
    error_code: str
    message: str
    errors: list[dict[str, str]] | None = None


# ============================================================================================ jobs
PATH_PATTERN = r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$"
"""A data path: not blank, no control characters (confinement to the data roots is checked after)."""


class TrainRequest(BaseModel):
    """Body of ``POST /train``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"algorithm": "random_forest", "data_path": "data/churn.csv"},
                {
                    "algorithm": "gbt",
                    "data_path": "data/churn.parquet",
                    "overrides": {"model.hyperparameters.maxDepth": 5},
                },
            ]
        },
    )

    algorithm: str = Field(min_length=1, max_length=100)
    data_path: str = Field(min_length=1, max_length=4096, pattern=PATH_PATTERN)
    config_path: str | None = Field(default=None, min_length=1, max_length=4096, pattern=PATH_PATTERN)
    model_name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")
    overrides: dict[str, Any] | list[str] | None = None

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, v: dict[str, Any] | list[str] | None) -> dict[str, Any] | list[str] | None:
        if v is not None and len(v) > 200:
            raise ValueError("at most 200 overrides")
        if isinstance(v, list):
            for item in v:
                if "=" not in item:
                    raise ValueError(f"{item!r} is not KEY=VALUE, e.g. model.hyperparameters.maxDepth=5")
        return v


class BatchPredictRequest(BaseModel):
    """Body of ``POST /predict/batch``."""

    model_config = ConfigDict(extra="forbid")

    model_id: str | None = Field(default=None, max_length=300)
    input_path: str = Field(min_length=1, max_length=4096, pattern=PATH_PATTERN)
    output_path: str = Field(min_length=1, max_length=4096, pattern=PATH_PATTERN)
    format: Literal["parquet", "csv", "json", "orc", "delta"] | None = None
    mode: Literal["error", "overwrite"] = Field(
        default="error",
        description=(
            "error: output_path must not exist (or be an empty directory); overwrite: replace an "
            "output this service wrote before (never anything else)"
        ),
    )


class AliasRequest(BaseModel):
    """Body of ``POST /models/{name}/aliases/{alias}``."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=r"^\s*[0-9]+\s*$")] = Field(
        description="the version the alias should point at"
    )
    reason: str | None = Field(default=None, max_length=500, description="recorded in the model's history")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | int) -> str:
        s = str(v).strip()
        if not s.isdigit() or isinstance(v, bool):
            raise ValueError("must be a version number such as 3")
        return s


JobStatus = Literal["queued", "running", "succeeded", "failed"]


class JobInfo(BaseModel):
    """The state of one training or batch-scoring job as clients see it (paths relative to the data
    root; no process ids or server paths)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str
    status: JobStatus
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    log_file: str | None = Field(default=None, description="the job's log, a file name in the jobs directory")


class JobRecord(BaseModel):
    """What ``<jobs_dir>/<id>.json`` must hold; a file that does not match is skipped and reported.

    No code target is read from it: the server decides what a job kind runs.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    id: str = Field(pattern=r"^[A-Za-z0-9\-]{1,100}$")
    kind: str = Field(min_length=1, max_length=50)
    status: JobStatus
    created_at: str = Field(min_length=1, max_length=64)
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    payload: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    pid: int | None = Field(default=None, ge=1)
    pid_start: str | None = None
    log_path: str | None = None


class SkippedJobFile(BaseModel):
    file: str = Field(description="the state file's name in the jobs directory")
    problem: str


class JobList(BaseModel):
    """Answer of ``GET /jobs``: valid jobs, newest first, and state files that were skipped."""

    jobs: list[JobInfo]
    skipped: list[SkippedJobFile] = Field(default_factory=list)


class JobAccepted(BaseModel):
    id: str
    status: JobStatus
    url: str


# ======================================================================================== responses
def _np_default(value: Any) -> Any:
    """``json.dumps`` hook for NumPy scalars and arrays (only called for non-JSON types)."""
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    item = getattr(value, "item", None)
    if item is not None:
        return item()
    return str(value)


def _sanitize(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitize(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return _sanitize(tolist())
    return value


def dumps(obj: Any) -> bytes:
    """Compact JSON; NumPy values converted; NaN/Infinity (not JSON) become ``null``."""
    try:
        return orjson.dumps(obj, default=_np_default, option=orjson.OPT_SERIALIZE_NUMPY)  # NaN -> null
    except TypeError:  # e.g. an integer beyond 64 bits, a non-string key: json's path below
        pass
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_np_default).encode()
    except ValueError:
        return json.dumps(
            _sanitize(obj), separators=(",", ":"), allow_nan=False, default=_np_default
        ).encode()


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the route parses itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
