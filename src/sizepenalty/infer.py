"""Inference for a trained (combination, fold): probability maps for its validation and test cases.

``predict_fold`` writes float16 probability maps (sliding window with Gaussian blending, optional
8-flip TTA); thresholds and metrics are :mod:`sizepenalty.evaluate`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sizepenalty.config import StudyConfig
from sizepenalty.data.io import save_npz_atomic
from sizepenalty.data.preprocess import load_preprocessed


def predict_fold(
    cfg: StudyConfig,
    combo: str,
    fold: dict[str, Any],
    pre_dir: str | Path,
    run_dir: str | Path,
    out_dir: str | Path,
    device: str | None = None,
) -> int:
    import torch

    from sizepenalty.train import (
        amp_settings,
        load_model_for_inference,
        pick_device,
        sliding_window_probs,
    )

    dev = pick_device(device or cfg.train.device)
    if dev.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    amp = amp_settings(cfg.train.amp, dev)
    model = load_model_for_inference(cfg, run_dir, dev)
    overlap = cfg.infer.overlap_for(combo)
    out_dir = Path(out_dir)
    n = 0
    for split in ("val", "test"):
        for cid in fold[split]:
            pre = load_preprocessed(Path(pre_dir) / f"{cid}.npz")
            prob = sliding_window_probs(
                model,
                pre.image,
                cfg.infer.roi,
                overlap,
                cfg.infer.sw_batch_size,
                dev,
                amp,
                tta=cfg.infer.tta,
            )
            save_npz_atomic(out_dir / split / f"{cid}.npz", prob=prob.astype(np.float16))
            n += 1
    return n


PREDICTIONS_DIR = "predictions"
"""Sub-folder of a training run where the training job leaves its own inference (see below)."""


def prediction_key(cfg: StudyConfig, combo: str, run_dir: str | Path) -> dict[str, Any]:
    """What a fold's probability maps depend on besides the data: the inference settings that
    change them (:meth:`StudyConfig.prediction_settings`) and the exact checkpoint (its SHA-256)."""
    import hashlib

    digest = hashlib.sha256((Path(run_dir) / "best.pt").read_bytes()).hexdigest()
    return cfg.prediction_settings(combo) | {"checkpoint_sha256": digest}


def predict_into_run(
    cfg: StudyConfig, combo: str, fold: dict[str, Any], pre_dir: str | Path, run_dir: str | Path
) -> int:
    """Run :func:`predict_fold` inside the training job, into ``run_dir/predictions``, keyed by
    :func:`prediction_key`. The training process already holds the model and paid for importing
    PyTorch/MONAI; the ``infer`` stage then only copies the maps (see :func:`reuse_predictions`)."""
    import shutil

    from sizepenalty.data.io import write_json_atomic

    dest = Path(run_dir) / PREDICTIONS_DIR
    shutil.rmtree(dest, ignore_errors=True)
    n = predict_fold(cfg, combo, fold, pre_dir, run_dir, dest)
    write_json_atomic(dest / "key.json", prediction_key(cfg, combo, run_dir))
    return n


def reuse_predictions(
    cfg: StudyConfig, combo: str, fold: dict[str, Any], run_dir: str | Path, out_dir: str | Path
) -> int | None:
    """Copy the training job's probability maps to ``out_dir`` when they were made from the same
    checkpoint with the same inference settings and cover the fold's cases; else ``None`` (and the
    caller runs inference itself)."""
    import json
    import shutil

    src = Path(run_dir) / PREDICTIONS_DIR
    key_file = src / "key.json"
    if not key_file.exists() or not (Path(run_dir) / "best.pt").exists():
        return None
    if json.loads(key_file.read_text()) != prediction_key(cfg, combo, run_dir):
        return None
    files = [src / split / f"{cid}.npz" for split in ("val", "test") for cid in fold[split]]
    if not all(f.exists() for f in files):
        return None
    out_dir = Path(out_dir)
    for f in files:
        dest = out_dir / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(f, tmp)
        tmp.replace(dest)
    return len(files)
