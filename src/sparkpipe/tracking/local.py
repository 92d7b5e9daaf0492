"""A read-only, MLflow-free view of a local registry (``sqlite:///`` store, local artifacts) that the
prediction service uses to start and poll aliases in milliseconds."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sparkpipe.config import MlflowConfig
from sparkpipe.core import ModelRef, parse_model_ref
from sparkpipe.tracking.cache import model_cache_dir, publish_model_dir
from sparkpipe.tracking.store import resolve_tracking_uri


class LocalRegistryNotApplicable(Exception):
    """:class:`LocalRegistryReader` cannot answer: use the MLflow :class:`Registry` instead.

    Raised for a store or setup the reader does not handle (not a SQLite file, unexpected schema, a
    workspace, a separate registry URI, a non-local artifact location, any ``sqlite3`` error) and for a
    reference it cannot find, so MLflow reports unknown names, aliases and versions as it always has.
    """


_WORKSPACE = "default"  # MLflow's DEFAULT_WORKSPACE_NAME; single-tenant stores keep every row there
_DELETED_STAGE = "Deleted_Internal"  # MLflow's STAGE_DELETED_INTERNAL: a soft-deleted version
_PROMPT_TAG = "mlflow.prompt.is_prompt"  # prompts live in the same tables; MLflow hides them as models
_REGISTRY_COLUMNS = {
    "registered_models": {"name", "workspace"},
    "registered_model_tags": {"key", "name", "workspace"},
    "model_versions": {
        "name",
        "version",
        "current_stage",
        "source",
        "storage_location",
        "run_id",
        "workspace",
    },
    "model_version_tags": {"key", "value", "name", "version", "workspace"},
    "registered_model_aliases": {"alias", "version", "name", "workspace"},
}
_VERSION_COLUMNS = "version, run_id, source, storage_location"
_LIVE_VERSION = f"workspace = ? AND name = ? AND current_stage != '{_DELETED_STAGE}'"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false")


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a plain ``sqlite:///`` URI (absolute); ``None`` for anything else."""
    if not uri.startswith("sqlite:///") or any(c in uri for c in "?#%"):
        return None
    path = uri.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path).resolve()


def _local_dir(location: str | None) -> Path:
    """The directory of a ``file://`` URI or an absolute local path; not applicable otherwise."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(location or "")
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and not (parts.query or parts.fragment):
        path = Path(unquote(parts.path))
    elif not parts.scheme and location:
        path = Path(location)
    else:
        raise LocalRegistryNotApplicable(f"artifact location {location!r} is not a local directory")
    if not path.is_absolute() or not (path / "MLmodel").is_file():
        raise LocalRegistryNotApplicable(f"artifact location {location!r} is not a local model directory")
    return path


class LocalRegistryReader:
    """Read-only, MLflow-free view of a local MLflow registry: ``sqlite:///`` store, local artifacts.

    :meth:`resolve` answers exactly what :meth:`Registry.resolve` answers, by reading MLflow's tables with
    the standard library's ``sqlite3`` (opened read-only) and applying the filters of MLflow's
    ``SqlAlchemyStore``; :meth:`download` copies a version's local artifact directory into the model
    cache as :meth:`Registry.download` would. Importing MLflow costs seconds; this costs milliseconds,
    so the prediction service starts and polls aliases without it.

    Anything it does not handle raises :class:`LocalRegistryNotApplicable` and the caller falls back to
    :class:`Registry`. The reader keeps no connection open, so one instance may be shared by threads.
    """

    def __init__(self, cfg: MlflowConfig | None = None):
        self.cfg = cfg or MlflowConfig()
        self.tracking_uri = resolve_tracking_uri(self.cfg)

    # ------------------------------------------------------------------ applicability
    def _db_path(self) -> Path:
        """The SQLite file to read, after checking nothing makes MLflow resolve differently."""
        db = _sqlite_path(self.tracking_uri)
        if db is None:
            raise LocalRegistryNotApplicable(f"tracking URI {self.tracking_uri!r} is not a local SQLite file")
        # MlflowClient's registry: the configured URI, else MLFLOW_REGISTRY_URI, else the tracking URI
        registry = self.cfg.registry_uri or os.environ.get("MLFLOW_REGISTRY_URI")
        if registry and registry != self.tracking_uri and _sqlite_path(registry) != db:
            raise LocalRegistryNotApplicable(f"registry URI {registry!r} is not the tracking store")
        for var in ("MLFLOW_ENABLE_WORKSPACES", "MLFLOW_WORKSPACE"):
            if _env_flag(var):
                raise LocalRegistryNotApplicable(f"{var} is set (workspaces are resolved by MLflow)")
        if not db.is_file():
            raise LocalRegistryNotApplicable(f"{db} does not exist")
        return db

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection inside one read transaction, after checking the schema."""
        db = self._db_path()
        try:
            conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5, isolation_level=None)
        except sqlite3.Error as exc:
            raise LocalRegistryNotApplicable(f"cannot open {db} read-only: {exc}") from None
        try:
            conn.execute("BEGIN")
            for table, needed in _REGISTRY_COLUMNS.items():
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if not needed <= have:
                    raise LocalRegistryNotApplicable(f"{db}: table {table} lacks {sorted(needed - have)}")
            # MLflow (workspaces disabled) refuses to open a store with rows in another workspace
            webhooks = any(row[1] == "workspace" for row in conn.execute("PRAGMA table_info(webhooks)"))
            for table in ("registered_models", "webhooks") if webhooks else ("registered_models",):
                if conn.execute(
                    f"SELECT 1 FROM {table} WHERE workspace IS NOT NULL AND workspace != ? LIMIT 1",
                    (_WORKSPACE,),
                ).fetchone():
                    raise LocalRegistryNotApplicable(f"{db}: {table} outside the {_WORKSPACE!r} workspace")
            yield conn
        except sqlite3.Error as exc:
            raise LocalRegistryNotApplicable(f"reading {db} failed: {exc}") from None
        finally:
            conn.close()

    # ------------------------------------------------------------------ resolution
    def resolve(self, ref: str, default_alias: str = "champion") -> ModelRef:
        """Resolve ``ref`` like :meth:`Registry.resolve`; raise :class:`LocalRegistryNotApplicable` when
        the store is not one this reader handles or the reference is not found there."""
        name, alias, version = parse_model_ref(ref)
        with self._snapshot() as conn:
            exists = conn.execute(
                "SELECT 1 FROM registered_models WHERE workspace = ? AND name = ?", (_WORKSPACE, name)
            ).fetchone()
            prompt = conn.execute(
                "SELECT 1 FROM registered_model_tags WHERE workspace = ? AND name = ? AND key = ? "
                "UNION ALL "
                "SELECT 1 FROM model_version_tags WHERE workspace = ? AND name = ? AND key = ? LIMIT 1",
                (_WORKSPACE, name, _PROMPT_TAG) * 2,
            ).fetchone()
            if not exists or prompt:
                raise LocalRegistryNotApplicable(f"no registered model {name!r} in {self.tracking_uri}")
            if alias:
                row = self._by_alias(conn, name, alias)
            elif version and version != "latest":
                row = self._by_version(conn, name, int(version))
            else:
                if "'" in name:  # Registry's search filter cannot quote it; let MLflow say so
                    raise LocalRegistryNotApplicable(f"model name {name!r} contains a quote")
                row = self._by_alias(conn, name, default_alias) if version is None else None
                row = row or self._latest(conn, name)
            if row is None:
                raise LocalRegistryNotApplicable(f"{ref!r} not found in {self.tracking_uri}")
            number, run_id, source, _ = row
            aliases = [
                a
                for (a,) in conn.execute(
                    "SELECT alias FROM registered_model_aliases "
                    "WHERE workspace = ? AND name = ? AND version = ? ORDER BY alias",
                    (_WORKSPACE, name, number),
                )
            ]
            tags = dict(
                conn.execute(
                    "SELECT key, value FROM model_version_tags "
                    "WHERE workspace = ? AND name = ? AND version = ?",
                    (_WORKSPACE, name, number),
                ).fetchall()
            )
        return ModelRef(
            name=name, version=str(number), run_id=run_id, source=source, aliases=aliases, tags=tags
        )

    def model_names(self) -> list[str]:
        """Registered model names (prompts excluded), most recently updated first."""
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT name FROM registered_models WHERE workspace = ? AND name NOT IN "
                "(SELECT name FROM registered_model_tags WHERE workspace = ? AND key = ?) "
                "ORDER BY last_updated_time DESC, name",
                (_WORKSPACE, _WORKSPACE, _PROMPT_TAG),
            ).fetchall()
        return [name for (name,) in rows]

    @staticmethod
    def _by_version(conn: sqlite3.Connection, name: str, version: int) -> tuple[Any, ...] | None:
        if version >= 2**63:  # beyond SQLite's INTEGER: no such version
            return None
        return conn.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE {_LIVE_VERSION} AND version = ?",
            (_WORKSPACE, name, version),
        ).fetchone()

    @staticmethod
    def _latest(conn: sqlite3.Connection, name: str) -> tuple[Any, ...] | None:
        return conn.execute(
            f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE {_LIVE_VERSION} "
            "ORDER BY version DESC LIMIT 1",
            (_WORKSPACE, name),
        ).fetchone()

    def _by_alias(self, conn: sqlite3.Connection, name: str, alias: str) -> tuple[Any, ...] | None:
        if alias.lower() == "latest":  # reserved by MLflow: the highest live version
            return self._latest(conn, name)
        row = conn.execute(
            "SELECT version FROM registered_model_aliases WHERE workspace = ? AND name = ? AND alias = ?",
            (_WORKSPACE, name, alias),
        ).fetchone()
        return self._by_version(conn, name, row[0]) if row else None

    # ------------------------------------------------------------------ artifacts
    def default_cache_dir(self) -> Path:
        return model_cache_dir(self.tracking_uri)

    def download(self, ref: ModelRef, cache_dir: str | Path | None = None) -> Path:
        """Copy a version's local model directory into ``<cache>/<name>/<version>`` once (atomically, as
        :meth:`Registry.download`); return it. Not applicable unless the version's artifact location is
        a local directory with an ``MLmodel`` file."""

        def fetch(tmp: Path) -> Path:
            with self._snapshot() as conn:
                row = self._by_version(conn, ref.name, int(ref.version))
            if row is None:
                raise LocalRegistryNotApplicable(f"{ref.uri} not found in {self.tracking_uri}")
            _, _, source, storage_location = row
            src = _local_dir(storage_location or source)  # MLflow's get_model_version_download_uri
            out = tmp / "model"
            shutil.copytree(src, out)
            # what MLflow's ModelsArtifactRepository adds to a downloaded registered model
            import yaml

            meta = {"model_name": ref.name, "model_version": ref.version}
            (out / "registered_model_meta").write_text(
                yaml.safe_dump(meta, default_flow_style=False, allow_unicode=True), encoding="utf-8"
            )
            return out

        return publish_model_dir(Path(cache_dir) if cache_dir else self.default_cache_dir(), ref, fetch)
