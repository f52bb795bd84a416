"""Embedded synthetic stroke cohort in the ISLES 2022 BIDS layout (works offline).

Anatomy comes from the MNI152 template, brain mask and GM/WM probability maps that ship inside
``nilearn``, resampled into the requested grid (the default squeezes the whole brain into
24 x 48 x 40 voxels of 2 mm, so proportions are not anatomical; lesions are still drawn in mm).
Each case gets DWI and ADC with acute-stroke contrast (lesions DWI-bright, ADC-dark),
tissue-dependent background, a smooth multiplicative bias field, Rician noise and, optionally,
T2 shine-through regions (bright on both DWI and ADC, not lesions) for the mismatch channel to
reject. Lesions are compact, lobulated blobs (a perturbed ellipsoid grown to a voxel count in the
parenchyma), each face-connected and kept two voxels apart from the others, so every lesion is
one instance under 6-, 18- or 26-connectivity.

Lesion burden follows the thesis cohort's shape, scaled to the small grid: a case's total volume
is log-normal (median ``volume_median_ml``, log-sd ``volume_sigma`` as the thesis's 0.13-370 mL
range suggests) with the top compressed towards ``max_case_fraction`` of the parenchyma and a floor
at ``min_case_ml``. The default voxel is ISLES's 2 mm isotropic (0.008 mL), so SPL's
τ = 600 voxels is 4.8 mL, next to the median case (4.4 mL), and the size weight exp(-V/τ) runs
from ~0.95 (sub-mL cases) to ~0.003 (territorial infarcts). A cohort is planned as a whole
(:func:`plan_cohort`): each case draws from its own quantile stratum of that distribution
(strata shuffled by the seed), so a cohort spans it by construction rather than by luck. With the
defaults, from 6 cases on the smallest case is sub-mL; from 12 on at least two are, and at least
a quarter of the cases have exp(-V/τ) > 0.6 and a quarter < 0.15. Lesion counts start as
1 + Poisson(``mean_lesions`` - 1), capped by what a case can hold (its volume over three minimum
lesions), and are topped up where there is room until the cohort mean is ``mean_lesions``
(thesis 5.9 per scan). There are no lesion-free cases. The case type follows from the volume:

* ``punctate``: total < 1 mL, 1-3 small lesions;
* ``scattered``: 1-8 mL in several small-to-medium lesions;
* ``territorial``: >= 8 mL, one dominant infarct (55-80 % of the volume) plus smaller
  satellites (where Dice hides missed satellites).

Every lesion has at least ``min_lesion_voxels`` voxels (default 12), well above the 5-voxel
post-processing removal size. Determinism: the plan uses a generator seeded by ``(seed, 0)``,
every case its own seeded by ``(seed, case index)``, and nibabel writes gzip with a zero
timestamp, so the same seed and case count give byte-identical files.
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
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)  # mm, (D, H, W); ISLES 2022's voxel
    mean_lesions: float = 5.9  # thesis: disconnected ischemias per scan
    shine_through: bool = True
    # Smallest lesion: well above the 5-voxel post-processing removal size, so a slightly
    # under-segmented lesion still survives it.
    min_lesion_voxels: int = 12
    # Total lesion volume per case: log-normal in mL (the thesis cohort's shape, scaled so that
    # τ = 600 voxels = 4.8 mL lies near the median), floor at the thesis's smallest scan (0.13 mL),
    # the top compressed towards a fraction of the parenchyma (its largest scan is ~20 % of a brain).
    volume_median_ml: float = 4.4
    volume_sigma: float = 1.5
    min_case_ml: float = 0.13
    max_case_fraction: float = 0.2
    max_lesions: int = 14

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    @classmethod
    def from_config(cls, sc) -> SynthSpec:
        """The spec of a config's ``dataset.synthetic`` section (distribution fields default)."""
        return cls(tuple(sc.shape), tuple(sc.spacing), sc.mean_lesions, sc.shine_through)


@dataclass(frozen=True)
class CasePlan:
    """What one case will hold: its type, total lesion voxels and number of lesions."""

    case_type: str
    total_voxels: int
    n_lesions: int


@dataclass
class SynthCase:
    case_id: str
    case_type: str
    dwi: np.ndarray  # (D, H, W) float32
    adc: np.ndarray
    mask: np.ndarray  # (D, H, W) uint8
    lesion_voxels: list[int] = field(default_factory=list)  # realised sizes, largest first


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
    # Lesions live in parenchyma (grey and white matter), not in CSF.
    parenchyma = brain_r & (csf_r < 0.5)
    return {"brain": brain_r, "gm": gm_r, "wm": wm_r, "csf": csf_r, "parenchyma": parenchyma}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(
        rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap"
    )
    return field_ / (field_.std() + 1e-8)


# ----------------------------------------------------------------------------- lesion burden

SUB_ML = 1.0  # punctate cases stay below this total (mL)
TERRITORIAL_ML = 8.0  # from this total (mL) a case has one dominant infarct


def _case_capacity(spec: SynthSpec) -> int:
    """Largest total lesion volume (voxels) a case may reach in this grid."""
    parenchyma = int(_anatomy(tuple(spec.shape))["parenchyma"].sum())
    return max(int(spec.max_case_fraction * parenchyma), 4 * spec.min_lesion_voxels)


def _quantile_of_ml(ml: float, spec: SynthSpec) -> float:
    from scipy.special import ndtr

    return float(ndtr(math.log(ml / spec.volume_median_ml) / spec.volume_sigma))


def case_voxels_at(q: float, spec: SynthSpec, capacity: int) -> int:
    """Total lesion voxels of the case at quantile ``q`` of the cohort's volume distribution."""
    from scipy.special import ndtri

    vox = spec.volume_median_ml * math.exp(spec.volume_sigma * float(ndtri(q))) / spec.voxel_ml
    knee = capacity / 2.0  # above the knee, approach the capacity smoothly instead of clipping
    if vox > knee:
        vox = knee + (capacity - knee) * (1.0 - math.exp(-(vox - knee) / (capacity - knee)))
    floor = max(spec.min_case_ml / spec.voxel_ml, spec.min_lesion_voxels)
    return int(round(max(vox, floor)))


def _type_for(total_voxels: int, spec: SynthSpec) -> str:
    ml = total_voxels * spec.voxel_ml
    if ml < SUB_ML:
        return "punctate"
    return "territorial" if ml >= TERRITORIAL_ML else "scattered"


def _max_lesions(total_voxels: int, spec: SynthSpec) -> int:
    """How many lesions a case of this size holds: on average three times the minimum size, so
    that most lesions are well above it."""
    return int(np.clip(total_voxels // (3 * spec.min_lesion_voxels), 1, spec.max_lesions))


def _draw_count(rng: np.random.Generator, spec: SynthSpec) -> int:
    return 1 + int(rng.poisson(max(spec.mean_lesions - 1.0, 0.0)))


def plan_cohort(n_cases: int, seed: int, spec: SynthSpec) -> list[CasePlan]:
    """Types, total volumes and lesion counts of a whole cohort (deterministic in the arguments).

    Case ``i`` takes a random point inside its own quantile stratum ``[r_i/n, (r_i+1)/n)`` of the
    volume distribution (``r`` a seeded permutation), so every cohort spans the distribution
    instead of depending on luck. Counts start as 1 + Poisson(mean - 1), capped by what each case
    can hold, and are then topped up (or trimmed) one lesion at a time so the cohort total is
    ``round(mean_lesions * n_cases)``.
    """
    rng = np.random.default_rng([seed, 0])
    capacity = _case_capacity(spec)
    q = (rng.permutation(n_cases) + rng.uniform(0.2, 0.8, n_cases)) / n_cases
    totals = [case_voxels_at(float(qi), spec, capacity) for qi in q]
    caps = np.array([_max_lesions(t, spec) for t in totals])
    counts = np.minimum([_draw_count(rng, spec) for _ in range(n_cases)], caps)
    target = int(np.clip(round(spec.mean_lesions * n_cases), n_cases, caps.sum()))
    while counts.sum() < target:  # top up where there is most room (the larger cases)
        room = (caps - counts).astype(float)
        counts[rng.choice(n_cases, p=room / room.sum())] += 1
    while counts.sum() > target:
        counts[rng.choice(np.flatnonzero(counts == counts.max()))] -= 1
    return [
        CasePlan(_type_for(t, spec), int(t), int(c)) for t, c in zip(totals, counts, strict=True)
    ]


def _plan_one(rng: np.random.Generator, case_type: str | None, spec: SynthSpec) -> CasePlan:
    """A single case's plan when no cohort plan is given (``case_type`` picks its volume band)."""
    q_sub, q_ter = _quantile_of_ml(SUB_ML, spec), _quantile_of_ml(TERRITORIAL_ML, spec)
    lo, hi = {
        None: (0.002, 0.998),
        "punctate": (0.002, q_sub),
        "scattered": (q_sub, q_ter),
        "territorial": (q_ter, 0.998),
    }[case_type]
    total = case_voxels_at(float(rng.uniform(lo, hi)), spec, _case_capacity(spec))
    n = min(_draw_count(rng, spec), _max_lesions(total, spec))
    return CasePlan(case_type or _type_for(total, spec), total, n)


def _split_sizes(rng: np.random.Generator, plan: CasePlan, floor: int) -> list[int]:
    """Split a case's total into ``n_lesions`` sizes (each >= ``floor``), largest first."""
    n, total = plan.n_lesions, plan.total_voxels
    if n <= 1:
        return [total]
    spare = max(total - n * floor, 0)
    w = rng.lognormal(0.0, 0.7, size=n)
    if plan.case_type == "territorial":  # one infarct takes 55-80 %, satellites share the rest
        dominant = rng.uniform(0.55, 0.8)
        shares = np.concatenate([[dominant], (1.0 - dominant) * w[1:] / w[1:].sum()])
    else:
        shares = w / w.sum()
    sizes = floor + np.floor(spare * shares).astype(int)
    sizes[int(np.argmax(shares))] += total - int(sizes.sum())  # exact total
    return sorted((int(s) for s in sizes), reverse=True)


# ----------------------------------------------------------------------------- lesion shape


def _grow_lesion(
    rng: np.random.Generator,
    n_voxels: int,
    allowed: np.ndarray,
    spacing: np.ndarray,
    tries: int = 20,
) -> np.ndarray | None:
    """One irregular, compact, connected lesion of about ``n_voxels`` voxels inside ``allowed``
    (bool volume).

    Centres are drawn where ``allowed`` is deep enough for the lesion's core, so it does not wrap
    thinly along the cortex or around a neighbour; of the tries, the first compact result is
    taken (else the most compact one). Returns the voxel coordinates (k, 3) or None when no place
    was found.
    """
    shape = np.array(allowed.shape)
    if int(allowed.sum()) < n_voxels:
        return None
    # Radius (mm) of a sphere with the target volume; the local box holds a generous margin.
    radius_mm = (3.0 * n_voxels * float(np.prod(spacing)) / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = np.ceil(2.2 * radius_mm / spacing).astype(int) + 2
    depth = ndimage.distance_transform_edt(allowed, sampling=spacing)
    candidates = np.argwhere(depth >= min(0.7 * radius_mm, 0.8 * float(depth.max())))
    # Bumps on the scale of the lesion (lobules), not of single voxels, so large lesions are
    # irregular without being shredded.
    bump_sigma = max(1.2, 0.35 * radius_mm / float(spacing.mean()))
    best: tuple[float, np.ndarray] | None = None
    for _ in range(tries):
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
        axes = rng.uniform(0.6, 1.4, size=3)
        dist = np.sqrt((((coords @ q) / axes) ** 2).sum(1)).reshape(local_allowed.shape) / max(
            radius_mm, 1e-3
        )
        bumps = _smooth_noise(rng, local_allowed.shape, sigma=bump_sigma) * 0.3
        score = np.where(local_allowed, dist + bumps, np.inf)
        flat = np.argsort(score, axis=None, kind="stable")[:n_voxels]
        reach = float(score.ravel()[flat[-1]])  # ~1 when the lesion fits, more when squeezed
        if not np.isfinite(reach):
            continue
        lesion = np.zeros(local_allowed.shape, dtype=bool)
        lesion.ravel()[flat] = True
        # Keep the largest face-connected piece: the lesion is then one instance under any of the
        # 6/18/26 connectivities the metrics may use (the gap keeps lesions apart under all).
        labels, count = ndimage.label(lesion)
        if count > 1:
            sizes = ndimage.sum_labels(lesion, labels, index=np.arange(1, count + 1))
            lesion = labels == (int(np.argmax(sizes)) + 1)
            if lesion.sum() < 0.9 * n_voxels:  # squeezed between obstacles: try elsewhere
                continue
        found = np.argwhere(lesion) + lo
        if reach <= 1.5:
            return found
        if best is None or reach < best[0]:
            best = (reach, found)
    return None if best is None else best[1]


def _place_lesions(
    rng: np.random.Generator, sizes: list[int], spec: SynthSpec, parenchyma: np.ndarray
) -> tuple[np.ndarray, list[int]]:
    """Grow the lesions (largest first) with a two-voxel gap between them; a lesion that finds no
    room is retried smaller (down to the minimum size) before it is given up."""
    spacing = np.asarray(spec.spacing, dtype=float)
    mask = np.zeros(spec.shape, dtype=bool)
    placed: list[int] = []
    gap = ndimage.generate_binary_structure(3, 3)
    for n_vox in sizes:
        allowed = parenchyma & ~ndimage.binary_dilation(mask, structure=gap, iterations=2)
        size, coords = n_vox, None
        for _ in range(4):
            coords = _grow_lesion(rng, size, allowed, spacing, tries=25)
            if coords is not None or size <= spec.min_lesion_voxels:
                break
            size = max(spec.min_lesion_voxels, int(size * 0.7))
        if coords is None:
            continue
        mask[tuple(coords.T)] = True
        placed.append(len(coords))
    return mask, sorted(placed, reverse=True)


# ----------------------------------------------------------------------------- images


def make_case(
    index: int,
    seed: int,
    spec: SynthSpec,
    case_type: str | None = None,
    plan: CasePlan | None = None,
) -> SynthCase:
    """Generate one case (deterministic in ``seed``, ``index`` and ``plan``).

    ``plan`` (from :func:`plan_cohort`) fixes the case's type, volume and lesion count; without
    one, the case draws its own from the volume distribution (restricted to ``case_type``'s band
    when given).
    """
    rng = np.random.default_rng([seed, index])
    if plan is None:
        plan = _plan_one(rng, case_type, spec)
    anat = _anatomy(tuple(spec.shape))
    brain, gm, wm, csf = anat["brain"], anat["gm"], anat["wm"], anat["csf"]
    parenchyma = anat["parenchyma"]
    spacing = np.asarray(spec.spacing, dtype=float)

    sizes = _split_sizes(rng, plan, spec.min_lesion_voxels)
    mask, lesion_voxels = _place_lesions(rng, sizes, spec, parenchyma)
    gap = ndimage.generate_binary_structure(3, 3)

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
    return SynthCase(case_id(index), plan.case_type, dwi, adc, mask.astype(np.uint8), lesion_voxels)


def make_cohort(n_cases: int, seed: int, spec: SynthSpec) -> list[SynthCase]:
    """The cases :func:`write_cohort` writes, in memory."""
    plans = plan_cohort(n_cases, seed, spec)
    return [make_case(i, seed, spec, plan=p) for i, p in enumerate(plans, start=1)]


def affine_for(spec: SynthSpec) -> np.ndarray:
    """RAS affine for arrays stored (x, y, z), centred on the volume."""
    sx, sy, sz = spec.spacing[2], spec.spacing[1], spec.spacing[0]
    nz, ny, nx = spec.shape
    aff = np.diag([sx, sy, sz, 1.0])
    aff[:3, 3] = [-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -(nz - 1) * sz / 2]
    return aff


def write_cohort(
    out: str | Path, n_cases: int, seed: int, spec: SynthSpec
) -> list[dict[str, object]]:
    """Write ``n_cases`` cases in the ISLES 2022 layout under ``out``; return participants rows."""
    import nibabel as nib

    out = Path(out)
    rows: list[dict[str, object]] = []
    affine = affine_for(spec)
    for i, plan in enumerate(plan_cohort(n_cases, seed, spec), start=1):
        case = make_case(i, seed, spec, plan=plan)
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
                "case_type": case.case_type,
                "n_lesions": len(case.lesion_voxels),
                "lesion_voxels": total,
                "lesion_ml": round(total * spec.voxel_ml, 4),
                "smallest_lesion_voxels": min(case.lesion_voxels, default=0),
                "largest_lesion_voxels": max(case.lesion_voxels, default=0),
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


__all__ = [
    "CasePlan",
    "SynthSpec",
    "atomic_path",
    "case_id",
    "case_paths",
    "make_case",
    "make_cohort",
    "plan_cohort",
    "write_cohort",
]
