"""Edge cases: the value of every per-case metric when a case has nothing on one side, or no
matched pair. The one table of these conventions: the metric functions apply it, the README's
"Metric conventions" lists it (``tests/test_edge_cases.py`` checks both against it).

Four case types, as panoptica's edge-case handler
(``panoptica.utils.edge_case_handling``) distinguishes them:

* ``both empty``: no reference and no predicted voxel;
* ``empty reference``: no reference voxel, some predicted voxels;
* ``empty prediction``: some reference voxels, no predicted voxel;
* ``no matched pair``: both non-empty but no true positive under the rule the metric counts with
  (the overlap rule, the IoU rule, or the study's ``metrics.matching``).

Each metric has, per case type, a number, :data:`UNDEFINED` (NaN: the case is left out of means
and the tables count it) or :data:`FORMULA` (the definition applies as written and stays finite).
Never inf, and never a stand-in that would dominate a mean: an RVE of V_P/eps for an empty
reference, or an image diagonal as the ASSD of an empty prediction, is undefined instead.
Matched-instance metrics (PQ, SQ, RQ and their Dice variants) take panoptica's values in every
case type; where panoptica returns inf (the matched-pair ASSD without a pair) we return undefined.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "EDGE_CASES", "FORMULA", "UNDEFINED", "CaseType", "EdgeCases", "apply_edge_cases",
    "case_type", "cell_text",
]  # fmt: skip


class CaseType(StrEnum):
    """The kinds of case whose metric values are fixed by convention rather than by formula."""

    BOTH_EMPTY = "both empty"
    EMPTY_REFERENCE = "empty reference"
    EMPTY_PREDICTION = "empty prediction"
    NO_MATCH = "no matched pair"


UNDEFINED = float("nan")
"""Undefined: NaN in the per-case CSV, left out of means, counted in the tables."""

FORMULA = None
"""The metric's definition applies as written (finite: a count, a volume, a distance)."""

RULES = ("overlap", "iou", "matching")
"""Which true positives a metric's "no matched pair" refers to: the overlap rule (any shared
voxel), the IoU rule (one-to-one at ``metrics.iou_threshold``) or ``metrics.matching``."""


@dataclass(frozen=True)
class EdgeCases:
    """One metric's conventions: the value per case type and the rule whose TP = 0 makes a case
    "no matched pair" (None: the metric does not depend on matching, so that case is ordinary)."""

    rule: str | None
    both_empty: float | int | None
    empty_reference: float | int | None
    empty_prediction: float | int | None
    no_match: float | int | None

    def __post_init__(self) -> None:
        if self.rule is not None and self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}; expected one of {RULES}")
        if self.rule is None and self.no_match is not FORMULA:
            raise ValueError("a metric that does not depend on matching has no 'no matched pair'")

    def value(self, case: CaseType) -> float | int | None:
        """The fixed value for ``case`` (a number, NaN) or :data:`FORMULA`."""
        return {
            CaseType.BOTH_EMPTY: self.both_empty,
            CaseType.EMPTY_REFERENCE: self.empty_reference,
            CaseType.EMPTY_PREDICTION: self.empty_prediction,
            CaseType.NO_MATCH: self.no_match,
        }[case]


F, U = FORMULA, UNDEFINED
_E = EdgeCases

EDGE_CASES: dict[str, EdgeCases] = {
    # key                       rule        both   empty ref  empty pred  no match
    "dice":               _E(None,       1.0,   0.0,       0.0,        F),
    "rve":                _E(None,       0.0,   U,         1.0,        F),
    "ave_ml":             _E(None,       0.0,   F,         F,          F),
    "n_ref":              _E(None,       0,     0,         F,          F),
    "n_pred":             _E(None,       0,     F,         0,          F),
    "tp_overlap":         _E("overlap",  0,     0,         0,          0),
    "fp_overlap":         _E("overlap",  0,     F,         0,          F),
    "fn_overlap":         _E("overlap",  0,     0,         F,          F),
    "detection_overlap":  _E("overlap",  U,     U,         0.0,        0.0),
    "tp_iou":             _E("iou",      0,     0,         0,          0),
    "fp_iou":             _E("iou",      0,     F,         0,          F),
    "fn_iou":             _E("iou",      0,     0,         F,          F),
    "detection_iou":      _E("iou",      U,     U,         0.0,        0.0),
    "lesion_f1":          _E("overlap",  1.0,   0.0,       0.0,        0.0),
    "pq":                 _E("matching", U,     0.0,       0.0,        0.0),
    "sq":                 _E("matching", U,     0.0,       0.0,        0.0),
    "rq":                 _E("matching", U,     0.0,       0.0,        0.0),
    "pq_dsc":             _E("matching", U,     0.0,       0.0,        0.0),
    "sq_dsc":             _E("matching", U,     0.0,       0.0,        0.0),
    "assd_mm":            _E(None,       0.0,   U,         U,          F),
    "assd_tp_mm":         _E("matching", U,     U,         U,          U),
    "vw_dice":            _E("matching", U,     U,         0.0,        0.0),
    "count_diff":         _E(None,       0,     F,         F,          F),
    "vol_ref_ml":         _E(None,       0.0,   0.0,       F,          F),
    "vol_pred_ml":        _E(None,       0.0,   F,         0.0,        F),
    # ISLES 2022 profile (its Dice and lesion F1 are the keys above)
    "avd_ml":             _E(None,       0.0,   F,         F,          F),
    "lesion_count_diff":  _E(None,       0,     F,         F,          F),
}  # fmt: skip
"""Every per-case metric of every profile -> its edge-case conventions."""

del F, U, _E


def case_type(n_ref: int, n_pred: int, tp: int | None) -> CaseType | None:
    """The edge case a pair is, given its instance counts and the TP count of the metric's rule
    (None when the metric does not depend on matching); None for an ordinary case."""
    if n_ref == 0 and n_pred == 0:
        return CaseType.BOTH_EMPTY
    if n_ref == 0:
        return CaseType.EMPTY_REFERENCE
    if n_pred == 0:
        return CaseType.EMPTY_PREDICTION
    if tp == 0:
        return CaseType.NO_MATCH
    return None


def apply_edge_cases(
    metrics: MutableMapping[str, Any], n_ref: int, n_pred: int, tp: Mapping[str, int]
) -> MutableMapping[str, Any]:
    """Set every metric of ``metrics`` that is an edge case of this pair to its convention.

    Args:
        metrics: per-case values computed by formula (NaN where a formula divides by zero).
        n_ref, n_pred: the numbers of reference and predicted instances.
        tp: the true positives under each rule of :data:`RULES` that the metrics use.
    """
    for key in metrics:
        conv = EDGE_CASES[key]
        case = case_type(n_ref, n_pred, tp[conv.rule] if conv.rule else None)
        if case is not None and conv.value(case) is not FORMULA:
            metrics[key] = conv.value(case)
    return metrics


def cell_text(value: float | int | None) -> str:
    """How a convention reads in the README's table: ``formula``, ``undefined`` or the number."""
    if value is FORMULA:
        return "formula"
    if value != value:
        return "undefined"
    return f"{value:g}"
