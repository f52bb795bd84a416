"""Training throughput: can the patch loader keep the model fed?

Prints, on this machine:
  * the default recipe (config.yaml's network, batch and patch, ``train.threads`` threads):
    a training step (forward + DTS loss + backward + clipping + AdamW) and an inference forward
    pass with channels-last 3D against contiguous tensors, and the validation of one volume
    in one forward pass (what ``sliding_window_probs`` does when the ROI covers the volume)
    against MONAI's sliding window, with the network and with a trivial predictor (the window
    machinery's own cost) — each from medians over interleaved repeats in the same run;
  * loader throughput — patches/s of one worker process producing thesis-style patches with the
    full augmentation (flips, elastic, cutout, intensity, noise, gamma; mismatch recomputed), and the
    same with N worker processes through a DataLoader;
  * model step time — forward + backward + AdamW step of the thesis-width network (base 32,
    depth 5, ASPP, attention) on a 2x3x32x64x64 batch with the DTS loss (CPU, or CUDA with AMP and
    the thesis batch of 18x3x32x128x128 when a GPU is present);
  * the ratio "patches the loader makes per second / patches a step consumes per second", i.e. how
    many workers it takes to keep the model busy.

Run: .venv/bin/python bench/bench_training.py [--workers 2] [--steps 5] [--default-only]
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sizepenalty.config import load_config
from sizepenalty.infer import whole_volume_logits
from sizepenalty.losses import build_loss
from sizepenalty.model import build_model, count_parameters, model_from_config
from sizepenalty.sampling import PatchDataset, plan_epoch


def synthetic_volumes(n: int, shape: tuple[int, int, int], seed: int = 0):
    """Random DWI/ADC volumes with a few blob lesions (the loader's cost does not depend on realism)."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    zz, yy, xx = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    for _ in range(n):
        mask = np.zeros(shape, np.uint8)
        for _ in range(3):
            c = [rng.integers(4, s - 4) for s in shape]
            r = rng.uniform(2, 6)
            mask[((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= r * r] = 1
        dwi = rng.normal(0.3, 0.1, shape).astype(np.float32) + mask
        adc = rng.normal(0.6, 0.1, shape).astype(np.float32) - 0.3 * mask
        images.append(np.stack([dwi, adc, dwi - adc]).astype(np.float32))
        masks.append(mask)
    return images, masks


def loader_rate(images, masks, patch, n_patches: int, workers: int) -> float:
    """Augmented patches per second through a DataLoader with ``workers`` processes (0 = inline)."""
    from torch.utils.data import DataLoader

    per_volume = math.ceil(n_patches / len(images))
    batches = plan_epoch(
        masks, 0, 0, per_volume, 2, patch, tuple(p // 2 for p in patch), 0.2, 0.7, 1.0
    )
    flat = [s for b in batches for s in b]
    ds = PatchDataset(images, masks, flat, augment=True)
    dl = DataLoader(ds, batch_size=2, num_workers=workers, persistent_workers=False)
    it = iter(dl)
    next(it)  # start-up (worker spawn, transform construction) is not throughput
    t0, n = time.perf_counter(), 0
    for x, _ in it:
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def step_time(batch: tuple[int, ...], device: torch.device, amp: bool, steps: int) -> float:
    """Median seconds per training step of the thesis-width network."""
    model = build_model(32, 5, 0.2).to(device, memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    loss = build_loss("DTS")
    x = torch.randn(batch, device=device).to(memory_format=torch.channels_last_3d)
    y = (torch.rand((batch[0], 1, *batch[2:]), device=device) > 0.98).float()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            logits = model(x)
        total, _ = loss(logits, y)
        total.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, called in rotating order (after one warm-up)."""
    names, times = list(fns), {name: [] for name in fns}
    for name in names:
        fns[name]()
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def default_recipe(repeats: int) -> None:
    """Channels-last vs contiguous, and validation with and without windows, for config.yaml."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.train.threads)
    print(f"default recipe ({cfg.model.base_filters} base filters, depth {cfg.model.depth}), "
          f"{cfg.train.threads} thread(s), medians of {repeats} interleaved repeats:")  # fmt: skip
    net = layouts(cfg, repeats)
    validation(cfg, net, repeats)
    torch.set_num_threads(threads)


def layouts(cfg, repeats: int) -> torch.nn.Module:
    """Print a training step's and an inference forward pass's time, channels-last 3D against
    contiguous; return the channels-last network (as training holds it)."""
    tc = cfg.train
    loss = build_loss("DTS")
    x = torch.rand(tc.batch_size, 3, *tc.patch_large)
    y = (torch.rand(tc.batch_size, 1, *tc.patch_large) > 0.97).float()
    volume = torch.rand(1, 3, *cfg.infer.roi)
    nets = {}
    for layout in ("contiguous", "channels-last"):
        torch.manual_seed(0)
        fmt = torch.channels_last_3d if layout == "channels-last" else torch.contiguous_format
        net = model_from_config(cfg.model).to(memory_format=fmt)
        opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        nets[layout] = (net, opt, x.to(memory_format=fmt), volume.to(memory_format=fmt))

    def step(layout: str) -> None:
        net, opt, xb, _ = nets[layout]
        net.train()
        opt.zero_grad(set_to_none=True)
        total, _ = loss(net(xb), y)
        total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
        opt.step()

    def forward(layout: str) -> None:
        net, _, _, vol = nets[layout]
        net.eval()
        with torch.no_grad():
            net(vol)

    for what, fn, shape in (("training step", step, tuple(x.shape)),
                            ("inference forward", forward, tuple(volume.shape))):  # fmt: skip
        t = interleaved({k: functools.partial(fn, k) for k in nets}, repeats)
        print(f"  {what} {shape}: contiguous {t['contiguous'] * 1e3:.1f} ms, channels-last "
              f"{t['channels-last'] * 1e3:.1f} ms = {t['channels-last'] / t['contiguous']:.2f}x")  # fmt: skip
    return nets["channels-last"][0]


def validation(cfg, net: torch.nn.Module, repeats: int) -> None:
    """Print one validation volume's time through MONAI's sliding window against one forward
    pass, with the network and with a trivial predictor."""
    from monai.inferers import sliding_window_inference

    net.eval()
    ic = cfg.infer
    volume = torch.rand(1, 3, *ic.roi)

    def trivial(t: torch.Tensor) -> torch.Tensor:  # isolates the window machinery's own cost
        return t[:, :1] * 2.0

    def windows(predictor) -> None:
        sliding_window_inference(volume, tuple(ic.roi), ic.sw_batch_size, predictor,
                                 overlap=ic.overlap, mode="gaussian")  # fmt: skip

    with torch.no_grad():
        t = interleaved({
            "window": functools.partial(windows, net),
            "direct": functools.partial(whole_volume_logits, net, volume),
            "window-trivial": functools.partial(windows, trivial),
            "direct-trivial": functools.partial(whole_volume_logits, trivial, volume),
        }, repeats)  # fmt: skip
    print(f"  validation of one {tuple(volume.shape)} volume, ROI {tuple(ic.roi)}: MONAI sliding "
          f"window {t['window'] * 1e3:.1f} ms, one forward pass (whole_volume_logits) "
          f"{t['direct'] * 1e3:.1f} ms = {t['direct'] / t['window']:.2f}x; without the network "
          f"(a trivial predictor) {t['window-trivial'] * 1e3:.2f} ms vs "
          f"{t['direct-trivial'] * 1e3:.2f} ms")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers for the second loader figure"
    )
    ap.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    ap.add_argument("--repeats", type=int, default=21, help="default-recipe repeats per variant")
    ap.add_argument("--default-only", action="store_true", help="only the default-recipe figures")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, CUDA {torch.cuda.is_available()}"
    )
    default_recipe(args.repeats)
    if args.default_only:
        return
    print(f"thesis-width model: {count_parameters(build_model(32, 5, 0.2)):,} parameters")

    images, masks = synthetic_volumes(6, (32, 112, 112))
    patch = (32, 64, 64)
    inline = loader_rate(images, masks, patch, 24, 0)
    pooled = loader_rate(images, masks, patch, 48, args.workers)
    print(
        f"loader, {patch} patches, full augmentation: {inline:.1f} patches/s in one process; "
        f"{pooled:.1f} patches/s with {args.workers} workers ({pooled / max(args.workers, 1):.1f} per worker)"
    )

    cpu_batch = (2, 3, *patch)
    t_cpu = step_time(cpu_batch, torch.device("cpu"), False, args.steps)
    consume = cpu_batch[0] / t_cpu
    print(
        f"CPU step, batch {cpu_batch}: {t_cpu:.2f} s/step = {consume:.2f} patches/s consumed; "
        f"one loader process makes {inline / consume:.1f}x that"
    )

    if torch.cuda.is_available():
        gpu_batch = (18, 3, 32, 128, 128)
        big = loader_rate(images, masks, (32, 128, 128), 36, 0)
        t_gpu = step_time(gpu_batch, torch.device("cuda"), True, args.steps)
        need = gpu_batch[0] / t_gpu
        print(
            f"GPU step (bf16 AMP), batch {gpu_batch}: {t_gpu:.3f} s/step = {need:.1f} patches/s; "
            f"one loader process makes {big:.1f} patches/s -> {math.ceil(need / big)} workers keep it fed"
        )


if __name__ == "__main__":
    main()
