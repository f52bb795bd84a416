"""The shared faulted study of tests/test_faults.py and tests/test_mlflow_ui.py (the
``killed_study`` fixture in conftest.py): run, kill -9 mid-training, recover with `make run`."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from workflow_helpers import ROOT, SNAKEMAKE, copy_workflow, snakemake_env

from sizepenalty.runs import RunKey

TINY = {
    "study": "tiny",
    "dataset": {"synthetic": {"cases": 6, "shape": [16, 32, 32]}},
    "preprocess": {"shape": [16, 32, 32]},
    "folds": {"k": 2, "run": None},
    "losses": {"combinations": ["D", "DTS"]},
    "seeds": {"train": [42], "train_by_combo": {"DTS": [42]}},  # config.yaml gives DTS 3 seeds
    "model": {"base_filters": 4, "depth": 3, "prior_prob": 0.1},
    # 16 patches per volume: epochs long enough (~0.3 s) to kill a training inside its second;
    # a checkpoint after every epoch, so the killed one resumes after its first.
    "train": {"epochs": 3, "batch_size": 2, "patches_per_volume": 16, "patch_large": [8, 16, 16],
              "patch_small": [8, 8, 8], "workers": 0, "lr": 1e-2, "val_every": 1,
              "validation": {"roi": [16, 32, 32]}, "checkpoint_minutes": 0},
    "infer": {"roi": [16, 32, 32], "tta": False},
    "report": {"pairs": [["D", "DTS"]], "curves": ["D", "DTS"], "bootstrap": 200},
}  # fmt: skip
VENV = Path(sys.executable).parent.parent


@dataclass
class KilledStudy:
    work: Path  # the workflow copy (Snakemake's working directory)
    study: Path  # work/results/tiny
    killed: RunKey  # the run whose training was killed after its first epoch
    locked: subprocess.CompletedProcess  # `snakemake --rerun-incomplete` right after the kill
    make_run: subprocess.CompletedProcess  # `make run` after that
    outputs: dict[str, str] = field(default_factory=dict)

    def snakemake(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        """`snakemake --cores 2 --configfile tiny.yaml ARGS` in the study's folder."""
        cmd = [str(SNAKEMAKE), "--cores", "2", "--configfile", "tiny.yaml", *args]
        return run(cmd, self.work, timeout)

    def sizepenalty(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return run([str(SNAKEMAKE.with_name("sizepenalty")), *args], self.work, timeout)


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=snakemake_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def make_run(work: Path, *snakemake_args: str) -> subprocess.CompletedProcess:
    """The repository's `make run` recipe in ``work`` with this test's venv (its setup step, which
    would pip-install into that venv, is taken as done: `-o` the setup stamp)."""
    stamp = VENV / ".sizepenalty-setup"
    cmd = ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "run", f"VENV={VENV}",
           "CORES=2", f"SNAKEMAKE_ARGS={' '.join(snakemake_args)}", "-o", str(stamp)]  # fmt: skip
    return run(cmd, work)


def _between_epochs(study: Path) -> RunKey | None:
    """A training that has finished an epoch (its log says so, so the log of the epochs before
    the kill is known) and is not done, if any."""
    logs = study / "logs" / "train"
    for log in logs.glob("**/fold*.attempts.log"):
        key = RunKey.parse(str(log.relative_to(logs)).removesuffix(".attempts.log"))
        if "epoch 1/" in log.read_text() and not (study / "runs" / key.id / "done.json").exists():
            return key
    return None


def run_killed_study(tmp: Path) -> KilledStudy:
    work = copy_workflow(tmp / "wf")
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    study = work / "results" / "tiny"
    cmd = [str(SNAKEMAKE), "--cores", "2", "--configfile", "tiny.yaml"]
    log = open(tmp / "killed_run.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=work, env=snakemake_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        # Found within ~20 ms of its first epoch's log line, so the kill comes long before its
        # second epoch ends: its log holds every epoch its checkpoint holds.
        killed = _between_epochs(study)
        time.sleep(0.02)
    # Snakemake and every job it started, at once.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    assert killed is not None, (tmp / "killed_run.log").read_text()[-3000:]
    assert not (study / "runs" / killed.id / "done.json").exists()
    assert list((work / ".snakemake" / "locks").glob("*.lock")), "the killed run left no lock"
    locked = run([*cmd, "--rerun-incomplete"], work)
    made = make_run(work, "--configfile", "tiny.yaml")
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-4000:]
    return KilledStudy(work, study, killed, locked, made)
