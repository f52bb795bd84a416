"""Data side: synthetic cohort, ingest + validation (one test per bad-input class), preprocessing, folds."""

import csv
import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import cli_cohort, train_within

from sizepenalty.cli import main
from sizepenalty.data.cohort import (
    CaseError,
    CaseFiles,
    CohortError,
    discover_isles22,
    load_case,
    read_manifest,
)
from sizepenalty.data.folds import FoldError, check_folds, make_folds
from sizepenalty.data.preprocess import (
    Geometry,
    apply_box,
    crop_pad_box,
    lesion_stats,
    load_preprocessed,
    mismatch,
    normalize,
    preprocess_case,
    save_preprocessed,
    to_nifti,
)
from sizepenalty.data.summary import dataset_summary, size_weight_rows
from sizepenalty.data.synth import (
    SynthSpec,
    _anatomy,
    case_paths,
    make_case,
    make_cohort,
    plan_cohort,
    write_cohort,
)
from sizepenalty.strata import bin_of, size_strata

SPEC = SynthSpec(shape=(16, 40, 32), spacing=(2.0, 2.0, 2.0))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    rows = write_cohort(root, 6, seed=7, spec=SPEC)
    return root, rows


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------- synthetic cohort


def test_synthetic_layout_and_participants(cohort):
    root, rows = cohort
    assert len(rows) == 6
    for r in rows:
        for p in case_paths(root, r["participant_id"]).values():
            assert p.is_file(), p
    assert (
        root / "rawdata/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz"
    ).is_file()
    assert (
        root / "derivatives/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_msk.nii.gz"
    ).is_file()
    tsv = pd.read_csv(root / "participants.tsv", sep="\t")
    assert list(tsv["participant_id"]) == [f"sub-strokecase{i:04d}" for i in range(1, 7)]
    assert list(tsv.columns) == [
        "participant_id",
        "case_type",
        "n_lesions",
        "lesion_voxels",
        "lesion_ml",
        "smallest_lesion_voxels",
        "largest_lesion_voxels",
    ]
    assert np.allclose(tsv["lesion_ml"], tsv["lesion_voxels"] * SPEC.voxel_ml, atol=1e-4)
    assert (tsv["smallest_lesion_voxels"] >= SPEC.min_lesion_voxels).all()


def test_synthetic_is_byte_identical_for_a_seed(cohort, tmp_path):
    root, _ = cohort
    again = tmp_path / "again"
    write_cohort(again, 6, seed=7, spec=SPEC)
    assert _digest(again) == _digest(root)
    other = tmp_path / "other"
    write_cohort(other, 6, seed=8, spec=SPEC)
    assert _digest(other) != _digest(root)


def test_synthetic_lesions_cover_every_stratum_and_are_disconnected(tmp_path):
    rows = write_cohort(tmp_path, 9, seed=3, spec=SPEC)
    strata = {bin_of(float(r["lesion_ml"]), [1.0, 5.0]) for r in rows}
    assert strata == {"< 1 mL", "1–5 mL", "≥ 5 mL"}
    assert np.mean([r["n_lesions"] for r in rows]) > 2.5
    assert max(r["n_lesions"] for r in rows) >= 4
    for r in rows:
        mask = nib.load(case_paths(tmp_path, r["participant_id"])["mask"]).get_fdata() > 0
        assert lesion_stats(mask, (2, 2, 2), connectivity=26)["n_lesions"] == r["n_lesions"]


def _cohort_stats(cases, spec):
    """Per-case totals (voxels) and per-lesion sizes from the masks (26-connectivity)."""
    import cc3d

    totals, counts, sizes = [], [], []
    for c in cases:
        labels, n = cc3d.connected_components(c.mask, connectivity=26, return_N=True)
        assert n == len(c.lesion_voxels), c.case_id  # disconnected as generated
        # ... and each one instance whatever connectivity the metrics use
        assert cc3d.connected_components(c.mask, connectivity=6, return_N=True)[1] == n
        counts.append(n)
        sizes += list(np.bincount(labels.ravel())[1:])
        totals.append(int(c.mask.sum()))
    return np.array(totals), np.array(counts), np.array(sizes)


@pytest.mark.parametrize("n_cases, seed", [(12, 42), (20, 42), (12, 1), (12, 7)])
def test_default_cohort_exercises_the_size_weight_and_the_strata(n_cases, seed):
    spec = SynthSpec()  # the defaults (dataset.synthetic in config.yaml)
    assert spec.voxel_ml == pytest.approx(0.008)  # ISLES's 2 mm voxel: τ = 600 voxels = 4.8 mL
    cases = make_cohort(n_cases, seed, spec)
    totals, counts, sizes = _cohort_stats(cases, spec)
    positive = totals[totals > 0]
    weight = np.exp(-positive / 600.0)
    quarter = int(np.ceil(len(positive) / 4))
    assert (weight > 0.6).sum() >= quarter
    assert (weight < 0.15).sum() >= quarter
    # Lesions are not at the 5-voxel removal size.
    assert np.mean(sizes < 10) <= 0.1
    assert abs(counts.mean() - spec.mean_lesions) <= 0.15 * spec.mean_lesions
    ml = totals * spec.voxel_ml
    sub_ml = ml[ml < 1.0]
    assert len(sub_ml) >= 2 and len(set(sub_ml.tolist())) == len(sub_ml)
    assert (ml < 5.0).sum() >= 3 and (ml >= 5.0).sum() >= 3
    # The reference shape: log-normal-ish from ~0.1 mL to tens of mL, median near τ.
    assert ml.min() >= spec.min_case_ml and ml.max() < 40.0
    assert 2.0 < np.median(ml) < 8.0 and 5.0 < ml.mean() < 15.0
    assert 1.0 < np.log(ml).std() < 2.0
    # Inside the parenchyma; the sub-mL cases are the punctate ones.
    parenchyma = _anatomy(spec.shape)["parenchyma"]
    for c, total in zip(cases, totals):
        assert not (c.mask.astype(bool) & ~parenchyma).any(), c.case_id
        assert (c.case_type == "punctate") == (total * spec.voxel_ml < 1.0), c.case_id


def test_cohort_plan_is_deterministic_and_reaches_the_planned_lesions():
    spec = SynthSpec()
    plans = plan_cohort(12, 42, spec)
    assert plans == plan_cohort(12, 42, spec) and plans != plan_cohort(12, 43, spec)
    assert sum(p.n_lesions for p in plans) == round(12 * spec.mean_lesions)
    cases = make_cohort(12, 42, spec)
    for p, c in zip(plans, cases):
        assert len(c.lesion_voxels) == p.n_lesions, c.case_id
        assert abs(int(c.mask.sum()) - p.total_voxels) <= 0.05 * p.total_voxels, c.case_id
        assert c.case_type == p.case_type


def test_cohort_plans_span_the_distribution_for_any_size_and_seed():
    spec = SynthSpec()
    for n in (6, 9, 12, 16, 20, 30):
        for seed in range(8):
            plans = plan_cohort(n, seed, spec)
            voxels = np.sort([p.total_voxels for p in plans])
            counts = [p.n_lesions for p in plans]
            assert voxels[0] * spec.voxel_ml < 1.0, (n, seed)
            assert abs(np.mean(counts) - spec.mean_lesions) <= 0.15 * spec.mean_lesions
            if n >= 12:  # margins left for what placement may shave off
                k = int(np.ceil(n / 4))
                assert voxels[1] * spec.voxel_ml < 1.0, (n, seed)
                small_end, large_end = np.exp(-voxels[k - 1] / 600), np.exp(-voxels[-k] / 600)
                assert small_end > 0.6 and large_end < 0.14, (n, seed)


def test_single_case_types_follow_their_volume_band():
    spec = SynthSpec()
    for index in range(1, 4):
        punctate = make_case(index, 5, spec, "punctate")
        territorial = make_case(index, 5, spec, "territorial")
        assert punctate.case_type == "punctate" and 0 < punctate.mask.sum() * spec.voxel_ml < 1.0
        assert territorial.mask.sum() * spec.voxel_ml >= 7.5
        assert territorial.lesion_voxels[0] > 0.5 * sum(territorial.lesion_voxels)  # dominant
        assert min(punctate.lesion_voxels + territorial.lesion_voxels) >= spec.min_lesion_voxels
    a, b = make_case(2, 5, spec, "scattered"), make_case(2, 5, spec, "scattered")
    assert np.array_equal(a.dwi, b.dwi) and np.array_equal(a.mask, b.mask)


def test_synthetic_lesions_are_dwi_bright_and_adc_dark(cohort):
    root, rows = cohort
    for r in rows:
        paths = case_paths(root, r["participant_id"])
        dwi, adc = (nib.load(paths[k]).get_fdata() for k in ("dwi", "adc"))
        mask = nib.load(paths["mask"]).get_fdata() > 0
        from scipy import ndimage

        ring = (
            ndimage.binary_dilation(mask, iterations=3)
            & ~ndimage.binary_dilation(mask, iterations=1)
            & (dwi > 100)
        )
        assert np.median(dwi[mask]) > 1.4 * np.median(dwi[ring])
        assert np.median(adc[mask]) < 0.8 * np.median(adc[ring])


def test_isles_reader_reads_synthetic_back(cohort):
    root, rows = cohort
    cases = discover_isles22(root)
    assert [c.case_id for c in cases] == [r["participant_id"] for r in rows]
    data = load_case(cases[0])
    assert data.dwi.shape == SPEC.shape  # (D, H, W)
    assert data.spacing == SPEC.spacing
    assert data.orig_shape == (32, 40, 16)  # as stored, (x, y, z)
    assert int(data.mask.sum()) == rows[0]["lesion_voxels"]


def test_isles_reader_ignores_flair_and_accepts_flat_session(cohort, tmp_path):
    root, _ = cohort
    copy = tmp_path / "isles"
    shutil.copytree(root, copy)
    # Real downloads carry FLAIR in anat/ (another space): it must be ignored.
    anat = copy / "rawdata/sub-strokecase0001/ses-0001/anat"
    anat.mkdir()
    (anat / "sub-strokecase0001_ses-0001_FLAIR.nii.gz").write_bytes(b"not read")
    # Some copies keep dwi/adc directly in ses-0001/.
    d = copy / "rawdata/sub-strokecase0002/ses-0001"
    for f in (d / "dwi").iterdir():
        f.rename(d / f.name)
    cases = {c.case_id: c for c in discover_isles22(copy)}
    load_case(cases["sub-strokecase0001"])
    load_case(cases["sub-strokecase0002"])


# ----------------------------------------------------------------------------- bad input, one class each


def _save(path: Path, arr: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(arr, np.eye(4) if affine is None else affine).to_filename(path)
    return path


def _manifest_case(tmp_path: Path, case_id: str = "case07", **override) -> Path:
    rng = np.random.default_rng(0)
    shape = (20, 18, 10)
    arrays = {
        "dwi": rng.random(shape).astype(np.float32),
        "adc": rng.random(shape).astype(np.float32),
        "mask": (rng.random(shape) > 0.9).astype(np.uint8),
    }
    affines = {k: np.diag([2.0, 2.0, 2.0, 1.0]) for k in arrays}
    for key, value in override.items():
        if key.endswith("_affine"):
            affines[key[:-7]] = value
        else:
            arrays[key] = value
    rows = []
    for k in ("dwi", "adc", "mask"):
        if arrays[k] is not None:
            _save(tmp_path / "data" / f"{case_id}_{k}.nii.gz", arrays[k], affines[k])
        rows.append(f"data/{case_id}_{k}.nii.gz")
    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,dwi,adc,mask\n" + f"{case_id}," + ",".join(rows) + "\n")
    return manifest


def _run_stage(
    tmp_path: Path, manifest: Path, capsys, extra_cfg: dict | None = None
) -> tuple[int, str, Path]:
    cfg = {
        "study": "t",
        "results": str(tmp_path / "results"),
        "dataset": {"source": "manifest", "path": str(manifest), **(extra_cfg or {})},
    }
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "results" / "cases.tsv"
    rc = main(["cohort", "--config", str(cfg_path), "--out", str(out)])
    return rc, capsys.readouterr().err, out


BAD_CASES = {
    "missing file": ({"adc": None}, "ADC file not found", "case07_adc.nii.gz"),
    "real 4D": (
        {"dwi": np.zeros((20, 18, 10, 3), np.float32)},
        "DWI must be a 3D volume, got shape (20,18,10,3)",
        "case07_dwi.nii.gz",
    ),
    "ADC shape": (
        {"adc": np.zeros((16, 18, 10), np.float32)},
        "ADC shape (16,18,10) != DWI shape (20,18,10)",
        "case07_adc.nii.gz",
    ),
    "mask shape": (
        {"mask": np.zeros((20, 18, 9), np.uint8)},
        "mask shape (20,18,9) != DWI shape (20,18,10)",
        "case07_mask.nii.gz",
    ),
    "affine": (
        {"adc_affine": np.diag([2.0, 2.0, 2.5, 1.0])},
        "ADC affine differs from the DWI affine",
        "case07_adc.nii.gz",
    ),
    "non-finite": (
        {"dwi": np.full((20, 18, 10), np.nan, np.float32)},
        "DWI has 3600 non-finite value(s)",
        "case07_dwi.nii.gz",
    ),
    "non-binary": (
        {"mask": np.full((20, 18, 10), 2, np.uint8)},
        "mask is not binary: values {2}",
        "case07_mask.nii.gz",
    ),
    "fractional mask": (
        {"mask": np.full((20, 18, 10), 0.5, np.float32)},
        "mask is not binary: values {0.5}",
        "case07_mask.nii.gz",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_bad_case_is_named_and_nothing_is_written(name, tmp_path, capsys):
    override, problem, filename = BAD_CASES[name]
    manifest = _manifest_case(tmp_path, **override)
    rc, err, out = _run_stage(tmp_path, manifest, capsys)
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert "case07: " + problem in line
    assert filename in line
    assert len(err.strip().splitlines()) == 1  # one clear line, no traceback
    assert not out.exists()


def test_unreadable_nifti_is_named(tmp_path, capsys):
    manifest = _manifest_case(tmp_path)
    (tmp_path / "data/case07_dwi.nii.gz").write_bytes(b"\x1f\x8b garbage that is not gzip")
    rc, err, out = _run_stage(tmp_path, manifest, capsys)
    assert (
        rc == 2 and "case07: DWI is not a readable NIfTI file" in err and "case07_dwi.nii.gz" in err
    )
    assert not out.exists()


def test_trailing_singleton_is_fine_and_label_map_binarised_on_request(tmp_path, capsys):
    shape = (20, 18, 10)
    label_map = np.zeros(shape, np.uint8)
    label_map[2:4, 2:4, 2:4] = 3
    manifest = _manifest_case(tmp_path, dwi=np.ones(shape + (1,), np.float32), mask=label_map)
    rc, err, _ = _run_stage(tmp_path, manifest, capsys)
    assert rc == 2 and "binarize_labels" in err
    rc, err, out = _run_stage(tmp_path, manifest, capsys, {"binarize_labels": True})
    assert rc == 0, err
    case = load_case(read_manifest(manifest)[0], binarize_labels=True)
    assert case.mask.max() == 1 and case.mask.sum() == 8


def test_manifest_problems_are_named(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("case_id,dwi,adc\nx,a,b\n")
    with pytest.raises(CohortError, match="missing column.*mask"):
        read_manifest(bad)
    bad.write_text("case_id,dwi,adc,mask\nx,a,b,c\nx,a,b,c\n")
    with pytest.raises(CohortError, match="m.csv:3: duplicate case_id 'x'"):
        read_manifest(bad)
    bad.write_bytes(b"case_id,dwi,adc,mask\n\xff\xfe,a,b,c\n")
    with pytest.raises(CohortError, match="m.csv: manifest is not UTF-8"):
        read_manifest(bad)


def test_manifest_saved_by_a_spreadsheet_with_a_byte_order_mark(tmp_path):
    bom = tmp_path / "excel.csv"
    bom.write_bytes("\ufeffcase_id,dwi,adc,mask\r\nc1,d.nii.gz,a.nii.gz,m.nii.gz\r\n".encode())
    (case,) = read_manifest(bom)
    assert case.case_id == "c1" and case.dwi == tmp_path / "d.nii.gz"


def test_skip_invalid_lists_and_skips(tmp_path, capsys, cohort):
    root, rows = cohort
    copy = tmp_path / "isles"
    shutil.copytree(root, copy)
    bad = case_paths(copy, "sub-strokecase0003")["adc"]
    _save(bad, np.zeros((10, 10, 10), np.float32))
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"dataset": {"source": "isles22", "path": str(copy)}}))
    out = tmp_path / "cases.tsv"
    assert main(["cohort", "-c", str(cfg_path), "--out", str(out)]) == 2
    assert (
        "sub-strokecase0003: ADC shape (10,10,10) != DWI shape (32,40,16)"
        in capsys.readouterr().err
    )
    assert not out.exists()
    assert main(["cohort", "-c", str(cfg_path), "--out", str(out), "--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert "skipped invalid case: sub-strokecase0003" in err
    ids = [r["case_id"] for r in csv.DictReader(open(out), delimiter="\t")]
    assert "sub-strokecase0003" not in ids and len(ids) == 5


def test_preprocess_stops_before_writing_on_a_bad_case(tmp_path, capsys, cohort):
    root, _ = cohort
    copy = tmp_path / "isles"
    shutil.copytree(root, copy)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "dataset": {"source": "isles22", "path": str(copy)},
                "preprocess": {"shape": [16, 40, 32]},
                "train": train_within([16, 40, 32]),
            }
        )
    )
    cases = tmp_path / "cases.tsv"
    assert main(["cohort", "-c", str(cfg_path), "--out", str(cases)]) == 0
    mask = case_paths(copy, "sub-strokecase0005")["mask"]
    arr = nib.load(mask).get_fdata()
    arr[0, 0, 0] = np.inf
    _save(mask, arr.astype(np.float32), nib.load(mask).affine)
    out = tmp_path / "pre"
    assert (
        main(["preprocess", "-c", str(cfg_path), "--cases", str(cases), "--out-dir", str(out)]) == 2
    )
    assert "sub-strokecase0005: mask has 1 non-finite value(s)" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- preprocessing numerics


def test_normalize_clips_percentiles_and_scales():
    v = np.arange(101, dtype=np.float32)  # percentiles are exact on 0..100
    n = normalize(v, (1.0, 99.0))
    assert n[0] == 0.0 and n[1] == 0.0 and n[99] == 1.0 and n[100] == 1.0
    assert n[50] == pytest.approx((50 - 1) / 98)
    assert normalize(np.full((3, 3), 7.0)).max() == 0.0


def test_mismatch_formula():
    dwi = np.array([0.9, 0.9, 0.2, 0.5], np.float32)
    adc = np.array([0.1, 0.9, 0.1, 1.5], np.float32)
    np.testing.assert_allclose(
        mismatch(dwi, adc), [0.9 * 0.9, 0.9 * 0.1, 0.2 * 0.9, 0.0], rtol=1e-6
    )


def test_crop_pad_box_and_roundtrip():
    rng = np.random.default_rng(1)
    vol = (rng.random((30, 10, 17)) > 0.8).astype(np.uint8)
    target = (20, 16, 17)
    box = crop_pad_box(vol.shape, target, centre=np.array([18.0, 4.5, 8.0]))
    assert box[0] == (8, 28, 0, 20)  # cropped around the centre
    assert box[1] == (0, 10, 3, 13)  # padded symmetrically
    out = apply_box(vol, box, target)
    back = Geometry("crop_pad", vol.shape, box).to_original(out)
    np.testing.assert_array_equal(back[8:28], vol[8:28])


def test_preprocess_geometry_roundtrip_to_original_nifti(cohort, tmp_path):
    root, _ = cohort
    case = load_case(discover_isles22(root)[2])
    pre = preprocess_case(case, (20, 36, 36), "crop_pad")
    assert pre.image.shape == (3, 20, 36, 36) and pre.mask.shape == (20, 36, 36)
    assert pre.lesion_voxels_outside == 0
    np.testing.assert_allclose(pre.image[2], mismatch(pre.image[0], pre.image[1]), rtol=1e-6)
    save_preprocessed(tmp_path / "c.npz", pre)
    again = load_preprocessed(tmp_path / "c.npz")
    np.testing.assert_array_equal(again.mask, pre.mask)
    img = to_nifti(again.mask, again)
    orig = nib.load(case_paths(root, case.case_id)["mask"])
    assert img.shape == orig.shape
    np.testing.assert_allclose(img.affine, orig.affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(orig.dataobj))


def test_resample_mode_changes_spacing_and_maps_back():
    mask = np.zeros((8, 16, 16), np.uint8)
    mask[2:6, 4:12, 4:8] = 1
    from sizepenalty.data.cohort import CaseData

    case = CaseData(
        "c",
        mask.astype(np.float32) + 1,
        mask.astype(np.float32) + 1,
        mask,
        np.eye(4),
        (6.0, 2.0, 2.0),
        (16, 16, 8),
    )
    pre = preprocess_case(case, (16, 32, 32), "resample")
    assert pre.spacing == (3.0, 1.0, 1.0)
    assert pre.mask.sum() == mask.sum() * 8
    np.testing.assert_array_equal(pre.geometry.to_original(pre.mask), mask)


# ----------------------------------------------------------------------------- folds and summary


def test_folds_are_deterministic_and_disjoint():
    vols = {f"c{i:02d}": float(i % 7) for i in range(23)}
    a = make_folds(vols, k=5, val_fraction=0.1, seed=1)
    assert a == make_folds(vols, k=5, val_fraction=0.1, seed=1)
    check_folds(a)
    tested = sorted(c for f in a["folds"] for c in f["test"])
    assert tested == sorted(vols)
    for f in a["folds"]:
        assert len(f["val"]) == 2 and len(f["train"]) + len(f["val"]) + len(f["test"]) == 23
    assert make_folds(vols, k=5, seed=2) != a


def test_stratified_folds_spread_volumes():
    vols = {f"c{i:02d}": float(i) for i in range(20)}
    folds = make_folds(vols, k=5, assignment="stratified", seed=0)
    for f in folds["folds"]:
        v = sorted(vols[c] for c in f["test"])
        assert v[0] < 5 and v[-1] >= 15  # each test set spans small to large


def _manifest_cohort(tmp_path: Path, ids: list[str]) -> Path:
    """A manifest listing tiny valid cases in the order of ``ids`` (lesion volume varies)."""
    rows = []
    for i, cid in enumerate(ids):
        mask = np.zeros((6, 6, 4), np.uint8)
        mask.flat[: 1 + (i * 7) % 13] = 1
        for kind, arr in (("dwi", mask + 1.0), ("adc", 2.0 - mask), ("mask", mask)):
            _save(tmp_path / "data" / f"{cid}_{kind}.nii.gz", arr, np.diag([2.0, 2.0, 2.0, 1.0]))
        rows.append(f"{cid}," + ",".join(f"data/{cid}_{k}.nii.gz" for k in ("dwi", "adc", "mask")))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case_id,dwi,adc,mask\n" + "\n".join(rows) + "\n")
    return manifest


def test_sequential_folds_of_a_20_case_manifest_are_its_blocks_in_manifest_order(tmp_path):
    from sizepenalty.config import from_dict
    from sizepenalty.data.cohort import run_cohort
    from sizepenalty.data.folds import run_folds
    from sizepenalty.data.preprocess import run_preprocess

    # Manifest order is not id order: the folds must follow the manifest.
    ids = [f"p{(i * 7) % 20:02d}" for i in range(20)]
    cfg = from_dict(
        {
            "results": str(tmp_path / "results"),
            "dataset": {"source": "manifest", "path": str(_manifest_cohort(tmp_path, ids))},
            "preprocess": {"shape": [4, 6, 6]},
            "train": train_within([4, 6, 6]),
            "folds": {"k": 10, "val_fraction": 0.1, "assignment": "sequential"},
        }
    )
    cases, pre = tmp_path / "cases.tsv", tmp_path / "pre"
    run_cohort(cfg, cases)
    assert [r["case_id"] for r in csv.DictReader(open(cases), delimiter="\t")] == ids
    run_preprocess(cfg, cases, pre)
    folds = run_folds(cfg, pre, tmp_path / "folds.json", cases)
    assert folds["assignment"] == "sequential"
    for f, fold in enumerate(folds["folds"]):
        test = ids[2 * f : 2 * f + 2]  # block f
        val = [ids[(2 * f + 2) % 20], ids[(2 * f + 3) % 20]]  # the block after it, cyclically
        assert fold["test"] == test and fold["val"] == val, f
        assert fold["train"] == [c for c in ids if c not in test + val]
    with pytest.raises(FoldError, match="sequential follows the manifest order.*--cases"):
        run_folds(cfg, pre, tmp_path / "other.json")


def test_sequential_blocks_when_k_does_not_divide_the_cases():
    ids = [f"m{i:02d}" for i in range(23)][::-1]  # manifest order, reversed ids
    folds = make_folds({c: 1.0 for c in ids}, k=5, val_fraction=0.1, assignment="sequential")
    check_folds(folds)
    # The first 23 mod 5 = 3 blocks hold 5 cases, the other two 4; validation: the 2 cases after.
    starts, sizes = [0, 5, 10, 15, 19], [5, 5, 5, 4, 4]
    for fold, start, size in zip(folds["folds"], starts, sizes):
        assert fold["test"] == ids[start : start + size]
        assert fold["val"] == [ids[(start + size) % 23], ids[(start + size + 1) % 23]]
    assert folds["folds"][4]["val"] == ids[:2]  # wraps from the last case to the first
    assert make_folds({c: 1.0 for c in ids}, k=5, seed=7, assignment="sequential") == folds | {
        "seed": 7
    }  # no randomness


def test_stratified_and_random_folds_are_the_same_as_before_the_assignment_option():
    # Pinned from the folds of before `folds.assignment` (stratify: true / false) for this input:
    # the default study's split must not move.
    vols = {f"case{i:02d}": round(((i * 37) % 23) * 0.7, 1) for i in range(20)}
    expected = {
        ("stratified", 10): (
            [5, 2, 3, 7, 1, 6, 6, 2, 3, 8, 0, 5, 4, 0, 4, 7, 9, 9, 1, 8],
            [[4, 8], [6, 15], [6, 10], [7, 11], [0, 19], [4, 13], [3, 12], [8, 17], [11, 15],
             [9, 18]],
        ),
        ("stratified", 5): (
            [4, 0, 0, 4, 2, 2, 1, 3, 0, 4, 3, 3, 0, 3, 2, 1, 2, 1, 1, 4],
            [[5, 19], [2, 11], [6, 15], [9, 18], [8, 12]],
        ),
        ("random", 5): (
            [2, 1, 3, 4, 3, 0, 0, 2, 4, 3, 1, 2, 1, 0, 4, 0, 1, 2, 4, 3],
            [[7, 18], [0, 8], [3, 8], [3, 13], [5, 9]],
        ),
    }  # fmt: skip
    shuffled = dict(sorted(vols.items(), key=lambda kv: -kv[1]))  # another manifest order
    for (assignment, k), (test_of, val) in expected.items():
        folds = make_folds(vols, k=k, val_fraction=0.1, seed=42, assignment=assignment)
        assert folds == make_folds(shuffled, k=k, val_fraction=0.1, seed=42, assignment=assignment)
        got = {c: f["fold"] for f in folds["folds"] for c in f["test"]}
        assert [got[c] for c in sorted(vols)] == test_of, (assignment, k)
        assert [[int(c[4:]) for c in f["val"]] for f in folds["folds"]] == val, (assignment, k)
    with pytest.raises(FoldError, match="folds.assignment 'shuffled': expected one of"):
        make_folds(vols, assignment="shuffled")


def test_too_few_cases_is_a_clear_error():
    with pytest.raises(FoldError, match="3 case\\(s\\) are too few for 5 folds"):
        make_folds({"a": 1, "b": 2, "c": 3}, k=5)


def test_dataset_summary_counts_strata():
    stats = pd.DataFrame(
        {
            "lesion_ml": [0.5, 2.0, 7.0, 0.0],
            "n_lesions": [1, 3, 5, 0],
            "shape": ["4x4x4"] * 4,
            "spacing": ["2x2x2"] * 4,
            "voxel_ml": [0.008] * 4,
        }
    )
    folds = make_folds({"a": 0.1, "b": 2, "c": 3, "d": 4, "e": 9, "f": 0.3}, k=3, val_fraction=0.2)
    table = dataset_summary(stats, size_strata([5.0], [1.0]), folds=folds, trained=[0, 2])
    table = table.set_index("Property")["dataset"]
    # The thesis's bins: "< 5 mL" holds the sub-mL cases; "< 1 mL" is a subset of it.
    assert table["Cases"] == "4" and table["Cases < 5 mL"] == "3" and table["Cases ≥ 5 mL"] == "1"
    assert table["Cases < 1 mL (subset)"] == "2"
    assert table["Lesions per case, mean"] == "2.25"
    assert table["Fold 0: train / val / test cases"] == "3 / 1 / 2"
    assert "Fold 1: train / val / test cases" not in table  # not trained


def test_dataset_summary_shows_the_size_weight_spread():
    voxels = [50, 100, 300, 600, 1200, 2400, 0]
    stats = pd.DataFrame(
        {
            "lesion_ml": [v * 0.008 for v in voxels],
            "lesion_voxels": voxels,
            "n_lesions": [1, 2, 3, 4, 5, 6, 0],
            "shape": ["4x4x4"] * 7,
            "spacing": ["2x2x2"] * 7,
            "voxel_ml": [0.008] * 7,
        }
    )
    table = dataset_summary(stats, size_strata([5.0], [1.0]), tau=600)
    table = table.set_index("Property")["dataset"]
    assert table["SPL size scale τ"] == "600 voxels = 4.80 mL"
    spread = [float(x) for x in table[SPREAD].split(" / ")]
    w = np.exp(-np.array(voxels[:-1]) / 600.0)  # the lesion-free case is left out
    assert spread == pytest.approx([w.min(), *np.quantile(w, [0.25, 0.5, 0.75]), w.max()], abs=1e-3)
    assert table["Cases with size weight > 0.6"] == "3 of 6"
    assert table["Cases with size weight < 0.15"] == "2 of 6"
    # τ is a parameter: a larger one pushes every weight up (the old cohort's flat ~1 weights).
    flat = dict(size_weight_rows(voxels, tau=6000))
    assert flat["Cases with size weight > 0.6"] == "6 of 6"
    assert dict(size_weight_rows([0, 0], tau=600))["Size weight exp(-V_g/τ)"] == (
        "no lesion-positive cases"
    )


SPREAD = "Size weight exp(-V_g/τ), min / 25% / median / 75% / max"


def test_cli_data_chain(tmp_path, capsys):
    cfg = {
        "study": "s",
        "results": str(tmp_path),
        "dataset": {"synthetic": {"cases": 6, "shape": [16, 40, 32]}},
        "preprocess": {"shape": [16, 40, 32]},
        "train": train_within([16, 40, 32]),
        "folds": {"k": 3, "run": None},
    }
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(cfg))
    cli_cohort(c, tmp_path, tmp_path / "s/data/raw", 6, "--seed", "1")
    assert (
        main(
            [
                "summary",
                "-c",
                str(c),
                "--stats-dir",
                str(tmp_path / "pre"),
                "--out-csv",
                str(tmp_path / "s.csv"),
                "--out-md",
                str(tmp_path / "s.md"),
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "pre").glob("*.npz"))) == 6
    md = (tmp_path / "s.md").read_text()
    assert "Cases" in md and "Cases with size weight > 0.6" in md and "600 voxels" in md
    with pytest.raises(CaseError):
        load_case(CaseFiles("x", tmp_path / "none", tmp_path / "none", tmp_path / "none"))
