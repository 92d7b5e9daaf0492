"""The one place that talks to MLflow.

Training code uses the fluent API inside one run (:class:`Tracker`); everything else (the CLI's
``models`` commands, the prediction service) uses :class:`Registry`, a thin wrapper over
``MlflowClient``. Models are served by alias URIs (``models:/name@champion``).

The default store is a SQLite file in the working directory (``sqlite:///mlflow.db``) with artifacts in
``./mlruns``; any tracking server URI works too. ``MLFLOW_TRACKING_URI`` in the environment wins over the
config's default so a deployment can point every command at a shared server.

Modules: :mod:`~sparkpipe.tracking.store` (the tracking URI in force), :mod:`~sparkpipe.tracking.runs`
(:class:`Tracker`, training side), :mod:`~sparkpipe.tracking.registry` (:class:`Registry`, client side),
:mod:`~sparkpipe.tracking.aliases` (alias moves and their history), :mod:`~sparkpipe.tracking.cache`
(the local model cache), :mod:`~sparkpipe.tracking.local` (:class:`LocalRegistryReader`, no MLflow) and
:mod:`~sparkpipe.tracking.uris` (model URIs to local directories). Every public name is importable from
``sparkpipe.tracking``.
"""

from __future__ import annotations

from sparkpipe.core import MODEL_REF_RE as MODEL_REF_RE  # re-exported: the one parser is core.ModelRef
from sparkpipe.core import ModelRef, parse_model_ref
from sparkpipe.tracking.aliases import (
    HISTORY_TAG_PREFIX,
    AliasMove,
    alias_history,
    move_aliases,
    rollback_alias,
)
from sparkpipe.tracking.cache import (
    CACHE_MARKER,
    cache_entry_ok,
    discard_cache_entry,
    model_cache_dir,
    publish_model_dir,
)
from sparkpipe.tracking.local import LocalRegistryNotApplicable, LocalRegistryReader
from sparkpipe.tracking.registry import Registry, alias_map
from sparkpipe.tracking.runs import (
    MODEL_ARTIFACT,
    RunInfo,
    Tracker,
    flatten,
    log_scoring_run,
    pip_requirements,
)
from sparkpipe.tracking.store import configure, resolve_tracking_uri
from sparkpipe.tracking.uris import is_model_uri, local_model_dir

__all__ = [
    "CACHE_MARKER",
    "HISTORY_TAG_PREFIX",
    "MODEL_ARTIFACT",
    "MODEL_REF_RE",
    "AliasMove",
    "LocalRegistryNotApplicable",
    "LocalRegistryReader",
    "ModelRef",
    "Registry",
    "RunInfo",
    "Tracker",
    "alias_history",
    "alias_map",
    "cache_entry_ok",
    "configure",
    "discard_cache_entry",
    "flatten",
    "is_model_uri",
    "local_model_dir",
    "log_scoring_run",
    "model_cache_dir",
    "move_aliases",
    "parse_model_ref",
    "pip_requirements",
    "publish_model_dir",
    "resolve_tracking_uri",
    "rollback_alias",
]
