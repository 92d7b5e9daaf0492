"""Client side of the model registry: :class:`Registry`, a thin wrapper over ``MlflowClient`` (no active
run needed). Models are served by alias URIs (``models:/name@champion``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from sparkpipe.config import MlflowConfig
from sparkpipe.core import ModelRef, parse_model_ref
from sparkpipe.errors import ModelError
from sparkpipe.tracking.cache import model_cache_dir, publish_model_dir
from sparkpipe.tracking.store import configure


def alias_map(rm: Any) -> dict[str, str]:
    """A registered model's aliases as ``{alias: version}`` with the version as a string (MLflow gives
    ints from some stores and strings from others)."""
    return {str(a): str(v) for a, v in sorted((getattr(rm, "aliases", None) or {}).items())}


class Registry:
    """Read and steer the model registry through ``MlflowClient`` (no active run needed)."""

    def __init__(self, cfg: MlflowConfig | None = None):
        from mlflow import MlflowClient

        self.cfg = cfg or MlflowConfig()
        self.tracking_uri = configure(self.cfg)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.cfg.registry_uri)

    def resolve(self, ref: str, default_alias: str = "champion") -> ModelRef:
        """Resolve ``name``, ``name@alias``, ``name/version``, ``name/latest`` or ``models:/...``.

        A bare name means its ``default_alias`` version when that alias exists, else the latest version.
        """
        name, alias, version = parse_model_ref(ref)
        from mlflow.exceptions import MlflowException

        try:
            if alias:
                mv = self.client.get_model_version_by_alias(name, alias)
            elif version and version != "latest":
                mv = self.client.get_model_version(name, version)
            else:
                mv = None
                if version is None:
                    with contextlib.suppress(MlflowException):
                        mv = self.client.get_model_version_by_alias(name, default_alias)
                if mv is None:
                    versions = self.client.search_model_versions(f"name='{name}'")
                    if not versions:
                        raise ModelError(self._not_found(name, None, version, ref, "no versions"))
                    # search results carry no aliases: fetch the version itself so they are listed
                    mv = self.client.get_model_version(
                        name, max(versions, key=lambda v: int(v.version)).version
                    )
        except MlflowException as exc:
            raise ModelError(self._not_found(name, alias, version, ref, exc.message)) from None
        return ModelRef(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            source=mv.source,
            aliases=list(getattr(mv, "aliases", []) or []),
            tags=dict(mv.tags or {}),
        )

    def _unknown(self, name: str) -> str:
        names = [m["name"] for m in self.list_models(include_versions=False)]
        known = ", ".join(names) if names else "none registered yet (run `sparkpipe run` first)"
        return f"unknown model {name!r}; registered models: {known}"

    def _not_found(self, name: str, alias: str | None, version: str | None, ref: str, detail: str) -> str:
        """Why ``ref`` did not resolve: an unknown model, or a known model without that version/alias."""
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(name)
        except MlflowException:
            return f"{self._unknown(name)} ({ref!r}: {detail})"
        versions = sorted(
            (str(v.version) for v in self.client.search_model_versions(f"name='{name}'")), key=int
        )
        have = ", ".join(versions) or "none"
        if alias:
            aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(alias_map(rm).items())) or "none"
            return f"model {name!r} has no alias {alias!r}; its aliases: {aliases} (versions: {have})"
        if version in (None, "latest"):
            return f"model {name!r} has no versions (all deleted?); register one, e.g. with `sparkpipe run`"
        return f"model {name!r} has no version {version}; its versions: {have}"

    def list_models(self, include_versions: bool = True) -> list[dict[str, Any]]:
        """Registered models, newest version first. Versions are strings everywhere: ``"aliases"`` maps
        alias -> version (``{"champion": "1"}``) and each version lists the aliases pointing at it."""
        out = []
        for rm in self.client.search_registered_models(max_results=1000):
            aliases = alias_map(rm)
            entry: dict[str, Any] = {
                "name": rm.name,
                "aliases": aliases,
                "description": rm.description,
                "updated": rm.last_updated_timestamp,
            }
            if include_versions:
                entry["versions"] = [
                    self.version_info(mv, aliases)
                    for mv in sorted(
                        self.client.search_model_versions(f"name='{rm.name}'"),
                        key=lambda v: int(v.version),
                        reverse=True,
                    )
                ]
            out.append(entry)
        return sorted(out, key=lambda e: e["name"])

    def version_info(self, mv: Any, aliases: dict[str, str] | None = None) -> dict[str, Any]:
        """One version as a dict; ``aliases`` (the model's alias -> version map) fills the version's
        aliases, which MLflow's version search leaves empty."""
        metrics: dict[str, float] = {}
        if mv.run_id:
            with contextlib.suppress(Exception):
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
        own = set(getattr(mv, "aliases", []) or [])
        own.update(a for a, v in (aliases or {}).items() if v == str(mv.version))
        return {
            "version": str(mv.version),
            "aliases": sorted(own),
            "run_id": mv.run_id,
            "status": mv.status,
            "created": mv.creation_timestamp,
            "tags": dict(mv.tags or {}),
            "metrics": metrics,
        }

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Low level: point the alias without recording history; use :func:`move_aliases`."""
        self.client.set_registered_model_alias(name, alias, str(version))

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of a registered model (:class:`ModelError` naming the known ones if
        the name is unknown)."""
        from mlflow.exceptions import MlflowException

        try:
            return alias_map(self.client.get_registered_model(name))
        except MlflowException:
            raise ModelError(self._unknown(name)) from None

    def model_tags(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(name).tags or {})
        except MlflowException:
            raise ModelError(self._unknown(name)) from None

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(name, key, value)

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def default_cache_dir(self) -> Path:
        return model_cache_dir(self.tracking_uri)

    def download(self, ref: ModelRef, cache_dir: str | Path | None = None) -> Path:
        """Download a model version's artifacts (MLmodel + sparkml/) once; return the local directory.

        Versions are immutable, so ``<cache>/<name>/<version>`` is reused when it is complete.
        """

        def fetch(tmp: Path) -> Path:
            import mlflow.artifacts

            return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(tmp)))

        return publish_model_dir(Path(cache_dir) if cache_dir else self.default_cache_dir(), ref, fetch)
