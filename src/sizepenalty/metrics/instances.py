"""Lesion instances: connected-component labelling, small-component removal, one-to-one matching.

All functions take binary or label arrays of any dimensionality cc3d supports (2D/3D) and use a
single pass over the volume for the overlap table — no per-lesion full-volume loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

_CONNECTIVITY_2D = {6: 4, 18: 8, 26: 8}


def _cc(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    conn = connectivity if mask.ndim == 3 else _CONNECTIVITY_2D.get(connectivity, connectivity)
    labels, n = cc3d.connected_components(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=conn, return_N=True
    )
    return labels.astype(np.int32, copy=False), int(n)


def label_instances(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Label the 3D connected components of a binary mask (6-, 18- or 26-connectivity; 26 is
    panoptica's and ISLES 2022's)."""
    return _cc(mask > 0, connectivity)


def remove_small_components(mask: np.ndarray, min_size: int, connectivity: int = 18) -> np.ndarray:
    """Binary mask without the components smaller than ``min_size`` voxels (thesis: 5, 18-conn)."""
    mask = mask > 0
    if min_size <= 1 or not mask.any():
        return mask.astype(np.uint8)
    labels, n = _cc(mask, connectivity)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels].astype(np.uint8)


@dataclass(frozen=True)
class Matching:
    """Result of matching predicted to reference instances.

    ``pairs`` holds (ref_label, pred_label, iou, dice) for each matched pair (TP); ``ref_sizes`` and
    ``pred_sizes`` are voxel counts indexed by label (index 0 = background).
    """

    n_ref: int
    n_pred: int
    pairs: tuple[tuple[int, int, float, float], ...]
    ref_sizes: np.ndarray
    pred_sizes: np.ndarray

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_ref - self.tp


@dataclass(frozen=True)
class InstanceRule:
    """How masks become lesion instances and how instances are matched (one-to-one).

    The default is panoptica's: cc3d components with 26-connectivity and
    ``NaiveThresholdMatching(Metric.IOU, 0.5)``, which accepts a pair at IoU **>=** 0.5.
    ``strict=True`` asks for IoU > threshold (Kirillov et al.'s wording; panoptica's
    ``strict_threshold``); ``criterion="overlap"`` matches any pair sharing a voxel (the ISLES 2022
    lesion F1). Small-component removal is post-processing with its own connectivity (thesis: 18).
    """

    connectivity: int = 26
    criterion: str = "iou"
    threshold: float = 0.5
    strict: bool = False

    def __post_init__(self) -> None:
        if self.criterion not in ("iou", "overlap"):
            raise ValueError(
                f"unknown matching criterion {self.criterion!r}; expected 'iou' or 'overlap'"
            )
        if self.connectivity not in (6, 18, 26):
            raise ValueError(f"connectivity must be 6, 18 or 26, got {self.connectivity!r}")


PANOPTICA_RULE = InstanceRule()
"""panoptica 2.1's defaults (26-connectivity, IoU >= 0.5): the thesis's evaluation and ours."""


def overlap_table(
    ref_labels: np.ndarray, pred_labels: np.ndarray, n_ref: int, n_pred: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse intersection counts: arrays (ref_label, pred_label, voxels) for every overlapping
    pair, ordered by prediction label, then reference label (panoptica's order, which decides
    between candidates of equal score)."""
    both = (ref_labels > 0) & (pred_labels > 0)
    if not both.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    key = pred_labels[both].astype(np.int64) * (n_ref + 1) + ref_labels[both].astype(np.int64)
    uniq, counts = np.unique(key, return_counts=True)
    return uniq % (n_ref + 1), uniq // (n_ref + 1), counts


def match_instances(
    ref_labels: np.ndarray,
    pred_labels: np.ndarray,
    n_ref: int,
    n_pred: int,
    rule: InstanceRule = PANOPTICA_RULE,
) -> Matching:
    """One-to-one matching of predicted to reference instances under ``rule``.

    Candidates are the overlapping pairs that pass the rule (IoU >= threshold, IoU > threshold
    when strict, or any overlap), taken greedily by decreasing IoU: each instance is used once.
    This is panoptica's ``NaiveThresholdMatching``; at a threshold of 0.5 the accepted pairs are
    unique anyway (Kirillov et al.) except for exact ties at 0.5, which it orders the same way.
    With ``overlap``, a prediction that merges two lesions detects one of them; the other is missed.
    """
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    r, p, inter = overlap_table(ref_labels, pred_labels, n_ref, n_pred)
    union = ref_sizes[r] + pred_sizes[p] - inter
    iou = inter / np.maximum(union, 1)
    dice = 2 * inter / np.maximum(ref_sizes[r] + pred_sizes[p], 1)
    if rule.criterion == "overlap":
        ok = inter > 0
    else:
        ok = iou > rule.threshold if rule.strict else iou >= rule.threshold
    order = np.argsort(-iou[ok], kind="stable")
    cand = zip(r[ok][order], p[ok][order], iou[ok][order], dice[ok][order])
    used_r: set[int] = set()
    used_p: set[int] = set()
    pairs = []
    for a, b, c, d in cand:
        if a in used_r or b in used_p:
            continue
        used_r.add(int(a))
        used_p.add(int(b))
        pairs.append((int(a), int(b), float(c), float(d)))
    return Matching(n_ref, n_pred, tuple(sorted(pairs)), ref_sizes, pred_sizes)
