"""The prediction service: FastAPI over the JVM-free scorer, with a warm Spark fallback.

Start it with ``sparkpipe serve --config FILE`` or :func:`sparkpipe.serving.app.run`; build it in code
with :func:`sparkpipe.serving.app.create_app`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServingSettings", "create_app", "run"]


def __getattr__(name: str) -> Any:  # keep ``import sparkpipe.serving`` light
    if name in ("create_app", "run"):
        from sparkpipe.serving import app

        return getattr(app, name)
    if name == "ServingSettings":
        from sparkpipe.serving.settings import ServingSettings

        return ServingSettings
    raise AttributeError(name)
