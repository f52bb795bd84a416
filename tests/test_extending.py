"""The extension paths docs/architecture.md describes, tried for real: a fifth loss term (one
registry entry + its class), a combination the thesis did not run, a metric of one's own, and a
new axis of the study (a field of the run key, its entry in AXES and where its values come
from)."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, copy_workflow, snakemake_env

from sizepenalty.config import from_dict
from sizepenalty.stages import fingerprint

BOUNDARY_ENTRY = """
TERMS = TERMS + (
    LossTerm("B", "boundary", "Boundary", 0.5, "boundary_term:build",
             {"sigma": {"type": "number", "exclusiveMinimum": 0, "default": 1.0,
                        "description": "smoothing of the boundary weight map"}}),
)
TERMS = TERMS + (LossTerm("C", "bce", "Cross-entropy", 1.0, "boundary_term:bce"),)  # no parameters
BY_LETTER: dict[str, LossTerm] = {t.letter: t for t in TERMS}
BY_NAME: dict[str, LossTerm] = {t.name: t for t in TERMS}
LETTERS: str = "".join(BY_LETTER)
"""

BOUNDARY_CLASS = '''
import torch
from torch import nn


class BoundaryLoss(nn.Module):
    """A toy boundary term: mean |p - y| weighted by the target's local contrast."""

    def __init__(self, sigma):
        super().__init__()
        self.sigma = sigma

    def forward(self, logits, target):
        p = torch.sigmoid(logits)
        edge = (target - torch.nn.functional.avg_pool3d(target, 3, 1, 1)).abs() * self.sigma
        return ((p - target).abs() * (1 + edge)).mean()


def build(params, context):
    return BoundaryLoss(params["sigma"])


def bce(params, context):
    return torch.nn.BCEWithLogitsLoss()
'''

PROBE = """
import json, sys
import torch
from sizepenalty.config import from_dict, load_schema
from sizepenalty.losses import build_loss
from sizepenalty.stages import settings
from sizepenalty.train import LOG_COLUMNS

schema = load_schema()["properties"]["losses"]["properties"]
cfg = from_dict({"losses": {"combinations": ["DB", "DTS"], "boundary": {"sigma": 2.0},
                            "weights": {"boundary": 0.25}}})
loss = build_loss("DB", cfg.losses.params_for("DB"), cfg.losses.weights_for("DB"))
z = torch.randn(2, 1, 4, 8, 8, requires_grad=True)
y = (torch.rand(2, 1, 4, 8, 8) > 0.7).float()
total, parts = loss(z, y)
total.backward()
print(json.dumps({
    "schema": sorted(schema), "weight_default": schema["weights"]["properties"]["boundary"]["default"],
    "names": cfg.combo_names, "parts": sorted(parts), "weights": loss.weights,
    "sigma": loss.terms["B"].sigma, "grad": bool(z.grad.abs().sum() > 0),
    "log": list(LOG_COLUMNS), "train_settings": sorted(settings(cfg, "train", "DB")),
    "bce_settings": sorted(settings(from_dict({"losses": {"combinations": ["DC"]}}), "train", "DC")),
}))
"""


def test_a_fifth_loss_term_is_one_registry_entry_and_its_class(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src/sizepenalty", src / "sizepenalty")  # the schema link resolved
    with open(src / "sizepenalty/terms.py", "a") as fh:  # the one entry
        fh.write(textwrap.dedent(BOUNDARY_ENTRY))
    (tmp_path / "boundary_term.py").write_text(BOUNDARY_CLASS)  # its class
    env = dict(os.environ, PYTHONPATH=f"{src}:{tmp_path}")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    got = yaml.safe_load(out.stdout)
    assert "boundary" in got["schema"] and got["weight_default"] == 0.5  # schema from the registry
    assert got["names"] == ["DB", "DTS"]  # combination parsing knows the letter
    assert got["parts"] == ["B", "D"] and got["weights"] == {"D": 1.0, "B": 0.25}
    assert got["sigma"] == 2.0 and got["grad"]  # hyper-parameters from the config; it trains
    assert "B" in got["log"]  # epoch log and MLflow metric names
    assert "losses.boundary" in got["train_settings"]  # the training fingerprint follows it
    assert "losses.weights.bce" in got["bce_settings"]  # a term without hyper-parameters too


def test_a_combination_the_thesis_did_not_run_plans_like_any_other(tmp_path):
    # DTFS, the one subset of {D, T, F, S} the thesis left out: just list it.
    cfg = from_dict({"losses": {"combinations": ["DTF", "DTFS"]}})
    assert cfg.combo_names == ("DTF", "DTFS")
    assert fingerprint(cfg, "train", "DTFS") != fingerprint(cfg, "train", "DTF")
    work = copy_workflow(tmp_path / "wf")
    (work / "more.yaml").write_text(yaml.safe_dump({"losses": {"combinations": ["DTF", "DTFS"]},
                                                    "report": {"pairs": [["DTF", "DTFS"]]}}))  # fmt: skip
    out = subprocess.run([str(SNAKEMAKE), "-n", "-p", "--configfile", "more.yaml"], cwd=work,
                         env=snakemake_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--run DTFS/main/seed42/fold0" in out.stdout + out.stderr  # its trainings are planned


def test_a_metric_of_ones_own_flows_through_the_tables(monkeypatch):
    from sizepenalty.metrics import profiles
    from sizepenalty.report import tables

    # 1. declare it (label, direction), 2. add it to a profile's column sets.
    monkeypatch.setitem(
        profiles.METRICS, "vol_ratio", profiles.MetricInfo("vol_ratio", "V_p/V_g", True)
    )
    thesis = profiles.PROFILES["thesis"]
    custom = profiles.Profile("custom", (*thesis.keys, "vol_ratio"), (*thesis.main, "vol_ratio"),
                              thesis.extra, thesis.pairs, thesis.strata, thesis.improvement,
                              thesis.compute)  # fmt: skip
    rng = np.random.default_rng(0)
    rows = [{"arm": c, "seed": 42, "fold": f, "case_id": f"c{i}", "ref_ml": 3.0,
             **{k: rng.random() for k in custom.keys}}
            for c in ("DTF", "DTS") for f in (0, 1) for i in range(3)]  # fmt: skip
    table = tables.main_table(pd.DataFrame(rows), ["DTF", "DTS"], custom.columns("main"))
    assert "V_p/V_g" in table.columns and "V_p/V_g_sd" in table.columns
    assert "V_p/V_g" in tables.to_markdown(table, custom.columns("main"))


def test_a_dataset_in_another_layout_comes_in_through_a_manifest(tmp_path):
    """Any folder layout: list the cases in a manifest (case_id,dwi,adc,mask)."""
    import nibabel as nib

    from sizepenalty.data.cohort import read_manifest, validate_cohort

    folder = tmp_path / "scans"
    folder.mkdir()
    rows = ["case_id,dwi,adc,mask"]
    for i in range(3):
        for kind in ("dwi", "adc", "seg"):
            data = (
                np.random.default_rng(i).random((8, 8, 6)) > (0.9 if kind == "seg" else -1)
            ).astype(np.float32)
            nib.save(nib.Nifti1Image(data, np.eye(4)), folder / f"p{i}_{kind}.nii.gz")
        rows.append(f"p{i},scans/p{i}_dwi.nii.gz,scans/p{i}_adc.nii.gz,scans/p{i}_seg.nii.gz")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    good, bad = validate_cohort(read_manifest(tmp_path / "manifest.csv"))
    assert [c.case_id for c in good] == ["p0", "p1", "p2"] and not bad


AXIS_FIELD = """    fold: int = 0
    replicate: int = 0
"""
AXIS_ENTRY = """    Axis("fold", "fold{}", r"\\d+", int),
    Axis("replicate", "rep{}", r"\\d+", int),
"""
AXIS_VALUES = """        if axis == "replicate":
            return (0, 1)
        raise KeyError(f"no values for axis"""

AXIS_PROBE = """
import json
from pathlib import Path
from sizepenalty.config import from_dict
from sizepenalty.paths import StudyLayout
from sizepenalty.runs import KEY_COLUMNS, RunKey, StudyPlan, wildcard_constraints

plan = StudyPlan(from_dict({"losses": {"combinations": ["D", "DTS"]}, "folds": {"run": [0]}}))
key = plan.runs()[-1]
print(json.dumps({
    "runs": len(plan.runs()), "id": key.id, "parsed": RunKey.parse(key.id) == key,
    "path": str(StudyLayout(Path("r")).metrics(key)), "columns": list(KEY_COLUMNS),
    "tags": key.tags(), "name": key.name, "wildcards": sorted(wildcard_constraints(["D"])),
    "pattern": RunKey.wildcards().id,
}))
"""


def test_a_new_axis_is_a_key_field_its_declaration_and_its_values(tmp_path):
    # A replicate axis (e.g. repeated data subsampling): the run key's field, its AXES entry
    # (path segment, wildcard pattern) and where its values come from; paths, CLI ids, rows,
    # MLflow tags, wildcards and the DAG follow.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src/sizepenalty", src / "sizepenalty")
    pkg = src / "sizepenalty"
    edits = (("keys.py", "    fold: int = 0\n", AXIS_FIELD),
             ("keys.py", '    Axis("fold", "fold{}", r"\\d+", int),\n', AXIS_ENTRY),
             ("runs.py", '        raise KeyError(f"no values for axis', AXIS_VALUES))  # fmt: skip
    for name, old, new in edits:  # the identity in keys.py, where its values come from in runs.py
        text = (pkg / name).read_text()
        assert text.count(old) == 1, old
        (pkg / name).write_text(text.replace(old, new))
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, "-c", AXIS_PROBE], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = __import__("json").loads(out.stdout)
    assert got["runs"] == 2 * 2 and got["id"] == "DTS/main/seed42/fold0/rep1" and got["parsed"]
    assert got["path"] == "r/metrics/DTS/main/seed42/fold0/rep1.csv"
    assert got["columns"][-1] == "replicate" and got["tags"]["replicate"] == "1"
    assert "replicate" in got["wildcards"] and got["pattern"].endswith("/rep{replicate}")
    # The workflow plans one training per replicate, each with its own run id.
    work = copy_workflow(tmp_path / "wf")
    (work / "two.yaml").write_text(yaml.safe_dump({"losses": {"combinations": ["D"]},
                                                   "folds": {"run": [0]}}))  # fmt: skip
    dry = subprocess.run([str(SNAKEMAKE), "-n", "-p", "--configfile", "two.yaml"], cwd=work,
                         env=snakemake_env(PYTHONPATH=str(src)), capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-3000:]
    text = dry.stdout + dry.stderr
    assert "--run D/main/seed42/fold0/rep0" in text and "--run D/main/seed42/fold0/rep1" in text
