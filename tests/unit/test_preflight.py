"""Checks made before Spark starts: the spark:// master answers, object-store paths have their Hadoop
connector, the input exists and has the target, the task fits the data (issue 12, items 2 and 13)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from sparkpipe.cli import main
from sparkpipe.config import build_config
from sparkpipe.data.io import object_store_problem, spark_hadoop_version
from sparkpipe.preflight import preflight_problems
from sparkpipe.session import master_endpoints, master_problem


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ master
def test_master_endpoints_parse_ha_urls():
    assert master_endpoints("spark://a:7077,b:7078") == [("a", 7077), ("b", 7078)]
    assert master_endpoints("spark://host") == [("host", 7077)]
    assert master_endpoints("local[*]") == [] and master_endpoints("yarn") == []


def test_unreachable_master_names_the_fix():
    port = _closed_port()
    msg = master_problem(f"spark://127.0.0.1:{port}", timeout=1.0)
    assert msg is not None
    assert f"127.0.0.1:{port}" in msg and "refused" in msg
    assert "sparkpipe cluster start" in msg and "local[*]" in msg


def test_listening_master_passes():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert master_problem(f"spark://127.0.0.1:{port}") is None
        # one live master of an HA pair is enough
        assert master_problem(f"spark://127.0.0.1:{_closed_port()},127.0.0.1:{port}") is None
    assert master_problem("local[2]") is None


# ------------------------------------------------------------------------------------ object stores
def test_s3_without_hadoop_aws_says_which_package():
    msg = object_store_problem("s3://bucket/churn.csv", "data.input_path", {}, "local[*]")
    assert msg is not None
    assert "data.input_path" in msg and "hadoop-aws" in msg and "spark.jars.packages" in msg
    version = spark_hadoop_version()
    assert version and f"org.apache.hadoop:hadoop-aws:{version}" in msg
    assert "spark.hadoop.fs.s3.impl" in msg  # s3:// also needs the S3A mapping
    assert "README" in msg


@pytest.mark.parametrize(
    ("path", "needle"),
    [("gs://b/x.parquet", "gcs-connector"), ("abfss://c@acct.dfs.core.windows.net/x", "hadoop-azure")],
)
def test_other_object_stores_name_their_connector(path, needle):
    msg = object_store_problem(path, "data.input_path", {}, "local[*]")
    assert msg is not None and needle in msg


def test_configured_connector_passes_and_s3_scheme_needs_its_mapping():
    packages = {"spark.jars.packages": "org.apache.hadoop:hadoop-aws:3.5.0"}
    assert object_store_problem("s3a://b/x.csv", "data.input_path", packages, "local[*]") is None
    msg = object_store_problem("s3://b/x.csv", "data.input_path", packages, "local[*]")
    assert msg is not None and "s3a://b/x.csv" in msg and "spark.hadoop.fs.s3.impl" in msg
    mapped = {**packages, "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}
    assert object_store_problem("s3://b/x.csv", "data.input_path", mapped, "local[*]") is None


def test_cluster_masters_local_paths_and_delta_rs_are_not_checked():
    assert object_store_problem("s3a://b/x", "k", {}, "yarn") is None
    assert object_store_problem("s3a://b/x", "k", {}, "k8s://https://api:6443") is None
    assert object_store_problem("s3a://b/t", "k", {}, "local[*]", "delta", {"deltaReader": "arrow"}) is None
    assert object_store_problem("hdfs://nn:8020/x", "k", {}, "local[*]") is None
    assert object_store_problem("/data/x.csv", "k", {}, "local[*]") is None


# ----------------------------------------------------------------------------------- input / target
def test_input_and_target_checks(tmp_path):
    csv = tmp_path / "customers.csv"
    csv.write_text("age,plan,churned\n30,pro,1\n")
    base = {"spark": {"master": "local[2]"}, "data": {"input_path": str(csv)}}

    def problems(**sections):
        raw = {**base, **sections}
        return dict(preflight_problems(build_config(raw)))

    assert problems(features={"target": "churned"}) == {}
    found = problems(features={"target": "churnd"})
    assert "did you mean 'churned'" in found["features.target"]
    found = problems(model={"algorithm": "logistic_regression"})
    assert "needs a target column" in found["features.target"] and "churned" in found["features.target"]
    assert problems(model={"algorithm": "kmeans"}) == {}  # clustering needs no target
    missing = dict(preflight_problems(build_config({"data": {"input_path": str(tmp_path / "nope.csv")}})))
    assert "does not exist" in missing["data.input_path"]


def test_regression_on_a_string_target_is_caught_from_the_parquet_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0], "plan": ["a", "b"]}), tmp_path / "d.parquet")
    raw = {"data": {"input_path": str(tmp_path / "d.parquet")}, "features": {"target": "plan"}}
    found = dict(preflight_problems(build_config({**raw, "model": {"algorithm": "linear_regression"}})))
    assert (
        "numeric target" in found["model.algorithm"]
        and "'plan' is a string column" in found["model.algorithm"]
    )
    assert preflight_problems(build_config({**raw, "model": {"algorithm": "naive_bayes"}})) == []


def test_builtin_task_must_fit_the_algorithm():
    found = dict(
        preflight_problems(
            build_config({"data": {"input_path": "builtin:taxi"}, "model": {"algorithm": "naive_bayes"}})
        )
    )
    assert (
        "regression data set" in found["model.algorithm"] and "linear_regression" in found["model.algorithm"]
    )
    assert (
        preflight_problems(
            build_config({"data": {"input_path": "builtin:taxi"}, "model": {"algorithm": "gbt"}})
        )
        == []
    )
    found = dict(preflight_problems(build_config({"data": {"input_path": "builtin:nope"}})))
    assert "iris" in found["data.input_path"]


# --------------------------------------------------------------------------------- validate / run
def test_validate_reports_every_problem_in_one_go(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        textwrap.dedent(f"""
        data:
          input_path: {tmp_path / "missing.csv"}
          validaton_split: 0.2
        features:
          outliers: {{enabled: true, treshold: 3}}
        model:
          algorithm: random_forst
        evaluation:
          classification: [acuracy]
        """)
    )
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--config", str(path)])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    for needle in (
        "data.validaton_split: unknown key",  # schema layer
        "features.outliers.treshold: unknown key",
        "did you mean 'random_forest'",  # registry layer
        "did you mean 'accuracy'",
        "data.input_path:",  # preflight layer
        "does not exist",
    ):
        assert needle in err, f"{needle!r} missing from: {err}"


def test_unreachable_master_and_s3_fail_before_spark_starts(tmp_path):
    """In a fresh interpreter: both fail with one line naming the fix, exit 2, and no JVM starts."""
    port = _closed_port()
    code = textwrap.dedent(f"""
        import sys
        from sparkpipe.cli import main
        codes = []
        for args in (["--set", "spark.master=spark://127.0.0.1:{port}"],
                     ["--set", "data.input_path=s3://bucket/churn.csv", "--set", "features.target=churned"]):
            try:
                main(["run", "--set", "data.output_path={tmp_path / "out"}", *args])
            except SystemExit as e:
                codes.append(e.code)
        from pyspark import SparkContext
        assert SparkContext._active_spark_context is None, "a SparkContext was started"
        assert SparkContext._gateway is None, "a JVM was started"
        print("codes", codes)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "codes [2, 2]" in proc.stdout
    err = " ".join(proc.stderr.split())
    assert f"no Spark master answers at spark://127.0.0.1:{port}" in err and "sparkpipe cluster start" in err
    assert "hadoop-aws" in err and "spark.jars.packages" in err
    assert "Traceback" not in proc.stderr and "java" not in proc.stderr.lower().replace("javascript", "")
