"""Promotion under bounded load (issue 13 acceptance): c=16 for 30 s, the champion moves half-way.

A real ``sparkpipe serve`` (one worker, prediction log on) serves ``churn_model`` (champion -> 1). Sixteen
keep-alive clients send ``POST /predict`` for ``--seconds``; half-way the champion is promoted to
version 2, either with ``POST /models/churn_model/aliases/champion`` (``--via alias``) or by an A/B
experiment in shadow mode promoted with ``POST /ab/churn_model/promote`` (``--via ab``). Reported: the
non-200 count (expected 0) and, per client, how many times the served version changed (expected
exactly once: 1 ... 1 2 ... 2), and the number of requests.

Usage::

    .venv/bin/python benchmarks/promotion_load.py --workdir /tmp/sparkpipe-abbench [--via ab]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abtest_store import MODEL, Server, ensure_store

RESULTS = Path(__file__).resolve().parent / "results"


def _post(port: int, path: str, body: dict | None, method: str = "POST") -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(method, path, body=json.dumps(body or {}), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    if r.status != 200:
        raise RuntimeError(f"{method} {path}: {r.status} {data}")
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sparkpipe-abbench"))
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--via", choices=("alias", "ab"), default="alias")
    args = ap.parse_args()
    uri = ensure_store(args.workdir)  # champion -> 1, challenger -> 2
    db = args.workdir / f"promotion-{args.via}.db"
    db.unlink(missing_ok=True)
    server = Server(args.workdir, uri, {"enabled": True, "path": str(db)})
    answers: list[list[tuple[float, int, str | None]]] = [[] for _ in range(args.concurrency)]
    stop = threading.Event()
    body = server.body()
    if args.via == "ab":
        _post(server.port, f"/ab/{MODEL}", {"mode": "shadow", "challenger": "challenger"}, method="PUT")

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        while not stop.is_set():
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
            except OSError:
                answers[i].append((time.monotonic(), 0, None))
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                continue
            version = json.loads(data).get("version") if r.status == 200 else None
            answers[i].append((time.monotonic(), r.status, version))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        time.sleep(args.seconds / 2)
        promoted_at = time.monotonic()
        if args.via == "alias":
            _post(server.port, f"/models/{MODEL}/aliases/champion", {"version": "2", "reason": "load test"})
        else:
            _post(server.port, f"/ab/{MODEL}/promote", None)
        promote_seconds = time.monotonic() - promoted_at
        time.sleep(max(0.0, t0 + args.seconds - time.monotonic()))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        code = server.stop()
    flat = [a for xs in answers for a in xs]
    switches = [
        sum(a != b for a, b in itertools.pairwise([v for _, _, v in xs if v is not None])) for xs in answers
    ]
    firsts = {xs[0][2] for xs in answers if xs}
    lasts = {xs[-1][2] for xs in answers if xs}
    out = {
        "via": args.via,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "requests": len(flat),
        "non_200": sum(s != 200 for _, s, _ in flat),
        "switches_per_client": switches,
        "first_versions": sorted(v for v in firsts if v),
        "last_versions": sorted(v for v in lasts if v),
        "promote_call_seconds": round(promote_seconds, 3),
        "exit_code": code,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"promotion_load_{args.via}.json").write_text(json.dumps(out, indent=2))
    ok = out["non_200"] == 0 and set(switches) == {1}
    print(json.dumps(out, indent=2))
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
