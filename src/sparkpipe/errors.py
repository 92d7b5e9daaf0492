"""One exception hierarchy for everything sparkpipe raises on purpose.

Every error message names what was wrong and how to fix it. Library errors are wrapped with
``raise SparkpipeError(...) from exc`` so the original traceback is kept for debugging.
"""

from __future__ import annotations


class SparkpipeError(Exception):
    """Base class of every error sparkpipe raises deliberately."""


class ConfigError(SparkpipeError):
    """The YAML config or a command-line override is invalid.

    Parameters
    ----------
    problems
        One ``(key_path, message)`` pair per problem, e.g. ``("model.algorithm", "unknown ...")``.
    """

    def __init__(self, problems: list[tuple[str, str]] | str, source: str | None = None):
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"invalid configuration{where}:"]
        for path, msg in problems:
            lines.append(f"  - {path}: {msg}" if path else f"  - {msg}")
        super().__init__("\n".join(lines))


class DataError(SparkpipeError):
    """Input data cannot be read or does not fit the configuration."""


class UnknownNameError(SparkpipeError, KeyError):
    """A name looked up in a registry (algorithm, metric, format, ...) does not exist."""

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class ModelError(SparkpipeError):
    """A model cannot be found, loaded, or used for the request."""


class ScoringError(SparkpipeError):
    """The JVM-free scorer cannot compile a stage or score a row."""


class UnsupportedStageError(ScoringError):
    """A fitted stage has no NumPy twin; the caller may fall back to Spark."""


class EnvironmentError_(SparkpipeError):
    """The machine lacks something sparkpipe needs (Java 17, a free port, ...)."""
