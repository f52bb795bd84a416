"""Any method's prediction folders through the study's analysis (``sizepenalty evaluate
--reference REF --method NAME=DIR ... --out DIR``).

References: an ISLES 2022 root (its ``derivatives/`` masks), a manifest CSV
(``case_id,dwi,adc,mask``) or a folder of masks (``<case>.nii.gz``, ``<case>_msk.nii.gz``).
Methods: folders of binary masks matched by case id (:func:`sizepenalty.methods.mask_files`),
each on its reference's grid, taken as final (no threshold, no small-component removal). Every
case is scored against its reference as supplied and its rows are written as a study's external
method's are (:mod:`sizepenalty.methods`), per fold: the test cases of each fold of a folds file,
else every reference case in one fold 0. From there on it is the study's own code: the tables
(:func:`~sizepenalty.report.aggregate.build_tables`,
:func:`~sizepenalty.report.aggregate.write_tables`), Fig. 5.1 and the case overlays
(:mod:`sizepenalty.report.figures`) and the HTML report
(:func:`~sizepenalty.report.html.build_report`). The output folder has a study's layout
(:class:`~sizepenalty.paths.StudyLayout`): ``metrics/methods/<name>/fold<k>.csv``, ``tables/``,
``figures/``, ``report.html``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sizepenalty.config import MethodConfig, StudyConfig, from_dict, open_study
from sizepenalty.errors import InputError
from sizepenalty.methods import (
    mask_files,
    method_values,
    missing_cases,
    read_prediction,
    write_fold,
)
from sizepenalty.paths import StudyLayout
from sizepenalty.runs import arm_label


class FolderError(InputError):
    """A folder evaluation's input that cannot be used; the message names it."""


@dataclass(frozen=True)
class FolderMethod:
    """A method's name (its arm label in the tables) and its folder of masks."""

    name: str
    folder: Path


@dataclass(frozen=True)
class FolderJob:
    """A folder evaluation: the references, the methods, the output folder, and optionally a
    folds file and the folds of it to evaluate (None: all of them). Its comparisons are its
    configuration's (:func:`folder_config`)."""

    reference: Path | None
    methods: tuple[FolderMethod, ...]
    out: Path | None
    folds_file: Path | None = None
    folds: tuple[int, ...] | None = None


def parse_method(text: str) -> FolderMethod:
    """``NAME=DIR`` -> the method. NAME: a lowercase name (``nnunet``) or a combination's thesis
    name (``DTS``, as the study labels it), which the tables show."""
    name, sep, folder = str(text).partition("=")
    if not sep or not name or not folder:
        raise FolderError(f"--method {text!r}: expected NAME=DIR")
    try:
        label = arm_label(name) if "@" not in name else None
    except InputError:
        label = None
    if label is None:
        raise FolderError(f"--method {text!r}: the name must be lowercase letters, digits, _ or - "
                          "(e.g. nnunet) or a combination's name (e.g. DTS)")  # fmt: skip
    return FolderMethod(label, Path(folder))


def folder_config(
    config: str | Path | None,
    methods: Sequence[FolderMethod],
    pairs: Sequence[Sequence[str]] | None,
    metrics: dict[str, Any] | None = None,
) -> StudyConfig:
    """The configuration a folder evaluation runs the study's code with: a study's (``config``:
    its results folder or config file, for its metric settings, strata and bootstrap) or the
    defaults, with ``metrics`` overrides, the methods as its external methods and the
    comparisons (default: the first method against each other)."""
    if not methods:
        raise FolderError("give at least one --method NAME=DIR")
    names = [m.name for m in methods]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FolderError(f"--method {twice[0]}: given twice")
    base = open_study(config)[0] if config else from_dict({})
    if pairs is None:
        pairs = [(names[0], other) for other in names[1:]]
    checked = []
    for pair in pairs:
        labels = []
        for name in pair:
            try:
                label = arm_label(name)
            except InputError:
                label = name
            if label not in names:
                raise FolderError(f"--pair {' '.join(pair)}: {name!r} is not a --method "
                                  f"({', '.join(names)})")  # fmt: skip
            labels.append(label)
        checked.append(tuple(labels))
    return replace(
        base,
        metrics=replace(base.metrics, **(metrics or {})),
        methods={m.name: MethodConfig(m.name, str(m.folder), "") for m in methods},
        report=replace(base.report, pairs=tuple(checked), curves=()),
    )


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Reference:
    """A reference case: its mask and, when the reference names one, its DWI (overlays)."""

    mask: Path
    dwi: Path | None


def reference_cases(path: Path) -> dict[str, Reference]:
    """Case id -> reference of an ISLES 2022 root, a manifest CSV or a folder of masks."""
    from sizepenalty.data.cohort import discover_isles22, read_manifest

    path = Path(path)
    if path.is_file():
        return {c.case_id: Reference(c.mask, c.dwi) for c in read_manifest(path)}
    if not path.is_dir():
        raise FolderError(f"--reference {path}: no such file or folder")
    if (path / "rawdata").is_dir():
        return {c.case_id: Reference(c.mask, c.dwi) for c in discover_isles22(path)}
    return {cid: Reference(p, None) for cid, p in mask_files(path, "reference").items()}


def fold_groups(
    cases: Sequence[str], folds_file: Path | None, folds: Sequence[int] | None
) -> list[tuple[int, list[str]]]:
    """(fold, its test cases) to evaluate: the folds file's test lists (of ``folds``, default
    all), each case one the reference has; without a file, every case in fold 0."""
    if folds_file is None:
        if folds:
            raise FolderError("--fold selects folds of a folds file: give --folds")
        return [(0, list(cases))]
    try:
        entries = {int(f["fold"]): f for f in json.loads(Path(folds_file).read_text())["folds"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FolderError(f"--folds {folds_file}: not a folds file ({exc})") from None
    known = set(cases)
    groups = []
    for k in folds or sorted(entries):
        if k not in entries:
            raise FolderError(f"--fold {k}: {folds_file} has folds {', '.join(map(str, entries))}")
        unknown = [c for c in entries[k]["test"] if c not in known]
        if unknown:
            raise FolderError(f"{folds_file}: fold {k} tests case {unknown[0]}, which the "
                              "reference has no mask of")  # fmt: skip
        groups.append((k, list(entries[k]["test"])))
    return groups


def method_files(methods: Sequence[FolderMethod], refs: dict[str, Reference],
                 needed: Sequence[str]) -> dict[str, dict[str, Path]]:  # fmt: skip
    """Each method's mask files, every one matched to a reference case and none of the
    ``needed`` cases missing (errors name the method, the cases and its folder)."""
    out = {}
    for m in methods:
        role = f"method {m.name}"
        files = mask_files(m.folder, role)
        unmatched = sorted(set(files) - set(refs))
        if unmatched:
            raise FolderError(f"{role}: {files[unmatched[0]].name} (case {unmatched[0]}) matches "
                              f"no reference case ({len(unmatched)} unmatched file(s) in "
                              f"{m.folder})")  # fmt: skip
        missing_cases(files, needed, role, m.folder)
        out[m.name] = files
    return out


def _nifti(path: Path):
    import nibabel as nib

    img = nib.load(str(path))
    return img, np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3]).transpose(2, 1, 0)


# ----------------------------------------------------------------------------- the evaluation


def score_folders(cfg: StudyConfig, job: FolderJob, layout: StudyLayout,
                  refs: dict[str, Reference], groups) -> None:  # fmt: skip
    """Every method's mask of every case of every fold scored against the reference, written
    per method and fold as a study's method rows are."""
    from sizepenalty.evaluate import case_rows, read_mask, score_mask

    files = method_files(job.methods, refs, [c for _, ids in groups for c in ids])

    for fold, ids in groups:
        rows: dict[str, tuple[list, list]] = {m.name: ([], []) for m in job.methods}
        for cid in ids:
            img, data = read_mask(refs[cid].mask, f"reference, case {cid}")
            ref = np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.uint8)
            spacing = tuple(float(z) for z in img.header.get_zooms()[:3])[::-1]
            for m in job.methods:
                pred = read_prediction(files[m.name][cid], f"method {m.name}, case {cid}",
                                       ref.shape, img.affine, cfg.dataset.affine_atol)  # fmt: skip
                case, lesions = case_rows(method_values(m.name, fold), cid,
                                          score_mask(ref, pred, spacing, cfg.metrics))  # fmt: skip
                rows[m.name][0].append(case)
                rows[m.name][1].extend(lesions)
        for name, (cases, lesions) in rows.items():
            write_fold(layout.method_metrics(name, fold), cases, lesions)


def draw_figures(cfg: StudyConfig, result, layout: StudyLayout, job: FolderJob,
                 refs: dict[str, Reference]) -> list[Path]:  # fmt: skip
    """The study's table-driven figures (the forest plot, volume fidelity, Fig. 5.1) and one
    case gallery per comparison (on the reference's grid, over its DWI when the reference names
    one); a study's training figures (Figs. 3.1, 5.2, the τ ablation) have nothing to show here."""
    from sizepenalty.metrics import get_profile
    from sizepenalty.paths import FIGURES, gallery_figure
    from sizepenalty.report import figures as F
    from sizepenalty.report.aggregate import compared_arms
    from sizepenalty.strata import size_bins

    frames, cases, out = result.frames, result.cases, layout.figures
    compared = compared_arms(cfg.report.pairs)
    made = F.fig_forest(frames["table_seeds"], out / FIGURES["forest"])
    made += F.fig_volume(cases, compared, out / FIGURES["volume"])
    made += F.fig_bland_altman(cases, compared, out / FIGURES["bland_altman"])
    made += F.fig_case_metrics(cases, compared, cfg.metrics.strata_ml, out / FIGURES["case_metrics"])
    made += F.fig_dice_box(cases, [m.name for m in job.methods], out / FIGURES["dice_box"])
    improvement = [label for label, _, _ in get_profile(cfg.metrics.profile).columns("improvement")]
    made += F.fig_improvement(frames["table_pairs"], frames["table_strata_stats"],
                              out / FIGURES["improvement"], improvement)  # fmt: skip
    folders = {m.name: m.folder for m in job.methods}
    strata = size_bins(cfg.metrics.strata_ml)
    for i, (a, b) in enumerate(cfg.report.pairs, start=1):
        picked = F.pick_gallery_cases(cases, a, b, strata)
        images, voxel_ml = {}, {}
        for _, row in picked.iterrows():
            cid, fold = str(row["case_id"]), int(row["fold"])
            img, ref = _nifti(refs[cid].mask)
            preds = [_nifti(mask_files(folders[x], f"method {x}")[cid])[1] > 0 for x in (a, b)]
            dwi = refs[cid].dwi
            background = _nifti(dwi)[1] if dwi is not None and dwi.is_file() else np.zeros(ref.shape)
            images[(fold, cid)] = (background, ref > 0, preds[0], preds[1])
            voxel_ml[(fold, cid)] = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
        made += F.fig_gallery(picked, a, b, images, voxel_ml, out / gallery_figure(i),
                              [s.label for s in strata])  # fmt: skip
    return made


def run_folders(cfg: StudyConfig, job: FolderJob):
    """The folder evaluation (see the module doc); returns the tables
    (:class:`~sizepenalty.report.aggregate.StudyTables`)."""
    from sizepenalty.data.io import write_text_atomic
    from sizepenalty.report.aggregate import build_tables, collect_methods, write_tables
    from sizepenalty.report.html import Evaluated, build_report

    if job.reference is None or job.out is None:
        raise FolderError("prediction folders need --reference, --method NAME=DIR and --out")
    refs = reference_cases(job.reference)
    groups = fold_groups(sorted(refs), job.folds_file, job.folds)
    layout = StudyLayout(Path(job.out))
    score_folders(cfg, job, layout, refs, groups)
    names = [m.name for m in job.methods]
    cases, lesions = collect_methods(layout, names, [k for k, _ in groups])
    result = build_tables(cfg, cases, lesions, names)
    write_tables(cfg, result, layout.tables)
    draw_figures(cfg, result, layout, job, refs)
    rows = (
        ("References", str(job.reference)),
        ("Methods (masks taken as final)", "; ".join(f"{m.name}: {m.folder}" for m in job.methods)),
        ("Cases", f"{sum(len(ids) for _, ids in groups)} of the {len(refs)} reference case(s)"),
        ("Folds", f"{job.folds_file}: folds {', '.join(str(k) for k, _ in groups)}"
         if job.folds_file else "none given: every case in one fold"),
        ("Comparisons (baseline, candidate)", "; ".join(f"{a} vs {b}" for a, b in cfg.report.pairs)
         or "none (one method)"),
        ("Bootstrap", f"{cfg.report.bootstrap} resamples, seed {cfg.seeds.bootstrap}"),
    )  # fmt: skip
    text = build_report(cfg, layout.tables, layout.figures,
                        Evaluated(f"Evaluation of {', '.join(names)}", rows))  # fmt: skip
    write_text_atomic(layout.report, text)
    return result
