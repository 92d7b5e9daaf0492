"""Reading (with quarantine and lineage), format detection and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from sparkpipe.config import DataConfig
from sparkpipe.data.io import (
    detect_format,
    get_reader,
    input_fingerprint,
    read_dataset,
    read_quarantine,
    require_columns,
    write_dataset,
)
from sparkpipe.errors import DataError, UnknownNameError

pytestmark = pytest.mark.spark


def _cfg(tmp_path: Path, input_path: str | Path, **kw) -> DataConfig:
    return DataConfig(input_path=str(input_path), output_path=str(tmp_path / "out"), **kw)


# -------------------------------------------------------------------------------------- CSV / JSON
CSV_TEXT = (
    "age,plan,ts\n"
    "31,basic,2024-01-01 10:00:00\n"
    "abc,premium,2024-01-02 11:00:00\n"  # bad INT
    "45,standard\n"  # too few fields
    "52,basic,2024-01-03 09:00:00,extra\n"  # too many fields
    "28,enterprise,not-a-time\n"  # bad TIMESTAMP
    ",standard,\n"  # empty values are nulls, not malformed
    '60,"basic, legacy",2024-01-04 08:30:00\n'  # quoted separator is fine
    "19,premium,2024-01-05 12:00:00\n"
)


def test_csv_malformed_rows_are_quarantined_not_lost(spark, tmp_path):
    src = tmp_path / "customers.csv"
    src.write_text(CSV_TEXT)
    cfg = _cfg(tmp_path, src, format="csv", schema="age INT, plan STRING, ts TIMESTAMP")
    res = read_dataset(spark, cfg)
    data_lines = len(CSV_TEXT.strip().splitlines()) - 1
    assert res.quarantined == 4
    assert res.df.count() == 4
    assert res.df.count() + res.quarantined == data_lines
    assert res.df.columns == ["age", "plan", "ts"]
    assert sorted(r.plan for r in res.df.collect()) == ["basic", "basic, legacy", "premium", "standard"]
    # the quarantine holds the raw text and a reason for each row
    assert res.quarantine_path and res.quarantine_path.startswith(str(tmp_path / "out" / "quarantine"))
    rows = {r.raw: r for r in read_quarantine(spark, res.quarantine_path).collect()}
    assert set(rows) == {
        "abc,premium,2024-01-02 11:00:00",
        "45,standard",
        "52,basic,2024-01-03 09:00:00,extra",
        "28,enterprise,not-a-time",
    }
    assert "column 'age' (int): cannot convert 'abc'" in rows["abc,premium,2024-01-02 11:00:00"].reason
    assert "got 2, expected 3" in rows["45,standard"].reason
    assert "got 4, expected 3" in rows["52,basic,2024-01-03 09:00:00,extra"].reason
    assert "column 'ts'" in rows["28,enterprise,not-a-time"].reason
    assert all(r.source_file.endswith("customers.csv") for r in rows.values())
    # lineage
    lin = res.lineage
    assert lin["format"] == "csv" and lin["row_count"] == 4 and lin["quarantined_count"] == 4
    assert lin["rows_read"] == data_lines
    assert lin["columns"] == {"age": "int", "plan": "string", "ts": "timestamp"}
    assert len(lin["fingerprint"]) == 64
    # a later query on a subset of columns sees the same good rows (the split is fixed once)
    assert res.df.select("plan").count() == 4


def test_csv_inferred_schema_still_catches_field_count(spark, tmp_path):
    src = tmp_path / "inferred.csv"
    src.write_text("x,y\n1,2.5\n2,3.5\n3\n4,4.5,9\n")
    res = read_dataset(spark, _cfg(tmp_path, src))  # format auto, schema inferred
    assert res.lineage["format"] == "csv"
    assert res.lineage["columns"] == {"x": "int", "y": "double"}
    assert res.df.count() == 2 and res.quarantined == 2


def test_csv_quarantine_disabled_raises_with_fix(spark, tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("a,b\n1,2\nx,3\n")
    with pytest.raises(DataError, match=r"data\.quarantine: true"):
        read_dataset(spark, _cfg(tmp_path, src, schema="a INT, b INT", quarantine=False))


def test_json_malformed_lines_quarantined(spark, tmp_path):
    lines = [
        '{"age": 31, "plan": "basic"}',
        '{"age": "abc", "plan": "premium"}',
        "{this is not json",
        '{"age": 40, "plan": "standard"}',
        '{"age": 4.5, "plan": "basic"}',
        '{"plan": "enterprise"}',
    ]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n")
    res = read_dataset(spark, _cfg(tmp_path, src, schema="age INT, plan STRING"))
    assert res.lineage["format"] == "json"
    assert res.quarantined == 3
    assert res.df.count() == 3
    assert res.df.count() + res.quarantined == len(lines)
    reasons = {r.raw: r.reason for r in read_quarantine(spark, res.quarantine_path).collect()}
    assert reasons["{this is not json"] == "not valid JSON"
    assert "column 'age' (int): cannot convert 'abc'" in reasons['{"age": "abc", "plan": "premium"}']


def test_json_inferred_schema_with_malformed_line(spark, tmp_path):
    src = tmp_path / "inf.json"
    src.write_text('{"a": 1, "b": "x"}\n{broken\n{"a": 2, "b": "y"}\n')
    res = read_dataset(spark, _cfg(tmp_path, src))
    assert res.df.columns == ["a", "b"]
    assert res.df.count() == 2 and res.quarantined == 1


# ------------------------------------------------------------------------------- other formats
def test_parquet_orc_json_round_trips_and_lineage(spark, tmp_path):
    df = spark.createDataFrame([(i, f"c{i % 3}", i * 0.5) for i in range(30)], "id INT, cat STRING, v DOUBLE")
    for fmt in ("parquet", "orc", "json"):
        target = tmp_path / f"data_{fmt}"
        write_dataset(df, str(target), fmt, partition_by=["cat"] if fmt == "parquet" else None)
        res = read_dataset(spark, _cfg(tmp_path, target))
        assert res.lineage["format"] == fmt
        assert res.lineage["row_count"] == 30 and res.quarantined == 0
        assert sorted(r.id for r in res.df.collect()) == list(range(30))
        assert set(res.df.columns) == {"id", "cat", "v"}
        assert res.lineage["fingerprint"] == input_fingerprint(spark, str(target))


def test_libsvm_round_trip_with_num_features(spark, tmp_path):
    src = tmp_path / "points.txt"
    src.write_text("1 1:0.5 3:1.5\n0 2:2.0\n1 1:1.0 4:3.0\n")
    assert detect_format(str(src)) == "libsvm"
    res = read_dataset(spark, _cfg(tmp_path, src, options={"numFeatures": 10}))
    assert res.lineage["format"] == "libsvm"
    assert res.df.columns == ["label", "features"]
    rows = res.df.orderBy("label").collect()
    assert len(rows) == 3 and rows[0].features.size == 10
    out = tmp_path / "points_out"
    write_dataset(res.df, str(out), "libsvm")
    again = read_dataset(spark, _cfg(tmp_path, out, format="libsvm", options={"numFeatures": 10}))
    assert again.df.count() == 3


def test_delta_versions_with_deltalake(spark, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    table = tmp_path / "sales_delta"
    v0 = pa.table({"id": [1, 2, 3], "region": ["n", "s", "n"], "amount": [1.0, 2.0, 3.0]})
    v1 = pa.table({"id": [4, 5], "region": ["e", "s"], "amount": [4.0, 5.0]})
    write_deltalake(str(table), v0, partition_by=["region"])
    write_deltalake(str(table), v1, mode="append")
    assert detect_format(str(table)) == "delta"

    old = read_dataset(spark, _cfg(tmp_path, table, version=0))
    assert old.lineage["delta_version"] == 0 and old.lineage["row_count"] == 3
    assert "fingerprint" not in old.lineage
    latest = read_dataset(spark, _cfg(tmp_path, table))
    assert latest.lineage["delta_version"] == 1
    assert latest.lineage["delta_reader"] == "deltalake-files"
    assert latest.df.columns == ["id", "region", "amount"]
    assert sorted((r.id, r.region) for r in latest.df.collect()) == [
        (1, "n"), (2, "s"), (3, "n"), (4, "e"), (5, "s"),
    ]  # fmt: skip
    # the driver-side path gives the same rows
    arrow = read_dataset(spark, _cfg(tmp_path, table, options={"deltaReader": "arrow"}))
    assert arrow.lineage["delta_reader"] == "deltalake-arrow"
    assert sorted(arrow.df.collect()) == sorted(latest.df.collect())

    # writing Delta through write_dataset: overwrite then append make new versions
    sdf = spark.createDataFrame([(10, "w", 1.5)], "id BIGINT, region STRING, amount DOUBLE")
    write_dataset(sdf, str(table), "delta", mode="append")
    assert DeltaTable(str(table)).version() == 2
    after = read_dataset(spark, _cfg(tmp_path, table))
    assert after.lineage["delta_version"] == 2 and after.lineage["row_count"] == 6
    with pytest.raises(DataError, match=r"data\.version=9"):
        read_dataset(spark, _cfg(tmp_path, table, version=9))


def test_write_delta_new_table_with_timestamps(spark, tmp_path):
    df = spark.sql("SELECT id, CAST(id AS STRING) AS k, TIMESTAMP'2024-01-01 00:00:00' + make_interval(0,0,0,0,id) AS ts "
                   "FROM range(20)")  # fmt: skip
    target = tmp_path / "new_delta"
    write_dataset(df, str(target), "delta", partition_by=["k"])
    assert not [p for p in os.listdir(tmp_path) if ".staging-" in p]
    back = read_dataset(spark, _cfg(tmp_path, target))
    assert back.lineage["delta_version"] == 0
    assert back.lineage["columns"] == {"id": "bigint", "k": "string", "ts": "timestamp"}
    assert sorted(r.id for r in back.df.collect()) == list(range(20))
    with pytest.raises(DataError, match="could not write"):
        write_dataset(df, str(target), "delta", mode="error")


# ------------------------------------------------------------------------------ detection & errors
def test_detect_format_rules(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.jsonl").write_text('{"x": 1}\n')
    (tmp_path / "c.csv.gz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("just some words\n")
    pq = tmp_path / "pq"
    pq.mkdir()
    (pq / "_SUCCESS").write_text("")
    (pq / "part-00000-abc.snappy.parquet").write_bytes(b"PAR1")
    delta = tmp_path / "tbl"
    (delta / "_delta_log").mkdir(parents=True)
    assert detect_format(str(tmp_path / "a.csv")) == "csv"
    assert detect_format(str(tmp_path / "b.jsonl")) == "json"
    assert detect_format(str(tmp_path / "c.csv.gz")) == "csv"
    assert detect_format(str(pq)) == "parquet"
    assert detect_format(str(delta)) == "delta"
    assert detect_format(str(tmp_path / "*.jsonl")) == "json"
    with pytest.raises(DataError, match=r"data\.format"):
        detect_format(str(tmp_path / "notes.txt"))


def test_unknown_format_lists_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        get_reader("xlsx")
    msg = str(err.value)
    for name in ("csv", "delta", "json", "libsvm", "orc", "parquet"):
        assert name in msg


def test_missing_path_names_config_key(spark, tmp_path):
    with pytest.raises(DataError, match=r"data\.input_path") as err:
        read_dataset(spark, _cfg(tmp_path, tmp_path / "nope.csv"))
    assert "nope.csv" in str(err.value)


def test_empty_data_set_is_an_error(spark, tmp_path):
    src = tmp_path / "empty.csv"
    src.write_text("a,b\n")
    with pytest.raises(DataError, match="has no rows"):
        read_dataset(spark, _cfg(tmp_path, src, schema="a INT, b INT"))


def test_wrong_format_is_a_clear_error(spark, tmp_path):
    src = tmp_path / "really_csv.parquet"
    src.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"as parquet \(data\.format"):
        read_dataset(spark, _cfg(tmp_path, src))


def test_bad_schema_names_config_key(spark, tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("a\n1\n")
    with pytest.raises(DataError, match=r"data\.schema"):
        read_dataset(spark, _cfg(tmp_path, src, schema="a NOTATYPE"))


def test_require_columns(spark):
    df = spark.createDataFrame([(1, 2)], "a INT, b INT")
    require_columns(df, ["a", "b"], "features.columns")
    with pytest.raises(
        DataError, match=r"features\.target: column 'churn' not found.*available columns: a, b"
    ):
        require_columns(df, "churn", "features.target")


def test_sample_fraction_is_left_to_the_caller(spark, tmp_path):
    target = tmp_path / "sample_src"
    write_dataset(spark.range(200).toDF("id"), str(target), "parquet")
    res = read_dataset(spark, _cfg(tmp_path, target, sample_fraction=0.25))
    assert res.lineage["row_count"] == 200 and res.df.count() == 200


# ------------------------------------------------------------------------------------ atomic writes
def test_write_dataset_overwrite_is_atomic_and_leaves_no_temp(spark, tmp_path):
    target = tmp_path / "out" / "table"
    write_dataset(spark.range(5).toDF("id"), str(target), "parquet")
    write_dataset(spark.range(100, 103).toDF("id"), str(target), "parquet")
    assert sorted(r.id for r in spark.read.parquet(str(target)).collect()) == [100, 101, 102]
    leftovers = [p for p in os.listdir(target.parent) if p != "table"]
    assert leftovers == []
    # append adds files, error refuses, ignore skips
    write_dataset(spark.range(3).toDF("id"), str(target), "parquet", mode="append")
    assert spark.read.parquet(str(target)).count() == 6
    with pytest.raises(DataError, match="already exists"):
        write_dataset(spark.range(1).toDF("id"), str(target), "parquet", mode="error")
    write_dataset(spark.range(1).toDF("id"), str(target), "parquet", mode="ignore")
    assert spark.read.parquet(str(target)).count() == 6
    assert [p for p in os.listdir(target.parent) if p != "table"] == []


def test_failed_write_keeps_previous_output(spark, tmp_path):
    target = tmp_path / "keep"
    write_dataset(spark.range(4).toDF("id"), str(target), "parquet")
    bad = spark.range(3).selectExpr("id", "raise_error('boom') AS x")
    with pytest.raises(DataError, match="could not write"):
        write_dataset(bad, str(target), "parquet")
    assert spark.read.parquet(str(target)).count() == 4
    assert os.listdir(tmp_path) == ["keep"]


def test_write_rejects_unknown_format_and_mode(spark, tmp_path):
    df = spark.range(1)
    with pytest.raises(UnknownNameError, match="data format"):
        write_dataset(df, str(tmp_path / "x"), "xlsx")
    with pytest.raises(UnknownNameError, match="write mode"):
        write_dataset(df, str(tmp_path / "x"), "parquet", mode="upsert")


def test_fingerprint_changes_with_files(tmp_path):
    d = tmp_path / "fp"
    d.mkdir()
    (d / "a.csv").write_text("x\n1\n")
    first = input_fingerprint(None, str(d))
    assert first is not None and first == input_fingerprint(None, str(d))
    (d / "_SUCCESS").write_text("")  # hidden files (as Spark sees them) do not count
    (d / ".a.csv.crc").write_text("")
    assert input_fingerprint(None, str(d)) == first
    (d / "b.csv").write_text("x\n2\n")
    second = input_fingerprint(None, str(d))
    assert second != first
    (d / "b.csv").write_text("x\n22\n")  # same name, new size
    assert input_fingerprint(None, str(d)) != second


def test_hash_split_is_disjoint_complete_and_independent_of_partitioning(spark):
    from pyspark.sql import functions as F

    from sparkpipe.data.split import hash_split

    df = spark.range(20_000).select(
        F.col("id"),
        (F.col("id") % 7).cast("string").alias("s"),
        F.when(F.col("id") % 5 == 0, None).otherwise(1.5).alias("x"),
    )
    parts = hash_split(df, [0.7, 0.15, 0.15], seed=3)
    ids = [set(r.id for r in p.select("id").collect()) for p in parts]
    assert sum(len(i) for i in ids) == 20_000 and set.union(*ids) == set(range(20_000))
    assert all(abs(len(i) / 20_000 - w) < 0.02 for i, w in zip(ids, [0.7, 0.15, 0.15], strict=True))
    # the same rows in another partitioning and order land in the same parts
    shuffled = df.repartition(7).orderBy(F.rand(1))
    again = [
        set(r.id for r in p.select("id").collect()) for p in hash_split(shuffled, [0.7, 0.15, 0.15], seed=3)
    ]
    assert again == ids
    # another seed gives another split
    other = set(r.id for r in hash_split(df, [0.7, 0.15, 0.15], seed=4)[0].select("id").collect())
    assert other != ids[0]
