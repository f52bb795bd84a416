"""Loss cost per training step: each term's forward+backward time relative to MONAI's DiceLoss.

Run: .venv/bin/python bench/bench_losses.py  (prints a table; ratios are what to compare).
"""

from __future__ import annotations

import time

import torch

from sizepenalty.losses import build_loss


def time_loss(code: str, z: torch.Tensor, y: torch.Tensor, repeats: int = 10) -> float:
    loss = build_loss(code)
    best = float("inf")
    for _ in range(repeats):
        zz = z.detach().clone().requires_grad_(True)
        t0 = time.perf_counter()
        total, _ = loss(zz, y)
        total.backward()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    torch.manual_seed(0)
    shape = (2, 1, 32, 64, 64)
    z = torch.randn(shape)
    y = (torch.rand(shape) > 0.97).float()
    time_loss("D", z, y, repeats=3)  # warm-up: first calls pay for allocator and kernel setup
    ref = time_loss("D", z, y)
    print(f"batch {shape}, best of 10, CPU threads={torch.get_num_threads()}")
    print(f"{'combo':6s} {'ms':>8s} {'x Dice':>7s}")
    for code in ("D", "S", "DTS", "FSD", "DTF"):
        t = time_loss(code, z, y)
        print(f"{code:6s} {t * 1e3:8.2f} {t / ref:7.2f}")


if __name__ == "__main__":
    main()
