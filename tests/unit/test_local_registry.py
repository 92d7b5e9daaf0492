"""``LocalRegistryReader``: the MLflow-free resolver of a local (SQLite) registry.

The store is a real MLflow registry built with ``MlflowClient`` over small fake model directories (an
``MLmodel`` file and a few nested files, logged as run artifacts), so no Spark is needed. Every resolution
is compared field by field with :meth:`sparkpipe.tracking.Registry.resolve` on the same store, and with
the version the scenario expects, so a shared mistake cannot pass either.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sparkpipe.config import MlflowConfig
from sparkpipe.errors import ModelError
from sparkpipe.tracking import LocalRegistryNotApplicable, LocalRegistryReader, ModelRef, Registry

_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_WORKSPACE", "MLFLOW_ENABLE_WORKSPACES")


@pytest.fixture(autouse=True)
def _clean_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _MLFLOW_ENV:
        monkeypatch.delenv(var, raising=False)


def _fake_model(path: Path, tag: str) -> Path:
    """A model directory shaped like a logged Spark model (content differs per ``tag``)."""
    (path / "sparkml" / "metadata").mkdir(parents=True)
    (path / "sparkml" / "stages" / "0_lr" / "data").mkdir(parents=True)
    (path / "MLmodel").write_text(f"flavors:\n  spark: {{model_data: sparkml}}\nmodel_tag: {tag}\n")
    (path / "sparkml" / "metadata" / "part-00000").write_text(
        json.dumps({"class": "PipelineModel", "tag": tag})
    )
    (path / "sparkml" / "stages" / "0_lr" / "data" / "part-0.parquet").write_bytes(bytes(range(256)) * 4)
    (path / "input_example.json").write_text(json.dumps({"columns": ["x"], "data": [[1.0]]}))
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A registry: ``churn`` 1, 2, 3 (champion -> 1, challenger and blue -> 3, version tags) and
    ``other`` 1 (no alias). Version 1 of ``churn`` is registered with ``mlflow.register_model``, the
    others with ``create_model_version``; each version has its own run and artifacts."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("local-registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("local-registry", artifact_location=(root / "mlruns").as_uri())

    def logged(tag: str) -> tuple[str, str]:
        run = client.create_run(exp)
        client.log_artifacts(run.info.run_id, str(_fake_model(root / "src" / tag, tag)), "model")
        client.set_terminated(run.info.run_id)
        return run.info.run_id, f"{run.info.artifact_uri}/model"

    client.create_registered_model("churn", tags={"team": "growth"})
    run_id, _ = logged("churn-1")
    mlflow.register_model(f"runs:/{run_id}/model", "churn", tags={"task": "classification"})
    for i in (2, 3):
        run_id, source = logged(f"churn-{i}")
        client.create_model_version("churn", source, run_id=run_id, tags={"task": "classification"})
    client.set_model_version_tag("churn", "2", "note", "retrained")
    client.set_model_version_tag("churn", "3", "note", "candidate")
    client.set_registered_model_alias("churn", "champion", "1")
    client.set_registered_model_alias("churn", "challenger", "3")
    client.set_registered_model_alias("churn", "blue", "3")
    run_id, source = logged("other-1")
    client.create_registered_model("other")
    client.create_model_version("other", source, run_id=run_id)
    return {"root": root, "db": root / "mlflow.db"}


@dataclass
class Store:
    db: Path
    uri: str
    cfg: MlflowConfig
    reader: LocalRegistryReader
    registry: Registry

    def sql(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(statement, args).fetchall()


@pytest.fixture
def store(template: dict[str, Any], tmp_path: Path) -> Store:
    """A private copy of the template store (tests may change it); artifacts stay shared, read-only."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(template["db"], db)
    uri = f"sqlite:///{db}"
    cfg = MlflowConfig(tracking_uri=uri)
    return Store(db, uri, cfg, LocalRegistryReader(cfg), Registry(cfg))


def _fields(ref: ModelRef) -> tuple[Any, ...]:
    return (ref.name, ref.version, ref.run_id, ref.source, sorted(ref.aliases), ref.tags)


def _same(store: Store, ref: str, default_alias: str = "champion") -> ModelRef:
    """Resolve with both; assert every field agrees; return the reader's answer."""
    mine = store.reader.resolve(ref, default_alias=default_alias)
    theirs = store.registry.resolve(ref, default_alias=default_alias)
    assert _fields(mine) == _fields(theirs), ref
    return mine


def _not_found(store: Store, ref: str) -> None:
    """The reader hands over; the registry's error names what is unknown: the model (listing the
    registered ones), or the version/alias of a known model (listing its versions)."""
    with pytest.raises(LocalRegistryNotApplicable):
        store.reader.resolve(ref)
    name = ref.strip().removeprefix("models:/").split("@")[0].split("/")[0]
    if name in ("churn", "other"):
        match = f"model '{name}' has no (version|alias)"
    else:
        match = "registered models: churn, other"
    with pytest.raises(ModelError, match=match):
        store.registry.resolve(ref)


# ================================================================================ resolution parity
@pytest.mark.parametrize(
    ("ref", "default_alias", "version", "aliases"),
    [
        ("churn", "champion", "1", ["champion"]),
        ("churn", "challenger", "3", ["blue", "challenger"]),
        ("churn", "no-such-alias", "3", ["blue", "challenger"]),
        ("  churn ", "champion", "1", ["champion"]),
        ("churn@champion", "champion", "1", ["champion"]),
        ("churn@challenger", "champion", "3", ["blue", "challenger"]),
        ("churn@latest", "champion", "3", ["blue", "challenger"]),
        ("churn@Latest", "champion", "3", ["blue", "challenger"]),
        ("churn/2", "champion", "2", []),
        ("churn/02", "champion", "2", []),
        ("churn/latest", "champion", "3", ["blue", "challenger"]),
        ("models:/churn", "champion", "1", ["champion"]),
        ("models:/churn/1", "champion", "1", ["champion"]),
        ("models:/churn@blue", "champion", "3", ["blue", "challenger"]),
        ("models:/churn/latest", "champion", "3", ["blue", "challenger"]),
        ("other", "champion", "1", []),
        ("other/latest", "champion", "1", []),
    ],
)
def test_resolve_matches_mlflow(store: Store, ref: str, default_alias: str, version: str, aliases: list[str]):
    got = _same(store, ref, default_alias)
    assert (got.version, sorted(got.aliases)) == (version, aliases)
    assert got.run_id and got.source.startswith("file://") and got.source.endswith("/model")
    expected_tags = {"task": "classification"} if got.name == "churn" else {}
    if got.name == "churn" and version != "1":
        expected_tags["note"] = {"2": "retrained", "3": "candidate"}[version]
    assert got.tags == expected_tags


def test_versions_have_distinct_runs_and_sources(store: Store):
    refs = [_same(store, f"churn/{v}") for v in ("1", "2", "3")]
    assert len({r.run_id for r in refs}) == len({r.source for r in refs}) == 3


def test_resolve_follows_deletes_and_alias_moves(store: Store):
    client = store.registry.client
    client.delete_model_version("churn", "3")  # soft delete: the row stays, stage Deleted_Internal
    assert store.sql("SELECT current_stage FROM model_versions WHERE name = 'churn' AND version = 3") == [
        ("Deleted_Internal",)
    ]
    for ref in ("churn/latest", "churn@latest", "models:/churn/latest"):
        assert _same(store, ref).version == "2"
    assert _same(store, "churn", default_alias="challenger").version == "2"  # alias went with v3
    _not_found(store, "churn/3")
    _not_found(store, "churn@challenger")

    client.set_registered_model_alias("churn", "champion", "2")  # promote
    got = _same(store, "churn")
    assert (got.version, got.aliases) == ("2", ["champion"])
    assert _same(store, "churn/1").aliases == []

    client.set_registered_model_alias("churn", "blue", "2")
    assert sorted(_same(store, "churn@blue").aliases) == ["blue", "champion"]

    client.delete_registered_model_alias("churn", "champion")
    got = _same(store, "churn")  # no champion: the highest live version
    assert (got.version, got.aliases) == ("2", ["blue"])

    client.delete_model_version("churn", "2")
    got = _same(store, "churn")
    assert (got.version, got.aliases) == ("1", [])
    _not_found(store, "churn@blue")


def test_all_versions_deleted(store: Store):
    store.registry.client.delete_model_version("other", "1")
    _not_found(store, "other")
    _not_found(store, "other/latest")


@pytest.mark.parametrize("ref", ["nope", "nope/latest", "nope@champion", "churn@nope", "churn/9", "churn/0"])
def test_unknown_references_go_to_mlflow(store: Store, ref: str):
    _not_found(store, ref)


def test_malformed_reference_is_the_same_error(store: Store):
    for ref in ("churn/1/2", "churn@", "", "models:/"):
        with pytest.raises(ModelError) as mine:
            store.reader.resolve(ref)
        with pytest.raises(ModelError) as theirs:
            store.registry.resolve(ref)
        assert str(mine.value) == str(theirs.value)


def test_prompts_are_left_to_mlflow(store: Store):
    store.registry.client.set_registered_model_tag("other", "mlflow.prompt.is_prompt", "true")
    with pytest.raises(LocalRegistryNotApplicable):
        store.reader.resolve("other")
    assert store.reader.resolve("churn").version == "1"


# ================================================================================ not applicable
@pytest.mark.parametrize(
    "uri",
    [
        "file:///tmp/mlruns",
        "http://localhost:5000",
        "databricks",
        "postgresql://user@localhost/mlflow",
        "sqlite://",
        "sqlite+pysqlite:////tmp/mlflow.db",
    ],
)
def test_other_stores_are_not_applicable(uri: str):
    with pytest.raises(LocalRegistryNotApplicable, match="not a local SQLite file"):
        LocalRegistryReader(MlflowConfig(tracking_uri=uri)).resolve("churn")


def test_sqlite_uri_with_options_is_not_applicable(store: Store):
    with pytest.raises(LocalRegistryNotApplicable):
        LocalRegistryReader(MlflowConfig(tracking_uri=f"{store.uri}?timeout=20")).resolve("churn")


def test_missing_database_is_not_applicable(tmp_path: Path):
    reader = LocalRegistryReader(MlflowConfig(tracking_uri=f"sqlite:///{tmp_path / 'absent.db'}"))
    with pytest.raises(LocalRegistryNotApplicable, match="does not exist"):
        reader.resolve("churn")
    assert not (tmp_path / "absent.db").exists()  # read-only: nothing created


def test_relative_sqlite_uri_is_resolved_like_mlflow(store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(store.db.parent)
    assert (
        LocalRegistryReader(MlflowConfig(tracking_uri="sqlite:///mlflow.db")).resolve("churn").version == "1"
    )


@pytest.mark.parametrize(
    "setup",
    [
        "CREATE TABLE something (x INTEGER)",
        # an old schema: the registry tables without MLflow 3's workspace columns
        "CREATE TABLE registered_models (name VARCHAR(256) PRIMARY KEY);"
        "CREATE TABLE registered_model_tags (key VARCHAR(250), value VARCHAR(5000), name VARCHAR(256));"
        "CREATE TABLE model_versions (name VARCHAR(256), version INTEGER, current_stage VARCHAR(20),"
        " source VARCHAR(500), storage_location VARCHAR(500), run_id VARCHAR(32));"
        "CREATE TABLE model_version_tags (key VARCHAR(250), value TEXT, name VARCHAR(256), version INTEGER);"
        "CREATE TABLE registered_model_aliases (alias VARCHAR(256), version INTEGER, name VARCHAR(256));"
        "INSERT INTO registered_models VALUES ('churn');"
        "INSERT INTO model_versions VALUES ('churn', 1, 'None', '/tmp/x', NULL, 'r');",
    ],
    ids=["no-registry-tables", "no-workspace-columns"],
)
def test_unexpected_schema_is_not_applicable(tmp_path: Path, setup: str):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(setup)
    with pytest.raises(LocalRegistryNotApplicable, match="lacks"):
        LocalRegistryReader(MlflowConfig(tracking_uri=f"sqlite:///{db}")).resolve("churn")


def test_corrupt_database_is_not_applicable(tmp_path: Path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LocalRegistryNotApplicable):
        LocalRegistryReader(MlflowConfig(tracking_uri=f"sqlite:///{db}")).resolve("churn")


def test_models_in_another_workspace_are_not_applicable(store: Store):
    store.sql("UPDATE registered_models SET workspace = 'team-b' WHERE name = 'other'")
    with pytest.raises(LocalRegistryNotApplicable, match="workspace"):
        store.reader.resolve("churn")


@pytest.mark.parametrize(
    ("var", "value"),
    [("MLFLOW_WORKSPACE", "team-b"), ("MLFLOW_ENABLE_WORKSPACES", "true"), ("MLFLOW_ENABLE_WORKSPACES", "1")],
)
def test_workspace_environment_is_not_applicable(
    store: Store, monkeypatch: pytest.MonkeyPatch, var: str, value: str
):
    monkeypatch.setenv(var, value)
    with pytest.raises(LocalRegistryNotApplicable, match=var):
        store.reader.resolve("churn")
    monkeypatch.setenv(var, "false" if var == "MLFLOW_ENABLE_WORKSPACES" else "")
    assert store.reader.resolve("churn").version == "1"


def test_separate_registry_is_not_applicable(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    other = f"sqlite:///{tmp_path / 'registry.db'}"
    with pytest.raises(LocalRegistryNotApplicable, match="registry URI"):
        LocalRegistryReader(MlflowConfig(tracking_uri=store.uri, registry_uri=other)).resolve("churn")
    # the same store spelled as a registry URI is fine
    same = LocalRegistryReader(MlflowConfig(tracking_uri=store.uri, registry_uri=f"sqlite:///{store.db}"))
    assert same.resolve("churn").version == "1"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", other)
    with pytest.raises(LocalRegistryNotApplicable, match="registry URI"):
        store.reader.resolve("churn")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", store.uri)
    assert store.reader.resolve("churn").version == "1"


# ================================================================================ materialising
def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_download_copies_the_complete_version(store: Store, tmp_path: Path):
    ref = store.reader.resolve("churn/2")
    mine = store.reader.download(ref, cache_dir=tmp_path / "mine")
    theirs = store.registry.download(store.registry.resolve("churn/2"), cache_dir=tmp_path / "theirs")
    assert mine == (tmp_path / "mine" / "churn" / "2").resolve() and mine.is_absolute()
    files = _tree(mine)
    assert files == _tree(theirs)  # same files, same bytes, registered_model_meta included
    assert {
        "MLmodel",
        "registered_model_meta",
        "input_example.json",
        "sparkml/metadata/part-00000",
        "sparkml/stages/0_lr/data/part-0.parquet",
    } <= set(files)
    assert b"model_tag: churn-2" in files["MLmodel"]
    assert [p.name for p in mine.parent.iterdir()] == ["2"]  # the temporary directory is gone

    # a complete entry is reused as is: versions are immutable
    store.db.unlink()
    assert store.reader.download(ref, cache_dir=tmp_path / "mine") == mine
    assert _tree(mine) == files


def test_download_of_a_non_local_source_is_not_applicable(store: Store, tmp_path: Path):
    store.registry.client.create_model_version("other", "s3://bucket/models/other", run_id=None)
    ref = _same(store, "other/latest")  # resolution itself still matches MLflow
    assert (ref.version, ref.source) == ("2", "s3://bucket/models/other")
    with pytest.raises(LocalRegistryNotApplicable, match="not a local directory"):
        store.reader.download(ref, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "other").iterdir()) == []  # nothing half-published


def test_download_of_a_directory_without_mlmodel_is_not_applicable(store: Store, tmp_path: Path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "README").write_text("no MLmodel here")
    store.registry.client.create_model_version("other", empty.as_uri(), run_id=None)
    ref = store.reader.resolve("other/2")
    with pytest.raises(LocalRegistryNotApplicable, match="not a local model directory"):
        store.reader.download(ref, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "other").iterdir()) == []


def test_reader_does_not_import_mlflow(store: Store, tmp_path: Path):
    code = f"""
import json, sys
from sparkpipe.config import MlflowConfig
from sparkpipe.tracking import LocalRegistryReader
reader = LocalRegistryReader(MlflowConfig(tracking_uri={store.uri!r}))
ref = reader.resolve("churn@challenger")
path = reader.download(ref, cache_dir={str(tmp_path / "cache")!r})
print(json.dumps({{"version": ref.version, "path": str(path),
                  "mlflow": sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mlflow"] == []
    assert result["version"] == "3"
    assert (Path(result["path"]) / "MLmodel").is_file()
