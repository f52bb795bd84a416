"""Shared set-up for tests that run the pipeline: the Snakemake workflow in a scratch copy of the
repository, or the first CLI stages by hand."""

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


def cli_cohort(config: Path, root: Path, raw: Path, cases: int, *extra_synth: str) -> None:
    """synth -> cohort -> preprocess -> folds through ``sizepenalty.cli.main`` for ``config``
    (whose dataset lives at ``raw``): ``root``/cases.tsv, ``root``/pre/ and ``root``/folds.json."""
    from sizepenalty.cli import main

    c = str(config)
    assert main(["synth", "-c", c, "--out", str(raw), "--cases", str(cases), *extra_synth]) == 0
    assert main(["cohort", "-c", c, "--out", str(root / "cases.tsv")]) == 0
    pre = [
        "preprocess",
        "-c",
        c,
        "--cases",
        str(root / "cases.tsv"),
        "--out-dir",
        str(root / "pre"),
    ]
    assert main(pre) == 0
    assert (
        main(
            ["folds", "-c", c, "--stats-dir", str(root / "pre"), "--out", str(root / "folds.json")]
        )
        == 0
    )
