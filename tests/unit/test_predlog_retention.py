"""Prediction-log retention: max_rows and retention_days, applied by the writer thread."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sparkpipe.serving.predlog import PredictionLog


def _append(log: PredictionLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.append(f"r{i}", "/predict", "m", "1", None, None, 200, 1.0, b"{}", b"{}")


def _ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM predictions ORDER BY id")]


def test_writer_thread_keeps_the_newest_max_rows(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    log = PredictionLog(db, flush_interval_seconds=0.05, max_rows=1000, prune_interval_seconds=1)
    try:
        _append(log, 2500)
        log.flush()
        log.add_feedback("r0", 1, None)  # feedback of a pruned prediction goes with it
        log.add_feedback("r2499", 1, None)
        deadline = time.time() + 20
        while len(_ids(db)) > 1000:
            assert time.time() < deadline, "the writer thread did not apply max_rows"
            time.sleep(0.1)
        _append(log, 5, start=2500)  # the log keeps working after a prune
    finally:
        log.close()
    ids = _ids(db)
    assert len(ids) == 1005 and ids[0] == "r1500" and ids[-1] == "r2504"
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT request_id FROM feedback")] == ["r2499"]


def test_retention_days_deletes_older_rows_only(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    log = PredictionLog(db, flush_interval_seconds=60, retention_days=1)
    try:
        _append(log, 30)
        log.flush()
        with log.connect() as conn:  # the first 20 were logged three days ago
            conn.execute("UPDATE predictions SET ts = ts - 3 * 86400 WHERE id <= 20")
        assert log.prune() == 20
        assert log.prune() == 0
        assert _ids(db) == [f"r{i}" for i in range(20, 30)]
        assert log.prune(now=time.time() + 2 * 86_400) == 10  # everything is old two days later
    finally:
        log.close()
    assert _ids(db) == []
