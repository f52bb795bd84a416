"""What each job's output was made from, checked wherever the study folder lives.

Snakemake decides reruns from file times and from what it recorded in ``.snakemake/`` of the
working directory, keyed by path. Two things escape that: the content of the input data (the
NIfTI files and the manifest are no rule's output, and a corrected mask may keep its time
stamp), and a study folder copied or moved elsewhere (the records stay behind). So every job
also reads a **stamp**, ``<study>/.fingerprints/<stage>/<job>.<fingerprint>`` (a file, empty),
whose name holds the fingerprint of what the job's output depends on: its stage's settings
(:mod:`sizepenalty.stages`) and the content of the data it reads (:class:`DataPlan`). The
workflow's ``fingerprint`` rule makes the stamp just before the job and removes the job's
stamps of other fingerprints. A job whose fingerprint changed finds no stamp of that name and
reruns; one whose fingerprint is unchanged finds its stamp, which travels with the study folder.

What the data part of each fingerprint holds (a case's *content* is the hash of its files'
bytes, :mod:`sizepenalty.data.sources`, with the preprocess settings):

* ``cohort`` (ISLES 2022 root or manifest): the dataset's listing, i.e. the case ids and their
  files, and the manifest's bytes; with ``dataset.skip_invalid`` also each case's content (a
  case may become valid or invalid). A synthetic dataset is the ``synth`` rule's output.
* ``preprocess`` of a case: the case's content.
* ``folds``: each case's reference volume, in case-list order (what the folds are dealt by).
* ``summary``: every case's content and the planned folds.
* ``train``: the run's fold's training and validation cases and their content.
* ``infer`` and ``evaluate``: the run's validation and test cases and their content.
* ``method`` (an external method, one fold): the fold's test cases, their content and the
  content of the method's masks of them.

Everything after that follows Snakemake's own rule (a job reruns when a job it reads reruns):
an inference after its training, an evaluation after its inference, the tables, figures and
report after any evaluation. So a corrected mask reruns that case's preprocessing, the folds
when its volume moved them, the trainings that train or validate on it, the inferences and
evaluations that validate or test on it, and the study's tables, figures and report.

Library code: no Snakemake here (``workflow/rules/common.smk`` calls it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sizepenalty.data.sources import CaseSource, case_source, file_sha256, stat_source

if TYPE_CHECKING:
    from sizepenalty.config import StudyConfig
    from sizepenalty.paths import StudyLayout
    from sizepenalty.runs import RunKey


def digest(value: Any) -> str:
    """A short hash of a JSON-able value (12 hex digits, as the settings fingerprints)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def job_fingerprint(settings: str, data: str | None = None) -> str:
    """A job's stamp fingerprint: its stage's settings fingerprint, with its data's."""
    return settings if data is None else digest([settings, data])


# ----------------------------------------------------------------------------- the listing


def listing(cfg: StudyConfig, study_dir: Path) -> str | None:
    """The data part of the cohort's fingerprint (see the module doc): None for a synthetic
    dataset (the synth rule makes it), else the hash of the dataset's listing. A dataset that
    cannot be listed gets a fingerprint of the problem, so that the cohort job runs and says
    what is wrong."""
    from sizepenalty.data.cohort import discover, shown_paths
    from sizepenalty.errors import InputError

    ds = cfg.dataset
    if ds.source == "synthetic":
        return None
    try:
        cases = discover(ds.source, ds.path)
    except InputError as exc:
        return digest(["unlisted", str(exc)])
    tsv = study_dir / "data" / "cases.tsv"
    # The files as the dataset names them (from the configured path: as stable as it is).
    parts: list[Any] = [[c.case_id, str(c.dwi), str(c.adc), str(c.mask)] for c in cases]
    if ds.source == "manifest":
        parts.append(["manifest", file_sha256(ds.path)])
    if ds.skip_invalid:  # validity depends on the content
        known = _known_tsv(tsv)
        parts.append([case_source(c, shown_paths(c, tsv, study_dir),
                                  known.get(c.case_id)).fingerprint for c in cases])  # fmt: skip
    return digest(parts)


def _known_tsv(tsv: Path) -> dict[str, CaseSource | None]:
    from sizepenalty.data.cohort import read_case_sources

    return read_case_sources(tsv) if tsv.exists() else {}


# ----------------------------------------------------------------------------- the data plan


@dataclass
class DataPlan:
    """The study's data as the workflow plans it: the case list (``data/cases.tsv``) and each
    case's source now (files re-hashed where they changed), the reference volumes and the folds
    the folds job will deal from them, and each job's data fingerprint.

    ``preprocess`` is the preprocess stage's settings fingerprint (part of each case's content as
    the later stages see it). ``unplanned`` says why the folds cannot be planned (a case whose
    volume could not be read: its preprocessing fails and names the problem)."""

    cfg: StudyConfig
    layout: StudyLayout
    preprocess: str
    ids: list[str] = field(default_factory=list)
    sources: dict[str, CaseSource] = field(default_factory=dict)
    folds: dict[str, Any] | None = None
    unplanned: str | None = None
    _content: dict[str, str] = field(default_factory=dict, repr=False)
    _masks: dict[str, dict[str, Path]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, cfg: StudyConfig, layout: StudyLayout, preprocess: str) -> DataPlan:
        """The plan of the case list ``layout.cases`` (which must exist)."""
        from sizepenalty.data.cohort import read_cases_tsv, read_shown_paths

        plan = cls(cfg, layout, preprocess)
        tsv = layout.cases
        files = read_cases_tsv(tsv)
        shown, known = read_shown_paths(tsv), _known_tsv(tsv)
        for case in files:
            cid = case.case_id
            plan.ids.append(cid)
            plan.sources[cid] = plan._source(case, shown[cid], known.get(cid))
        volumes = {cid: plan.sources[cid].lesion_ml for cid in plan.ids}
        missing = [cid for cid, v in volumes.items() if v is None]
        if missing:
            plan.unplanned = f"no reference volume for {', '.join(missing[:3])}"
        else:
            plan.folds = _planned_folds(cfg, volumes)  # type: ignore[arg-type]
            if plan.folds is None:
                plan.unplanned = "the folds cannot be dealt (the folds job says why)"
        return plan

    def _source(self, case, shown: dict[str, str], tsv: CaseSource | None) -> CaseSource:
        """The case's source now: the record of the case list, or else of its preprocessed
        statistics (the fresher after a change), when its files are unchanged; else the files
        hashed again, with the volume of a record of the same content or, failing that, the
        volume read from the files."""
        stats = stat_source(case, shown)
        pre = None
        if not (tsv is not None and stats.matches(tsv) and tsv.lesion_ml is not None):
            pre = _preprocessed_source(self.layout.preprocessed_case(case.case_id, "json"))
        for known in (tsv, pre):
            if known is not None and stats.matches(known) and known.lesion_ml is not None:
                return known
        now = case_source(case, shown, pre if pre is not None and stats.matches(pre) else tsv)
        for known in (tsv, pre):
            if known is not None and known.lesion_ml is not None:
                if known.fingerprint == now.fingerprint:
                    return CaseSource(now.files, known.lesion_ml)
        return CaseSource(now.files, _read_volume(self.cfg, case))

    # ------------------------------------------------------------------------- fingerprints

    def content(self, case_id: str) -> str:
        """A case's content as the stages after preprocessing see it."""
        if case_id not in self._content:
            self._content[case_id] = digest([self.preprocess, self.sources[case_id].fingerprint])
        return self._content[case_id]

    def case(self, case_id: str) -> str:
        """The data part of a case's preprocess job: its files' content."""
        return self.sources[case_id].fingerprint

    def volumes(self) -> str:
        """The data part of the folds job: each case's volume, in case-list order."""
        return digest([[cid, self.sources[cid].lesion_ml] for cid in self.ids])

    def summary(self) -> str:
        """The data part of the dataset summary: every case's content and the planned folds."""
        return digest([self.volumes(), [[cid, self.content(cid)] for cid in self.ids]])

    def run(self, key: RunKey, stage: str) -> str:
        """The data part of a per-run job (``train``: its fold's training and validation cases;
        ``infer``, ``evaluate``: its validation and test cases) with their content."""
        fold = self._fold(key.fold)
        if fold is None:
            return self._no_fold(key.fold)
        roles = ("train", "val") if stage == "train" else ("val", "test")
        return digest([[role, [[c, self.content(c)] for c in fold[role]]] for role in roles])


    def method(self, folder: Path, fold: int) -> str:
        """The data part of an external method's job of one fold: the fold's test cases with
        their content, and the content of the method's masks of those cases (masks are small:
        hashing them at planning costs little, and a touched file reruns nothing)."""
        planned = self._fold(fold)
        if planned is None:
            return self._no_fold(fold)
        if str(folder) not in self._masks:
            self._masks[str(folder)] = _method_masks(Path(folder))
        masks = self._masks[str(folder)]
        return digest([[c, self.content(c), _sha256(masks.get(c))] for c in planned["test"]])

    def _fold(self, fold: int) -> dict[str, Any] | None:
        """The planned fold (its train/val/test case lists), None when it is not planned."""
        if self.folds is None:
            return None
        return {f["fold"]: f for f in self.folds["folds"]}.get(fold)

    def _no_fold(self, fold: int) -> str:
        """The data part of a job whose fold is not planned: why (the job then says it)."""
        if self.folds is None:
            return digest(["unplanned", self.unplanned])
        return digest(["no fold", fold])


def _method_masks(folder: Path) -> dict[str, Path]:
    """A method folder's masks by case id (none when it cannot be read: its jobs say why)."""
    from sizepenalty.methods import MethodError, mask_files

    try:
        return mask_files(folder, "method")
    except (MethodError, OSError):
        return {}


def _sha256(path: Path | None) -> str | None:
    try:
        return file_sha256(path) if path is not None else None
    except OSError:
        return None


def _planned_folds(cfg: StudyConfig, volumes: dict[str, float]) -> dict[str, Any] | None:
    """The folds the folds job will deal (``sizepenalty.data.folds.make_folds`` on the same
    volumes, in case-list order), or None when they cannot be dealt."""
    from sizepenalty.data.folds import FoldError, make_folds

    fc = cfg.folds
    try:
        return make_folds(volumes, fc.k, fc.val_fraction, cfg.seeds.split, fc.assignment)
    except FoldError:
        return None


def _preprocessed_source(path: Path) -> CaseSource | None:
    """The source a case's preprocessed statistics record (None without one)."""
    try:
        return CaseSource.from_dict(json.loads(path.read_text()).get("source"))
    except (OSError, ValueError, AttributeError):
        return None


def _read_volume(cfg: StudyConfig, case) -> float | None:
    """A changed case's reference volume, read as preprocessing reads it (None when the case is
    not valid: its preprocessing stops with the problem)."""
    from sizepenalty.data.cohort import CaseError, lesion_volume_ml, load_case

    try:
        data = load_case(case, cfg.dataset.binarize_labels, cfg.dataset.affine_atol)
    except CaseError:
        return None
    return lesion_volume_ml(data.mask, data.spacing)
