"""Threshold selection on validation, post-processing, and test evaluation of one (combo, fold).

Everything is scored on each case's original grid, against the reference as supplied: each
probability map (on the preprocessed grid) is mapped back (:meth:`Geometry.to_original`: exact
for crop_pad, trilinear for resample), thresholded, and its components below ``infer.min_size``
voxels are removed there; a lesion the crop cut away is a missed lesion, never a smaller
reference. The threshold is picked on the validation split only (pooled validation Dice, thesis
§4.5), then applied once to the test split; test predictions are written as NIfTI on each case's
original grid with its affine. The metrics come from the study's metric profile
(:mod:`sizepenalty.metrics.profiles`): one row per test case, plus one row per reference lesion
for detection by lesion size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sizepenalty.config import MetricsConfig, StudyConfig
from sizepenalty.data.io import save_nifti_atomic, write_json_atomic, write_text_atomic
from sizepenalty.data.preprocess import Preprocessed, load_preprocessed, original_nifti
from sizepenalty.errors import InputError
from sizepenalty.metrics import CaseResult, InstanceRule, get_profile, remove_small_components
from sizepenalty.runs import KEY_COLUMNS, RunKey
from sizepenalty.strata import bin_of

LESION_COLUMNS = (*KEY_COLUMNS, "case_id", "lesion", "voxels", "volume_ml", "detected_overlap",
                  "detected_iou", "iou")  # fmt: skip


@dataclass(frozen=True)
class FoldEvaluation:
    """What evaluating one fold yields: the threshold, the validation Dice per candidate
    threshold, one metrics row per test case and one row per reference lesion."""

    threshold: float
    val_dice: dict[float, float]
    cases: list[dict[str, Any]]
    lesions: list[dict[str, Any]]


@dataclass(frozen=True)
class PostProcessing:
    """How a thresholded map is cleaned: components smaller than ``min_size`` voxels (counted
    with ``connectivity``: 6, 18 or 26) are removed (thesis: 5 voxels, 18-connectivity)."""

    min_size: int
    connectivity: int

    @classmethod
    def from_config(cls, cfg: StudyConfig) -> PostProcessing:
        return cls(cfg.infer.min_size, cfg.infer.connectivity)


def binarize(prob: np.ndarray, t: float, post: PostProcessing) -> np.ndarray:
    """Binary (uint8) prediction on ``prob``'s own grid: ``prob >= t``, small components removed."""
    return remove_small_components(prob >= t, post.min_size, post.connectivity)


def postprocess(prob: np.ndarray, t: float, cfg: StudyConfig) -> np.ndarray:
    """:func:`binarize` with the study's ``infer.min_size`` and ``infer.connectivity``."""
    return binarize(prob, t, PostProcessing.from_config(cfg))


def original_prob(pre: Preprocessed, prob: np.ndarray) -> np.ndarray:
    """A probability map on the preprocessed grid mapped to the case's original grid (float32;
    trilinear for resample, exact for crop_pad, 0 where the crop cut the volume)."""
    if tuple(prob.shape) != tuple(pre.mask.shape):
        raise InputError(
            f"{pre.case_id}: probability map shape {prob.shape} != preprocessed grid "
            f"{pre.mask.shape}; rerun infer after preprocess"
        )
    return pre.geometry.to_original(prob.astype(np.float32, copy=False), order=1)


def predict_original(
    pre: Preprocessed, prob: np.ndarray, t: float, post: PostProcessing
) -> np.ndarray:
    """The binary prediction (uint8, (D, H, W)) on the case's original grid from a probability
    map on its preprocessed grid: mapped back, thresholded at ``t`` and post-processed there."""
    return binarize(original_prob(pre, prob), t, post)


@dataclass(frozen=True)
class CaseScore:
    """One case scored on its original grid: the reference volume, its size stratum and what
    the metric profile computed (per-case metrics, one record per reference lesion)."""

    ref_ml: float
    stratum: str
    result: CaseResult


def score_case(pre: Preprocessed, pred: np.ndarray, mc: MetricsConfig) -> CaseScore:
    """Score a binary prediction on the case's original grid (:func:`predict_original`) against
    the reference as supplied (``pre.orig_mask``, with the original spacing)."""
    if tuple(pred.shape) != tuple(pre.orig_mask.shape):
        raise ValueError(
            f"{pre.case_id}: prediction shape {pred.shape} is not the original grid "
            f"{pre.orig_mask.shape}; map it with predict_original"
        )
    return score_mask(pre.orig_mask, pred, pre.orig_spacing, mc)


def score_mask(
    ref: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float], mc: MetricsConfig
) -> CaseScore:
    """Score a binary (D, H, W) prediction against a reference on the same grid of voxel
    ``spacing`` (mm, D, H, W) with the study's metric profile, instance rule and strata."""
    profile = get_profile(mc.profile)
    result = profile.compute(ref, pred, spacing, mc.instance_rule, mc.eps)
    ref_ml = float(ref.sum()) * (float(np.prod(spacing)) / 1000.0)
    return CaseScore(ref_ml, bin_of(ref_ml, mc.strata_ml), result)


def case_rows(
    values: dict[str, Any], cid: str, score: CaseScore, extra: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The per-case metrics row and the per-lesion rows of a scored case: the run's (or method's)
    key columns ``values``, the case id, ``extra`` columns (a run's threshold), the reference
    volume and stratum, then the profile's metrics; one row per reference lesion."""
    row = values | {"case_id": cid}
    case = row | (extra or {}) | {"ref_ml": score.ref_ml, "stratum": score.stratum}
    lesions = [
        row | {"lesion": r.lesion, "voxels": r.voxels, "volume_ml": r.volume_ml,
               "detected_overlap": int(r.detected_overlap),
               "detected_iou": int(r.detected_iou), "iou": r.iou}
        for r in score.result.lesions
    ]  # fmt: skip
    return case | score.result.metrics, lesions


def _prob(prob_dir: Path, split: str, cid: str) -> np.ndarray:
    return np.load(prob_dir / split / f"{cid}.npz")["prob"].astype(np.float32)


def select_threshold(
    cfg: StudyConfig, val_ids: list[str], prob_dir: Path, pre_dir: Path
) -> tuple[float, dict[float, float]]:
    """The candidate threshold maximising pooled Dice over the validation cases
    (sum 2|P∩G| / sum(|P|+|G|) in voxels, on each case's original grid against its original
    mask, after post-processing there). Ties go to the threshold closest to 0.5."""
    return best_threshold(validation_counts(cfg, val_ids, prob_dir, pre_dir))


DiceCounts = dict[float, tuple[int, int]]
"""Candidate threshold -> (|P∩G|, |P| + |G|) in voxels, summed over validation cases: the pooled
Dice is 2|P∩G| / (|P| + |G|)."""


def validation_counts(
    cfg: StudyConfig, val_ids: list[str], prob_dir: Path, pre_dir: Path
) -> DiceCounts:
    """Per candidate threshold, the voxel counts of pooled Dice over the validation cases
    (|P∩G| and |P| + |G|, on each case's original grid after post-processing there): what
    :func:`best_threshold` picks from; counts of several runs add up (``predict``'s ensemble)."""
    post = PostProcessing.from_config(cfg)
    inter = {t: 0 for t in cfg.infer.thresholds}
    denom = {t: 0 for t in cfg.infer.thresholds}
    for cid in val_ids:
        pre = load_preprocessed(pre_dir / f"{cid}.npz")
        prob = original_prob(pre, _prob(prob_dir, "val", cid))  # mapped once, for every t
        g = pre.orig_mask > 0
        for t in cfg.infer.thresholds:
            p = binarize(prob, t, post) > 0
            inter[t] += int((p & g).sum())
            denom[t] += int(p.sum()) + int(g.sum())
    return {t: (inter[t], denom[t]) for t in cfg.infer.thresholds}


def best_threshold(counts: DiceCounts) -> tuple[float, dict[float, float]]:
    """The threshold of the highest pooled Dice (1 where nothing is predicted or referenced;
    ties go to the threshold closest to 0.5) and the Dice of every candidate."""
    scores = {t: (2 * i / d if d else 1.0) for t, (i, d) in counts.items()}
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    return best, scores


def evaluate_fold(
    cfg: StudyConfig,
    key: RunKey,
    fold: dict[str, Any],
    pre_dir: str | Path,
    prob_dir: str | Path,
    nifti_dir: str | Path | None = None,
) -> FoldEvaluation:
    """Evaluate one run from its probability maps (see the module doc); every row carries the
    run's key columns (:data:`sizepenalty.runs.KEY_COLUMNS`)."""
    pre_dir, prob_dir = Path(pre_dir), Path(prob_dir)
    t, scores = select_threshold(cfg, fold["val"], prob_dir, pre_dir)
    post = PostProcessing.from_config(cfg)
    cases, lesions = [], []
    for cid in fold["test"]:
        pre = load_preprocessed(pre_dir / f"{cid}.npz")
        pred = predict_original(pre, _prob(prob_dir, "test", cid), t, post)
        if nifti_dir is not None:
            save_nifti_atomic(original_nifti(pred, pre), Path(nifti_dir) / f"{cid}_pred.nii.gz")
        case, found = case_rows(key.values(), cid, score_case(pre, pred, cfg.metrics),
                                {"threshold": t})  # fmt: skip
        cases.append(case)
        lesions += found
    return FoldEvaluation(t, scores, cases, lesions)


@dataclass(frozen=True)
class EvaluateJob:
    key: RunKey
    fold: dict[str, Any]
    pre_dir: Path
    prob_dir: Path
    metrics_csv: Path  # per test case; per-lesion rows go beside it (lesions_csv)
    threshold_json: Path
    nifti_dir: Path | None = None


def lesions_csv(metrics_csv: str | Path) -> Path:
    """``.../fold<k>.csv`` -> ``.../fold<k>_lesions.csv``: one row per reference lesion."""
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
    ev = evaluate_fold(cfg, job.key, job.fold, job.pre_dir, job.prob_dir, job.nifti_dir)
    write_rows(job.metrics_csv, ev.cases, [*KEY_COLUMNS, "case_id"])
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
