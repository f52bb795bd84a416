"""What the benchmarks that compare this tree with a reference commit share: the reference's
sources, a default-study cohort made by each tree's own CLI, a training command line in each
tree's dialect and a description of the machine.

A tree is a folder with ``src/sizepenalty`` and ``config.yaml``; its commands run with this
Python (the venv's packages) and ``PYTHONPATH=<tree>/src``, so each runs its own code.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "6c0beb9"  # the commit the speed targets of issue 21 are measured against
_NO_WORKER = "SIZEPENALTY_WORKER"


@contextlib.contextmanager
def reference_tree(ref: str = REFERENCE, given: str | Path | None = None) -> Iterator[Path]:
    """A tree of commit ``ref`` (its ``src``, ``config.yaml`` and schema, extracted from this
    repository with `git archive` into a temporary folder, removed afterwards), or ``given``."""
    if given:
        yield Path(given).resolve()
        return
    with tempfile.TemporaryDirectory(prefix=f"sizepenalty-{ref}-") as tmp:
        data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src", "config.yaml",
                               "workflow/schemas"],  # the package's schema linked there once
                              check=True, capture_output=True).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def tree_env(tree: Path, **extra: str) -> dict[str, str]:
    """The environment a tree's commands run in: its sources first, no warm worker unless
    ``extra`` names one, no MLflow telemetry."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), MLFLOW_DISABLE_TELEMETRY="true")
    env.pop(_NO_WORKER, None)
    return env | extra


def sizepenalty(tree: Path, *argv, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``sizepenalty ARGV`` with the tree's code (raises, with its stderr, when it fails)."""
    out = subprocess.run([sys.executable, "-m", "sizepenalty", *map(str, argv)],
                         env=env or tree_env(tree), capture_output=True, text=True)  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"sizepenalty {' '.join(map(str, argv))} ({tree}): {out.stderr[-3000:]}")
    return out


def prepare(tree: Path, folder: Path) -> Path:
    """The default study (the tree's config.yaml) in ``folder``: synthetic cases, cohort,
    preprocessed volumes and folds made by the tree's own CLI; returns the config file."""
    raw = yaml.safe_load((tree / "config.yaml").read_text())
    raw.update(results=str(folder / "results"), study="bench")
    folder.mkdir(parents=True, exist_ok=True)
    c = folder / "config.yaml"
    c.write_text(yaml.safe_dump(raw))
    data = data_dir(c)
    cases = str(raw["dataset"]["synthetic"]["cases"])
    sizepenalty(tree, "synth", "-c", c, "--out", data / "raw", "--cases", cases)
    sizepenalty(tree, "cohort", "-c", c, "--out", data / "cases.tsv")
    sizepenalty(tree, "preprocess", "-c", c, "--cases", data / "cases.tsv", "--out-dir",
                data / "preprocessed")  # fmt: skip
    sizepenalty(tree, "folds", "-c", c, "--stats-dir", data / "preprocessed", "--out",
                data / "folds.json")  # fmt: skip
    return c


def data_dir(config: Path) -> Path:
    return config.parent / "results" / "bench" / "data"


def train_argv(tree: Path, config: Path, combo: str, fold: int, run_dir: Path) -> list[str]:
    """`sizepenalty train` arguments of the main arm's seed-42 run in the tree's dialect: the
    reference takes ``--combo X --fold K``, later trees ``--run X/main/seed42/foldK``."""
    data = data_dir(config)
    cli = (tree / "src/sizepenalty/cli.py").read_text()
    if '"--run"' in cli:
        which = ["--run", f"{combo.replace('+', '')}/main/seed42/fold{fold}"]  # combos.combo_id
    else:
        which = ["--combo", combo, "--fold", str(fold)]
    return ["train", "-c", str(config), *which, "--folds", str(data / "folds.json"),
            "--pre-dir", str(data / "preprocessed"), "--run-dir", str(run_dir)]  # fmt: skip


def start_worker(tree: Path, name: str, log: Path) -> subprocess.Popen:
    """A warm worker of the tree's code (as its Snakefile starts one); returns once it serves."""
    out = open(log, "w")  # noqa: SIM115 - the worker's log, closed when it ends
    proc = subprocess.Popen([sys.executable, "-m", "sizepenalty", "worker", "--name", name,
                             "--idle", "600", "--parent", str(os.getpid())],
                            env=tree_env(tree), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    while "ready" not in log.read_text():
        if proc.poll() is not None:
            raise RuntimeError(f"the worker of {tree} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc


def machine() -> str:
    """The machine in one line: cores, CPU model, load average (it may be shared)."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model}), load average {load}"
