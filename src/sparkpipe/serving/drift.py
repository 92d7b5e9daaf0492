"""Drift monitoring: the training profile of a model against a window of its prediction log.

The reference is the profile kept with every model (``metadata.sparkpipe.profile`` in its ``MLmodel``,
also ``data/profile.json`` in its run; :func:`sparkpipe.features.roles.profile_frame`): per numeric
column min, max and the quantiles p01, p05, p25, p50, p75, p95, p99; per string column the shares of
its most frequent values (``top_values``, the rest in ``other_share``); per boolean column the share
of ``true``. The current data is the latest ``window`` input rows the model scored
(:meth:`~sparkpipe.serving.predlog.PredictionLog.recent_inputs`). The profile holds quantiles, not raw
values, so:

numeric columns
    **PSI** over the profile's quantile bins ``(-inf, p01], (p01, p05], ..., (p99, inf)``: the
    reference share of each bin is known exactly (1 %, 4 %, 20 %, 25 %, 25 %, 20 %, 4 %, 1 %; bins of
    equal quantiles, as in discrete columns, are merged), empty bins count as 0.0001 (Evidently's).
    **KS**: the largest gap between the window's empirical CDF and the reference CDF *interpolated
    linearly between the profile's quantiles* (from ``(min, 0)`` to ``(max, 1)``); integral columns
    compare ``P(X <= k)`` at ``k + 0.5``. The p-value is the two-sample Kolmogorov distribution
    (:data:`scipy.stats.kstwo`) at the effective size ``n m / (n + m)`` (``m``: rows profiled), as
    :func:`scipy.stats.ks_2samp`'s asymptotic mode. Between quantiles the interpolation is an
    approximation (about 0.03 in the tails of a normal column), so KS decides only for small profiles.
categorical (string) and boolean columns
    **chi-square**: the two-sample test of the window's counts against the reference shares times the
    rows profiled (the top values plus an "other" bucket; a bucket with no reference share gets
    0.0001; Evidently's goodness of fit would treat a small profile's shares as exact), and the
    **Jensen-Shannon distance** (natural log, as :func:`scipy.spatial.distance.jensenshannon`).

Which statistic decides is Evidently's default rule (``deployment.drift``): a profile of at most
``small_reference_rows`` (1000) rows is judged by p-values (KS, chi-square; drift when ``p <
p_value``, 0.05); a larger one by distances (PSI >= 0.1 instead of Evidently's Wasserstein distance,
which needs raw reference values; Jensen-Shannon >= 0.1). The data set drifts when at least
``drift_share`` (0.5) of the compared features drift. Timestamp, text and vector columns are listed as
not compared; nulls are left out of both sides (their shares are reported).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as _st

from sparkpipe.config import DriftConfig
from sparkpipe.serving.schemas import ApiError

EPS = 1e-4
"""Share given to an empty bin (PSI, Jensen-Shannon, chi-square expectations), as Evidently does."""

OTHER = "__other__"
"""The bucket of categorical values outside the profile's top values."""

_QUANTILES = (
    ("p01", 0.01),
    ("p05", 0.05),
    ("p25", 0.25),
    ("p50", 0.5),
    ("p75", 0.75),
    ("p95", 0.95),
    ("p99", 0.99),
)
_INTEGRAL = {"tinyint", "smallint", "int", "bigint", "integer", "long", "short", "byte"}
_FRACTIONAL = {"float", "double"}


# =================================================================================== statistics
def psi(expected: Any, actual: Any) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` of two share vectors (zeros -> EPS)."""
    e = np.where(np.asarray(expected, dtype=float) <= 0, EPS, np.asarray(expected, dtype=float))
    a = np.where(np.asarray(actual, dtype=float) <= 0, EPS, np.asarray(actual, dtype=float))
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon(p: Any, q: Any) -> float:
    """Jensen-Shannon distance (square root of the divergence, natural log) of two share vectors."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2

    def kl(x: Any) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log(x[mask] / m[mask])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def chi_square(expected_shares: Any, observed: Any, reference_rows: int | None = None) -> tuple[float, float]:
    """Chi-square test of ``observed`` counts against a reference: ``(statistic, p)``.

    With ``reference_rows`` the reference is a sample of that many rows with the given shares and the
    test is the two-sample one (a 2 x k contingency table, as :func:`scipy.stats.chi2_contingency`
    without continuity correction): a profile of a few hundred rows is itself noisy, and a goodness of
    fit to its shares would call that noise drift. Without it, a goodness of fit to exact shares
    (:func:`scipy.stats.chisquare`).
    """
    obs = np.asarray(observed, dtype=float)
    shares = np.asarray(expected_shares, dtype=float)
    shares = np.where(shares <= 0, EPS, shares)
    shares = shares / shares.sum()
    dof = len(obs) - 1
    if dof <= 0 or obs.sum() == 0:
        return 0.0, 1.0
    if reference_rows is None:
        exp = shares * obs.sum()
        stat = float(np.sum((obs - exp) ** 2 / exp))
    else:
        table = np.vstack([shares * float(reference_rows), obs])
        exp = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
        stat = float(np.sum((table - exp) ** 2 / exp))
    return stat, float(_st.chi2.sf(stat, dof))


def reference_knots(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The reference CDF's knots from a numeric profile entry: distinct values ``x`` with the CDF's
    left limit ``lo`` and value ``hi`` at each (equal quantiles make a jump); ``None`` without them."""
    qs = entry.get("quantiles") or {}
    points = [(entry.get("min"), 0.0)] + [(qs.get(k), p) for k, p in _QUANTILES] + [(entry.get("max"), 1.0)]
    points = [(float(x), p) for x, p in points if x is not None and math.isfinite(float(x))]
    if len(points) < 2:
        return None
    points.sort(key=lambda t: (t[0], t[1]))
    xs: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    for x, p in points:
        if xs and x == xs[-1]:
            hi[-1] = max(hi[-1], p)
        else:
            xs.append(x)
            lo.append(p)
            hi.append(p)
    hi[-1] = 1.0
    return np.array(xs), np.array(lo), np.array(hi)


def reference_cdf(knots: tuple[np.ndarray, np.ndarray, np.ndarray], x: Any) -> np.ndarray:
    """``P(X <= x)`` of the reference: linear between knots (from the value at a knot to the left
    limit at the next), 0 below the minimum, 1 from the maximum on."""
    xs, lo, hi = knots
    x = np.asarray(x, dtype=float)
    j = np.searchsorted(xs, x, side="right") - 1  # the knot at or below x
    out = np.zeros_like(x)
    inside = (j >= 0) & (j < len(xs) - 1)
    jj = j[inside]
    frac = (x[inside] - xs[jj]) / (xs[jj + 1] - xs[jj])
    out[inside] = hi[jj] + (lo[jj + 1] - hi[jj]) * frac
    out[j >= len(xs) - 1] = 1.0
    return out


def ks_against_profile(
    entry: dict[str, Any], values: Any, reference_rows: int, integral: bool = False
) -> tuple[float, float] | None:
    """KS statistic of ``values`` against the profile's interpolated CDF and its p-value (see the
    module docstring); ``None`` when the profile has no quantiles or there are no values."""
    knots = reference_knots(entry)
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if knots is None or n == 0:
        return None
    upper = np.searchsorted(x, x, side="right") / n  # the window's P(X <= x_i), ties as one step
    if integral:  # both CDFs are steps at the integers: compare P(X <= k) there
        d = float(np.max(np.abs(upper - reference_cdf(knots, x + 0.5))))
    else:  # continuous reference: the gap just after and just before each value
        f = reference_cdf(knots, x)
        lower = np.searchsorted(x, x, side="left") / n
        d = float(max(np.max(upper - f), np.max(f - lower), 0.0))
    m = max(int(reference_rows), 1)
    en = n * m / (n + m)
    p = float(_st.kstwo.sf(d, max(1, round(en))))
    return d, min(max(p, 0.0), 1.0)


def psi_against_profile(entry: dict[str, Any], values: Any) -> dict[str, Any] | None:
    """PSI of ``values`` over the profile's quantile bins, with the bins' edges and shares."""
    knots = reference_knots(entry)
    x = np.asarray(values, dtype=float)
    if knots is None or len(x) == 0:
        return None
    xs, _, hi = knots
    edges = xs[:-1] if len(xs) > 1 else xs  # the maximum closes the last bin: (p99, inf)
    ref_cum = np.append(hi[: len(edges)], 1.0)
    expected = np.diff(np.concatenate([[0.0], ref_cum]))
    cur_cum = np.append(np.searchsorted(np.sort(x), edges, side="right"), len(x))
    actual = np.diff(np.concatenate([[0], cur_cum])) / len(x)
    return {
        "psi": psi(expected, actual),
        "edges": edges.tolist(),
        "expected": expected.tolist(),
        "actual": actual.tolist(),
    }


# ================================================================================== the report
def _kind(entry: dict[str, Any]) -> str:
    t = str(entry.get("type", "")).lower()
    if t in _INTEGRAL or t in _FRACTIONAL or t.startswith("decimal"):
        return "numeric"
    if t == "string" and entry.get("top_values") is not None:
        return "categorical"
    if t == "boolean" and entry.get("mean") is not None:
        return "boolean"
    return "other"


def _numbers(values: list[Any]) -> np.ndarray:
    out = []
    for v in values:
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int | float):
            f = float(v)
            if math.isfinite(f):
                out.append(f)
    return np.asarray(out, dtype=float)


def _categories(
    entry: dict[str, Any], values: list[Any], boolean: bool
) -> tuple[list[str], list[float], list[int]]:
    """Buckets, their reference shares and the window's counts (top values + other)."""
    if boolean:
        share = float(entry.get("mean") or 0.0)
        names, shares = ["true", "false"], [share, 1.0 - share]
        keyed = ["true" if v else "false" for v in values if isinstance(v, bool)]
    else:
        top = entry.get("top_values") or {}
        names, shares = list(top), [float(s) for s in top.values()]
        names.append(OTHER)
        shares.append(float(entry.get("other_share") or 0.0))
        known = set(top)
        keyed = [(str(v) if str(v) in known else OTHER) for v in values if v is not None]
    index = {n: i for i, n in enumerate(names)}
    counts = [0] * len(names)
    for k in keyed:
        counts[index[k]] += 1
    return names, shares, counts


def feature_drift(
    name: str, entry: dict[str, Any], values: list[Any], reference_rows: int, cfg: DriftConfig
) -> dict[str, Any]:
    """The drift of one column: statistics, the deciding one with its threshold, and the flag."""
    kind = _kind(entry)
    small = reference_rows <= cfg.small_reference_rows
    nulls = sum(1 for v in values if v is None)
    out: dict[str, Any] = {
        "feature": name,
        "type": entry.get("type"),
        "kind": kind,
        "rows": len(values) - nulls,
        "null_share": nulls / len(values) if values else 0.0,
        "reference_null_share": entry.get("null_ratio"),
    }
    if kind == "numeric":
        x = _numbers(values)
        integral = str(entry.get("type", "")).lower() in _INTEGRAL
        ks = ks_against_profile(entry, x, reference_rows, integral)
        binned = psi_against_profile(entry, x)
        if ks is None or binned is None:
            return {**out, "compared": False, "reason": "no numeric values in the window or no quantiles"}
        out["statistics"] = {"psi": binned["psi"], "ks": ks[0], "ks_p_value": ks[1]}
        out["bins"] = {k: binned[k] for k in ("edges", "expected", "actual")}
        if small:
            out.update(stattest="ks", score=ks[1], threshold=cfg.p_value, drifted=ks[1] < cfg.p_value)
        else:
            out.update(
                stattest="psi",
                score=binned["psi"],
                threshold=cfg.psi_threshold,
                drifted=binned["psi"] >= cfg.psi_threshold,
            )
    elif kind in ("categorical", "boolean"):
        names, shares, counts = _categories(entry, values, kind == "boolean")
        total = sum(counts)
        if total == 0:
            return {**out, "compared": False, "reason": "no values in the window"}
        non_null = max(1, round(reference_rows * (1 - float(entry.get("null_ratio") or 0.0))))
        stat, p = chi_square(shares, counts, non_null)
        current = [c / total for c in counts]
        js = jensen_shannon([max(s, EPS) for s in shares], [max(c, EPS) for c in current])
        out["statistics"] = {"chi_square": stat, "chi_square_p_value": p, "jensen_shannon": js}
        out["categories"] = {"values": names, "expected": shares, "actual": current}
        if small:
            out.update(stattest="chi_square", score=p, threshold=cfg.p_value, drifted=p < cfg.p_value)
        else:
            out.update(
                stattest="jensen_shannon",
                score=js,
                threshold=cfg.jensen_shannon_threshold,
                drifted=js >= cfg.jensen_shannon_threshold,
            )
    else:
        return {**out, "compared": False, "reason": f"{entry.get('type')} columns are not compared"}
    out["compared"] = True
    out["drifted"] = bool(out["drifted"])
    return out


def drift_report(
    profile: dict[str, Any], rows: list[dict[str, Any]], columns: list[str], cfg: DriftConfig
) -> dict[str, Any]:
    """Per-feature drift of ``rows`` (the window) against ``profile`` for the model's input ``columns``."""
    reference_rows = int(profile.get("row_count") or 0)
    entries = profile.get("columns") or {}
    features = []
    for name in columns:
        entry = entries.get(name)
        if entry is None:
            features.append(
                {"feature": name, "compared": False, "drifted": False, "reason": "not in the profile"}
            )
            continue
        features.append(feature_drift(name, entry, [r.get(name) for r in rows], reference_rows, cfg))
    compared = [f for f in features if f.get("compared")]
    drifted = [f["feature"] for f in compared if f["drifted"]]
    share = len(drifted) / len(compared) if compared else 0.0
    return {
        "window_rows": len(rows),
        "reference_rows": reference_rows,
        "reference_sampled_from_rows": profile.get("sampled_from_rows"),
        "decided_by": "p-value" if reference_rows <= cfg.small_reference_rows else "distance",
        "features_compared": len(compared),
        "drifted_features": drifted,
        "drift_share": share,
        "drift_share_threshold": cfg.drift_share,
        "dataset_drift": bool(compared) and share >= cfg.drift_share,
        "features": features,
    }


# ===================================================================================== sources
def model_profile(path: Path) -> dict[str, Any] | None:
    """The training profile recorded in a model directory's ``MLmodel`` (``None`` when absent)."""
    from sparkpipe.serving.loading import read_model_metadata

    sp = (read_model_metadata(Path(path)).get("metadata") or {}).get("sparkpipe") or {}
    profile = sp.get("profile")
    return profile if isinstance(profile, dict) and profile.get("columns") else None


def parse_since(value: str | float | None) -> float | None:
    """``since`` as Unix seconds: a number, or an ISO 8601 time (UTC when it names no zone)."""
    if value is None or value == "":
        return None
    try:
        ts = float(value)
    except (TypeError, ValueError):
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise ApiError(
                422,
                "since: a Unix time in seconds or an ISO 8601 time such as 2025-01-31T12:00:00Z",
                [("since", "not a time")],
            ) from None
        if parsed.tzinfo is None:
            from datetime import UTC

            parsed = parsed.replace(tzinfo=UTC)
        ts = parsed.timestamp()
    if not math.isfinite(ts) or ts < 0:
        raise ApiError(422, "since: a time after 1970", [("since", "not a time")])
    return ts


def window_drift(
    predlog: Any,
    model: str,
    version: str | None,
    columns: list[str],
    profile: dict[str, Any] | None,
    cfg: DriftConfig,
    window: int | None = None,
    since: float | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The drift report of ``model``'s latest ``window`` logged rows (and the rows, for plots)."""
    window = cfg.window if window is None else window
    if not 1 <= window <= cfg.max_window:
        raise ApiError(
            422,
            f"window: between 1 and {cfg.max_window} rows (deployment.drift.max_window)",
            [("window", f"between 1 and {cfg.max_window}")],
        )
    if profile is None:
        raise ApiError(
            409,
            f"{model}/{version} carries no training profile (metadata.sparkpipe.profile); models trained "
            "by `sparkpipe run` record one",
            [("model", "no training profile")],
        )
    rows = predlog.recent_inputs(model, limit=window, since=since)
    if not rows:
        raise ApiError(
            409,
            f"no logged predictions of {model}"
            + (" since the given time" if since else "")
            + "; send some to /predict with the prediction log on",
            [("model", "no logged predictions")],
        )
    report = drift_report(profile, rows, columns, cfg)
    report = {
        "model": model,
        "version": version,
        "window": window,
        "since": since,
        "computed_at": time.time(),
        **report,
    }
    return report, rows


# ===================================================================================== service
class DriftMonitor:
    """Drift of the served models over the prediction log, for ``GET /monitoring/{model}/drift`` and
    the ``sparkpipe_drift_*`` gauges (recomputed by ``GET /metrics`` at most every
    ``metrics_refresh_seconds``)."""

    def __init__(self, service: Any, predlog: Any, metrics: Any, cfg: DriftConfig):
        self.service = service
        self.predlog = predlog
        self.metrics = metrics
        self.cfg = cfg
        self._profiles: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._computed: dict[str, float] = {}

    def _profile(self, loaded: Any) -> dict[str, Any] | None:
        key = loaded.label
        if key not in self._profiles:
            self._profiles[key] = model_profile(loaded.path)
        return self._profiles[key]

    def report(self, model: str, window: int | None = None, since: float | None = None) -> dict[str, Any]:
        """The drift report of ``model`` (the version served under its bare name); gauges updated."""
        if self.predlog is None:
            raise ApiError(
                409,
                "the prediction log is off (deployment.prediction_log.enabled: false); drift needs it",
                [("prediction_log", "disabled")],
            )
        loaded = self.service.get(model)
        report, _ = window_drift(
            self.predlog,
            loaded.name,
            loaded.version,
            list(loaded.names),
            self._profile(loaded),
            self.cfg,
            window,
            since,
        )
        self.metrics.set_drift(loaded.name, report)
        self._computed[loaded.name] = time.monotonic()
        return report

    def refresh_gauges(self) -> None:
        """Recompute the gauges of every served model whose last report is older than the refresh."""
        every = self.cfg.metrics_refresh_seconds
        if not every or self.predlog is None:
            return
        now = time.monotonic()
        for name in sorted({m.name for m in self.service.loaded()}):
            if now - self._computed.get(name, -math.inf) < every:
                continue
            self._computed[name] = now  # also after a failure: no retry storm on every scrape
            try:
                self.report(name)
            except ApiError:  # no profile or nothing logged yet: no gauges for it
                continue


# =============================================================================== the HTML report
def drift_plots(report: dict[str, Any], rows: list[dict[str, Any]], profile: dict[str, Any]) -> list[Any]:
    """One plot per compared feature (reference CDF vs the window's, or category shares) and the
    per-feature summary, drawn like the evaluation report's (:mod:`sparkpipe.report`)."""
    from sparkpipe.plots import Plot, _figure, _png

    plots = []
    for f in report["features"]:
        if not f.get("compared"):
            continue
        name = f["feature"]
        fig = _figure(5.6, 3.6)
        ax = fig.add_subplot(111)
        if f["kind"] == "numeric":
            knots = reference_knots(profile["columns"][name])
            x = np.sort(_numbers([r.get(name) for r in rows]))
            assert knots is not None
            lo_x = min(knots[0][0], x[0])
            hi_x = max(knots[0][-1], x[-1])
            grid = np.linspace(lo_x, hi_x, 400)
            ax.plot(grid, reference_cdf(knots, grid), color="#1f77b4", label="training (profile quantiles)")
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color="#d62728", label="window")
            ax.set_ylabel("P(X <= x)")
            caption = f"PSI {f['statistics']['psi']:.3f} · KS {f['statistics']['ks']:.3f} (p {f['statistics']['ks_p_value']:.3g})"
        else:
            cats = f["categories"]
            idx = np.arange(len(cats["values"]))
            ax.bar(idx - 0.2, cats["expected"], 0.4, label="training", color="#1f77b4")
            ax.bar(idx + 0.2, cats["actual"], 0.4, label="window", color="#d62728")
            ax.set_xticks(idx)
            ax.set_xticklabels([str(v)[:12] for v in cats["values"]], rotation=45, ha="right", fontsize=8)
            ax.set_ylabel("share")
            s = f["statistics"]
            caption = f"chi-square p {s['chi_square_p_value']:.3g} · Jensen-Shannon {s['jensen_shannon']:.3f}"
        verdict = "DRIFT" if f["drifted"] else "no drift"
        ax.set_title(f"{name}: {verdict} ({f['stattest']})")
        ax.legend(fontsize=8)
        plots.append(Plot(f"drift_{name}", f"{name} ({verdict})", _png(fig), caption))
    return plots


def drift_html(report: dict[str, Any], rows: list[dict[str, Any]], profile: dict[str, Any]) -> str:
    """The self-contained HTML page of a drift report (summary, per-feature table, plots)."""
    from sparkpipe.report import plots_html, render_html

    summary = _summary_table(report)
    features = _features_table(report)
    note = (
        '<p class="note">Numeric reference CDFs are interpolated linearly between the training profile\'s '
        "quantiles (p01..p99, min, max): KS is measured against that curve; PSI uses the quantile bins, "
        "whose training shares are exact.</p>"
    )
    return render_html(
        f"Drift: {report['model']}",
        [
            ("Summary", summary),
            ("Features", features + note),
            ("Distributions", plots_html(drift_plots(report, rows, profile))),
        ],
        subtitle=f"{report['window_rows']} logged rows against the training profile of version {report['version']}",
    )


def _summary_table(report: dict[str, Any]) -> str:
    """The drift report's one-row summary as an HTML table."""
    from sparkpipe.report import html_table

    return html_table(
        [
            "model",
            "version",
            "window rows",
            "reference rows",
            "decided by",
            "drifted",
            "share",
            "data set drift",
        ],
        [
            [
                report["model"],
                report["version"],
                report["window_rows"],
                report["reference_rows"],
                report["decided_by"],
                ", ".join(report["drifted_features"]) or "none",
                report["drift_share"],
                "yes" if report["dataset_drift"] else "no",
            ]
        ],
    )


def _features_table(report: dict[str, Any]) -> str:
    """One HTML table row per feature: the deciding test, its score and threshold, every statistic."""
    from sparkpipe.report import html_table

    table_rows = []
    for f in report["features"]:
        if f.get("compared"):
            s = f["statistics"]
            table_rows.append(
                [
                    f["feature"],
                    f["kind"],
                    f["stattest"],
                    f["score"],
                    f["threshold"],
                    "yes" if f["drifted"] else "no",
                    s.get("psi"),
                    s.get("ks"),
                    s.get("chi_square_p_value"),
                    s.get("jensen_shannon"),
                    f["null_share"],
                ]
            )
        else:
            table_rows.append(
                [
                    f["feature"],
                    f.get("kind", "-"),
                    "-",
                    None,
                    None,
                    "not compared",
                    None,
                    None,
                    None,
                    None,
                    None,
                ]
            )
    return html_table(
        [
            "feature",
            "kind",
            "decided by",
            "score",
            "threshold",
            "drifted",
            "PSI",
            "KS",
            "chi-square p",
            "Jensen-Shannon",
            "null share",
        ],
        table_rows,
    )


def monitor_drift(
    cfg: Any,
    model: str,
    output: Path,
    version: str | None = None,
    window: int | None = None,
    since: str | None = None,
) -> tuple[dict[str, Any], Path]:
    """``sparkpipe monitor drift``: the drift report of ``model`` (its champion, or ``version``) over the
    prediction log the serving config names, written as HTML to ``output``."""
    from sparkpipe.errors import SparkpipeError
    from sparkpipe.report import write_report
    from sparkpipe.serving.loading import read_model_metadata, schema_from_metadata
    from sparkpipe.serving.predlog import PredictionLog
    from sparkpipe.serving.settings import ServingSettings
    from sparkpipe.tracking import Registry, model_cache_dir

    settings = ServingSettings.from_config(cfg)
    log_path = settings.prediction_log_path()
    if not log_path.is_file():
        raise SparkpipeError(
            f"no prediction log at {log_path} (deployment.prediction_log.path); serve the model with the "
            "log on first, or pass --set deployment.prediction_log.path=FILE"
        )
    registry = Registry(cfg.mlflow)
    ref = registry.resolve(f"{model}/{version}" if version else model)
    path = registry.download(ref, cache_dir=model_cache_dir(settings.tracking_uri, settings.model_cache_dir))
    meta = read_model_metadata(path)
    columns = [n for n, _ in schema_from_metadata(meta) or []]
    predlog = PredictionLog(log_path)
    try:
        report, rows = window_drift(
            predlog,
            ref.name,
            ref.version,
            columns,
            model_profile(path),
            settings.drift,
            window,
            parse_since(since),
        )
    except ApiError as exc:
        raise SparkpipeError(exc.message) from None
    finally:
        predlog.close()
    profile = model_profile(path)
    assert profile is not None
    out = write_report(output, drift_html(report, rows, profile))
    return report, out
