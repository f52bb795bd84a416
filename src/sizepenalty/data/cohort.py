"""Cohort discovery (ISLES 2022 BIDS layout, manifest CSV) and per-case validation.

Every case is validated before any work uses it. A bad case raises :class:`CaseError`, whose
message is one line naming the case, the file and the problem, e.g.
``sub-strokecase0007: ADC shape (96,96,60) != DWI shape (112,112,72) [.../sub-..._adc.nii.gz]``.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sizepenalty.data.io import fmt_shape
from sizepenalty.data.sources import (
    ROLES,
    CaseSource,
    FileRecord,
    case_source,
    resolve_shown,
    shown_path,
)
from sizepenalty.errors import InputError

if TYPE_CHECKING:
    from sizepenalty.config import StudyConfig


class CaseError(InputError):
    """A case that cannot be used; ``str()`` is the one-line message."""

    def __init__(self, case_id: str, problem: str, path: str | Path | None = None) -> None:
        self.case_id = case_id
        self.problem = problem
        self.path = None if path is None else str(path)
        where = f" [{self.path}]" if self.path else ""
        super().__init__(f"{case_id}: {problem}{where}")


class CohortError(InputError):
    """A cohort-level problem (empty cohort, malformed manifest, duplicate ids)."""


@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    dwi: Path
    adc: Path
    mask: Path | None  # None: a case to predict, without a reference (sizepenalty.predict)


@dataclass
class CaseData:
    """A validated case as (D, H, W) = (z, y, x) arrays plus the original NIfTI geometry."""

    case_id: str
    dwi: np.ndarray  # float32
    adc: np.ndarray  # float32
    mask: np.ndarray  # uint8 in {0, 1}
    affine: np.ndarray  # 4x4 of the original DWI
    spacing: tuple[float, float, float]  # mm, (D, H, W)
    orig_shape: tuple[int, int, int]  # the DWI's (x, y, z) shape as stored in the file


_SUBJECT = re.compile(r"^sub-[A-Za-z0-9]+$")


def _session_files(folder: Path) -> list[Path]:
    """Every file at any depth below the folder's ``ses-*`` folders, sorted (what the glob
    ``ses-*/**/*`` finds, symbolic links to folders not followed)."""
    if not folder.is_dir():
        return []
    found = []
    for ses in folder.iterdir():
        if ses.is_dir() and fnmatch.fnmatchcase(ses.name, "ses-*"):
            for top, _, names in os.walk(ses):
                found += [Path(top) / name for name in names]
    return sorted(found)


def _find(files: list[Path], folder: Path, cid: str, suffix: str) -> Path:
    """The first of ``files`` named ``<cid>_*<suffix>``, else the canonical name in ``folder``
    (so that the error message shows where it was expected)."""
    head = f"{cid}_"  # the glob <cid>_*<suffix>, without compiling a pattern per case
    hits = [p for p in files if len(p.name) >= len(head) + len(suffix)
            and p.name.startswith(head) and p.name.endswith(suffix)]  # fmt: skip
    return hits[0] if hits else folder / "ses-0001" / "dwi" / f"{cid}_ses-0001{suffix}"


def discover_isles22(root: str | Path) -> list[CaseFiles]:
    """Cases of an ISLES 2022 root: ``rawdata/sub-*/ses-*/**/*_{dwi,adc}.nii.gz`` with masks in
    ``derivatives/sub-*/ses-*/*_msk.nii.gz``. FLAIR (another space) is ignored. Missing files are
    reported by :func:`load_case`, not here, so that the error names the case.
    """
    root = Path(root)
    raw = root / "rawdata"
    if not raw.is_dir():
        raise CohortError(f"{root}: not an ISLES 2022 root (no rawdata/ folder)")
    cases = []
    for subj in sorted(p for p in raw.iterdir() if p.is_dir() and _SUBJECT.match(p.name)):
        cid = subj.name
        deriv = root / "derivatives" / cid
        # One walk per folder (the workflow lists the dataset whenever it plans).
        images, masks = _session_files(subj), _session_files(deriv)
        dwi = _find(images, subj, cid, "_dwi.nii.gz")
        adc = _find(images, subj, cid, "_adc.nii.gz")
        mask = _find(masks, deriv, cid, "_msk.nii.gz")
        if not mask.exists():
            mask = deriv / "ses-0001" / f"{cid}_ses-0001_msk.nii.gz"
        cases.append(CaseFiles(cid, dwi, adc, mask))
    if not cases:
        raise CohortError(f"{raw}: no sub-* folders found")
    return cases


MANIFEST_COLUMNS = ("case_id", "dwi", "adc", "mask")


def read_manifest(path: str | Path, masks: bool = True) -> list[CaseFiles]:
    """Cases of a manifest CSV with columns ``case_id,dwi,adc,mask`` (paths relative to the CSV).
    ``masks=False`` (cases to predict): the ``mask`` column is optional and not read."""
    path = Path(path)
    required = MANIFEST_COLUMNS if masks else MANIFEST_COLUMNS[:3]
    try:
        # utf-8-sig: spreadsheets save CSV with a byte-order mark, which would glue onto case_id.
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise CohortError(
                    f"{path}: manifest is missing column(s) {', '.join(missing)}; expected {','.join(required)}"
                )
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except OSError as exc:
        raise CohortError(f"{path}: cannot read manifest: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CohortError(
            f"{path}: manifest is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    cases: list[CaseFiles] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        cid = row["case_id"]
        if not cid or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", cid):
            raise CohortError(
                f"{path}:{line}: case_id {cid!r} is empty or not path-safe (letters, digits, _ . -)"
            )
        if cid in seen:
            raise CohortError(
                f"{path}:{line}: duplicate case_id {cid!r} (first on line {seen[cid]})"
            )
        seen[cid] = line
        empty = [c for c in required[1:] if not row[c]]
        if empty:
            raise CohortError(f"{path}:{line}: case {cid} has no {', '.join(empty)} path")
        files = [path.parent / row[c] for c in required[1:]]
        cases.append(CaseFiles(cid, *files) if masks else CaseFiles(cid, *files, None))
    if not cases:
        raise CohortError(f"{path}: manifest lists no cases")
    return cases


def _load_volume(case_id: str, role: str, path: Path):
    import nibabel as nib

    if not path.exists():
        raise CaseError(case_id, f"{role} file not found", path)
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise CaseError(
            case_id, f"{role} is not a readable NIfTI file ({type(exc).__name__}: {exc})", path
        ) from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CaseError(
            case_id, f"{role} must be a 3D volume, got shape {fmt_shape(img.shape)}", path
        )
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as exc:
        raise CaseError(
            case_id, f"{role} data cannot be read ({type(exc).__name__}: {exc})", path
        ) from None
    return img, data


def load_case(
    files: CaseFiles, binarize_labels: bool = False, affine_atol: float = 1e-3
) -> CaseData:
    """Load and validate one case; raise :class:`CaseError` on the first problem found.

    Checks: files exist and are readable NIfTI; 3D (a trailing singleton 4th dimension is accepted);
    ADC and mask have the DWI's shape and affine (within ``affine_atol``); every value finite; mask
    binary, or — with ``binarize_labels`` — a non-negative label map turned into lesion > 0.
    A case without a mask (``files.mask`` None: a case to predict) gets an empty one.
    """
    cid = files.case_id
    dwi_img, dwi = _load_volume(cid, "DWI", files.dwi)
    adc_img, adc = _load_volume(cid, "ADC", files.adc)
    checked = [("ADC", adc_img, adc, files.adc)]
    if files.mask is not None:
        msk_img, msk = _load_volume(cid, "mask", files.mask)
        checked.append(("mask", msk_img, msk, files.mask))
    else:
        msk = np.zeros(dwi.shape, np.float32)
    for role, img, data, path in checked:
        if data.shape != dwi.shape:
            raise CaseError(
                cid,
                f"{role} shape {fmt_shape(data.shape)} != DWI shape {fmt_shape(dwi.shape)}",
                path,
            )
        if not np.allclose(img.affine, dwi_img.affine, atol=affine_atol, rtol=0):
            diff = float(np.abs(img.affine - dwi_img.affine).max())
            raise CaseError(
                cid,
                f"{role} affine differs from the DWI affine by up to {diff:.4g} (tolerance {affine_atol:g})",
                path,
            )
    for role, _, data, path in [("DWI", dwi_img, dwi, files.dwi), *checked]:
        bad = ~np.isfinite(data)
        if bad.any():
            raise CaseError(cid, f"{role} has {int(bad.sum())} non-finite value(s) (NaN/inf)", path)
    values = np.unique(msk)
    if not np.isin(values, (0.0, 1.0)).all():
        non_integer = not np.all(np.equal(np.mod(values, 1), 0))
        if not binarize_labels or non_integer or values.min() < 0:
            shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
            hint = "" if binarize_labels else " (set dataset.binarize_labels: true for a label map)"
            raise CaseError(cid, f"mask is not binary: values {{{shown}}}{hint}", files.mask)
    mask = (msk > 0).astype(np.uint8)
    zooms = tuple(float(z) for z in dwi_img.header.get_zooms()[:3])
    return CaseData(
        case_id=cid,
        dwi=np.ascontiguousarray(dwi.transpose(2, 1, 0)),
        adc=np.ascontiguousarray(adc.transpose(2, 1, 0)),
        mask=np.ascontiguousarray(mask.transpose(2, 1, 0)),
        affine=np.asarray(dwi_img.affine, dtype=np.float64),
        spacing=(zooms[2], zooms[1], zooms[0]),
        orig_shape=tuple(int(s) for s in dwi.shape),
    )


def discover(
    source: str, path: str | Path | None, synthetic_root: str | Path | None = None
) -> list[CaseFiles]:
    """Cases for a dataset source: ``isles22`` and ``synthetic`` read the ISLES layout, ``manifest`` a CSV."""
    if source == "manifest":
        return read_manifest(path)  # type: ignore[arg-type]
    root = synthetic_root if source == "synthetic" else path
    return discover_isles22(root)  # type: ignore[arg-type]


def validate_cohort(
    cases: list[CaseFiles],
    binarize_labels: bool = False,
    affine_atol: float = 1e-3,
    skip_invalid: bool = False,
    seen: Callable[[CaseFiles, CaseData], None] | None = None,
) -> tuple[list[CaseFiles], list[CaseError]]:
    """Validate every case. Without ``skip_invalid`` the first bad case raises; with it, bad cases
    are collected and returned next to the good ones. ``seen(files, data)`` is called with each
    valid case's data (what the cohort stage records of it)."""
    good: list[CaseFiles] = []
    bad: list[CaseError] = []
    for files in cases:
        try:
            data = load_case(files, binarize_labels, affine_atol)
        except CaseError as exc:
            if not skip_invalid:
                raise
            bad.append(exc)
            continue
        if seen is not None:
            seen(files, data)
        good.append(files)
    if not good:
        raise CohortError("no valid case left" + (f" ({len(bad)} invalid)" if bad else ""))
    return good, bad


CASES_TSV_COLUMNS = ("case_id", "dwi", "adc", "mask")
_RECORD_COLUMNS = ("lesion_ml",
                   *(f"{r}_{k}" for r in ROLES for k in ("size", "mtime_ns", "sha256")))  # fmt: skip


def shown_paths(files: CaseFiles, tsv: str | Path, study_dir: str | Path) -> dict[str, str]:
    """How the case list at ``tsv`` shows a case's files: relative to its folder for files in
    the study folder (a copied or moved study reads its own copy), else absolute."""
    return {r: shown_path(getattr(files, r), Path(tsv).parent, Path(study_dir)) for r in ROLES}


def write_cases_tsv(
    path: str | Path, cases: list[CaseFiles], sources: dict[str, CaseSource] | None = None,
    study_dir: str | Path | None = None,
) -> None:  # fmt: skip
    """The case list: id and files (:func:`shown_paths`; absolute without ``study_dir``), and
    with ``sources`` each case's lesion volume and its files' size, time and hash
    (:mod:`sizepenalty.data.sources`)."""
    from sizepenalty.data.io import write_text_atomic

    columns = [*CASES_TSV_COLUMNS, *(_RECORD_COLUMNS if sources else ())]
    lines = ["\t".join(columns)]
    for c in cases:
        if study_dir is None:
            row = [c.case_id, *(str(getattr(c, r).resolve()) for r in ROLES)]
        else:
            shown = shown_paths(c, path, study_dir)
            row = [c.case_id, *(shown[r] for r in ROLES)]
        if sources:
            src = sources[c.case_id]
            row.append(repr(src.lesion_ml))
            for r in ROLES:
                f = src.files[r]
                row += [str(f.size), str(f.mtime_ns), f.sha256]
        lines.append("\t".join(row))
    write_text_atomic(path, "\n".join(lines) + "\n")


def _rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def read_cases_tsv(path: str | Path) -> list[CaseFiles]:
    """The cases of a case list, in its order; relative paths are relative to its folder."""
    base = Path(path).parent
    return [CaseFiles(r["case_id"], *(resolve_shown(r[k], base) for k in ROLES))
            for r in _rows(path)]  # fmt: skip


def read_case_sources(path: str | Path) -> dict[str, CaseSource | None]:
    """Per case id, the source the cohort stage recorded (None in a list without records)."""
    out: dict[str, CaseSource | None] = {}
    for r in _rows(path):
        try:
            files = {k: FileRecord(r[k], int(r[f"{k}_size"]), int(r[f"{k}_mtime_ns"]),
                                   r[f"{k}_sha256"]) for k in ROLES}  # fmt: skip
            ml = None if r["lesion_ml"] in ("", "None") else float(r["lesion_ml"])
            out[r["case_id"]] = CaseSource(files, ml)
        except (KeyError, TypeError, ValueError):
            out[r["case_id"]] = None
    return out


def read_shown_paths(path: str | Path) -> dict[str, dict[str, str]]:
    """Per case id, its files as the case list shows them (role -> path)."""
    return {r["case_id"]: {k: r[k] for k in ROLES} for r in _rows(path)}


@dataclass(frozen=True)
class CohortResult:
    """What the cohort stage found: the valid cases (in dataset order), the errors of those it
    skipped, and each valid case's source (files and reference volume)."""

    good: list[CaseFiles]
    bad: list[CaseError]
    sources: dict[str, CaseSource]

    @property
    def lesion_free(self) -> list[str]:
        """The valid cases whose reference mask has no lesion voxel."""
        return [c.case_id for c in self.good if self.sources[c.case_id].lesion_ml == 0]


def lesion_volume_ml(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """A reference mask's total lesion volume in mL (the value the folds are dealt by; the
    cohort, preprocess and the workflow's planning compute it with this one function)."""
    return int(mask.sum()) * (float(np.prod(spacing)) / 1000.0)


def run_cohort(
    cfg: StudyConfig, out: str | Path, root: str | Path | None = None, skip_invalid: bool = False
) -> CohortResult:
    """The cohort stage: discover the configured dataset (the synthetic one under ``root``,
    default ``<study>/data/raw``), validate every case and write the case list to ``out`` with
    each case's source (:func:`write_cases_tsv`). With ``skip_invalid`` (or
    ``dataset.skip_invalid``) bad cases are skipped and their errors returned; without it the
    first bad case raises :class:`CaseError`."""
    from sizepenalty.paths import StudyLayout

    ds = cfg.dataset
    synthetic_root = root or StudyLayout(cfg.study_dir).raw
    cases = discover(ds.source, ds.path, synthetic_root)
    skip = skip_invalid or ds.skip_invalid
    known = read_case_sources(out) if Path(out).exists() else {}
    sources: dict[str, CaseSource] = {}

    def seen(files: CaseFiles, data: CaseData) -> None:
        shown = shown_paths(files, out, cfg.study_dir)
        ml = lesion_volume_ml(data.mask, data.spacing)
        sources[files.case_id] = case_source(files, shown, known.get(files.case_id), ml)

    good, bad = validate_cohort(cases, ds.binarize_labels, ds.affine_atol, skip, seen)
    write_cases_tsv(out, good, sources, cfg.study_dir)
    return CohortResult(good, bad, sources)
