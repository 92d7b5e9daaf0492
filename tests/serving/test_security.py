"""API key on mutating endpoints and confinement of data paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sparkpipe.serving.app import create_app
from sparkpipe.serving.schemas import ApiError
from sparkpipe.serving.security import confine_path

from .conftest import MODEL, make_settings

MUTATING = [
    ("post", "/train", {"algorithm": "gbt", "data_path": "x.csv"}),
    ("post", "/predict/batch", {"input_path": "in.csv", "output_path": "out"}),
    ("post", f"/models/{MODEL}/reload", None),
    ("post", f"/models/{MODEL}/aliases/staging", {"version": "1"}),
]


def test_api_key_required_on_mutating_endpoints(
    registered: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARKPIPE_API_KEY", "s3cret")
    settings = make_settings(registered, tmp_path)
    assert settings.api_key_value() == "s3cret"
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for method, url, body in MUTATING:
            r = getattr(c, method)(url, json=body)
            assert r.status_code == 401, (url, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            r = getattr(c, method)(url, json=body, headers={"X-API-Key": "wrong"})
            assert r.status_code == 401
        ok = c.post(f"/models/{MODEL}/reload", headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        ok = c.post(f"/models/{MODEL}/reload", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        # reading and predicting stay open
        assert c.get("/models").status_code == 200
        assert c.post("/predict", json={"features": ["pro", 1.0, 1]}).status_code == 200


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Any, Path]:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.csv").write_text("x\n1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("x\n")
    (data / "link").symlink_to(outside)
    settings = make_settings(
        {"tracking_uri": "sqlite:///unused.db", "root": tmp_path}, tmp_path, allowed_data_roots=[str(data)]
    )
    return settings, data


def test_confine_path_accepts_inside(roots: tuple[Any, Path]) -> None:
    settings, data = roots
    assert confine_path("sub/a.csv", "data_path", settings) == str(data / "sub" / "a.csv")
    assert confine_path(str(data / "sub" / "a.csv"), "data_path", settings) == str(data / "sub" / "a.csv")
    assert confine_path("sub/../sub/new_output", "output_path", settings) == str(data / "sub" / "new_output")
    assert confine_path("builtin:churn", "data_path", settings, allow_builtin=True) == "builtin:churn"


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("../outside/secret.csv", 403),
        ("sub/../../outside/secret.csv", 403),
        ("/etc/passwd", 403),
        ("link/secret.csv", 403),
        ("s3a://bucket/x", 403),
        ("file:///etc/passwd", 403),
        ("", 400),
        ("a\x00b", 400),
    ],
)
def test_confine_path_refuses_escapes(roots: tuple[Any, Path], value: str, status: int) -> None:
    settings, _ = roots
    with pytest.raises(ApiError) as info:
        confine_path(value, "data_path", settings)
    assert info.value.status == status
    assert info.value.errors[0][0] == "data_path"


def test_endpoints_refuse_paths_outside_roots(client: Any, tmp_path: Path) -> None:
    r = client.post("/train", json={"algorithm": "gbt", "data_path": "../../etc/passwd"})
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "data_path"
    r = client.post("/predict/batch", json={"input_path": "/etc/hosts", "output_path": "out"})
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "input_path"
    (tmp_path / "data" / "in.csv").write_text("plan,age,calls\npro,1,1\n")
    r = client.post("/predict/batch", json={"input_path": "in.csv", "output_path": "../escape"})
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "output_path"
    r = client.post(
        "/train",
        json={
            "algorithm": "gbt",
            "data_path": "x.csv",
            "overrides": {"mlflow.tracking_uri": "sqlite:////tmp/evil.db"},
        },
    )
    assert r.status_code == 403 and "overrides" in r.json()["errors"][0]["field"]
    assert os.path.exists(tmp_path / "data")
