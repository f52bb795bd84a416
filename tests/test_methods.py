"""Any method's predictions through the study's analysis: `sizepenalty evaluate` on folders, and
external methods listed in a study (`methods:`). The methods here are the tiny study's own
predictions (tests/study_helpers.py), so their tables must be the study's."""

import json
import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from study_helpers import add_methods, run_stage
from workflow_helpers import SNAKEMAKE, copy_workflow, snakemake_env, tiny_config

from sizepenalty.cli import main
from sizepenalty.config import open_study
from sizepenalty.methods import EXTERNAL, METHOD_SEED
from sizepenalty.paths import TABLES, StudyLayout
from sizepenalty.runs import StudyPlan


def merged_predictions(L, arm, folder, name="{}_pred.nii.gz"):
    """Every test prediction of an arm (all folds) in one folder, as another tool's output."""
    folder.mkdir(parents=True)
    plan = StudyPlan(open_study(L.root)[0])
    for key in plan.runs(plan.arm(arm)):
        for f in L.predictions(plan.canonical(key, "evaluate")).glob("*_pred.nii.gz"):
            shutil.copy(f, folder / name.format(f.name.removesuffix("_pred.nii.gz")))
    return folder


def table(folder, name):
    try:
        return pd.read_csv(folder / f"{name}.csv")
    except pd.errors.EmptyDataError:  # a table without rows or columns (no pair, no variant)
        return pd.DataFrame()


def without_epochs(frame):
    """A table without its Epochs columns: a method has no training."""
    return frame.drop(columns=[c for c in frame.columns if c.startswith("Epochs")])


RUN_ONLY = ["combo", "variant", "seed", "threshold", "best_epoch"]


def evaluate(*argv):
    return main(["evaluate", *argv])


def test_two_method_folders_give_the_studys_own_tables_with_its_folds_file(used_study, tmp_path):
    L, out = used_study, tmp_path / "out"
    dtf = merged_predictions(L, "DTF", tmp_path / "dtf")
    dts = merged_predictions(L, "DTS", tmp_path / "dts", "{}.nii.gz")  # nnU-Net's naming
    assert evaluate("--reference", str(L.raw), "--method", f"DTF={dtf}", "--method", f"DTS={dts}",
                    "--folds", str(L.folds), "--config", str(L.root), "--out", str(out)) == 0  # fmt: skip
    mine, study = StudyLayout(out), L
    for name in TABLES:  # every table, statistics included, equal to the study's own
        pd.testing.assert_frame_equal(without_epochs(table(mine.tables, name)),
                                      without_epochs(table(study.tables, name)), obj=name)  # fmt: skip
    assert len(table(mine.tables, "table_pairs")) and len(table(mine.tables, "table_seeds"))
    cases = pd.read_csv(mine.per_case)
    theirs = pd.read_csv(study.per_case)
    assert set(cases["variant"]) == {EXTERNAL} and set(cases["seed"]) == {METHOD_SEED}
    assert (cases["combo"] == cases["arm"]).all()
    pd.testing.assert_frame_equal(cases.drop(columns=RUN_ONLY, errors="ignore"),
                                  theirs.drop(columns=RUN_ONLY))  # fmt: skip
    lesions = pd.read_csv(mine.per_lesion).drop(columns=["combo", "variant", "seed"])
    pd.testing.assert_frame_equal(lesions, pd.read_csv(study.per_lesion).drop(columns=["combo", "variant", "seed"]))
    for name in ("fig_forest", "fig_volume", "fig_5_1_improvement", "fig_gallery_1"):
        assert mine.figure(name).stat().st_size > 1000
    report = mine.report.read_text()
    assert "Evaluation of DTF, DTS" in report and "taken as final binary masks" in report
    assert "DTS vs DTF, &lt; 5 mL" in report  # the findings, from the same statistics


def reference_folder(L, folder):
    """The study's reference masks as a plain folder of <case>.nii.gz."""
    folder.mkdir()
    for mask in (L.raw / "derivatives").rglob("*_msk.nii.gz"):
        shutil.copy(mask, folder / f"{mask.name.split('_ses-')[0]}.nii.gz")
    return folder


def test_without_a_folds_file_every_case_is_one_fold_and_the_first_method_the_baseline(
    used_study, tmp_path
):
    L, out = used_study, tmp_path / "out"
    refs = reference_folder(L, tmp_path / "refs")
    spl = merged_predictions(L, "DTS", tmp_path / "spl")
    base = merged_predictions(L, "DTF", tmp_path / "base", "{}.nii.gz")
    assert evaluate("--reference", str(refs), "--method", f"nnunet={base}",
                    "--method", f"spl-dts={spl}", "--out", str(out)) == 0  # fmt: skip
    cases = pd.read_csv(StudyLayout(out).per_case)
    assert set(cases["fold"]) == {0} and sorted(set(cases["arm"])) == ["nnunet", "spl-dts"]
    assert len(cases) == 12  # 6 cases x 2 methods
    main_table = table(StudyLayout(out).tables, "table_main")
    assert list(main_table["Loss"]) == ["nnunet", "spl-dts"] and set(main_table["folds"]) == {1}
    assert "Epochs" not in main_table
    pairs = table(StudyLayout(out).tables, "table_pairs")
    assert set(zip(pairs["Baseline"], pairs["Candidate"])) == {("nnunet", "spl-dts")}
    # The same masks scored per case as the study scored them (its folds do not change a value).
    study = pd.read_csv(L.per_case).set_index(["arm", "case_id"])
    renamed = cases.replace({"arm": {"nnunet": "DTF", "spl-dts": "DTS"}}).set_index(["arm", "case_id"])
    for metric in ("dice", "rve", "pq", "fp_overlap", "assd_mm", "ref_ml"):
        pd.testing.assert_series_equal(renamed[metric].sort_index(), study[metric].sort_index())
    # Another metric profile runs through the same tables (ISLES 2022's definitions).
    isles = tmp_path / "isles"
    assert evaluate("--reference", str(refs), "--method", f"nnunet={base}", "--method",
                    f"spl-dts={spl}", "--profile", "isles22", "--out", str(isles)) == 0  # fmt: skip
    main_isles = table(StudyLayout(isles).tables, "table_main")
    assert {"Dice", "Lesion F1"} <= set(main_isles.columns) and "PQ" not in main_isles
    assert "avd_ml" in pd.read_csv(StudyLayout(isles).per_case)


def test_unmatched_missing_and_off_grid_predictions_are_named(used_study, tmp_path, capsys):
    L = used_study
    refs = reference_folder(L, tmp_path / "refs")
    good = merged_predictions(L, "DTS", tmp_path / "good")

    def variant(name, change):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        change(folder)
        return folder

    case = "sub-strokecase0002"
    ref = nib.load(refs / f"{case}.nii.gz")

    def write(folder, data, affine=ref.affine):
        nib.save(nib.Nifti1Image(data, affine), folder / f"{case}_pred.nii.gz")

    shifted = ref.affine.copy()
    shifted[0, 3] += 2.0
    folders = {
        "missing": variant("missing", lambda f: (f / f"{case}_pred.nii.gz").unlink()),
        "extra": variant("extra", lambda f: shutil.copy(f / f"{case}_pred.nii.gz", f / "sub-x_pred.nii.gz")),
        "shape": variant("shape", lambda f: write(f, np.zeros((32, 32, 15), np.uint8))),
        "affine": variant("affine", lambda f: write(f, np.asarray(ref.dataobj), shifted)),
        "probabilities": variant("probabilities", lambda f: write(f, np.full(ref.shape, 0.4, np.float32))),
    }  # fmt: skip
    expected = {
        "missing": f"method x: no mask of case(s) {case} in {folders['missing']}",
        "extra": "method x: sub-x_pred.nii.gz (case sub-x) matches no reference case",
        "shape": f"method x, case {case}: mask shape (32,32,15) != the reference's (32,32,16)",
        "affine": f"method x, case {case}: mask affine differs from the reference's by up to 2",
        "probabilities": f"method x, case {case}: mask is not binary",
    }
    for name, folder in folders.items():
        assert evaluate("--reference", str(refs), "--method", f"x={folder}", "--out",
                        str(tmp_path / "out")) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert expected[name] in err and len(err.splitlines()) == 1, (name, err)
    for argv, message in [
        (["--method", f"NNU={good}"], "--method 'NNU=" ),
        (["--method", f"x={good}", "--method", f"x={good}"], "--method x: given twice"),
        (["--method", f"x={good}", "--pair", "x", "y"], "--pair x y: 'y' is not a --method (x)"),
        (["--method", f"x={good}", "--fold", "0"], "--fold selects folds of a folds file: give --folds"),
        (["--method", f"x={good}", "--gt", str(refs / f"{case}.nii.gz")], "give --gt and --pred"),
    ]:  # fmt: skip
        assert evaluate("--reference", str(refs), "--out", str(tmp_path / "o2"), *argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    # The one-pair mode is as it was; folder options do not mix into it.
    pair = ["--gt", str(refs / f"{case}.nii.gz"), "--pred", str(good / f"{case}_pred.nii.gz")]
    assert evaluate(*pair, "--json") == 0
    assert 0 <= json.loads(capsys.readouterr().out)["dice"] <= 1
    assert evaluate(*pair, "--folds", str(L.folds)) == 2
    assert "--folds is for prediction folders" in capsys.readouterr().err


def test_an_external_method_in_a_study_appears_beside_its_arms(used_study, tmp_path):
    L = StudyLayout(tmp_path / "study")
    shutil.copytree(used_study.root, L.root)  # a copy: the shared study stays as it is
    for path in L.root.rglob("config.effective.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["results"] = str(tmp_path)
        raw["study"] = "study"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    copy = merged_predictions(L, "DTS", tmp_path / "copy", "{}.nii.gz")
    methods = {"copy": {"path": str(copy), "description": "DTS's own masks, as another tool's"}}
    add_methods(L, methods, report={"pairs": [["DTF", "DTS"], ["DTS", "copy"]], "curves": ["DTS"],
                                    "bootstrap": 200})  # fmt: skip
    cases = pd.read_csv(L.per_case)
    mine = cases[cases["arm"] == "copy"].set_index(["fold", "case_id"])
    dts = cases[cases["arm"] == "DTS"].set_index(["fold", "case_id"])
    assert set(mine["variant"]) == {EXTERNAL} and set(mine["seed"]) == {METHOD_SEED}
    assert mine["threshold"].isna().all() and mine["best_epoch"].isna().all()
    for metric in ("dice", "rve", "pq", "fn_overlap", "assd_mm", "ref_ml", "stratum"):
        pd.testing.assert_series_equal(mine[metric], dts[metric])
    main_table = table(L.tables, "table_main").set_index("Loss")
    assert list(main_table.index) == ["DTF", "DTS", "copy"]
    assert main_table.loc["copy", "Dice"] == main_table.loc["DTS", "Dice"]
    pairs = table(L.tables, "table_pairs")
    same = pairs[(pairs["Baseline"] == "DTS") & (pairs["Candidate"] == "copy")]
    assert len(same) and (same["Delta"] == 0).all() and (same["Case mean diff"] == 0).all()
    lesions = table(L.tables, "table_lesions")
    assert "copy" in set(lesions["Loss"])
    # figures (an overlay of the method's masks) and the report pick it up
    c = str(L.effective_config)
    run_stage("figures", "-c", c, "--out-dir", str(L.figures))
    run_stage("report", "-c", c, "--tables-dir", str(L.tables), "--figures-dir", str(L.figures),
              "--out", str(L.report))  # fmt: skip
    assert L.figure("fig_gallery_2").stat().st_size > 1000
    report = L.report.read_text()
    assert "External methods" in report and "DTS&#x27;s own masks" in report


def test_the_method_rule_names_a_missing_or_off_grid_mask(used_study, tmp_path, capsys):
    L = used_study
    folder = merged_predictions(L, "DTS", tmp_path / "m")
    raw = yaml.safe_load(L.effective_config.read_text())
    raw["methods"] = {"m": {"path": str(folder)}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    test = json.loads(L.folds.read_text())["folds"][0]["test"]
    (folder / f"{test[0]}_pred.nii.gz").unlink()
    args = ["evaluate-method", "-c", str(config), "--method", "m", "--fold", "0", "--folds",
            str(L.folds), "--pre-dir", str(L.preprocessed), "--out", str(tmp_path / "f.csv")]  # fmt: skip
    assert main(args) == 2
    assert f"method m: no mask of case(s) {test[0]} in {folder}" in capsys.readouterr().err
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), folder / f"{test[0]}.nii.gz")
    assert main(args) == 2
    assert f"method m, case {test[0]}: mask shape (2,2,2) != the reference's" in capsys.readouterr().err
    assert not (tmp_path / "f.csv").exists()


def test_the_workflow_plans_one_method_job_per_fold_before_the_aggregate(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    (tmp_path / "preds").mkdir()  # a missing folder: Snakemake names it as the rule's missing input
    raw = tiny_config("m", losses={"combinations": ["DTS"]},
                      methods={"nnunet": {"path": str(tmp_path / "preds")}},
                      report={"pairs": [["DTS", "nnunet"]], "curves": ["DTS"]})  # fmt: skip
    (work / "m.yaml").write_text(yaml.safe_dump(raw))
    out = subprocess.run([str(SNAKEMAKE), "-n", "--configfile", "m.yaml"], cwd=work,
                         env=snakemake_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout, flags=re.MULTILINE))
    assert jobs.get("method") == "2" and jobs.get("aggregate") == "1", out.stdout[-3000:]
    assert "results/m/metrics/methods/nnunet/fold1.csv" in out.stdout
