"""``sparkpipe stream``: exactly-once output across a crash, for parquet and Delta sinks.

Three CSV files of 200 rows (ids unique) and two malformed lines are dropped in a directory. The stream
runs as a real ``sparkpipe stream`` subprocess, one file per micro-batch, with the fault-injection hold
after batch 0's output is committed — the moment before Spark records the batch as done. The process is
killed with SIGKILL there (its offsets for batch 0 are logged, its commit is not), then the stream is
restarted from the same checkpoint: Spark replays batch 0, the sink recognises it, and the output holds
exactly 600 rows, no id twice, each with the model's name and version, and the 2 malformed lines are
quarantined once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparkpipe.flow.stream import BATCH_RECORD, HOLD_ENV, read_batch_record, stream_predict

from .conftest import MODEL

pytestmark = pytest.mark.spark

FILES, ROWS = 3, 200
BAD_LINES = ["9001,pro,notanumber,3", "9002,basic,40"]  # a value that is not a number; a missing field


def _drop_files(source: Path) -> None:
    import random

    rng = random.Random(3)
    source.mkdir()
    for f in range(FILES):
        lines = ["id,plan,age,calls"]
        for i in range(ROWS):
            plan = rng.choice(["basic", "pro", "max"])
            lines.append(f"{f * ROWS + i},{plan},{rng.uniform(18, 80):.1f},{rng.randint(0, 12)}")
        if f == 0:
            lines += BAD_LINES
        path = source / f"part{f}.csv"
        path.write_text("\n".join(lines) + "\n")
        os.utime(path, (1_000_000 + f, 1_000_000 + f))  # the file source takes the oldest first


def _start_held(tmp_path: Path, fmt: str, cfg: Path) -> tuple[subprocess.Popen[bytes], Path, Path, Path]:
    """A ``sparkpipe stream`` process that holds after committing batch 0's output."""
    work = tmp_path / fmt
    work.mkdir()
    sink, checkpoint = work / "sink", work / "checkpoint"
    env = {**os.environ, HOLD_ENV: "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [
        sys.executable, "-m", "sparkpipe", "stream",
        "--model", f"models:/{MODEL}@champion",
        "--source", str(tmp_path / "incoming"),
        "--sink", str(sink),
        "--checkpoint", str(checkpoint),
        "--format", fmt,
        "--max-per-trigger", "1",
        "--available-now",
        "--config", str(cfg),
    ]  # fmt: skip
    log = open(work / "stream.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    return proc, sink, checkpoint, work / "stream.log"


def _wait_held(proc: subprocess.Popen[bytes], checkpoint: Path, log: Path) -> None:
    marker = checkpoint / "_held_after_batch_0"
    deadline = time.monotonic() + 600  # a bound for a broken run, not a timing assumption
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the stream exited ({proc.returncode}) before batch 0:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"batch 0 never committed:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def test_a_stream_killed_after_a_committed_batch_writes_every_row_once(
    spark: Any, registered: dict[str, Any], tmp_path: Path
) -> None:
    from deltalake import DeltaTable

    _drop_files(tmp_path / "incoming")
    cfg = tmp_path / "cfg.yaml"
    spark_section = {"master": "local[1]", "ui_enabled": False, "log_level": "ERROR"}
    cfg.write_text(
        yaml.safe_dump({"mlflow": {"tracking_uri": registered["tracking_uri"]}, "spark": spark_section})
    )
    runs = {fmt: _start_held(tmp_path, fmt, cfg) for fmt in ("parquet", "delta")}  # side by side
    try:
        for proc, _, checkpoint, log in runs.values():
            _wait_held(proc, checkpoint, log)
    finally:
        for proc, *_ in runs.values():
            _kill(proc)

    for fmt, (_, sink, checkpoint, _) in runs.items():
        # killed mid-batch: Spark logged batch 0's offsets but not its commit, so it will replay it
        assert (checkpoint / "offsets" / "0").exists() and not (checkpoint / "commits" / "0").exists()
        assert [r["batch_id"] for r in read_batch_record(str(checkpoint))] == [0]
        res = stream_predict(
            f"models:/{MODEL}@champion",
            str(tmp_path / "incoming"),
            str(sink),
            str(checkpoint),
            output_format=fmt,
            trigger="available_now",
            max_per_trigger=1,
            mlflow_cfg=registered["cfg"].mlflow,
            spark=spark,
        )
        assert [(b["batch_id"], b["skipped"]) for b in res["batches"]] == [(0, True), (1, False), (2, False)]
        assert res["written"] == 2 * ROWS and res["replays_skipped"] == 1
        # the replayed batch is recognised before it is read; the others report their rows and speed
        progress = {p["batch_id"]: p for p in res["progress"]}
        assert progress[1]["input_rows"] == ROWS and progress[2]["input_rows"] == ROWS
        assert all(progress[b]["latency_ms"] > 0 and progress[b]["processed_rows_per_s"] > 0 for b in (1, 2))
        if fmt == "delta":
            table = DeltaTable(str(sink))
            assert table.version() == 2 and res["output_delta_version"] == 2
            assert table.transaction_version(_app_id(checkpoint)) == 2
            out = spark.createDataFrame(table.to_pyarrow_table())
        else:
            out = spark.read.parquet(str(sink))
        rows = out.select("id", "model_name", "model_version", "batch_id", "prediction").collect()
        ids = [int(r.id) for r in rows]
        assert len(ids) == FILES * ROWS and len(set(ids)) == FILES * ROWS, fmt
        assert {(r.model_name, r.model_version) for r in rows} == {(MODEL, "1")}
        assert sorted({int(r.batch_id) for r in rows}) == [0, 1, 2]
        assert all(r.prediction in (0.0, 1.0) for r in rows)
        quarantined = spark.read.json(f"{sink}_quarantine").collect()
        assert sorted(r.raw for r in quarantined) == sorted(BAD_LINES)
        assert any("age" in r.reason for r in quarantined) and all(r.source_file for r in quarantined)
        record = read_batch_record(str(checkpoint))
        assert sum(r["quarantined"] for r in record if not r["skipped"]) == len(BAD_LINES)
        assert (checkpoint / BATCH_RECORD).exists()


def _app_id(checkpoint: Path) -> str:
    return "sparkpipe-stream-" + json.loads((checkpoint / "metadata").read_text())["id"]


def test_kafka_source_options_and_the_missing_connector(spark: Any, registered: dict[str, Any]) -> None:
    from sparkpipe.data.streams import kafka_options, model_schema, open_stream
    from sparkpipe.errors import DataError

    opts = kafka_options("kafka://b1:9092,b2:9092/scores", {"startingOffsets": "latest"})
    assert opts == {
        "kafka.bootstrap.servers": "b1:9092,b2:9092",
        "subscribe": "scores",
        "startingOffsets": "latest",
        "failOnDataLoss": "true",
    }
    assert "subscribe" not in kafka_options("kafka://b:9092", {"subscribePattern": "s.*"})
    with pytest.raises(DataError, match="kafka://HOST:PORT/TOPIC"):
        kafka_options("kafka://b1:9092")
    fields = model_schema([["plan", "string"], ["age", "double"]], spark)
    with pytest.raises(DataError, match=r"spark-sql-kafka-0-10_2\.13") as err:
        open_stream(spark, "kafka://127.0.0.1:9/scores", "auto", fields)
    assert "KafkaSourceProvider" in str(err.value)


def test_a_source_without_the_model_columns_names_them(spark: Any, tmp_path: Path) -> None:
    from sparkpipe.data.streams import model_schema, open_stream
    from sparkpipe.errors import DataError

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,plan\n1,pro\n")
    fields = model_schema([["plan", "string"], ["age", "double"], ["calls", "long"]], spark)
    with pytest.raises(DataError, match=r"missing column\(s\) age, calls that the model needs"):
        open_stream(spark, str(tmp_path / "in"), "auto", fields)
    with pytest.raises(DataError, match="pass --source-format"):
        (tmp_path / "empty").mkdir()
        open_stream(spark, str(tmp_path / "empty"), "auto", fields)
