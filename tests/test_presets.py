"""Thesis-scale presets: valid on top of config.yaml, and a 185-case ISLES 2022 DAG plans the
thesis's protocol. (How long planning takes is measured by bench/bench_dag.py, not asserted.)"""

import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, isles22_study, snakemake_env

from sizepenalty.config import deep_merge, from_dict

THESIS_SCALE = [ROOT / "presets" / f"{name}.yaml" for name in ("cohort", "isles22")]
ABLATIONS = ROOT / "presets" / "ablations.yaml"


def _merged(preset: Path) -> dict:
    # Snakemake reads config.yaml (the Snakefile's configfile) and then merges --configfile on top.
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    return deep_merge(base, yaml.safe_load(preset.read_text()))


def test_every_preset_is_tested():
    assert sorted((ROOT / "presets").glob("*.yaml")) == sorted([*THESIS_SCALE, ABLATIONS])


@pytest.mark.parametrize("preset", THESIS_SCALE, ids=lambda p: p.stem)
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
    assert cfg.losses.size["size_warmup"] == 0 and cfg.model.prior_prob == 0.5  # thesis training
    assert len(cfg.combo_names) == 14
    # the thesis trained each combination once (config.yaml's three seeds do not apply)
    assert {cfg.seeds.train_of(c) for c in cfg.combo_names} == {(42,)}
    assert cfg.train.validation.mode == "patches"  # §4.4: ten patches per validation volume
    # 80/10/10 as the thesis: a 10-fold rule, 5 folds run on its cohort, one split on ISLES 2022.
    assert (cfg.folds.k, cfg.folds.val_fraction) == (10, 0.1)
    assert cfg.folds.trained == {"isles22": (0,), "cohort": (0, 1, 2, 3, 4)}[preset.stem]
    rule = cfg.metrics.instance_rule  # panoptica's matching, as in the thesis
    assert (rule.connectivity, rule.threshold, rule.strict) == (26, 0.5, False)
    assert [s.label for s in cfg.metrics.strata] == ["< 5 mL", "≥ 5 mL", "< 1 mL"]
    expected = {
        "isles22": ((72, 112, 112), (32, 112, 112)),
        "cohort": ((32, 256, 256), (32, 128, 128)),
    }
    assert (cfg.preprocess.shape, cfg.infer.roi) == expected[preset.stem]


@pytest.mark.parametrize("preset", THESIS_SCALE, ids=lambda p: p.stem)
def test_a_subset_of_a_presets_combinations_runs(preset, tmp_path):
    # configfiles merge recursively: the preset's per-combination overlaps cannot be removed, so
    # those of combinations the study does not run must simply not apply.
    raw = deep_merge(_merged(preset), {"losses": {"combinations": ["DTS", "DTF"]}})
    raw["dataset"] = {"source": "synthetic"}
    cfg = from_dict(raw, source=preset.name)
    assert cfg.combo_names == ("DTS", "DTF") and set(cfg.infer.overlap_by_combo) == {"DTS"}
    assert cfg.infer.overlap_for("DTS") == 0.75 and cfg.infer.overlap_for("DTF") == 0.5


@pytest.mark.slow
def test_isles22_preset_dag_for_185_cases_plans_one_80_10_10_split(tmp_path):
    work, cmd = isles22_study(tmp_path, 185)
    # The case list comes from the cohort checkpoint (it validates every file): run it first, as the
    # real study does, so the dry run below plans the whole study rather than stopping there.
    out = subprocess.run([*cmd, "--cores", "1", "results/isles22/data/cases.tsv"], cwd=work,
                         env=snakemake_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    dry = subprocess.run([*cmd, "-n", "--quiet", "rules"], cwd=work, env=snakemake_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = {}
    for line in (dry.stdout + dry.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts.get("preprocess") == 185, counts
    assert counts.get("train") == counts.get("infer") == counts.get("evaluate") == 14, counts


def test_the_ablation_preset_plans_the_thesis_future_work_beside_the_main_arm(tmp_path):
    from sizepenalty.runs import Arm, RunKey, StudyPlan

    cfg = from_dict(_merged(ABLATIONS), source=ABLATIONS.name)
    plan = StudyPlan(cfg)
    arms = {a.label for a in plan.arms}
    taus = {"tau150", "tau300", "tau1200", "tau2400", "tau_auto"}
    assert {f"{c}@{v}" for c in ("DTS", "FSD") for v in (*taus, "gated", "overlap075")} < arms
    assert {"DTF", "DTS", "FSD"} < arms and plan.seeds(Arm("DTS")) == (42, 43, 44)
    # the overlap control trains nothing: its runs are the main arm's trainings
    key = RunKey("FSD", "overlap075", 43, 2)
    assert plan.canonical(key, "train") == RunKey("FSD", "main", 43, 2)
    assert plan.job(key, "infer").config.infer.overlap_for("FSD") == 0.75
    assert len(plan.jobs("train")) == 3 * 3 * 5 + 6 * 2 * 1 * 5  # CPU-sized: 105 trainings


@pytest.mark.slow
def test_the_ablation_preset_dry_runs(tmp_path):
    """CI plans the ablation study (it trains 105 models: not run here)."""
    from workflow_helpers import SNAKEMAKE, copy_workflow

    work = copy_workflow(tmp_path / "wf")
    dry = subprocess.run([str(SNAKEMAKE), "-n", "--quiet", "rules", "--configfile",
                          "presets/ablations.yaml"], cwd=work, env=snakemake_env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "cohort" in dry.stdout + dry.stderr  # planned up to the cohort checkpoint
