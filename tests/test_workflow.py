"""The Snakemake DAG end to end on a tiny study (2 combinations x 2 folds, 1 epoch)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def _env():
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        MLFLOW_DISABLE_TELEMETRY="true",
    )


@pytest.mark.slow
def test_tiny_study_runs_end_to_end_and_is_lint_clean(tmp_path):
    work = tmp_path / "wf"
    shutil.copytree(ROOT / "workflow", work / "workflow")
    shutil.copytree(ROOT / "envs", work / "envs")
    shutil.copy(ROOT / "Snakefile", work / "Snakefile")
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    tiny = {
        "study": "tiny",
        "dataset": {"synthetic": {"cases": 6, "shape": [16, 32, 32]}},
        "preprocess": {"shape": [16, 32, 32]},
        "folds": {"k": 2},
        "losses": {"combinations": ["D", "DTS"]},
        "model": {"base_filters": 2, "depth": 3},
        "train": {"epochs": 1, "batch_size": 2, "patches_per_volume": 2, "patch_large": [8, 16, 16], "patch_small": [8, 8, 8], "workers": 0, "lr": 3e-3},
        "infer": {"roi": [16, 32, 32], "tta": False},
    }  # fmt: skip
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    cmd = [str(SNAKEMAKE), "--cores", "2", "--configfile", "tiny.yaml"]
    out = subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    study = work / "results/tiny"
    table = (study / "tables/table_main.md").read_text()
    assert "| D |" in table and "| DTS |" in table
    cases = pd.read_csv(study / "tables/per_case_metrics.csv")
    assert set(cases["combo"]) == {"D", "DTS"} and set(cases["fold"]) == {0, 1}
    assert len(list((study / "predictions/DTS/fold0").glob("*_pred.nii.gz"))) >= 1
    assert (study / "runs/D/fold1/last.pt").exists() and (study / "mlflow.db").exists()
    # Nothing left to do on a second call.
    again = subprocess.run(
        [*cmd, "-n"], cwd=work, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert "Nothing to be done" in again.stdout + again.stderr
    # Changing tau reruns the size-penalty trainings only.
    (work / "tau.yaml").write_text(yaml.safe_dump({"losses": {"tau": 300}}))
    dry = subprocess.run(
        [*cmd, "tau.yaml", "-n"], cwd=work, env=_env(), capture_output=True, text=True, timeout=120
    )
    text = dry.stdout + dry.stderr
    assert "runs/DTS/fold0/done.json" in text and "runs/D/fold0/done.json" not in text
