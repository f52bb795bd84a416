"""Threshold selection on validation, post-processing, and test evaluation of one (combo, fold).

The threshold is picked on the validation split only (pooled validation Dice, thesis §4.5), then
applied once to the test split with small-component removal; test predictions are written as
NIfTI in each case's original geometry. The metrics come from the study's metric profile
(:mod:`sizepenalty.metrics.profiles`): one row per test case, plus one row per reference lesion
for detection by lesion size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sizepenalty.config import StudyConfig
from sizepenalty.data.io import save_nifti_atomic
from sizepenalty.data.preprocess import load_preprocessed, to_nifti
from sizepenalty.metrics import get_profile, remove_small_components
from sizepenalty.strata import bin_of

LESION_COLUMNS = ("case_id", "combo", "fold", "lesion", "voxels", "volume_ml", "detected", "iou")


@dataclass(frozen=True)
class FoldEvaluation:
    """What evaluating one fold yields: the threshold, the validation Dice per candidate
    threshold, one metrics row per test case and one row per reference lesion."""

    threshold: float
    val_dice: dict[float, float]
    cases: list[dict[str, Any]]
    lesions: list[dict[str, Any]]


def postprocess(prob: np.ndarray, t: float, cfg: StudyConfig) -> np.ndarray:
    """Binary prediction: probabilities >= ``t``, components below ``infer.min_size`` removed."""
    return remove_small_components(prob >= t, cfg.infer.min_size, cfg.infer.connectivity)


def _prob(prob_dir: Path, split: str, cid: str) -> np.ndarray:
    return np.load(prob_dir / split / f"{cid}.npz")["prob"].astype(np.float32)


def select_threshold(
    cfg: StudyConfig, val_ids: list[str], prob_dir: Path, pre_dir: Path
) -> tuple[float, dict[float, float]]:
    """The candidate threshold maximising pooled Dice over the validation cases
    (sum 2|P∩G| / sum(|P|+|G|), after post-processing). Ties go to the threshold closest to 0.5."""
    inter = {t: 0 for t in cfg.infer.thresholds}
    denom = {t: 0 for t in cfg.infer.thresholds}
    for cid in val_ids:
        prob = _prob(prob_dir, "val", cid)
        g = load_preprocessed(pre_dir / f"{cid}.npz").mask > 0
        for t in cfg.infer.thresholds:
            p = postprocess(prob, t, cfg) > 0
            inter[t] += int((p & g).sum())
            denom[t] += int(p.sum()) + int(g.sum())
    scores = {t: (2 * inter[t] / denom[t] if denom[t] else 1.0) for t in cfg.infer.thresholds}
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    return best, scores


def evaluate_fold(
    cfg: StudyConfig,
    combo: str,
    fold: dict[str, Any],
    pre_dir: str | Path,
    prob_dir: str | Path,
    nifti_dir: str | Path | None = None,
) -> FoldEvaluation:
    """Evaluate one trained (combination, fold) from its probability maps (see the module doc)."""
    pre_dir, prob_dir = Path(pre_dir), Path(prob_dir)
    t, scores = select_threshold(cfg, fold["val"], prob_dir, pre_dir)
    mc = cfg.metrics
    profile = get_profile(mc.profile)
    cases, lesions = [], []
    for cid in fold["test"]:
        pre = load_preprocessed(pre_dir / f"{cid}.npz")
        pred = postprocess(_prob(prob_dir, "test", cid), t, cfg)
        if nifti_dir is not None:
            save_nifti_atomic(
                to_nifti(pred.astype(np.uint8), pre), Path(nifti_dir) / f"{cid}_pred.nii.gz"
            )
        result = profile.compute(pre.mask, pred, pre.spacing, mc.instance_rule, mc.eps)
        ref_ml = float(pre.mask.sum()) * pre.voxel_ml
        key = {"case_id": cid, "combo": combo, "fold": fold["fold"]}
        cases.append(
            key | {"threshold": t, "ref_ml": ref_ml, "stratum": bin_of(ref_ml, mc.strata_ml)}
            | result.metrics
        )  # fmt: skip
        lesions += [
            key | {"lesion": r.lesion, "voxels": r.voxels, "volume_ml": r.volume_ml,
                   "detected": int(r.detected), "iou": r.iou}
            for r in result.lesions
        ]  # fmt: skip
    return FoldEvaluation(t, scores, cases, lesions)
