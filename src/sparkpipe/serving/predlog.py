"""The prediction log: every prediction appended to a SQLite file (WAL) by a buffered background writer.

Why SQLite in WAL mode rather than partitioned parquet: the log is read *by key* (``POST /feedback``
joins an outcome to its request id; ``GET /ab/{model}`` aggregates one experiment's rows; drift reads
the most recent window of one model) and written in small batches all day. SQLite gives that with
indexes, one file, transactions (a committed batch survives a crash), readers that never block the
writer (WAL), and nothing to install or compact; parquet would need a file per flush, a compaction job
and a full scan per request-id lookup. A deployment that outgrows one file can ship the table to a
warehouse; the schema is flat.

The request path only appends a tuple to a :class:`collections.deque` (thread-safe, no lock, no
encoding: the request and response bodies are stored as the bytes that crossed the wire). A writer
thread commits the buffer every ``flush_interval_seconds`` (sooner once ``max_buffer`` rows wait), and
:meth:`PredictionLog.close` -- called by the service's shutdown after uvicorn has answered every request
in progress -- commits whatever is left, so a SIGTERM loses no answered prediction.

Retention (``retention_days``, ``max_rows``): the writer thread, after a commit and at most every
``prune_interval_seconds``, deletes the oldest predictions (and their feedback) in batches of
:data:`PRUNE_BATCH` rows, each its own short transaction; the request path never waits for it (it only
appends to the deque). Ids grow with time, so "older than" is found from the lowest ids up without an
index on time. SQLite reuses the freed pages, so the file stops growing instead of shrinking.

Tables: ``predictions`` (request id, time, route, model, version, variant, experiment, shadow flag,
status, latency, request body, response body, error), ``feedback`` (request id, time, label, value),
``input_schemas`` (the column order of each served version, to read positional rows back) and
``experiments`` (routing set at runtime, shared by every worker process).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    version TEXT,
    variant TEXT,
    experiment TEXT,
    shadow INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL,
    latency_ms REAL,
    inputs BLOB,
    outputs BLOB,
    error TEXT
);
CREATE INDEX IF NOT EXISTS predictions_request ON predictions (request_id);
CREATE INDEX IF NOT EXISTS predictions_model_ts ON predictions (model, ts);
CREATE INDEX IF NOT EXISTS predictions_experiment ON predictions (experiment);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    label,
    value REAL
);
CREATE TABLE IF NOT EXISTS input_schemas (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    columns TEXT NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS experiments (
    model TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    source TEXT NOT NULL,
    updated REAL NOT NULL
);
"""
PRUNE_BATCH = 10_000
"""Rows deleted per transaction by the retention (keeps feedback writes waiting at most a moment)."""

_INSERT = (
    "INSERT INTO predictions (request_id, ts, route, model, version, variant, experiment, shadow, status, "
    "latency_ms, inputs, outputs, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The same insert for a whole batch given as one JSON array of rows: one statement, so SQLite inserts
# every row while this thread has released the GIL. (``executemany`` binds each row's parameters under
# the GIL and releases it around each row's step: two GIL hand-offs per row with the request thread,
# which cost serving about 15 % of its throughput at 7,000 requests/s.) Bodies travel as JSON strings
# and are stored as the same bytes (``CAST(... AS BLOB)``).
_INSERT_JSON = (
    "INSERT INTO predictions (request_id, ts, route, model, version, variant, experiment, shadow, status, "
    "latency_ms, inputs, outputs, error) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, "
    "value->>5, value->>6, value->>7, value->>8, value->>9, CAST(value->>10 AS BLOB), "
    "CAST(value->>11 AS BLOB), value->>12 FROM json_each(?)"
)
_JSON_INSERTS = sqlite3.sqlite_version_info >= (3, 38, 0)  # the ->> operator; older: executemany
_JSON_CHUNK = 500
"""Rows per JSON statement: encoding a chunk holds the GIL about half a millisecond (one array of a
whole second's predictions held it long enough to add 9 ms to the p99 latency under load)."""


def _json_batch(rows: list[tuple[Any, ...]]) -> bytes | None:
    """``rows`` as one JSON array for :data:`_INSERT_JSON`, or ``None`` when a body is not UTF-8 text
    free of NUL characters (a JSON string could not carry it byte for byte: ``executemany`` stores
    that batch)."""
    if not _JSON_INSERTS:
        return None
    out = []
    try:
        for r in rows:
            out.append((*r[:10], _text(r[10]), _text(r[11]), r[12]))
    except (UnicodeDecodeError, _NotText):
        return None
    return orjson.dumps(out)


class _NotText(Exception):
    pass


def _text(body: Any) -> str | None:
    if body is None:
        return None
    if type(body) is not bytes or b"\x00" in body:
        raise _NotText
    return body.decode()


class PredictionLog:
    """Append-only log of predictions with a background writer (see the module docstring).

    Parameters
    ----------
    path
        The SQLite file (created with its directory).
    flush_interval_seconds
        How often the writer commits what the request path appended.
    max_buffer
        Rows waiting that wake the writer before its interval.
    retention_days, max_rows
        Keep predictions at most this many days / at most this many rows (``None``: no limit).
    prune_interval_seconds
        Least time between two retention passes of the writer thread.
    """

    def __init__(
        self,
        path: str | Path,
        flush_interval_seconds: float = 1.0,
        max_buffer: int = 50_000,
        *,
        retention_days: float | None = None,
        max_rows: int | None = None,
        prune_interval_seconds: float = 300.0,
    ):
        self.path = Path(path).resolve()
        self.flush_interval = flush_interval_seconds
        self.max_buffer = max_buffer
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.prune_interval = prune_interval_seconds
        self._last_prune = time.monotonic()  # the first pass one interval after start
        self.pruned = 0
        self._buf: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._write_lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._schemas_seen: set[tuple[str, str]] = set()
        self.written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ connections
    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This process's one connection, held under the log's lock, inside a transaction (committed
        on success). One connection serializes this process's writes without SQLite's busy waits;
        other processes (workers, readers) use their own, and WAL readers never block the writer."""
        with self._write_lock:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._conn:
                yield self._conn

    # ------------------------------------------------------------------ request path
    def append(
        self,
        request_id: str,
        route: str,
        model: str | None,
        version: str | None,
        variant: str | None,
        experiment: str | None,
        status: int,
        latency_ms: float | None,
        inputs: bytes | None,
        outputs: bytes | None,
        *,
        shadow: bool = False,
        error: str | None = None,
    ) -> None:
        """Queue one prediction (no I/O, no encoding: the writer thread commits it)."""
        self._buf.append(
            (
                request_id,
                time.time(),
                route,
                model,
                version,
                variant,
                experiment,
                1 if shadow else 0,
                status,
                latency_ms,
                inputs,
                outputs,
                error,
            )
        )
        if len(self._buf) >= self.max_buffer:
            self._wake.set()

    def note_schema(self, model: str, version: str, columns: tuple[str, ...]) -> None:
        """Remember a served version's input column order (read back positional rows); once per version."""
        key = (model, version)
        if key in self._schemas_seen:
            return
        self._schemas_seen.add(key)
        with self.connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO input_schemas (model, version, columns) VALUES (?, ?, ?)",
                (model, version, json.dumps(list(columns))),
            )

    @property
    def pending(self) -> int:
        return len(self._buf)

    # ------------------------------------------------------------------ writer
    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # keep the rows queued; try again on the next tick
                log.exception("writing the prediction log %s failed; retrying", self.path)
            if (self.retention_days or self.max_rows) and not self._stop:
                now = time.monotonic()
                if now - self._last_prune >= self.prune_interval:
                    self._last_prune = now
                    try:
                        self.prune()
                    except Exception:  # retention is housekeeping: the next pass tries again
                        log.exception("pruning the prediction log %s failed", self.path)

    def prune(self, now: float | None = None) -> int:
        """Apply the retention now (the writer thread calls this); return the predictions deleted."""
        cutoff_id: int | None = None
        with self.connect() as conn:
            if self.retention_days:
                cutoff_ts = (now or time.time()) - self.retention_days * 86_400
                row = conn.execute(
                    "SELECT id FROM predictions WHERE ts >= ? ORDER BY id LIMIT 1", (cutoff_ts,)
                ).fetchone()
                if row is None:  # every row is older
                    last = conn.execute("SELECT MAX(id) FROM predictions").fetchone()[0]
                    cutoff_id = None if last is None else int(last) + 1
                else:
                    cutoff_id = int(row[0])
            if self.max_rows:
                row = conn.execute(
                    "SELECT id FROM predictions ORDER BY id DESC LIMIT 1 OFFSET ?", (self.max_rows - 1,)
                ).fetchone()
                if row is not None:
                    cutoff_id = max(cutoff_id or 0, int(row[0]))
        if not cutoff_id:
            return 0
        deleted = 0
        while True:  # short transactions: feedback writes and readers get the lock between batches
            with self.connect() as conn:
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM predictions WHERE id < ? ORDER BY id LIMIT ?",
                        (cutoff_id, PRUNE_BATCH),
                    )
                ]
                if not ids:
                    break
                lo, hi = ids[0], ids[-1]
                conn.execute(
                    "DELETE FROM feedback WHERE request_id IN "
                    "(SELECT request_id FROM predictions WHERE id BETWEEN ? AND ?)",
                    (lo, hi),
                )
                deleted += conn.execute("DELETE FROM predictions WHERE id BETWEEN ? AND ?", (lo, hi)).rowcount
        if deleted:
            self.pruned += deleted
            log.info("prediction log retention: deleted %d predictions older than id %d", deleted, cutoff_id)
        return deleted

    def flush(self) -> int:
        """Commit every queued row now (any thread); return how many were written."""
        with self._write_lock:
            if not self._buf:
                return 0
            rows: list[tuple[Any, ...]] = []
            buf = self._buf
            with contextlib.suppress(IndexError):
                while True:
                    rows.append(buf.popleft())
            try:
                with self.connect() as conn:  # one transaction
                    for i in range(0, len(rows), _JSON_CHUNK):
                        chunk = rows[i : i + _JSON_CHUNK]
                        batch = _json_batch(chunk)
                        if batch is None:
                            conn.executemany(_INSERT, chunk)
                        else:
                            conn.execute(_INSERT_JSON, (batch,))
            except Exception:
                buf.extendleft(reversed(rows))  # not lost: back at the front, in order
                raise
            self.written += len(rows)
            return len(rows)

    def close(self) -> None:
        """Stop the writer and commit everything queued (the service's shutdown calls this last)."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=30)
        for _ in range(3):
            try:
                self.flush()
                break
            except Exception:
                log.exception("final flush of the prediction log %s failed", self.path)
                time.sleep(0.2)
        if self._buf:
            log.error("%d predictions could not be written to %s", len(self._buf), self.path)
        with self._write_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------------ reads
    def find(self, request_id: str) -> list[dict[str, Any]]:
        """Logged rows of one request id (champion and shadow rows), after committing the queue."""
        sql = (
            "SELECT model, version, variant, experiment, shadow, status, outputs FROM predictions "
            "WHERE request_id = ? ORDER BY id"
        )
        with self.connect() as conn:
            rows = conn.execute(sql, (request_id,)).fetchall()
        if not rows:  # queued, or being committed by the writer: flush() waits for that commit
            self.flush()
            with self.connect() as conn:
                rows = conn.execute(sql, (request_id,)).fetchall()
        keys = ("model", "version", "variant", "experiment", "shadow", "status", "outputs")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def add_feedback(self, request_id: str, label: Any, value: float | None) -> bool:
        """Store the outcome of a request; False when that request already has one."""
        with self.connect() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO feedback (request_id, ts, label, value) VALUES (?, ?, ?, ?)",
                (request_id, time.time(), label, value),
            )
            return cur.rowcount == 1

    def experiment_rows(self, experiment: str) -> list[tuple[Any, ...]]:
        """``(variant, shadow, status, outputs, label, value)`` of every row logged for an experiment."""
        self.flush()
        with self.connect() as conn:
            return conn.execute(
                "SELECT p.variant, p.shadow, p.status, p.outputs, f.label, f.value FROM predictions p "
                "LEFT JOIN feedback f ON f.request_id = p.request_id WHERE p.experiment = ?",
                (experiment,),
            ).fetchall()

    def count(self, model: str | None = None) -> int:
        """Rows logged (committed and queued), for one model or all."""
        with self.connect() as conn:
            if model is None:
                n = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
            else:
                n = conn.execute("SELECT COUNT(*) FROM predictions WHERE model = ?", (model,)).fetchone()[0]
        return int(n) + (len(self._buf) if model is None else 0)

    def recent_inputs(
        self, model: str, limit: int = 10_000, since: float | None = None
    ) -> list[dict[str, Any]]:
        """The most recent ``limit`` input rows scored by ``model`` (newest first) as ``{column: value}``.

        The sliding window drift monitoring compares with the training profile: shadow rows and errors
        are left out, positional rows are named with the version's input columns, and a request of
        many rows (``instances``) contributes each of them.
        """
        self.flush()
        with self.connect() as conn:
            schemas = {
                (m, v): json.loads(c)
                for m, v, c in conn.execute(
                    "SELECT model, version, columns FROM input_schemas WHERE model = ?", (model,)
                )
            }
            rows = conn.execute(
                "SELECT version, route, inputs FROM predictions WHERE model = ? AND shadow = 0 "
                "AND status = 200 AND ts >= ? ORDER BY id DESC LIMIT ?",
                (model, since or 0.0, limit),
            ).fetchall()
        out: list[dict[str, Any]] = []
        for version, route, raw in rows:
            names = schemas.get((model, version)) or []
            for row in _rows_of(route, raw, names):
                out.append(row)
                if len(out) >= limit:
                    return out
        return out


def _rows_of(route: str, raw: bytes | None, names: list[str]) -> list[dict[str, Any]]:
    """The input rows of one logged request body, named."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return []
    if not isinstance(body, dict):
        return []
    if route == "/predict":
        rows = [body["features"]] if body.get("features") is not None else list(body.get("instances") or [])
    elif isinstance(body.get("dataframe_split"), dict):
        split = body["dataframe_split"]
        cols = split.get("columns") or names
        return [dict(zip(cols, r, strict=False)) for r in split.get("data") or [] if isinstance(r, list)]
    else:
        data = body.get("dataframe_records") or body.get("instances") or body.get("inputs") or []
        rows = data if isinstance(data, list) else []
    named = []
    for r in rows:
        if isinstance(r, dict):
            named.append(r)
        elif isinstance(r, list) and names:
            named.append(dict(zip(names, r, strict=False)))
    return named
