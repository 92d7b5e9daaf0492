"""JVM-free scoring: a fitted Spark PipelineModel compiled to NumPy twins.

The public entry points (:func:`compile_pipeline`, :class:`CompiledPipeline`, :func:`unsupported_stages`)
are imported lazily so that importing a twin module (which imports :mod:`sparkpipe.scoring.base`) does
not pull in the compiler and every other twin module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkpipe.scoring.compile import CompiledPipeline, compile_pipeline, unsupported_stages

__all__ = ["CompiledPipeline", "compile_pipeline", "unsupported_stages"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sparkpipe.scoring import compile as _compile

        return getattr(_compile, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
