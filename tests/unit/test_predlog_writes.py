"""Prediction-log writes: every field stored exactly as appended, whichever insert a chunk of rows takes
(one JSON statement for text bodies, ``executemany`` for bodies JSON strings cannot carry)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from sparkpipe.serving import predlog
from sparkpipe.serving.predlog import PredictionLog

COLUMNS = (
    "request_id, ts, route, model, version, variant, experiment, shadow, status, latency_ms, inputs, "
    "outputs, error"
)


def _stored(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM predictions ORDER BY id").fetchall()


def _rows(bodies: list[bytes | None]) -> list[tuple]:
    rng = random.Random(3)
    rows = []
    for i, body in enumerate(bodies):
        rows.append(
            (
                f"req-{i}",
                1.7e9 + rng.random() * 1e6,
                "/predict" if i % 2 else "/invocations",
                'churn "model" \\ é ✓' if i % 3 == 0 else "m",
                str(i),
                None if i % 4 else "challenger",
                None if i % 5 else "exp-1",
                i % 2,
                200 if i % 7 else 422,
                rng.choice([rng.random() * 10, 1e-300, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]),
                body,
                b'{"predictions": [0.5]}' if i % 6 else None,
                None if i % 7 else "column 'age': expected a number\n\ttab",
            )
        )
    return rows


@pytest.mark.parametrize(
    "odd_body",
    [None, b"\xff\xfe not UTF-8", b"csv,with\x00nul\n1,2\n"],
    ids=["text-bodies", "non-utf8-body", "nul-in-body"],
)
def test_every_field_is_stored_exactly(tmp_path: Path, monkeypatch, odd_body) -> None:
    bodies: list[bytes | None] = [
        b'{"features": {"plan": "\\u00e9", "x": 1e400}}',
        '{"features": {"plan": "é ✓ 😀"}}'.encode(),
        None,
        b"",
        b"plain,csv\n1,2\n",
    ] * 40
    if odd_body is not None:
        bodies[57] = odd_body
    rows = _rows(bodies)
    taken = []
    real = predlog._json_batch

    def spy(batch):
        out = real(batch)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(predlog, "_json_batch", spy)
    monkeypatch.setattr(predlog, "_JSON_CHUNK", 64)  # 200 rows: four statements
    log = PredictionLog(tmp_path / "p.db", flush_interval_seconds=60)
    try:
        for r in rows:
            log.append(r[0], *r[2:7], r[8], r[9], r[10], r[11], shadow=bool(r[7]), error=r[12])
        assert log.flush() == len(rows)
    finally:
        log.close()
    # text bodies: one statement per chunk; the chunk holding the odd body (row 57): executemany
    assert taken == [odd_body is None, True, True, True]
    stored = _stored(tmp_path / "p.db")
    assert len(stored) == len(rows)
    for got, want in zip(stored, rows, strict=True):
        # ts is the append time (not given); every other field is byte-for-byte / bit-for-bit the same
        assert got[0] == want[0] and got[2:] == want[2:], (got, want)
        assert isinstance(got[1], float)
    assert all(type(s[10]) is bytes for s in stored if s[10] is not None)  # bodies stay BLOBs


def test_a_failed_write_keeps_the_rows_queued(tmp_path: Path, monkeypatch) -> None:
    log = PredictionLog(tmp_path / "p.db", flush_interval_seconds=60)
    try:
        log.append("a", "/predict", "m", "1", None, None, 200, 1.0, b"{}", b"{}")
        monkeypatch.setattr(predlog, "_INSERT_JSON", "INSERT INTO no_such_table SELECT 1")
        with pytest.raises(sqlite3.OperationalError):
            log.flush()
        assert log.pending == 1
        monkeypatch.undo()
        assert log.flush() == 1
    finally:
        log.close()
    assert [r[0] for r in _stored(tmp_path / "p.db")] == ["a"]
