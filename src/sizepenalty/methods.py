"""External methods: any tool's masks, scored with the study's metrics, strata and tables.

A method is a folder of binary NIfTI masks, one per case on that case's original grid, named
``<case>.nii.gz`` (nnU-Net's naming) or ``<case>_pred.nii.gz`` (the study's predictions and
``sizepenalty predict``'s; the ``<case>_prob.nii.gz`` maps beside them are not read). Its masks
are taken as final: no threshold, no small-component removal. Each case is scored as a run's
test case is (:func:`~sizepenalty.evaluate.score_mask`, :func:`~sizepenalty.evaluate.case_rows`),
and its rows carry a run's key columns: ``arm`` and ``combo`` are the method's name, ``variant``
is :data:`EXTERNAL` and ``seed`` is :data:`METHOD_SEED` (no training: one "seed"), with the fold.

Used two ways: in a study (``methods:`` in its config), where the ``method`` rule scores each
method per fold of the study's folds file against the preprocessed cases' original masks
(:func:`run_method`) and aggregate reads the results beside the runs' (:func:`sizepenalty.report.aggregate.collect_methods`);
and on folders, ``sizepenalty evaluate --reference ... --method NAME=DIR``
(:mod:`sizepenalty.report.folders`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sizepenalty.config import StudyConfig
from sizepenalty.data.io import fmt_shape
from sizepenalty.errors import InputError
from sizepenalty.runs import KEY_COLUMNS

EXTERNAL = "external"
"""The ``variant`` column of a method's rows."""
METHOD_SEED = 0
"""The ``seed`` column of a method's rows: a method has no training, so one "seed"."""
MASK_EXTENSIONS = (".nii.gz", ".nii")
NAME_SUFFIXES = ("_pred", "_msk", "_mask")
"""Stripped from a mask file's name (without extension) to give its case id."""


class MethodError(InputError):
    """A method folder or mask that cannot be scored; the message names the method, case and file."""


def mask_files(folder: str | Path, role: str) -> dict[str, Path]:
    """Case id -> mask file of a folder of NIfTI masks (``<case>.nii.gz``, ``<case>_pred``,
    ``_msk`` or ``_mask.nii.gz``; ``*_prob.nii.gz`` maps skipped). ``role`` names the folder in
    errors (``method nnunet``): not a folder, no mask, two files of one case."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MethodError(f"{role}: {folder} is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        ext = next((e for e in MASK_EXTENSIONS if p.name.endswith(e)), None)
        if ext is None or not p.is_file():
            continue
        stem = p.name[: -len(ext)]
        if stem.endswith("_prob"):
            continue
        for suffix in NAME_SUFFIXES:
            if stem.endswith(suffix) and len(stem) > len(suffix):
                stem = stem[: -len(suffix)]
                break
        if stem in found:
            raise MethodError(f"{role}: two masks of case {stem} in {folder}: "
                              f"{found[stem].name}, {p.name}")  # fmt: skip
        found[stem] = p
    if not found:
        raise MethodError(f"{role}: no NIfTI masks (<case>.nii.gz) in {folder}")
    return found


def read_prediction(
    path: Path,
    role: str,
    shape_dhw: Sequence[int],
    affine: np.ndarray | None = None,
    atol: float = 1e-3,
) -> np.ndarray:
    """A method's binary mask as a (D, H, W) uint8 array, checked against its reference's grid:
    the same shape and, when ``affine`` is given, the same affine within ``atol``. Errors name
    ``role`` (method and case) and the file: unreadable, not binary, another grid."""
    from sizepenalty.evaluate import read_mask

    img, data = read_mask(path, role)
    pred = np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.uint8)
    if pred.shape != tuple(shape_dhw):
        raise MethodError(f"{role}: mask shape {fmt_shape(data.shape)} != the reference's "
                          f"{fmt_shape(tuple(shape_dhw)[::-1])} [{path}]")  # fmt: skip
    if affine is not None and not np.allclose(img.affine, affine, atol=atol, rtol=0):
        diff = float(np.abs(img.affine - affine).max())
        raise MethodError(f"{role}: mask affine differs from the reference's by up to {diff:.4g} "
                          f"(tolerance {atol:g}) [{path}]")  # fmt: skip
    return pred


def method_values(name: str, fold: int) -> dict[str, Any]:
    """The key columns of a method's rows (see the module doc)."""
    return dict(zip(KEY_COLUMNS, (name, name, EXTERNAL, METHOD_SEED, int(fold))))


def missing_cases(files: dict[str, Path], needed: Sequence[str], role: str, folder: Path) -> None:
    """:class:`MethodError` listing the ``needed`` cases a method has no mask of."""
    missing = [c for c in needed if c not in files]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MethodError(f"{role}: no mask of case(s) {shown} in {folder} (expected "
                          f"<case>.nii.gz or <case>_pred.nii.gz)")  # fmt: skip


def write_fold(metrics_csv: Path, cases: list[dict], lesions: list[dict]) -> None:
    """A method's per-case rows of one fold and its per-lesion rows beside them (atomic)."""
    from sizepenalty.evaluate import LESION_COLUMNS, lesions_csv, write_rows

    write_rows(metrics_csv, cases, [*KEY_COLUMNS, "case_id"])
    write_rows(lesions_csv(metrics_csv), lesions, LESION_COLUMNS)


# ----------------------------------------------------------------------------- in a study


@dataclass(frozen=True)
class MethodJob:
    """One job of the study's ``method`` rule: a method, a fold's entry of the folds file, the
    preprocessed cases (whose original masks are the references) and the metrics CSV to write."""

    name: str
    fold: dict[str, Any]
    pre_dir: Path
    metrics_csv: Path


def run_method(cfg: StudyConfig, job: MethodJob) -> list[dict[str, Any]]:
    """The ``method`` stage: the method's mask of every test case of the fold, checked against
    the case's original grid (shape, affine within ``dataset.affine_atol``) and scored against
    its reference as supplied; per-case and per-lesion CSVs written. Returns the case rows."""
    from sizepenalty.data.preprocess import load_preprocessed
    from sizepenalty.evaluate import case_rows, score_case

    if job.name not in cfg.methods:
        raise MethodError(f"method {job.name!r}: not one of the study's methods "
                          f"({', '.join(cfg.methods) or 'none configured'})")  # fmt: skip
    folder = Path(cfg.methods[job.name].path)
    role = f"method {job.name}"
    files = mask_files(folder, role)
    missing_cases(files, job.fold["test"], role, folder)
    cases, lesions = [], []
    for cid in job.fold["test"]:
        pre = load_preprocessed(job.pre_dir / f"{cid}.npz")
        pred = read_prediction(files[cid], f"{role}, case {cid}", pre.orig_mask.shape, pre.affine,
                               cfg.dataset.affine_atol)  # fmt: skip
        case, found = case_rows(method_values(job.name, job.fold["fold"]), cid,
                                score_case(pre, pred, cfg.metrics))  # fmt: skip
        cases.append(case)
        lesions += found
    write_fold(job.metrics_csv, cases, lesions)
    return cases


def grid_prediction(cfg: StudyConfig, name: str, pre) -> np.ndarray:
    """A method's mask of a preprocessed case brought to its preprocessed grid (for the case
    overlays, drawn on that grid)."""
    role = f"method {name}, case {pre.case_id}"
    files = mask_files(cfg.methods[name].path, f"method {name}")
    missing_cases(files, [pre.case_id], f"method {name}", Path(cfg.methods[name].path))
    pred = read_prediction(files[pre.case_id], role, pre.orig_mask.shape)
    return pre.geometry.to_grid(pred, pre.mask.shape)
