"""The Spark fallback: a warm local SparkSession scoring models that contain a stage with no NumPy twin.

Requests are micro-batched: each call enqueues its rows and waits on a future; one worker thread
drains the queue (up to ``max_batch_rows`` rows, waiting at most ``batch_wait_ms`` for company once a
first request is there), builds one DataFrame with the model's explicit input schema, runs
``PipelineModel.transform`` once, and hands every caller its own rows back. Under load this turns N
Spark jobs into one; alone, a request pays one small Spark job (tens of milliseconds).

pyspark is imported here only, lazily, when such a model is loaded: the NumPy path never starts a JVM.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from sparkpipe.errors import ModelError, ScoringError

log = logging.getLogger(__name__)

ROW_ID = "__sparkpipe_row_id"
OUTPUT_COLUMNS = ("prediction", "probability", "rawPrediction", "predictedLabel")
_STOP = object()


def spark_type(name: str) -> Any:
    """The pyspark ``DataType`` for a schema type name (``double``, ``long``, ``string`` ...)."""
    from pyspark.sql import types as T

    base = name.lower().split("(")[0].strip()
    simple = {
        "double": T.DoubleType(),
        "float": T.DoubleType(),
        "decimal": T.DoubleType(),
        "long": T.LongType(),
        "bigint": T.LongType(),
        "integer": T.IntegerType(),
        "int": T.IntegerType(),
        "short": T.IntegerType(),
        "smallint": T.IntegerType(),
        "byte": T.IntegerType(),
        "tinyint": T.IntegerType(),
        "string": T.StringType(),
        "boolean": T.BooleanType(),
        "timestamp": T.TimestampType(),
        "datetime": T.TimestampType(),
        "timestamp_ntz": T.TimestampNTZType(),
        "date": T.DateType(),
    }
    if base in simple:
        return simple[base]
    try:
        return T._parse_datatype_string(name)
    except Exception as exc:
        raise ModelError(f"input column type {name!r} is not supported by the Spark fallback") from exc


def _to_python(value: Any, type_name: str) -> Any:
    """Convert a validated JSON value to what ``createDataFrame`` expects for the column type."""
    if value is None:
        return None
    base = type_name.lower().split("(")[0]
    if base in ("timestamp", "datetime", "timestamp_ntz", "date"):
        if isinstance(value, str):
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        else:
            parsed = dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None) if base == "timestamp_ntz" else parsed
        return parsed.date() if base == "date" else parsed
    if base in ("double", "float", "decimal"):
        return float(value)
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "toArray"):
        return value.toArray().tolist()
    return value


class SparkFallbackScorer:
    """Score a saved PipelineModel with a warm local Spark session and request micro-batching.

    Parameters
    ----------
    path
        The MLflow model directory (with ``sparkml/``) or a PipelineModel directory.
    input_schema
        Ordered ``(name, spark type)`` of the raw input columns.
    master
        Spark master of the session created when none is active.
    max_batch_rows
        Upper bound of rows per Spark job.
    batch_wait_ms
        How long the worker waits for more requests once one is queued.
    on_batch
        Optional callback receiving the row count of each Spark job (metrics).
    """

    serving_path = "spark-fallback"

    def __init__(
        self,
        path: str | Path,
        input_schema: list[tuple[str, str]],
        master: str = "local[2]",
        max_batch_rows: int = 1024,
        batch_wait_ms: float = 2.0,
        on_batch: Any = None,
    ):
        from pyspark.ml import PipelineModel
        from pyspark.sql import types as T

        from sparkpipe.config import SparkConfig
        from sparkpipe.session import get_spark

        path = Path(path)
        model_dir = path / "sparkml" if (path / "sparkml").is_dir() else path
        self.input_schema = list(input_schema)
        self.spark = get_spark(
            SparkConfig(
                app_name="sparkpipe-serving-fallback",
                master=master,
                ui_enabled=False,
                log_level="ERROR",
                shuffle_partitions=1,
            )
        )
        try:
            self.model = PipelineModel.load(str(model_dir))
        except Exception as exc:
            raise ModelError(f"cannot load the Spark PipelineModel at {model_dir}: {exc}") from exc
        self.schema = T.StructType(
            [T.StructField(n, spark_type(t), True) for n, t in self.input_schema]
            + [T.StructField(ROW_ID, T.LongType(), False)]
        )
        self.max_batch_rows = max_batch_rows
        self.batch_wait = batch_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._closed = False
        self.batches = 0

    # ------------------------------------------------------------------ public API
    def warm_up(self, columns: dict[str, list[Any]]) -> None:
        """Run one transform so the first request does not pay Spark's plan/codegen warm-up."""
        t0 = time.perf_counter()
        self._score_batch(columns, _n(columns))
        log.info("Spark fallback warmed up in %.0f ms", (time.perf_counter() - t0) * 1000)

    def submit(
        self, columns: dict[str, list[Any]], n: int
    ) -> concurrent.futures.Future[list[dict[str, Any]]]:
        """Queue ``n`` rows (column lists); the future resolves to one dict per row."""
        fut: concurrent.futures.Future[list[dict[str, Any]]] = concurrent.futures.Future()
        self._ensure_worker()
        self._queue.put((columns, n, fut))
        return fut

    def predict(self, columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Blocking scoring through the micro-batcher."""
        return self.submit(columns, _n(columns)).result()

    async def apredict(self, columns: dict[str, list[Any]], n: int) -> list[dict[str, Any]]:
        """Awaitable scoring through the micro-batcher (the event loop stays free)."""
        return await asyncio.wrap_future(self.submit(columns, n))

    def describe(self) -> dict[str, Any]:
        return {
            "serving_path": self.serving_path,
            "stages": [type(s).__name__ for s in self.model.stages],
            "batches": self.batches,
        }

    def close(self) -> None:
        """Stop the worker once the queued requests are answered (a later submit restarts it)."""
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)

    # ------------------------------------------------------------------ worker
    def _ensure_worker(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="spark-fallback", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            rows = item[1]
            deadline = time.perf_counter() + self.batch_wait
            while rows < self.max_batch_rows:
                timeout = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(nxt)
                rows += nxt[1]
            self._process(batch)

    def _process(self, batch: list[tuple[dict[str, list[Any]], int, concurrent.futures.Future[Any]]]) -> None:
        live = [b for b in batch if b[2].set_running_or_notify_cancel()]
        if not live:
            return
        merged: dict[str, list[Any]] = {name: [] for name, _ in self.input_schema}
        for cols, _, _ in live:
            for name in merged:
                merged[name].extend(cols[name])
        total = sum(n for _, n, _ in live)
        try:
            out = self._score_batch(merged, total)
        except Exception as exc:
            for _, _, fut in live:
                fut.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(total)
        start = 0
        for _, n, fut in live:
            fut.set_result(out[start : start + n])
            start += n

    def _score_batch(self, columns: dict[str, list[Any]], n: int) -> list[dict[str, Any]]:
        types = [(name, t) for name, t in self.input_schema]
        rows = [(*(_to_python(columns[name][i], t) for name, t in types), i) for i in range(n)]
        try:
            df = self.spark.createDataFrame(rows, self.schema)
            scored = self.model.transform(df)
            present = [c for c in OUTPUT_COLUMNS if c in scored.columns]
            has_id = ROW_ID in scored.columns
            collected = scored.select(*present, *([ROW_ID] if has_id else [])).collect()
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ScoringError(f"the Spark model rejected the input: {msg}") from exc
        self.batches += 1
        if len(collected) != n:
            raise ScoringError(f"the Spark model returned {len(collected)} rows for {n} input rows")
        if has_id:
            collected = sorted(collected, key=lambda r: r[ROW_ID])
        return [{c: _jsonable(r[c]) for c in present} for r in collected]


def _n(columns: dict[str, list[Any]]) -> int:
    for v in columns.values():
        return len(v)
    return 0
