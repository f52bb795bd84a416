"""Metrics as pure functions on numpy arrays plus voxel spacing (no torch, no tracking)."""

from sizepenalty.metrics.casewise import (
    ISLES22_KEYS,
    THESIS_KEYS,
    CaseResult,
    LesionRecord,
    case_metrics,
    ccc,
    dice_score,
    evaluate_case,
    evaluate_case_isles22,
    isles22_metrics,
)
from sizepenalty.metrics.instances import (
    InstanceRule,
    Matching,
    label_instances,
    match_instances,
    remove_small_components,
)
from sizepenalty.metrics.profiles import METRICS, PROFILES, MetricInfo, Profile, get_profile
from sizepenalty.metrics.surface import assd_mm, surface

__all__ = [
    "ISLES22_KEYS", "METRICS", "PROFILES", "THESIS_KEYS", "CaseResult", "InstanceRule",
    "LesionRecord", "Matching", "MetricInfo", "Profile", "assd_mm", "case_metrics", "ccc",
    "dice_score", "evaluate_case", "evaluate_case_isles22", "get_profile", "isles22_metrics",
    "label_instances", "match_instances", "remove_small_components", "surface",
]  # fmt: skip
