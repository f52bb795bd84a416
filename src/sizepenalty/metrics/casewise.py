"""Per-case metric sets (thesis profile and ISLES 2022 official profile) and across-case CCC.

Instances and matching follow an :class:`InstanceRule`; the default equals panoptica 2.1
(cc3d 26-connectivity, ``NaiveThresholdMatching(IoU, 0.5)``: a match at IoU >= 0.5, one-to-one),
which the thesis cites for its PQ/SQ/RQ, FP and missed-lesion counts (§4.6).

Two ASSDs are reported: ``assd_mm`` over the whole masks (all surfaces, in mm, using the voxel
spacing; the thesis's "ASSD" column is compared with this one) and ``assd_tp_mm``, panoptica's
per-matched-instance ASSD averaged over the TP pairs.

Conventions, for every metric (P = prediction, G = reference, volumes in voxels unless noted):

========== ============================================ =========================================
key        definition                                   edge cases
========== ============================================ =========================================
dice       2|P∩G| / (|P| + |G|)                         both empty: 1.0
rve        |V_P − V_G| / (V_G + eps)                    G empty: V_P / eps (0 if P empty too)
ave_ml     |V_P − V_G| · voxel volume (mL)              —
n_ref      reference instances (connected components)   —
n_pred     predicted instances after min-size filtering —
tp fp fn   one-to-one matched / unmatched instances     —
detection  TP / n_ref                                   n_ref = 0: 1.0
lesion_f1  2 TP / (2 TP + FP + FN)                      no instances at all: 1.0
rq         TP / (TP + FP/2 + FN/2)                      no instances at all: 1.0
sq         mean IoU over matched pairs                  TP = 0: 1.0 if no instances, else 0.0
pq         SQ · RQ                                      follows SQ and RQ
sq_dsc     mean Dice over matched pairs (pq_dsc = sq_dsc · rq)
assd_mm    average symmetric surface distance (mm)      both empty 0; one empty: image diagonal
assd_tp_mm ASSD (mm) of each matched pair, mean over TPs  TP = 0: NaN (no pair; panoptica: inf)
vw_dice    Σ_G |G_i| · Dice(G_i, matched P) / Σ |G_i|   both empty 1.0; G empty, P not: 0.0
count_diff |n_pred − n_ref|                             —
========== ============================================ =========================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from sizepenalty.metrics.instances import (
    PANOPTICA_RULE,
    InstanceRule,
    Matching,
    label_instances,
    match_instances,
    remove_small_components,
)
from sizepenalty.metrics.surface import assd_mm

THESIS_KEYS = (
    "dice", "rve", "ave_ml", "n_ref", "n_pred", "tp", "fp", "fn", "detection", "lesion_f1",
    "pq", "sq", "rq", "pq_dsc", "sq_dsc", "assd_mm", "assd_tp_mm", "vw_dice", "count_diff",
    "vol_ref_ml", "vol_pred_ml",
)  # fmt: skip
ISLES22_KEYS = ("dice", "avd_ml", "lesion_count_diff", "lesion_f1", "vol_ref_ml", "vol_pred_ml")


@dataclass(frozen=True)
class LesionRecord:
    """One reference lesion: its own size and whether the rule matched a prediction to it."""

    lesion: int  # instance label, 1..n_ref in raster order
    voxels: int
    volume_ml: float
    detected: bool
    iou: float  # with the matched prediction; NaN when missed


@dataclass(frozen=True)
class CaseResult:
    """Everything one (reference, prediction) pair yields: the per-case metrics (keys of the
    profile) and one record per reference lesion (for detection by lesion size)."""

    metrics: dict[str, Any]
    lesions: tuple[LesionRecord, ...]


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"reference shape {gt.shape} != prediction shape {pred.shape}")


def dice_score(gt: np.ndarray, pred: np.ndarray, empty_value: float = 1.0) -> float:
    """Binary Dice; ``empty_value`` when both are empty."""
    g, p = gt > 0, pred > 0
    denom = int(g.sum()) + int(p.sum())
    if denom == 0:
        return float(empty_value)
    return 2.0 * int(np.count_nonzero(g & p)) / denom


def crop_to_union(*masks: np.ndarray, margin: int = 1) -> tuple[np.ndarray, ...]:
    """Crop boolean masks to the bounding box of their union plus ``margin`` voxels.

    Instances, overlaps, surfaces and distances never depend on voxels outside that box, so every
    metric is computed on the (usually tiny) lesion region instead of the whole image.
    """
    union = np.logical_or.reduce(masks)
    if not union.any():
        return tuple(m[tuple(slice(0, 1) for _ in m.shape)] for m in masks)
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(m[_widened(box, union.shape, margin)] for m in masks)


def _widened(box: Sequence[slice], shape: Sequence[int], margin: int) -> tuple[slice, ...]:
    """A bounding box (slices with start and stop) plus ``margin`` voxels, clipped to ``shape``."""
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape)
    )


def _lesion_records(m: Matching, voxel_ml: float) -> tuple[LesionRecord, ...]:
    iou = {a: c for a, _, c, _ in m.pairs}
    return tuple(
        LesionRecord(a, int(m.ref_sizes[a]), int(m.ref_sizes[a]) * voxel_ml, a in iou,
                     iou.get(a, float("nan")))
        for a in range(1, m.n_ref + 1)
    )  # fmt: skip


def _matched_assd(ref_labels, pred_labels, m: Matching, spacing: Sequence[float]) -> float:
    """panoptica's instance ASSD: the ASSD of each matched pair, averaged over the TPs."""
    if not m.tp:
        return float("nan")
    # Each pair on the box of its two instances (as crop_to_union would crop them), found once
    # per label image instead of two full-volume comparisons per pair.
    ref_boxes, pred_boxes = ndimage.find_objects(ref_labels), ndimage.find_objects(pred_labels)
    values = []
    for a, b, _, _ in m.pairs:
        ra, pb = ref_boxes[a - 1], pred_boxes[b - 1]
        union = [slice(min(r.start, p.start), max(r.stop, p.stop)) for r, p in zip(ra, pb)]
        box = _widened(union, ref_labels.shape, margin=1)
        values.append(assd_mm(ref_labels[box] == a, pred_labels[box] == b, spacing))
    return float(np.mean(values))


def evaluate_case(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    rule: InstanceRule = PANOPTICA_RULE,
    eps: float = 1e-5,
    min_size: int = 0,
    removal_connectivity: int = 18,
) -> CaseResult:
    """The thesis's per-case metrics (table in the module docstring) and per-lesion records.

    ``min_size`` first removes predicted components smaller than that many voxels (connected by
    ``removal_connectivity``: the inference post-processing, thesis §4.5); instances are then
    labelled and matched by ``rule``.
    """
    _check_pair(gt, pred)
    g = gt > 0
    p = (
        remove_small_components(pred, min_size, removal_connectivity).astype(bool)
        if min_size > 1
        else pred > 0
    )
    voxel_ml = float(np.prod(spacing)) / 1000.0
    diagonal_mm = float(
        np.sqrt((((np.asarray(g.shape) - 1) * np.asarray(spacing, dtype=float)) ** 2).sum())
    )
    g, p = crop_to_union(g, p)
    v_g, v_p = int(g.sum()), int(p.sum())
    ref_labels, n_ref = label_instances(g, rule.connectivity)
    pred_labels, n_pred = label_instances(p, rule.connectivity)
    m = match_instances(ref_labels, pred_labels, n_ref, n_pred, rule)
    tp, fp, fn = m.tp, m.fp, m.fn
    no_instances = n_ref == 0 and n_pred == 0
    rq = 1.0 if no_instances else tp / (tp + 0.5 * fp + 0.5 * fn)
    if tp:
        sq = float(np.mean([pair[2] for pair in m.pairs]))
        sq_dsc = float(np.mean([pair[3] for pair in m.pairs]))
    else:
        sq = sq_dsc = 1.0 if no_instances else 0.0
    if v_g:
        matched = {a: d for a, _, _, d in m.pairs}
        vw = sum(int(m.ref_sizes[a]) * matched.get(a, 0.0) for a in range(1, n_ref + 1)) / v_g
    else:
        vw = 1.0 if v_p == 0 else 0.0
    metrics = {
        "dice": dice_score(g, p),
        "rve": abs(v_p - v_g) / (v_g + eps),
        "ave_ml": abs(v_p - v_g) * voxel_ml,
        "n_ref": n_ref,
        "n_pred": n_pred,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "detection": tp / n_ref if n_ref else 1.0,
        "lesion_f1": 1.0 if no_instances else 2 * tp / (2 * tp + fp + fn),
        "pq": sq * rq,
        "sq": sq,
        "rq": rq,
        "pq_dsc": sq_dsc * rq,
        "sq_dsc": sq_dsc,
        "assd_mm": assd_mm(g, p, spacing, empty_value=diagonal_mm),
        "assd_tp_mm": _matched_assd(ref_labels, pred_labels, m, spacing),
        "vw_dice": float(vw),
        "count_diff": abs(n_pred - n_ref),
        "vol_ref_ml": v_g * voxel_ml,
        "vol_pred_ml": v_p * voxel_ml,
    }
    return CaseResult(metrics, _lesion_records(m, voxel_ml))


def case_metrics(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    rule: InstanceRule = PANOPTICA_RULE,
    eps: float = 1e-5,
    min_size: int = 0,
    removal_connectivity: int = 18,
) -> dict[str, Any]:
    """The per-case metrics of :func:`evaluate_case` alone."""
    return evaluate_case(gt, pred, spacing, rule, eps, min_size, removal_connectivity).metrics


def evaluate_case_isles22(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> CaseResult:
    """ISLES 2022 official definitions (26-connectivity, no size filtering):

    * ``dice``: 1.0 when both are empty;
    * ``avd_ml``: |V_G − V_P| in mL;
    * ``lesion_count_diff``: |#G components − #P components|;
    * ``lesion_f1``: TP = reference components touched by the prediction, FN = the others, FP =
      predicted components touching no reference voxel; F1 = TP / (TP + (FP + FN)/2), 1.0 when all
      three are 0.

    Per-lesion records mark a reference lesion as detected when the prediction touches it.
    """
    _check_pair(gt, pred)
    g, p = gt > 0, pred > 0
    voxel_ml = float(np.prod(spacing)) / 1000.0
    gl, ng = label_instances(g, 26)
    pl, npred = label_instances(p, 26)
    touched = set(np.unique(gl[g & p]).tolist())
    tp = len(touched)
    fn = ng - tp
    fp = npred - len(np.unique(pl[g & p]))
    denom = tp + (fp + fn) / 2
    sizes = np.bincount(gl.ravel(), minlength=ng + 1)
    lesions = tuple(
        LesionRecord(a, int(sizes[a]), int(sizes[a]) * voxel_ml, a in touched, float("nan"))
        for a in range(1, ng + 1)
    )
    metrics = {
        "dice": dice_score(g, p),
        "avd_ml": abs(int(g.sum()) - int(p.sum())) * voxel_ml,
        "lesion_count_diff": abs(ng - npred),
        "lesion_f1": tp / denom if denom else 1.0,
        "vol_ref_ml": int(g.sum()) * voxel_ml,
        "vol_pred_ml": int(p.sum()) * voxel_ml,
    }
    return CaseResult(metrics, lesions)


def isles22_metrics(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
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
