"""Lesion instances: connected-component labelling, small-component removal, one-to-one matching.

Two ways to count lesions, both from one sparse intersection table (:class:`Overlaps`): the
one-to-one matching of an :class:`InstanceRule` (panoptica's, for PQ/SQ/RQ) and the ISLES 2022
overlap rule (:class:`OverlapDetection`, many-to-one). The public functions take 2D or 3D masks or
label images (numpy arrays or torch tensors) and check them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cc3d
import numpy as np

from sizepenalty.metrics.validation import as_labels, as_mask, check_connectivity, check_same_shape

__all__ = [
    "PANOPTICA_RULE", "InstanceRule", "Matching", "OverlapDetection", "Overlaps", "label_instances",
    "match", "match_instances", "overlap_table", "remove_small_components",
]  # fmt: skip

_CONNECTIVITY_2D = {6: 4, 18: 8, 26: 8}


def _cc(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """cc3d labels (in cc3d's unsigned dtype) and count of a bool/uint8 mask checked by the caller."""
    conn = connectivity if mask.ndim == 3 else _CONNECTIVITY_2D[connectivity]
    if mask.dtype == bool:
        mask = mask.view(np.uint8)
    labels, n = cc3d.connected_components(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=conn, return_N=True
    )
    return labels, int(n)


def label_instances(mask: Any, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected components of a binary mask: an int32 label image (0 = background, 1..n in raster
    order of each component's first voxel) and n.

    Args:
        mask: a 2D or 3D binary mask (see :mod:`sizepenalty.metrics.validation`).
        connectivity: 6, 18 or 26 (26 is panoptica's and ISLES 2022's); in 2D, 6 means 4 and
            18 or 26 mean 8.
    """
    m = as_mask(mask, "mask")
    labels, n = _cc(m, check_connectivity(connectivity))
    return labels.astype(np.int32, copy=False), n


def remove_small_components(mask: Any, min_size: int, connectivity: int = 18) -> np.ndarray:
    """Binary mask (uint8) without the components smaller than ``min_size`` voxels (thesis: 5
    voxels, 18-connectivity). ``min_size`` <= 1 keeps everything."""
    m = as_mask(mask, "mask")
    check_connectivity(connectivity)
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer):
        raise TypeError(f"min_size must be an integer number of voxels, got {min_size!r}")
    if min_size <= 1 or not m.any():
        return m.astype(np.uint8)
    labels, n = _cc(m, connectivity)
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
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold!r}")

    @property
    def iou_rule(self) -> InstanceRule:
        """This rule's IoU matching (its connectivity, threshold and strictness, criterion "iou"):
        what the ``*_iou`` counts use whatever ``criterion`` PQ/SQ/RQ are matched by."""
        return InstanceRule(self.connectivity, "iou", self.threshold, self.strict)


PANOPTICA_RULE = InstanceRule()
"""panoptica 2.1's defaults (26-connectivity, IoU >= 0.5): the thesis's evaluation and ours."""


@dataclass(frozen=True)
class Overlaps:
    """Sparse intersection table of a reference and a predicted labelling.

    ``ref``, ``pred`` and ``inter`` hold, for every overlapping pair of instances, the two labels
    and the number of shared voxels, ordered by prediction label, then reference label
    (panoptica's order, which decides between candidates of equal score). ``ref_sizes`` and
    ``pred_sizes`` are voxel counts indexed by label (index 0 unused).
    """

    n_ref: int
    n_pred: int
    ref: np.ndarray
    pred: np.ndarray
    inter: np.ndarray
    ref_sizes: np.ndarray
    pred_sizes: np.ndarray

    @classmethod
    def from_voxels(
        cls, ref_of_ref: np.ndarray, pred_at_ref: np.ndarray, ref_sizes: np.ndarray,
        pred_sizes: np.ndarray,
    ) -> Overlaps:  # fmt: skip
        """From the labels of the reference voxels (``ref_of_ref``, all > 0) and the predicted
        labels at those voxels (``pred_at_ref``, 0 where nothing is predicted)."""
        n_ref, n_pred = len(ref_sizes) - 1, len(pred_sizes) - 1
        hit = pred_at_ref > 0
        key = pred_at_ref[hit].astype(np.int64) * (n_ref + 1) + ref_of_ref[hit]
        uniq, counts = np.unique(key, return_counts=True)
        return cls(n_ref, n_pred, uniq % (n_ref + 1), uniq // (n_ref + 1), counts,
                   ref_sizes, pred_sizes)  # fmt: skip

    @classmethod
    def from_labels(
        cls, ref_labels: np.ndarray, pred_labels: np.ndarray, n_ref: int, n_pred: int
    ) -> Overlaps:
        """From two label images on the same grid."""
        ref_sizes = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)
        pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
        fg = ref_labels.ravel() > 0
        return cls.from_voxels(
            ref_labels.ravel()[fg].astype(np.int64), pred_labels.ravel()[fg], ref_sizes, pred_sizes
        )


def overlap_table(
    ref_labels: np.ndarray, pred_labels: np.ndarray, n_ref: int, n_pred: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse intersection counts: arrays (ref_label, pred_label, voxels) for every overlapping
    pair (the table of :class:`Overlaps`)."""
    t = Overlaps.from_labels(ref_labels, pred_labels, n_ref, n_pred)
    return t.ref, t.pred, t.inter


def match(overlaps: Overlaps, rule: InstanceRule = PANOPTICA_RULE) -> Matching:
    """One-to-one matching of predicted to reference instances under ``rule`` (see
    :func:`match_instances`), from their intersection table."""
    t = overlaps
    union = t.ref_sizes[t.ref] + t.pred_sizes[t.pred] - t.inter
    iou = t.inter / np.maximum(union, 1)
    dice = 2 * t.inter / np.maximum(t.ref_sizes[t.ref] + t.pred_sizes[t.pred], 1)
    if rule.criterion == "overlap":
        ok = t.inter > 0
    else:
        ok = iou > rule.threshold if rule.strict else iou >= rule.threshold
    order = np.argsort(-iou[ok], kind="stable")
    cand = zip(t.ref[ok][order].tolist(), t.pred[ok][order].tolist(), iou[ok][order].tolist(),
               dice[ok][order].tolist())  # fmt: skip
    used_r: set[int] = set()
    used_p: set[int] = set()
    pairs = []
    for a, b, c, d in cand:
        if a in used_r or b in used_p:
            continue
        used_r.add(a)
        used_p.add(b)
        pairs.append((a, b, c, d))
    return Matching(t.n_ref, t.n_pred, tuple(sorted(pairs)), t.ref_sizes, t.pred_sizes)


def match_instances(
    ref_labels: Any,
    pred_labels: Any,
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

    Args:
        ref_labels, pred_labels: label images on the same grid (0 = background, 1..n).
        n_ref, n_pred: their numbers of instances.
        rule: the matching criterion.
    """
    r = as_labels(ref_labels, "ref_labels", n_ref)
    p = as_labels(pred_labels, "pred_labels", n_pred)
    check_same_shape(r, p, ("ref_labels", "pred_labels"))
    if not isinstance(rule, InstanceRule):
        raise TypeError(f"rule must be an InstanceRule, got {type(rule).__name__}")
    return match(Overlaps.from_labels(r, p, n_ref, n_pred), rule)


@dataclass(frozen=True)
class OverlapDetection:
    """The ISLES 2022 lesion-wise rule (many-to-one): a reference instance is found (TP) when any
    predicted voxel touches it, missed (FN) otherwise; a predicted instance touching no reference
    voxel is a false positive (FP). Not a matching: one prediction may find several lesions."""

    n_ref: int
    n_pred: int
    detected: frozenset[int]  # reference labels touched by the prediction
    touching: int  # predicted instances that touch some reference voxel

    @classmethod
    def of(cls, overlaps: Overlaps) -> OverlapDetection:
        detected = frozenset(np.unique(overlaps.ref).tolist())
        return cls(overlaps.n_ref, overlaps.n_pred, detected, int(np.unique(overlaps.pred).size))

    @property
    def tp(self) -> int:
        return len(self.detected)

    @property
    def fp(self) -> int:
        return self.n_pred - self.touching

    @property
    def fn(self) -> int:
        return self.n_ref - self.tp
