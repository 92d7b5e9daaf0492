"""A/B simulator (issue 13 item 7): synthetic traffic with a known ground truth through the service.

The service runs in process (the real ASGI app, prediction log and all, driven by ``httpx`` over
``ASGITransport``), serving ``churn_model`` from the benchmark store (``abtest_store.ensure_store``).
Each simulated user sends ``POST /predict`` with a ``customer_id`` (the sticky key) and an
``X-Request-ID``; the variant that answered decides the user's true conversion probability, an outcome
is drawn from it and sent to ``POST /feedback``; ``GET /ab/churn_model`` is the report under test.

* **Power**: champion converts at 10 %, challenger at 15 % (5 points higher). Users arrive in batches
  of 100 until both variants have the labelled outcomes the report says are needed for a minimum
  detectable effect of 5 points (alpha 0.05, power 0.8); the report's p-value there is recorded
  (expected: p < 0.05 in about 80 % of runs), and so is the first sample size at which p < 0.05.
* **A/A**: both variants serve version 1 and convert at 10 %; ``--aa-runs`` experiments (>= 200) of
  ``--aa-users`` users each; the false-positive rate (p < 0.05 at the end) must be <= 5 %.
* The same two questions answered by the statistics alone (no HTTP, ``--stats-runs`` repetitions).

Usage::

    .venv/bin/python benchmarks/abtest_sim.py --workdir /tmp/sparkpipe-abbench   # results/abtest_sim.{json,md}
    .venv/bin/python benchmarks/abtest_sim.py --power-runs 0    # only the A/A part (the power result is kept)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abtest_store import MODEL, ensure_store

RESULTS = Path(__file__).resolve().parent / "results"
ROW = {"plan": "pro", "tenure_months": 12, "monthly_charges": 70.5}


async def _user(http: Any, rng: random.Random, uid: str, truth: dict[str, float]) -> str:
    r = await http.post(
        "/predict", json={"customer_id": uid, "features": ROW}, headers={"X-Request-ID": f"r-{uid}"}
    )
    r.raise_for_status()
    variant = r.json()["variant"]
    label = int(rng.random() < truth[variant])
    f = await http.post("/feedback", json={"request_id": f"r-{uid}", "label": label})
    f.raise_for_status()
    return variant


async def _restart(http: Any, headers: dict[str, str], routing: dict[str, Any]) -> None:
    for body in ({"enabled": False}, {**routing, "enabled": True}):
        r = await http.put(f"/ab/{MODEL}", json=body, headers=headers)
        r.raise_for_status()


async def simulate(args: argparse.Namespace, uri: str) -> dict[str, Any]:
    import httpx

    from sparkpipe.serving import stats
    from sparkpipe.serving.app import create_app
    from sparkpipe.serving.settings import ServingSettings

    tmp = Path(tempfile.mkdtemp(prefix="abtest-sim-"))
    settings = ServingSettings(
        tracking_uri=uri,
        model_name=MODEL,
        reload_interval_seconds=0,
        jobs_dir=str(tmp / "jobs"),
        model_cache_dir=str(args.workdir / "cache"),
        allowed_data_roots=[str(tmp)],
        api_key="sim-key",
        log_level="WARNING",
        prediction_log={"path": str(tmp / "predictions.db"), "flush_interval_seconds": 0.5},
    )
    app = create_app(settings)
    headers = {"X-API-Key": "sim-key"}
    rng = random.Random(args.seed)
    out: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim", timeout=60) as http:
            common = {
                "challenger_traffic": 0.5,
                "sticky_key": "customer_id",
                "metric": "conversion",
                "minimum_detectable_effect": 0.05,
                "max_error_rate": None,
            }
            # ------------------------------------------------------------------ power
            power = []
            t0 = time.perf_counter()
            for run in range(args.power_runs):
                await _restart(http, headers, {**common, "champion": "champion", "challenger": "challenger"})
                truth = {"champion": 0.10, "challenger": 0.15}
                first_detect = None
                users = 0
                while True:
                    for _ in range(100):
                        await _user(http, rng, f"p{run}-{users}", truth)
                        users += 1
                    rep = (await http.get(f"/ab/{MODEL}")).json()
                    n = min(v["labelled"] for v in rep["variants"].values())
                    p = rep["test"]["p_value"]
                    if first_detect is None and p is not None and p < 0.05:
                        first_detect = n
                    required = rep["sample_size"]["per_variant_required"]
                    if n >= required:
                        break
                power.append(
                    {
                        "required_per_variant": required,
                        "labelled_per_variant": n,
                        "p_value": p,
                        "detected": p < 0.05,
                        "first_detection_n": first_detect,
                        "recommendation": rep["recommendation"]["action"],
                        "rates": {k: v["value"] for k, v in rep["variants"].items()},
                    }
                )
                print(
                    f"power run {run + 1}: n={n} (required {required}) p={p:.4f}", file=sys.stderr, flush=True
                )
            out["power"] = (
                {}
                if not power
                else {
                    "runs": power,
                    "detection_rate_at_required_n": sum(r["detected"] for r in power) / len(power),
                    "median_required": statistics.median(r["required_per_variant"] for r in power),
                    "median_first_detection_n": statistics.median(
                        [r["first_detection_n"] for r in power if r["first_detection_n"] is not None] or [0]
                    ),
                    "seconds": time.perf_counter() - t0,
                }
            )
            # ------------------------------------------------------------------ A/A
            t0 = time.perf_counter()
            aa = []
            for run in range(args.aa_runs):
                await _restart(http, headers, {**common, "champion": "champion", "challenger": "1"})
                for u in range(args.aa_users):
                    await _user(http, rng, f"a{run}-{u}", {"champion": 0.10, "challenger": 0.10})
                rep = (await http.get(f"/ab/{MODEL}")).json()
                versions = {v for x in rep["variants"].values() for v in x["versions"]}
                assert versions == {"1"}, versions  # two identical models
                aa.append(rep["test"]["p_value"])
                if (run + 1) % 20 == 0:
                    rate = sum(p < 0.05 for p in aa) / len(aa)
                    print(f"A/A {run + 1}: false positives {rate:.3f}", file=sys.stderr, flush=True)
            fp = sum(p < 0.05 for p in aa)
            out["aa"] = (
                {}
                if not aa
                else {
                    "experiments": len(aa),
                    "users_per_experiment": args.aa_users,
                    "false_positives": fp,
                    "false_positive_rate": fp / len(aa),
                    "false_positive_rate_ci95": list(stats.wilson_interval(fp, len(aa))),
                    "seconds": time.perf_counter() - t0,
                }
            )
    out["stats_only"] = stats_only(args)
    return out


def stats_only(args: argparse.Namespace) -> dict[str, Any]:
    """The same questions on the statistics alone (binomial draws, no HTTP)."""
    import numpy as np

    from sparkpipe.serving import stats

    rng = np.random.default_rng(args.seed)
    n = stats.sample_size_proportions(0.10, 0.05)
    detected = sum(
        stats.two_proportion_ztest(int(rng.binomial(n, 0.10)), n, int(rng.binomial(n, 0.15)), n).p_value
        < 0.05
        for _ in range(args.stats_runs)
    )
    m = 2000
    fps = sum(
        stats.two_proportion_ztest(int(rng.binomial(m, 0.10)), m, int(rng.binomial(m, 0.10)), m).p_value
        < 0.05
        for _ in range(args.stats_runs)
    )
    return {
        "required_per_variant": n,
        "power_at_required_n": detected / args.stats_runs,
        "aa_false_positive_rate": fps / args.stats_runs,
        "runs": args.stats_runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sparkpipe-abbench"))
    ap.add_argument("--power-runs", type=int, default=10)
    ap.add_argument("--aa-runs", type=int, default=200)
    ap.add_argument("--aa-users", type=int, default=400)
    ap.add_argument("--stats-runs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    uri = ensure_store(args.workdir)
    fresh = asyncio.run(simulate(args, uri))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "abtest_sim.json"
    out = json.loads(path.read_text()) if path.is_file() else {}
    out.update({k: v for k, v in fresh.items() if v})  # a part skipped (0 runs) keeps its last result
    path.write_text(json.dumps(out, indent=2))
    p, aa, s = out.get("power") or {}, out.get("aa") or {}, out["stats_only"]
    power_lines = (
        [
            f"| sample size the report predicted (per variant, median of runs) | {p['median_required']:.0f} |",
            f"| +5 points detected (p < 0.05) at that size | {p['detection_rate_at_required_n']:.0%} of "
            f"{len(p['runs'])} runs (design power 80 %) |",
            f"| first n with p < 0.05 (median) | {p['median_first_detection_n']:.0f} |",
        ]
        if p
        else []
    )
    aa_lines = (
        [
            f"| A/A false-positive rate | {aa['false_positive_rate']:.1%} ({aa['false_positives']} of "
            f"{aa['experiments']} experiments of {aa['users_per_experiment']} users; 95 % CI "
            f"{aa['false_positive_rate_ci95'][0]:.1%}-{aa['false_positive_rate_ci95'][1]:.1%}) |",
        ]
        if aa
        else []
    )
    lines = [
        "# A/B simulator",
        "",
        "Ground truth: champion 10 % conversion, challenger 15 % (power) or 10 % on the same version (A/A); "
        "split 50/50 by customer id; outcomes through POST /feedback; the report of GET /ab/churn_model.",
        "",
        "| question | result |",
        "|---|---|",
        *power_lines,
        *aa_lines,
        f"| statistics only: power at n = {s['required_per_variant']} | {s['power_at_required_n']:.1%} "
        f"({s['runs']} runs) |",
        f"| statistics only: A/A false-positive rate | {s['aa_false_positive_rate']:.1%} ({s['runs']} runs) |",
    ]
    (RESULTS / "abtest_sim.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
