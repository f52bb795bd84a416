"""Which device a job computes on, and how concurrent jobs share a workstation's GPUs.

Snakemake's ``--resources gpu=N`` keeps at most N GPU jobs running but assigns no devices to
local jobs, so without help every job would land on ``cuda:0``. :func:`claim_gpu` gives each job
its own card: it takes the first free slot among the machine's GPUs with an exclusive
``flock`` on ``<lock dir>/gpu<i>.lock`` (released by the kernel when the process ends, also on a
crash or ``kill -9``) and narrows ``CUDA_VISIBLE_DEVICES`` to that card before CUDA starts. A
job under SLURM keeps the device SLURM gave it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

_HELD: list = []  # open lock files: a slot is held for the life of the process


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries, found without
    starting CUDA: ``SIZEPENALTY_GPUS`` (a count or a comma list; tests fake devices with it),
    else ``CUDA_VISIBLE_DEVICES``, else the NVIDIA driver's device list."""
    given = os.environ.get("SIZEPENALTY_GPUS")
    if given:
        return [str(i) for i in range(int(given))] if given.isdigit() else given.split(",")
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i in range(len(list(proc.iterdir())))]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def lock_dir() -> Path:
    """Where the slot locks live: one folder per user and machine (``SIZEPENALTY_GPU_LOCKS``
    overrides; apptainer binds the host's /tmp, so containers share it)."""
    default = Path("/tmp") / f"sizepenalty-gpus-{os.getuid()}"
    return Path(os.environ.get("SIZEPENALTY_GPU_LOCKS", default))


def claim_gpu(wait_s: float = 3600.0) -> str | None:
    """Take a free GPU slot for this process and expose only that card (see the module doc).
    Returns the ``CUDA_VISIBLE_DEVICES`` entry, or None where there is nothing to assign: no GPU,
    a SLURM job (SLURM already chose), or one card only."""
    gpus = visible_gpus()
    if len(gpus) <= 1 or os.environ.get("SLURM_JOB_ID"):
        return gpus[0] if gpus else None
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        for device in gpus:  # named after the card, so runs with other visible lists agree
            handle = open(folder / f"gpu-{device}.lock", "a+")  # noqa: SIM115 - held until exit
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _HELD.append(handle)
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            # A child process sees this one card (a device id in SIZEPENALTY_GPUS would read
            # as a count: "2" is two cards).
            os.environ.pop("SIZEPENALTY_GPUS", None)
            return device
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no free GPU slot among {len(gpus)} after {wait_s:.0f} s ({folder})"
            )
        if not waiting:  # more GPU jobs than cards: --resources gpu=N should prevent this
            waiting = True
            print(f"all {len(gpus)} GPU slots are taken ({folder}); waiting for one to free",
                  file=sys.stderr, flush=True)  # fmt: skip
        time.sleep(1.0)


def pick_device(requested: str) -> torch.device:
    """``cuda`` (claiming a GPU slot first) when asked for or when ``auto`` finds a GPU, else
    the CPU."""
    if requested == "cpu" or (requested == "auto" and not visible_gpus()):
        return torch.device("cpu")
    if requested == "auto" and torch.version.cuda is None:  # a CPU build: never hold a card
        return torch.device("cpu")
    claim_gpu()
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cpu")
    return torch.device("cuda")


def describe(device: torch.device) -> dict[str, str]:
    """What a run computed on, for its tracking record."""
    info = {"device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            device_memory_gb=f"{props.total_memory / 2**30:.1f}",
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        )
    return info


@dataclass(frozen=True)
class Amp:
    """Mixed precision: autocast on/off, its dtype, and whether a GradScaler is needed."""

    enabled: bool
    dtype: torch.dtype
    scaler: bool

    @property
    def mode(self) -> str:
        """``off``, ``bf16`` or ``fp16``: the numerics a training ran with."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype] if self.enabled else "off"


def amp_settings(mode: str, device: torch.device) -> Amp:
    """Mixed precision only on CUDA: bf16 where the card supports it (no scaler needed), else
    fp16 with a GradScaler."""
    if device.type != "cuda" or mode == "off":
        return Amp(False, torch.float32, False)
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return Amp(True, torch.bfloat16, False)
    return Amp(True, torch.float16, True)
