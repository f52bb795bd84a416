"""Nothing stale, nothing injected, nothing run twice (issue 24): input files recorded by content,
a study folder that moves, paths that are data, lesion-free cases that show.

The fast tests drive the stages by hand; the slow ones run tiny studies with Snakemake (and
change their data, move them, give them awkward paths).
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import tiny_config

from sizepenalty.cli import main
from sizepenalty.config import ConfigError, from_dict, load_config
from sizepenalty.data.cohort import read_case_sources, read_cases_tsv
from sizepenalty.paths import StudyLayout
from sizepenalty.provenance import DataPlan
from sizepenalty.runs import RunKey
from sizepenalty.stages import fingerprint

# ----------------------------------------------------------------------------- stages by hand


def _cohort_study(root: Path, study: str = "rel", cases: int = 6, **sections) -> tuple[Path, Path]:
    """A synthetic study made by hand in ``root`` (synth, cohort, preprocess, folds into the
    study layout): the config file and the study folder."""
    cfg = tiny_config(study, folds={"k": 3, "run": None}, **sections) | {"results": str(root)}
    c = root / f"{study}.yaml"
    c.write_text(yaml.safe_dump(cfg))
    L = StudyLayout(root / study)
    assert main(["synth", "-c", str(c), "--out", str(L.raw), "--cases", str(cases)]) == 0
    _stages(c, L)
    return c, L.root


def _stages(c: Path, L: StudyLayout) -> None:
    assert main(["cohort", "-c", str(c), "--out", str(L.cases)]) == 0
    assert main(["preprocess", "-c", str(c), "--cases", str(L.cases), "--out-dir",
                 str(L.preprocessed)]) == 0  # fmt: skip
    assert main(["folds", "-c", str(c), "--stats-dir", str(L.preprocessed), "--cases",
                 str(L.cases), "--out", str(L.folds)]) == 0  # fmt: skip


def _mask_of(L: StudyLayout, case: str) -> Path:
    return next(L.raw.glob(f"derivatives/{case}/ses-*/*_msk.nii.gz"))


def _rewrite(path: Path, change) -> None:
    """Replace a NIfTI's data by ``change(data)``, keeping its header."""
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(change(data).astype(data.dtype), img.affine, img.header), path)


def test_the_cohort_line_and_the_dataset_summary_name_the_lesion_free_cases(tmp_path, capsys):
    c, study = _cohort_study(tmp_path, cases=5)
    L = StudyLayout(study)
    _rewrite(_mask_of(L, "sub-strokecase0002"), np.zeros_like)
    capsys.readouterr()
    assert main(["cohort", "-c", str(c), "--out", str(L.cases)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "5 valid case(s), 0 skipped, 1 lesion-free (sub-strokecase0002)" in line, line
    _stages(c, L)
    out = tmp_path / "summary.csv"
    assert main(["summary", "-c", str(c), "--stats-dir", str(L.preprocessed), "--cases",
                 str(L.cases), "--out-csv", str(out), "--out-md", str(tmp_path / "s.md")]) == 0  # fmt: skip
    table = pd.read_csv(out).set_index("Property").iloc[:, 0]
    assert table["Lesion-free cases"] == "1: sub-strokecase0002"


def test_the_case_list_records_each_file_by_content_and_reads_the_study_copy_it_is_in(tmp_path):
    _, study = _cohort_study(tmp_path, cases=4)
    L = StudyLayout(study)
    rows = (L.cases).read_text().splitlines()
    header = rows[0].split("\t")
    assert header[:4] == ["case_id", "dwi", "adc", "mask"]
    # Files inside the study folder are listed relative to the list's folder ...
    first = dict(zip(header, rows[1].split("\t")))
    assert first["mask"].startswith("raw/derivatives/") and not Path(first["mask"]).is_absolute()
    # ... with their size, time and hash, and the case's reference volume (what folds deal by).
    (case,) = [c for c in read_cases_tsv(L.cases) if c.case_id == first["case_id"]]
    src = read_case_sources(L.cases)[case.case_id]
    assert src.files["mask"].sha256 == hashlib.sha256(case.mask.read_bytes()).hexdigest()
    stats = json.loads(L.preprocessed_case(case.case_id, "json").read_text())
    assert src.lesion_ml == stats["lesion_ml"] and stats["source"]["fingerprint"] == src.fingerprint
    # A copy of the study reads its own files, not the original's.
    copy = tmp_path / "elsewhere" / "rel"
    shutil.copytree(study, copy)
    shutil.rmtree(study)
    copied = read_cases_tsv(copy / "data" / "cases.tsv")
    assert all(copy in c.mask.resolve().parents and c.mask.exists() for c in copied)


def _plan(c: Path, study: Path) -> DataPlan:
    cfg = load_config(c)
    return DataPlan.load(cfg, StudyLayout(study), fingerprint(cfg, "preprocess"))


def _runs(plan: DataPlan, stage: str) -> dict[int, str]:
    return {f: plan.run(RunKey("D", "main", 42, f), stage) for f in range(3)}


def test_the_data_plan_follows_file_content_not_file_times(tmp_path):
    c, study = _cohort_study(tmp_path)
    L = StudyLayout(study)
    plan = _plan(c, study)
    # The folds it plans are those the folds job dealt.
    assert plan.folds == json.loads(L.folds.read_text())
    # Touched files (new times, same bytes): nothing changes.
    for case in read_cases_tsv(L.cases):
        os.utime(case.dwi, ns=(1, 1))
    touched = _plan(c, study)
    assert [touched.case(i) for i in plan.ids] == [plan.case(i) for i in plan.ids]
    assert _runs(touched, "train") == _runs(plan, "train") and touched.summary() == plan.summary()
    # A DWI with other values: that case's content changes, its volume and the folds do not.
    x = plan.ids[0]
    (case_x,) = [c for c in read_cases_tsv(L.cases) if c.case_id == x]
    _rewrite(case_x.dwi, lambda d: d * 0.5 + 3)
    dwi = _plan(c, study)
    assert dwi.case(x) != plan.case(x) and [dwi.case(i) for i in plan.ids[1:]] == [
        plan.case(i) for i in plan.ids[1:]]  # fmt: skip
    assert dwi.volumes() == plan.volumes() and dwi.folds == plan.folds
    fold_of = {f["fold"]: f for f in plan.folds["folds"]}
    for stage, roles in (("train", ("train", "val")), ("evaluate", ("val", "test"))):
        for f, value in _runs(dwi, stage).items():
            uses_x = any(x in fold_of[f][r] for r in roles)
            assert (value != _runs(plan, stage)[f]) == uses_x, (stage, f)
    # A corrected mask: a new volume, read from the file and planned into the folds.
    _rewrite(_mask_of(L, x), lambda m: np.where(np.cumsum(m.ravel()).reshape(m.shape) <= 3, m, 0))
    mask = _plan(c, study)
    assert mask.sources[x].lesion_ml < dwi.sources[x].lesion_ml and mask.volumes() != dwi.volumes()
    from sizepenalty.data.folds import make_folds

    cfg = load_config(c)
    volumes = {i: mask.sources[i].lesion_ml for i in mask.ids}
    assert mask.folds == make_folds(volumes, 3, cfg.folds.val_fraction, cfg.seeds.split)


def test_a_copied_study_plans_the_same_data_fingerprints(tmp_path):
    c, study = _cohort_study(tmp_path, cases=5)
    plan = _plan(c, study)
    # Copied without its times (every file new to the record), then the original removed.
    copy_root = tmp_path / "copy"
    shutil.copytree(study, copy_root / "rel", copy_function=shutil.copy)
    shutil.rmtree(study)
    moved = copy_root / "moved.yaml"
    moved.write_text(yaml.safe_dump(yaml.safe_load(c.read_text()) | {"results": str(copy_root)}))
    again = _plan(moved, copy_root / "rel")
    assert [again.case(i) for i in again.ids] == [plan.case(i) for i in plan.ids]
    assert again.summary() == plan.summary() and _runs(again, "infer") == _runs(plan, "infer")


def test_an_external_methods_job_follows_its_masks_and_its_folds_test_cases(tmp_path):
    c, study = _cohort_study(tmp_path, cases=6)
    L = StudyLayout(study)
    plan = _plan(c, study)
    folder = tmp_path / "nnunet"
    folder.mkdir()
    ids = plan.ids
    fold_of = {f["fold"]: f for f in plan.folds["folds"]}
    for cid in ids:  # a method's masks: the references themselves
        shutil.copy(_mask_of(L, cid), folder / f"{cid}.nii.gz")
    before = {f: plan.method(folder, f) for f in range(3)}
    # Touched files (same bytes): nothing changes.
    for p in folder.iterdir():
        os.utime(p, ns=(1, 1))
    assert {f: _plan(c, study).method(folder, f) for f in range(3)} == before
    # One rewritten mask, then its case's DWI: only the job of the fold testing on it changes.
    x = fold_of[0]["test"][0]
    _rewrite(folder / f"{x}.nii.gz", np.zeros_like)
    rewritten = {f: _plan(c, study).method(folder, f) for f in range(3)}
    assert [f for f in range(3) if rewritten[f] != before[f]] == [0]
    (case_x,) = [k for k in read_cases_tsv(L.cases) if k.case_id == x]
    _rewrite(case_x.dwi, lambda d: d * 0.5 + 3)
    dwi = {f: _plan(c, study).method(folder, f) for f in range(3)}
    assert [f for f in range(3) if dwi[f] != rewritten[f]] == [0]


def test_a_path_is_data_the_schema_refuses_only_what_no_shell_or_pattern_can_carry():
    odd = "my results/it's \"$(touch PWNED)\" `id` ; ü"
    assert from_dict({"results": odd}).results == odd
    for bad in ("a\nb", "a\rb", "a\x00b", "x{study}"):
        with pytest.raises(ConfigError, match="results: .* is not valid"):
            from_dict({"results": bad})
    with pytest.raises(ConfigError, match="dataset.path: .* is not valid"):
        from_dict({"dataset": {"source": "manifest", "path": "x\ny.csv"}})
    with pytest.raises(ConfigError, match="study: .* is not valid"):
        from_dict({"study": "my study"})


# ----------------------------------------------------------------------------- tiny studies


def _study_settings(study: str, **extra) -> dict:
    """Two combinations (one with SPL) x 3 folds x 1 seed, one epoch: fast, and a τ change
    reruns only the size-penalty arm."""
    return tiny_config(
        study,
        dataset={"synthetic": {"cases": 6, "shape": [16, 32, 32]}},
        folds={"k": 3, "run": None},
        seeds={"train": [42], "train_by_combo": {"DTS": [42]}},
        losses={"combinations": ["D", "DTS"]},
        train={"epochs": 1, "batch_size": 2, "patches_per_volume": 1, "patch_large": [8, 16, 16],
               "patch_small": [8, 8, 8], "workers": 0, "threads": 1},
        report={"pairs": [["D", "DTS"]], "curves": ["D", "DTS"], "bootstrap": 100},
    ) | extra  # fmt: skip


class Study:
    """A tiny study in a workflow copy: Snakemake runs in ``work`` with ``configfiles``."""

    def __init__(self, work: Path, folder: Path, configfiles: list[str]) -> None:
        self.work, self.folder, self.configfiles = work, folder, configfiles

    def snakemake(self, *args: str, also: tuple[str, ...] = (), timeout: int = 1800):
        """Snakemake with ``args`` (options, targets) and the study's configfiles, then ``also``."""
        import subprocess

        from workflow_helpers import SNAKEMAKE, snakemake_env

        cmd = [str(SNAKEMAKE), "--cores", "2", *args, "--configfile", *self.configfiles, *also]
        return subprocess.run(cmd, cwd=self.work, env=snakemake_env(), capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    def run(self, *args: str):
        out = self.snakemake(*args)
        assert out.returncode == 0, out.stderr[-4000:]
        return out

    @property
    def layout(self) -> StudyLayout:
        return StudyLayout(self.folder)

    def folds(self) -> dict:
        return {f["fold"]: f for f in json.loads(self.layout.folds.read_text())["folds"]}


def jobs_of(out) -> list[tuple[str, str]]:
    """The jobs a Snakemake run or dry run lists: (rule, what: the run id of a per-run job, the
    case of a preprocess job, else ''), sorted; the fingerprint stamps left out."""
    import re

    from sizepenalty.combos import canonical_name

    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", out.stdout + out.stderr):
        head = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if not head or head[1] == "fingerprint":
            continue
        wild = dict(re.findall(r"(\w+)=([^,\s]+)", (re.search(r"wildcards: (.*)", block) or [""])[0]))
        if "fold" in wild:
            what = RunKey(canonical_name(wild["combo"]), wild["variant"], int(wild["seed"]),
                          int(wild["fold"])).id  # fmt: skip
        else:
            what = wild.get("case", "")
        jobs.append((head[1], what))
    return sorted(jobs)


def expected_jobs(study: Study, changed: set[str], before: dict, cases: list[str]) -> list:
    """What a change of the cases ``changed`` reruns (see sizepenalty.provenance): their
    preprocessing, the folds, the summary, each training whose fold's training or validation
    cases hold one of them or whose split moved (folds ``before`` -> now), the inferences and
    evaluations of those trainings and of the runs that validate or test on one, the tables,
    figures and report."""
    after = study.folds()
    jobs = [("preprocess", c) for c in sorted(changed & set(cases))]
    jobs += [("folds", ""), ("dataset_summary", ""), ("aggregate", ""), ("figures", ""),
             ("report", ""), ("all", "")]  # fmt: skip
    for combo in ("D", "DTS"):
        for f, fold in after.items():
            key = RunKey(combo, "main", 42, f).id
            moved = before.get(f) != fold
            trains = moved or changed & set(fold["train"] + fold["val"])
            if trains:
                jobs.append(("train", key))
            if trains or changed & set(fold["val"] + fold["test"]):
                jobs += [("infer", key), ("evaluate", key)]
    return sorted(jobs)


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    """A finished tiny synthetic study (changed in place by the tests below, in file order)."""
    from workflow_helpers import copy_workflow

    work = copy_workflow(tmp_path_factory.mktemp("rel") / "wf")
    (work / "rel.yaml").write_text(yaml.safe_dump(_study_settings("rel")))
    study = Study(work, work / "results" / "rel", ["rel.yaml"])
    study.run()
    return study


def _change_and_rerun(study: Study, change) -> tuple[list, list, dict]:
    """Apply ``change``, then a dry run and a real run: the jobs each lists, and the folds
    before."""
    before = study.folds()
    change()
    dry = study.snakemake("-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    real = study.run()
    return jobs_of(dry), jobs_of(real), before


@pytest.mark.slow
def test_a_corrected_mask_reruns_its_case_and_exactly_what_reads_it(rel):
    L = rel.layout
    cases = [c.case_id for c in read_cases_tsv(L.cases)]
    x = max(cases, key=lambda c: read_case_sources(L.cases)[c].lesion_ml)  # the largest lesion
    old = pd.read_csv(L.per_case)
    report = L.report.stat().st_mtime_ns
    others = {c: L.preprocessed_case(c).stat().st_mtime_ns for c in cases if c != x}
    # The corrected annotation keeps 3 of its lesion voxels; the file keeps its old time stamp.
    mask = _mask_of(L, x)
    stamp = mask.stat().st_mtime_ns
    _rewrite(mask, lambda m: np.where(np.cumsum(m.ravel()).reshape(m.shape) <= 3, m, 0))
    os.utime(mask, ns=(stamp, stamp))
    planned, ran, before = _change_and_rerun(rel, lambda: None)
    assert planned == ran == expected_jobs(rel, {x}, before, cases), (planned, ran)
    assert ("preprocess", x) in ran and ("cohort", "") not in ran
    # The metrics score the corrected reference: 3 voxels where there were many.
    stats = json.loads(L.preprocessed_case(x, "json").read_text())
    assert stats["lesion_voxels"] == 3
    new, was = pd.read_csv(L.per_case), old[old.case_id == x]["vol_ref_ml"]
    assert np.allclose(new[new.case_id == x]["vol_ref_ml"], stats["lesion_ml"])
    assert (was > stats["lesion_ml"]).all() and len(was) == 2  # one test fold per combination
    assert L.report.stat().st_mtime_ns > report
    assert {c: L.preprocessed_case(c).stat().st_mtime_ns for c in others} == others
    # Nothing left to do.
    assert jobs_of(rel.snakemake("-n")) == []


@pytest.mark.slow
def test_a_changed_dwi_reruns_the_runs_that_train_validate_or_test_on_it(rel):
    L = rel.layout
    cases = [c.case_id for c in read_cases_tsv(L.cases)]
    (y,) = [c for c in read_cases_tsv(L.cases) if c.case_id == cases[4]]
    rng = np.random.default_rng(0)
    planned, ran, before = _change_and_rerun(
        rel, lambda: _rewrite(y.dwi, lambda d: rng.uniform(0, d.max() + 1, d.shape)))
    assert rel.folds() == before  # the reference did not change: neither did the folds
    assert planned == ran == expected_jobs(rel, {y.case_id}, before, cases), (planned, ran)
    # The run that tests on the case does not train on it: its training stays.
    (tested,) = [f for f, fold in before.items() if y.case_id in fold["test"]]
    assert ("train", RunKey("D", "main", 42, tested).id) not in ran
    assert ("evaluate", RunKey("D", "main", 42, tested).id) in ran


@pytest.mark.slow
def test_a_moved_study_reruns_what_a_change_reruns_in_place_and_never_reads_the_original(
    rel, tmp_path
):
    from mlflow.tracking import MlflowClient

    (rel.work / "tau.yaml").write_text(yaml.safe_dump({"losses": {"tau": 300}}))
    in_place = jobs_of(rel.snakemake("-n", also=("tau.yaml",)))
    assert ("train", "DTS/main/seed42/fold0") in in_place and ("train", "D/main/seed42/fold0") not in in_place
    # cp -a to another results folder, the original deleted.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(rel.folder, elsewhere / "rel", symlinks=True)
    shutil.rmtree(rel.folder)
    (rel.work / "moved.yaml").write_text(yaml.safe_dump({"results": str(elsewhere),
                                                         "losses": {"tau": 300}}))  # fmt: skip
    moved = Study(rel.work, elsewhere / "rel", ["rel.yaml", "moved.yaml"])
    assert jobs_of(moved.snakemake("-n")) == in_place
    assert jobs_of(moved.run()) == in_place
    assert not rel.folder.exists()  # nothing wrote to (or through) the original's folder
    assert jobs_of(moved.snakemake("-n")) == []
    # The copy's own files: its case list, and MLflow's artifacts under the copy.
    assert all(elsewhere in c.dwi.absolute().parents for c in read_cases_tsv(moved.layout.cases))
    client = MlflowClient(f"sqlite:///{elsewhere / 'rel' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sizepenalty")
    assert exp.artifact_location == (elsewhere / "rel" / "mlartifacts").as_uri()
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert all(r.info.artifact_uri.startswith(exp.artifact_location) for r in runs)


ODD = "odd $(touch PWNED) `touch PWNED2` it's \"q\" ü"


def _odd_manifest(root: Path, n: int = 6) -> Path:
    """An ``n``-case manifest whose folder, file names and manifest name need quoting."""
    import csv

    from sizepenalty.data.synth import SynthSpec, write_cohort

    raw = root / "raw"
    write_cohort(raw, n, seed=3, spec=SynthSpec(shape=(16, 32, 32)))
    data = root / f"data {ODD}"
    rows = []
    for sub in sorted((raw / "rawdata").iterdir()):
        row = {"case_id": sub.name}
        for kind, pattern in (("dwi", "rawdata/{s}/ses-*/dwi/*_dwi.nii.gz"),
                              ("adc", "rawdata/{s}/ses-*/dwi/*_adc.nii.gz"),
                              ("mask", "derivatives/{s}/ses-*/*_msk.nii.gz")):  # fmt: skip
            src = next(raw.glob(pattern.format(s=sub.name)))
            dst = data / f"{sub.name} {kind} 'x'.nii.gz"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            row[kind] = dst.name
        rows.append(row)
    shutil.rmtree(raw)
    manifest = data / f"cases {ODD}.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["case_id", "dwi", "adc", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """A tiny manifest study whose results folder, data folder, files and manifest have spaces,
    quotes, $( ), backticks and non-ASCII in their names."""
    from workflow_helpers import copy_workflow

    root = tmp_path_factory.mktemp("odd")
    work = copy_workflow(root / "wf")
    before = set(os.listdir(work))
    manifest = _odd_manifest(root)
    results = root / f"results {ODD}"
    settings = _study_settings("odd", dataset={"source": "manifest", "path": str(manifest)},
                               results=str(results))  # fmt: skip
    (work / "odd.yaml").write_text(yaml.safe_dump(settings))
    study = Study(work, results / "odd", ["odd.yaml"])
    out = study.snakemake()
    return study, root, before, manifest, out


@pytest.mark.slow
def test_odd_paths_are_data_a_study_in_them_runs_and_nothing_is_executed(odd):
    study, root, before, _, out = odd
    assert out.returncode == 0, out.stderr[-4000:]
    ran = [p for p in root.rglob("PWNED*") if p.name in ("PWNED", "PWNED2")]
    assert not ran and not Path("PWNED").exists(), f"a path was run as shell: {ran}"
    assert (study.folder / "report.html").exists()
    # Every log in the study; nothing beside it or in the working directory but Snakemake's own.
    assert sorted(os.listdir(study.folder.parent)) == ["odd"]
    assert set(os.listdir(study.work)) - before == {"odd.yaml", ".snakemake"}
    logs = list((study.folder / "logs").rglob("*.log"))
    assert len(logs) >= 20 and all(log.stat().st_size > 0 for log in logs if "train" in str(log))


@pytest.mark.slow
def test_an_edited_manifest_reruns_the_cases_it_changed_and_the_runs_it_moved(odd):
    import csv

    study, _, _, manifest, out = odd
    assert out.returncode == 0, out.stderr[-4000:]
    L = study.layout
    rows = list(csv.DictReader(open(manifest, newline="")))
    dropped, repointed = rows[1]["case_id"], rows[3]
    # The case's mask points at a new file: the old lesion shrunk to 3 voxels.
    new_mask = manifest.parent / f"corrected {ODD}.nii.gz"
    shutil.copy2(manifest.parent / repointed["mask"], new_mask)
    _rewrite(new_mask, lambda m: np.where(np.cumsum(m.ravel()).reshape(m.shape) <= 3, m, 0))
    repointed["mask"] = new_mask.name
    kept = [r for r in rows if r["case_id"] != dropped]

    def edit():
        with open(manifest, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["case_id", "dwi", "adc", "mask"])
            writer.writeheader()
            writer.writerows(kept)

    planned, ran, before = _change_and_rerun(study, edit)
    # The dry run checks the case list first (a checkpoint): what follows it depends on it.
    assert ("cohort", "") in planned
    cases = [r["case_id"] for r in kept]
    expected = expected_jobs(study, {repointed["case_id"]}, before, cases)
    assert ran == sorted([*expected, ("cohort", "")]), ran
    assert [c for rule, c in ran if rule == "preprocess"] == [repointed["case_id"]]
    per_case = pd.read_csv(L.per_case)
    assert dropped not in set(per_case.case_id) and set(per_case.case_id) == set(cases)
    assert jobs_of(study.snakemake("-n")) == []


# ----------------------------------------------------------------------------- stop signals


def _procs(work: Path, *needles: str) -> list[tuple[int, list[str]]]:
    """(pid, argv) of the processes working in ``work`` whose command line holds ``needles``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.path.realpath(os.readlink(entry / "cwd")) != os.path.realpath(work):
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue
        if all(any(n in a for a in argv) for n in needles):
            found.append((int(entry.name), argv))
    return found


def _wait_for(what, timeout: float = 600.0, every: float = 0.2):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def long_training(tmp_path_factory):
    """A tiny study whose one training runs long (many epochs), its data made."""
    from workflow_helpers import copy_workflow

    work = copy_workflow(tmp_path_factory.mktemp("sig") / "wf")
    settings = _study_settings("sig", losses={"combinations": ["D"]}, folds={"k": 2, "run": [0]},
                               report={"pairs": [], "curves": ["D"], "bootstrap": 100})  # fmt: skip
    settings["train"] |= {"epochs": 400, "patches_per_volume": 4}
    (work / "sig.yaml").write_text(yaml.safe_dump(settings))
    study = Study(work, work / "results" / "sig", ["sig.yaml"])
    study.run(*(str(p.relative_to(work)) for p in (study.layout.folds, study.layout.parent_run)))
    return study


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["warm worker", "no worker"])
def test_a_stop_signal_to_a_training_jobs_shell_stops_the_training_and_a_second_one_waits(
    long_training, worker
):
    """SIGTERM to the `bash -c` of a training job (what `pgrep -f "sizepenalty train"` finds
    first) reaches the training, which checkpoints and exits, and the job's log gets the
    attempts log as on any exit; while it runs, a second training of the same run folder stops
    at once and names the first."""
    import re
    import signal
    import subprocess

    from workflow_helpers import SNAKEMAKE, snakemake_env

    from sizepenalty.locks import hold_run_folder

    s, key = long_training, RunKey("D", "main", 42, 0)
    L = s.layout
    attempts = L.log("train", key.id + ".attempts")
    before = attempts.read_text() if attempts.exists() else ""
    env = {"SIZEPENALTY_WORKER": "0"} if worker == "no worker" else {}
    target = str(L.done(key).relative_to(s.work))  # as the rules name it
    cmd = [str(SNAKEMAKE), "--cores", "1", target, "--configfile", "sig.yaml"]
    run = subprocess.Popen(cmd, cwd=s.work, env=snakemake_env(**env), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        def training():
            assert run.poll() is None, run.stdout.read()[-3000:]  # Snakemake still runs
            return attempts.exists() and re.search(r"epoch \d+/400", attempts.read_text()[len(before):])

        _wait_for(training)
        ((shell, _),) = [p for p in _procs(s.work, "sizepenalty train") if "bash" in p[1][0]]
        # A second training of the run: refused at once, naming the first.
        ((client, argv),) = [p for p in _procs(s.work, "train", "--run-dir=")
                             if "bash" not in p[1][0]]  # fmt: skip
        second = subprocess.run(argv, cwd=s.work, env=snakemake_env(SIZEPENALTY_WORKER="0"),
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        assert second.returncode == 2, second.stderr[-2000:]
        assert "this run folder is in use by pid" in second.stderr and "kill " in second.stderr
        os.kill(shell, signal.SIGTERM)
        out, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    # The training stopped (its run folder is free again) after a checkpoint ...
    assert _wait_for(lambda: _free(L.run_dir(key)), timeout=120)
    log = attempts.read_text()[len(before):]
    assert "stopped by SIGTERM" in log and (L.run_dir(key) / "last.pt").exists(), log[-2000:]
    assert not _procs(s.work, "sizepenalty", "train")
    # ... and the job's log is the attempts log, as on every exit.
    assert L.log("train", key.id).read_text() == attempts.read_text()
    hold_run_folder(L.run_dir(key)).release()  # nobody holds it


def _free(run_dir: Path) -> bool:
    from sizepenalty.locks import FolderInUse, hold_run_folder

    try:
        hold_run_folder(run_dir).release()
    except FolderInUse:
        return False
    return True
