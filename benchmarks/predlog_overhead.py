"""Prediction-log overhead and SIGTERM durability (issue 13 item 4), on a real ``sparkpipe serve``.

1. Throughput: one worker, concurrency 16, ``POST /predict`` of the model's example row, with the
   prediction log off and on, alternating for ``--rounds`` rounds (``wrk`` when installed, else a
   Python client); the ratio of the medians must be >= 0.80.
2. SIGTERM under load: 16 keep-alive clients send requests with unique ``X-Request-ID``s; the server
   gets SIGTERM mid-load; after it exits, every request id answered 200 must be in the log (and
   nothing else).

Usage::

    .venv/bin/python benchmarks/predlog_overhead.py --workdir /tmp/abbench   # writes benchmarks/results/predlog.{json,md}
"""

from __future__ import annotations

import argparse
import http.client
import json
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abtest_store import Server, ensure_store

from serving import concurrent

RESULTS = Path(__file__).resolve().parent / "results"


def throughput(workdir: Path, uri: str, args: argparse.Namespace) -> dict:
    runs: dict[str, list[float]] = {"off": [], "on": []}
    tool = None
    for r in range(args.rounds):
        for mode in ("off", "on"):
            predlog = {"enabled": mode == "on", "path": str(workdir / f"overhead-{r}.db")}
            server = Server(workdir, uri, predlog)
            try:
                body = server.body()
                concurrent(server.port, "/predict", body, args.concurrency, 2)  # warm-up
                res = concurrent(server.port, "/predict", body, args.concurrency, args.seconds)
            finally:
                server.stop()
            if res["errors"]:
                raise RuntimeError(f"{res['errors']} errors with logging {mode}")
            runs[mode].append(res["rps"])
            tool = res["tool"]
            print(f"round {r + 1} logging {mode}: {res['rps']:.0f} req/s", file=sys.stderr, flush=True)
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    return {
        "tool": tool,
        "rps_off": runs["off"],
        "rps_on": runs["on"],
        "median_off": off,
        "median_on": on,
        "ratio": on / off,
    }


def sigterm(workdir: Path, uri: str, args: argparse.Namespace) -> dict:
    db = workdir / "sigterm.db"
    db.unlink(missing_ok=True)
    server = Server(workdir, uri, {"enabled": True, "path": str(db), "flush_interval_seconds": 1.0})
    body = server.body()
    answered: list[list[str]] = [[] for _ in range(args.concurrency)]
    unanswered = [0] * args.concurrency
    stop = threading.Event()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        n = 0
        while True:
            rid = f"c{i}-{n}"
            n += 1
            try:
                conn.request(
                    "POST",
                    "/predict",
                    body=body,
                    headers={"Content-Type": "application/json", "X-Request-ID": rid},
                )
                resp = conn.getresponse()
                resp.read()
            except OSError:
                if not stop.is_set():
                    unanswered[i] += 1
                return
            if resp.status == 200:
                answered[i].append(rid)
            if resp.getheader("connection", "").lower() == "close" or stop.is_set():
                return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    time.sleep(args.sigterm_after)
    t0 = time.monotonic()
    code = server.stop()
    stopped_in = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(timeout=30)
    ids = {rid for ids in answered for rid in ids}
    with sqlite3.connect(db) as conn:
        logged = {r[0] for r in conn.execute("SELECT request_id FROM predictions WHERE status = 200")}
        rows = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    return {
        "answered_200": len(ids),
        "logged_rows": rows,
        "answered_but_not_logged": len(ids - logged),
        "logged_but_not_answered": len(logged - ids),
        "unanswered_before_stop": sum(unanswered),
        "exit_code": code,
        "shutdown_seconds": round(stopped_in, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sparkpipe-abbench"))
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sigterm-after", type=float, default=5.0)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    uri = ensure_store(args.workdir)
    out: dict = {"concurrency": args.concurrency, "seconds": args.seconds}
    if not args.skip_throughput:
        out["throughput"] = throughput(args.workdir, uri, args)
    out["sigterm"] = sigterm(args.workdir, uri, args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "predlog.json").write_text(json.dumps(out, indent=2))
    lines = ["# Prediction log: overhead and SIGTERM", ""]
    if "throughput" in out:
        t = out["throughput"]
        lines += [
            f"One worker, concurrency {args.concurrency}, {args.seconds:.0f} s per run, {args.rounds} rounds "
            f"({t['tool']}).",
            "",
            "| logging | req/s (median) | runs |",
            "|---|---|---|",
            f"| off | {t['median_off']:.0f} | {', '.join(f'{x:.0f}' for x in t['rps_off'])} |",
            f"| on | {t['median_on']:.0f} | {', '.join(f'{x:.0f}' for x in t['rps_on'])} |",
            "",
            f"Ratio on/off: **{t['ratio']:.2f}** (target >= 0.80).",
            "",
        ]
    s = out["sigterm"]
    lines += [
        f"SIGTERM after {args.sigterm_after:.0f} s of load: {s['answered_200']} requests answered 200, "
        f"{s['logged_rows']} rows logged, {s['answered_but_not_logged']} answered but not logged, "
        f"{s['logged_but_not_answered']} logged but not answered; exit code {s['exit_code']}.",
    ]
    (RESULTS / "predlog.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
