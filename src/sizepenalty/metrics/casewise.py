"""Per-case metric sets (thesis profile and ISLES 2022 official profile) and across-case CCC.

Lesions are counted by two rules, both reported and named (P = prediction, G = reference):

* the **overlap rule** (ISLES 2022's lesion-wise rule, many-to-one): a reference lesion is found
  when any predicted voxel touches it; a predicted component touching no reference voxel is a
  false positive. ``tp_overlap, fp_overlap, fn_overlap, detection_overlap`` and ``lesion_f1``.
  The thesis's Det./Missed/FP columns are these: its Table 5.1 row for S (Det. 0.78, Missed 3.20
  next to RQ 0 and PQ 0) cannot come from the IoU matching behind its RQ;
* the **IoU rule** (panoptica 2.1's ``NaiveThresholdMatching(IoU, 0.5)``: one-to-one, greedy by
  IoU, a pair at IoU >= ``threshold``, > when strict): ``tp_iou, fp_iou, fn_iou, detection_iou``.

PQ/SQ/RQ (and ``vw_dice``, ``assd_tp_mm``, which use matched pairs) follow the study's
:class:`InstanceRule` (``metrics.matching``; default the IoU rule above), as the thesis computed
them with panoptica (§4.6). Instances are 26-connected components by default (cc3d).

================= ============================================================================
key               definition
================= ============================================================================
dice              2|P∩G| / (|P| + |G|)
rve               |V_P − V_G| / (V_G + eps)   (volumes in voxels)
ave_ml            |V_P − V_G| · voxel volume (mL)
n_ref, n_pred     reference / predicted instances (after min-size filtering of P)
tp/fp/fn_overlap  overlap rule: reference lesions touched / predicted components touching none /
                  reference lesions not touched
detection_overlap tp_overlap / n_ref
tp/fp/fn_iou      IoU rule: matched pairs / unmatched predicted / unmatched reference instances
detection_iou     tp_iou / n_ref
lesion_f1         ISLES 2022: tp_overlap / (tp_overlap + (fp_overlap + fn_overlap) / 2)
rq                TP / (TP + FP/2 + FN/2)       (TP, FP, FN of ``metrics.matching``)
sq                mean IoU over matched pairs
pq                SQ · RQ
sq_dsc, pq_dsc    the same with the pairs' Dice (pq_dsc = sq_dsc · rq)
assd_mm           whole-mask average symmetric surface distance (mm, voxel spacing)
assd_tp_mm        ASSD (mm) of each matched pair, mean over the pairs (panoptica's)
vw_dice           Σ_G |G_i| · Dice(G_i, matched P) / Σ |G_i|
count_diff        |n_pred − n_ref|
================= ============================================================================

Empty masks and cases without a matched pair take the values of
:data:`~sizepenalty.metrics.edge_cases.EDGE_CASES` (a number, or undefined = NaN: left out of
means); no metric is ever inf.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sizepenalty.metrics.edge_cases import EDGE_CASES, apply_edge_cases
from sizepenalty.metrics.instances import (
    PANOPTICA_RULE,
    InstanceRule,
    Matching,
    OverlapDetection,
    match,
)
from sizepenalty.metrics.sparse import MaskPair, prepare_pair
from sizepenalty.metrics.surface import nearest, within_pairs
from sizepenalty.metrics.validation import (
    as_mask,
    as_spacing,
    check_connectivity,
    check_same_shape,
)

__all__ = [
    "ISLES22_KEYS", "THESIS_KEYS", "CaseResult", "LesionRecord", "case_metrics", "ccc",
    "dice_score", "evaluate_case", "evaluate_case_isles22", "isles22_metrics", "lesion_f1",
]  # fmt: skip

THESIS_KEYS = (
    "dice", "rve", "ave_ml", "n_ref", "n_pred",
    "tp_overlap", "fp_overlap", "fn_overlap", "detection_overlap",
    "tp_iou", "fp_iou", "fn_iou", "detection_iou", "lesion_f1",
    "pq", "sq", "rq", "pq_dsc", "sq_dsc", "assd_mm", "assd_tp_mm", "vw_dice", "count_diff",
    "vol_ref_ml", "vol_pred_ml",
)  # fmt: skip
ISLES22_KEYS = ("dice", "avd_ml", "lesion_count_diff", "lesion_f1", "vol_ref_ml", "vol_pred_ml")

_NAN = float("nan")


@dataclass(frozen=True)
class LesionRecord:
    """One reference lesion: its own size and whether each rule found it."""

    lesion: int  # instance label, 1..n_ref in raster order
    voxels: int
    volume_ml: float
    detected_overlap: bool  # touched by the prediction (ISLES 2022 rule)
    detected_iou: bool  # matched one-to-one at the IoU threshold
    iou: float  # with its IoU-matched prediction; NaN when the IoU rule missed it


@dataclass(frozen=True)
class CaseResult:
    """Everything one (reference, prediction) pair yields: the per-case metrics (keys of the
    profile) and one record per reference lesion (for detection by lesion size)."""

    metrics: dict[str, Any]
    lesions: tuple[LesionRecord, ...]


def _checked(gt: Any, pred: Any, spacing: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference and prediction as boolean masks on one grid, and the spacing (mm)."""
    g, p = as_mask(gt, "gt"), as_mask(pred, "pred")
    check_same_shape(g, p, ("gt", "pred"))
    return g, p, np.asarray(as_spacing(spacing, g.ndim))


def dice_score(gt: Any, pred: Any, empty_value: float | None = None) -> float:
    """Binary Dice 2|P∩G| / (|P| + |G|) of two masks on the same grid; when both are empty,
    ``empty_value`` if given, else the study's convention (``EDGE_CASES["dice"]``: 1.0)."""
    g, p = as_mask(gt, "gt"), as_mask(pred, "pred")
    check_same_shape(g, p, ("gt", "pred"))
    denom = int(np.count_nonzero(g)) + int(np.count_nonzero(p))
    if denom == 0:
        return float(EDGE_CASES["dice"].both_empty if empty_value is None else empty_value)
    return 2.0 * int(np.count_nonzero(g & p)) / denom


def lesion_f1(found: OverlapDetection) -> float:
    """The ISLES 2022 lesion-wise F1 of the overlap rule, TP / (TP + (FP + FN) / 2); with no
    instance on either side, ``EDGE_CASES["lesion_f1"]`` (1.0). Both profiles use this one."""
    denom = found.tp + (found.fp + found.fn) / 2
    return found.tp / denom if denom else float(EDGE_CASES["lesion_f1"].both_empty)


def _ratio(a: float, b: float) -> float:
    return a / b if b else _NAN


def _lesion_records(pair: MaskPair, found: OverlapDetection, iou_match: Matching,
                    voxel_ml: float) -> tuple[LesionRecord, ...]:  # fmt: skip
    iou = {a: c for a, _, c, _ in iou_match.pairs}
    sizes = pair.ref.sizes.tolist()
    return tuple(
        LesionRecord(a, sizes[a], sizes[a] * voxel_ml, a in found.detected, a in iou,
                     iou.get(a, _NAN))
        for a in range(1, pair.ref.n + 1)
    )  # fmt: skip


def _panoptic(m: Matching) -> dict[str, float]:
    """PQ, SQ, RQ and their Dice variants from a matching (NaN where undefined by formula)."""
    n = m.n_ref + m.n_pred
    rq = _ratio(m.tp, m.tp + 0.5 * m.fp + 0.5 * m.fn) if n else _NAN
    sq = float(np.mean([c for _, _, c, _ in m.pairs])) if m.tp else _NAN
    sq_dsc = float(np.mean([d for _, _, _, d in m.pairs])) if m.tp else _NAN
    return {"pq": sq * rq, "sq": sq, "rq": rq, "pq_dsc": sq_dsc * rq, "sq_dsc": sq_dsc}


@dataclass(frozen=True)
class _Surfaces:
    """Both surfaces as points in mm, with each point's nearest point on the other surface (its
    distance and index): found once, for the whole-mask and the matched-pair ASSD."""

    ref_pts: np.ndarray
    pred_pts: np.ndarray
    d_pr: np.ndarray  # pred point -> nearest ref surface point: distance, index
    j_pr: np.ndarray
    d_rp: np.ndarray
    j_rp: np.ndarray

    @classmethod
    def of(cls, pair: MaskPair, spacing: np.ndarray) -> _Surfaces:
        (r, rk), (p, pk) = pair.ref.surface_points(spacing), pair.pred.surface_points(spacing)
        return cls(r, p, *nearest(r, rk, p, pk), *nearest(p, pk, r, rk))

    def assd(self) -> float:
        """Whole-mask ASSD."""
        return float((self.d_pr.mean() + self.d_rp.mean()) / 2.0)

    def matched_assd(self, pair: MaskPair, m: Matching) -> float:
        """panoptica's instance ASSD: the ASSD of each matched pair, averaged over the pairs."""
        slot_r = np.full(pair.ref.n + 1, -1)
        slot_p = np.full(pair.pred.n + 1, -1)
        for k, (a, b, _, _) in enumerate(m.pairs):
            slot_r[a], slot_p[b] = k, k
        sr = slot_r[pair.ref.labels[pair.ref.surface]]
        sp = slot_p[pair.pred.labels[pair.pred.surface]]
        pr = within_pairs(self.d_pr, self.j_pr, self.ref_pts, sr, self.pred_pts, sp, m.tp)
        rp = within_pairs(self.d_rp, self.j_rp, self.pred_pts, sp, self.ref_pts, sr, m.tp)
        return float(np.mean((pr + rp) / 2.0))


def _assds(pair: MaskPair, m: Matching, spacing: np.ndarray) -> tuple[float, float]:
    """Whole-mask and matched-pair ASSD (NaN where a side is empty or nothing is matched)."""
    if not (pair.ref.voxels and pair.pred.voxels):
        return _NAN, _NAN
    s = _Surfaces.of(pair, spacing)
    return s.assd(), (s.matched_assd(pair, m) if m.tp else _NAN)


def _vw_dice(m: Matching) -> float:
    """Reference-volume-weighted Dice of the matched pairs (missed lesions count 0)."""
    v_g = int(m.ref_sizes[1:].sum())  # index 0 is not a lesion
    return _ratio(sum(int(m.ref_sizes[a]) * d for a, _, _, d in m.pairs), v_g)


def _check_options(rule: Any, eps: Any, min_size: Any, removal_connectivity: Any) -> None:
    if not isinstance(rule, InstanceRule):
        raise TypeError(f"rule must be an InstanceRule, got {type(rule).__name__}")
    good_eps = isinstance(eps, numbers.Real) and math.isfinite(eps) and eps > 0
    if isinstance(eps, bool) or not good_eps:
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 0:
        raise ValueError(
            f"min_size must be a non-negative integer number of voxels, got {min_size!r}"
        )
    check_connectivity(removal_connectivity, "removal_connectivity")


def evaluate_case(
    gt: Any,
    pred: Any,
    spacing: Sequence[float],
    rule: InstanceRule = PANOPTICA_RULE,
    eps: float = 1e-5,
    min_size: int = 0,
    removal_connectivity: int = 18,
) -> CaseResult:
    """The thesis's per-case metrics (table in the module docstring) and per-lesion records.

    Args:
        gt, pred: reference and predicted binary masks on the same 2D or 3D grid (numpy arrays
            or torch tensors of 0/1 values; see :mod:`sizepenalty.metrics.validation`).
        spacing: voxel size in mm per axis.
        rule: instances (connectivity) and the matching behind PQ/SQ/RQ, ``vw_dice`` and
            ``assd_tp_mm``; its threshold and strictness also define the ``*_iou`` counts.
        eps: the RVE's denominator guard.
        min_size: predicted components smaller than this many voxels are removed first
            (connected by ``removal_connectivity``: the inference post-processing, thesis §4.5).
    """
    g, p, sp = _checked(gt, pred, spacing)
    _check_options(rule, eps, min_size, removal_connectivity)
    pair = prepare_pair(g, p, rule.connectivity, min_size, removal_connectivity)
    voxel_ml = float(np.prod(sp)) / 1000.0
    v_g, v_p, n_ref, n_pred = pair.ref.voxels, pair.pred.voxels, pair.ref.n, pair.pred.n
    found = OverlapDetection.of(pair.overlaps)
    iou_match = match(pair.overlaps, rule.iou_rule)
    m = iou_match if rule == rule.iou_rule else match(pair.overlaps, rule)
    assd, assd_tp = _assds(pair, m, sp)
    metrics = {
        "dice": _ratio(2.0 * pair.intersection, v_g + v_p),
        "rve": abs(v_p - v_g) / (v_g + eps),
        "ave_ml": abs(v_p - v_g) * voxel_ml,
        "n_ref": n_ref,
        "n_pred": n_pred,
        "tp_overlap": found.tp,
        "fp_overlap": found.fp,
        "fn_overlap": found.fn,
        "detection_overlap": _ratio(found.tp, n_ref),
        "tp_iou": iou_match.tp,
        "fp_iou": iou_match.fp,
        "fn_iou": iou_match.fn,
        "detection_iou": _ratio(iou_match.tp, n_ref),
        "lesion_f1": lesion_f1(found),
        **_panoptic(m),
        "assd_mm": assd,
        "assd_tp_mm": assd_tp,
        "vw_dice": _vw_dice(m),
        "count_diff": abs(n_pred - n_ref),
        "vol_ref_ml": v_g * voxel_ml,
        "vol_pred_ml": v_p * voxel_ml,
    }  # fmt: skip
    apply_edge_cases(metrics, n_ref, n_pred,
                     {"overlap": found.tp, "iou": iou_match.tp, "matching": m.tp})  # fmt: skip
    return CaseResult(metrics, _lesion_records(pair, found, iou_match, voxel_ml))


def case_metrics(
    gt: Any,
    pred: Any,
    spacing: Sequence[float],
    rule: InstanceRule = PANOPTICA_RULE,
    eps: float = 1e-5,
    min_size: int = 0,
    removal_connectivity: int = 18,
) -> dict[str, Any]:
    """The per-case metrics of :func:`evaluate_case` alone."""
    return evaluate_case(gt, pred, spacing, rule, eps, min_size, removal_connectivity).metrics


def evaluate_case_isles22(gt: Any, pred: Any, spacing: Sequence[float]) -> CaseResult:
    """ISLES 2022 official definitions (26-connectivity, no size filtering):

    * ``dice``: 1.0 when both are empty;
    * ``avd_ml``: |V_G − V_P| in mL;
    * ``lesion_count_diff``: |#G components − #P components|;
    * ``lesion_f1``: the overlap rule's F1 (:func:`lesion_f1`, the thesis profile's too):
      TP = reference components touched by the prediction, FN = the others, FP = predicted
      components touching no reference voxel; F1 = TP / (TP + (FP + FN)/2), 1.0 when all three
      are 0.

    Per-lesion records carry both rules (overlap, and panoptica's IoU >= 0.5 matching).
    Arguments as :func:`evaluate_case`.
    """
    g, p, sp = _checked(gt, pred, spacing)
    pair = prepare_pair(g, p, 26)
    voxel_ml = float(np.prod(sp)) / 1000.0
    v_g, v_p, n_ref, n_pred = pair.ref.voxels, pair.pred.voxels, pair.ref.n, pair.pred.n
    found = OverlapDetection.of(pair.overlaps)
    iou_match = match(pair.overlaps, PANOPTICA_RULE)
    metrics = {
        "dice": _ratio(2.0 * pair.intersection, v_g + v_p),
        "avd_ml": abs(v_g - v_p) * voxel_ml,
        "lesion_count_diff": abs(n_ref - n_pred),
        "lesion_f1": lesion_f1(found),
        "vol_ref_ml": v_g * voxel_ml,
        "vol_pred_ml": v_p * voxel_ml,
    }
    apply_edge_cases(metrics, n_ref, n_pred, {"overlap": found.tp})
    return CaseResult(metrics, _lesion_records(pair, found, iou_match, voxel_ml))


def isles22_metrics(gt: Any, pred: Any, spacing: Sequence[float]) -> dict[str, Any]:
    """The per-case metrics of :func:`evaluate_case_isles22` alone."""
    return evaluate_case_isles22(gt, pred, spacing).metrics


def ccc(x: Sequence[float], y: Sequence[float]) -> float:
    """Lin's concordance correlation coefficient ``2 cov / (var_x + var_y + (mean_x − mean_y)^2)``
    with population moments. Fewer than 2 pairs, or a zero denominator (all values identical):
    1.0 if x == y everywhere, else 0.0."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"ccc needs paired values, got {x.shape} and {y.shape}")
    if x.size < 2:
        return 1.0 if np.array_equal(x, y) else 0.0
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = x.var() + y.var() + (mx - my) ** 2
    if denom == 0:
        return 1.0 if np.array_equal(x, y) else 0.0
    return float(2 * cov / denom)
