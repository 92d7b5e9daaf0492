"""Build the SparkSession from config: local by default, any cluster master unchanged.

Locally Spark binds to loopback (``SPARK_LOCAL_IP=127.0.0.1``, ``spark.driver.host=127.0.0.1``), logs
quietly, and the Spark UI URL is logged. Cluster masters (``spark://``, ``k8s://``, ``yarn``) get the
memory/cores settings and any extra ``spark.conf`` entries passed through as they are.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

from sparkpipe.config import OptimizationConfig, SparkConfig
from sparkpipe.errors import EnvironmentError_

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Spark and its Python workers must use this interpreter (the project's venv), on the driver and in
# local executors alike.
_QUIET_LOGGERS = ("py4j", "py4j.clientserver", "py4j.java_gateway")


def java_version() -> int | None:
    """Major version of the ``java`` that Spark will use, or ``None`` when there is none."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token in out.replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and ("." in token or token.isdigit()):
            major = int(head)
            return int(token.split(".")[1]) if major == 1 else major
    return None


def check_java() -> None:
    """Raise a clear error unless Java 17+ is available (Spark 4 needs it)."""
    v = java_version()
    if v is None or v < 17:
        found = "no java on PATH or JAVA_HOME" if v is None else f"Java {v}"
        raise EnvironmentError_(
            f"Spark 4 needs Java 17 or newer, found {found}. Install it with "
            "'sudo apt-get install -y openjdk-17-jre-headless' (Debian/Ubuntu) or set JAVA_HOME."
        )


def is_local(master: str) -> bool:
    return master.startswith("local")


MASTER_PROBE_TIMEOUT = 3.0
"""Seconds a ``spark://`` master gets to accept a TCP connection before the run gives up."""


def master_endpoints(master: str) -> list[tuple[str, int]]:
    """``(host, port)`` of each master in a ``spark://`` URL (``spark://h1:7077,h2:7077`` for HA)."""
    if not master.startswith("spark://"):
        return []
    out = []
    for part in master[len("spark://") :].strip("/").split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, "7077"
        out.append((host.strip("[]"), int(port) if port.isdigit() else 7077))
    return out


def master_problem(master: str, timeout: float = MASTER_PROBE_TIMEOUT) -> str | None:
    """Why the ``spark://`` master cannot be reached, or ``None`` (other masters are not probed).

    A TCP connect with a short timeout, before any JVM starts: without it Spark retries for over a
    minute and prints pages of Java before saying the master is gone.
    """
    import socket

    endpoints = master_endpoints(master)
    if not endpoints:
        return None
    reasons = []
    for host, port in endpoints:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            reasons.append(f"{host}:{port} {reason.lower()}")
    return (
        f"spark.master: no Spark master answers at {master} ({'; '.join(reasons)}). Start one with "
        "'sparkpipe cluster start' (stop it with 'sparkpipe cluster stop'), point spark.master at a "
        "running master, or run locally with --set spark.master=local[*]"
    )


DEFAULT_DRIVER_MEMORY_MB = 2048
"""Driver heap of a local session when ``spark.driver_memory`` is not set (less on a small machine)."""


def machine_memory_mb() -> int | None:
    """Physical memory of this machine in MiB (``None`` when it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return None


def default_driver_memory() -> str:
    """The driver heap for a local session with no ``spark.driver_memory``: 2 GiB, or a quarter of the
    machine's memory when that is less (never under 512 MiB).

    The pipeline keeps nothing on the driver that grows with the rows (data is streamed, cached data
    spills to disk), so a fixed heap serves any data size; Spark's own default of 1 GiB is too tight
    for the sort and aggregation buffers of two concurrent tasks at tens of millions of rows.
    """
    total = machine_memory_mb()
    mb = DEFAULT_DRIVER_MEMORY_MB if total is None else max(512, min(DEFAULT_DRIVER_MEMORY_MB, total // 4))
    return f"{mb}m"


def shuffle_partitions_for(input_bytes: int | None, cores: int | None = None) -> int:
    """Shuffle partitions for an input of ``input_bytes`` (on disk): at least two per core, and one per
    32 MiB of input so a shuffle partition stays a few hundred MiB in memory even for compressed
    columnar files; adaptive execution coalesces the small ones."""
    cores = cores or os.cpu_count() or 2
    by_size = -(-int(input_bytes) // (32 * 1024 * 1024)) if input_bytes else 0
    return max(4, 2 * cores, by_size)


@functools.cache
def local_checkpoint_dir() -> str:
    """A checkpoint directory for this process's local session, removed when the process exits."""
    path = tempfile.mkdtemp(prefix="sparkpipe-checkpoints-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def build_conf(spark_cfg: SparkConfig, opt: OptimizationConfig | None = None) -> dict[str, str]:
    """The Spark conf entries implied by the config (pure; no Spark needed)."""
    opt = opt or OptimizationConfig()
    conf: dict[str, str] = {
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": str(opt.adaptive).lower(),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": str(spark_cfg.ui_enabled).lower(),
    }
    if is_local(spark_cfg.master):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        # local[*] on a laptop: 200 shuffle partitions is pure overhead
        conf["spark.sql.shuffle.partitions"] = str(
            spark_cfg.shuffle_partitions or shuffle_partitions_for(None)
        )
        conf["spark.driver.memory"] = spark_cfg.driver_memory or default_driver_memory()
        # iterative algorithms (ALS, GBT with checkpointInterval) cut their lineage only when a
        # checkpoint directory is set; without one a long ALS fit dies of a StackOverflowError that
        # takes the local JVM with it. A cluster needs shared storage: set spark.checkpoint.dir there.
        conf["spark.checkpoint.dir"] = local_checkpoint_dir()
        conf["spark.cleaner.referenceTracking.cleanCheckpoints"] = "true"
    elif spark_cfg.shuffle_partitions:
        conf["spark.sql.shuffle.partitions"] = str(spark_cfg.shuffle_partitions)
    if spark_cfg.master.startswith("spark://") and spark_cfg.master.split("//", 1)[1].startswith(
        ("127.", "localhost")
    ):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    if spark_cfg.driver_memory:
        conf["spark.driver.memory"] = spark_cfg.driver_memory
    if spark_cfg.executor_memory:
        conf["spark.executor.memory"] = spark_cfg.executor_memory
    if spark_cfg.executor_cores:
        conf["spark.executor.cores"] = str(spark_cfg.executor_cores)
    if spark_cfg.num_executors:
        conf["spark.executor.instances"] = str(spark_cfg.num_executors)
    if opt.broadcast_threshold is not None:
        conf["spark.sql.autoBroadcastJoinThreshold"] = str(opt.broadcast_threshold)
    for key, value in spark_cfg.conf.items():
        conf[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return conf


def get_spark(spark_cfg: SparkConfig | None = None, opt: OptimizationConfig | None = None) -> SparkSession:
    """Return the active SparkSession or build one from config.

    An already running session is reused (its static conf cannot change); runtime SQL conf such as
    shuffle partitions is applied to it.
    """
    spark_cfg = spark_cfg or SparkConfig()
    if is_local(spark_cfg.master) or "127.0.0.1" in spark_cfg.master or "localhost" in spark_cfg.master:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    conf = build_conf(spark_cfg, opt)
    if active is not None:
        for key in (
            "spark.sql.shuffle.partitions",
            "spark.sql.adaptive.enabled",
            "spark.sql.autoBroadcastJoinThreshold",
        ):
            if key in conf:
                active.conf.set(key, conf[key])
        return active

    check_java()  # a running session's JVM already proves it (each check starts `java -version`)
    unreachable = master_problem(spark_cfg.master)
    if unreachable:  # fail in seconds, before a JVM retries for a minute
        raise EnvironmentError_(unreachable)
    builder = SparkSession.builder.appName(spark_cfg.app_name).master(spark_cfg.master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # py4j / JVM start-up failures
        raise EnvironmentError_(
            f"could not start Spark with master {spark_cfg.master!r}: {exc}. Check that the master is "
            "reachable and that Java 17 is installed."
        ) from exc
    spark.sparkContext.setLogLevel(spark_cfg.log_level)
    url = spark.sparkContext.uiWebUrl
    log.info(
        "Spark %s session %r on %s%s",
        spark.version,
        spark_cfg.app_name,
        spark_cfg.master,
        f"; Spark UI: {url}" if url else "",
    )
    return spark
