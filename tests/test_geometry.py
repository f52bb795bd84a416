"""Scoring on the original grid, on ISLES 2022's real geometries (synthetic volumes of them).

Each test writes NIfTIs in the ISLES 2022 layout, runs the cohort and preprocess stages, puts
hand-made probability maps (on the preprocessed grid) where inference would, and evaluates the
fold: no training. Volumes are (D, H, W) = (z, y, x) here and written to NIfTI as (x, y, z).
"""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from workflow_helpers import train_within

from sizepenalty.config import from_dict
from sizepenalty.data.cohort import discover_isles22, load_case, run_cohort
from sizepenalty.data.io import save_npz_atomic
from sizepenalty.data.preprocess import load_preprocessed, normalize, run_preprocess
from sizepenalty.evaluate import evaluate_fold
from sizepenalty.runs import RunKey
from sizepenalty.stages import stage_config

ISLES_SHAPE = (72, 112, 112)  # presets/isles22.yaml's preprocess.shape


def phantom(shape, radii, centre=None, seed=0):
    """DWI and ADC of an ellipsoidal brain (semi-axes ``radii`` voxels) on a zero background."""
    rng = np.random.default_rng(seed)
    centre = np.asarray(shape) / 2 - 0.5 if centre is None else np.asarray(centre)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    brain = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
    dwi = np.where(brain, rng.normal(600, 40, shape), 0).astype(np.float32)
    adc = np.where(brain, rng.normal(800, 50, shape), 0).astype(np.float32)
    return dwi, adc, brain


def write_isles_case(root, cid, dwi, adc, mask, affine, flat=False):
    """One case in the ISLES 2022 layout: DWI and ADC in ``ses-0001/dwi/`` (or, ``flat``, directly
    in ``ses-0001/``), the mask in ``derivatives/``."""
    ses = Path(root) / "rawdata" / cid / "ses-0001"
    images = ses if flat else ses / "dwi"
    deriv = Path(root) / "derivatives" / cid / "ses-0001"
    for folder in (images, deriv):
        folder.mkdir(parents=True, exist_ok=True)
    lesion = mask.astype(bool)
    dwi, adc = dwi.copy(), adc.copy()
    dwi[lesion], adc[lesion] = 1400.0, 350.0  # DWI bright, ADC dark
    for kind, data in (("dwi", dwi), ("adc", adc)):
        img = nib.Nifti1Image(data.transpose(2, 1, 0), affine)
        nib.save(img, images / f"{cid}_ses-0001_{kind}.nii.gz")
    nib.save(
        nib.Nifti1Image(mask.astype(np.uint8).transpose(2, 1, 0), affine),
        deriv / f"{cid}_ses-0001_msk.nii.gz",
    )


def affine_for(spacing_dhw, origin=(-100.0, -120.0, -60.0), flip_x=False):
    """A NIfTI affine (x, y, z) for a (D, H, W) spacing, optionally with x flipped (RAS/LAS)."""
    sz, sy, sx = spacing_dhw
    a = np.diag([-sx if flip_x else sx, sy, sz, 1.0])
    a[:3, 3] = origin
    return a


def prepare(tmp_path, root, shape, mode="crop_pad", thresholds=(0.5,)):
    """cohort + preprocess stages on the ISLES root: (config, preprocessed folder)."""
    cfg = from_dict(
        {
            "results": str(tmp_path / "results"),
            "dataset": {"source": "isles22", "path": str(root)},
            "preprocess": {"shape": list(shape), "mode": mode},
            "train": train_within(shape),
            "infer": {"thresholds": list(thresholds)},
        }
    )
    cases = tmp_path / "cases.tsv"
    run_cohort(cfg, cases)
    pre_dir = tmp_path / "pre"
    run_preprocess(cfg, cases, pre_dir)
    return cfg, pre_dir


def put_prob(prob_dir, split, cid, prob):
    """A probability map where `sizepenalty infer` writes it (float16, preprocessed grid)."""
    save_npz_atomic(Path(prob_dir) / split / f"{cid}.npz", prob=prob.astype(np.float16))


def evaluate(cfg, pre_dir, prob_dir, val, test, nifti_dir=None):
    fold = {"fold": 0, "train": [], "val": list(val), "test": list(test)}
    key = RunKey("DTS", fold=fold["fold"])
    return evaluate_fold(stage_config(cfg, "evaluate"), key, fold, pre_dir, prob_dir, nifti_dir)


def perfect_on_grid(pre_dir, cid):
    """The preprocessed reference as a probability map: a perfect model on what it was shown."""
    return load_preprocessed(Path(pre_dir) / f"{cid}.npz").mask.astype(np.float32)


def dice(a, b):
    a, b = a > 0, b > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


# ----------------------------------------------------------------------------- the case


def test_a_lesion_the_crop_cuts_away_is_missed_against_the_whole_original_reference(tmp_path):
    # 1 mm in-plane, 224x224x73 (x, y, z): the brain is wider than the preset's 112x112 crop.
    shape, spacing = (73, 224, 224), (2.0, 1.0, 1.0)
    dwi, adc, brain = phantom(shape, radii=(30, 85, 95))
    mask = np.zeros(shape, np.uint8)
    mask[34:38, 108:116, 108:116] = 1  # central: inside the crop (256 voxels)
    mask[34:38, 108:116, 30:38] = 1  # lateral, 82 mm from the midline: outside it (256 voxels)
    assert brain[mask > 0].all()
    root, cid = tmp_path / "ISLES-2022", "sub-strokecase0001"
    affine = affine_for(spacing)
    write_isles_case(root, cid, dwi, adc, mask, affine)
    cfg, pre_dir = prepare(tmp_path, root, ISLES_SHAPE)
    stats = json.loads((pre_dir / f"{cid}.json").read_text())
    voxel_ml = 2.0 / 1000
    assert stats["lesion_voxels_outside_crop"] == 256
    assert stats["lesion_ml"] == pytest.approx(512 * voxel_ml)  # the reference as supplied
    assert stats["n_lesions"] == 2

    prob_dir, nifti_dir = tmp_path / "probs", tmp_path / "pred"
    prob = perfect_on_grid(pre_dir, cid)
    put_prob(prob_dir, "val", cid, prob)
    put_prob(prob_dir, "test", cid, prob)
    ev = evaluate(cfg, pre_dir, prob_dir, [cid], [cid], nifti_dir)

    (row,) = ev.cases
    assert row["ref_ml"] == pytest.approx(512 * voxel_ml)  # not the cropped 256 voxels
    assert row["stratum"] == "< 5 mL"
    assert row["dice"] == pytest.approx(2 * 256 / (256 + 512))
    by_lesion = sorted((r["voxels"], r["detected_overlap"], r["detected_iou"]) for r in ev.lesions)
    assert by_lesion == [(256, 0, 0), (256, 1, 1)]  # the lateral lesion is missed by both rules
    assert row["fn_overlap"] == row["fn_iou"] == 1
    missed = [r for r in ev.lesions if not r["detected_overlap"]]
    assert missed[0]["volume_ml"] == pytest.approx(256 * voxel_ml)
    # The validation Dice is against the original mask too: 2*256 / (256 + 512), not 1.
    assert ev.val_dice[0.5] == pytest.approx(2 / 3)
    # The written prediction is on the original grid, with the original affine.
    img = nib.load(nifti_dir / f"{cid}_pred.nii.gz")
    assert img.shape == (224, 224, 73)
    np.testing.assert_allclose(img.affine, affine)
    pred = np.asarray(img.dataobj).transpose(2, 1, 0)
    expected = mask.copy()
    expected[:, :, 30:38] = 0
    np.testing.assert_array_equal(pred, expected)


def test_the_threshold_is_chosen_against_the_original_validation_masks(tmp_path):
    # t = 0.7 predicts half the lesion; t = 0.3 all of it plus 80 false-positive voxels. Against
    # the cropped reference (64 voxels) 0.7 wins (0.667 vs 0.615); against the original one,
    # which also holds a 300-voxel lesion outside the crop, 0.3 wins (0.252 vs 0.162).
    shape = (20, 40, 96)
    dwi, adc, _ = phantom(shape, radii=(12, 22, 50))
    mask = np.zeros(shape, np.uint8)
    mask[8:12, 18:22, 46:50] = 1  # 64 voxels, central
    mask[8:11, 15:25, 4:14] = 1  # 300 voxels, outside the 32-wide crop
    root, cid = tmp_path / "ISLES-2022", "sub-strokecase0001"
    write_isles_case(root, cid, dwi, adc, mask, affine_for((2.0, 2.0, 2.0)))
    cfg, pre_dir = prepare(tmp_path, root, (20, 40, 32), thresholds=(0.3, 0.7))
    pre = load_preprocessed(pre_dir / f"{cid}.npz")
    assert int(pre.mask.sum()) == 64
    assert json.loads((pre_dir / f"{cid}.json").read_text())["lesion_voxels_outside_crop"] == 300
    (z, y, x) = (s.start for s in _bbox(pre.mask))
    prob = np.zeros(pre.mask.shape, np.float32)
    prob[z : z + 4, y : y + 4, x : x + 4] = 0.5
    prob[z : z + 2, y : y + 4, x : x + 4] = 0.8  # the half found at 0.7
    prob[z : z + 4, y + 4 : y + 8, x : x + 5] = 0.4  # 80 false positives beside the lesion
    prob_dir = tmp_path / "probs"
    put_prob(prob_dir, "val", cid, prob)
    put_prob(prob_dir, "test", cid, prob)
    ev = evaluate(cfg, pre_dir, prob_dir, [cid], [cid])
    assert ev.val_dice[0.7] == pytest.approx(2 * 32 / (32 + 364))
    assert ev.val_dice[0.3] == pytest.approx(2 * 64 / (144 + 364))
    assert ev.threshold == 0.3


def _bbox(mask):
    idx = np.argwhere(mask)
    return tuple(slice(lo, hi + 1) for lo, hi in zip(idx.min(0), idx.max(0)))


# ----------------------------------------------------------------------------- ISLES geometries


@pytest.mark.parametrize("mode", ["crop_pad", "resample"])
def test_73_slices_against_the_presets_72_come_back_on_the_73_slice_grid(tmp_path, mode):
    shape, spacing = (73, 112, 112), (2.0, 2.0, 2.0)  # ISLES 2022's usual DWI grid
    dwi, adc, _ = phantom(shape, radii=(32, 48, 44))
    mask = np.zeros(shape, np.uint8)
    mask[20:26, 40:50, 40:52] = 1  # 720 voxels
    mask[50:53, 70:74, 60:64] = 1  # 48 voxels
    root, cid = tmp_path / "ISLES-2022", "sub-strokecase0001"
    affine = affine_for(spacing, flip_x=True)
    write_isles_case(root, cid, dwi, adc, mask, affine)
    cfg, pre_dir = prepare(tmp_path, root, ISLES_SHAPE, mode)
    assert load_preprocessed(pre_dir / f"{cid}.npz").mask.shape == ISLES_SHAPE

    prob_dir, nifti_dir = tmp_path / "probs", tmp_path / "pred"
    prob = perfect_on_grid(pre_dir, cid)
    put_prob(prob_dir, "val", cid, prob)
    put_prob(prob_dir, "test", cid, prob)
    ev = evaluate(cfg, pre_dir, prob_dir, [cid], [cid], nifti_dir)
    (row,) = ev.cases
    # The reference is the 73-slice mask at its own 2 mm voxel, whatever the grid trained on.
    assert row["ref_ml"] == pytest.approx(768 * 0.008)
    assert sorted(r["voxels"] for r in ev.lesions) == [48, 720]
    assert all(r["detected_overlap"] and r["detected_iou"] for r in ev.lesions)
    img = nib.load(nifti_dir / f"{cid}_pred.nii.gz")
    assert img.shape == (112, 112, 73)
    np.testing.assert_allclose(img.affine, affine)
    pred = np.asarray(img.dataobj).transpose(2, 1, 0)
    if mode == "crop_pad":  # exact: the dropped slice holds no lesion
        np.testing.assert_array_equal(pred, mask)
        assert row["dice"] == 1.0
    else:  # 73 -> 72 -> 73 slices: a boundary voxel may move
        assert dice(pred, mask) > 0.9 and row["dice"] == pytest.approx(dice(pred, mask))


@pytest.mark.parametrize("mode", ["crop_pad", "resample"])
def test_a_cohort_of_mixed_voxel_sizes_is_scored_and_written_in_each_cases_own_grid(
    tmp_path, mode
):
    # Two scans of the same 512 mm^3 lesion: 2 mm isotropic, and 1 mm in-plane with 2 mm slices.
    root = tmp_path / "ISLES-2022"
    cases = {
        "sub-strokecase0001": ((20, 32, 32), (2.0, 2.0, 2.0), np.s_[8:12, 14:18, 14:18], True),
        "sub-strokecase0002": ((20, 64, 64), (2.0, 1.0, 1.0), np.s_[8:12, 28:36, 28:36], False),
    }
    affines = {}
    for i, (cid, (shape, spacing, lesion, flip)) in enumerate(cases.items()):
        dwi, adc, _ = phantom(shape, radii=(8, shape[1] * 0.4, shape[2] * 0.4), seed=i)
        mask = np.zeros(shape, np.uint8)
        mask[lesion] = 1
        affines[cid] = affine_for(spacing, origin=(-30.0 - i, 10.0, 5.0 * i), flip_x=flip)
        write_isles_case(root, cid, dwi, adc, mask, affines[cid], flat=i == 1)
    grid = (20, 64, 64) if mode == "crop_pad" else (20, 32, 32)  # pads A / halves B in-plane
    cfg, pre_dir = prepare(tmp_path, root, grid, mode)
    prob_dir, nifti_dir = tmp_path / "probs", tmp_path / "pred"
    for cid in cases:
        prob = perfect_on_grid(pre_dir, cid)
        put_prob(prob_dir, "val", cid, prob)
        put_prob(prob_dir, "test", cid, prob)
    ev = evaluate(cfg, pre_dir, prob_dir, list(cases), list(cases), nifti_dir)
    for row in ev.cases:
        cid = row["case_id"]
        shape, spacing, lesion, _ = cases[cid]
        assert row["ref_ml"] == pytest.approx(0.512)  # each case's mL from its own spacing
        stats = json.loads((pre_dir / f"{cid}.json").read_text())
        assert stats["lesion_ml"] == pytest.approx(0.512)
        assert stats["voxel_ml"] == pytest.approx(np.prod(spacing) / 1000)
        img = nib.load(nifti_dir / f"{cid}_pred.nii.gz")
        assert img.shape == shape[::-1]
        np.testing.assert_allclose(img.affine, affines[cid])
        np.testing.assert_allclose(img.header.get_zooms(), spacing[::-1])
        pred = np.asarray(img.dataobj).transpose(2, 1, 0)
        mask = np.zeros(shape, np.uint8)
        mask[lesion] = 1
        if mode == "crop_pad":
            np.testing.assert_array_equal(pred, mask)
        else:
            assert dice(pred, mask) > 0.85
    lesion_ml = sorted(r["volume_ml"] for r in ev.lesions)
    assert lesion_ml == pytest.approx([0.512, 0.512])


def test_negative_intensities_pass_validation_normalise_and_the_crop_finds_the_brain(tmp_path):
    # Interpolated scans undershoot below 0 at the brain's edge (here 2.6 % of the voxels, more
    # than the 1st percentile): the zero background must stay background for the crop.
    shape = (40, 112, 112)
    dwi, adc, brain = phantom(shape, radii=(16, 30, 40), centre=(20, 40, 56))
    from scipy import ndimage

    edge = ndimage.binary_dilation(brain, iterations=2) & ~brain
    rng = np.random.default_rng(1)
    dwi[edge] = -rng.uniform(20, 150, int(edge.sum()))
    adc[edge] = -rng.uniform(20, 300, int(edge.sum()))
    assert (dwi < 0).mean() > 0.01 and (adc < 0).mean() > 0.01
    mask = np.zeros(shape, np.uint8)
    mask[18:22, 14:18, 50:56] = 1  # near the brain's front edge, far from the volume centre
    root, cid = tmp_path / "ISLES-2022", "sub-strokecase0001"
    write_isles_case(root, cid, dwi, adc, mask, affine_for((2.0, 2.0, 2.0)))
    case = load_case(discover_isles22(root)[0])  # validation accepts negative intensities
    assert case.dwi.min() < 0 and case.adc.min() < 0
    for channel in (normalize(case.dwi), normalize(case.adc)):
        assert channel.min() == 0.0 and channel.max() == 1.0
    cfg, pre_dir = prepare(tmp_path, root, (40, 64, 96))
    pre = load_preprocessed(pre_dir / f"{cid}.npz")
    assert 0.0 <= pre.image.min() and pre.image.max() <= 1.0
    # The crop is centred on the brain (y 10..70), not on the volume (y 24..88), and keeps the
    # lesion at y 14..17.
    (_, (y0, y1, _, _), _) = pre.geometry.box
    assert (y0, y1) == (8, 72)
    assert pre.lesion_voxels_outside == 0 and int(pre.mask.sum()) == int(mask.sum())


def test_both_isles_folder_layouts_in_one_cohort(tmp_path):
    root = tmp_path / "ISLES-2022"
    shape = (8, 12, 12)
    dwi, adc, _ = phantom(shape, radii=(3, 5, 5))
    mask = np.zeros(shape, np.uint8)
    mask[3:5, 5:7, 5:7] = 1
    ids = ["sub-strokecase0001", "sub-strokecase0002", "sub-strokecase0003"]
    for i, cid in enumerate(ids):
        write_isles_case(root, cid, dwi, adc, mask, affine_for((2.0, 2.0, 2.0)), flat=i == 1)
    found = discover_isles22(root)
    assert [c.case_id for c in found] == ids
    for c in found:
        ses = root / "rawdata" / c.case_id / "ses-0001"
        images = ses if c.case_id == ids[1] else ses / "dwi"
        assert c.dwi == images / f"{c.case_id}_ses-0001_dwi.nii.gz"
        assert c.adc == images / f"{c.case_id}_ses-0001_adc.nii.gz"
        deriv = root / "derivatives" / c.case_id / "ses-0001"
        assert c.mask == deriv / f"{c.case_id}_ses-0001_msk.nii.gz"
        assert int(load_case(c).mask.sum()) == 8


# ----------------------------------------------------------------------------- the mapping itself


def test_to_original_maps_float16_probabilities_and_refuses_overshooting_orders():
    from sizepenalty.data.preprocess import Geometry, apply_box, crop_pad_box, resize

    rng = np.random.default_rng(3)
    prob = rng.random((8, 10, 12)).astype(np.float16)
    back = Geometry("resample", (9, 20, 24), ((0, 9, 0, 8), (0, 20, 0, 10), (0, 24, 0, 12)))
    up = back.to_original(prob, order=1)
    assert up.shape == (9, 20, 24) and up.dtype == np.float32
    assert prob.min() <= up.min() and up.max() <= prob.max()  # probabilities stay probabilities
    mask = back.to_original(prob > 0.5, order=0)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, resize((prob > 0.5).astype(np.uint8), (9, 20, 24), 0) > 0)
    with pytest.raises(ValueError, match="order must be 0 .* or 1"):
        back.to_original(prob, order=3)
    # crop_pad is exact for float maps: the box back in place, 0 where the crop cut.
    vol = rng.random((30, 10, 17)).astype(np.float32)
    box = crop_pad_box(vol.shape, (20, 16, 17), centre=np.array([18.0, 4.5, 8.0]))
    geometry = Geometry("crop_pad", vol.shape, box)
    out = geometry.to_original(apply_box(vol, box, (20, 16, 17)), order=1)
    np.testing.assert_array_equal(out[8:28], vol[8:28])
    assert not out[:8].any() and not out[28:].any()
