"""Visible progress for long steps: step names, elapsed time and live Spark job progress.

``Progress.step(name)`` logs when a step starts and ends (with its duration); while a step runs, a
daemon thread polls Spark's status tracker and logs the active stage's task counts every few seconds, so
a long ``fit`` on a cluster is never silent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sparkpipe.progress")


@dataclass
class Progress:
    spark: Any = None
    interval: float = 5.0
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        log.info("▶ %s ...", name)
        t0 = time.perf_counter()
        stop = threading.Event()
        watcher = None
        if self.spark is not None:
            watcher = threading.Thread(target=self._watch, args=(name, t0, stop), daemon=True)
            watcher.start()
        try:
            yield
        finally:
            stop.set()
            if watcher is not None:
                watcher.join(timeout=1)
            elapsed = time.perf_counter() - t0
            self.timings[name] = self.timings.get(name, 0.0) + elapsed
            log.info("✔ %s (%.1fs)", name, elapsed)

    def _watch(self, name: str, t0: float, stop: threading.Event) -> None:
        try:
            tracker = self.spark.sparkContext.statusTracker()
        except Exception:  # session gone
            return
        quiet = 0.0
        while not stop.wait(self.interval):
            try:
                parts = []
                for sid in tracker.getActiveStageIds():
                    info = tracker.getStageInfo(sid)
                    if info is not None:
                        parts.append(f"stage {sid} {info.numCompletedTasks}/{info.numTasks} tasks")
                jobs = tracker.getActiveJobsIds()
            except Exception:
                return
            if not parts:  # no Spark work right now: a heartbeat every 30 s is enough
                quiet += self.interval
                if quiet < 30:
                    continue
            quiet = 0.0
            detail = ", ".join(parts) if parts else "no active Spark stage"
            log.info(
                "  … %s: %.0fs elapsed, %d Spark job(s) running; %s",
                name,
                time.perf_counter() - t0,
                len(jobs),
                detail,
            )
