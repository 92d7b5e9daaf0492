"""Spark ML metadata written and read without Spark jobs in local mode (sparkpipe.features.mlio).

The files are Spark's layout and content, Spark reads them as its own, PySpark's own path reads what
the fast path wrote (and the other way round), and anything not on the driver's disk keeps PySpark's
path.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter

from sparkpipe.features import mlio
from sparkpipe.features.stages import CastToDouble, TimeFeatures

pytestmark = [pytest.mark.spark]


@pytest.fixture(scope="module")
def fitted(spark):
    df = spark.createDataFrame(
        [("a", 1, True, "2024-02-29 10:00:00"), ("b", 2, False, None), ("a", 3, True, "2024-03-01 00:00:00")],
        "s string, n int, b boolean, t string",
    )
    model = Pipeline(
        stages=[
            TimeFeatures(inputCols=["t"], parts=["hour", "month"]),
            CastToDouble(inputCols=["n", "b"], outputCols=["n_d", "b_d"]),
            StringIndexer(inputCol="s", outputCol="s_i"),
            VectorAssembler(inputCols=["n_d", "b_d", "s_i"], outputCol="features", handleInvalid="keep"),
        ]
    ).fit(df)
    return df, model


def _jobs(spark) -> int:
    v = spark.sparkContext._jsc.sc().dagScheduler().nextJobId()
    return v if isinstance(v, int) else v.get()


def _python_metadata_dirs(root: Path) -> list[Path]:
    """The metadata directories PySpark writes from Python: the pipeline's and each Python stage's."""
    dirs = [root / "metadata"]
    for stage in sorted((root / "stages").iterdir()):
        meta = json.loads(next((stage / "metadata").glob("part-*")).read_text().splitlines()[0])
        if meta["class"].startswith("sparkpipe."):
            dirs.append(stage / "metadata")
    return dirs


@pytest.fixture
def pyspark_paths(monkeypatch):
    """PySpark's own metadata save and load, as without :func:`mlio.install`."""

    def use() -> None:
        monkeypatch.setattr(DefaultParamsWriter, "saveMetadata", staticmethod(mlio._ORIGINAL["save"]))
        monkeypatch.setattr(DefaultParamsReader, "loadMetadata", staticmethod(mlio._ORIGINAL["load"]))
        monkeypatch.setattr(mlio, "write_text_line", lambda *args: False)  # sparkpipe's stages: the JVM

    return use


def test_local_saves_write_sparks_layout_without_jobs_and_both_paths_read_it(
    spark, fitted, tmp_path, pyspark_paths
):
    df, model = fitted
    j0 = _jobs(spark)
    model.save(str(tmp_path / "fast"))
    fast_jobs = _jobs(spark) - j0
    for meta in _python_metadata_dirs(tmp_path / "fast"):
        assert sorted(p.name for p in meta.iterdir()) == ["_SUCCESS", "part-00000"]
        line = (meta / "part-00000").read_text(encoding="utf-8")
        assert line.endswith("\n") and line.count("\n") == 1
        # Spark reads the file as its own text dataset
        assert spark.read.text(str(meta)).first()[0] == line.rstrip("\n")
    j0 = _jobs(spark)
    fast = PipelineModel.load(str(tmp_path / "fast"))
    fast_load_jobs = _jobs(spark) - j0

    pyspark_paths()
    j0 = _jobs(spark)
    model.save(str(tmp_path / "pyspark"))
    assert _jobs(spark) - j0 >= fast_jobs + 3  # the pipeline's and two Python stages' metadata writes
    j0 = _jobs(spark)
    by_pyspark = PipelineModel.load(str(tmp_path / "fast"))  # PySpark reads what the fast path wrote
    assert _jobs(spark) - j0 >= fast_load_jobs + 7  # pipeline + 4 class peeks + 2 Python stages
    pairs = zip(
        _python_metadata_dirs(tmp_path / "fast"), _python_metadata_dirs(tmp_path / "pyspark"), strict=True
    )
    for a, b in pairs:
        ours = json.loads((a / "part-00000").read_text())
        theirs = json.loads(spark.read.text(str(b)).first()[0])
        assert {k: v for k, v in ours.items() if k != "timestamp"} == {
            k: v for k, v in theirs.items() if k != "timestamp"
        }
    expected = model.transform(df).collect()
    assert fast.transform(df).collect() == expected
    assert by_pyspark.transform(df).collect() == expected
    mlio.install()  # idempotent: the originals stay the originals
    assert mlio._ORIGINAL["save"] is not mlio._save_metadata


def test_the_fast_load_reads_what_pyspark_wrote(spark, fitted, tmp_path, monkeypatch, pyspark_paths):
    df, model = fitted
    pyspark_paths()
    model.save(str(tmp_path / "m"))
    monkeypatch.undo()  # the fast path again
    assert DefaultParamsReader.loadMetadata is mlio._load_metadata
    reloaded = PipelineModel.load(str(tmp_path / "m"))
    assert [s.uid for s in reloaded.stages] == [s.uid for s in model.stages]
    assert reloaded.transform(df).collect() == model.transform(df).collect()


def test_what_is_not_the_drivers_disk_keeps_pysparks_path(spark, tmp_path):
    assert mlio.local_dir(spark, "hdfs://namenode:8020/models/m") is None
    assert mlio.local_dir(spark, "s3a://bucket/models/m") is None
    assert mlio.local_dir(spark, f"file://{tmp_path}/m") == tmp_path / "m"
    assert mlio.local_dir(spark, str(tmp_path / "m")) == tmp_path / "m"
    cluster = SimpleNamespace(master="spark://127.0.0.1:7077", _jsc=None)
    assert mlio.local_dir(cluster, str(tmp_path / "m")) is None
    assert mlio.local_dir(SimpleNamespace(), str(tmp_path)) is None  # no SparkContext (Spark Connect)
    # an existing directory, several or compressed part files: Spark's own write and read decide
    (tmp_path / "there").mkdir()
    assert not mlio.write_text_line(spark, str(tmp_path / "there"), "{}")
    assert mlio.write_text_line(spark, str(tmp_path / "new"), '{"a":"é"}')
    assert mlio.read_text_line(spark, str(tmp_path / "new")) == '{"a":"é"}'
    (tmp_path / "new" / "part-00001").write_text("{}\n")
    assert mlio.read_text_line(spark, str(tmp_path / "new")) is None
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "part-00000.txt.gz").write_bytes(b"\x1f\x8b")
    assert mlio.read_text_line(spark, str(tmp_path / "gz")) is None
    assert mlio.read_text_line(spark, str(tmp_path / "missing")) is None
