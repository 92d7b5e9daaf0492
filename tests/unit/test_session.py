"""Session conf derived from the config (pure: no JVM starts here)."""

from __future__ import annotations

import os

from sparkpipe.config import SparkConfig
from sparkpipe.session import build_conf


def test_local_session_gets_a_checkpoint_dir_that_exists():
    # ALS and GBT cut their lineage only with a checkpoint dir; without one ALS at 60 iterations dies of
    # a StackOverflowError that takes the local JVM (and every later job in the process) with it
    conf = build_conf(SparkConfig(master="local[2]"))
    assert os.path.isdir(conf["spark.checkpoint.dir"])
    assert conf["spark.cleaner.referenceTracking.cleanCheckpoints"] == "true"
    assert build_conf(SparkConfig(master="local[*]"))["spark.checkpoint.dir"] == conf["spark.checkpoint.dir"]


def test_cluster_session_leaves_the_checkpoint_dir_to_the_user():
    # a cluster's checkpoint dir must be on storage every executor sees; a driver temp dir is not
    assert "spark.checkpoint.dir" not in build_conf(SparkConfig(master="spark://127.0.0.1:7077"))
    user = build_conf(SparkConfig(master="yarn", conf={"spark.checkpoint.dir": "hdfs:///tmp/ck"}))
    assert user["spark.checkpoint.dir"] == "hdfs:///tmp/ck"
    local_user = build_conf(SparkConfig(master="local[2]", conf={"spark.checkpoint.dir": "/data/ck"}))
    assert local_user["spark.checkpoint.dir"] == "/data/ck"
