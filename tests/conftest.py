"""Shared fixtures: one session-scoped local[2] SparkSession bound to loopback."""

from __future__ import annotations

import os
import sys

import pytest

# pytest-xdist workers run as ``python -c ...``, so ``__main__`` has neither ``__spec__`` nor ``__file__``;
# pyspark.sql.connect (imported by MLflow's Spark flavor) then believes it is running doctests and calls
# sys.exit(0). Give the worker's __main__ a file name.
_main = sys.modules.get("__main__")
if _main is not None and getattr(_main, "__spec__", None) is None and not hasattr(_main, "__file__"):
    _main.__file__ = "<pytest-xdist worker>"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    from sparkpipe.config import SparkConfig
    from sparkpipe.session import get_spark

    session = get_spark(
        SparkConfig(
            app_name="sparkpipe-tests",
            master="local[2]",
            shuffle_partitions=4,
            ui_enabled=False,
            log_level="ERROR",
            conf={"spark.default.parallelism": 4},
        )
    )
    yield session
    session.stop()


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    """Run the test inside a fresh temporary directory (MLflow's sqlite file, outputs, ...)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
