"""Registry-aware checks of a schema-valid config, run by :func:`sparkpipe.config.build_config`.

The pydantic schema checks shapes and types; this module checks the names that only the registries
know: the algorithm, its hyperparameters (Spark Param names and value types, read from the estimator
class without a JVM), the task, metric names, tuning grids and search spaces, and the algorithms to
compare. Every problem is collected and reported at once in one :class:`ConfigError` whose entries
carry the key path (``model.hyperparameters.maxDepth``, ``evaluation.classification[2]``, ...).

Nothing here starts a SparkSession or a JVM.

Two tuning formats are accepted for ``tuning.param_grid`` (and likewise ``tuning.search_space``):

* per algorithm, as in the original README: ``{random_forest: {numTrees: [50, 100]}}``;
* flat, for the configured ``model.algorithm``: ``{numTrees: [50, 100]}``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sparkpipe.errors import ConfigError, UnknownNameError
from sparkpipe.evaluation import METRICS, canonical_metric
from sparkpipe.models.algorithms import (
    ALGORITHMS,
    TASKS,
    AlgorithmSpec,
    algorithm_names,
    class_weight_algorithms,
    describe_registry,
    get_variants,
    hyperparameter_problems,
    imbalance_problems,
    normalize_name,
    param_grid_problems,
    search_space_problems,
    supports_class_weight,
    task_mismatch_message,
    tasks_for,
    valid_params,
)

if TYPE_CHECKING:
    from sparkpipe.config import PipelineConfig

log = logging.getLogger(__name__)

Problems = list[tuple[str, str]]


def validate_semantics(cfg: PipelineConfig, source: str | None = None) -> None:
    """Check a schema-valid config against the registries; raise one error listing every problem.

    Parameters
    ----------
    cfg
        The config as validated by the pydantic schema.
    source
        File the config came from, for the error message.

    Raises
    ------
    ConfigError
        With one ``(key_path, message)`` entry per problem.
    """
    drop_foreign_hyperparameters(cfg)
    problems = semantic_problems(cfg)
    if problems:
        raise ConfigError(problems, source)


def drop_foreign_hyperparameters(cfg: PipelineConfig) -> dict[str, list[str]]:
    """Remove ``model.hyperparameters`` that belong to *other* registered algorithms; warn once.

    The original project's config mixes the parameters of several algorithms in one block (``numTrees``
    next to ``regParam`` and ``k``), and changing ``model.algorithm`` from the default config (``--set
    model.algorithm=gbt``, ``POST /train``) carries the previous algorithm's parameters over. A name that
    is a parameter of some other algorithm is dropped with one warning line naming it and its owners; a
    name no algorithm knows stays in place, so :func:`semantic_problems` reports it with a did-you-mean.

    Returns
    -------
    dict
        Dropped name → the algorithms it belongs to (empty when nothing was dropped).
    """
    params = cfg.model.hyperparameters
    specs, _ = _resolve_model(cfg, [])
    if not params or not specs:
        return {}
    # the same algorithm's other task (thresholds on a regression forest) is a mistake, not a carry-over
    own = {name for spec in get_variants(specs[0].name) for name in valid_params(spec)}
    # maxDepth for xgboost (max_depth) is this algorithm's parameter misspelt: an error, not ignored
    spelt = {_squash(name) for name in own}
    unknown = [name for name in params if name not in own and _squash(name) not in spelt]
    if not unknown:
        return {}
    owners: dict[str, list[str]] = {}
    in_use = {spec.name for spec in specs}
    for spec in ALGORITHMS.values():
        if spec.name in in_use:
            continue
        try:
            names = set(valid_params(spec))
        except ImportError:  # an optional estimator (xgboost) that is not installed
            continue
        for name in unknown:
            if name in names and spec.name not in owners.setdefault(name, []):
                owners[name].append(spec.name)
    owners = {n: sorted(a) for n, a in owners.items() if a}
    if owners:
        cfg.model.hyperparameters = {k: v for k, v in params.items() if k not in owners}
        listed = "; ".join(f"{n} ({_few(a)})" for n, a in owners.items())
        log.warning(
            "model.hyperparameters: ignored %d parameter(s) of other algorithms, not parameters of %s: %s",
            len(owners),
            specs[0].name,
            listed,
        )
    return owners


def _squash(name: str) -> str:
    return str(name).lower().replace("_", "")


def _few(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def semantic_problems(cfg: PipelineConfig) -> Problems:
    """Every registry-level problem of ``cfg`` as ``(key_path, message)`` pairs (empty when fine)."""
    problems: Problems = []
    specs, tasks = _resolve_model(cfg, problems)
    if specs:
        problems += _common([hyperparameter_problems(s, cfg.model.hyperparameters) for s in specs])
    problems += imbalance_problems(
        specs, cfg.model.class_weight, cfg.evaluation.threshold, cfg.model.hyperparameters
    )
    if cfg.evaluation.threshold == "auto" and cfg.data.validation_split <= 0:
        problems.append(
            (
                "evaluation.threshold",
                "auto chooses the threshold on the validation split, but data.validation_split is 0; "
                "set data.validation_split (e.g. 0.15) or remove evaluation.threshold",
            )
        )
    problems += _evaluation_problems(cfg, specs, tasks)
    problems += _tuning_problems(cfg, specs, tasks)
    problems += _compare_problems(cfg, specs, tasks)
    seen: set[tuple[str, str]] = set()
    unique: Problems = []
    for p in problems:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


# --------------------------------------------------------------------------------------------- model
def _hint(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_algorithm(name: str, task: str | None) -> str:
    if task is not None:
        valid = algorithm_names(task)
        return f"unknown {task} algorithm {name!r}{_hint(name, valid)}; valid {task} algorithms: {', '.join(valid)}"
    return f"unknown algorithm {name!r}{_hint(name, algorithm_names())}; valid algorithms by task — {describe_registry()}"


def _resolve_model(cfg: PipelineConfig, problems: Problems) -> tuple[list[AlgorithmSpec], list[str]]:
    """The algorithm's spec(s) for the configured task, and the task(s) the run may have."""
    name, task = cfg.model.algorithm, cfg.model.task_type
    try:
        variants = get_variants(name)
    except UnknownNameError:
        problems.append(("model.algorithm", _unknown_algorithm(name, task)))
        return [], [task] if task else list(TASKS)
    if task is not None:
        matching = [v for v in variants if v.task == task]
        if not matching:
            problems.append(("model.task_type", task_mismatch_message(normalize_name(name), task)))
            return [], [task]
        return matching, [task]
    return variants, [v.task for v in variants]


def _common(problem_lists: list[Problems]) -> Problems:
    """Problems that hold for every variant (a name valid for one variant of ``gbt`` is fine)."""
    if not problem_lists:
        return []
    shared = set.intersection(*({path for path, _ in pl} for pl in problem_lists))
    return [(path, msg) for path, msg in problem_lists[0] if path in shared]


# ---------------------------------------------------------------------------------------- evaluation
def _metric_problem(
    path: str, name: str | None, tasks: list[str], specs: list[AlgorithmSpec]
) -> tuple[str, str] | None:
    if name is None:
        return None
    key = canonical_metric(name)
    if not any(key in METRICS[t] for t in tasks):
        valid = sorted({m for t in tasks for m in METRICS[t]})
        label = "/".join(tasks)
        return (path, f"unknown {label} metric {name!r}{_hint(key, valid)}; valid: {', '.join(valid)}")
    needs = {METRICS[t][key].needs for t in tasks if key in METRICS[t]}
    if "probability" in needs and specs and not any(s.supports_probability for s in specs):
        return (
            path,
            f"{key} needs predicted probabilities, which {specs[0].name} does not produce; choose a "
            "metric such as f1 or auc_roc, or an algorithm with probabilities",
        )
    return None


def _evaluation_problems(cfg: PipelineConfig, specs: list[AlgorithmSpec], tasks: list[str]) -> Problems:
    problems: Problems = []
    ev = cfg.evaluation
    for task in TASKS:
        valid = METRICS[task]
        for i, name in enumerate(getattr(ev, task)):
            if canonical_metric(name) not in valid:
                problems.append(
                    (
                        f"evaluation.{task}[{i}]",
                        f"unknown {task} metric {name!r}{_hint(canonical_metric(name), valid)}; valid {task} "
                        f"metrics: {', '.join(sorted(valid))}",
                    )
                )
    for path, name in (
        ("evaluation.primary_metric", ev.primary_metric),
        ("deployment.promotion.metric", cfg.deployment.promotion.metric),
    ):
        found = _metric_problem(path, name, tasks, specs)
        if found:
            problems.append(found)
    return problems


# -------------------------------------------------------------------------------------------- tuning
def _split_param_grid(grid: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate flat entries ``{param: [values]}`` from per-algorithm blocks ``{algo: {param: [...]}}``."""
    flat = {k: v for k, v in grid.items() if not isinstance(v, Mapping)}
    nested = {k: v for k, v in grid.items() if isinstance(v, Mapping)}
    return flat, nested


def _specs_for(name: str, tasks: list[str]) -> tuple[list[AlgorithmSpec], str | None]:
    """Variants of ``name`` usable for ``tasks``, or an error message."""
    try:
        variants = get_variants(name)
    except UnknownNameError:
        return [], _unknown_algorithm(name, tasks[0] if len(tasks) == 1 else None)
    usable = [v for v in variants if v.task in tasks]
    if usable:
        return usable, None
    if len(tasks) == 1:
        return [], task_mismatch_message(normalize_name(name), tasks[0])
    return [], (
        f"algorithm {name!r} is a {' / '.join(tasks_for(name))} algorithm, which does not fit "
        f"the configured {' / '.join(tasks)} model"
    )


def _is_search_entry(value: Any) -> bool:
    return isinstance(value, Mapping) and "type" in value


def _split_search_space(
    space: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Mapping[str, Any]]]:
    """Separate flat entries ``{param: {type: ...}}`` from per-algorithm blocks ``{algo: {param: ...}}``."""
    flat: dict[str, Any] = {}
    nested: dict[str, Mapping[str, Any]] = {}
    for key, value in space.items():
        if tasks_for(key) and isinstance(value, Mapping) and not _is_search_entry(value):
            nested[key] = value
        else:
            flat[key] = value
    return flat, nested


def _tuning_problems(cfg: PipelineConfig, specs: list[AlgorithmSpec], tasks: list[str]) -> Problems:
    problems: Problems = []
    tuning = cfg.tuning
    found = _metric_problem("tuning.metric", tuning.metric, tasks, specs)
    if found:
        problems.append(found)

    flat_grid, nested_grid = _split_param_grid(tuning.param_grid or {})
    for algo, sub in nested_grid.items():
        path = f"tuning.param_grid.{algo}"
        algo_specs, err = _specs_for(algo, tasks)
        if err:
            problems.append((path, err))
            continue
        problems += _common([param_grid_problems(s, sub, path) for s in algo_specs])
    if flat_grid and specs:
        problems += _common([param_grid_problems(s, flat_grid, "tuning.param_grid") for s in specs])

    flat, nested = _split_search_space(tuning.search_space or {})
    if flat and specs:
        problems += _common([search_space_problems(s, flat, "tuning.search_space") for s in specs])
    for algo, sub in nested.items():
        path = f"tuning.search_space.{algo}"
        algo_specs, err = _specs_for(algo, tasks)
        if err:
            problems.append((path, err))
            continue
        problems += _common([search_space_problems(s, sub, path) for s in algo_specs])
    return problems


# ------------------------------------------------------------------------------------------- compare
def _compare_problems(cfg: PipelineConfig, specs: list[AlgorithmSpec], tasks: list[str]) -> Problems:
    problems: Problems = []
    if cfg.compare is None:
        return problems
    for i, name in enumerate(cfg.compare.algorithms):
        found_specs, err = _specs_for(name, tasks)
        classifiers = [s for s in found_specs if s.task == "classification"]
        if err:
            problems.append((f"compare.algorithms[{i}]", err))
        elif (
            cfg.model.class_weight == "balanced"
            and classifiers
            and not any(supports_class_weight(s) for s in classifiers)
        ):
            problems.append(
                (
                    f"compare.algorithms[{i}]",
                    f"model.class_weight is balanced, which {name} cannot apply (no weightCol); compare "
                    f"algorithms that can: {', '.join(class_weight_algorithms())}",
                )
            )
    found = _metric_problem("compare.metric", cfg.compare.metric, tasks, [])
    if found:
        problems.append(found)
    return problems


# ------------------------------------------------------------------------------ helpers for tuning
def param_grid_for(cfg: PipelineConfig, algorithm: str) -> dict[str, list[Any]]:
    """The user's param grid for one algorithm, whichever of the two formats the config uses.

    Returns an empty dict when the config has no grid for ``algorithm`` (the caller then uses the
    algorithm's default search space).
    """
    flat, nested = _split_param_grid(cfg.tuning.param_grid or {})
    key = normalize_name(algorithm)
    for name, sub in nested.items():
        if normalize_name(name) == key:
            return {p: list(v) for p, v in sub.items()}
    if flat and normalize_name(cfg.model.algorithm) == key:
        return {p: list(v) for p, v in flat.items()}
    return {}


def search_space_for(cfg: PipelineConfig, spec: AlgorithmSpec) -> dict[str, dict[str, Any]]:
    """The search space for ``spec``: the user's entries if any, else ``spec.search_space``."""
    flat, nested = _split_search_space(cfg.tuning.search_space or {})
    for name, sub in nested.items():
        if normalize_name(name) == spec.name:
            return {p: dict(v) for p, v in sub.items()}
    if flat and normalize_name(cfg.model.algorithm) == spec.name:
        return {p: dict(v) for p, v in flat.items()}
    return {p: dict(v) for p, v in spec.search_space.items()}
