"""Automated feature engineering: column roles, custom Spark stages and the stage planner."""

from sparkpipe.features.auto import (
    DEFAULT_STEPS,
    STEP_BUILDERS,
    FeaturePlan,
    PlanContext,
    build_feature_stages,
)
from sparkpipe.features.roles import ColumnRoles, infer_roles, profile_frame

__all__ = [
    "DEFAULT_STEPS",
    "STEP_BUILDERS",
    "ColumnRoles",
    "FeaturePlan",
    "PlanContext",
    "build_feature_stages",
    "infer_roles",
    "profile_frame",
]
