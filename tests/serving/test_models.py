"""``/models`` views, reload, alias promotion, and the hot swap under concurrent requests."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from sparkpipe.serving.app import create_app

from .conftest import MODEL, make_settings

ROW = {"plan": "pro", "age": 33.5, "calls": 4}


def test_models_list_and_detail(client: Any) -> None:
    body = client.get("/models").json()
    names = [m["name"] for m in body["models"]]
    assert MODEL in names
    entry = client.get(f"/models/{MODEL}").json()
    assert [v["version"] for v in entry["versions"]] == ["2", "1"]
    assert entry["aliases"]["champion"] == "1"
    assert entry["versions"][1]["metrics"]["validation_accuracy"] == 0.9
    loaded = entry["loaded"][0]
    assert loaded["serving_path"] == "numpy"
    assert loaded["input_schema"] == [
        {"name": "plan", "type": "string"},
        {"name": "age", "type": "double"},
        {"name": "calls", "type": "long"},
    ]
    example = loaded["input_example"]
    assert example == {"model_id": MODEL, "features": {"plan": "pro", "age": 33.5, "calls": 4}}
    assert client.post("/predict", json=example).status_code == 200
    missing = client.get("/models/nope")
    assert missing.status_code == 404 and MODEL in missing.json()["detail"]
    assert client.get("/models/bad%20name").status_code == 422


def test_reload_loads_a_new_name_and_404s_unknown(client: Any) -> None:
    r = client.post(f"/models/{MODEL}/reload?force=true")
    assert r.status_code == 200, r.text
    assert r.json()["loaded"][0]["version"] == "1"
    assert client.post("/models/does_not_exist/reload").status_code == 404
    assert client.get("/ready").status_code == 200


def test_promote_alias_updates_serving(registered: dict[str, Any], tmp_path: Any) -> None:
    settings = make_settings(registered, tmp_path, model_name=f"{MODEL}@staging")
    from sparkpipe.tracking import Registry

    Registry(registered["cfg"].mlflow).set_alias(MODEL, "staging", "1")
    with TestClient(create_app(settings)) as c:
        assert c.post("/predict", json={"features": ROW}).json()["version"] == "1"
        r = c.post(f"/models/{MODEL}/aliases/staging", json={"version": "2"})
        assert r.status_code == 200, r.text
        assert c.post("/predict", json={"features": ROW}).json()["version"] == "2"
        assert (
            c.post("/predict", json={"model_id": f"{MODEL}@staging", "features": ROW}).json()["version"]
            == "2"
        )
        assert c.post(f"/models/{MODEL}/aliases/staging", json={"version": "99"}).status_code == 404
        assert c.post(f"/models/{MODEL}/aliases/staging", json={"version": "x"}).status_code == 422
        assert 'sparkpipe_model_swaps_total{model="churn_lr"} 1.0' in c.get("/metrics").text


def test_hot_swap_under_concurrent_requests(registered: dict[str, Any], tmp_path: Any) -> None:
    """Requests keep flowing while the alias moves and the poller swaps versions: none fails, and every
    request that starts after a swap is visible is answered by the new version (the swap is one
    assignment; a request already in flight may finish on the old one)."""
    from sparkpipe.tracking import Registry

    reg = Registry(registered["cfg"].mlflow)
    reg.set_alias(MODEL, "challenger", "1")
    settings = make_settings(
        registered, tmp_path, model_name=f"{MODEL}@challenger", reload_interval_seconds=0.05
    )
    results: list[tuple[float, int, str]] = []  # (request start, status, version)
    swapped_at: dict[str, float] = {}
    stop = threading.Event()
    with TestClient(create_app(settings)) as c:
        service = c.app.state.service

        def hammer() -> None:
            while not stop.is_set():
                started = time.monotonic()
                r = c.post("/predict", json={"instances": [ROW, ROW]})
                results.append((started, r.status_code, r.json().get("version", "")))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for step, version in enumerate(("2", "1", "2")):
                reg.set_alias(MODEL, "challenger", version)
                deadline = time.monotonic() + 30
                while service.get(None).version != version and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert service.get(None).version == version
                swapped_at[f"{step}:{version}"] = now = time.monotonic()
                while sum(1 for started, _, _ in list(results) if started > now) < 20:
                    time.sleep(0.01)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert results and all(code == 200 for _, code, _ in results), {code for _, code, _ in results}
    assert {v for _, _, v in results} == {"1", "2"}
    last_swap = swapped_at["2:2"]
    after = [v for started, _, v in results if started > last_swap]
    assert len(after) >= 20 and set(after) == {"2"}, after


# ------------------------------------------------------------------------ model cache self-repair (7)
def _lr_parquet(model_dir: Any) -> Any:
    return next(p for p in sorted(model_dir.rglob("*.parquet")) if "LogisticRegression" in str(p))


def _predict(c: Any, model_id: str | None = None) -> Any:
    body: dict[str, Any] = {"features": ROW}
    if model_id:
        body["model_id"] = model_id
    return c.post("/predict", json=body)


def test_damaged_cache_copies_are_fetched_again(registered: dict[str, Any], tmp_path: Any) -> None:
    from sparkpipe.tracking import cache_entry_ok

    settings = make_settings(registered, tmp_path, model_cache_dir=str(tmp_path / "cache"))
    with TestClient(create_app(settings)) as c:
        assert _predict(c).status_code == 200
        cached = c.app.state.service.cache_dir / MODEL / "1"
    assert cache_entry_ok(cached)
    damages = [
        lambda: _lr_parquet(cached).write_bytes(_lr_parquet(cached).read_bytes()[:40]),  # truncated stage
        lambda: (cached / "MLmodel").write_text("garbage: [\n"),
        lambda: (cached / "sparkml" / "metadata").rename(cached / "moved-away"),  # a file missing
    ]
    for damage in damages:
        damage()
        assert not cache_entry_ok(cached)
        with TestClient(create_app(settings)) as c:  # a restart served from the damaged cache
            assert c.get("/ready").status_code == 200, c.get("/ready").text
            assert _predict(c).status_code == 200
            # and the same while running: a forced reload verifies the copy again
            damage()
            assert c.post(f"/models/{MODEL}/reload?force=true").status_code == 200
            assert _predict(c).status_code == 200
        assert cache_entry_ok(cached)


def test_model_that_failed_to_load_is_503_and_recovers_when_the_registry_is_fixed(
    registered: dict[str, Any], tmp_path: Any
) -> None:
    from sparkpipe.tracking import LocalRegistryReader

    reader = LocalRegistryReader(registered["cfg"].mlflow)
    source = reader.download(reader.resolve(f"{MODEL}/1"), cache_dir=tmp_path / "probe")
    # the registry's own copy of the artifact (the one the cache copies from)
    with reader._snapshot() as conn:
        row = reader._by_version(conn, MODEL, 1)
    from sparkpipe.tracking.local import _local_dir

    artifact = _local_dir(row[3] or row[2])
    assert (artifact / "MLmodel").is_file() and source.is_dir()
    stage = _lr_parquet(artifact)
    good = stage.read_bytes()
    settings = make_settings(registered, tmp_path, model_cache_dir=str(tmp_path / "cache"))
    try:
        stage.write_bytes(good[:40])  # the registry artifact itself is broken
        with TestClient(create_app(settings)) as c:
            assert c.get("/ready").status_code == 503
            for model_id in (None, MODEL):
                r = _predict(c, model_id)
                assert r.status_code == 503, r.text
                assert "failed to load" in r.json()["detail"] and str(tmp_path) not in r.text
            stage.write_bytes(good)  # fixed in the registry
            assert c.post(f"/models/{MODEL}/reload?force=true").status_code == 200
            assert c.get("/ready").status_code == 200
            assert _predict(c).status_code == 200
    finally:
        stage.write_bytes(good)


def _cli_config(registered: dict[str, Any], tmp_path: Any) -> str:
    import yaml

    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({"mlflow": {"tracking_uri": registered["tracking_uri"]}}))
    return str(path)


def test_versions_list_their_aliases_as_strings_everywhere(
    client: Any, registered: dict[str, Any], tmp_path: Any, capsys: Any
) -> None:
    """``/models/{name}`` and ``sparkpipe models list`` show which version carries ``champion`` (MLflow's
    version search leaves aliases empty); alias targets and versions are strings in both."""
    import json

    from sparkpipe.cli import main

    entry = client.get(f"/models/{MODEL}").json()
    assert entry["aliases"]["champion"] == "1"  # other tests may add aliases; champion stays on 1
    assert all(isinstance(v, str) for v in entry["aliases"].values())
    by_version = {v["version"]: v["aliases"] for v in entry["versions"]}
    assert by_version == {
        v: sorted(a for a, target in entry["aliases"].items() if target == v) for v in ("1", "2")
    }
    assert "champion" in by_version["1"] and "champion" not in by_version["2"]
    main(["models", "list", "--json", "--config", _cli_config(registered, tmp_path)])
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed[MODEL]["aliases"] == entry["aliases"]
    assert {v["version"]: v["aliases"] for v in listed[MODEL]["versions"]} == by_version
    main(["models", "list", "--config", _cli_config(registered, tmp_path)])
    table = capsys.readouterr().out
    assert any(MODEL in line and "champion" in line for line in table.splitlines()), table


def test_promote_an_unknown_version_names_the_version(
    registered: dict[str, Any], tmp_path: Any, capsys: Any
) -> None:
    import pytest

    from sparkpipe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["models", "promote", MODEL, "99", "--config", _cli_config(registered, tmp_path)])
    assert exc.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"model '{MODEL}' has no version 99" in err and "versions: 1, 2" in err, err
    assert "unknown model" not in err
    with pytest.raises(SystemExit):
        main(["models", "promote", "no_such_model", "1", "--config", _cli_config(registered, tmp_path)])
    assert "unknown model 'no_such_model'" in " ".join(capsys.readouterr().err.split())


def test_compile_pipeline_from_a_model_uri(
    registered: dict[str, Any], tmp_path: Any, monkeypatch: Any
) -> None:
    """``compile_pipeline`` takes ``models:/name@alias`` and ``models:/name/N`` (copied into the model
    cache under the store's hash directory) as well as a directory; a bad version is named."""
    import pytest

    from sparkpipe.errors import ModelError
    from sparkpipe.scoring import compile_pipeline

    monkeypatch.chdir(tmp_path)
    uri = registered["tracking_uri"]
    champion = compile_pipeline(f"models:/{MODEL}@champion", tracking_uri=uri)
    assert [n for n, _ in champion.input_schema] == ["plan", "age", "calls"]
    assert "/churn_lr/1" in champion.source and str(tmp_path / ".sparkpipe" / "models") in champion.source
    pinned = compile_pipeline(f"models:/{MODEL}/2", tracking_uri=uri)
    assert pinned.predict([ROW]) == champion.predict([ROW])
    assert compile_pipeline(pinned.source).predict([ROW]) == pinned.predict([ROW])
    with pytest.raises(ModelError, match="has no version 7"):
        compile_pipeline(f"models:/{MODEL}/7", tracking_uri=uri)


def test_unknown_model_ids_are_not_looked_up_on_every_request(client: Any, monkeypatch: Any) -> None:
    """A registered name is loaded on its first request; an unknown one costs one registry lookup, then
    answers 404 from memory for a while, and never enters the served references or /ready."""
    service = client.app.state.service
    looked_up: list[str] = []
    resolve = service._resolve
    monkeypatch.setattr(service, "_resolve", lambda spec: looked_up.append(spec) or resolve(spec))
    for _ in range(3):
        r = client.post("/predict", json={"model_id": "ghost", "features": ROW})
        assert r.status_code == 404 and "ghost" in r.json()["detail"]
    # (the configured model may still be loading in the background: only lookups of "ghost" count)
    assert looked_up.count("ghost") == 1
    assert "ghost" not in service.specs and "ghost" not in service.errors
    assert client.get("/ready").status_code == 200
    r = client.post("/predict", json={"model_id": f"{MODEL}/2", "features": ROW})
    assert r.status_code == 200 and r.json()["version"] == "2"  # not configured: loaded on first use
    assert looked_up[-1] == f"{MODEL}/2"
