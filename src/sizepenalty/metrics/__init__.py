"""Metrics as pure functions on numpy arrays plus voxel spacing (no torch needed, no tracking).

Masks may be numpy arrays or torch tensors of 0/1 values (bool, integer or float), 2D or 3D; see
:mod:`sizepenalty.metrics.validation` for what is accepted and
:mod:`sizepenalty.metrics.edge_cases` for the value of every metric on empty masks.
"""

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
    lesion_f1,
)
from sizepenalty.metrics.edge_cases import EDGE_CASES, UNDEFINED, CaseType, EdgeCases
from sizepenalty.metrics.instances import (
    InstanceRule,
    Matching,
    OverlapDetection,
    label_instances,
    match_instances,
    remove_small_components,
)
from sizepenalty.metrics.profiles import METRICS, PROFILES, MetricInfo, Profile, get_profile
from sizepenalty.metrics.surface import assd_mm, surface

__all__ = [
    "EDGE_CASES", "ISLES22_KEYS", "METRICS", "PROFILES", "THESIS_KEYS", "UNDEFINED", "CaseResult",
    "CaseType", "EdgeCases", "InstanceRule", "LesionRecord", "Matching", "MetricInfo",
    "OverlapDetection", "Profile", "assd_mm", "case_metrics", "ccc", "dice_score",
    "evaluate_case", "evaluate_case_isles22", "get_profile", "isles22_metrics",
    "label_instances", "lesion_f1", "match_instances", "remove_small_components", "surface",
]  # fmt: skip
