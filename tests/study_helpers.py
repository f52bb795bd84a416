"""A tiny study that ran, made by driving the CLI stages by hand into a study folder's layout
(no Snakemake): cohort, preprocessing, folds, every run's training (one epoch), inference and
evaluation with its NIfTI predictions, and the aggregate tables. Shared by the tests of what a
finished study is used for (predict, evaluate on folders, external methods)."""

from pathlib import Path

import yaml
from workflow_helpers import tiny_config

from sizepenalty.cli import main
from sizepenalty.config import from_dict
from sizepenalty.paths import StudyLayout
from sizepenalty.runs import StudyPlan


def tiny_raw(results: Path, **sections) -> dict:
    """The tiny study of these tests: DTF and DTS on 6 cases, 2 folds, one epoch each."""
    raw = tiny_config(
        "used",
        results=str(results),
        dataset={"synthetic": {"cases": 6, "shape": [16, 32, 32]}},
        losses={"combinations": ["DTF", "DTS"]},
        train={"epochs": 1, "batch_size": 2, "patches_per_volume": 2, "patch_large": [8, 16, 16],
               "patch_small": [8, 8, 8], "workers": 0, "lr": 3e-3},
        infer={"roi": [16, 32, 32], "tta": False, "thresholds": [0.6, 0.7]},  # partial masks
        report={"pairs": [["DTF", "DTS"]], "curves": ["DTS"], "bootstrap": 200},
        tracking={"enabled": False},
    )  # fmt: skip
    return raw | sections


def run_stage(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


def data_stages(c: str, L: StudyLayout, cases: int) -> None:
    """synth, cohort, preprocess and folds into the study folder's layout."""
    run_stage("synth", "-c", c, "--out", str(L.raw), "--cases", str(cases))
    run_stage("cohort", "-c", c, "--out", str(L.cases))
    run_stage("preprocess", "-c", c, "--cases", str(L.cases), "--out-dir", str(L.preprocessed))
    run_stage("folds", "-c", c, "--stats-dir", str(L.preprocessed), "--cases", str(L.cases),
              "--out", str(L.folds))  # fmt: skip


def run_study(results: Path, **sections) -> StudyLayout:
    """The tiny study, run stage by stage as its rules would: its folder's layout."""
    raw = tiny_raw(results, **sections)
    cfg = from_dict(raw)
    L = StudyLayout(cfg.study_dir)
    L.root.mkdir(parents=True)
    L.effective_config.write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    c = str(L.effective_config)
    data_stages(c, L, cfg.dataset.synthetic.cases)
    plan = StudyPlan(cfg)
    common = ["-c", c, "--folds", str(L.folds), "--pre-dir", str(L.preprocessed)]
    for key in plan.jobs("train"):
        run_stage("train", "--run", key.id, *common, "--run-dir", str(L.run_dir(key)))
    for key in plan.jobs("infer"):
        trained = plan.canonical(key, "train")
        run_stage("infer", "--run", key.id, *common, "--run-dir", str(L.run_dir(trained)),
                  "--out-dir", str(L.probs(key)))  # fmt: skip
    for key in plan.jobs("evaluate"):
        run_stage("evaluate-fold", "--run", key.id, *common,
                  "--prob-dir", str(L.probs(plan.canonical(key, "infer"))),
                  "--out", str(L.metrics(key)), "--threshold-out", str(L.threshold(key)),
                  "--nifti-dir", str(L.predictions(key)))  # fmt: skip
    run_stage("aggregate", "-c", c, "--out-dir", str(L.tables))
    return L


def add_methods(L: StudyLayout, methods: dict[str, dict], **sections) -> None:
    """The study's config with external ``methods`` (name -> its ``methods:`` entry) and other
    ``sections`` replaced, each method's rule run per fold, and the aggregate run again."""
    raw = yaml.safe_load(L.effective_config.read_text()) | sections
    raw["methods"] = methods
    cfg = from_dict(raw)
    L.effective_config.write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    c = str(L.effective_config)
    for name in cfg.methods:
        for fold in cfg.folds.trained:
            run_stage("evaluate-method", "-c", c, "--method", name, "--fold", str(fold),
                      "--folds", str(L.folds), "--pre-dir", str(L.preprocessed),
                      "--out", str(L.method_metrics(name, fold)))  # fmt: skip
    run_stage("aggregate", "-c", c, "--out-dir", str(L.tables))
