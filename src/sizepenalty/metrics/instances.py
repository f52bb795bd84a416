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


def label_instances(mask: np.ndarray, connectivity: int = 18) -> tuple[np.ndarray, int]:
    """Label the 3D connected components of a binary mask (6-, 18- or 26-connectivity)."""
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


def overlap_table(
    ref_labels: np.ndarray, pred_labels: np.ndarray, n_ref: int, n_pred: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse intersection counts: arrays (ref_label, pred_label, voxels) for every overlapping pair."""
    both = (ref_labels > 0) & (pred_labels > 0)
    if not both.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    key = ref_labels[both].astype(np.int64) * (n_pred + 1) + pred_labels[both].astype(np.int64)
    uniq, counts = np.unique(key, return_counts=True)
    return uniq // (n_pred + 1), uniq % (n_pred + 1), counts


def match_instances(
    ref_labels: np.ndarray,
    pred_labels: np.ndarray,
    n_ref: int,
    n_pred: int,
    criterion: str = "iou",
    iou_threshold: float = 0.5,
) -> Matching:
    """One-to-one matching of predicted to reference instances.

    * ``criterion="iou"`` (panoptic quality): a pair may match when IoU > ``iou_threshold``. For a
      threshold >= 0.5 such pairs are necessarily unique (Kirillov et al.); below it, pairs are taken
      greedily by decreasing IoU.
    * ``criterion="overlap"``: a pair may match when it shares at least one voxel (as in the ISLES 2022
      lesion F1); each instance is used once, greedily by decreasing IoU, so a prediction that
      merges two lesions detects one of them and the other counts as missed.
    """
    if criterion not in ("iou", "overlap"):
        raise ValueError(f"unknown matching criterion {criterion!r}; expected 'iou' or 'overlap'")
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    r, p, inter = overlap_table(ref_labels, pred_labels, n_ref, n_pred)
    union = ref_sizes[r] + pred_sizes[p] - inter
    iou = inter / np.maximum(union, 1)
    dice = 2 * inter / np.maximum(ref_sizes[r] + pred_sizes[p], 1)
    ok = iou > iou_threshold if criterion == "iou" else inter > 0
    order = np.argsort(-iou[ok], kind="stable")
    cand = [
        (int(a), int(b), float(c), float(d))
        for a, b, c, d in zip(r[ok][order], p[ok][order], iou[ok][order], dice[ok][order])
    ]
    used_r: set[int] = set()
    used_p: set[int] = set()
    pairs = []
    for a, b, c, d in cand:
        if a in used_r or b in used_p:
            continue
        used_r.add(a)
        used_p.add(b)
        pairs.append((a, b, c, d))
    return Matching(n_ref, n_pred, tuple(sorted(pairs)), ref_sizes, pred_sizes)
