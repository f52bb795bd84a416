"""Shared set-up for tests that run the Snakemake workflow in a scratch copy of the repository."""

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"


def snakemake_env(**extra: str) -> dict[str, str]:
    """The environment for a workflow run: the venv's `sizepenalty` on PATH, no MLflow telemetry."""
    return dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        MLFLOW_DISABLE_TELEMETRY="true",
        **extra,
    )


def copy_workflow(work: Path) -> Path:
    """Snakefile, workflow/, envs/, presets/ and config.yaml copied to ``work`` (results land there)."""
    work.mkdir(parents=True, exist_ok=True)
    for folder in ("workflow", "envs", "presets"):
        shutil.copytree(ROOT / folder, work / folder)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(ROOT / name, work / name)
    return work
