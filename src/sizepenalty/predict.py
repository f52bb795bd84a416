"""Predict new cases with a study's trained models (the ``predict`` verb).

A study that ran (its results folder), one of its arms and a set of cases in; per case a binary
mask and the probability map out, as NIfTI on the input's own grid with its affine and header
orientation, with the predicted volume (mL) and lesion count (``predictions.csv``). Every step is
the study's own, found through its plan (:class:`~sizepenalty.runs.StudyPlan`):

* preprocessing: the study's ``preprocess`` settings
  (:func:`~sizepenalty.data.preprocess.preprocess_case`), the channels rounded to float16 as the
  study's preprocessed files hold them;
* each run's model: its training's ``best.pt`` (the train stage's
  :meth:`~sizepenalty.runs.StudyPlan.canonical` run), applied with the run's inference settings
  (sliding window, the arm's overlap, TTA: its infer job), its map rounded to float16 as the
  study stores it;
* the ensemble: the mean of the selected runs' maps (default: every fold and seed of the arm);
* the threshold: one run's is its validation-selected threshold
  (``metrics/<run>_threshold.json``); several runs' is re-selected from the same candidates by
  the same criterion, pooled validation Dice, over every run's own validation maps
  (:func:`pooled_threshold`);
* post-processing: the map mapped back to the input's grid, thresholded and cleaned of small
  components there (the evaluate stage's :func:`~sizepenalty.evaluate.binarize`).

One run applied to a test case of its fold thus gives the study's own test prediction, voxel for
voxel. Resumable: a case whose mask is written is skipped; every file is written atomically (a
kill leaves no partial file); ``predict.json`` records what made the folder's files, and another
setting into the same folder stops with an error.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sizepenalty.config import StudyConfig, open_study
from sizepenalty.data.cohort import CaseError, CaseFiles, discover_isles22, load_case, read_manifest
from sizepenalty.data.io import save_nifti_atomic, write_json_atomic
from sizepenalty.data.preprocess import Preprocessed, original_nifti, preprocess_case
from sizepenalty.errors import InputError
from sizepenalty.evaluate import (
    DiceCounts,
    PostProcessing,
    best_threshold,
    binarize,
    original_prob,
    validation_counts,
    write_rows,
)
from sizepenalty.paths import StudyLayout
from sizepenalty.runs import RunKey, StudyPlan

MASK = "{}_pred.nii.gz"
"""A case's binary mask (uint8) in the output folder: the name the study's predictions use."""
PROB = "{}_prob.nii.gz"
"""A case's probability map (float32) in the output folder."""
TABLE = "predictions.csv"
RECORD = "predict.json"
COLUMNS = ("case_id", "volume_ml", "lesions", "voxels", "threshold", "mask", "probabilities")


class PredictError(InputError):
    """A study, arm, run or input folder that ``predict`` cannot use; the message names it."""


# ----------------------------------------------------------------------------- inputs


def discover_inputs(path: str | Path) -> list[CaseFiles]:
    """The cases to predict (no masks): an ISLES 2022 root (``rawdata/``; ``derivatives/`` is not
    read), a manifest CSV (``case_id,dwi,adc``; a ``mask`` column is ignored) or a folder of
    ``<case>_dwi.nii.gz`` / ``<case>_adc.nii.gz`` pairs (:func:`image_pairs`)."""
    path = Path(path)
    if path.is_file():
        return read_manifest(path, masks=False)
    if not path.is_dir():
        raise PredictError(f"{path}: no such file or folder (expected an ISLES 2022 root, a "
                           "manifest CSV or a folder of <case>_dwi/<case>_adc NIfTI pairs)")  # fmt: skip
    if (path / "rawdata").is_dir():
        return [CaseFiles(c.case_id, c.dwi, c.adc, None) for c in discover_isles22(path)]
    return image_pairs(path)


def image_pairs(folder: Path) -> list[CaseFiles]:
    """``<case>_dwi.nii[.gz]`` and ``<case>_adc.nii[.gz]`` files of a folder, by case id (sorted).
    A case with one of the two is listed with the missing one's expected name, so that its
    validation names the file (a case error: ``--skip-invalid`` skips it)."""
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(folder.iterdir()):
        for kind in ("dwi", "adc"):
            for ext in (".nii.gz", ".nii"):
                tail = f"_{kind}{ext}"
                if p.is_file() and p.name.endswith(tail) and len(p.name) > len(tail):
                    cid = p.name[: -len(tail)]
                    if kind in found.setdefault(cid, {}):
                        raise PredictError(f"{folder}: case {cid} has two {kind.upper()} files "
                                           f"({found[cid][kind].name}, {p.name})")  # fmt: skip
                    found[cid][kind] = p
    if not found:
        raise PredictError(f"{folder}: no <case>_dwi.nii.gz / <case>_adc.nii.gz files (nor an "
                           "ISLES 2022 rawdata/ folder, nor a manifest CSV)")  # fmt: skip
    return [
        CaseFiles(cid, *(k.get(kind, folder / f"{cid}_{kind}.nii.gz") for kind in ("dwi", "adc")),
                  None)
        for cid, k in sorted(found.items())
    ]  # fmt: skip


def pick_cases(cases: list[CaseFiles], wanted: Sequence[str] | None) -> list[CaseFiles]:
    """The cases of ``wanted`` ids (all when None), or :class:`PredictError` naming unknown ones."""
    if not wanted:
        return cases
    by_id = {c.case_id: c for c in cases}
    unknown = [c for c in wanted if c not in by_id]
    if unknown:
        raise PredictError(f"--case {unknown[0]}: not among the {len(cases)} input case(s)")
    return [by_id[c] for c in dict.fromkeys(wanted)]


# ----------------------------------------------------------------------------- the ensemble


@dataclass(frozen=True)
class Member:
    """One run of the ensemble: its key, its training's checkpoint and its validation-selected
    threshold."""

    key: RunKey
    checkpoint: Path
    threshold: float


@dataclass(frozen=True)
class Ensemble:
    """What ``predict`` applies: the arm's selected runs, their inference settings (the infer
    job's configuration view), the post-processing, the threshold applied (and how it was
    chosen, with the pooled validation Dice of each candidate) and the lesion instances' rule."""

    arm: str
    members: tuple[Member, ...]
    infer: StudyConfig
    post: PostProcessing
    threshold: float
    rule: str
    val_dice: dict[float, float]
    connectivity: int

    def record(self, cfg: StudyConfig) -> dict[str, Any]:
        """What made an output folder's files (``predict.json``): a folder is resumed only with
        the same record."""
        ic = self.infer.infer
        return {
            "arm": self.arm,
            "runs": {m.key.id: {"checkpoint_sha256": _sha256(m.checkpoint),
                                "threshold": m.threshold} for m in self.members},
            "threshold": self.threshold, "threshold_rule": self.rule,
            "val_dice": {str(t): d for t, d in self.val_dice.items()},
            "preprocess": cfg.raw["preprocess"],
            "infer": {"roi": list(ic.roi), "overlap": ic.overlap_for(self.members[0].key.combo),
                      "tta": ic.tta},
            "post_processing": {"min_size": self.post.min_size,
                                "connectivity": self.post.connectivity},
            "lesion_connectivity": self.connectivity,
        }  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def select_runs(
    plan: StudyPlan,
    arm: str,
    seeds: Sequence[int] | None = None,
    folds: Sequence[int] | None = None,
) -> list[RunKey]:
    """The arm's runs, all of them or those of the given seeds and folds (errors name the arm's
    seeds and folds)."""
    found = plan.arm(arm)
    for name, wanted, have in (("seed", seeds, plan.seeds(found)),
                               ("fold", folds, plan.cfg.folds.trained)):  # fmt: skip
        bad = [v for v in wanted or () if v not in have]
        if bad:
            raise PredictError(f"--{name} {bad[0]}: arm {found.label} runs {name}s "
                               f"{', '.join(map(str, have))}")  # fmt: skip
    return [k for k in plan.runs(found)
            if (not seeds or k.seed in seeds) and (not folds or k.fold in folds)]  # fmt: skip


def build_ensemble(plan: StudyPlan, layout: StudyLayout, runs: Sequence[RunKey]) -> Ensemble:
    """The ensemble of ``runs`` (one arm's) from the study folder: each run's checkpoint and
    threshold file (errors name a missing one), the runs' settings, and the threshold to apply
    (one run's own, else :func:`pooled_threshold`)."""
    members = []
    for key in runs:
        checkpoint = layout.run_dir(plan.canonical(key, "train")) / "best.pt"
        if not checkpoint.is_file():
            raise PredictError(f"{key.label}: no trained model {checkpoint} (has the study "
                               "trained this run?)")  # fmt: skip
        threshold = layout.threshold(plan.canonical(key, "evaluate"))
        if not threshold.is_file():
            raise PredictError(f"{key.label}: no validation-selected threshold {threshold} (has "
                               "the study evaluated this run?)")  # fmt: skip
        members.append(Member(key, checkpoint, float(json.loads(threshold.read_text())["threshold"])))
    evaluate = plan.job(runs[0], "evaluate").config  # every run of an arm has its settings
    if len(members) == 1:
        saved = json.loads(layout.threshold(plan.canonical(runs[0], "evaluate")).read_text())
        t, rule = members[0].threshold, "the run's validation-selected threshold"
        scores = {float(k): v for k, v in saved.get("val_dice_by_threshold", {}).items()}
    else:
        t, scores = pooled_threshold(plan, layout, runs, evaluate)
        rule = f"re-selected on the pooled validation maps of the {len(runs)} runs"
    return Ensemble(runs[0].arm.label, tuple(members), plan.job(runs[0], "infer").config,
                    PostProcessing.from_config(evaluate), t, rule, scores,
                    evaluate.metrics.connectivity)  # fmt: skip


def pooled_threshold(
    plan: StudyPlan, layout: StudyLayout, runs: Sequence[RunKey], cfg: StudyConfig
) -> tuple[float, dict[float, float]]:
    """The threshold of an ensemble: the study's candidates and criterion (pooled validation
    Dice, the evaluate stage's :func:`~sizepenalty.evaluate.validation_counts`) over every run's
    own validation cases and maps (``probs/<run>/val``), pooled. Each map is from the model
    that did not train on the case; an ensemble's own map of a validation case would not be
    (the other folds' models trained on it)."""
    total: DiceCounts = {t: (0, 0) for t in cfg.infer.thresholds}
    for key in runs:
        val = _fold(layout, key.fold)["val"]
        probs = layout.probs(plan.canonical(key, "infer"))
        for cid in val:
            for needed in (probs / "val" / f"{cid}.npz", layout.preprocessed_case(cid)):
                if not needed.is_file():
                    raise PredictError(f"{key.label}: the ensemble's threshold needs {needed} "
                                       "(the study's validation map and preprocessed case)")  # fmt: skip
        counts = validation_counts(cfg, val, probs, layout.preprocessed)
        total = {t: (total[t][0] + i, total[t][1] + d) for t, (i, d) in counts.items()}
    return best_threshold(total)


def _fold(layout: StudyLayout, fold: int) -> dict[str, Any]:
    from sizepenalty.data.folds import load_fold

    if not layout.folds.is_file():
        raise PredictError(f"{layout.folds}: the study's folds file is missing")
    return load_fold(layout.folds, fold)


class EnsembleModel:
    """The mean of the members' probability maps of a preprocessed (3, D, H, W) image, each
    member's map rounded to float16 first as the study's infer stage stores it."""

    def __init__(self, ensemble: Ensemble, device: str | None = None, threads: int | None = None):
        import torch

        from sizepenalty.devices import amp_settings, pick_device
        from sizepenalty.infer import load_model

        cfg = ensemble.infer
        requested = device or cfg.train.device
        try:
            self.device = pick_device(requested)
        except RuntimeError as exc:  # cuda asked for, none there
            raise PredictError(f"--device {requested}: no usable CUDA device ({exc})") from None
        if self.device.type == "cpu":
            torch.set_num_threads(threads or cfg.train.threads)
        self.amp = amp_settings(cfg.train.amp, self.device)
        self.models = [load_model(cfg, m.checkpoint, self.device) for m in ensemble.members]
        ic = cfg.infer
        self.window = (ic.roi, ic.overlap_for(ensemble.members[0].key.combo), ic.sw_batch_size,
                       ic.tta)  # fmt: skip

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from sizepenalty.infer import sliding_window_probs

        roi, overlap, batch, tta = self.window
        total = None
        for model in self.models:
            p = sliding_window_probs(model, image, roi, overlap, batch, self.device, self.amp, tta)
            p = p.astype(np.float16).astype(np.float32)
            total = p if total is None else total + p
        return total / len(self.models)


# ----------------------------------------------------------------------------- one case


Probabilities = Callable[[np.ndarray], np.ndarray]
"""A preprocessed (3, D, H, W) image -> its (D, H, W) probability map on the same grid."""


def prepare(files: CaseFiles, cfg: StudyConfig) -> Preprocessed:
    """A validated case (:func:`~sizepenalty.data.cohort.load_case`: a :class:`CaseError` names
    its problem) preprocessed as the study's cases were, channels as its preprocessed files
    hold them (float16)."""
    ds, pp = cfg.dataset, cfg.preprocess
    case = load_case(files, ds.binarize_labels, ds.affine_atol)
    pre = preprocess_case(case, tuple(pp.shape), pp.mode, tuple(pp.clip_percentiles))
    pre.image = pre.image.astype(np.float16).astype(np.float32)  # save/load_preprocessed's round trip
    return pre


def predict_arrays(
    pre: Preprocessed, probs: Probabilities, threshold: float, post: PostProcessing
) -> tuple[np.ndarray, np.ndarray]:
    """A case's probability map (float32) and binary mask (uint8) on its original grid: the map
    on the preprocessed grid mapped back, then thresholded and post-processed there."""
    prob = original_prob(pre, probs(pre.image))
    return prob, binarize(prob, threshold, post)


def output_image(volume_dhw: np.ndarray, pre: Preprocessed, header: Any):
    """A NIfTI image of a (D, H, W) volume on the case's original grid with the input's affine
    and both of its orientations as its header has them (qform and sform, with their codes)."""
    img = original_nifti(volume_dhw, pre)
    img.set_qform(header.get_qform(), code=int(header["qform_code"]))
    img.set_sform(header.get_sform(), code=int(header["sform_code"]))
    return img


@dataclass(frozen=True)
class CaseSummary:
    """What ``predict`` reports per case: the predicted volume and its lesions."""

    case_id: str
    voxels: int
    volume_ml: float
    lesions: int

    def row(self, threshold: float) -> dict[str, Any]:
        return {"case_id": self.case_id, "volume_ml": self.volume_ml, "lesions": self.lesions,
                "voxels": self.voxels, "threshold": threshold, "mask": MASK.format(self.case_id),
                "probabilities": PROB.format(self.case_id)}  # fmt: skip


def summarise(cid: str, mask: np.ndarray, spacing: Sequence[float], connectivity: int) -> CaseSummary:
    """The predicted volume (mL, from the voxel ``spacing`` in mm) and the number of lesions
    (connected components of ``connectivity``: the study's lesion instances) of a mask."""
    from sizepenalty.metrics.instances import label_instances

    voxels = int(np.count_nonzero(mask))
    _, n = label_instances(mask > 0, connectivity)
    return CaseSummary(cid, voxels, voxels * float(np.prod(spacing)) / 1000.0, int(n))


def _input_grid(files: CaseFiles):
    """The input DWI's header and its voxel spacing (D, H, W), as ``load_case`` reads them."""
    import nibabel as nib

    header = nib.load(str(files.dwi)).header
    zooms = [float(z) for z in header.get_zooms()[:3]]
    return header, tuple(zooms[::-1])


def predict_case(files: CaseFiles, cfg: StudyConfig, probs: Probabilities, ens: Ensemble,
                 out: Path) -> CaseSummary:  # fmt: skip
    """Predict one case and write its probability map, then its mask (the mask marks the case
    done), each atomically."""
    pre = prepare(files, cfg)
    prob, mask = predict_arrays(pre, probs, ens.threshold, ens.post)
    header, _ = _input_grid(files)
    save_nifti_atomic(output_image(prob.astype(np.float32), pre, header), out / PROB.format(pre.case_id))
    save_nifti_atomic(output_image(mask.astype(np.uint8), pre, header), out / MASK.format(pre.case_id))
    return summarise(pre.case_id, mask, pre.orig_spacing, ens.connectivity)


def written_summary(files: CaseFiles, out: Path, connectivity: int) -> CaseSummary:
    """The summary of a case predicted before (its mask read back)."""
    import nibabel as nib

    mask = np.asarray(nib.load(str(out / MASK.format(files.case_id))).dataobj).transpose(2, 1, 0)
    return summarise(files.case_id, mask, _input_grid(files)[1], connectivity)


# ----------------------------------------------------------------------------- the stage


class Progress:
    """A plain-text progress bar over cases on ``stream``: redrawn in place on a terminal, one
    line per case otherwise (a log file)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24) -> None:
        self.total, self.done, self.width = total, 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = 0

    def step(self, what: str) -> None:
        self.done += 1
        filled = round(self.width * self.done / self.total) if self.total else self.width
        text = (f"predict [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.done}/{self.total} {what}")  # fmt: skip
        if self.tty:
            self.stream.write("\r" + text.ljust(self._shown))
            self._shown = len(text)
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


@dataclass(frozen=True)
class PredictJob:
    """``sizepenalty predict``'s arguments: the study (results folder or effective config), the
    arm, optionally its seeds and folds (default: all: the ensemble), the cases and output
    folder, optionally some case ids, the device and CPU threads (default: the study's), and
    whether an invalid case is skipped instead of stopping the job."""

    study: Path
    arm: str
    cases: Path
    out: Path
    seeds: tuple[int, ...] | None = None
    folds: tuple[int, ...] | None = None
    case_ids: tuple[str, ...] | None = None
    device: str | None = None
    threads: int | None = None
    skip_invalid: bool = False


@dataclass(frozen=True)
class PredictResult:
    ensemble: Ensemble
    rows: list[dict[str, Any]] = field(default_factory=list)  # per case predicted, input order
    written: int = 0
    resumed: int = 0  # cases written before, skipped
    invalid: list[CaseError] = field(default_factory=list)


def claim(out: Path, record: dict[str, Any], cases: Sequence[CaseFiles]) -> None:
    """Make ``out`` this job's: its ``predict.json`` equal to ``record`` (written if new), or
    :class:`PredictError` when the folder holds another setting's predictions."""
    path = out / RECORD
    record = json.loads(json.dumps(record))
    if path.is_file():
        old = json.loads(path.read_text())
        if old != record:
            differ = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            raise PredictError(f"{path}: the folder holds predictions of another setting (it "
                               f"differs in {', '.join(differ)}); write to another --out or "
                               "empty it")  # fmt: skip
        return
    foreign = [c.case_id for c in cases if (out / MASK.format(c.case_id)).exists()]
    if foreign:
        raise PredictError(f"{out}: holds {MASK.format(foreign[0])} but no {RECORD}: not "
                           "written by sizepenalty predict; write to another --out")  # fmt: skip
    write_json_atomic(path, record)


def run_predict(job: PredictJob, say: Callable[[str], None] = print,
                progress: TextIO | None = None) -> PredictResult:  # fmt: skip
    """The ``predict`` verb (see the module doc): every case not yet written is validated first
    (the first invalid one stops the job before anything is written, or with ``skip_invalid``
    it is named and skipped), then predicted and written; ``say`` gets one line per case (its
    volume and lesion count) and ``predictions.csv`` is rewritten after each."""
    cfg, root = open_study(job.study)
    plan, layout = StudyPlan(cfg), StudyLayout(root)
    ens = build_ensemble(plan, layout, select_runs(plan, job.arm, job.seeds, job.folds))
    cases = pick_cases(discover_inputs(job.cases), job.case_ids)
    out = Path(job.out)
    todo = [c for c in cases if not (out / MASK.format(c.case_id)).exists()]
    invalid = []
    for files in todo:  # all validated before any output
        try:
            load_case(files, cfg.dataset.binarize_labels, cfg.dataset.affine_atol)
        except CaseError as exc:
            if not job.skip_invalid:
                raise
            invalid.append(exc)
    skipped = {e.case_id: e for e in invalid}
    pending = {c.case_id for c in todo} - set(skipped)
    model = EnsembleModel(ens, job.device, job.threads) if pending else None
    claim(out, ens.record(cfg), cases)
    bar, rows, written, resumed = Progress(len(cases), progress), [], 0, 0
    for files in cases:
        cid = files.case_id
        if cid in skipped:
            print(f"skipped invalid case: {skipped[cid]}", file=sys.stderr)
            bar.step(f"{cid} (invalid, skipped)")
            continue
        if cid in pending:
            summary = predict_case(files, cfg, model, ens, out)
            written, note = written + 1, ""
        else:
            summary = written_summary(files, out, ens.connectivity)
            resumed, note = resumed + 1, " (written before)"
        rows.append(summary.row(ens.threshold))
        write_rows(out / TABLE, rows, COLUMNS)
        say(f"{cid}: {summary.volume_ml:.3f} mL, {summary.lesions} lesion(s){note}")
        bar.step(cid)
    if not rows:
        write_rows(out / TABLE, rows, COLUMNS)
    return PredictResult(ens, rows, written, resumed, invalid)
