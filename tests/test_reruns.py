"""Reruns do what the README says, on a finished tiny study run by Snakemake: a nested --config
override equal to the configured value changes nothing, `--forcerun` retrains from epoch 0 in a
new MLflow run, and a deleted run folder trains again."""

import json
import re
import shutil
import subprocess

import pytest
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, copy_workflow, snakemake_env, tiny_config

from sizepenalty.runs import RunKey
from sizepenalty.train import FINISHED_RERUN


def _snakemake(work, *args, timeout=900):
    out = subprocess.run([str(SNAKEMAKE), "--configfile", "tiny.yaml", *args], cwd=work,
                         env=snakemake_env(PYTHONPATH=str(ROOT / "src")), capture_output=True,
                         text=True, timeout=timeout)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _planned(out) -> dict[str, int]:
    """Rule -> job count of a `snakemake -n --quiet rules` summary."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out.stdout, re.MULTILINE)}


@pytest.mark.slow
def test_overrides_forcerun_and_a_deleted_run_folder_on_a_finished_study(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    tiny = tiny_config("rr", losses={"combinations": ["D", "DTS"]}, folds={"k": 2, "run": [0]},
                       seeds={"train_by_combo": {"DTS": [42]}},  # one training per combination
                       report={"pairs": [["D", "DTS"]], "curves": ["D", "DTS"], "bootstrap": 200})  # fmt: skip
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    _snakemake(work, "--cores", "2")
    dry = ("-n", "--quiet", "rules")
    assert "Nothing to be done" in _snakemake(work, *dry).stdout

    # The README's --config key=value with a nested number: the same value as configured (given
    # as text by Snakemake) is the same setting, so nothing reruns.
    assert "Nothing to be done" in _snakemake(work, *dry, "--config", "train={epochs: 1}").stdout
    assert _planned(_snakemake(work, *dry, "--config", "train={epochs: 2}"))["train"] == 2

    # --forcerun retrains for real: from epoch 0, in a new MLflow run (one training here: its
    # done marker as the target).
    d = RunKey("D", "main", 42, 0)
    run = work / "results/rr/runs" / d.id
    first = json.loads((run / "run.json").read_text())
    done = str((run / "done.json").relative_to(work))
    assert _planned(_snakemake(work, *dry, "--forcerun", "train"))["infer"] == 2  # all after it
    _snakemake(work, "--cores", "1", "--forcerun", "train", "--", done)
    log = (work / "results/rr/logs/train" / f"{d.id}.log").read_text()
    assert f"{FINISHED_RERUN}; starting from epoch 0" in log and "epoch 1/1" in log
    second = json.loads((run / "run.json").read_text())
    assert second["run_id"] != first["run_id"] and second["status"] == "FINISHED"

    # A deleted run folder trains again, and what reads it reruns, although its later outputs
    # are all there.
    shutil.rmtree(work / "results/rr/runs/DTS")
    planned = _planned(_snakemake(work, *dry))
    assert planned["train"] == 1 and planned["infer"] == 1 and planned["evaluate"] == 1
