"""Generators of the synthetic built-in data sets (churn, taxi, segments), in Spark: every value is a
deterministic function of the row id and the seed (``_uniform``/``_normal`` draws with a per-column
salt), so a data set is the same on any cluster and partitioning. Registered in
:data:`sparkpipe.data.datasets.BUILTIN_DATASETS`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

#: 2024-07-01T00:00:00Z: the "now" of the synthetic churn data.
_CHURN_REFERENCE_EPOCH = 1_719_792_000


#: 2024-01-01T00:00:00Z: first pickup day of the synthetic taxi data.
_TAXI_START_EPOCH = 1_704_067_200


#: Strength and base rate of the churn signal (tuned so LR reaches AUC ~0.85-0.9 on 20k rows).
_CHURN_SIGNAL = 1.5


_CHURN_INTERCEPT = -2.2


def _uniform(seed: int, k: int) -> Column:
    """A uniform draw in ``[0, 1)`` that depends only on the row ``id``, ``seed`` and salt ``k``."""
    h = F.xxhash64(F.col("id"), F.lit(int(seed)).cast("long"), F.lit(int(k)).cast("long"))
    # the top 53 bits of the unsigned hash -> an exactly representable double in [0, 1)
    return F.shiftrightunsigned(h, 11).cast("double") / F.lit(float(1 << 53))


def _normal(seed: int, k: int) -> Column:
    """A standard normal draw (Box-Muller on two independent uniforms, salts ``k`` and ``k + 1``)."""
    u1 = F.lit(1.0) - _uniform(seed, k)  # (0, 1]
    u2 = _uniform(seed, k + 1)
    return F.sqrt(F.lit(-2.0) * F.log(u1)) * F.cos(F.lit(2.0 * math.pi) * u2)


def _choice(u: Column, values: Sequence[str | int], weights: Sequence[float]) -> Column:
    """Pick ``values[i]`` with probability ``weights[i]`` (normalised) from a uniform draw ``u``."""
    total = float(sum(weights))
    cumulative = 0.0
    expr: Column | None = None
    for value, weight in zip(values[:-1], weights[:-1], strict=True):
        cumulative += weight / total
        expr = (
            (F.when(u < cumulative, F.lit(value)))
            if expr is None
            else expr.when(u < cumulative, F.lit(value))
        )
    last = F.lit(values[-1])
    return last if expr is None else expr.otherwise(last)


def _lookup(col: Column, mapping: dict[str, float], default: float = 0.0) -> Column:
    """Map category values to numbers with a CASE expression."""
    expr: Column | None = None
    for key, value in mapping.items():
        cond = col == F.lit(key)
        expr = F.when(cond, F.lit(value)) if expr is None else expr.when(cond, F.lit(value))
    return F.lit(default) if expr is None else expr.otherwise(F.lit(default))


def _with_nulls(value: Column, u: Column, rate: float) -> Column:
    """``value``, or NULL for a fraction ``rate`` of rows (decided by the uniform draw ``u``)."""
    return F.when(u < rate, F.lit(None)).otherwise(value)


_PLANS = ("basic", "standard", "premium", "enterprise")


_REGIONS = ("north", "south", "east", "west", "central", "coastal")


_PAYMENTS = ("electronic_check", "mailed_check", "bank_transfer", "credit_card")


_NOTE_OPENERS = (
    "asked about the monthly bill",
    "requested a plan change",
    "reported slow internet at home",
    "praised the friendly service",
    "updated contact details",
)


def _churn_label(u: Callable[[int], Column]) -> Column:
    """The churn label: a logistic draw on the signal in tenure, charges, calls, plan, payment, region,
    age and login time."""
    login_hour = F.hour("last_login_ts")
    weekend = F.dayofweek("last_login_ts").isin(1, 7)
    signal = (
        -F.lit(0.055) * (F.col("tenure_months") - F.lit(25.0))
        + F.lit(0.03) * (F.col("monthly_charges") - F.lit(60.0))
        + F.lit(0.5) * (F.col("support_calls") - F.lit(1.5))
        + _lookup(F.col("plan"), {"basic": 0.5, "standard": 0.1, "premium": -0.4, "enterprise": -1.2})
        + _lookup(F.col("payment_method"), {"electronic_check": 1.0, "mailed_check": 0.25})
        + _lookup(F.col("region"), {"south": 0.35, "central": 0.5, "east": -0.25, "coastal": -0.4})
        + F.when(F.col("is_senior"), F.lit(0.6)).otherwise(F.lit(0.0))
        + F.when(login_hour < 6, F.lit(1.6)).otherwise(F.lit(0.0))
        + F.when(weekend, F.lit(-0.8)).otherwise(F.lit(0.0))
    )
    logit = F.lit(_CHURN_INTERCEPT) + F.lit(_CHURN_SIGNAL) * signal
    churned = (u(16) < F.lit(1.0) / (F.lit(1.0) + F.exp(-logit))).cast("int")
    return churned


def _churn_notes(u: Callable[[int], Column]) -> Column:
    """Free-text support notes."""
    login_hour = F.hour("last_login_ts")
    # free-text support notes: written from what the agent sees (calls, plan, login habits) plus noise;
    # drawn after the label with their own salts, so every other column is unchanged
    notes = F.concat_ws(
        " and ",
        _choice(u(23), _NOTE_OPENERS, (0.3, 0.2, 0.2, 0.15, 0.15)),
        F.when(F.col("support_calls") >= 3, F.lit("repeated complaints about dropped calls")),
        F.when((login_hour < 6) & (u(24) < 0.7), F.lit("usually contacts support late at night")),
        F.when((F.col("plan") == "basic") & (u(25) < 0.5), F.lit("mentioned a competitor offer")),
    )
    return notes


def _gen_churn(base: DataFrame, seed: int) -> DataFrame:
    """Telecom-style churn: ~20% positives, signal in numerics, categoricals and login time."""
    u = lambda k: _uniform(seed, k)  # noqa: E731
    n = lambda k: _normal(seed, k)  # noqa: E731
    df = _churn_draws(base, u, n)
    df = _churn_accounts(df)
    df = _churn_times(df, u)
    return _churn_columns(df, u)


def _churn_draws(base: DataFrame, u: Callable[[int], Column], n: Callable[[int], Column]) -> DataFrame:
    """Identity, demographics, plan, region, payment, tenure and the raw draws later columns use."""
    return base.select(
        "id",
        F.format_string("CUST-%08d", F.col("id")).alias("customer_id"),
        F.least(F.greatest(F.round(F.lit(46.0) + F.lit(15.0) * n(1)), F.lit(18.0)), F.lit(90.0))
        .cast("int")
        .alias("_age"),
        _choice(u(3), _PLANS, (0.35, 0.30, 0.20, 0.15)).alias("plan"),
        _choice(u(4), _REGIONS, (0.22, 0.18, 0.17, 0.16, 0.15, 0.12)).alias("region"),
        _choice(u(5), _PAYMENTS, (0.30, 0.18, 0.26, 0.26)).alias("payment_method"),
        F.floor(F.pow(u(6), F.lit(1.3)) * F.lit(73.0)).cast("int").alias("tenure_months"),
        n(7).alias("_charge_noise"),
        u(9).alias("_signup_offset"),
        F.floor(-F.log(F.lit(1.0) - u(10)) * F.lit(6.0)).cast("int").alias("_days_since_login"),
        # login hour: mostly daytime, a tail of night-time logins
        F.pmod(F.round(F.lit(14.0) + F.lit(5.5) * n(11)), F.lit(24.0)).cast("int").alias("_login_hour"),
        F.floor(u(13) * F.lit(3600.0)).cast("long").alias("_login_secs"),
        (-F.log(F.lit(1.0) - u(14))).alias("_calls_draw"),
    )


def _churn_accounts(df: DataFrame) -> DataFrame:
    """Monthly charges, seniority, support calls and the signup and last-login epochs."""
    base_charge = _lookup(
        F.col("plan"), {"basic": 25.0, "standard": 55.0, "premium": 85.0, "enterprise": 110.0}
    )
    day = 86_400
    ref = _CHURN_REFERENCE_EPOCH
    return df.select(
        "*",
        F.round(F.greatest(base_charge + F.lit(9.0) * F.col("_charge_noise"), F.lit(10.0)), 2).alias(
            "monthly_charges"
        ),
        (F.col("_age") >= 65).alias("is_senior"),
        # a Poisson-like count: exponential draw scaled by a plan-dependent rate
        F.floor(
            F.col("_calls_draw")
            * _lookup(F.col("plan"), {"basic": 2.2, "standard": 1.6, "premium": 1.3}, 1.0)
        )
        .cast("int")
        .alias("support_calls"),
        (
            F.lit(ref)
            - (F.col("tenure_months") * F.lit(30.44 * day)).cast("long")
            - (F.col("_signup_offset") * F.lit(30.0 * day)).cast("long")
        ).alias("_signup_epoch"),
        (
            F.lit(ref)
            - F.lit(day)
            - F.col("_days_since_login").cast("long") * F.lit(day)
            + F.col("_login_hour").cast("long") * F.lit(3600)
            + F.col("_login_secs")
        ).alias("_login_epoch"),
    )


def _churn_times(df: DataFrame, u: Callable[[int], Column]) -> DataFrame:
    """Signup and last-login timestamps, total charges."""
    return df.select(
        "*",
        F.timestamp_seconds("_signup_epoch").alias("signup_ts"),
        F.timestamp_seconds(F.greatest("_login_epoch", F.col("_signup_epoch") + F.lit(3600))).alias(
            "last_login_ts"
        ),
        F.round(
            F.col("monthly_charges")
            * F.greatest(F.col("tenure_months"), F.lit(1))
            * (F.lit(0.97) + 0.06 * u(15)),
            2,
        ).alias("_total_charges"),
    )


def _churn_columns(df: DataFrame, u: Callable[[int], Column]) -> DataFrame:
    """The published columns: the label, outliers and nulls (drawn after the label), support notes."""
    churned = _churn_label(u)
    # outliers (after the label is drawn: pure noise for the model to cope with)
    monthly = F.when(u(17) < 0.004, F.round(F.col("monthly_charges") * F.lit(8.0), 2)).otherwise(
        F.col("monthly_charges")
    )
    calls = F.when(u(18) < 0.003, F.col("support_calls") + F.lit(25)).otherwise(F.col("support_calls"))
    notes = _churn_notes(u)
    return df.select(
        "customer_id",
        "signup_ts",
        "last_login_ts",
        _with_nulls(F.col("_age"), u(19), 0.03).cast("int").alias("age"),
        "is_senior",
        "plan",
        _with_nulls(F.col("region"), u(20), 0.03).cast("string").alias("region"),
        _with_nulls(F.col("payment_method"), u(21), 0.02).cast("string").alias("payment_method"),
        "tenure_months",
        monthly.cast("double").alias("monthly_charges"),
        _with_nulls(F.col("_total_charges"), u(22), 0.03).cast("double").alias("total_charges"),
        calls.cast("int").alias("support_calls"),
        _with_nulls(notes, u(26), 0.1).cast("string").alias("support_notes"),
        churned.alias("churned"),
    )


_BOROUGHS = ("manhattan", "brooklyn", "queens", "bronx", "staten_island")


_PICKUP_HOUR_WEIGHTS = (
    3.0, 2.0, 1.4, 1.0, 0.8, 1.0, 2.2, 3.8, 4.8, 4.6, 4.2, 4.3,
    4.6, 4.7, 5.0, 5.2, 5.4, 6.0, 6.6, 6.4, 5.8, 5.3, 4.8, 3.9,
)  # fmt: skip


def _gen_taxi(base: DataFrame, seed: int) -> DataFrame:
    """Taxi trips: duration (minutes) driven by distance, borough pace and hour-of-day traffic."""
    u = lambda k: _uniform(seed, k)  # noqa: E731
    n = lambda k: _normal(seed, k)  # noqa: E731
    df = base.select(
        F.col("id").alias("trip_id"),
        (
            F.lit(_TAXI_START_EPOCH)
            + F.floor(u(1) * F.lit(91.0)).cast("long") * F.lit(86_400)
            + _choice(u(2), list(range(24)), _PICKUP_HOUR_WEIGHTS).cast("long") * F.lit(3600)
            + F.floor(u(3) * F.lit(3600.0)).cast("long")
        ).alias("_pickup_epoch"),
        _choice(u(4), _BOROUGHS, (0.52, 0.2, 0.16, 0.08, 0.04)).alias("borough"),
        u(5).alias("_cross"),
        _choice(u(6), _BOROUGHS, (0.45, 0.22, 0.18, 0.1, 0.05)).alias("_other_borough"),
        _choice(u(7), (1, 2, 3, 4, 5, 6), (0.68, 0.15, 0.06, 0.04, 0.04, 0.03))
        .cast("int")
        .alias("passenger_count"),
        F.exp(F.lit(0.85) + F.lit(0.7) * n(8)).alias("_base_distance"),
        u(10).alias("_cross_extra"),
        n(11).alias("_noise"),
    )
    df = df.select(
        "*",
        F.timestamp_seconds("_pickup_epoch").alias("pickup_ts"),
        F.when(F.col("_cross") < 0.78, F.col("borough"))
        .otherwise(F.col("_other_borough"))
        .alias("dropoff_borough"),
    )
    cross = F.col("dropoff_borough") != F.col("borough")
    distance = F.round(
        F.least(
            F.greatest(
                F.col("_base_distance")
                + F.when(cross, F.lit(3.0) + F.lit(5.0) * F.col("_cross_extra")).otherwise(F.lit(0.0)),
                F.lit(0.1),
            ),
            F.lit(60.0),
        ),
        2,
    )
    df = df.select("*", distance.alias("trip_distance"))
    hour = F.hour("pickup_ts")
    weekday = ~F.dayofweek("pickup_ts").isin(1, 7)
    traffic = (
        F.when(weekday & (hour.between(7, 9) | hour.between(16, 19)), F.lit(1.6))
        .when(weekday & hour.between(10, 15), F.lit(1.15))
        .when((hour >= 22) | (hour < 6), F.lit(0.75))
        .otherwise(F.lit(1.0))
    )
    pace = _lookup(
        F.col("borough"),
        {"manhattan": 4.8, "brooklyn": 3.3, "queens": 2.6, "bronx": 3.0, "staten_island": 2.0},
    )
    minutes = (F.lit(2.5) + F.col("trip_distance") * pace) * traffic * F.exp(
        F.lit(0.25) * F.col("_noise")
    ) + F.when(cross, F.lit(4.0)).otherwise(F.lit(0.0))
    return df.select(
        "trip_id",
        "pickup_ts",
        "borough",
        "dropoff_borough",
        "passenger_count",
        F.col("trip_distance").cast("double").alias("trip_distance"),
        F.round(F.greatest(minutes, F.lit(1.0)), 2).cast("double").alias("trip_duration"),
    )


_SEGMENT_FEATURES = (
    "annual_spend",
    "visits_per_month",
    "avg_basket",
    "tenure_years",
    "online_share",
    "discount_usage",
)


_SEGMENTS: dict[str, tuple[tuple[float, float], ...]] = {
    # (mean, standard deviation) per feature, in _SEGMENT_FEATURES order
    "budget": ((800.0, 220.0), (2.0, 0.7), (30.0, 6.0), (1.5, 0.6), (0.2, 0.06), (0.6, 0.07)),
    "loyal": ((3200.0, 400.0), (8.0, 1.2), (45.0, 7.0), (8.0, 1.2), (0.3, 0.07), (0.2, 0.06)),
    "premium": ((9000.0, 900.0), (4.0, 1.0), (180.0, 20.0), (5.0, 1.0), (0.5, 0.08), (0.05, 0.03)),
    "digital": ((2500.0, 350.0), (12.0, 1.5), (25.0, 5.0), (2.0, 0.7), (0.9, 0.04), (0.35, 0.06)),
}


def _gen_segments(base: DataFrame, seed: int) -> DataFrame:
    """Four well-separated Gaussian customer segments in six numeric dimensions."""
    names = list(_SEGMENTS)
    segment = _choice(_uniform(seed, 1), names, (0.3, 0.3, 0.15, 0.25))
    df = base.select("id", segment.alias("true_segment"))
    cols: list[Column] = []
    for j, feature in enumerate(_SEGMENT_FEATURES):
        mean = _lookup(F.col("true_segment"), {s: params[j][0] for s, params in _SEGMENTS.items()})
        std = _lookup(F.col("true_segment"), {s: params[j][1] for s, params in _SEGMENTS.items()})
        value = F.greatest(mean + std * _normal(seed, 10 + 2 * j), F.lit(0.0))
        cols.append(F.round(value, 4).cast("double").alias(feature))
    return df.select(F.col("id").alias("customer_id"), *cols, "true_segment")
