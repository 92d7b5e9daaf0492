"""The OpenAPI document tells the truth: a bounded Schemathesis run over every operation.

Every operation gets a fixed budget of positive and negative examples (schema-valid and schema-breaking
requests), each checked with all of Schemathesis's checks (no 5xx, documented status codes, content
types, headers and response schemas, negative data rejected, ...) against the in-process app. Jobs run
a quick fake function and alias promotion writes to a private copy of the registry, so the run changes
nothing the other tests use.
"""

from __future__ import annotations

import contextlib
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient

from sparkpipe.serving.app import create_app
from sparkpipe.serving.jobs import JobManager

from . import conftest
from .conftest import make_settings

EXAMPLES_PER_MODE = 40
"""Examples per operation and generation mode (positive, negative): keeps the run to a few minutes."""

RUNTIME_CHECKED = (
    r"^/(predict|invocations|train|predict/batch|feedback|ab/.*|models/.*/rollback|monitoring/.*/drift"
    r"|recommend/.*|similar/.*)$"
)
CONFIG = f"""
[[operations]]
include-path-regex = '{RUNTIME_CHECKED}'
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422", "503"]
"""
"""Bodies of these operations are checked against what exists at run time (the model's input schema,
the algorithm registry and hyperparameters, files under the data root, logged request ids, an
experiment's variants, an alias's recorded history, a drift ``since`` that is a string but no time, a
recommender model and its user and item ids): a request that fits the
OpenAPI schema can still be refused there with a documented 400/422 (``positive_data_acceptance``
would otherwise demand a 2xx). Every other check, and every other operation, is as Schemathesis ships."""

FAKE = {"train": f"{conftest.__name__}:quick_job", "batch_predict": f"{conftest.__name__}:quick_job"}


def _run(app: Any) -> tuple[Counter[str], list[str]]:
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hsettings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS
    from schemathesis.config import SchemathesisConfig

    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig.from_str(CONFIG))
    checks = CHECKS.get_all()
    assert len(checks) >= 10, [c.__name__ for c in checks]  # the OpenAPI checks are registered
    requests: Counter[str] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = op.label

            @given(case=op.as_strategy(generation_mode=mode))
            @hsettings(
                max_examples=EXAMPLES_PER_MODE,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                requests[label] += 1  # noqa: B023
                try:
                    case.call_and_validate(checks=checks)
                except (Exception, BaseExceptionGroup) as exc:  # every failure, not the first
                    failures.append(f"{label} [{mode.name}]: {str(exc)[:1500]}")  # noqa: B023

            with contextlib.suppress(Unsatisfiable):  # nothing to break without parameters or body
                check()
    return requests, failures


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors_or_schema_violations(
    registered: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(registered["root"] / "mlflow.db", tmp_path / "mlflow.db")
    store = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "root": registered["root"]}
    settings = make_settings(store, tmp_path, model_cache_dir=str(tmp_path / "cache"))
    (tmp_path / "data" / "in.csv").write_text("plan,age,calls\npro,1,1\n")
    app = create_app(settings, jobs=JobManager(settings.jobs_dir, max_concurrent=1, targets=FAKE))
    with TestClient(app):  # runs the lifespan: models loaded, jobs recovered
        requests, failures = _run(app)
    total = sum(requests.values())
    with capsys.disabled():
        print(f"\nschemathesis: {total} requests over {len(requests)} operations, {len(failures)} failures")
    assert len(requests) >= 12, requests
    assert not failures, "\n\n".join(failures[:10])
