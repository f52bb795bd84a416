"""Embedded synthetic stroke cohort in the ISLES 2022 BIDS layout (works offline).

Anatomy comes from the MNI152 template, brain mask and GM/WM probability maps that ship inside
``nilearn``. Each case gets DWI and ADC with acute-stroke contrast (lesions DWI-bright, ADC-dark),
tissue-dependent background, a smooth multiplicative bias field, Rician noise and, optionally,
T2 shine-through regions (bright on both DWI and ADC, not lesions) for the mismatch channel to
reject. Lesions are irregular (a perturbed ellipsoid grown to an exact voxel count inside the
brain), disconnected from each other, with log-normal volumes from a few voxels to tens of mL.
Three case types guarantee that every size stratum is populated:

* ``punctate``: 1-4 tiny lesions (total < 1 mL);
* ``scattered``: several small-to-medium lesions (the thesis cohort averages 5.9 per scan);
* ``territorial``: one large territorial infarct plus small satellites — where Dice hides the
  missed satellites.

Determinism: every case uses its own generator seeded by ``(seed, case index)`` and nibabel
writes gzip with a zero timestamp, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from sizepenalty.data.io import atomic_path, save_nifti_atomic, write_text_atomic

CASE_TYPES = ("punctate", "scattered", "territorial")


def case_id(index: int) -> str:
    """ISLES-style subject id for a 1-based case index."""
    return f"sub-strokecase{index:04d}"


def case_paths(root: Path, cid: str) -> dict[str, Path]:
    """Where the ISLES 2022 layout keeps a case's DWI, ADC and mask."""
    ses = "ses-0001"
    base = root / "rawdata" / cid / ses / "dwi"
    return {
        "dwi": base / f"{cid}_{ses}_dwi.nii.gz",
        "adc": base / f"{cid}_{ses}_adc.nii.gz",
        "mask": root / "derivatives" / cid / ses / f"{cid}_{ses}_msk.nii.gz",
    }


@dataclass(frozen=True)
class SynthSpec:
    shape: tuple[int, int, int] = (24, 48, 40)  # (D, H, W)
    spacing: tuple[float, float, float] = (6.0, 4.0, 4.0)  # mm, (D, H, W)
    mean_lesions: float = 5.9
    shine_through: bool = True
    min_lesion_voxels: int = (
        5  # the inference filter removes < 5 voxels; smaller would be unfindable
    )

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


@dataclass
class SynthCase:
    case_id: str
    case_type: str
    dwi: np.ndarray  # (D, H, W) float32
    adc: np.ndarray
    mask: np.ndarray  # (D, H, W) uint8
    lesion_voxels: list[int] = field(default_factory=list)


@lru_cache(maxsize=4)
def _anatomy(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """MNI152 brain mask and tissue maps cropped to the brain and resampled to ``shape`` (D,H,W)."""
    from nilearn import datasets

    def load(fn) -> np.ndarray:
        # nilearn gives (x, y, z); the package works depth-first (z, y, x).
        return np.asarray(fn(resolution=2).get_fdata(), dtype=np.float32).transpose(2, 1, 0)

    brain = load(datasets.load_mni152_brain_mask) > 0.5
    gm = load(datasets.load_mni152_gm_template)
    wm = load(datasets.load_mni152_wm_template)
    idx = np.argwhere(brain)
    lo = np.maximum(idx.min(0) - 2, 0)
    hi = np.minimum(idx.max(0) + 3, brain.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    factors = [t / (b - a) for t, a, b in zip(shape, lo, hi)]

    def fit(vol: np.ndarray, order: int) -> np.ndarray:
        out = ndimage.zoom(
            vol[box].astype(np.float32), factors, order=order, grid_mode=True, mode="nearest"
        )
        assert out.shape == tuple(shape), (out.shape, shape)
        return out

    brain_r = fit(brain.astype(np.float32), 1) > 0.5
    gm_r = np.clip(fit(gm, 1), 0, 1) * brain_r
    wm_r = np.clip(fit(wm, 1), 0, 1) * brain_r
    csf_r = np.clip(1.0 - gm_r - wm_r, 0, 1) * brain_r
    return {"brain": brain_r, "gm": gm_r, "wm": wm_r, "csf": csf_r}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(
        rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap"
    )
    return field_ / (field_.std() + 1e-8)


def _lesion_counts_and_volumes(
    rng: np.random.Generator, case_type: str, spec: SynthSpec
) -> list[float]:
    """Lesion volumes in mL, largest first."""
    n = int(np.clip(1 + rng.poisson(max(spec.mean_lesions - 1.0, 0.0)), 1, 14))
    if case_type == "punctate":
        # At most as many lesions as fit below 1 mL at the minimum lesion size.
        fit = max(1, int(0.95 / (spec.min_lesion_voxels * spec.voxel_ml)))
        n = min(n, int(rng.integers(1, 5)), fit)
        vols = rng.lognormal(mean=math.log(0.12), sigma=0.6, size=n)
        vols = np.minimum(vols, 0.9 / n)  # the case stays below 1 mL in total
    elif case_type == "scattered":
        vols = rng.lognormal(mean=math.log(0.6), sigma=1.0, size=n)
        vols = np.minimum(vols, 8.0)
    else:  # territorial: one large infarct (10-60 mL) plus small satellites
        big = float(np.exp(rng.uniform(math.log(10.0), math.log(60.0))))
        vols = np.concatenate([[big], rng.lognormal(mean=math.log(0.25), sigma=0.8, size=n - 1)])
    return sorted((float(v) for v in vols), reverse=True)


def _grow_lesion(
    rng: np.random.Generator,
    n_voxels: int,
    allowed: np.ndarray,
    spacing: np.ndarray,
) -> np.ndarray | None:
    """One irregular, connected lesion of about ``n_voxels`` voxels inside ``allowed`` (bool volume).

    Returns the voxel coordinates (k, 3) or None when no place was found.
    """
    shape = np.array(allowed.shape)
    candidates = np.argwhere(allowed)
    if len(candidates) < n_voxels:
        return None
    # Radius (mm) of a sphere with the target volume; the local box holds a generous margin.
    radius_mm = (3.0 * n_voxels * float(np.prod(spacing)) / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = np.ceil(2.2 * radius_mm / spacing).astype(int) + 2
    for _ in range(20):
        centre = candidates[rng.integers(len(candidates))]
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        local_allowed = allowed[box]
        if local_allowed.sum() < n_voxels:
            continue
        grids = np.meshgrid(
            *[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing)],
            indexing="ij",
        )
        coords = np.stack([g.ravel() for g in grids], axis=1)
        # Random rotation and axis lengths make an ellipsoid; smooth noise makes it irregular.
        q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        axes = rng.uniform(0.55, 1.45, size=3)
        dist = np.sqrt((((coords @ q) / axes) ** 2).sum(1)).reshape(local_allowed.shape) / max(
            radius_mm, 1e-3
        )
        bumps = _smooth_noise(rng, local_allowed.shape, sigma=1.2) * 0.35
        score = np.where(local_allowed, dist + bumps, np.inf)
        flat = np.argsort(score, axis=None, kind="stable")[:n_voxels]
        if not np.isfinite(score.ravel()[flat]).all():
            continue
        lesion = np.zeros(local_allowed.shape, dtype=bool)
        lesion.ravel()[flat] = True
        labels, count = ndimage.label(lesion, structure=np.ones((3, 3, 3)))
        if count > 1:  # keep the largest piece so the lesion is one connected instance
            sizes = ndimage.sum_labels(lesion, labels, index=np.arange(1, count + 1))
            lesion = labels == (int(np.argmax(sizes)) + 1)
        return np.argwhere(lesion) + lo
    return None


def make_case(index: int, seed: int, spec: SynthSpec, case_type: str | None = None) -> SynthCase:
    """Generate one case (deterministic in ``seed`` and ``index``)."""
    rng = np.random.default_rng([seed, index])
    if case_type is None:
        case_type = CASE_TYPES[rng.integers(len(CASE_TYPES))]
    anat = _anatomy(tuple(spec.shape))
    brain, gm, wm, csf = anat["brain"], anat["gm"], anat["wm"], anat["csf"]
    spacing = np.asarray(spec.spacing, dtype=float)

    # Lesions live in parenchyma (not CSF) and keep a one-voxel gap to each other.
    parenchyma = brain & (csf < 0.5)
    mask = np.zeros(spec.shape, dtype=bool)
    lesion_voxels: list[int] = []
    gap = ndimage.generate_binary_structure(3, 3)
    for vol_ml in _lesion_counts_and_volumes(rng, case_type, spec):
        n_vox = max(spec.min_lesion_voxels, int(round(vol_ml / spec.voxel_ml)))
        allowed = parenchyma & ~ndimage.binary_dilation(mask, structure=gap, iterations=2)
        coords = _grow_lesion(rng, n_vox, allowed, spacing)
        if coords is None:
            continue
        mask[tuple(coords.T)] = True
        lesion_voxels.append(len(coords))

    # Baseline contrasts (arbitrary DWI units; ADC in 1e-6 mm^2/s): CSF is dark on b=1000 DWI
    # and bright on ADC, grey matter a little brighter than white matter on DWI.
    dwi = 900.0 * gm + 720.0 * wm + 180.0 * csf
    adc = 830.0 * gm + 720.0 * wm + 3000.0 * csf
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.6)  # partial-volume lesion edges
    soft = np.maximum(soft, mask)
    dwi_gain = rng.uniform(1.9, 2.6)
    adc_gain = rng.uniform(0.45, 0.65)
    dwi = dwi * (1.0 + (dwi_gain - 1.0) * soft)
    adc = adc * (1.0 - (1.0 - adc_gain) * soft)

    if spec.shine_through and rng.random() < 0.6:
        # T2 shine-through: bright on DWI *and* on ADC, not an acute lesion.
        allowed = parenchyma & ~ndimage.binary_dilation(mask, structure=gap, iterations=3)
        for _ in range(int(rng.integers(1, 3))):
            n_vox = max(4, int(round(rng.uniform(0.5, 3.0) / spec.voxel_ml)))
            coords = _grow_lesion(rng, n_vox, allowed, spacing)
            if coords is None:
                continue
            region = np.zeros(spec.shape, dtype=np.float32)
            region[tuple(coords.T)] = 1.0
            region = np.maximum(ndimage.gaussian_filter(region, 0.6), region)
            dwi = dwi * (1.0 + 0.6 * region)
            adc = adc * (1.0 + 0.35 * region)

    # Smooth multiplicative bias field (same coil for both), then Rician noise.
    bias = np.exp(0.12 * _smooth_noise(rng, spec.shape, sigma=max(spec.shape) / 4))
    dwi = dwi * bias * brain
    adc = adc * bias * brain

    def rician(img: np.ndarray, sigma: float) -> np.ndarray:
        n1 = rng.normal(0.0, sigma, img.shape)
        n2 = rng.normal(0.0, sigma, img.shape)
        return np.sqrt((img + n1) ** 2 + n2**2)

    dwi = rician(dwi, 0.035 * 800.0).astype(np.float32)
    adc = rician(adc, 0.035 * 800.0).astype(np.float32)
    return SynthCase(case_id(index), case_type, dwi, adc, mask.astype(np.uint8), lesion_voxels)


def affine_for(spec: SynthSpec) -> np.ndarray:
    """RAS affine for arrays stored (x, y, z), centred on the volume."""
    sx, sy, sz = spec.spacing[2], spec.spacing[1], spec.spacing[0]
    nz, ny, nx = spec.shape
    aff = np.diag([sx, sy, sz, 1.0])
    aff[:3, 3] = [-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -(nz - 1) * sz / 2]
    return aff


def case_types_for(n_cases: int, seed: int) -> list[str]:
    """Balanced case types (each type at least once for n >= 3), shuffled by the seed."""
    types = [CASE_TYPES[i % len(CASE_TYPES)] for i in range(n_cases)]
    rng = np.random.default_rng([seed, 0])
    return [types[i] for i in rng.permutation(n_cases)]


def write_cohort(
    out: str | Path, n_cases: int, seed: int, spec: SynthSpec
) -> list[dict[str, object]]:
    """Write ``n_cases`` cases in the ISLES 2022 layout under ``out``; return participants rows."""
    import nibabel as nib

    out = Path(out)
    rows: list[dict[str, object]] = []
    affine = affine_for(spec)
    for i, ctype in enumerate(case_types_for(n_cases, seed), start=1):
        case = make_case(i, seed, spec, ctype)
        paths = case_paths(out, case.case_id)
        for key, arr, dtype in (
            ("dwi", case.dwi, np.float32),
            ("adc", case.adc, np.float32),
            ("mask", case.mask, np.uint8),
        ):
            img = nib.Nifti1Image(
                np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(dtype), affine
            )
            img.header.set_xyzt_units("mm")
            save_nifti_atomic(img, paths[key])
        total = int(case.mask.sum())
        rows.append(
            {
                "participant_id": case.case_id,
                "case_type": ctype,
                "n_lesions": len(case.lesion_voxels),
                "lesion_voxels": total,
                "lesion_ml": round(total * spec.voxel_ml, 4),
            }
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "participants.tsv", buf.getvalue())
    _write_dataset_description(out)
    return rows


def _write_dataset_description(out: Path) -> None:
    import json

    desc = {
        "Name": "sizepenalty synthetic stroke cohort",
        "BIDSVersion": "1.8.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "sizepenalty synth"}],
    }
    write_text_atomic(out / "dataset_description.json", json.dumps(desc, indent=2) + "\n")


__all__ = ["SynthSpec", "make_case", "write_cohort", "case_id", "case_paths", "atomic_path"]
