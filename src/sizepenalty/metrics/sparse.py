"""A (reference, prediction) pair as lists of foreground voxels: coordinates, instance labels,
surface flags and the intersection table, computed once per case.

Every per-case metric depends only on the foreground voxels and their face neighbours. So each
full mask is read once (to find its voxels); labelling runs once per mask on the union's bounding
box with a one-voxel border of background (:class:`Box`), and everything else (sizes, overlaps,
surfaces, distances) works on the voxel lists, at a cost that grows with the lesions rather than
with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sizepenalty.metrics.instances import Overlaps, _cc

__all__ = ["Box", "Foreground", "MaskPair", "prepare_pair", "voxels"]


def voxels(mask: np.ndarray) -> np.ndarray:
    """The (ndim, N) int64 indices of a boolean mask's voxels, in raster order."""
    return np.array(np.unravel_index(np.flatnonzero(mask), mask.shape), dtype=np.int64).reshape(
        mask.ndim, -1
    )


@dataclass(frozen=True)
class Box:
    """The bounding box of some voxels plus one voxel of background on every side.

    The border makes the box's edge behave as scipy's erosion with ``border_value=0`` treats the
    image edge (a voxel there is on the surface), and it keeps every face neighbour of a
    foreground voxel inside the box.
    """

    lo: np.ndarray  # full-image index of the first foreground row/column/slice
    shape: tuple[int, ...]  # box shape, border included

    @classmethod
    def around(cls, *coords: np.ndarray) -> Box:
        """The box around every voxel of ``coords`` ((ndim, N) arrays, at least one non-empty)."""
        filled = [c for c in coords if c.shape[1]]
        lo = np.min([c.min(axis=1) for c in filled], axis=0)
        hi = np.max([c.max(axis=1) for c in filled], axis=0)
        return cls(lo, tuple(int(n) for n in hi - lo + 3))

    @property
    def strides(self) -> tuple[int, ...]:
        """Flat-index step of one voxel along each axis."""
        return tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))

    def flat(self, coords: np.ndarray) -> np.ndarray:
        """Flat indices in the box of full-image voxel indices ``coords`` ((ndim, N))."""
        return np.ravel_multi_index(tuple(coords - self.lo[:, None] + 1), self.shape)

    def dense(self, flat: np.ndarray) -> np.ndarray:
        """A uint8 mask of the box with ones at ``flat``."""
        out = np.zeros(int(np.prod(self.shape)), np.uint8)
        out[flat] = 1
        return out.reshape(self.shape)

    def surface(self, dense: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """For each voxel ``flat`` of the box mask ``dense``: whether it is on the mask's surface,
        i.e. has a face neighbour outside the mask (``mask XOR erode(mask)`` with the
        face-connected structuring element, as MedPy and panoptica)."""
        m = dense.reshape(-1).view(bool)
        inside = np.ones(flat.shape, bool)
        for step in self.strides:
            inside &= m[flat + step]
            inside &= m[flat - step]
        return ~inside


@dataclass(frozen=True)
class Foreground:
    """The voxels of one binary mask: where they are, which instance each belongs to, and which
    lie on the surface."""

    coords: np.ndarray  # (ndim, N) full-image voxel indices, raster order
    keys: np.ndarray  # (N,) flat index of each voxel in the pair's box (sorted)
    labels: np.ndarray  # (N,) int64 instance label of each voxel, 1..n in raster order
    n: int  # number of instances
    sizes: np.ndarray  # (n + 1,) voxels per instance label (index 0: 0)
    surface: np.ndarray  # (N,) bool: the voxel is on the mask's surface

    @property
    def voxels(self) -> int:
        return int(self.labels.size)

    def surface_points(self, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The surface voxels' (M, ndim) positions in mm and their keys."""
        return self.coords[:, self.surface].T * spacing, self.keys[self.surface]


@dataclass(frozen=True)
class MaskPair:
    """A reference and a prediction as :class:`Foreground` voxels, with their intersection table
    (:class:`~sizepenalty.metrics.instances.Overlaps`) and the number of shared voxels."""

    ref: Foreground
    pred: Foreground
    overlaps: Overlaps
    intersection: int


def _empty(ndim: int) -> Foreground:
    z = np.zeros(0, np.int64)
    return Foreground(np.zeros((ndim, 0), np.int64), z, z, 0, np.zeros(1, np.int64), z.astype(bool))


def _labelled(coords: np.ndarray, flat: np.ndarray, dense: np.ndarray, box: Box, conn: int):
    """The :class:`Foreground` of a box mask and its box label image."""
    if not flat.size:
        return _empty(len(box.shape)), np.zeros(box.shape, np.uint8)
    label_image, n = _cc(dense, conn)
    labels = label_image.reshape(-1)[flat].astype(np.int64)
    sizes = np.bincount(labels, minlength=n + 1)
    return Foreground(coords, flat, labels, n, sizes, box.surface(dense, flat)), label_image


def _drop_small(coords, flat, dense, min_size: int, conn: int):
    """Remove the components smaller than ``min_size`` voxels (connected by ``conn``) from the
    box mask ``dense`` (in place) and from the voxel lists."""
    label_image, n = _cc(dense, conn)
    labels = label_image.reshape(-1)[flat]
    keep = (np.bincount(labels, minlength=n + 1) >= min_size)[labels]
    if not keep.all():
        dense.reshape(-1)[flat[~keep]] = 0
    return coords[:, keep], flat[keep]


def prepare_pair(
    ref: np.ndarray,
    pred: np.ndarray,
    connectivity: int,
    min_size: int = 0,
    removal_connectivity: int = 18,
) -> MaskPair:
    """Label both masks and tabulate their overlaps, once.

    Args:
        ref, pred: boolean masks on the same grid (checked by the caller).
        connectivity: of the lesion instances (6, 18 or 26).
        min_size: predicted components smaller than this many voxels are removed first
            (connected by ``removal_connectivity``), as the inference post-processing does.
    """
    gc, pc = voxels(ref), voxels(pred)
    if not gc.shape[1] and not pc.shape[1]:
        empty = _empty(ref.ndim)
        z = np.zeros(0, np.int64)
        return MaskPair(empty, empty, Overlaps(0, 0, z, z, z, empty.sizes, empty.sizes), 0)
    box = Box.around(gc, pc)
    gf, pf = box.flat(gc), box.flat(pc)
    gd, pd = box.dense(gf), box.dense(pf)
    if min_size > 1 and pf.size:
        pc, pf = _drop_small(pc, pf, pd, min_size, removal_connectivity)
    g, _ = _labelled(gc, gf, gd, box, connectivity)
    p, pred_image = _labelled(pc, pf, pd, box, connectivity)
    pred_at_ref = pred_image.reshape(-1)[gf]
    overlaps = Overlaps.from_voxels(g.labels, pred_at_ref, g.sizes, p.sizes)
    return MaskPair(g, p, overlaps, int(np.count_nonzero(pred_at_ref)))
