"""Thesis-scale presets: valid on top of config.yaml, and a 185-case ISLES 2022 DAG builds fast."""

import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, copy_workflow, snakemake_env

from sizepenalty.config import deep_merge, from_dict

PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _merged(preset: Path) -> dict:
    # Snakemake reads config.yaml (the Snakefile's configfile) and then merges --configfile on top.
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    return deep_merge(base, yaml.safe_load(preset.read_text()))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_is_valid_and_thesis_scale(preset, tmp_path):
    raw = _merged(preset)
    raw["dataset"]["path"] = str(tmp_path)  # the configured data path must exist to validate
    (tmp_path / "rawdata").mkdir()
    if raw["dataset"]["source"] == "manifest":
        (tmp_path / "manifest.csv").write_text("case_id,dwi,adc,mask\n")
        raw["dataset"]["path"] = str(tmp_path / "manifest.csv")
    cfg = from_dict(raw, source=preset.name)
    assert (cfg.model.base_filters, cfg.model.depth, cfg.model.dropout) == (32, 5, 0.2)
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.train.lr) == (18, 400, 3e-4)
    assert cfg.train.patches_per_volume == 10 and cfg.train.patch_small == (32, 64, 64)
    assert (
        cfg.infer.tta and cfg.infer.overlap_for("DTS") == 0.75 and cfg.infer.overlap_for("D") == 0.5
    )
    assert cfg.losses.size_warmup == 0 and cfg.model.prior_prob == 0.5  # the thesis's training
    assert len(cfg.combo_names) == 14 and cfg.folds.k == 5
    expected = {
        "isles22": ((72, 112, 112), (32, 112, 112)),
        "cohort": ((32, 256, 256), (32, 128, 128)),
    }
    assert (cfg.preprocess.shape, cfg.infer.roi) == expected[preset.stem]


def _isles_layout(root: Path, n: int) -> None:
    """``n`` tiny cases in the ISLES 2022 BIDS layout (what the reader walks, nothing more)."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    vol = np.zeros((6, 6, 4), np.float32)
    mask = np.zeros((6, 6, 4), np.uint8)
    mask[2:4, 2:4, 1:3] = 1
    for i in range(1, n + 1):
        sub = f"sub-strokecase{i:04d}"
        raw = root / "rawdata" / sub / "ses-0001" / "dwi"
        der = root / "derivatives" / sub / "ses-0001"
        raw.mkdir(parents=True)
        der.mkdir(parents=True)
        for kind, data in (("dwi", vol + 1), ("adc", vol + 2)):
            nib.save(nib.Nifti1Image(data, affine), raw / f"{sub}_ses-0001_{kind}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), der / f"{sub}_ses-0001_msk.nii.gz")


@pytest.mark.slow
def test_isles22_preset_dag_for_185_cases_builds_in_under_5_s(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    shutil_root = tmp_path / "ISLES-2022"
    _isles_layout(shutil_root, 185)
    (work / "data.yaml").write_text(yaml.safe_dump({"dataset": {"path": str(shutil_root)}}))
    cmd = [str(SNAKEMAKE), "--configfile", str(ROOT / "presets/isles22.yaml"), "data.yaml"]
    # The case list comes from the cohort checkpoint (it validates every file): run it first, as the
    # real study does, so the dry run below plans the whole study rather than stopping there.
    out = subprocess.run([*cmd, "--cores", "1", "results/isles22/data/cases.tsv"], cwd=work,
                         env=snakemake_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    t0 = time.perf_counter()
    dry = subprocess.run([*cmd, "-n", "--quiet", "rules"], cwd=work, env=snakemake_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    elapsed = time.perf_counter() - t0
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = {}
    for line in (dry.stdout + dry.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts.get("preprocess") == 185, counts
    assert counts.get("train") == counts.get("infer") == counts.get("evaluate") == 70, counts
    print(f"dry run of the 185-case ISLES 2022 study: {elapsed:.2f} s")
    assert elapsed < 5.0, f"dry run took {elapsed:.1f} s"
