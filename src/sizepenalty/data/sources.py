"""What each case was made from: its input files' size, modification time and content hash.

The cohort stage records them for every case of the case list (``data/cases.tsv``), the
preprocess stage in each case's statistics (``<case>.json``, key ``source``). When the workflow
plans (:mod:`sizepenalty.provenance`) it compares each case's files with these records: a file
whose path, size and modification time are those recorded is taken to be the file recorded (the
rule of rsync and make), any other is hashed again. So a corrected mask or a replaced DWI is
noticed by its content, whatever its time stamp, and a file that was only touched or copied
reruns nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("dwi", "adc", "mask")
"""The files of a case (:class:`sizepenalty.data.cohort.CaseFiles`), in this order."""


@dataclass(frozen=True)
class FileRecord:
    """One input file as a stage saw it: its path as the case list shows it (relative to the
    case list's folder inside the study, else absolute), size, modification time (ns) and the
    SHA-256 of its bytes (``missing`` for a file that was not there)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str

    def same_file(self, other: FileRecord | None) -> bool:
        """Whether ``other`` names this file with the same size and modification time."""
        return other is not None and (self.path, self.size, self.mtime_ns) == (
            other.path, other.size, other.mtime_ns)  # fmt: skip


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def record_file(path: str | Path, shown: str, known: FileRecord | None = None) -> FileRecord:
    """The record of the file at ``path`` (shown as ``shown``): ``known`` itself when it names
    the same file with the same size and modification time, else the file hashed now. A missing
    file gets the hash ``missing`` (the stage that reads it says what is wrong)."""
    try:
        st = Path(path).stat()
    except OSError:
        return FileRecord(shown, -1, -1, "missing")
    now = FileRecord(shown, st.st_size, st.st_mtime_ns, "")
    if now.same_file(known):
        return known  # type: ignore[return-value]
    try:
        return FileRecord(shown, st.st_size, st.st_mtime_ns, file_sha256(path))
    except OSError:
        return FileRecord(shown, -1, -1, "missing")


@dataclass(frozen=True)
class CaseSource:
    """A case's input files (role -> :class:`FileRecord`) and, once a stage read its mask, the
    reference lesion volume in mL on the original grid (what the folds are dealt by)."""

    files: Mapping[str, FileRecord]
    lesion_ml: float | None = None

    @property
    def fingerprint(self) -> str:
        """The hash of the case's input content (its files' hashes by role; paths, sizes and
        times do not count): equal for a copied or moved dataset, new for any changed byte."""
        text = ";".join(f"{role}={self.files[role].sha256}" for role in ROLES)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def matches(self, other: CaseSource | None) -> bool:
        """Whether ``other`` records the same files, unchanged (size and time)."""
        return other is not None and all(
            self.files[r].same_file(other.files.get(r)) for r in ROLES
        )

    def to_dict(self) -> dict[str, Any]:
        files = {r: [f.path, f.size, f.mtime_ns, f.sha256] for r, f in self.files.items()}
        return {"fingerprint": self.fingerprint, "files": files, "lesion_ml": self.lesion_ml}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CaseSource | None:
        """The source a stage recorded (``to_dict``), or None for none or another format."""
        try:
            files = {r: FileRecord(str(p), int(s), int(t), str(h))
                     for r, (p, s, t, h) in data["files"].items()}  # type: ignore[index]  # fmt: skip
            if set(files) != set(ROLES):
                return None
            ml = data.get("lesion_ml")  # type: ignore[union-attr]
            return cls(files, None if ml is None else float(ml))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def shown_path(path: Path, base: Path, inside: Path) -> str:
    """How a case list shows ``path``: relative to ``base`` (the list's folder) when it lies in
    the study folder ``inside`` (so a copied or moved study reads its own copy), else absolute."""
    path = Path(path).absolute()
    inside = Path(inside).absolute()
    if path == inside or inside in path.parents:
        import os

        return os.path.relpath(path, Path(base).absolute())
    return str(path.resolve())


def resolve_shown(shown: str, base: Path) -> Path:
    """The file a case list's entry names (:func:`shown_path`'s inverse)."""
    p = Path(shown)
    return p if p.is_absolute() else Path(base) / p


def stat_source(files, shown: Mapping[str, str]) -> CaseSource:
    """A case's files as they are now, by path, size and time only (no hashes): to compare with
    a record (:meth:`CaseSource.matches`) without reading the files."""
    records = {}
    for r in ROLES:
        try:
            st = Path(getattr(files, r)).stat()
            records[r] = FileRecord(shown[r], st.st_size, st.st_mtime_ns, "")
        except OSError:
            records[r] = FileRecord(shown[r], -1, -1, "missing")
    return CaseSource(records)


def case_source(files, shown: Mapping[str, str], known: CaseSource | None = None,
                lesion_ml: float | None = None) -> CaseSource:  # fmt: skip
    """The source of a case's files now (``files``: a CaseFiles; ``shown``: role -> path as the
    case list shows it), reusing ``known``'s hashes for unchanged files and, when the content is
    ``known``'s, its volume (else ``lesion_ml``)."""
    records = {r: record_file(getattr(files, r), shown[r],
                              known.files.get(r) if known else None) for r in ROLES}  # fmt: skip
    src = CaseSource(records, lesion_ml)
    if lesion_ml is None and known is not None and src.fingerprint == known.fingerprint:
        src = CaseSource(records, known.lesion_ml)
    return src
