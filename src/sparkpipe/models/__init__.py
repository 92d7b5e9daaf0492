"""Models: the algorithm registry (config name → Spark estimator, defaults, search space)."""

from sparkpipe.models.algorithms import (
    ALGORITHMS,
    AlgorithmSpec,
    algorithm_names,
    build_estimator,
    check_hyperparameters,
    check_task,
    get_algorithm,
    infer_task,
    valid_params,
)

__all__ = [
    "ALGORITHMS",
    "AlgorithmSpec",
    "algorithm_names",
    "build_estimator",
    "check_hyperparameters",
    "check_task",
    "get_algorithm",
    "infer_task",
    "valid_params",
]
