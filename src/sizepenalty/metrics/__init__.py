"""Metrics as pure functions on numpy arrays plus voxel spacing (no torch, no tracking)."""

from sizepenalty.metrics.casewise import (
    ISLES22_KEYS,
    THESIS_KEYS,
    case_metrics,
    ccc,
    dice_score,
    isles22_metrics,
)
from sizepenalty.metrics.instances import (
    Matching,
    label_instances,
    match_instances,
    remove_small_components,
)
from sizepenalty.metrics.surface import assd_mm, surface

__all__ = [
    "ISLES22_KEYS", "THESIS_KEYS", "Matching", "assd_mm", "case_metrics", "ccc", "dice_score",
    "isles22_metrics", "label_instances", "match_instances", "remove_small_components", "surface",
]  # fmt: skip
