"""`sizepenalty predict`: a study's models applied to new cases (tests/study_helpers.py's tiny
study that ran: DTF and DTS, 2 folds). One run on its fold's test cases gives the study's own test
predictions; an ensemble averages its runs' maps; every output is on its input's own grid."""

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from test_geometry import affine_for, phantom

from sizepenalty.cli import main
from sizepenalty.config import open_study
from sizepenalty.data.cohort import CaseFiles, read_cases_tsv
from sizepenalty.data.folds import load_fold
from sizepenalty.data.io import atomic_path
from sizepenalty.errors import InputError
from sizepenalty.evaluate import PostProcessing, best_threshold, binarize, validation_counts
from sizepenalty.metrics.instances import label_instances
from sizepenalty.paths import StudyLayout
from sizepenalty.predict import build_ensemble, predict_case, select_runs
from sizepenalty.runs import RunKey, StudyPlan


def predict(study, out, *extra):
    return main(["predict", "--study", str(study), "--out", str(out), *extra])


def new_cases(L, tmp_path, ids):
    """A manifest of some of the study's cases as new cases: images only, no mask column."""
    manifest = tmp_path / "new.csv"
    rows = [c for c in read_cases_tsv(L.cases) if c.case_id in ids]
    manifest.write_text("case_id,dwi,adc\n" + "".join(f"{c.case_id},{c.dwi},{c.adc}\n" for c in rows))
    return manifest


def volume(path):
    return np.asarray(nib.load(path).dataobj)


@pytest.mark.parametrize(("arm", "fold"), [("DTS", 0), ("DTF", 1)])
def test_one_runs_prediction_of_its_folds_test_cases_is_the_studys_own(used_study, tmp_path, arm, fold):
    L = used_study
    test = load_fold(L.folds, fold)["test"]
    out = tmp_path / "out"
    args = ["--arm", arm, "--seed", "42", "--fold", str(fold), "--cases", str(new_cases(L, tmp_path, test))]
    assert predict(L.root, out, *args) == 0
    key = RunKey(arm, "main", 42, fold)
    for cid in test:
        ours = nib.load(out / f"{cid}_pred.nii.gz")
        theirs = nib.load(L.predictions(key) / f"{cid}_pred.nii.gz")
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours.affine, theirs.affine)
        study = np.asarray(theirs.dataobj)
        assert 0 < study.sum() < study.size  # a mask that depends on every voxel's probability
        np.testing.assert_array_equal(np.asarray(ours.dataobj), study)
    # The volume and lesion count printed per case are the study's predicted ones.
    table = pd.read_csv(out / "predictions.csv")
    metrics = pd.read_csv(L.metrics(key)).set_index("case_id")
    assert list(table["case_id"]) == test
    for r in table.itertuples():
        assert r.volume_ml == pytest.approx(metrics.loc[r.case_id, "vol_pred_ml"], rel=1e-12)
        assert r.lesions == metrics.loc[r.case_id, "n_pred"]
        assert r.threshold == json.loads(L.threshold(key).read_text())["threshold"]


def test_the_ensemble_averages_its_runs_maps_at_a_threshold_reselected_on_their_pooled_validation(
    used_study, tmp_path
):
    L, cid = used_study, "sub-strokecase0001"
    probs = {}
    for name, folds in (("fold0", ["--fold", "0"]), ("fold1", ["--fold", "1"]), ("both", [])):
        args = ["--arm", "DTS", *folds, "--cases", str(L.raw), "--case", cid]  # an ISLES root
        assert predict(L.effective_config, tmp_path / name, *args) == 0
        probs[name] = volume(tmp_path / name / f"{cid}_prob.nii.gz")
    np.testing.assert_array_equal(probs["both"], (probs["fold0"] + probs["fold1"]) / 2)
    # The threshold: the study's candidates by pooled Dice over both runs' own validation maps.
    plan = StudyPlan(open_study(L.root)[0])
    view = plan.job(RunKey("DTS"), "evaluate").config
    counts = [validation_counts(view, load_fold(L.folds, k)["val"], L.probs(RunKey("DTS", fold=k)),
                                L.preprocessed) for k in (0, 1)]  # fmt: skip
    t, dice = best_threshold({t: tuple(np.add(counts[0][t], counts[1][t])) for t in counts[0]})
    record = json.loads((tmp_path / "both/predict.json").read_text())
    assert record["threshold"] == t and record["val_dice"] == {str(k): v for k, v in dice.items()}
    assert set(record["runs"]) == {"DTS/main/seed42/fold0", "DTS/main/seed42/fold1"}
    expected = binarize(probs["both"], t, PostProcessing.from_config(view))
    np.testing.assert_array_equal(volume(tmp_path / "both" / f"{cid}_pred.nii.gz"), expected)


def test_a_rerun_resumes_a_killed_job_and_another_setting_may_not_write_into_its_folder(
    used_study, tmp_path, monkeypatch, capsys
):
    import sizepenalty.predict as predict_module

    L, out = used_study, tmp_path / "out"
    a, b = load_fold(L.folds, 0)["test"][:2]
    args = ["--arm", "DTS", "--fold", "0", "--cases", str(L.raw), "--case", a, "--case", b]
    real = predict_module.save_nifti_atomic

    def killed_while_writing_bs_mask(img, path):
        if Path(path).name == f"{b}_pred.nii.gz":
            with atomic_path(path) as tmp:
                img.to_filename(str(tmp))
                raise KeyboardInterrupt  # mid-write: the temporary exists, the mask not yet
        real(img, path)

    monkeypatch.setattr(predict_module, "save_nifti_atomic", killed_while_writing_bs_mask)
    assert predict(L.root, out, *args) == 130
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{a}_pred.nii.gz", f"{a}_prob.nii.gz", f"{b}_prob.nii.gz", "predict.json", "predictions.csv"]
    )  # no partial file: b is not done, its probability map is rewritten on resume
    assert list(pd.read_csv(out / "predictions.csv")["case_id"]) == [a]
    monkeypatch.undo()
    before = (out / f"{a}_pred.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert predict(L.root, out, *args) == 0
    captured = capsys.readouterr()
    assert f"{a}: " in captured.out and "(written before)" in captured.out.split(f"{a}: ")[1].splitlines()[0]
    assert (out / f"{a}_pred.nii.gz").stat().st_mtime_ns == before  # skipped, not rewritten
    assert list(pd.read_csv(out / "predictions.csv")["case_id"]) == [a, b]
    assert f"predict [{'#' * 24}] 2/2 {b}" in captured.err  # the progress bar, on stderr
    reference = tmp_path / "straight"
    assert predict(L.root, reference, *args) == 0
    for cid in (a, b):
        np.testing.assert_array_equal(volume(out / f"{cid}_pred.nii.gz"),
                                      volume(reference / f"{cid}_pred.nii.gz"))  # fmt: skip
    capsys.readouterr()
    assert predict(L.root, out, *args[:2], "--fold", "1", *args[4:]) == 2
    err = capsys.readouterr().err
    assert "predict.json: the folder holds predictions of another setting" in err
    assert "runs" in err and len(err.strip().splitlines()) == 1


def copy_case(L, cid, folder, name):
    """A study case's DWI and ADC as ``<name>_dwi.nii.gz`` / ``<name>_adc.nii.gz``."""
    (case,) = [c for c in read_cases_tsv(L.cases) if c.case_id == cid]
    for kind, src in (("dwi", case.dwi), ("adc", case.adc)):
        (folder / f"{name}_{kind}.nii.gz").write_bytes(Path(src).read_bytes())


def test_an_invalid_case_stops_the_job_before_any_output_or_is_named_and_skipped(
    used_study, tmp_path, capsys
):
    L, folder, out = used_study, tmp_path / "new", tmp_path / "out"
    folder.mkdir()
    copy_case(L, "sub-strokecase0001", folder, "good")
    copy_case(L, "sub-strokecase0002", folder, "bad")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), folder / "bad_adc.nii.gz")
    copy_case(L, "sub-strokecase0003", folder, "alone")
    (folder / "alone_adc.nii.gz").unlink()
    args = ["--arm", "DTS", "--fold", "0", "--cases", str(folder)]
    assert predict(L.root, out, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sizepenalty predict: error: alone: ADC file not found [{folder / 'alone_adc.nii.gz'}]"
    assert not out.exists()  # every case is validated before anything is written
    assert predict(L.root, out, *args, "--skip-invalid") == 0
    captured = capsys.readouterr()
    assert "skipped invalid case: alone: ADC file not found" in captured.err
    assert "skipped invalid case: bad: ADC shape (4,4,4) != DWI shape" in captured.err
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["good_pred.nii.gz", "good_prob.nii.gz"]
    assert list(pd.read_csv(out / "predictions.csv")["case_id"]) == ["good"]


def test_a_bad_study_arm_run_or_case_is_named(used_study, tmp_path, capsys):
    L = used_study
    cases = ["--cases", str(L.raw)]
    bare = tmp_path / "bare"  # a study folder with its config and nothing it made
    bare.mkdir()
    (bare / "config.effective.yaml").write_text(L.effective_config.read_text())
    for study, args, message in [
        (L.root, ["--arm", "FSD"], "'FSD' is not an arm of this study (arms: DTF, DTS)"),
        (L.root, ["--arm", "DTS", "--fold", "3"], "--fold 3: arm DTS runs folds 0, 1"),
        (L.root, ["--arm", "DTS", "--seed", "7"], "--seed 7: arm DTS runs seeds 42"),
        (L.root, ["--arm", "DTS", "--case", "sub-x"], "--case sub-x: not among the 6 input case(s)"),
        (bare, ["--arm", "DTS"], f"DTS seed 42 fold 0: no trained model {bare}/runs/DTS/main/seed42/fold0/best.pt"),
        (tmp_path / "nowhere", ["--arm", "DTS"], "not a study's results folder"),
    ] + ([] if torch.cuda.is_available() else [
        (L.root, ["--arm", "DTS", "--device", "cuda"], "--device cuda: no usable CUDA device"),
    ]):  # fmt: skip
        assert predict(study, tmp_path / "out", *args, *cases) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_cases_to_predict_come_from_an_isles_root_a_manifest_or_a_folder_of_pairs(tmp_path):
    from sizepenalty.predict import PredictError, discover_inputs

    isles = tmp_path / "ISLES"  # images only: a new cohort has no derivatives/
    for cid in ("sub-b", "sub-a"):
        folder = isles / "rawdata" / cid / "ses-0001" / "dwi"
        folder.mkdir(parents=True)
        for kind in ("dwi", "adc"):
            (folder / f"{cid}_ses-0001_{kind}.nii.gz").touch()
    found = discover_inputs(isles)
    assert [c.case_id for c in found] == ["sub-a", "sub-b"] and all(c.mask is None for c in found)
    manifest = tmp_path / "m.csv"
    manifest.write_text("case_id,dwi,adc,mask\nx,x_dwi.nii.gz,x_adc.nii.gz,\n")  # mask ignored
    (case,) = discover_inputs(manifest)
    assert (case.case_id, case.dwi, case.adc, case.mask) == ("x", tmp_path / "x_dwi.nii.gz",
                                                           tmp_path / "x_adc.nii.gz", None)  # fmt: skip
    manifest.write_text("case_id,dwi\nx,x_dwi.nii.gz\n")
    with pytest.raises(InputError, match=r"m.csv: manifest is missing column\(s\) adc; expected case_id,dwi,adc$"):
        discover_inputs(manifest)
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for name in ("p1_dwi.nii.gz", "p1_adc.nii.gz", "p2_dwi.nii", "p2_adc.nii.gz", "p3_dwi.nii.gz", "notes.txt"):
        (pairs / name).touch()
    found = {c.case_id: c for c in discover_inputs(pairs)}
    assert sorted(found) == ["p1", "p2", "p3"] and found["p2"].dwi.name == "p2_dwi.nii"
    assert found["p3"].adc == pairs / "p3_adc.nii.gz"  # missing: its validation names the file
    (pairs / "p1_dwi.nii").touch()
    with pytest.raises(PredictError, match="case p1 has two DWI files"):
        discover_inputs(pairs)
    with pytest.raises(PredictError, match="no <case>_dwi.nii.gz / <case>_adc.nii.gz files"):
        discover_inputs(tmp_path / "ISLES" / "rawdata")
    with pytest.raises(PredictError, match="no such file or folder"):
        discover_inputs(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- the input's geometry


def write_pair(folder, cid, shape, spacing, lesion, flip_x, codes, seed):
    """``<cid>_dwi`` / ``<cid>_adc`` of an ellipsoidal brain with a DWI-bright, ADC-dark lesion,
    the header's qform and sform codes ``codes``: the lesion mask and the affine."""
    dwi, adc, _ = phantom(shape, radii=(shape[0] * 0.4, shape[1] * 0.4, shape[2] * 0.4), seed=seed)
    mask = np.zeros(shape, np.uint8)
    mask[lesion] = 1
    dwi[mask > 0], adc[mask > 0] = 1400.0, 350.0
    affine = affine_for(spacing, origin=(-40.0 + seed, 12.0, -7.5 * seed), flip_x=flip_x)
    for kind, data in (("dwi", dwi), ("adc", adc)):
        img = nib.Nifti1Image(data.transpose(2, 1, 0), affine)
        img.set_qform(affine, code=codes[0])
        img.set_sform(affine, code=codes[1])
        nib.save(img, folder / f"{cid}_{kind}.nii.gz")
    return mask, affine


# Another grid than the study's preprocess.shape (16x32x32): larger and smaller on each axis,
# mixed voxel sizes in one folder, both x orientations, both header layouts of an affine.
GRIDS = {
    "big": ((20, 40, 36), (2.0, 2.0, 2.0), np.s_[8:12, 17:23, 15:21], True, (1, 1)),
    "thin": ((14, 64, 64), (2.0, 1.0, 1.0), np.s_[5:9, 28:37, 29:36], False, (1, 0)),
    "flat": ((16, 24, 48), (3.0, 1.5, 1.5), np.s_[6:10, 10:14, 21:28], False, (0, 2)),
}


def lesion_probabilities(image):
    """Stands in for a model: 1 where the mismatch channel says lesion (DWI bright, ADC dark)."""
    return (image[2] > 0.35).astype(np.float32)


@pytest.mark.parametrize("mode", ["crop_pad", "resample"])
def test_each_mask_comes_back_on_its_inputs_grid_affine_and_orientation(used_study, tmp_path, mode):
    cfg, root = open_study(used_study.root)
    cfg = replace(cfg, preprocess=replace(cfg.preprocess, mode=mode))
    plan = StudyPlan(cfg)
    ens = build_ensemble(plan, StudyLayout(root), select_runs(plan, "DTS", folds=[0]))
    ens = replace(ens, threshold=0.5)  # the stand-in's maps are 0/1 on the preprocessed grid
    folder, out = tmp_path / "new", tmp_path / "out"
    folder.mkdir()
    for i, (cid, (shape, spacing, lesion, flip, codes)) in enumerate(GRIDS.items()):
        mask, affine = write_pair(folder, cid, shape, spacing, lesion, flip, codes, seed=i)
        files = CaseFiles(cid, folder / f"{cid}_dwi.nii.gz", folder / f"{cid}_adc.nii.gz", None)
        summary = predict_case(files, cfg, lesion_probabilities, ens, out)
        given = nib.load(files.dwi)
        for kind in ("pred", "prob"):
            img = nib.load(out / f"{cid}_{kind}.nii.gz")
            assert img.shape == shape[::-1]
            np.testing.assert_allclose(img.affine, affine, atol=1e-5)
            np.testing.assert_allclose(img.header.get_zooms(), spacing[::-1])
            assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(affine)
            for form in ("qform", "sform"):
                assert int(img.header[f"{form}_code"]) == int(given.header[f"{form}_code"])
                np.testing.assert_allclose(getattr(img.header, f"get_{form}")(),
                                           getattr(given.header, f"get_{form}")(), atol=1e-5)  # fmt: skip
        pred = volume(out / f"{cid}_pred.nii.gz").transpose(2, 1, 0)
        prob = volume(out / f"{cid}_prob.nii.gz").transpose(2, 1, 0)
        assert pred.dtype == np.uint8 and prob.dtype == np.float32
        assert prob.min() >= 0 and prob.max() <= 1
        if mode == "crop_pad":  # exact: the lesion is inside the crop
            np.testing.assert_array_equal(pred, mask)
        else:  # resized there and back
            dice = 2 * (pred & mask).sum() / (pred.sum() + mask.sum())
            assert dice > 0.8, (cid, dice)
        assert summary.voxels == int(pred.sum())
        assert summary.volume_ml == pytest.approx(pred.sum() * np.prod(spacing) / 1000)
        assert summary.lesions == label_instances(pred, 26)[1] == 1


def test_the_trained_model_predicts_inputs_of_other_grids_in_their_own_geometry(used_study, tmp_path):
    L, folder, out = used_study, tmp_path / "new", tmp_path / "out"
    folder.mkdir()
    for i, (cid, (shape, spacing, lesion, flip, codes)) in enumerate(GRIDS.items()):
        write_pair(folder, cid, shape, spacing, lesion, flip, codes, seed=i)
    assert predict(L.root, out, "--arm", "DTF", "--cases", str(folder), "--device", "cpu") == 0
    record = json.loads((out / "predict.json").read_text())
    post = PostProcessing(record["post_processing"]["min_size"], record["post_processing"]["connectivity"])
    table = pd.read_csv(out / "predictions.csv").set_index("case_id")
    assert sorted(table.index) == sorted(GRIDS)
    for cid, (shape, spacing, *_) in GRIDS.items():
        pred, prob = (nib.load(out / f"{cid}_{k}.nii.gz") for k in ("pred", "prob"))
        assert pred.shape == prob.shape == shape[::-1]
        np.testing.assert_allclose(pred.affine, nib.load(folder / f"{cid}_dwi.nii.gz").affine, atol=1e-5)
        mask = np.asarray(pred.dataobj)
        np.testing.assert_array_equal(mask, binarize(np.asarray(prob.dataobj), record["threshold"], post))
        assert table.loc[cid, "voxels"] == mask.sum()
        assert table.loc[cid, "volume_ml"] == pytest.approx(mask.sum() * np.prod(spacing) / 1000)
        assert table.loc[cid, "lesions"] == label_instances(mask, 26)[1]
