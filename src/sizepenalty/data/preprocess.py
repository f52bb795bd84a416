"""Per-case preprocessing: normalisation, mismatch channel, crop/pad or resample, compact file.

Channels (thesis §4.2): DWI and ADC are each clipped to their 1st-99th percentile and min-max
scaled to [0, 1]; the third channel is ``mismatch = DWI * (1 - clip(ADC, 0, 1))`` — high where DWI
is bright and ADC dark (acute ischaemia), low for T2 shine-through (both bright).

Geometry: volumes are handled depth-first (D, H, W) = (z, y, x). ``crop_pad`` centres the target
box on the brain's bounding box and crops or zero-pads each axis (spacing unchanged, so the mapping
back is exact); ``resample`` resizes the whole volume (spacing changes accordingly). The file keeps
the original affine, shape and spacing, the crop box and the reference mask as supplied on its
original grid, so that predictions go back to the input geometry and are scored there (a lesion
the crop cut away stays in the reference) without the raw NIfTI files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from sizepenalty.data.cohort import CaseData, lesion_volume_ml
from sizepenalty.data.io import save_npz_atomic
from sizepenalty.stages import STAGES

if TYPE_CHECKING:
    from sizepenalty.config import StudyConfig

# 2: the original mask, spacing and outside-crop count. Declared with the stage, so a new format
# reruns preprocessing (its fingerprint holds the version).
FORMAT_VERSION = STAGES["preprocess"].version


def normalize(volume: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Clip to the given percentiles of the whole volume and min-max scale to [0, 1] (float32).

    A constant volume (high == low percentile) maps to zeros.
    """
    lo, hi = np.percentile(volume, percentiles)
    if hi <= lo:
        return np.zeros(volume.shape, dtype=np.float32)
    return ((np.clip(volume, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def mismatch(dwi: np.ndarray, adc: np.ndarray) -> np.ndarray:
    """``DWI * (1 - clip(ADC, 0, 1))`` on normalised channels."""
    return (dwi * (1.0 - np.clip(adc, 0.0, 1.0))).astype(np.float32)


def image_channels(dwi: np.ndarray, adc: np.ndarray) -> np.ndarray:
    """Stack (DWI, ADC, mismatch) as a (3, *spatial) float32 array from normalised DWI and ADC."""
    return np.stack([dwi, adc, mismatch(dwi, adc)]).astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """How a preprocessed grid maps to the original image.

    ``mode``: ``crop_pad`` or ``resample``; ``orig_shape_dhw``: the original grid, (D, H, W);
    ``box``: per axis (src_start, src_stop, dst_start, dst_stop), the original-grid range copied
    to the preprocessed-grid range (crop_pad; for resample the whole axis of each).
    """

    mode: str
    orig_shape_dhw: tuple[int, int, int]
    box: tuple[tuple[int, int, int, int], ...]  # per axis: src_start, src_stop, dst_start, dst_stop

    def to_original(self, volume: np.ndarray, order: int = 0) -> np.ndarray:
        """Map a (D, H, W) array on the preprocessed grid back to the original (D, H, W) grid.

        Args:
            volume: a mask (bool or integer) or a probability map (any float type) on the
                preprocessed grid.
            order: the interpolation for ``resample``: 0 (nearest neighbour) for masks and
                labels, 1 (trilinear) for probability maps. Order 1 averages neighbours, so
                probabilities stay in their range; higher spline orders would overshoot and are
                refused.

        ``crop_pad`` is exact whatever ``order``: the box is copied back, the padding dropped,
        and every original voxel the crop cut away gets 0 (no lesion, probability 0). Float
        input comes back as float32 in ``resample`` mode (float16 maps from inference
        included); otherwise the dtype is kept.
        """
        if order not in (0, 1):
            raise ValueError(f"order must be 0 (masks) or 1 (probabilities), got {order}")
        if volume.ndim != 3:
            raise ValueError(f"expected a (D, H, W) volume, got shape {volume.shape}")
        if self.mode == "resample":
            if volume.dtype.kind == "f" or order == 1:
                volume = volume.astype(np.float32, copy=False)  # zoom has no float16
            return resize(volume, self.orig_shape_dhw, order=order)
        out = np.zeros(self.orig_shape_dhw, dtype=volume.dtype)
        src = tuple(slice(a, b) for a, b, _, _ in self.box)
        dst = tuple(slice(c, d) for _, _, c, d in self.box)
        out[src] = volume[dst]
        return out

    def to_grid(self, mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """A mask on the original (D, H, W) grid brought to the preprocessed grid of ``shape``
        as preprocessing brings the reference there (the box for ``crop_pad``, nearest
        neighbour for ``resample``): e.g. an external method's mask for a case overlay."""
        if tuple(mask.shape) != self.orig_shape_dhw:
            raise ValueError(f"expected a mask on the original grid {self.orig_shape_dhw}, "
                             f"got shape {mask.shape}")  # fmt: skip
        if self.mode == "resample":
            return resize(mask, tuple(shape), order=0)
        return apply_box(mask, self.box, tuple(shape))


def resize(volume: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resize to exactly ``shape`` (order 0 for masks, 1 for images)."""
    factors = [t / s for t, s in zip(shape, volume.shape)]
    out = ndimage.zoom(volume, factors, order=order, grid_mode=True, mode="nearest")
    if out.shape != tuple(shape):  # pragma: no cover - zoom rounds; guard the contract anyway
        pad = [(0, max(t - o, 0)) for t, o in zip(shape, out.shape)]
        out = np.pad(out, pad, mode="edge")[tuple(slice(0, t) for t in shape)]
    return out


def brain_bbox(
    dwi: np.ndarray,
    adc: np.ndarray,
    percentiles: tuple[float, float] = (1.0, 99.0),
    threshold: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (lo, hi exclusive) of the voxels bright on either channel: above
    ``threshold`` once the channel's non-negative part is normalised (:func:`normalize`).

    Negative intensities are background: resampled scans (ISLES 2022's) undershoot below 0 at
    the brain's edge, and once they pass the 1st percentile, normalising the raw volume lifts the
    zero background above the threshold, so that the box would be the whole volume.
    """
    fg = (normalize(np.maximum(dwi, 0), percentiles) > threshold) | (
        normalize(np.maximum(adc, 0), percentiles) > threshold
    )
    if not fg.any():
        return np.zeros(3, dtype=int), np.array(dwi.shape)
    idx = np.argwhere(fg)
    return idx.min(0), idx.max(0) + 1


def crop_pad_box(
    shape: tuple[int, ...], target: tuple[int, ...], centre: np.ndarray
) -> tuple[tuple[int, int, int, int], ...]:
    """Per axis (src_start, src_stop, dst_start, dst_stop) centring ``target`` on ``centre``."""
    box = []
    for s, t, c in zip(shape, target, centre):
        if s >= t:
            start = int(np.clip(int(round(c)) - t // 2, 0, s - t))
            box.append((start, start + t, 0, t))
        else:
            off = (t - s) // 2
            box.append((0, s, off, off + s))
    return tuple(box)


def apply_box(
    volume: np.ndarray, box: tuple[tuple[int, int, int, int], ...], target: tuple[int, ...]
) -> np.ndarray:
    out = np.zeros(target, dtype=volume.dtype)
    src = tuple(slice(a, b) for a, b, _, _ in box)
    dst = tuple(slice(c, d) for _, _, c, d in box)
    out[dst] = volume[src]
    return out


@dataclass
class Preprocessed:
    """A preprocessed case: what training sees (``image``, ``mask`` on the preprocessed grid) and
    what scoring needs on the original grid (``orig_mask``, ``orig_spacing``, ``affine``, and
    ``geometry`` to map predictions there)."""

    case_id: str
    image: np.ndarray  # (3, D, H, W) float32
    mask: np.ndarray  # (D, H, W) uint8, on the preprocessed grid
    spacing: tuple[float, float, float]  # of the preprocessed grid, mm (D, H, W)
    affine: np.ndarray  # original 4x4
    geometry: Geometry
    orig_mask: np.ndarray  # (D, H, W) uint8: the reference as supplied, on the original grid
    orig_spacing: tuple[float, float, float]  # of the original grid, mm (D, H, W)
    lesion_voxels_outside: int = 0  # reference voxels the crop cut away (crop_pad)

    @property
    def voxel_ml(self) -> float:
        """Voxel volume of the preprocessed grid (mL)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def orig_voxel_ml(self) -> float:
        """Voxel volume of the original grid (mL): what every metric's volume uses."""
        return float(np.prod(self.orig_spacing)) / 1000.0


def preprocess_case(
    case: CaseData,
    shape: tuple[int, int, int],
    mode: str = "crop_pad",
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> Preprocessed:
    """Normalise, add the mismatch channel and bring the case to ``shape`` (D, H, W)."""
    dwi = normalize(case.dwi, percentiles)
    adc = normalize(case.adc, percentiles)
    orig = tuple(int(s) for s in case.dwi.shape)
    if mode == "crop_pad":
        lo, hi = brain_bbox(case.dwi, case.adc, percentiles)
        box = crop_pad_box(orig, shape, (lo + hi - 1) / 2.0)
        dwi_t, adc_t = apply_box(dwi, box, shape), apply_box(adc, box, shape)
        mask_t = apply_box(case.mask, box, shape)
        spacing = case.spacing
        outside = int(case.mask.sum()) - int(mask_t.sum())
    elif mode == "resample":
        box = tuple((0, s, 0, t) for s, t in zip(orig, shape))
        dwi_t, adc_t = resize(dwi, shape, 1), resize(adc, shape, 1)
        mask_t = resize(case.mask, shape, 0)
        spacing = tuple(float(sp * s / t) for sp, s, t in zip(case.spacing, orig, shape))
        outside = 0
    else:
        raise ValueError(f"unknown preprocess mode {mode!r}; expected crop_pad or resample")
    return Preprocessed(
        case_id=case.case_id,
        image=image_channels(dwi_t, adc_t),
        mask=mask_t.astype(np.uint8),
        spacing=spacing,  # type: ignore[arg-type]
        affine=case.affine,
        geometry=Geometry(mode, orig, box),  # type: ignore[arg-type]
        orig_mask=case.mask.astype(np.uint8),
        orig_spacing=tuple(float(s) for s in case.spacing),  # type: ignore[arg-type]
        lesion_voxels_outside=outside,
    )


def save_preprocessed(path: str | Path, pre: Preprocessed) -> None:
    """One compact file per case (atomic write): float16 channels, the uint8 mask on the
    preprocessed grid, the geometry, and the original uint8 mask and spacing (compressed: a mask
    costs little)."""
    save_npz_atomic(
        path,
        format_version=np.int64(FORMAT_VERSION),
        case_id=np.str_(pre.case_id),
        image=pre.image.astype(np.float16),
        mask=pre.mask.astype(np.uint8),
        spacing=np.asarray(pre.spacing, dtype=np.float64),
        affine=pre.affine,
        mode=np.str_(pre.geometry.mode),
        orig_shape_dhw=np.asarray(pre.geometry.orig_shape_dhw, dtype=np.int64),
        box=np.asarray(pre.geometry.box, dtype=np.int64),
        orig_mask=pre.orig_mask.astype(np.uint8),
        orig_spacing=np.asarray(pre.orig_spacing, dtype=np.float64),
        lesion_voxels_outside=np.int64(pre.lesion_voxels_outside),
    )


def load_preprocessed(path: str | Path) -> Preprocessed:
    """Read a file :func:`save_preprocessed` wrote (:class:`ValueError` naming it for another
    format version: rerun preprocess)."""
    with np.load(path) as z:
        if int(z["format_version"]) != FORMAT_VERSION:
            raise ValueError(
                f"{path}: preprocessed format {int(z['format_version'])} != {FORMAT_VERSION}; rerun preprocess"
            )
        geometry = Geometry(
            str(z["mode"]),
            tuple(int(s) for s in z["orig_shape_dhw"]),  # type: ignore[arg-type]
            tuple(tuple(int(v) for v in row) for row in z["box"]),  # type: ignore[arg-type]
        )
        return Preprocessed(
            case_id=str(z["case_id"]),
            image=z["image"].astype(np.float32),
            mask=z["mask"].astype(np.uint8),
            spacing=tuple(float(s) for s in z["spacing"]),  # type: ignore[arg-type]
            affine=z["affine"],
            geometry=geometry,
            orig_mask=z["orig_mask"].astype(np.uint8),
            orig_spacing=tuple(float(s) for s in z["orig_spacing"]),  # type: ignore[arg-type]
            lesion_voxels_outside=int(z["lesion_voxels_outside"]),
        )


def lesion_stats(
    mask: np.ndarray, spacing: tuple[float, float, float], connectivity: int = 26
) -> dict[str, Any]:
    """Total lesion volume (voxels, mL), number of 3D connected components (26-connected by
    default, the lesion instances of panoptica and of the study's metrics), smallest/largest."""
    from sizepenalty.metrics.instances import label_instances

    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels, n = label_instances(mask, connectivity)
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, dtype=int)
    total = int(mask.sum())
    return {
        "lesion_voxels": total,
        "lesion_ml": lesion_volume_ml(mask, spacing),
        "n_lesions": int(n),
        "smallest_lesion_voxels": int(sizes.min()) if n else 0,
        "largest_lesion_voxels": int(sizes.max()) if n else 0,
        "smallest_lesion_ml": float(sizes.min()) * voxel_ml if n else 0.0,
        "largest_lesion_ml": float(sizes.max()) * voxel_ml if n else 0.0,
        "voxel_ml": voxel_ml,
    }


def original_nifti(volume_dhw: np.ndarray, pre: Preprocessed):
    """A nibabel image of a (D, H, W) volume on the case's original grid, with its affine."""
    import nibabel as nib

    if tuple(volume_dhw.shape) != pre.geometry.orig_shape_dhw:
        raise ValueError(
            f"{pre.case_id}: volume shape {volume_dhw.shape} is not the original grid "
            f"{pre.geometry.orig_shape_dhw} (D, H, W)"
        )
    img = nib.Nifti1Image(np.ascontiguousarray(volume_dhw.transpose(2, 1, 0)), pre.affine)
    img.header.set_xyzt_units("mm")
    return img


def to_nifti(volume_dhw: np.ndarray, pre: Preprocessed, order: int = 0):
    """A nibabel image of a preprocessed-grid (D, H, W) volume in the case's original geometry
    (mapped back with :meth:`Geometry.to_original` of that ``order``)."""
    return original_nifti(pre.geometry.to_original(volume_dhw, order=order), pre)


def case_grids(pre: Preprocessed) -> dict[str, Any]:
    """The per-case json's grid entries: the original grid (``shape``, ``spacing``, D x H x W),
    the preprocessed one (``grid_shape``, ``grid_spacing``, ``grid_voxel_ml``), the reference
    voxels on it (``grid_lesion_voxels``) and those the crop cut away."""

    def fmt(values) -> str:
        return "x".join(f"{v:g}" for v in values)

    return {
        "shape": fmt(pre.geometry.orig_shape_dhw),
        "spacing": fmt(pre.orig_spacing),
        "grid_shape": fmt(pre.mask.shape),
        "grid_spacing": fmt(pre.spacing),
        "grid_voxel_ml": pre.voxel_ml,
        "grid_lesion_voxels": int(pre.mask.sum()),
        "lesion_voxels_outside_crop": pre.lesion_voxels_outside,
    }


def run_preprocess(
    cfg: StudyConfig,
    cases_tsv: str | Path,
    out_dir: str | Path,
    case_ids: list[str] | None = None,
    skip_invalid: bool = False,
) -> int:
    """The preprocess stage: ``<case>.npz`` (channels, masks, geometry) and ``<case>.json`` in
    ``out_dir`` for each case of the list (default: all). The json holds the lesion statistics
    of the reference as supplied (original grid and spacing: what folds and size strata use) and
    the grid entries of :func:`case_grids`. Every case asked for is
    loaded and validated before anything is written, so a bad case leaves no output; with
    ``skip_invalid`` (or ``dataset.skip_invalid``) it is reported on stderr and skipped.
    Returns the number of cases written."""
    import sys

    from sizepenalty.data.cohort import (
        CaseError,
        CohortError,
        load_case,
        read_case_sources,
        read_cases_tsv,
        read_shown_paths,
    )
    from sizepenalty.data.io import write_json_atomic
    from sizepenalty.data.sources import case_source

    ds, pp = cfg.dataset, cfg.preprocess
    skip = skip_invalid or ds.skip_invalid
    listed = {c.case_id: c for c in read_cases_tsv(cases_tsv)}
    shown, known = read_shown_paths(cases_tsv), read_case_sources(cases_tsv)
    wanted = case_ids or list(listed)
    unknown = [c for c in wanted if c not in listed]
    if unknown:
        raise CohortError(f"{cases_tsv}: no case {', '.join(unknown)}")
    loaded = []
    for cid in wanted:
        try:
            loaded.append(load_case(listed[cid], ds.binarize_labels, ds.affine_atol))
        except CaseError as exc:
            if not skip:
                raise
            print(f"skipped invalid case: {exc}", file=sys.stderr)
    out = Path(out_dir)
    for case in loaded:
        pre = preprocess_case(case, tuple(pp.shape), pp.mode, tuple(pp.clip_percentiles))
        stats = lesion_stats(pre.orig_mask, pre.orig_spacing) | case_grids(pre)
        stats.update(case_id=case.case_id, orig_shape_xyz="x".join(map(str, case.orig_shape)))
        # What it was made from: the workflow reruns this case when its files' content changes.
        cid = case.case_id
        source = case_source(listed[cid], shown[cid], known.get(cid), stats["lesion_ml"])
        stats["source"] = source.to_dict()
        if pre.lesion_voxels_outside:
            print(
                f"warning: {case.case_id}: {pre.lesion_voxels_outside} lesion voxel(s) fall outside "
                f"the {pp.shape} crop: the model never sees them and the metrics count them as "
                "missed; consider a larger preprocess.shape or mode resample",
                file=sys.stderr,
            )
        save_preprocessed(out / f"{case.case_id}.npz", pre)
        write_json_atomic(out / f"{case.case_id}.json", stats)
    return len(loaded)


def read_case_stats(stats_dir: str | Path, cases_tsv: str | Path | None = None) -> list[dict]:
    """The per-case statistics preprocess wrote (``<case>.json``), for the cases of a case list
    (or every file in the folder)."""
    import json

    from sizepenalty.data.cohort import CohortError, read_cases_tsv

    stats_dir = Path(stats_dir)
    if cases_tsv:
        files = [stats_dir / f"{c.case_id}.json" for c in read_cases_tsv(cases_tsv)]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise CohortError(f"missing preprocessed statistics: {', '.join(missing[:3])}")
    else:
        files = sorted(stats_dir.glob("*.json"))
    if not files:
        raise CohortError(
            f"{stats_dir}: no per-case statistics (*.json); run `sizepenalty preprocess` first"
        )
    return [json.loads(f.read_text()) for f in files]
