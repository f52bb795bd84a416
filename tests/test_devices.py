"""GPUs on one workstation (issue 13, part 3): concurrent jobs each get their own card through a
flock slot, a job waits while every card is taken, a crashed job frees its card, SLURM's choice is
kept; and each training records the device it ran on. Devices are faked with SIZEPENALTY_GPUS
(no GPU needed); the last test runs only where CUDA is available."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from workflow_helpers import cli_cohort, tiny_config, train_args

from sizepenalty.devices import claim_gpu

HOLDER = r"""
import os, sys
from sizepenalty.devices import claim_gpu, visible_gpus
device = claim_gpu(wait_s=float(sys.argv[1]))
print(device, os.environ.get("CUDA_VISIBLE_DEVICES"), ",".join(visible_gpus()), sep="|", flush=True)
sys.stdin.read()  # hold the slot until the test closes stdin (or kills this process)
"""


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", "SIZEPENALTY_GPUS")}  # fmt: skip
    return env | {"SIZEPENALTY_GPU_LOCKS": str(tmp_path / "locks")} | extra


def _start(env, wait_s=600):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(wait_s)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _claimed(proc) -> tuple[str, str, str]:
    """(slot's device, CUDA_VISIBLE_DEVICES, what a child process would see) once it holds one."""
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return tuple(line.rstrip("\n").split("|"))


def _waits(proc) -> None:
    """Returns once ``proc`` reports that every slot is taken (it then waits for one)."""
    for line in proc.stderr:
        if "GPU slots are taken" in line:
            return
    raise AssertionError(f"exited with {proc.wait()} without waiting for a slot")


def test_concurrent_jobs_get_distinct_cards_and_a_freed_slot_goes_to_a_waiting_job(tmp_path):
    env = _env(tmp_path, SIZEPENALTY_GPUS="3")
    procs = []
    try:
        holders = [_start(env) for _ in range(3)]
        procs += holders
        claims = [_claimed(p) for p in holders]
        assert sorted(device for device, _, _ in claims) == ["0", "1", "2"]
        for device, visible, child_sees in claims:
            # Only its card is visible, also to the processes it starts (a device id must not
            # read as a count of fake devices).
            assert visible == device and child_sees == device
        # A fourth job finds no free card (it would wait; with no time to wait it says so) ...
        full = subprocess.run([sys.executable, "-c", HOLDER, "0"], env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=120)  # fmt: skip
        assert full.returncode != 0 and "no free GPU slot among 3" in full.stderr
        # ... and one that may wait gets the card of the first holder that ends.
        waiter = _start(env)
        procs.append(waiter)
        _waits(waiter)
        holders[1].stdin.close()
        assert holders[1].wait(timeout=60) == 0
        assert _claimed(waiter)[0] == claims[1][0]
        # A holder killed with -9 frees its card too: the kernel drops its lock.
        second = _start(env)
        procs.append(second)
        _waits(second)
        holders[2].kill()
        holders[2].wait(timeout=60)
        assert _claimed(second)[0] == claims[2][0]
        # Each slot's lock file names its holder.
        named = sorted(int(p.read_text()) for p in (tmp_path / "locks").glob("gpu*.lock"))
        assert named == sorted(p.pid for p in (holders[0], waiter, second))
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_slurm_job_keeps_the_devices_slurm_gave_it(tmp_path, monkeypatch):
    for key, value in _env(tmp_path, SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="1,3").items():
        monkeypatch.setenv(key, value)
    for key in ("SIZEPENALTY_GPUS",):
        monkeypatch.delenv(key, raising=False)
    assert claim_gpu(wait_s=0) == "1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,3"  # untouched
    assert not (tmp_path / "locks").exists()  # no slot taken on a SLURM node


CONFIG = tiny_config(
    "dev",
    losses={"combinations": ["D"]},
    train={"epochs": 1, "batch_size": 2, "patches_per_volume": 2, "patch_large": [8, 16, 16],
           "patch_small": [8, 8, 8], "workers": 0, "threads": 1, "validation": {"roi": [16, 32, 32]}},
)  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    c = root / "c.yaml"
    c.write_text(yaml.safe_dump(CONFIG | {"results": str(root)}))
    cli_cohort(c, root, root / "dev/data/raw", 5)
    return root, c


def _train(root, c, run_dir, *extra):
    from sizepenalty.cli import main

    return main(train_args(c, root, run_dir, "D", 0, *extra))


def _mlflow_params(root, run_id):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'dev' / 'mlflow.db'}").get_run(run_id).data.params


def test_a_cpu_training_records_its_device(cohort, tmp_path, monkeypatch):
    root, c = cohort
    for key in ("SIZEPENALTY_GPUS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(key, raising=False)
    assert _train(root, c, tmp_path / "run", "--device", "cpu") == 0
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["params"]["device"] == "cpu" and "device_name" not in record["params"]
    assert _mlflow_params(root, record["run_id"])["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_training_records_the_card_it_ran_on(cohort, tmp_path):
    root, c = cohort
    env = dict(os.environ, SIZEPENALTY_GPU_LOCKS=str(tmp_path / "locks"))
    cmd = [sys.executable, "-m", "sizepenalty",
           *train_args(c, root, tmp_path / "run", "D", 0, "--device", "cuda")]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    params = json.loads((tmp_path / "run" / "run.json").read_text())["params"]
    props = torch.cuda.get_device_properties(0)
    assert params["device"] == "cuda" and params["device_name"] == props.name
    assert float(params["device_memory_gb"]) == pytest.approx(props.total_memory / 2**30, abs=0.1)
