"""Shared fixtures: one session-scoped local[2] SparkSession bound to loopback."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

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
# Every JVM the suite's subprocesses start (`sparkpipe run` as a user types it, servers, jobs) gets the
# same JIT setting as this process's own session (see ``spark`` below): C1 only. Their jobs are short
# and on small data, where C2's compilations cost more CPU than they save (measured: the default
# `sparkpipe run` 53 -> 39 CPU-seconds, the 200k-row scale test 86 -> 66), and the suite is CPU-bound
# on two cores. spark-submit adds SPARK_SUBMIT_OPTS to the driver JVM's options; behaviour is the same.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -Xss4m"
os.environ.setdefault("SPARK_SUBMIT_OPTS", TEST_JVM_OPTIONS)
# the standalone master and worker daemons the cluster tests start (spark-class reads this for them)
os.environ.setdefault("SPARK_DAEMON_JAVA_OPTS", TEST_JVM_OPTIONS)


# --------------------------------------------------------------------------- the order files run in
# `make test` hands whole files to two pytest-xdist workers, each taking the next file from one queue
# when it runs short (--dist loadfile --no-loadscope-reorder). The queue is sorted longest first, by each
# file's seconds in tests/durations.json, so the long end-to-end files start early and the tail is short
# files: both workers finish within seconds of each other. (xdist's own order, most tests per file first,
# left the cluster and notebook files with a few long tests each for last.) A file missing from the table
# ranks by its marks. Refresh the table after adding or reshaping slow tests:
#   .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --update-durations
DURATIONS = Path(__file__).with_name("durations.json")
_SECONDS: dict[str, float] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-durations",
        action="store_true",
        help=f"write each test file's total seconds of this run to {DURATIONS.name} (the run order)",
    )


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        known = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        known = {}
    seconds: dict[str, float] = {}
    for item in items:  # a file not in the table: 30 s if a test is marked slow, 5 s if one needs Spark
        file = _file_of(item.nodeid)
        guess = 30.0 if item.get_closest_marker("slow") else 5.0 if item.get_closest_marker("spark") else 1.0
        seconds[file] = known.get(file, max(seconds.get(file, 0.0), guess))
    # stable: each file's tests stay together and in their own order
    items.sort(key=lambda item: -seconds[_file_of(item.nodeid)])


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    file = _file_of(report.nodeid)
    _SECONDS[file] = _SECONDS.get(file, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.getoption("--update-durations") and not hasattr(session.config, "workerinput"):
        table = {f: round(s, 1) for f, s in sorted(_SECONDS.items(), key=lambda kv: -kv[1])}
        DURATIONS.write_text(json.dumps(table, indent=1) + "\n")


# this process's migrated empty MLflow database (built on first use) and MLflow's own initializer
_MLFLOW_TEMPLATE: dict[str, Any] = {}


def _mlflow_template() -> Path:
    template = _MLFLOW_TEMPLATE["path"]
    if not template.exists():
        import sqlalchemy

        scratch = sqlalchemy.create_engine(f"sqlite:///{template}")
        _MLFLOW_TEMPLATE["real"](scratch)
        scratch.dispose()
    return template


@pytest.fixture(scope="session", autouse=True)
def _migrate_mlflow_sqlite_once(tmp_path_factory: pytest.TempPathFactory):
    """A new MLflow SQLite store runs every alembic migration (~2.5 CPU-seconds), and the suite creates
    dozens of stores. Migrate one empty database per test process and give every new SQLite store a
    copy of it: the same tables and ``alembic_version`` row the migrations write (the store then adds
    its default experiment as usual). Other databases, and MLflow versions without these internals,
    take MLflow's own path. A subprocess migrates its own store unless the test seeds the file first
    (:func:`seed_mlflow_db`)."""
    try:
        import mlflow.store.db.utils as db_utils
        import mlflow.store.model_registry.sqlalchemy_store as registry_store
    except ImportError:
        yield
        return
    real = db_utils._initialize_tables

    def initialize_from_template(engine):
        path = engine.url.database
        if engine.dialect.name != "sqlite" or not path or path == ":memory:":
            return real(engine)
        template = _mlflow_template()
        engine.dispose()  # no pooled connection sees the file change under it
        src, dst = sqlite3.connect(template), sqlite3.connect(path)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()

    _MLFLOW_TEMPLATE.update(path=tmp_path_factory.mktemp("mlflow-template") / "mlflow.db", real=real)
    db_utils._initialize_tables = initialize_from_template
    registry_store._initialize_tables = initialize_from_template
    yield
    db_utils._initialize_tables = real
    registry_store._initialize_tables = real
    _MLFLOW_TEMPLATE.clear()


def _seed_mlflow_db(path: Path) -> None:
    if _MLFLOW_TEMPLATE and not path.exists():
        shutil.copyfile(_mlflow_template(), path)


@pytest.fixture(scope="session")
def seed_mlflow_db():
    """``seed_mlflow_db(path)``: give the SQLite store a subprocess will open at ``path`` (not created
    yet) the migrated schema, so the subprocess skips the migrations."""
    return _seed_mlflow_db


def _env_without_java(tmp_path: Path, tracking_uri: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SPARKPIPE_", "PYSPARK_"))}
    for var in ("JAVA_HOME", "SPARK_HOME"):
        env.pop(var, None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    path = []
    for i, d in enumerate([str(Path(sys.executable).parent), *env.get("PATH", "").split(os.pathsep)]):
        if d and (Path(d) / "java").exists():
            shadow = tmp_path / f"path{i}"
            shadow.mkdir()
            for f in Path(d).iterdir():
                if not f.name.startswith("java"):
                    (shadow / f.name).symlink_to(f)
            d = str(shadow)
        path.append(d)
    env["PATH"] = os.pathsep.join(path)
    assert shutil.which("java", path=env["PATH"]) is None
    return env


@pytest.fixture(scope="session")
def without_java():
    """``without_java(tmp_path, tracking_uri=None)``: the environment of a process that cannot start a
    JVM: no MLflow/sparkpipe/PySpark settings (but ``MLFLOW_TRACKING_URI`` when given), no
    JAVA_HOME/SPARK_HOME, and every PATH directory holding ``java`` replaced by a copy of it (symlinks
    in ``tmp_path``) without ``java``."""
    return _env_without_java


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
            # C1 only: the suite's JVM runs many short, different jobs on tiny data, where C2's
            # compilations cost more CPU than their faster code saves (measured: a JVM start plus a
            # small LR and GBT fit took 90 CPU-seconds with C2, 58 without). Behaviour is the same;
            # subprocesses get it through SPARK_SUBMIT_OPTS (above). C1's frames are larger, so task
            # threads get a 4 MiB stack: with the default 1 MiB, deserializing the tasks of a
            # 10-iteration ALS overflowed it and the StackOverflowError killed the JVM.
            # Frames built from Python rows (createDataFrame) are one partition: the tests' frames have
            # a few hundred rows, where every extra task per job is pure overhead (the twin and
            # contract tests: 177 s -> 145 s). Shuffles keep 4 partitions, so aggregations still merge
            # partial results, and tests about partitioning set their own.
            # Queries are interpreted, not compiled to Java: on a few hundred rows, generating and
            # compiling each new query's code costs more than running it (the suite: 1,366 -> 1,217
            # busy CPU-seconds, 743 -> 666 s). Results are the same by Spark's design (it falls back
            # to the interpreter whenever codegen fails, and tests both paths). Spark's generated code
            # still runs in the contract battery and the feature-parity file (``spark_codegen``:
            # every registered stage and algorithm against its NumPy twin), and in every Spark of its
            # own a test starts (the cluster, scale, notebook and stream runs).
            conf={
                "spark.default.parallelism": 1,
                "spark.driver.extraJavaOptions": TEST_JVM_OPTIONS,  # also when SPARK_SUBMIT_OPTS was set
                **INTERPRETED,
            },
        )
    )
    yield session
    session.stop()


INTERPRETED = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
GENERATED = {"spark.sql.codegen.wholeStage": "true", "spark.sql.codegen.factoryMode": "FALLBACK"}
"""The session's setting (``spark``) and Spark's default: whole-stage code generation, and generated
expression code with the interpreter as fallback."""


@pytest.fixture(scope="module")
def spark_codegen(spark):
    """The session with Spark's default code generation for one module's tests (``spark`` interprets)."""
    for key, value in GENERATED.items():
        spark.conf.set(key, value)
    yield spark
    for key, value in INTERPRETED.items():
        spark.conf.set(key, value)


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    """Run the test inside a fresh temporary directory (MLflow's sqlite file, outputs, ...)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
