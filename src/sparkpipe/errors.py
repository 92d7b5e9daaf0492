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
        if len(problems) == 1:  # one problem, one line
            path, msg = problems[0]
            super().__init__(f"invalid configuration{where}: " + (f"{path}: {msg}" if path else msg))
            return
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


class ResourceError(SparkpipeError):
    """Spark ran out of a resource (memory) or its JVM died; the message names the setting to raise."""


_OOM_MARKERS = (
    "java.lang.OutOfMemoryError",
    "OutOfMemoryError: Java heap space",
    "GC overhead limit exceeded",
)
_JVM_GONE_MARKERS = ("Answer from Java side is empty", "Error while receiving", "Connection refused")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def explain_spark_failure(exc: BaseException, settings: dict[str, str] | None = None) -> ResourceError | None:
    """A :class:`ResourceError` naming the setting to change when ``exc`` is a Spark out-of-memory
    error (or the JVM died under the Python process, which is how the kernel's OOM killer shows);
    ``None`` for any other error.

    Parameters
    ----------
    exc
        The exception (its ``__cause__``/``__context__`` chain is searched too).
    settings
        The session's ``spark.master``, ``spark.driver.memory`` and ``spark.executor.memory`` when
        known, quoted in the message.
    """
    text = "\n".join(f"{type(e).__name__}: {e}" for e in _chain(exc))
    settings = settings or {}
    master = settings.get("spark.master", "")
    driver = settings.get("spark.driver.memory", "Spark's default, 1g")
    local = master.startswith("local") or not master
    if any(m in text for m in _OOM_MARKERS):
        if local:
            fix = (
                f"raise spark.driver_memory (now {driver}; in local mode the executors run inside the "
                "driver JVM), e.g. --set spark.driver_memory=4g"
            )
        else:
            executor = settings.get("spark.executor.memory", "Spark's default, 1g")
            fix = (
                f"raise spark.executor_memory (now {executor}) when a task failed, or spark.driver_memory "
                f"(now {driver}) when the driver did, e.g. --set spark.executor_memory=4g"
            )
        return ResourceError(
            f"Spark ran out of memory (java.lang.OutOfMemoryError): {fix}; or train on a sample with "
            "data.sample_fraction"
        )
    if "Py4JNetworkError" in text or (any(m in text for m in _JVM_GONE_MARKERS) and "py4j" in text.lower()):
        return ResourceError(
            "the Spark JVM stopped while the run was in progress (most often the operating system's "
            f"out-of-memory killer): check free memory, lower spark.driver_memory (now {driver}) below "
            "the machine's free memory, or train on a sample with data.sample_fraction"
        )
    return None
