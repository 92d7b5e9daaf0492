"""Generated bad bodies never reach the 500 handler: every answer is < 500 and JSON."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import MODEL

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "model_id",
        "features",
        "instances",
        "dataframe_split",
        "dataframe_records",
        "inputs",
        "columns",
        "data",
        "plan",
        "age",
        "calls",
    ]
)
bodies = st.one_of(
    junk,
    st.dictionaries(keys, junk, max_size=4),
    st.fixed_dictionaries({"features": st.lists(scalars, min_size=0, max_size=5)}),
    st.fixed_dictionaries(
        {"model_id": st.one_of(st.just(MODEL), junk), "features": st.dictionaries(keys, scalars)}
    ),
    st.fixed_dictionaries(
        {
            "instances": st.lists(
                st.one_of(st.lists(scalars, max_size=4), st.dictionaries(keys, scalars)), max_size=4
            )
        }
    ),
    st.fixed_dictionaries({"dataframe_split": st.fixed_dictionaries({"columns": junk, "data": junk})}),
    st.fixed_dictionaries({"inputs": st.dictionaries(keys, junk)}),
)
raw = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"{",
            b"null",
            b"NaN",
            b'{"features": [NaN]}',
            b'{"features": [Infinity, -Infinity]}',
            b'{"features": [1e999, 1, 2]}',
            b"[" * 5000,
            b'{"features": ["' + b"\\ud800" + b'", 1, 2]}',
            b'{"features": [' + b"9" * 5000 + b", 1, 2]}",
            b'{"a":' * 3000 + b"1" + b"}" * 3000,
        ]
    ),
)
ctypes = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "text/csv",
        "application/json; charset=utf-8",
        "application/problem+json",
    ]
)
urls = st.sampled_from(
    [
        "/predict",
        "/invocations",
        f"/invocations?model_id={MODEL}",
        "/train",
        "/predict/batch",
        f"/models/{MODEL}/aliases/staging",
    ]
)


def _check(r: Any) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    assert "Traceback" not in r.text
    json.loads(r.text)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, url=urls)
def test_generated_json_bodies(client: Any, body: Any, url: str) -> None:
    _check(client.post(url, json=body))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(content=raw, ctype=ctypes, url=urls)
def test_generated_raw_bodies(client: Any, content: bytes, ctype: str, url: str) -> None:
    _check(client.post(url, content=content, headers={"content-type": ctype} if ctype else {}))


def test_shield_turns_unexpected_errors_into_json_500(client: Any) -> None:
    service = client.app.state.service

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internals")

    service.status = boom
    r = client.get("/ready")
    assert r.status_code == 500
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert r.json()["error_code"] == "INTERNAL_ERROR"
    assert 'sparkpipe_errors_total{type="internal_error"} 1.0' in client.get("/metrics").text
