"""One training job = one (loss combination, fold): resumable, deterministic on CPU.

Kept as small functions (data loading, one epoch, validation, checkpointing) around a short loop;
tracking is a callback supplied by the CLI layer, so this module never imports MLflow.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sizepenalty.config import StudyConfig
from sizepenalty.data.io import atomic_path, write_json_atomic, write_text_atomic
from sizepenalty.data.preprocess import load_preprocessed
from sizepenalty.losses import estimate_tau, size_warmup_scale
from sizepenalty.model import model_from_config
from sizepenalty.sampling import PatchDataset, plan_epoch
from sizepenalty.study import loss_from_config

LOG_COLUMNS = ("epoch", "loss", "D", "T", "F", "S", "lr", "val_dice", "epoch_time_s")


@dataclass
class Volumes:
    ids: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    voxel_ml: float


def load_volumes(pre_dir: str | Path, ids: list[str]) -> Volumes:
    pres = [load_preprocessed(Path(pre_dir) / f"{cid}.npz") for cid in ids]
    return Volumes(
        ids, [p.image for p in pres], [p.mask for p in pres], pres[0].voxel_ml if pres else 1.0
    )


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def amp_settings(mode: str, device: torch.device) -> tuple[bool, torch.dtype, bool]:
    """(autocast enabled, dtype, use GradScaler). Mixed precision only on CUDA: bf16 where the card
    supports it (no scaler needed), else fp16 with a GradScaler."""
    if device.type != "cuda" or mode == "off":
        return False, torch.float32, False
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return True, torch.bfloat16, False
    return True, torch.float16, True


def sliding_window_probs(
    model: torch.nn.Module,
    image: np.ndarray,
    roi: tuple[int, ...],
    overlap: float,
    sw_batch: int,
    device: torch.device,
    amp: tuple[bool, torch.dtype, bool],
    tta: bool = False,
) -> np.ndarray:
    """Sigmoid probabilities for one (C, D, H, W) volume: MONAI sliding window with Gaussian
    blending, optionally averaged over the 8 flips of (D, H, W)."""
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(image[None]).to(device)
    roi = tuple(min(r, s) for r, s in zip(roi, image.shape[1:]))
    flips = [()]
    if tta:
        flips = [
            tuple(a for a, bit in zip((2, 3, 4), (i & 1, i & 2, i & 4)) if bit) for i in range(8)
        ]
    total = torch.zeros((1, 1, *image.shape[1:]), device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            logits = sliding_window_inference(
                xi, roi, sw_batch, model, overlap=overlap, mode="gaussian"
            )
            p = torch.sigmoid(logits.float())
            total += torch.flip(p, dims) if dims else p
    return (total / len(flips))[0, 0].cpu().numpy()


def validation_dice(model, vols: Volumes, cfg: StudyConfig, device, amp) -> float:
    """Mean per-case Dice at threshold 0.5 over the validation volumes (no TTA: it is a monitor)."""
    model.eval()
    scores = []
    for img, msk in zip(vols.images, vols.masks):
        p = (
            sliding_window_probs(
                model, img, cfg.infer.roi, cfg.infer.overlap, cfg.infer.sw_batch_size, device, amp
            )
            > 0.5
        )
        g = msk > 0
        denom = p.sum() + g.sum()
        scores.append(1.0 if denom == 0 else 2.0 * (p & g).sum() / denom)
    model.train()
    return float(np.mean(scores)) if scores else float("nan")


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_score: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    skipped: bool = False


EpochCallback = Callable[[dict[str, float]], None]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in LOG_COLUMNS})
    write_text_atomic(path, buf.getvalue())


def train(
    cfg: StudyConfig,
    combo: str,
    fold: dict[str, Any],
    pre_dir: str | Path,
    run_dir: str | Path,
    on_epoch: EpochCallback | None = None,
    device: str | None = None,
    max_epochs: int | None = None,
    fingerprint: str | None = None,
) -> TrainResult:
    """Train (or resume, or skip if finished) one combination on one fold; see the module doc.

    Outputs in ``run_dir``: ``last.pt`` (every epoch, atomic), ``best.pt`` (best validation Dice),
    ``epochs.csv`` and ``done.json`` when all epochs ran. ``max_epochs`` stops early (tests).
    """
    tc = cfg.train
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    done_path, last_path, best_path = (
        run_dir / "done.json",
        run_dir / "last.pt",
        run_dir / "best.pt",
    )
    fingerprint = fingerprint or cfg.digest()
    stale = reset_if_stale(run_dir, fingerprint)
    if stale:
        print(
            f"{combo} fold {fold['fold']}: settings changed since the last run; starting from epoch 0",
            flush=True,
        )
    if done_path.exists():
        return TrainResult(run_dir, tc.epochs, math.nan, -1, skipped=True)
    torch.manual_seed(cfg.seed)
    dev = pick_device(device or tc.device)
    amp = amp_settings(tc.amp, dev)
    if dev.type == "cpu":
        torch.set_num_threads(tc.threads)
    train_v = load_volumes(pre_dir, fold["train"])
    val_v = load_volumes(pre_dir, fold["val"])
    tau = None
    if cfg.losses.tau == "auto":
        tau = estimate_tau([float(m.sum()) for m in train_v.masks], cfg.losses.tau_quantile)
    criterion = loss_from_config(cfg, combo, tau=tau, voxel_ml=train_v.voxel_ml)
    mc = cfg.model
    # channels-last 3D: ~1.6x faster convolutions on CPU (oneDNN) and the layout cuDNN prefers.
    model = model_from_config(mc).to(dev, memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps = math.ceil(len(train_v.ids) * tc.patches_per_volume / tc.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=tc.lr, total_steps=steps * tc.epochs, pct_start=tc.pct_start,
        div_factor=tc.div_factor, final_div_factor=tc.final_div_factor, anneal_strategy="cos",
    )  # fmt: skip
    scaler = torch.amp.GradScaler("cuda", enabled=amp[2])
    start, best, best_epoch, history = 0, -math.inf, -1, []
    if last_path.exists():
        ck = torch.load(last_path, map_location=dev, weights_only=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["torch_rng"])
        if dev.type == "cuda" and "cuda_rng" in ck:
            torch.cuda.set_rng_state(ck["cuda_rng"])
        start, best, best_epoch, history = (
            ck["epoch"],
            ck["best"],
            ck["best_epoch"],
            list(ck["history"]),
        )
    resumed_from = start
    interactive = sys.stderr.isatty()
    meta = {
        "combo": combo,
        "fold": fold["fold"],
        "tau": criterion.terms["S"].tau if "S" in criterion.terms else None,
        "device": str(dev),
        "steps_per_epoch": steps,
    }
    write_json_atomic(run_dir / "train_meta.json", meta)
    stop = tc.epochs if max_epochs is None else min(tc.epochs, max_epochs)
    model.train()
    for epoch in range(start, stop):
        t0 = time.perf_counter()
        batches = plan_epoch(
            train_v.masks, epoch, cfg.seed, tc.patches_per_volume, tc.batch_size, tc.patch_large, tc.patch_small,
            tc.small_prob, tc.pos_ratio_large, tc.pos_ratio_small,
        )  # fmt: skip
        sums = {"loss": 0.0, "D": 0.0, "T": 0.0, "F": 0.0, "S": 0.0}
        loader = _epoch_loader(train_v, batches, tc.augment, tc.workers)
        for b, (x, y) in enumerate(loader):
            criterion.size_scale = size_warmup_scale(
                epoch * steps + b, steps * tc.epochs, cfg.losses.size_warmup
            )
            x = x.to(dev, non_blocking=True, memory_format=torch.channels_last_3d)
            y = y.to(dev, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=amp[1], enabled=amp[0]):
                logits = model(x)
            total, terms = criterion(logits, y)
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            sums["loss"] += float(total.detach())
            for k, v in terms.items():
                sums[k] += float(v.detach())
            if interactive:
                print(
                    f"\r{combo} fold {fold['fold']} epoch {epoch + 1}/{tc.epochs} step {b + 1}/{len(batches)} loss {float(total):.4f}",
                    end="",
                    file=sys.stderr,
                )
        if interactive:
            print(file=sys.stderr)
        row = {k: v / len(batches) for k, v in sums.items()}
        row.update(epoch=epoch + 1, lr=scheduler.get_last_lr()[0], val_dice=math.nan)
        if (epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs:
            row["val_dice"] = validation_dice(model, val_v, cfg, dev, amp)
            if row["val_dice"] > best:
                best, best_epoch = row["val_dice"], epoch + 1
                _save_checkpoint(
                    best_path, {"model": model.state_dict(), "epoch": epoch + 1, "val_dice": best}
                )
        row["epoch_time_s"] = time.perf_counter() - t0
        history.append(row)
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
            "best": best, "best_epoch": best_epoch, "history": history, "fingerprint": fingerprint,
        }  # fmt: skip
        if dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        _save_checkpoint(last_path, state)
        _write_log(run_dir / "epochs.csv", history)
        print(
            f"{combo} fold {fold['fold']} epoch {epoch + 1}/{tc.epochs} loss {row['loss']:.4f} "
            + " ".join(f"{k} {row[k]:.4f}" for k in "DTFS" if k in terms)
            + f" lr {row['lr']:.2e} val_dice {row['val_dice']:.4f} ({row['epoch_time_s']:.1f} s)",
            flush=True,
        )
        if on_epoch is not None:
            on_epoch(row)
    if stop == tc.epochs:
        if not best_path.exists():  # no validation ran (cannot happen with val on the last epoch)
            _save_checkpoint(
                best_path, {"model": model.state_dict(), "epoch": stop, "val_dice": best}
            )
        write_json_atomic(
            done_path,
            {
                "epochs": tc.epochs,
                "best_val_dice": best,
                "best_epoch": best_epoch,
                "fingerprint": fingerprint,
            },
        )
    return TrainResult(run_dir, stop, best, best_epoch, history, resumed_from)


RUN_FILES = (
    "last.pt",
    "best.pt",
    "done.json",
    "epochs.csv",
    "train_meta.json",
    "mlflow_run_id.txt",
    "predictions",
)


def reset_if_stale(run_dir: Path, fingerprint: str) -> bool:
    """Remove a run folder's state when it was produced with other settings (returns True then).

    Snakemake reruns a training when its settings change; resuming the old checkpoint would mix
    two configurations, so the run starts over (and gets a new MLflow run).
    """
    import json

    found = None
    if (run_dir / "done.json").exists():
        found = json.loads((run_dir / "done.json").read_text()).get("fingerprint")
    elif (run_dir / "last.pt").exists():
        # Memory-mapped: only the small fingerprint string is read, not the model and optimizer
        # tensors (hundreds of MB at thesis width; the CLI and train() both call this on resume).
        found = torch.load(
            run_dir / "last.pt", map_location="cpu", weights_only=True, mmap=True
        ).get("fingerprint")
    else:
        return False
    if found == fingerprint:
        return False
    import shutil

    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return True


def _epoch_loader(vols: Volumes, batches: list, augment: bool, workers: int):
    """One DataLoader per epoch over the planned batches (worker processes when ``workers`` > 0)."""
    from torch.utils.data import DataLoader

    flat = [spec for batch in batches for spec in batch]
    index_batches, i = [], 0
    for batch in batches:
        index_batches.append(list(range(i, i + len(batch))))
        i += len(batch)
    ds = PatchDataset(vols.images, vols.masks, flat, augment=augment)
    return DataLoader(
        ds, batch_sampler=index_batches, num_workers=workers, pin_memory=torch.cuda.is_available()
    )


def load_model_for_inference(
    cfg: StudyConfig, run_dir: str | Path, device: torch.device
) -> torch.nn.Module:
    """The best checkpoint (by validation Dice) of a finished run, in eval mode."""
    mc = cfg.model
    model = model_from_config(mc).to(device, memory_format=torch.channels_last_3d)
    ck = torch.load(Path(run_dir) / "best.pt", map_location=device, weights_only=True)
    model.load_state_dict(ck["model"])
    model.eval()
    return model
