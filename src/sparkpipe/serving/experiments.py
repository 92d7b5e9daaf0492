"""Champion/challenger experiments: routing decisions, outcomes, the report, promotion and rollback.

An :class:`Experiment` belongs to one registered model. Requests naming that model by its bare name
(or no model at all, when it is the default) are routed to the ``champion`` or ``challenger``
reference (an alias such as ``challenger``, or a version number):

* ``split`` -- a deterministic hash of the sticky key (a request field named by ``sticky_key``, else the
  request id) salted with the experiment id sends ``challenger_traffic`` of keys to the challenger; the
  same key always lands on the same variant while the experiment runs;
* ``shadow`` -- the champion answers; the challenger scores the same request afterwards, logged only;
* ``bandit`` -- Thompson sampling on the feedback metric (Beta posteriors for rates, normal for means).

:class:`ExperimentManager` keeps the experiments of a service: it starts them from
``deployment.ab_testing``, changes them at runtime (``PUT /ab/{model}``, stored in the prediction log's
``experiments`` table so every worker process and a restart see the change), builds the report of
``GET /ab/{model}`` from the prediction log joined with feedback, promotes (``POST /ab/{model}/promote``
moves the aliases through :func:`sparkpipe.tracking.move_aliases`, recorded in the model's history),
auto-promotes on significance and a minimum sample, and stops routing to a challenger whose error rate
crosses ``max_error_rate`` (auto-rollback).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sparkpipe.config import ABTestConfig
from sparkpipe.serving import stats
from sparkpipe.serving.predlog import PredictionLog
from sparkpipe.serving.schemas import ApiError

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
RATE_METRICS = ("conversion", "accuracy")
LOWER_IS_BETTER = ("abs_error",)
_IDENTITY = ("champion", "challenger", "mode", "metric")
"""Changing one of these starts a new experiment (new id, counts from zero)."""


def variant_ref(model: str, spec: str) -> str:
    """``name/3`` for a version number, ``name@alias`` for an alias."""
    spec = spec.strip()
    return f"{model}/{spec}" if spec.isdigit() else f"{model}@{spec}"


def _unit_hash(salt: str, key: str) -> float:
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _is_positive(label: Any) -> bool:
    if isinstance(label, bool):
        return label
    if isinstance(label, (int, float)):
        return float(label) == 1.0
    return str(label).strip().lower() in ("1", "1.0", "true", "yes")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def _prediction(outputs: bytes | None) -> Any:
    try:
        preds = json.loads(outputs or b"null")["predictions"]
        return preds[0].get("prediction")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def outcome(metric: str, outputs: bytes | None, label: Any, value: Any) -> float | None:
    """The metric's observation for one logged prediction with feedback (``None``: not labelled)."""
    if metric == "conversion":
        return None if label is None else float(_is_positive(label))
    if metric == "accuracy":
        if label is None:
            return None
        pred = _prediction(outputs)
        return None if pred is None else float(_same(pred, label))
    observed = value if value is not None else label
    if observed is None or isinstance(observed, str):
        return None
    if metric == "value":
        return float(observed)
    pred = _prediction(outputs)  # abs_error
    return None if not isinstance(pred, (int, float)) else abs(float(pred) - float(observed))


@dataclass
class Experiment:
    """One model's routing and its in-process counters (the report reads the log, not these)."""

    model: str
    cfg: ABTestConfig
    id: str
    started: float
    state: str = "running"
    """``running``, ``stopped``, ``promoted`` or ``rolled_back``."""
    reason: str = ""
    requests: dict[str, int] = field(default_factory=lambda: {CHAMPION: 0, CHALLENGER: 0})
    errors: dict[str, int] = field(default_factory=lambda: {CHAMPION: 0, CHALLENGER: 0})
    outcomes: dict[str, stats.Moments] = field(
        default_factory=lambda: {CHAMPION: stats.Moments(), CHALLENGER: stats.Moments()}
    )
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.refs = {CHAMPION: variant_ref(self.model, self.cfg.champion)}
        self.refs[CHALLENGER] = variant_ref(self.model, self.cfg.challenger)

    @property
    def routing(self) -> bool:
        """True while requests go anywhere but the champion."""
        return self.state == "running" and self.cfg.enabled

    # ------------------------------------------------------------------ decisions (hot path)
    def choose(self, key: str) -> str:
        """The variant that answers a request with sticky value (or request id) ``key``."""
        if not self.routing:
            return CHAMPION
        mode = self.cfg.mode
        if mode == "split":
            return CHALLENGER if _unit_hash(self.id, key) < self.cfg.challenger_traffic else CHAMPION
        if mode == "bandit":
            return CHALLENGER if self._draw(CHALLENGER) > self._draw(CHAMPION) else CHAMPION
        return CHAMPION  # shadow: the champion answers; the challenger is scored afterwards

    def _draw(self, variant: str) -> float:
        m = self.outcomes[variant]
        if self.cfg.metric in RATE_METRICS:
            return self.rng.betavariate(1 + m.total, 1 + m.n - m.total)
        if m.n < 2:
            return self.rng.gauss(0.0, 1e6)  # nothing known yet: explore
        draw = self.rng.gauss(m.mean, math.sqrt(m.var / m.n) or 1e-12)
        return -draw if self.cfg.metric in LOWER_IS_BETTER else draw

    @property
    def shadowing(self) -> bool:
        return self.routing and self.cfg.mode == "shadow"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "experiment": self.id,
            "state": self.state,
            "reason": self.reason,
            "started": self.started,
            "routing": {**self.cfg.model_dump(mode="json"), "model_name": self.model},
            "refs": dict(self.refs),
        }

    def record(self) -> dict[str, Any]:
        return {
            "cfg": self.cfg.model_dump(mode="json"),
            "id": self.id,
            "started": self.started,
            "state": self.state,
            "reason": self.reason,
        }


class ExperimentManager:
    """The experiments of one service (see the module docstring).

    Parameters
    ----------
    predlog
        The prediction log (also stores runtime routing changes); ``None`` disables experiments that
        need outcomes (the report) but routing still works.
    configured
        ``deployment.ab_testing`` as configured.
    default_model
        The registered name of the service's default model (``ab_testing.model_name`` falls back to it).
    """

    def __init__(self, predlog: PredictionLog | None, configured: ABTestConfig, default_model: str | None):
        self.predlog = predlog
        self.active: dict[str, Experiment] = {}
        self._lock = threading.Lock()
        self._stamp: dict[str, float] = {}
        self._last_auto = 0.0
        self.registry_factory: Any = None
        """Callable returning the :class:`~sparkpipe.tracking.Registry` (set by the app)."""
        self.on_aliases_moved: Any = None
        """Callable(name) run after a promotion moved aliases (the service refreshes the model)."""
        name = configured.model_name or default_model
        if configured.enabled:
            if not name:
                log.error(
                    "deployment.ab_testing.enabled is true but neither ab_testing.model_name nor "
                    "deployment.model_name names the model; no traffic is routed"
                )
            else:
                self._start_configured(name.strip().removeprefix("models:/").split("@")[0], configured)
        self.sync()

    # ------------------------------------------------------------------ persistence
    def _start_configured(self, model: str, cfg: ABTestConfig) -> None:
        stored = self._stored().get(model)
        if stored and stored["source"] == "api":
            log.info(
                "A/B routing of %s was changed at runtime; keeping that (DELETE-free: PUT /ab to change)",
                model,
            )
            return
        if stored and stored["record"]["cfg"] == cfg.model_dump(mode="json"):
            return  # a restart with the same configuration continues the same experiment
        self._save(model, self._new(model, cfg), "config")

    def _new(self, model: str, cfg: ABTestConfig) -> Experiment:
        return Experiment(model, cfg, f"{model}-{int(time.time())}-{uuid.uuid4().hex[:6]}", time.time())

    def _stored(self) -> dict[str, dict[str, Any]]:
        if self.predlog is None:
            return {}
        with self.predlog.connect() as conn:
            rows = conn.execute("SELECT model, config, source, updated FROM experiments").fetchall()
        out = {}
        for model, raw, source, updated in rows:
            try:
                out[model] = {"record": json.loads(raw), "source": source, "updated": updated}
            except ValueError:
                log.warning("experiments table: unreadable row for %s skipped", model)
        return out

    def _save(self, model: str, exp: Experiment, source: str) -> None:
        with self._lock:
            self.active[model] = exp
            if self.predlog is None:
                return
            now = time.time()
            with self.predlog.connect() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO experiments (model, config, source, updated) VALUES (?, ?, ?, ?)",
                    (model, json.dumps(exp.record()), source, now),
                )
            self._stamp[model] = now

    def sync(self) -> None:
        """Pick up changes other worker processes stored (cheap; run every second by the app)."""
        for model, stored in self._stored().items():
            if self._stamp.get(model) == stored["updated"]:
                continue
            rec = stored["record"]
            try:
                cfg = ABTestConfig.model_validate(rec["cfg"])
            except Exception as exc:
                log.warning("experiments table: invalid routing for %s skipped: %s", model, exc)
                continue
            with self._lock:
                current = self.active.get(model)
                if current is not None and current.id == rec["id"]:
                    current.cfg, current.state, current.reason = cfg, rec["state"], rec.get("reason", "")
                    current.__post_init__()
                else:
                    exp = Experiment(
                        model, cfg, rec["id"], rec["started"], rec["state"], rec.get("reason", "")
                    )
                    self.active[model] = exp
                    self._warm(exp)
                self._stamp[model] = stored["updated"]

    def _warm(self, exp: Experiment) -> None:
        """Counters of an experiment loaded from the log (bandit posteriors, error rate)."""
        if self.predlog is None:
            return
        try:
            rows = self.predlog.experiment_rows(exp.id)
        except Exception as exc:
            log.warning("could not read the log of %s: %s", exp.id, exc)
            return
        for variant, _shadow, status, outputs, label, value in rows:
            if variant not in exp.requests:
                continue
            exp.requests[variant] += 1
            if status != 200:
                exp.errors[variant] += 1
                continue
            obs = outcome(exp.cfg.metric, outputs, label, value)
            if obs is not None:
                exp.outcomes[variant].add(obs)

    # ------------------------------------------------------------------ lookups
    def get(self, model: str) -> Experiment:
        exp = self.active.get(model)
        if exp is None:
            known = ", ".join(sorted(self.active)) or "none"
            raise ApiError(
                404,
                f"no experiment for model {model!r} (experiments: {known}); start one with PUT /ab/{model} "
                "or deployment.ab_testing",
                [("model", "no experiment")],
            )
        return exp

    # ------------------------------------------------------------------ runtime changes
    def update(self, model: str, changes: dict[str, Any]) -> Experiment:
        """Change (or start) the routing of ``model``; a change of champion, challenger, mode or metric
        (or restarting a finished experiment) starts a new experiment id."""
        current = self.active.get(model)
        base = current.cfg.model_dump(mode="json") if current else {"enabled": True}
        merged = {**base, **changes, "model_name": model}
        try:
            cfg = ABTestConfig.model_validate(merged)
        except Exception as exc:
            errors = getattr(exc, "errors", lambda: [])()
            fields = [(".".join(map(str, e.get("loc", ()))) or "body", str(e.get("msg"))) for e in errors]
            raise ApiError(
                422, "invalid routing: " + "; ".join(f"{f}: {m}" for f, m in fields), fields
            ) from None
        restart = (
            current is None
            or current.state != "running"
            or any(getattr(current.cfg, k) != getattr(cfg, k) for k in _IDENTITY)
        )
        if restart:
            exp = self._new(model, cfg)
        else:
            exp = current
            exp.cfg = cfg
            exp.__post_init__()
        if not cfg.enabled:
            exp.state, exp.reason = "stopped", "disabled over HTTP"
        self._save(model, exp, "api")
        return exp

    def stop(self, model: str, state: str, reason: str) -> None:
        exp = self.get(model)
        exp.state, exp.reason = state, reason
        self._save(model, exp, "api")
        log.warning("A/B experiment %s: %s (%s)", exp.id, state, reason)

    # ------------------------------------------------------------------ outcomes (request path)
    def observe_request(self, exp: Experiment, variant: str, ok: bool) -> None:
        exp.requests[variant] += 1
        if ok:
            return
        exp.errors[variant] += 1
        limit = exp.cfg.max_error_rate
        n = exp.requests[CHALLENGER]
        if (
            variant == CHALLENGER
            and limit is not None
            and exp.routing
            and n >= exp.cfg.min_requests_for_rollback
            and exp.errors[CHALLENGER] / n > limit
        ):
            self.stop(
                exp.model,
                "rolled_back",
                f"auto-rollback: challenger error rate {exp.errors[CHALLENGER] / n:.3f} over {n} requests "
                f"exceeds max_error_rate {limit}; all traffic back on the champion",
            )

    def observe_feedback(self, exp: Experiment, variant: str, outputs: Any, label: Any, value: Any) -> None:
        obs = outcome(exp.cfg.metric, outputs, label, value)
        if obs is not None and variant in exp.outcomes:
            exp.outcomes[variant].add(obs)

    def maybe_auto_promote(self, model: str, min_interval: float = 2.0) -> dict[str, Any] | None:
        """Promote when the experiment allows it and the report says so (at most every ``min_interval``)."""
        exp = self.active.get(model)
        if exp is None or not exp.routing or not exp.cfg.auto_promote:
            return None
        now = time.monotonic()
        if now - self._last_auto < min_interval:
            return None
        self._last_auto = now
        rep = self.report(model)
        if rep["recommendation"]["action"] == "promote_challenger" and rep["auto_promotion_ready"]:
            return self.promote(model, actor="auto-promotion", reason=rep["recommendation"]["reason"])
        return None

    # ------------------------------------------------------------------ report
    def report(self, model: str) -> dict[str, Any]:
        """Per variant: requests, errors, labelled outcomes, the metric with a 95 % interval; the test
        and its p-value, the sample size still needed, and a recommendation."""
        exp = self.get(model)
        cfg = exp.cfg
        if self.predlog is None:
            raise ApiError(
                409,
                "the experiment report reads the prediction log, which is off "
                "(deployment.prediction_log.enabled: false)",
                [("prediction_log", "disabled")],
            )
        per = _tally(self.predlog, exp)
        rate = cfg.metric in RATE_METRICS
        variants = {v: _variant_summary(exp, v, slot, rate) for v, slot in per.items()}
        a, b = per[CHAMPION]["m"], per[CHALLENGER]["m"]
        test, required = _compare_variants(a, b, cfg, rate)
        significant = test.p_value is not None and test.p_value < cfg.alpha
        still = (
            {CHAMPION: max(0, required - a.n), CHALLENGER: max(0, required - b.n)}
            if required is not None
            else None
        )
        better = None
        if test.difference is not None:
            better = test.difference < 0 if cfg.metric in LOWER_IS_BETTER else test.difference > 0
        enough = required is not None and min(a.n, b.n) >= required
        action, why = _recommendation(exp, test, significant, better, enough)
        return {
            **exp.describe(),
            "variants": variants,
            "test": {
                **test.to_dict(),
                "alpha": cfg.alpha,
                "significant": significant,
                "ci95": [test.ci_low, test.ci_high] if test.ci_low is not None else None,
            },
            "sample_size": {
                "per_variant_required": required,
                "still_needed": still,
                "minimum_detectable_effect": cfg.minimum_detectable_effect,
                "alpha": cfg.alpha,
                "power": cfg.power,
            },
            "recommendation": {"action": action, "reason": why},
            "auto_promotion_ready": significant and bool(better) and min(a.n, b.n) >= cfg.min_samples,
        }

    # ------------------------------------------------------------------ promotion
    def promote(self, model: str, actor: str, reason: str | None = None) -> dict[str, Any]:
        """Make the challenger the champion: stop routing, move both aliases in one recorded step
        (``champion`` -> the challenger's version; an alias challenger -> the old champion's version),
        then let the service swap."""
        from sparkpipe.tracking import move_aliases

        exp = self.get(model)
        registry = self.registry_factory()
        cfg = exp.cfg
        versions = {}
        for variant, ref in exp.refs.items():
            try:
                versions[variant] = registry.resolve(ref).version
            except Exception as exc:
                raise ApiError(
                    409,
                    f"cannot promote: the {variant} {ref} does not resolve ({exc})",
                    [(variant, "unresolved")],
                ) from None
        champion_v, challenger_v = versions[CHAMPION], versions[CHALLENGER]
        if champion_v == challenger_v:
            raise ApiError(
                409,
                f"champion and challenger of {model!r} are the same version ({champion_v}); nothing to promote",
                [("challenger", "same version as the champion")],
            )
        if cfg.champion.isdigit():
            raise ApiError(
                409,
                f"the champion of this experiment is a fixed version ({cfg.champion}), not an alias; "
                "promotion moves an alias",
                [("champion", "not an alias")],
            )
        moves: dict[str, str | None] = {cfg.champion: challenger_v}
        if not cfg.challenger.isdigit():
            moves[cfg.challenger] = champion_v
        why = reason or f"A/B experiment {exp.id}"
        exp.state, exp.reason = "promoted", why  # all traffic on the champion ref before it moves
        done = move_aliases(registry, model, moves, reason=f"A/B promotion: {why}", actor=actor)
        self._save(model, exp, "api")
        if self.on_aliases_moved is not None:
            self.on_aliases_moved(model)
        return {
            "model": model,
            "experiment": exp.id,
            "state": exp.state,
            "moves": [m.to_dict() for m in done],
        }


# ================================================================================ experiment report
def _tally(predlog: PredictionLog, exp: Experiment) -> dict[str, dict[str, Any]]:
    """Per variant of ``exp``: requests, errors, the versions that answered and the moments of the
    labelled outcomes, from the prediction log."""
    per = {v: {"requests": 0, "errors": 0, "versions": set(), "m": stats.Moments()} for v in exp.refs}
    for variant, _shadow, status, outputs, label, value in predlog.experiment_rows(exp.id):
        if variant not in per:
            continue
        slot = per[variant]
        slot["requests"] += 1
        if status != 200:
            slot["errors"] += 1
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            slot["versions"].add(json.loads(outputs)["version"])
        obs = outcome(exp.cfg.metric, outputs, label, value)
        if obs is not None:
            slot["m"].add(obs)
    return per


def _variant_summary(exp: Experiment, variant: str, slot: dict[str, Any], rate: bool) -> dict[str, Any]:
    """One variant of the report: counts and the metric with its 95 % interval."""
    m: stats.Moments = slot["m"]
    if rate:
        ci = stats.wilson_interval(round(m.total), m.n) if m.n else None
    else:
        ci = stats.mean_interval(m.mean, m.var, m.n)
    return {
        "ref": exp.refs[variant],
        "versions": sorted(slot["versions"]),
        "requests": slot["requests"],
        "errors": slot["errors"],
        "error_rate": slot["errors"] / slot["requests"] if slot["requests"] else 0.0,
        "labelled": m.n,
        "metric": exp.cfg.metric,
        "value": m.mean if m.n else None,
        "ci95": list(ci) if ci else None,
    }


def _compare_variants(
    a: stats.Moments, b: stats.Moments, cfg: ABTestConfig, rate: bool
) -> tuple[Any, int | None]:
    """The test of the challenger ``b`` against the champion ``a`` (two-proportion z-test for a rate,
    Welch's t-test otherwise) and the sample size per variant it needs (``None``: not known yet)."""
    if rate:
        test = stats.two_proportion_ztest(round(a.total), a.n, round(b.total), b.n)
        baseline = a.mean if a.n else 0.5
        required = stats.sample_size_proportions(
            baseline, cfg.minimum_detectable_effect, cfg.alpha, cfg.power
        )
        return test, required
    test = stats.welch_ttest(a.mean, a.var, a.n, b.mean, b.var, b.n)
    pooled_n = a.n + b.n
    sd = math.sqrt((a.var * max(a.n - 1, 0) + b.var * max(b.n - 1, 0)) / max(pooled_n - 2, 1))
    required = (
        stats.sample_size_means(sd, cfg.minimum_detectable_effect, cfg.alpha, cfg.power)
        if a.n >= 2 and b.n >= 2 and sd > 0
        else None
    )
    return test, required


def _recommendation(
    exp: Experiment, test: Any, significant: bool, better: bool | None, enough: bool
) -> tuple[str, str]:
    """``(action, reason)``: promote the challenger, keep the champion, or keep running."""
    cfg = exp.cfg
    if significant and better:
        action, why = "promote_challenger", "the challenger is significantly better"
    elif significant:
        action, why = "keep_champion", "the challenger is significantly worse"
    elif enough:
        action, why = "keep_champion", "no significant difference at the required sample size"
    else:
        action, why = "keep_running", "not enough labelled outcomes yet"
    if test.p_value is not None:
        why += f" ({cfg.metric}: difference {test.difference:+.4g}, p = {test.p_value:.3g})"
    if exp.state != "running":
        why += f"; the experiment is {exp.state}" + (f": {exp.reason}" if exp.reason else "")
    return action, why
