"""Threshold selection on validation, post-processing, and test evaluation of one (combo, fold).

The threshold is picked on the validation split only (pooled validation Dice, thesis §4.5), then
applied once to the test split with small-component removal; test predictions are written as
NIfTI in each case's original geometry. The metrics come from the study's metric profile
(:mod:`sizepenalty.metrics.profiles`): one row per test case, plus one row per reference lesion
for detection by lesion size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sizepenalty.config import StudyConfig
from sizepenalty.data.io import save_nifti_atomic, write_json_atomic, write_text_atomic
from sizepenalty.data.preprocess import load_preprocessed, to_nifti
from sizepenalty.errors import InputError
from sizepenalty.metrics import InstanceRule, get_profile, remove_small_components
from sizepenalty.strata import bin_of

LESION_COLUMNS = (
    "case_id", "combo", "fold", "lesion", "voxels", "volume_ml", "detected_overlap",
    "detected_iou", "iou",
)  # fmt: skip


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
                   "detected_overlap": int(r.detected_overlap),
                   "detected_iou": int(r.detected_iou), "iou": r.iou}
            for r in result.lesions
        ]  # fmt: skip
    return FoldEvaluation(t, scores, cases, lesions)


@dataclass(frozen=True)
class EvaluateJob:
    combo: str
    fold: dict[str, Any]
    pre_dir: Path
    prob_dir: Path
    metrics_csv: Path  # per test case; per-lesion rows go beside it (lesions_csv)
    threshold_json: Path
    nifti_dir: Path | None = None


def lesions_csv(metrics_csv: str | Path) -> Path:
    """``<combo>/fold<k>.csv`` -> ``<combo>/fold<k>_lesions.csv``: one row per reference lesion."""
    p = Path(metrics_csv)
    return p.with_name(f"{p.stem}_lesions.csv")


def write_rows(path: str | Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """A CSV of dict rows (header from the first row, else ``columns``), written atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(rows[0]) if rows else list(columns), lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def run_evaluate(cfg: StudyConfig, job: EvaluateJob) -> FoldEvaluation:
    """The evaluate stage: threshold on validation, test metrics per case and per lesion, and the
    thresholded test predictions as NIfTI."""
    ev = evaluate_fold(cfg, job.combo, job.fold, job.pre_dir, job.prob_dir, job.nifti_dir)
    write_rows(job.metrics_csv, ev.cases, ["case_id"])
    write_rows(lesions_csv(job.metrics_csv), ev.lesions, LESION_COLUMNS)
    scores = {str(k): v for k, v in ev.val_dice.items()}
    write_json_atomic(
        job.threshold_json, {"threshold": ev.threshold, "val_dice_by_threshold": scores}
    )
    return ev


def read_mask(path: str | Path, role: str):
    """A binary mask NIfTI (image, data), or :class:`InputError` naming the file."""
    from sizepenalty.data.cohort import _load_volume  # its CaseError is an InputError

    img, data = _load_volume(role, "mask", Path(path))
    values = np.unique(data)
    if not np.isin(values, (0.0, 1.0)).all():
        raise InputError(f"{role}: mask is not binary (values {values[:5].tolist()}) [{path}]")
    return img, data


def evaluate_pair(
    gt_path: str | Path, pred_path: str | Path, profile: str, rule: InstanceRule,
    min_size: int = 0, removal_connectivity: int = 18,
) -> dict[str, Any]:  # fmt: skip
    """Metrics for one reference/prediction NIfTI pair on the same grid (the ``evaluate`` verb)."""
    from sizepenalty.metrics import case_metrics, isles22_metrics

    gt_img, gt = read_mask(gt_path, "reference")
    pred_img, pred = read_mask(pred_path, "prediction")
    if gt.shape != pred.shape:
        raise InputError(
            f"prediction: shape ({','.join(map(str, pred.shape))}) != reference shape "
            f"({','.join(map(str, gt.shape))}) [{pred_path}]"
        )
    if not np.allclose(gt_img.affine, pred_img.affine, atol=1e-3, rtol=0):
        raise InputError(f"prediction: affine differs from the reference affine [{pred_path}]")
    spacing = tuple(float(z) for z in gt_img.header.get_zooms()[:3])
    if profile == "isles22":
        return isles22_metrics(gt, pred, spacing)
    return case_metrics(gt, pred, spacing, rule, min_size=min_size,
                        removal_connectivity=removal_connectivity)  # fmt: skip
