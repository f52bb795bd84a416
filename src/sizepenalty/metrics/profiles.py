"""Metric profiles: which per-case columns a study produces and how its tables, statistics and
figures read them. Tables never name a metric key themselves; they ask the study's profile.

* ``thesis``: the thesis's metric set (Table 5.1 and the extra metrics of §4.6), instances and
  matching by an :class:`~sizepenalty.metrics.instances.InstanceRule` (default: panoptica's).
* ``isles22``: the ISLES 2022 challenge's official definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sizepenalty.metrics.casewise import (
    ISLES22_KEYS,
    THESIS_KEYS,
    CaseResult,
    evaluate_case,
    evaluate_case_isles22,
)
from sizepenalty.metrics.instances import InstanceRule

__all__ = ["METRICS", "PROFILES", "Column", "MetricInfo", "Profile", "get_profile"]


@dataclass(frozen=True)
class MetricInfo:
    """A per-case metric as tables show it: column label, whether higher is better (None: no
    better direction, never marked best), decimals."""

    key: str
    label: str
    higher: bool | None
    digits: int = 4


METRICS: dict[str, MetricInfo] = {
    m.key: m
    for m in (
        MetricInfo("dice", "Dice", True),
        # The thesis's FP / Missed / Det. columns: the overlap rule (see metrics.casewise).
        MetricInfo("fp_overlap", "FP", False, 2),
        MetricInfo("fn_overlap", "Missed", False, 2),
        MetricInfo("detection_overlap", "Det.", True),
        MetricInfo("fp_iou", "FP (IoU)", False, 2),
        MetricInfo("fn_iou", "Missed (IoU)", False, 2),
        MetricInfo("detection_iou", "Det. (IoU)", True),
        MetricInfo("rve", "RVE", False),
        MetricInfo("pq", "PQ", True),
        MetricInfo("sq", "SQ", True),
        MetricInfo("rq", "RQ", True),
        MetricInfo("assd_mm", "ASSD", False),
        MetricInfo("assd_tp_mm", "ASSD (TP)", False),
        MetricInfo("lesion_f1", "Lesion F1", True),
        MetricInfo("vw_dice", "vw-Dice", True),
        MetricInfo("ccc", "CCC", True),
        MetricInfo("ave_ml", "AVE (mL)", False, 2),
        MetricInfo("pq_dsc", "PQ (Dice)", True),
        MetricInfo("sq_dsc", "SQ (Dice)", True),
        MetricInfo("avd_ml", "AVD (mL)", False, 2),
        MetricInfo("lesion_count_diff", "Count diff.", False, 2),
        MetricInfo("count_diff", "Count diff.", False, 2),
        # Not a metric of the prediction: each run's best validation epoch (thesis Table 5.3).
        MetricInfo("best_epoch", "Epochs", None, 1),
    )
}
"""Every metric a table can show. ``ccc`` is computed per fold from the case volumes."""

Column = tuple[str, str, bool]  # (label, per-case key, higher is better)


@dataclass(frozen=True)
class Profile:
    """A metric profile: the per-case ``keys`` it writes and the column sets built from them."""

    name: str
    keys: tuple[str, ...]
    main: tuple[str, ...]  # Table 5.1 analogue
    extra: tuple[str, ...]  # further metrics, same layout
    pairs: tuple[str, ...]  # compared between baseline and candidate (Table 5.2 analogue)
    strata: tuple[str, ...]  # per size stratum (Tables 5.4/5.5 analogue)
    improvement: tuple[str, ...]  # Fig. 5.1 bars
    compute: Callable[..., CaseResult]

    def columns(self, which: str) -> tuple[Column, ...]:
        """``(label, key, higher is better)`` for one of the column sets."""
        return tuple((METRICS[k].label, k, METRICS[k].higher) for k in getattr(self, which))


def _thesis(gt, pred, spacing, rule: InstanceRule, eps: float) -> CaseResult:
    # Post-processing (small-component removal) is applied before evaluation, not here.
    return evaluate_case(gt, pred, spacing, rule, eps)


def _isles22(gt, pred, spacing, rule: InstanceRule, eps: float) -> CaseResult:
    return evaluate_case_isles22(gt, pred, spacing)


PROFILES: dict[str, Profile] = {
    "thesis": Profile(
        name="thesis",
        keys=THESIS_KEYS,
        main=("dice", "fp_overlap", "fn_overlap", "detection_overlap", "rve", "pq", "sq", "rq",
              "assd_mm"),
        extra=("fp_iou", "fn_iou", "detection_iou", "lesion_f1", "vw_dice", "ccc", "ave_ml",
               "assd_tp_mm", "pq_dsc", "sq_dsc"),
        pairs=("dice", "fp_overlap", "fn_overlap", "detection_overlap", "rve", "pq", "sq", "rq",
               "assd_mm", "lesion_f1", "ave_ml"),
        # Tables 5.4/5.5's columns plus detection, and ASSD for Fig. 5.1's per-stratum bars.
        strata=("dice", "rve", "fp_overlap", "fn_overlap", "detection_overlap", "pq", "sq", "rq",
                "assd_mm"),
        # Fig. 5.1: the bold columns of Tables 5.1-5.3 (RVE and ASSD as relative reductions).
        improvement=("dice", "rve", "pq", "sq", "rq", "assd_mm"),
        compute=_thesis,
    ),  # fmt: skip
    "isles22": Profile(
        name="isles22",
        keys=ISLES22_KEYS,
        main=("dice", "avd_ml", "lesion_count_diff", "lesion_f1"),
        extra=("ccc",),
        pairs=("dice", "avd_ml", "lesion_count_diff", "lesion_f1"),
        strata=("dice", "avd_ml", "lesion_count_diff", "lesion_f1"),
        improvement=("dice", "avd_ml", "lesion_count_diff", "lesion_f1"),
        compute=_isles22,
    ),
}


def get_profile(name: str) -> Profile:
    """The profile named ``name`` (``metrics.profile``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown metrics profile {name!r}; expected one of {', '.join(PROFILES)}"
        ) from None
