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


class InputError(ScoringError):
    """A request row cannot be scored: a field is missing, has the wrong type, or holds a value the
    fitted pipeline rejects (an unseen category under ``handleInvalid='error'``, a null where Spark
    would fail, ...). The serving layer maps it to a 4xx naming :attr:`field`.

    Parameters
    ----------
    field
        Where the problem is, e.g. ``instances[3].age`` (or just ``age`` when no row applies).
    message
        What is wrong and what was expected.
    column
        The input column name (``age``); defaults to ``field``.
    row
        The 0-based row index in the request batch, if known.
    expected
        The expected type or domain, e.g. ``double`` or ``one of 12 known labels``.
    """

    def __init__(
        self,
        field: str,
        message: str,
        *,
        column: str | None = None,
        row: int | None = None,
        expected: str | None = None,
    ):
        self.field = field
        self.column = column if column is not None else field
        self.row = row
        self.expected = expected
        self.detail = message
        super().__init__(f"{field}: {message}")

    @classmethod
    def at(
        cls,
        column: str,
        row: int | None,
        message: str,
        expected: str | None = None,
        prefix: str = "instances",
    ) -> InputError:
        """Build the error for ``column`` of row ``row`` (field ``instances[row].column``)."""
        field = column if row is None else f"{prefix}[{row}].{column}"
        return cls(field, message, column=column, row=row, expected=expected)


class EnvironmentError_(SparkpipeError):
    """The machine lacks something sparkpipe needs (Java 17, a free port, ...)."""
