"""Shared set-up for tests that run the pipeline: the Snakemake workflow in a scratch copy of the
repository, or the first CLI stages by hand."""

import contextlib
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
# Debian's chromium for the browser tests, launched by path with the settings this machine needs.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]  # fmt: skip


@contextlib.contextmanager
def offline_page(viewport: dict[str, int], allowed: tuple[str, ...] = ("file:",)):
    """A headless chromium page that loads only URLs starting with ``allowed`` (every other
    request is aborted): yields (page, page errors, requested URLs); the browser closes after."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = browser.new_page(viewport=viewport)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
            allowed) else route.abort())  # fmt: skip
        try:
            yield page, errors, requests
        finally:
            browser.close()


def snakemake_env(**extra: str) -> dict[str, str]:
    """The environment for a workflow run: the venv's `sizepenalty` on PATH, no MLflow telemetry."""
    return dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        MLFLOW_DISABLE_TELEMETRY="true",
        **extra,
    )


def copy_workflow(work: Path) -> Path:
    """Snakefile, workflow/, envs/, presets/, profiles/ (Snakemake's workflow profile) and
    config.yaml copied to ``work`` (results land there)."""
    work.mkdir(parents=True, exist_ok=True)
    for folder in ("workflow", "envs", "presets", "profiles"):
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


def run_arg(combo: str, fold, seed: int = 42, variant: str = "main") -> str:
    """The `--run` argument of a per-run job (its RunKey's id)."""
    from sizepenalty.combos import canonical_name
    from sizepenalty.runs import RunKey

    return RunKey(canonical_name(combo), variant, seed, int(fold)).id


def train_args(config: Path, root: Path, run_dir: Path, combo: str, fold, *extra: str) -> list[str]:
    """`sizepenalty train` arguments (no program name) for one combination and fold (main arm,
    seed 42) of the cohort :func:`cli_cohort` made in ``root``."""
    return ["train", "-c", str(config), "--run", run_arg(combo, fold),
            "--folds", str(root / "folds.json"), "--pre-dir", str(root / "pre"),
            "--run-dir", str(run_dir), *extra]  # fmt: skip


def isles_layout(root: Path, n: int) -> None:
    """``n`` tiny cases in the ISLES 2022 BIDS layout (what the reader walks, nothing more)."""
    import nibabel as nib
    import numpy as np

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    vol = np.zeros((6, 6, 4), np.float32)
    mask = np.zeros((6, 6, 4), np.uint8)
    mask[2:4, 2:4, 1:3] = 1
    for i in range(1, n + 1):
        sub = f"sub-strokecase{i:04d}"
        raw = root / "rawdata" / sub / "ses-0001" / "dwi"
        der = root / "derivatives" / sub / "ses-0001"
        raw.mkdir(parents=True)
        der.mkdir(parents=True)
        for kind, data in (("dwi", vol + 1), ("adc", vol + 2)):
            nib.save(nib.Nifti1Image(data, affine), raw / f"{sub}_ses-0001_{kind}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), der / f"{sub}_ses-0001_msk.nii.gz")


def isles22_study(tmp: Path, n: int) -> tuple[Path, list[str]]:
    """A workflow copy in ``tmp``/wf on an ``n``-case ISLES 2022 layout (``tmp``/ISLES-2022) with
    the ISLES preset: the folder and the Snakemake command (run in that folder) for it."""
    import yaml

    work = copy_workflow(tmp / "wf")
    isles_layout(tmp / "ISLES-2022", n)
    (work / "data.yaml").write_text(yaml.safe_dump({"dataset": {"path": str(tmp / "ISLES-2022")}}))
    return work, [str(SNAKEMAKE), "--configfile", str(ROOT / "presets/isles22.yaml"), "data.yaml"]


def train_within(shape) -> dict:
    """``train`` settings whose patches and validation window fit a preprocessed volume of
    ``shape`` (the config rejects any larger than ``preprocess.shape``): for tests of the data
    stages, which never train."""
    shape = list(shape)
    return {"patch_large": shape, "patch_small": shape, "validation": {"roi": shape}}


def tiny_config(study: str, **sections) -> dict:
    """A study small enough for a test: 16x32x32 volumes, 2 folds (both run), a base-2 network,
    one epoch of 8x16x16 patches; ``sections`` replace or extend whole sections."""
    base = {
        "study": study,
        "dataset": {"synthetic": {"cases": 5, "shape": [16, 32, 32]}},
        "preprocess": {"shape": [16, 32, 32]},
        "folds": {"k": 2, "run": None},
        # one training seed per combination (config.yaml trains 3 of DTF, DTS and FSD)
        "seeds": {"train_by_combo": {"DTF": [42], "DTS": [42], "FSD": [42]}},
        "model": {"base_filters": 2, "depth": 3},
        "train": {"epochs": 1, "batch_size": 2, "patches_per_volume": 1, "patch_large": [8, 16, 16],
                  "patch_small": [8, 8, 8], "validation": {"roi": [16, 32, 32]}},
        "infer": {"roi": [16, 32, 32], "tta": False},
    }  # fmt: skip
    return base | sections


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` (or `mlflow ui`: ``command``) on a free port for ``backend_store_uri``,
    logging and keeping artifacts in ``folder``; started in the background, :meth:`up` waits
    until it answers, :meth:`stop` ends it."""

    def __init__(self, backend_store_uri: str, folder: Path, command: str = "server") -> None:
        import subprocess

        self.log = folder / f"mlflow-{command}.log"
        self.uri = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), command, "--backend-store-uri", backend_store_uri,
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
             "--port", self.uri.rsplit(":", 1)[1], "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), start_new_session=True,  # noqa: SIM115
            env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"),
        )  # fmt: skip

    def up(self) -> str:
        import time
        import urllib.request

        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.uri
            except OSError:
                pass
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not come up"
            time.sleep(0.3)

    def stop(self) -> None:
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
