"""Inference: the sliding-window primitives (also the training's validation monitor uses them)
and the infer stage, which writes a trained (combination, fold)'s probability maps.

Thresholds, post-processing and metrics are :mod:`sizepenalty.evaluate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sizepenalty.config import StudyConfig
from sizepenalty.data.io import save_npz_atomic
from sizepenalty.data.preprocess import load_preprocessed
from sizepenalty.devices import Amp, amp_settings, pick_device
from sizepenalty.model import model_from_config
from sizepenalty.runs import RunKey

_FLIP_AXES = (2, 3, 4)  # depth, height, width of a (B, C, D, H, W) tensor


def sliding_window_probs(
    model: torch.nn.Module,
    image: np.ndarray,
    roi: tuple[int, ...],
    overlap: float,
    sw_batch: int,
    device: torch.device,
    amp: Amp,
    tta: bool = False,
) -> np.ndarray:
    """Sigmoid probabilities for one (C, D, H, W) volume: MONAI sliding window with Gaussian
    blending, optionally averaged over the 8 flips of (D, H, W).

    When the ROI (clipped to the volume, then as MONAI falls back on non-positive sizes) covers
    the whole volume there is a single window: one forward pass gives the same scores, bit for
    bit (:func:`whole_volume_logits`), without the window machinery.
    """
    from monai.inferers import sliding_window_inference
    from monai.utils import fall_back_tuple

    x = torch.from_numpy(image[None]).to(device)
    roi = tuple(min(r, s) for r, s in zip(roi, image.shape[1:]))
    one_window = tuple(fall_back_tuple(roi, image.shape[1:])) == tuple(image.shape[1:])
    flips = [()]
    if tta:
        flips = [
            tuple(a for a, bit in zip(_FLIP_AXES, (i & 1, i & 2, i & 4)) if bit) for i in range(8)
        ]
    total = torch.zeros((1, 1, *image.shape[1:]), device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            if one_window:
                logits = whole_volume_logits(model, xi)
            else:
                logits = sliding_window_inference(
                    xi, roi, sw_batch, model, overlap=overlap, mode="gaussian"
                )
            p = torch.sigmoid(logits.float())
            total += torch.flip(p, dims) if dims else p
    return (total / len(flips))[0, 0].cpu().numpy()


def whole_volume_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What MONAI's Gaussian-blended ``sliding_window_inference`` returns for a window that
    covers the whole (B, C, *spatial) input ``x``, from one forward pass.

    With one window MONAI multiplies the prediction by the Gaussian importance map in place (in
    the prediction's precision: bf16/fp16 under AMP), adds it to a zero output of ``x``'s dtype
    and divides by the map again. The weighting cancels but for rounding (up to 1 ulp of the
    logit in float32), so it is kept, in MONAI's order, to keep the scores bit-identical.
    """
    from monai.data.utils import compute_importance_map

    weight = compute_importance_map(
        tuple(x.shape[2:]), mode="gaussian", sigma_scale=0.125, device=x.device, dtype=x.dtype
    )[None, None]
    logits = model(x)
    logits *= weight
    return logits.to(x.dtype) / weight


def load_model(cfg: StudyConfig, checkpoint: str | Path, device: torch.device) -> torch.nn.Module:
    """The network of ``cfg.model`` with a checkpoint's weights, in eval mode."""
    # The default layout: channels-last 3D gave the same logits, bit for bit, in 0.96-1.08x the
    # time of a CPU inference pass (bench/bench_training.py; training keeps it: ~0.7x a step).
    model = model_from_config(cfg.model).to(device)
    ck = torch.load(checkpoint, map_location=device, weights_only=True)
    model.load_state_dict(ck["model"])
    return model.eval()


@dataclass(frozen=True)
class InferJob:
    key: RunKey
    fold: dict[str, Any]  # the run's fold's entry of the folds file
    pre_dir: Path
    run_dir: Path  # the training's folder (best.pt)
    out_dir: Path  # val/ and test/ probability maps
    device: str | None = None


def run_infer(cfg: StudyConfig, job: InferJob) -> int:
    """The infer stage: float16 probability maps of the fold's validation and test cases from the
    training's best checkpoint, with the combination's overlap and the configured TTA. Returns
    the number of maps written."""
    dev = pick_device(job.device or cfg.train.device)
    if dev.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    amp = amp_settings(cfg.train.amp, dev)
    model = load_model(cfg, Path(job.run_dir) / "best.pt", dev)
    ic = cfg.infer
    overlap = ic.overlap_for(job.key.combo)
    n = 0
    for split in ("val", "test"):
        for cid in job.fold[split]:
            pre = load_preprocessed(Path(job.pre_dir) / f"{cid}.npz")
            prob = sliding_window_probs(
                model, pre.image, ic.roi, overlap, ic.sw_batch_size, dev, amp, tta=ic.tta
            )
            save_npz_atomic(Path(job.out_dir) / split / f"{cid}.npz", prob=prob.astype(np.float16))
            n += 1
    return n
