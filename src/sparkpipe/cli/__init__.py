"""The ``sparkpipe`` command line: thin commands that parse, call a service function and format.

This package is the only place that prints (through ``rich``); everything else logs. The Typer apps,
consoles and shared options are in :mod:`~sparkpipe.cli.common`, the pipeline commands in
:mod:`~sparkpipe.cli.pipeline`, the ``data``/``models``/``monitor``/``cluster`` groups in
:mod:`~sparkpipe.cli.groups`; :func:`main` is the console-script entry point.
"""

from __future__ import annotations

import logging
import sys

import typer

from sparkpipe.cli import groups as groups  # registers the data, models, monitor and cluster commands
from sparkpipe.cli import pipeline as pipeline  # registers run, train, compare, evaluate, ...
from sparkpipe.cli.common import app, console, err_console
from sparkpipe.errors import ConfigError, SparkpipeError, explain_spark_failure

__all__ = ["app", "console", "err_console", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: friendly errors, non-zero exit codes."""
    logging.captureWarnings(True)
    try:
        app(args=argv, standalone_mode=False)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except SparkpipeError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own formatting
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        resource = explain_spark_failure(exc, _spark_settings())
        if resource is not None:
            logging.getLogger(__name__).debug("Spark failure", exc_info=exc)
            err_console.print(f"[red]error:[/red] {resource}")
            sys.exit(1)
        raise


def _spark_settings() -> dict[str, str]:
    """The running session's master and memory settings (empty when there is none)."""
    if "pyspark" not in sys.modules:
        return {}
    try:
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context
        if sc is None:
            return {}
        conf = sc.getConf()
        keys = ("spark.master", "spark.driver.memory", "spark.executor.memory")
        return {k: conf.get(k) for k in keys if conf.get(k)}
    except Exception:  # the JVM may be gone
        return {}
