"""Streaming scoring with exactly-once output: ``sparkpipe stream``.

Spark Structured Streaming reads a directory of files (or a Kafka topic) under the model's schema; every
micro-batch goes through :class:`BatchSink` (``foreachBatch``), which

0. skips a batch the sink already holds (a replay: see 3) before reading it;
1. splits the batch into good and malformed records (:func:`sparkpipe.data.streams.split_batch`: the
   batch readers' permissive parsing) and writes the malformed ones to the quarantine sink,
   ``<quarantine>/batch_id=<n>/`` (JSON lines: raw text, reason, source file), counted;
2. scores the good rows with the Spark ``PipelineModel`` and adds ``model_name`` and ``model_version``
   to every row;
3. writes them idempotently per micro-batch:

   * ``parquet``: ``<sink>/batch_id=<n>/``, written to a hidden temp sibling and renamed into place; a
     replayed batch whose directory exists is skipped (readers see ``batch_id`` as a partition column);
   * ``delta``: Spark writes the parquet files and delta-rs commits them in ONE transaction carrying
     Delta's ``txn`` action ``(app_id = sparkpipe-stream-<query id>, version = batch id)``; a replayed
     batch the table already holds (``DeltaTable.transaction_version(app_id) >= batch id``) is
     skipped. With delta-spark on the classpath the same commit protocol is used (delta-rs and
     delta-spark write the same log).

Spark re-runs a micro-batch after a crash exactly when its offsets were logged but its commit was not;
the batch then has the same id and the same files, so step 3 makes the output exactly-once. Each batch
appends a line to ``<checkpoint>/sparkpipe-batches.jsonl`` (rows, quarantined, written, skipped, Delta
version, model, timings): the stream's record of what it wrote.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.config import MlflowConfig, SparkConfig
from sparkpipe.errors import DataError, SparkpipeError
from sparkpipe.flow.batch import _abs_local, _vectors_as_arrays, load_spark_model

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

    from sparkpipe.data.streams import StreamSource

log = logging.getLogger(__name__)

#: Output formats of ``sparkpipe stream``.
STREAM_FORMATS = ("parquet", "delta")
#: The per-batch record, inside the checkpoint directory.
BATCH_RECORD = "sparkpipe-batches.jsonl"
#: Fault injection for the exactly-once tests: after committing the output of this batch id, the sink
#: writes ``<checkpoint>/_held_after_batch_<id>`` and waits forever (before Spark commits the batch),
#: so a test can kill the process at the one moment that forces a replay.
HOLD_ENV = "SPARKPIPE_STREAM_HOLD_AFTER_BATCH"
_PREDICTION_COLUMNS = ("prediction", "probability", "predictedLabel")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


class BatchSink:
    """The ``foreachBatch`` function: quarantine, score, write one micro-batch exactly once."""

    def __init__(
        self,
        model: PipelineModel,
        meta: dict[str, Any],
        source: StreamSource,
        sink: str,
        output_format: str,
        checkpoint: str,
        quarantine: str,
        model_uri: str,
    ) -> None:
        self.model, self.meta, self.source = model, meta, source
        self.sink, self.format, self.checkpoint, self.quarantine = sink, output_format, checkpoint, quarantine
        self.model_uri = model_uri
        self.records: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._app_id: str | None = None

    @property
    def app_id(self) -> str:
        """``sparkpipe-stream-<query id>``: the id Spark keeps in the checkpoint across restarts."""
        if self._app_id is None:
            meta = Path(_local(self.checkpoint)) / "metadata"
            try:
                query_id = json.loads(meta.read_text())["id"]
            except (OSError, ValueError, KeyError) as exc:
                raise DataError(f"cannot read the query id from {meta}: {exc}") from exc
            self._app_id = f"sparkpipe-stream-{query_id}"
        return self._app_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        try:
            self._write(batch, int(batch_id))
        except BaseException as exc:  # Spark wraps it; keep ours to re-raise with its message
            self.error = exc
            raise

    def _write(self, batch: DataFrame, batch_id: int) -> None:
        from sparkpipe.data.streams import split_batch

        start = time.perf_counter()
        if self._already_written(batch, batch_id):  # a replay: nothing to read, score or write
            record = self._batch_record(batch_id, start, skipped=True)
            self.records.append(record)
            self._record(record)
            log.info("micro-batch %d is already in %s: replay skipped", batch_id, self.sink)
            _hold_if_asked(self.checkpoint, batch_id)
            return
        split = split_batch(batch, self.source)
        try:
            quarantined_written = self._quarantine(split.bad, batch_id)
            scored = self._score(split.good, batch_id)
            written, skipped, version = self._output(scored, batch_id)
        finally:
            split.release()
        record = self._batch_record(
            batch_id,
            start,
            rows=split.rows,
            quarantined=split.quarantined,
            quarantined_by_reason=split.by_reason,
            quarantine_written=quarantined_written,
            written=written,
            skipped=skipped,
            delta_version=version,
        )
        self.records.append(record)
        self._record(record)
        log.info(
            "micro-batch %d: %d rows, %d quarantined, %s in %.0f ms",
            batch_id,
            split.rows,
            split.quarantined,
            "already written (replay skipped)" if skipped else f"{written} written",
            record["handler_ms"],
        )
        _hold_if_asked(self.checkpoint, batch_id)

    def _already_written(self, batch: DataFrame, batch_id: int) -> bool:
        """Whether the sink holds this batch (a replay after a crash between our write and Spark's
        commit): the Delta table's ``txn`` version for this query, or the batch's parquet directory."""
        from sparkpipe.data.paths import _path_exists

        if self.format == "delta":
            from deltalake import DeltaTable

            from sparkpipe.data.paths import _delta_uri

            uri = _delta_uri(self.sink)
            if not DeltaTable.is_deltatable(uri):
                return False
            done = DeltaTable(uri).transaction_version(self.app_id)
            return done is not None and done >= batch_id
        return bool(_path_exists(batch.sparkSession, f"{self.sink.rstrip('/')}/batch_id={batch_id}"))

    def _batch_record(self, batch_id: int, start: float, **counts: Any) -> dict[str, Any]:
        """One line of the batch record: ``counts`` over a skipped batch's zeros, the model, timings."""
        return {
            "batch_id": batch_id,
            "rows": 0,
            "quarantined": 0,
            "quarantined_by_reason": {},
            "quarantine_written": False,
            "written": 0,
            "skipped": False,
            "delta_version": None,
            **counts,
            "model_name": self.meta["model_name"],
            "model_version": self.meta["model_version"],
            "handler_ms": round(1000 * (time.perf_counter() - start), 1),
            "at": _now(),
        }

    def _quarantine(self, bad: DataFrame | None, batch_id: int) -> bool:
        from sparkpipe.data.io import write_dataset
        from sparkpipe.data.paths import _path_exists

        if bad is None:
            return False
        target = f"{self.quarantine.rstrip('/')}/batch_id={batch_id}"
        if _path_exists(bad.sparkSession, target):
            return False  # a replayed batch: already quarantined
        write_dataset(bad, target, "json", mode="error")
        return True

    def _score(self, good: DataFrame, batch_id: int) -> DataFrame:
        from pyspark.sql import functions as F

        scored = self.model.transform(good)
        extra = [f.name for f in scored.schema.fields if f.name in _PREDICTION_COLUMNS]
        out = _vectors_as_arrays(scored.select(*good.columns, *extra))
        out = out.withColumn("model_name", F.lit(self.meta["model_name"]))
        out = out.withColumn("model_version", F.lit(self.meta["model_version"]))
        if self.format == "delta":  # parquet has it as the directory's partition value
            out = out.withColumn("batch_id", F.lit(batch_id).cast("long"))
        return out

    def _output(self, out: DataFrame, batch_id: int) -> tuple[int, bool, int | None]:
        """``(rows written, skipped as a replay, Delta version)``."""
        from sparkpipe.data.io import write_dataset
        from sparkpipe.data.writers import commit_delta

        if self.format == "delta":
            commit = commit_delta(
                out,
                self.sink,
                "append",
                app_transaction=(self.app_id, batch_id),
                commit_metadata={
                    "sparkpipe.model": self.model_uri,
                    "sparkpipe.model_name": self.meta["model_name"],
                    "sparkpipe.model_version": self.meta["model_version"],
                    "sparkpipe.stream_batch_id": batch_id,
                },
            )
            return commit.rows, commit.skipped, commit.version
        # a replay was recognised before the batch was read (_already_written): "error" only guards
        target = f"{self.sink.rstrip('/')}/batch_id={batch_id}"
        write_dataset(out, target, "parquet", mode="error")  # one pass: the rows are counted from the footers
        return _parquet_rows(out.sparkSession, target), False, None

    def _record(self, record: dict[str, Any]) -> None:
        if not _is_local_path(self.checkpoint):
            return
        with open(Path(_local(self.checkpoint)) / BATCH_RECORD, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _parquet_rows(spark: SparkSession, path: str) -> int:
    """Rows in the parquet files under ``path`` (from the footers; no Spark job for a local path)."""
    if not _is_local_path(path):
        return int(spark.read.parquet(path).count())
    import pyarrow.parquet as pq

    files = [p for p in Path(_local(path)).rglob("*.parquet") if not p.name.startswith((".", "_"))]
    return sum(int(pq.read_metadata(p).num_rows) for p in files)


def _is_local_path(path: str) -> bool:
    from sparkpipe.data.paths import _is_local

    return _is_local(path)


def _local(path: str) -> str:
    from sparkpipe.data.paths import _local_path

    return _local_path(path)


def _hold_if_asked(checkpoint: str, batch_id: int) -> None:
    hold = os.environ.get(HOLD_ENV)
    if hold is None or hold.strip() != str(batch_id):
        return
    marker = Path(_local(checkpoint)) / f"_held_after_batch_{batch_id}"
    marker.write_text(_now())
    log.warning(
        "%s=%s: holding after the output of batch %d (waiting to be killed)", HOLD_ENV, hold, batch_id
    )
    while True:
        time.sleep(3600)


def read_batch_record(checkpoint: str) -> list[dict[str, Any]]:
    """The lines of ``<checkpoint>/sparkpipe-batches.jsonl`` (every batch every run handled)."""
    path = Path(_local(checkpoint)) / BATCH_RECORD
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _progress_entry(p: Any) -> dict[str, Any]:
    """Rows/s and latency of one micro-batch from Spark's ``StreamingQueryProgress``."""
    durations = dict(getattr(p, "durationMs", None) or {})
    return {
        "batch_id": int(p.batchId),
        "input_rows": int(p.numInputRows),
        "input_rows_per_s": round(float(p.inputRowsPerSecond or 0.0), 1),
        "processed_rows_per_s": round(float(p.processedRowsPerSecond or 0.0), 1),
        "latency_ms": int(durations.get("triggerExecution", 0)),
        "add_batch_ms": int(durations.get("addBatch", 0)),
    }


def stream_predict(
    model_uri: str,
    source: str,
    sink: str,
    checkpoint: str,
    *,
    output_format: str = "parquet",
    source_format: str = "auto",
    schema: str | None = None,
    source_options: dict[str, Any] | None = None,
    trigger_seconds: float | None = None,
    trigger: str = "continuous",
    max_per_trigger: int | None = None,
    quarantine: str | None = None,
    timeout_seconds: float | None = None,
    spark_cfg: SparkConfig | None = None,
    mlflow_cfg: MlflowConfig | None = None,
    spark: SparkSession | None = None,
) -> dict[str, Any]:
    """Score a stream with a saved model and write predictions exactly once (see the module docs).

    Parameters
    ----------
    model_uri
        ``models:/name@alias``, ``name/version``, ``runs:/...`` or a local model directory.
    source
        A directory of csv/json/parquet files, or ``kafka://host:port/topic``.
    sink
        Output directory (parquet) or Delta table.
    checkpoint
        Spark's checkpoint directory: restart with the same one to resume exactly where it stopped.
    trigger
        ``continuous`` (a micro-batch every ``trigger_seconds``, or as soon as data arrives),
        ``once`` (one micro-batch) or ``available_now`` (everything there now, in as many micro-batches
        as ``max_per_trigger`` allows, then stop).
    max_per_trigger
        Files (Kafka: offsets) per micro-batch.
    quarantine
        Where malformed records go (default: ``<sink>_quarantine`` beside the sink).
    timeout_seconds
        Stop a ``continuous`` stream after this long (``None``: until interrupted).

    Returns the batches this run handled (:data:`BATCH_RECORD` entries), their progress (rows/s,
    latency), totals, and the Delta table's version when the sink is Delta. Raises ``DataError`` for a
    bad source/sink/format, missing model columns, or a batch that could not be written (the
    checkpoint lets a restart resume).
    """
    from sparkpipe.session import get_spark

    output_format = _check_stream_args(output_format, trigger, sink)
    spark = spark or get_spark(spark_cfg)
    model, meta = load_spark_model(model_uri, mlflow_cfg)
    source = source if source.startswith("kafka://") else _abs_local(source)
    sink, checkpoint = _abs_local(sink), _abs_local(checkpoint)
    quarantine = _abs_local(quarantine) if quarantine else f"{sink.rstrip('/')}_quarantine"
    stream = _open_source(
        spark, model_uri, meta, source, source_format, schema, source_options, max_per_trigger
    )
    if _is_local_path(checkpoint):
        os.makedirs(_local(checkpoint), exist_ok=True)
    handler = BatchSink(model, meta, stream, sink, output_format, checkpoint, quarantine, model_uri)
    query = _start_query(stream, handler, checkpoint, trigger, trigger_seconds, meta["model_name"])
    log.info(
        "stream %s started: %s → %s (%s), checkpoint %s", query.id, source, sink, output_format, checkpoint
    )
    progress = _await(query, timeout_seconds if trigger == "continuous" else None, handler)
    result = {
        "model": model_uri,
        "model_name": meta["model_name"],
        "model_version": meta["model_version"],
        "source": source,
        "sink": sink,
        "format": output_format,
        "checkpoint": checkpoint,
        "quarantine_path": quarantine,
        "query_id": str(query.id),
        "progress": progress,
    }
    return _with_totals(result, handler.records, sink, output_format)


def _open_source(
    spark: SparkSession,
    model_uri: str,
    meta: dict[str, Any],
    source: str,
    source_format: str,
    schema: str | None,
    source_options: dict[str, Any] | None,
    max_per_trigger: int | None,
) -> Any:
    """The streaming source, typed by the model's input schema (plus ``schema``, a Spark DDL string)."""
    from sparkpipe.data.streams import model_schema, open_stream

    fields = model_schema(meta.get("input_schema"), spark)
    if not fields.names and not schema:
        raise DataError(
            f"model {model_uri} has no sparkpipe input schema in its metadata: pass --schema "
            "(a Spark DDL string such as 'id BIGINT, age DOUBLE, plan STRING')"
        )
    return open_stream(spark, source, source_format, fields, schema, source_options, max_per_trigger)


def _start_query(
    stream: Any, handler: BatchSink, checkpoint: str, trigger: str, trigger_seconds: float | None, name: str
) -> Any:
    """Start the streaming query: ``handler`` per micro-batch, Spark's checkpoint, the trigger."""
    writer = stream.df.writeStream.foreachBatch(handler).option("checkpointLocation", checkpoint)
    if trigger == "once":
        writer = writer.trigger(once=True)
    elif trigger == "available_now":
        writer = writer.trigger(availableNow=True)
    elif trigger_seconds:
        writer = writer.trigger(processingTime=f"{trigger_seconds} seconds")
    return writer.queryName(f"sparkpipe_stream_{name}"[:100]).start()


def _check_stream_args(output_format: str, trigger: str, sink: str) -> str:
    """The output format (lower case), after refusing an unknown format or trigger and a remote Delta sink."""
    output_format = output_format.lower()
    if output_format not in STREAM_FORMATS:
        from sparkpipe.errors import UnknownNameError

        raise UnknownNameError("stream output format", output_format, list(STREAM_FORMATS))
    if trigger not in ("continuous", "once", "available_now"):
        raise DataError(f"trigger must be continuous, once or available_now, got {trigger!r}")
    if output_format == "delta" and not _is_local_path(sink):
        raise DataError(
            f"--sink {sink}: a streamed Delta table must be on a local (or mounted) filesystem for now: "
            "its micro-batches are committed with delta-rs from files Spark wrote beside it. Stream to "
            "parquet on the object store (also exactly-once), or to a local/mounted Delta path"
        )
    return output_format


def _with_totals(
    result: dict[str, Any], records: list[dict[str, Any]], sink: str, output_format: str
) -> dict[str, Any]:
    """``result`` with the batches this run handled, their row totals and the Delta sink's version."""
    result = {
        **result,
        "batches": records,
        "rows": sum(r["rows"] for r in records),
        "written": sum(r["written"] for r in records),
        "quarantined": sum(r["quarantined"] for r in records),
        "replays_skipped": sum(1 for r in records if r["skipped"]),
    }
    if output_format == "delta":
        from sparkpipe.flow.batch import output_delta_version

        result["output_delta_version"] = output_delta_version(sink)
    return result


def _await(query: Any, timeout_seconds: float | None, handler: BatchSink) -> list[dict[str, Any]]:
    """Wait for the query (until it ends, or ``timeout_seconds``), logging each micro-batch's progress."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    seen: dict[int, dict[str, Any]] = {}

    def collect() -> None:
        for p in query.recentProgress:
            if int(p.batchId) in seen or not int(p.numInputRows):
                continue
            entry = seen[int(p.batchId)] = _progress_entry(p)
            log.info(
                "micro-batch %d progress: %d rows, %.0f rows/s processed, latency %d ms",
                entry["batch_id"],
                entry["input_rows"],
                entry["processed_rows_per_s"],
                entry["latency_ms"],
            )

    try:
        while True:
            try:
                done = query.awaitTermination(1.0)
            except Exception as exc:
                raise _failure(exc, handler) from exc
            collect()
            if done:
                break
            if deadline is not None and time.monotonic() >= deadline:
                query.stop()
                break
    except KeyboardInterrupt:
        log.info("interrupted: stopping the stream (the checkpoint keeps its place)")
        with contextlib.suppress(Exception):
            query.stop()
    collect()
    return [seen[k] for k in sorted(seen)]


def _failure(exc: BaseException, handler: BatchSink) -> SparkpipeError:
    if isinstance(handler.error, SparkpipeError):
        return handler.error
    first = str(handler.error or exc).strip().splitlines()
    return DataError(
        f"the stream stopped: {first[0] if first else type(exc).__name__}. Fix the cause and start it "
        "again with the same --checkpoint: it resumes at the first micro-batch not written"
    )
