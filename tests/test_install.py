"""The library stands on its own: the core (losses, metrics, size strata, statistics) installs
without the study's dependencies, imports none of them, ships its type information and names its
public API; the extras, `make setup`, the lock, the conda environment and the image agree."""

import importlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from workflow_helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = {"torch", "monai", "numpy", "scipy", "connected-components-3d", "pandas", "nibabel"}
"""What the core needs (the issue's list): nothing else."""
STUDY_ONLY = ("mlflow", "snakemake", "matplotlib", "nilearn")
"""What the core must never import (each brings a large dependency tree)."""
CORE_MODULES = ("sizepenalty.losses", "sizepenalty.metrics", "sizepenalty.strata",
                "sizepenalty.report.stats", "sizepenalty.report.seeds")  # fmt: skip
PUBLIC_MODULES = (*CORE_MODULES, "sizepenalty.combos", "sizepenalty.terms", "sizepenalty.errors",
                  "sizepenalty.model", "sizepenalty.runs")  # fmt: skip
"""The library's public modules: the core and what its signatures use."""
LOCK = ROOT / "envs/requirements.lock"


def _names(specs) -> set[str]:
    return {re.sub(r"[-_.]+", "-", Requirement(s).name).lower() for s in specs}


def test_the_core_needs_only_the_libraries_of_the_loss_and_the_metrics():
    assert _names(PYPROJECT["dependencies"]) == CORE
    extras = PYPROJECT["optional-dependencies"]
    assert {"mlflow", "snakemake", "snakemake-executor-plugin-slurm", "matplotlib", "pyyaml",
            "jsonschema", "tabulate"} == _names(extras["study"])  # fmt: skip
    assert _names(extras["synthetic"]) == {"nilearn"}
    assert extras["all"] == ["sizepenalty[study,synthetic]"]
    assert extras["dev"] == ["sizepenalty[study,synthetic,test]"]
    # `make setup` installs everything.
    assert '-e ".[dev]" -c envs/requirements.lock' in (ROOT / "Makefile").read_text()


def test_importing_the_core_imports_no_study_dependency():
    code = (f"import sys\nimport {', '.join(CORE_MODULES)}\n"
            f"print(sorted(m for m in {STUDY_ONLY!r} if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))  # fmt: skip
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_declare_their_api(name):
    module = importlib.import_module(name)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []
    assert (ROOT / "src/sizepenalty/py.typed").is_file()


def test_the_lock_conda_environment_and_image_cover_the_core_and_every_runtime_extra():
    sys.path.insert(0, str(ROOT / "envs"))
    try:
        import lock
    finally:
        sys.path.pop(0)
    wanted = lock.closure(lock.project_requirements())
    pinned = dict(line.split("==") for line in LOCK.read_text().splitlines()
                  if line and not line.startswith("#"))  # fmt: skip
    assert set(wanted) == set(pinned)  # envs/lock.py would write these names
    runtime = _names(PYPROJECT["dependencies"]) | _names(PYPROJECT["optional-dependencies"]["study"]) \
        | _names(PYPROJECT["optional-dependencies"]["synthetic"])  # fmt: skip
    assert runtime <= set(pinned)
    conda = {re.split(r"[<>=! ]", d)[0] for d in
             yaml.safe_load((ROOT / "envs/sizepenalty.yaml").read_text())["dependencies"]
             if isinstance(d, str)}  # fmt: skip
    # Snakemake and its executor run the jobs, not inside them; conda-forge names torch pytorch.
    expected = {"pytorch" if n == "torch" else n for n in runtime}
    assert expected - {"snakemake", "snakemake-executor-plugin-slurm"} <= conda
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-r envs/requirements.lock" in dockerfile and "pip install --no-cache-dir --no-deps ." in dockerfile


USE_THE_CORE = r"""
import json, sys

import numpy as np
import torch

from sizepenalty.losses import SizePenaltyLoss, build_loss
from sizepenalty.metrics import evaluate_case
from sizepenalty.report.stats import holm
from sizepenalty.strata import bin_of

torch.manual_seed(0)
logits = torch.randn(2, 1, 8, 16, 16, requires_grad=True)
target = torch.zeros(2, 1, 8, 16, 16)
target[0, 0, 2:5, 4:9, 4:9] = 1
total, terms = build_loss("DTS")(logits, target)
total.backward()
spl = SizePenaltyLoss(tau=600)(logits, target)
gt = np.zeros((8, 16, 16), bool)
gt[2:5, 4:9, 4:9] = True
pred = np.roll(gt, 1, axis=2)
case = evaluate_case(gt, pred, (2.0, 2.0, 2.0))
missing = [m for m in ("mlflow", "snakemake", "matplotlib", "nilearn", "yaml", "jsonschema")
           if __import__("importlib.util").util.find_spec(m) is not None]
print(json.dumps({"terms": sorted(terms), "finite": bool(torch.isfinite(total)),
                  "grad": bool(logits.grad.abs().sum() > 0), "spl": float(spl),
                  "dice": case.metrics["dice"], "bin": bin_of(0.5, [5.0]),
                  "holm": holm([0.01, 0.04]), "installed": missing}))
"""


@pytest.mark.slow
def test_the_core_installs_alone_in_a_clean_venv_and_computes_the_loss_and_metrics(tmp_path):
    venv = tmp_path / "core"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # no system packages
    python = venv / "bin/python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # No bytecode compilation: half of the install time, and the script below runs once.
    pip = [str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check"]
    torch_pin = re.search(r"^torch==\S+$", LOCK.read_text(), flags=re.MULTILINE).group(0)
    for args in ([torch_pin], [str(ROOT), "-c", str(LOCK)]):  # torch first, as `make setup`
        out = subprocess.run(pip + args, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], env=env,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    installed = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in listed.split()}
    assert CORE | {"sizepenalty"} <= installed
    assert not installed & {"mlflow", "snakemake", "snakemake-executor-plugin-slurm", "matplotlib",
                            "nilearn", "flask", "gunicorn", "pyarrow", "scikit-learn"}  # fmt: skip
    out = subprocess.run([str(python), "-c", USE_THE_CORE], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    result = json.loads(out.stdout)
    assert result["terms"] == ["D", "S", "T"] and result["finite"] and result["grad"]
    assert result["spl"] >= 0 and 0 < result["dice"] < 1 and result["bin"] == "< 5 mL"
    assert result["holm"] == pytest.approx([0.02, 0.04]) and result["installed"] == []
    site = subprocess.run([str(python), "-c", "import sizepenalty, pathlib; print(pathlib.Path("
                           "sizepenalty.__file__).parent)"], env=env, capture_output=True,
                          text=True, check=True, cwd=tmp_path).stdout.strip()  # fmt: skip
    assert Path(site, "py.typed").is_file() and str(tmp_path) in site  # the wheel, not the checkout
    # The command line is there too; a study verb says which extra it needs.
    cli = venv / "bin/sizepenalty"
    assert "make run" in subprocess.run([str(cli), "--help"], env=env, capture_output=True,
                                        text=True, check=True).stdout  # fmt: skip
    out = subprocess.run([str(cli), "validate-config", "-c", str(ROOT / "config.yaml")], env=env,
                         capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "pip install 'sizepenalty[study]'" in out.stderr, out.stderr
