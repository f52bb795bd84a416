import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _single_thread_torch():
    # Tests run on 2-core CI machines: one intra-op thread keeps timings predictable.
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


# ----------------------------------------------------------------------------- a study killed mid-run


@pytest.fixture(scope="session")
def killed_study(tmp_path_factory):
    """A tiny study (2 combinations x 2 folds x 3 epochs) run by Snakemake, killed with SIGKILL
    (Snakemake's process group: it and the jobs it started, as when a terminal goes away; the warm
    worker, in its own session, outlives it) once a training has logged its first epoch, then
    rerun as a user would: first the README's old recovery, then `make run`.
    Shared by tests/test_faults.py and tests/test_mlflow_ui.py (one study for both)."""
    from fault_study import run_killed_study

    return run_killed_study(tmp_path_factory.mktemp("killed"))


# ----------------------------------------------------------------------------- a study that ran


@pytest.fixture(scope="session")
def used_study(tmp_path_factory):
    """A tiny study that ran, stage by stage through the CLI (tests/study_helpers.py): DTF and DTS
    x 2 folds, one epoch each, with their test predictions and tables. Read-only: a test that
    changes it works on a copy. Shared by tests/test_predict.py and tests/test_methods.py."""
    from study_helpers import run_study

    return run_study(tmp_path_factory.mktemp("used"))
