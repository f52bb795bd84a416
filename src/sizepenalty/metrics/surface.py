"""Average symmetric surface distance (ASSD) in mm, from the surface voxels alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from sizepenalty.metrics.edge_cases import EDGE_CASES, case_type
from sizepenalty.metrics.sparse import Box, voxels
from sizepenalty.metrics.validation import as_mask, as_spacing, check_same_shape

__all__ = ["assd_mm", "surface"]


def surface(mask: Any) -> np.ndarray:
    """One-voxel border of a binary mask: ``mask XOR erode(mask)`` with the face-connected
    structuring element and voxels on the image edge counted as surface (the convention of MedPy
    and panoptica: scipy's erosion with ``border_value=0``). Returns a boolean array."""
    m = as_mask(mask, "mask")
    out = np.zeros(m.shape, bool)
    coords = voxels(m)
    if coords.shape[1]:
        box = Box.around(coords)
        flat = box.flat(coords)
        on = box.surface(box.dense(flat), flat)
        out[tuple(coords[:, on])] = True
    return out


def nearest(
    targets: np.ndarray, target_keys: np.ndarray, queries: np.ndarray, query_keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query point, the distance to the nearest target point and that target's index.

    ``targets`` and ``queries`` are (N, ndim) points in mm; ``*_keys`` identify their voxels
    (sorted, unique: e.g. flat indices in one box). A query on a target voxel is at distance
    exactly 0 from it; only the others go through the k-d tree (exact Euclidean distances).
    """
    dist = np.zeros(len(queries))
    index = np.full(len(queries), -1, np.int64)
    _, qi, ti = np.intersect1d(query_keys, target_keys, assume_unique=True, return_indices=True)
    index[qi] = ti
    rest = index < 0
    if rest.any():
        dist[rest], index[rest] = cKDTree(targets).query(queries[rest], k=1)
    return dist, index


def within_pairs(
    dist: np.ndarray, index: np.ndarray, targets: np.ndarray, target_slot: np.ndarray,
    queries: np.ndarray, query_slot: np.ndarray, n_pairs: int,
) -> np.ndarray:  # fmt: skip
    """Mean distance, per instance pair, from the pair's query points to the pair's target
    points, given each query point's nearest target among all (:func:`nearest`).

    ``*_slot`` gives each point's pair (0..n_pairs-1, -1 for points of unmatched instances).
    Where a query's nearest target is in its own pair, that is also its nearest within the pair.
    The others are looked up again among their own pair's targets: each pair in its own slot of
    an extra coordinate, slots farther apart than any two points, so one k-d tree serves them all
    and the distance found is the pair's (the extra coordinate differs by exactly 0).
    """
    mine = query_slot >= 0
    d, slot = dist[mine], query_slot[mine]
    redo = target_slot[index[mine]] != slot
    if redo.any():
        far = 2.0 * float(np.ptp(np.concatenate([targets, queries]), axis=0).sum()) + 1.0
        paired = target_slot >= 0
        tree = cKDTree(np.column_stack([targets[paired], target_slot[paired] * far]))
        q = queries[mine][redo]
        d = d.copy()
        d[redo], _ = tree.query(np.column_stack([q, slot[redo] * far]), k=1)
    return np.bincount(slot, d, n_pairs) / np.bincount(slot, None, n_pairs)


def assd_mm(reference: Any, prediction: Any, spacing: Sequence[float]) -> float:
    """ASSD = (mean d(pred surface -> ref surface) + mean d(ref surface -> pred surface)) / 2 (mm).

    Distances use the voxel ``spacing`` (anisotropy matters). Instead of a Euclidean distance
    transform over the image, each surface voxel's nearest voxel on the other surface is found with
    a k-d tree over the surface points in mm: the same exact Euclidean distances, at a cost that
    grows with the surface size rather than the volume.

    Edge cases (:data:`~sizepenalty.metrics.edge_cases.EDGE_CASES`, ``assd_mm``): both masks
    empty -> 0.0; exactly one empty -> undefined (NaN): there is no surface to measure from.

    Args:
        reference, prediction: binary masks on the same 2D or 3D grid.
        spacing: voxel size in mm per axis.
    """
    g, p = as_mask(reference, "reference"), as_mask(prediction, "prediction")
    check_same_shape(g, p, ("reference", "prediction"))
    sp = np.asarray(as_spacing(spacing, g.ndim))
    gc, pc = voxels(g), voxels(p)
    case = case_type(int(gc.shape[1] > 0), int(pc.shape[1] > 0), None)
    if case is not None:
        return float(EDGE_CASES["assd_mm"].value(case))
    box = Box.around(gc, pc)
    sides = []
    for c in (gc, pc):
        flat = box.flat(c)
        on = box.surface(box.dense(flat), flat)
        sides.append((c[:, on].T * sp, flat[on]))
    return assd_of_surfaces(*sides[0], *sides[1])


def assd_of_surfaces(
    ref_pts: np.ndarray, ref_keys: np.ndarray, pred_pts: np.ndarray, pred_keys: np.ndarray
) -> float:
    """ASSD of two non-empty surfaces (points in mm and voxel keys, as :func:`nearest`)."""
    d_pr, _ = nearest(ref_pts, ref_keys, pred_pts, pred_keys)
    d_rp, _ = nearest(pred_pts, pred_keys, ref_pts, ref_keys)
    return float((d_pr.mean() + d_rp.mean()) / 2.0)
