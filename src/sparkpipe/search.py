"""The search engine under :func:`sparkpipe.tuning.tune`: folds built once, trial sources (grid, random,
Optuna TPE with median pruning), the trial runner (parallel trials, timeout, child runs), and
parameter importance (fANOVA, else the correlation ratio).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.ml import Estimator
    from pyspark.sql import DataFrame

    from sparkpipe.tracking import Tracker

log = logging.getLogger(__name__)

FOLD_COL = "_sparkpipe_fold"


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid, in ``ParamGridBuilder`` order (last parameter varies fastest)."""
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]


def sample_space(space: dict[str, dict[str, Any]], rng: Any) -> dict[str, Any]:
    """Draw one parameter map from a search space with a NumPy ``Generator``."""
    out: dict[str, Any] = {}
    for name, dist in space.items():
        kind = dist["type"]
        if kind == "choice":
            values = list(dist["values"])
            out[name] = values[int(rng.integers(len(values)))]
        elif kind == "uniform":
            out[name] = float(rng.uniform(float(dist["low"]), float(dist["high"])))
        elif kind == "loguniform":
            out[name] = float(math.exp(rng.uniform(math.log(dist["low"]), math.log(dist["high"]))))
        elif kind == "int":
            lo, hi, step = int(dist["low"]), int(dist["high"]), int(dist.get("step", 1))
            if dist.get("log"):
                out[name] = int(
                    min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)) - 0.5))))
                )
            else:
                out[name] = lo + step * int(rng.integers((hi - lo) // step + 1))
        else:  # pragma: no cover - config_checks rejects other types
            raise ConfigError([(f"tuning.search_space.{name}.type", f"unknown search type {kind!r}")])
    return out


class Folds:
    """The k (train, validation) pairs of one tuning run, built once over one cached frame.

    Parameters
    ----------
    df
        The (feature-transformed) training frame.
    method
        ``cross_validation`` (``num_folds`` pairs) or ``train_validation_split`` (one pair).
    num_folds, train_ratio, seed
        As in ``tuning``.
    cache
        Persist the frame with its fold column (memory and disk) so fold membership is fixed and every
        trial reads it from the cache.
    """

    def __init__(
        self, df: DataFrame, method: str, num_folds: int, train_ratio: float, seed: int, cache: bool = True
    ):
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        self.base = df.withColumn(FOLD_COL, F.rand(seed))
        self._cached = cache
        if cache:
            self.base = self.base.persist(StorageLevel.MEMORY_AND_DISK)
        u = F.col(FOLD_COL)
        self.pairs: list[tuple[DataFrame, DataFrame]] = []
        if method == "cross_validation":
            width = 1.0 / num_folds
            for i in range(num_folds):
                lo, hi = i * width, (i + 1) * width
                held = (u >= lo) & (u < hi)
                self.pairs.append(
                    (self.base.filter(~held).drop(FOLD_COL), self.base.filter(held).drop(FOLD_COL))
                )
        else:
            self.pairs.append(
                (
                    self.base.filter(u < train_ratio).drop(FOLD_COL),
                    self.base.filter(u >= train_ratio).drop(FOLD_COL),
                )
            )
        self.rows = self.base.count()  # materialises the cache once

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[tuple[DataFrame, DataFrame]]:
        return iter(self.pairs)

    def unpersist(self) -> None:
        """Release the cached frame."""
        if self._cached:
            self.base.unpersist()


@dataclass
class TrialResult:
    """One evaluated parameter map."""

    number: int
    params: dict[str, Any]
    fold_scores: list[float] = field(default_factory=list)
    state: str = "running"  # complete | pruned | failed
    seconds: float = 0.0
    finished_at: float = 0.0
    error: str | None = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.fold_scores) if self.fold_scores else math.nan

    @property
    def std(self) -> float:
        return statistics.pstdev(self.fold_scores) if len(self.fold_scores) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"] = None if math.isnan(self.mean) else self.mean
        out["std"] = self.std
        return out


class _Pruned(Exception):
    """Raised inside a trial when the pruner stops it."""


def _native(value: Any) -> Any:
    """NumPy scalars → Python scalars (Spark type converters and JSON want natives)."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_native(v) for v in value]
    return value


def to_param_map(estimator: Estimator, params: dict[str, Any]) -> dict[Any, Any]:
    """Spark ``{Param: value}`` for a parameter dict; MLP's ``hidden_layers`` becomes ``layers``."""
    out: dict[Any, Any] = {}
    for name, value in params.items():
        value = _native(value)
        if name == "hidden_layers" and estimator.hasParam("layers"):
            layers = list(estimator.getOrDefault("layers"))
            out[estimator.getParam("layers")] = [layers[0], *[int(v) for v in value], layers[-1]]
        elif estimator.hasParam(name):
            out[estimator.getParam(name)] = value
        else:
            raise ConfigError([(f"tuning.{name}", f"{type(estimator).__name__} has no parameter {name!r}")])
    return out


class _GridSource:
    def __init__(self, points: list[dict[str, Any]]):
        self.points = points
        self.total = len(points)
        self._next = 0

    def ask(self) -> tuple[dict[str, Any], Any] | None:
        if self._next >= len(self.points):
            return None
        self._next += 1
        return self.points[self._next - 1], None

    def tell(self, handle: Any, result: TrialResult) -> None:
        return None


class _RandomSource(_GridSource):
    def __init__(
        self, space: dict[str, dict[str, Any]] | None, grid: dict[str, list[Any]] | None, n: int, seed: int
    ):
        import numpy as np

        rng = np.random.default_rng(seed)
        if grid:
            points = grid_points(grid)
            order = rng.permutation(len(points))[:n]
            chosen = [points[int(i)] for i in order]
        else:
            assert space is not None
            chosen, seen = [], set()
            attempts = 0
            while len(chosen) < n and attempts < 50 * n:
                attempts += 1
                p = sample_space(space, rng)
                key = json.dumps(p, sort_keys=True, default=str)
                if key not in seen:
                    seen.add(key)
                    chosen.append(p)
        super().__init__(chosen)


class _OptunaSource:
    """Optuna TPE, ask-and-tell; choice values that are not scalars travel as JSON strings."""

    def __init__(
        self, space: dict[str, dict[str, Any]], n: int, seed: int, direction: str, prune: bool, parallel: bool
    ):
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.total = n
        self._asked = 0
        self._encoded: set[str] = set()
        self.distributions: dict[str, Any] = {}
        for name, dist in space.items():
            kind = dist["type"]
            if kind == "choice":
                values = list(dist["values"])
                if any(isinstance(v, (list, dict)) for v in values):
                    self._encoded.add(name)
                    values = [json.dumps(v) for v in values]
                self.distributions[name] = CategoricalDistribution(values)
            elif kind in ("uniform", "loguniform"):
                self.distributions[name] = FloatDistribution(
                    float(dist["low"]), float(dist["high"]), log=kind == "loguniform"
                )
            elif kind == "int":
                log_scale = bool(dist.get("log"))
                self.distributions[name] = IntDistribution(
                    int(dist["low"]),
                    int(dist["high"]),
                    log=log_scale,
                    step=1 if log_scale else int(dist.get("step", 1)),
                )
        startup = max(3, min(10, n // 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate / constant_liar are "experimental"
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=parallel
            )
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
            if prune
            else optuna.pruners.NopPruner()
        )
        self.study = optuna.create_study(
            direction="maximize" if direction == "max" else "minimize", sampler=sampler, pruner=pruner
        )
        self._lock = threading.Lock()

    def ask(self) -> tuple[dict[str, Any], Any] | None:
        if self._asked >= self.total:
            return None
        self._asked += 1
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask(self.distributions)
        params = {k: json.loads(v) if k in self._encoded else v for k, v in trial.params.items()}
        return params, trial

    def tell(self, trial: Any, result: TrialResult) -> None:
        from optuna.trial import TrialState

        with self._lock:
            if result.state == "complete":
                self.study.tell(trial, result.mean)
            elif result.state == "pruned":
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, state=TrialState.FAIL)


def _fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.0f}s"


class _Search:
    """Run trials from a source with ``parallelism`` workers; record, log and track them."""

    def __init__(
        self,
        estimator: Estimator,
        folds: Folds,
        scorer: Callable[[DataFrame, Any], float],
        direction: str,
        metric: str,
        label: str,
        parallelism: int,
        deadline: float | None,
        tracker: Tracker | None,
        search: str,
    ):
        self.estimator = estimator
        self.folds = folds
        self.scorer = scorer
        self.direction = direction
        self.metric = metric
        self.label = label
        self.parallelism = max(1, parallelism)
        self.deadline = deadline
        self.tracker = tracker
        self.search = search
        self.results: list[TrialResult] = []
        self.timed_out = False
        self.t0 = time.perf_counter()

    def better(self, a: float, b: float) -> bool:
        if math.isnan(b):
            return not math.isnan(a)
        return a > b if self.direction == "max" else a < b

    def best(self) -> TrialResult | None:
        best: TrialResult | None = None
        for r in self.results:
            if r.state == "complete" and (best is None or self.better(r.mean, best.mean)):
                best = r
        return best

    def _evaluate(self, number: int, params: dict[str, Any], trial: Any) -> TrialResult:
        result = TrialResult(number=number, params={k: _native(v) for k, v in params.items()})
        t0 = time.perf_counter()
        try:
            param_map = to_param_map(self.estimator, params)
            for i, (train, valid) in enumerate(self.folds):
                model = self.estimator.fit(train, params=param_map)
                score = self.scorer(model.transform(valid), model)
                result.fold_scores.append(score)
                if trial is not None and len(self.folds) > 1 and i < len(self.folds) - 1:
                    trial.report(result.mean, step=i + 1)
                    if trial.should_prune():
                        raise _Pruned
            result.state = "complete"
            if math.isnan(result.mean):
                result.state, result.error = "failed", f"the metric {self.metric} came out NaN"
        except _Pruned:
            result.state = "pruned"
        except ConfigError:
            raise
        except Exception as exc:  # one bad combination must not end the search
            result.state, result.error = "failed", f"{type(exc).__name__}: {exc}"
        result.seconds = time.perf_counter() - t0
        result.finished_at = time.perf_counter() - self.t0
        return result

    def run(self, source: Any) -> list[TrialResult]:
        number = 0
        running: dict[Future[TrialResult], Any] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="sparkpipe-tune") as pool:
            while True:
                while len(running) < self.parallelism and not self.timed_out:
                    if self.deadline is not None and time.perf_counter() >= self.deadline and self.results:
                        self.timed_out = True
                        log.warning(
                            "tuning: timeout reached after %s; no new trials are started",
                            _fmt_seconds(time.perf_counter() - self.t0),
                        )
                        break
                    asked = source.ask()
                    if asked is None:
                        break
                    params, handle = asked
                    running[pool.submit(self._evaluate, number, params, handle)] = handle
                    number += 1
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: f.result().number):
                    handle = running.pop(fut)
                    result = fut.result()
                    source.tell(handle, result)
                    self.results.append(result)
                    self._report(result, source.total)
                    self._track(result)
        self.results.sort(key=lambda r: r.number)
        return self.results

    def _report(self, result: TrialResult, total: int) -> None:
        done = len(self.results)
        elapsed = time.perf_counter() - self.t0
        best = self.best()
        eta = elapsed / done * max(0, total - done)
        if self.deadline is not None:
            eta = min(eta, max(0.0, self.deadline - time.perf_counter()))
        if result.state == "complete":
            outcome = f"{self.metric}={result.mean:.4f}±{result.std:.4f}"
        elif result.state == "pruned":
            outcome = (
                f"pruned after {len(result.fold_scores)}/{len(self.folds)} folds "
                f"(running mean {result.mean:.4f})"
            )
        else:
            outcome = f"failed ({result.error})"
        log.info(
            "tuning %s [%s] %d/%d done · trial #%d %s · best %s · elapsed %s · ETA %s",
            self.label,
            self.search,
            done,
            total,
            result.number,
            outcome,
            f"{best.mean:.4f} (#{best.number})" if best else "—",
            _fmt_seconds(elapsed),
            _fmt_seconds(eta),
        )

    def _track(self, result: TrialResult) -> None:
        tracker = self.tracker
        if tracker is None or not tracker.enabled or tracker.info is None:
            return
        best = self.best()
        if best is not None:
            tracker.log_metrics({f"tuning_best_{self.metric}": best.mean}, step=len(self.results))
        with tracker.run(
            run_name=f"trial-{result.number:03d}",
            nested=True,
            tags={
                "sparkpipe.trial": str(result.number),
                "sparkpipe.trial_state": result.state,
                "sparkpipe.search": self.search,
            },
        ):
            tracker.log_params({**result.params, "trial_number": result.number})
            metrics = {f"fold_{i}_{self.metric}": s for i, s in enumerate(result.fold_scores)}
            metrics["fit_seconds"] = result.seconds
            metrics["folds_completed"] = len(result.fold_scores)
            if result.state == "complete":
                metrics[f"{self.metric}_mean"] = result.mean
                metrics[f"{self.metric}_std"] = result.std
            tracker.log_metrics(metrics)
            if result.error:
                tracker.set_tags({"sparkpipe.trial_error": result.error[:500]})


def _eta_squared(values: list[Any], scores: list[float]) -> float:
    """Correlation ratio η² of ``scores`` on the groups of ``values`` (quintiles when continuous)."""
    n = len(scores)
    if n < 2:
        return 0.0
    keys: list[Any] = [json.dumps(v, default=str) for v in values]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and len(set(keys)) > 5:
        ranked = sorted(range(n), key=lambda i: values[i])
        keys = [None] * n
        for pos, i in enumerate(ranked):
            keys[i] = pos * 5 // n
    total_mean = statistics.fmean(scores)
    sst = sum((s - total_mean) ** 2 for s in scores)
    if sst == 0:
        return 0.0
    groups: dict[Any, list[float]] = {}
    for key, s in zip(keys, scores, strict=True):
        groups.setdefault(key, []).append(s)
    ssb = sum(len(g) * (statistics.fmean(g) - total_mean) ** 2 for g in groups.values())
    return ssb / sst


def param_importance(summary: dict[str, Any], study: Any = None) -> dict[str, Any]:
    """Relative importance of each tuned parameter (sums to 1); see the module docstring.

    Returns
    -------
    dict
        ``{"method": "fanova" | "correlation_ratio", "values": {param: importance}}``; ``values`` is
        empty with fewer than three complete trials.
    """
    complete = [t for t in summary["trials"] if t["state"] == "complete" and t["mean"] is not None]
    names = sorted({k for t in complete for k in t["params"]})
    if len(complete) < 3 or not names:
        return {"method": None, "values": {}}
    if study is not None:
        try:
            import optuna

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
                )
            if values:
                return {"method": "fanova", "values": {k: float(v) for k, v in values.items()}}
        except Exception as exc:  # scikit-learn missing, a parameter never varied, ...
            log.info("fANOVA importance unavailable (%s); using the correlation ratio", exc)
    scores = [float(t["mean"]) for t in complete]
    raw = {n: _eta_squared([t["params"].get(n) for t in complete], scores) for n in names}
    total = sum(raw.values())
    values = {n: (v / total if total > 0 else 0.0) for n, v in raw.items()}
    return {"method": "correlation_ratio", "values": dict(sorted(values.items(), key=lambda kv: -kv[1]))}
