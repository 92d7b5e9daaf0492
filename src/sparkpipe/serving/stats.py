"""Statistics of an online experiment: confidence intervals, tests, sample sizes (SciPy's distributions).

Rates (conversion, accuracy) use the two-proportion z-test with the pooled standard error and a Wald
interval for the difference; per-variant rates get a Wilson score interval. Means (a value, an
absolute error) use Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom) and a
t interval. Sample sizes are the usual normal-approximation formulas for a two-sided test of level
``alpha`` with the given ``power`` (per variant, equal allocation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats as _st


@dataclass
class TestResult:
    """The comparison of a challenger (b) with a champion (a)."""

    test: str
    statistic: float | None
    p_value: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _z(q: float) -> float:
    return float(_st.norm.ppf(q))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (``(0, 1)`` for ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    z = _z(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(mean: float, var: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """t interval of a mean (``None`` below two observations)."""
    if n < 2:
        return None
    half = float(_st.t.ppf(1 - (1 - confidence) / 2, n - 1)) * math.sqrt(var / n)
    return mean - half, mean + half


def two_proportion_ztest(x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95) -> TestResult:
    """Two-sided z-test of ``p_b - p_a`` with the pooled standard error; Wald interval of the difference."""
    if n_a <= 0 or n_b <= 0:
        return TestResult("two-proportion z-test", None, None, None, None, None)
    p_a, p_b = x_a / n_a, x_b / n_b
    pooled = (x_a + x_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    diff = p_b - p_a
    if se0 == 0:
        z, p = 0.0, 1.0
    else:
        z = diff / se0
        p = float(2 * _st.norm.sf(abs(z)))
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    zc = _z(1 - (1 - confidence) / 2)
    return TestResult("two-proportion z-test", z, p, diff, diff - zc * se, diff + zc * se)


def welch_ttest(
    mean_a: float,
    var_a: float,
    n_a: int,
    mean_b: float,
    var_b: float,
    n_b: int,
    confidence: float = 0.95,
) -> TestResult:
    """Welch's two-sided t-test of ``mean_b - mean_a`` (sample variances, ddof=1) and its interval."""
    if n_a < 2 or n_b < 2:
        return TestResult("Welch's t-test", None, None, None, None, None)
    diff = mean_b - mean_a
    va, vb = var_a / n_a, var_b / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return TestResult("Welch's t-test", 0.0, 1.0 if diff == 0 else 0.0, diff, diff, diff)
    df = (va + vb) ** 2 / (va * va / (n_a - 1) + vb * vb / (n_b - 1))
    t = diff / se
    p = float(2 * _st.t.sf(abs(t), df))
    half = float(_st.t.ppf(1 - (1 - confidence) / 2, df)) * se
    return TestResult("Welch's t-test", t, p, diff, diff - half, diff + half)


def sample_size_proportions(p_a: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-variant sample size to detect ``p_a -> p_a + mde`` (two-sided, pooled variance under H0).

    ``p_a = 0.10, mde = 0.05`` gives 686 (Fleiss' formula without continuity correction).
    """
    p_b = min(max(p_a + mde, 1e-9), 1 - 1e-9)
    p_a = min(max(p_a, 1e-9), 1 - 1e-9)
    bar = (p_a + p_b) / 2
    za, zb = _z(1 - alpha / 2), _z(power)
    n = (za * math.sqrt(2 * bar * (1 - bar)) + zb * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))) ** 2
    return math.ceil(n / (mde * mde))


def sample_size_means(sd: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-variant sample size to detect a shift of ``mde`` in a mean with standard deviation ``sd``."""
    za, zb = _z(1 - alpha / 2), _z(power)
    return max(2, math.ceil(2 * ((za + zb) * sd / mde) ** 2))


@dataclass
class Moments:
    """Running count, sum and sum of squares (enough for a mean, a variance and a rate)."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.squares += x * x

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def var(self) -> float:
        """Sample variance (ddof=1)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))
