"""The experiment statistics against known values and SciPy, and the A/A false-positive rate."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as st

from sparkpipe.config import ABTestConfig
from sparkpipe.serving import stats
from sparkpipe.serving.experiments import CHALLENGER, CHAMPION, Experiment, outcome


def test_two_proportion_ztest_known_value() -> None:
    # 200/1000 vs 250/1000: pooled p = 0.225, se = sqrt(.225*.775*2/1000) = 0.018675, z = 2.6774
    r = stats.two_proportion_ztest(200, 1000, 250, 1000)
    assert r.statistic == pytest.approx(2.6774, abs=1e-4)
    assert r.p_value == pytest.approx(0.007419, abs=1e-5)
    assert r.difference == pytest.approx(0.05)
    se = math.sqrt(0.2 * 0.8 / 1000 + 0.25 * 0.75 / 1000)
    assert r.ci_low == pytest.approx(0.05 - 1.959964 * se, abs=1e-6)
    # equals the chi-square test without continuity correction (z^2 = chi2)
    chi2 = st.chi2_contingency([[200, 800], [250, 750]], correction=False)
    assert r.statistic**2 == pytest.approx(chi2.statistic, rel=1e-9)
    assert r.p_value == pytest.approx(chi2.pvalue, rel=1e-9)


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 2, 40), rng.normal(11, 5, 25)
    r = stats.welch_ttest(a.mean(), a.var(ddof=1), len(a), b.mean(), b.var(ddof=1), len(b))
    ref = st.ttest_ind(b, a, equal_var=False)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))


def test_intervals_and_sample_sizes() -> None:
    lo, hi = stats.wilson_interval(50, 100)  # textbook: 0.4038 .. 0.5962
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    # Fleiss without continuity correction: p1 = .10, p2 = .15, alpha .05 two-sided, power .8 -> 686
    # ((1.95996 * sqrt(2 * .125 * .875) + 0.84162 * sqrt(.09 + .1275))^2 / .05^2 = 685.6)
    assert stats.sample_size_proportions(0.10, 0.05) == 686
    # means: 2 * ((1.96 + 0.8416) * sd / mde)^2 with sd = mde -> 15.7 -> 16
    assert stats.sample_size_means(1.0, 1.0) == 16
    m = stats.Moments()
    for x in (1.0, 2.0, 4.0):
        m.add(x)
    assert m.mean == pytest.approx(7 / 3) and m.var == pytest.approx(np.var([1, 2, 4], ddof=1))


def test_aa_false_positive_rate_is_at_most_alpha() -> None:
    """200 A/A experiments of 2,000 Bernoulli(0.1) outcomes per variant: at most 5 % reach p < 0.05."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(200):
        a, b = rng.binomial(2000, 0.1), rng.binomial(2000, 0.1)
        hits += stats.two_proportion_ztest(int(a), 2000, int(b), 2000).p_value < 0.05
    assert hits / 200 <= 0.05


def test_power_at_the_predicted_sample_size() -> None:
    """At the per-variant size the formula predicts, a +5 point challenger is detected ~80 % of runs."""
    n = stats.sample_size_proportions(0.10, 0.05)
    rng = np.random.default_rng(5)
    detected = sum(
        stats.two_proportion_ztest(int(rng.binomial(n, 0.10)), n, int(rng.binomial(n, 0.15)), n).p_value
        < 0.05
        for _ in range(400)
    )
    assert 0.72 <= detected / 400 <= 0.88


def _experiment(**kw: object) -> Experiment:
    return Experiment("m", ABTestConfig(enabled=True, **kw), "m-1", 0.0)


def test_split_is_sticky_and_near_the_share() -> None:
    exp = _experiment(challenger_traffic=0.3, mode="split")
    keys = [f"customer-{i}" for i in range(10_000)]
    first = [exp.choose(k) for k in keys]
    assert first == [exp.choose(k) for k in keys]  # the same key, the same variant
    share = first.count(CHALLENGER) / len(keys)
    assert abs(share - 0.3) < 0.01
    assert _experiment(challenger_traffic=0.0).choose("x") == CHAMPION
    assert {_experiment(challenger_traffic=1.0).choose(k) for k in keys[:50]} == {CHALLENGER}


def test_bandit_moves_traffic_to_the_better_variant() -> None:
    exp = _experiment(mode="bandit", metric="conversion")
    exp.rng = random.Random(1)
    truth = {CHAMPION: 0.10, CHALLENGER: 0.30}
    rng = random.Random(2)
    picks = []
    for _ in range(3000):
        v = exp.choose("")
        picks.append(v)
        exp.outcomes[v].add(float(rng.random() < truth[v]))
    assert picks[-1000:].count(CHALLENGER) > 900


def test_outcomes_per_metric() -> None:
    out = b'{"model":"m","version":"1","predictions":[{"prediction":1.0}]}'
    assert outcome("conversion", out, 1, None) == 1.0 and outcome("conversion", out, 0, None) == 0.0
    assert outcome("conversion", out, None, None) is None
    assert outcome("accuracy", out, 1, None) == 1.0 and outcome("accuracy", out, "0", None) == 0.0
    assert outcome("value", out, None, 12.5) == 12.5
    assert outcome("abs_error", out, None, 3.0) == 2.0


def test_ab_testing_and_prediction_log_config_keys(tmp_path: object) -> None:
    from sparkpipe.config import build_config
    from sparkpipe.errors import ConfigError
    from sparkpipe.serving.settings import ServingSettings

    cfg = build_config(
        {
            "deployment": {
                "model_name": "churn_model",
                "jobs_dir": "state/jobs",
                "ab_testing": {"enabled": True, "mode": "shadow", "metric": "accuracy", "sticky_key": "user"},
                "prediction_log": {"flush_interval_seconds": 0.5},
            }
        },
        semantic=False,
    )
    settings = ServingSettings.from_config(cfg)
    assert settings.ab_testing.mode == "shadow" and settings.ab_testing.sticky_key == "user"
    assert settings.prediction_log_path().as_posix() == "state/predictions.db"
    with pytest.raises(ConfigError, match=r"deployment\.ab_testing\.mode"):
        build_config({"deployment": {"ab_testing": {"mode": "canary"}}}, semantic=False)
