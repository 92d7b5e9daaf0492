"""Drift statistics (sparkpipe.serving.drift) against known values and SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from sparkpipe.config import DriftConfig
from sparkpipe.serving.drift import (
    chi_square,
    drift_report,
    jensen_shannon,
    ks_against_profile,
    psi,
    psi_against_profile,
    reference_cdf,
    reference_knots,
)


def _profile_entry(x: np.ndarray, kind: str = "double") -> dict:
    qs = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}
    return {
        "type": kind,
        "min": float(x.min()),
        "max": float(x.max()),
        "quantiles": {k: float(np.quantile(x, q, method="inverted_cdf")) for k, q in qs.items()},
    }


def test_psi_known_value() -> None:
    # (0.3-0.5) ln(0.3/0.5) + (0.7-0.5) ln(0.7/0.5)
    assert psi([0.5, 0.5], [0.3, 0.7]) == pytest.approx(0.2 * math.log(5 / 3) + 0.2 * math.log(7 / 5))
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    assert psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0  # an empty bin on both sides adds nothing


def test_jensen_shannon_and_chi_square_equal_scipy() -> None:
    p, q = [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]
    assert jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q))
    assert jensen_shannon(p, p) == pytest.approx(0.0, abs=1e-12)
    observed = [30, 50, 20]
    stat, pv = chi_square([0.3, 0.4, 0.3], observed)
    ref = stats.chisquare(observed, [30, 40, 30])
    assert stat == pytest.approx(ref.statistic) and pv == pytest.approx(ref.pvalue)
    # a reference sample of 200 rows with those shares: the two-sample (contingency) test
    stat, pv = chi_square([0.3, 0.4, 0.3], observed, reference_rows=200)
    ref = stats.chi2_contingency([[60, 80, 60], observed], correction=False)
    assert stat == pytest.approx(ref.statistic) and pv == pytest.approx(ref.pvalue)


def test_ks_against_an_exact_uniform_profile_equals_scipy_kstest() -> None:
    # uniform(0, 1): its quantiles make the interpolated CDF exact, so KS equals scipy's one-sample test
    entry = {
        "type": "double",
        "min": 0.0,
        "max": 1.0,
        "quantiles": {
            "p01": 0.01,
            "p05": 0.05,
            "p25": 0.25,
            "p50": 0.5,
            "p75": 0.75,
            "p95": 0.95,
            "p99": 0.99,
        },
    }
    rng = np.random.default_rng(1)
    for x in (rng.uniform(0, 1, 500), rng.uniform(0.1, 1.2, 300)):
        d, p = ks_against_profile(entry, x, reference_rows=1_000)
        assert d == pytest.approx(stats.kstest(x, "uniform").statistic, abs=1e-12)
        en = len(x) * 1000 / (len(x) + 1000)
        assert p == pytest.approx(stats.kstwo.sf(d, round(en)))


def test_ks_and_psi_flag_a_shift_and_not_a_fresh_sample() -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(70, 20, 5_000)
    entry = _profile_entry(train)
    same, shifted = rng.normal(70, 20, 2_000), rng.normal(70, 20, 2_000) * 1.8
    # the two-sample test of scipy on the raw data agrees with the verdict from quantiles
    assert ks_against_profile(entry, same, 5_000)[0] < 0.05 < ks_against_profile(entry, shifted, 5_000)[0]
    assert stats.ks_2samp(train, shifted).statistic == pytest.approx(
        ks_against_profile(entry, shifted, 5_000)[0], abs=0.05
    )
    assert psi_against_profile(entry, same)["psi"] < 0.1 < psi_against_profile(entry, shifted)["psi"]


def test_discrete_columns_merge_equal_quantiles() -> None:
    rng = np.random.default_rng(3)
    train = rng.integers(0, 13, 200).astype(float)
    entry = _profile_entry(train, "bigint")
    knots = reference_knots(entry)
    assert list(knots[0]) == sorted(set(knots[0]))  # distinct x
    assert reference_cdf(knots, np.array([-1.0, 1e9])).tolist() == [0.0, 1.0]
    binned = psi_against_profile(entry, rng.integers(0, 13, 400))
    assert sum(binned["expected"]) == pytest.approx(1.0) and sum(binned["actual"]) == pytest.approx(1.0)
    d, p = ks_against_profile(entry, rng.integers(0, 13, 400), 200, integral=True)
    assert p > 0.05, d


def test_report_decides_by_reference_size_and_counts_the_share() -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 10, 3_000)
    profile = {
        "row_count": 3_000,
        "columns": {
            "x": {**_profile_entry(x), "null_ratio": 0.0},
            "plan": {"type": "string", "top_values": {"a": 0.5, "b": 0.3}, "other_share": 0.2},
            "flag": {"type": "boolean", "mean": 0.5},
            "when": {"type": "timestamp"},
        },
    }
    rows = [
        {
            "x": float(v),
            "plan": "a" if i % 2 else ("zz" if i % 3 else "b"),
            "flag": i % 2 == 0,
            "when": "2024",
        }
        for i, v in enumerate(rng.uniform(0, 10, 1_000) * 1.8)
    ]
    big = drift_report(profile, rows, ["x", "plan", "flag", "when", "missing"], DriftConfig())
    by = {f["feature"]: f for f in big["features"]}
    assert by["x"]["stattest"] == "psi" and by["x"]["drifted"]
    assert by["plan"]["stattest"] == "jensen_shannon"
    assert by["flag"]["stattest"] == "jensen_shannon" and not by["flag"]["drifted"]
    assert not by["when"]["compared"] and not by["missing"]["compared"]
    assert big["features_compared"] == 3 and big["drift_share"] == len(big["drifted_features"]) / 3
    small = drift_report({**profile, "row_count": 500}, rows, ["x", "plan"], DriftConfig())
    assert [f["stattest"] for f in small["features"]] == ["ks", "chi_square"]
