"""Fail loudly unless the installed PyTorch is the lock's pin, in the requested build variant.

    python envs/check_torch.py --variant cuda|cpu|any [--lock envs/requirements.lock]

`envs/requirements.lock` holds the one PyTorch pin (`torch==X`) of `make setup`, CI and the image.
The image build runs this after each pip step, so no dependency can swap torch for another version
or build without the build failing (a CUDA build was once replaced by an unpinned one for a newer
CUDA); CI runs it on its own environment. Exit status 0 when torch matches, 1 (and why) otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

LOCK = Path(__file__).with_name("requirements.lock")


def pinned(lock: Path) -> str:
    """The version of the lock's single `torch==X` line (without a local build label)."""
    pins = re.findall(r"^torch==(\S+)\s*$", lock.read_text(), flags=re.MULTILINE)
    if len(pins) != 1:
        raise SystemExit(f"{lock}: expected exactly one 'torch==X' line, found {len(pins)}")
    if "+" in pins[0]:
        raise SystemExit(f"{lock}: pin torch without a build label, not torch=={pins[0]}")
    return pins[0]


def problems(version: str, cuda: str | None, pin: str, variant: str) -> list[str]:
    """What is wrong with an installed torch ``version`` (``cuda``: torch.version.cuda)."""
    out = []
    if version.split("+")[0] != pin:
        out.append(f"torch {version} is installed, but the lock pins torch=={pin}")
    if variant == "cuda" and not cuda:
        out.append(f"torch {version} is a CPU-only build, but the CUDA variant was requested")
    if variant == "cpu" and cuda:
        out.append(f"torch {version} is a CUDA {cuda} build, but the CPU variant was requested")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=["cuda", "cpu", "any"], required=True)
    ap.add_argument("--lock", type=Path, default=LOCK)
    args = ap.parse_args(argv)
    pin = pinned(args.lock)
    try:
        import torch
    except ImportError as exc:
        print(f"check_torch: FAILED: torch=={pin} is not importable ({exc})", file=sys.stderr)
        return 1
    version, cuda = str(torch.__version__), torch.version.cuda
    found = problems(version, cuda, pin, args.variant)
    for line in found:
        print(f"check_torch: FAILED: {line} ({torch.__file__})", file=sys.stderr)
    if found:
        return 1
    build = f"CUDA {cuda}" if cuda else "CPU"
    print(f"check_torch: torch {version} ({build} build) is the lock's torch=={pin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
