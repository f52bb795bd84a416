"""The train stage: one (loss combination, fold), resumable to the step and deterministic on CPU.

:func:`train` reads top-down: set up (or resume) a :class:`Session`, then per epoch
:func:`run_epoch`, :func:`validate` and :func:`checkpoint`. Tracking is a callback, so this loop
never touches MLflow; :func:`run_train` (the stage's entry) wires the run's record, the GPU slot
and the stop signals around it.

Once training runs, a stop request (SIGTERM, or SIGUSR1 — what SLURM sends before a wall-time
kill) finishes the current optimiser step (during validation: the next one), writes ``last.pt`` atomically with the
position inside the epoch and exits non-zero (:class:`Interrupted`); the next run resumes from
that step and ends with the same weights as an uninterrupted one. Before that (loading data,
waiting for a GPU slot) a stop signal simply ends the process: nothing new to save.

``last.pt`` is written when it matters (:class:`CheckpointClock`): on a stop signal, every
``train.checkpoint_minutes`` (checked after each optimiser step), with every new ``best.pt`` (so
a resumed run never holds a best model from epochs it re-runs) and at the end; 0 minutes = after
every epoch. A kill -9 loses at most those minutes: the run resumes from its last checkpoint and
re-runs the epochs after it (to the same weights on a CPU).
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sizepenalty.combos import LETTERS
from sizepenalty.config import StudyConfig
from sizepenalty.data.io import atomic_path, write_json_atomic, write_text_atomic
from sizepenalty.data.preprocess import load_preprocessed
from sizepenalty.devices import Amp, amp_settings, describe, pick_device
from sizepenalty.infer import sliding_window_probs
from sizepenalty.losses import CombinedLoss, estimate_tau, size_warmup_scale
from sizepenalty.metrics import dice_score
from sizepenalty.model import model_from_config
from sizepenalty.runs import RunKey
from sizepenalty.sampling import PatchDataset, crop_patch, plan_epoch
from sizepenalty.study import loss_from_config

LOG_COLUMNS = ("epoch", "loss", *LETTERS, "lr", "val_dice", "epoch_time_s")
RUN_FILES = ("last.pt", "best.pt", "done.json", "epochs.csv", "train_meta.json")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


_now = time.monotonic  # the checkpoint clock (a test moves it)


@dataclass
class CheckpointClock:
    """When ``last.pt`` is due besides stop signals, new bests and the end: ``minutes`` after the
    last write (``train.checkpoint_minutes``), asked after every optimiser step and at each
    epoch's end; ``minutes == 0`` = at every epoch's end (and never inside an epoch)."""

    minutes: float
    last: float = field(default_factory=lambda: _now())

    def due(self, epoch_end: bool) -> bool:
        if not self.minutes:
            return epoch_end
        return _now() - self.last >= 60.0 * self.minutes

    def reset(self) -> None:
        self.last = _now()


VALIDATION_PATCH_SEED = 0
"""Seed of the validation patches (``train.validation.mode: patches``): the same patches for
every run, whatever its training seed, so validation scores compare across runs."""


@dataclass(frozen=True)
class TrainJob:
    key: RunKey
    fold: dict[str, Any]  # the run's fold's entry of the folds file
    pre_dir: Path
    run_dir: Path
    fingerprint: str  # the train stage's settings: a run made with others starts over
    parent_run_file: Path | None = None  # the study's MLflow parent run (its id)
    device: str | None = None
    max_epochs: int | None = None  # stop early (tests)


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_score: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    skipped: bool = False
    device: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: setup, epochs


class Interrupted(Exception):
    """A stop signal arrived; the checkpoint holds the position to resume from."""

    def __init__(self, signum: int) -> None:
        super().__init__(
            f"stopped by {signal.Signals(signum).name}; resume with --rerun-incomplete"
        )
        self.signum = signum


class StopFlag:
    """Set by a stop signal; the loop checks it after every optimiser step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        self.signum = signum

    def install(self) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, self)


@dataclass
class Volumes:
    ids: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    voxel_ml: float


def load_volumes(pre_dir: str | Path, ids: list[str]) -> Volumes:
    pres = [load_preprocessed(Path(pre_dir) / f"{cid}.npz") for cid in ids]
    return Volumes(ids, [p.image for p in pres], [p.mask for p in pres],
                   pres[0].voxel_ml if pres else 1.0)  # fmt: skip


@dataclass
class Session:
    """Everything one training holds, and where it stands: ``epoch`` epochs done, plus ``step``
    optimiser steps (with their loss ``sums``) into the next one. ``state`` is the fingerprint
    its checkpoints carry: the planned settings and the numerics the device implies."""

    cfg: StudyConfig
    job: TrainJob
    device: torch.device
    amp: Amp
    train_v: Volumes
    val_v: Volumes
    criterion: CombinedLoss
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    warmup: float
    epoch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    best: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    resume_rng: torch.Tensor | None = None
    state: str = ""
    val_patches: list | None = None  # the validation patches (patches mode), made once
    clock: CheckpointClock = field(default_factory=lambda: CheckpointClock(0.0))
    saved: tuple[int, int] | None = None  # the (epoch, step) last.pt holds, once written here


def run_state(job: TrainJob, amp: Amp) -> str:
    """What a run folder's checkpoints must match to be resumed: the planned settings
    (``job.fingerprint``, which leaves execution settings out) and the AMP mode the device
    implies (a bf16 checkpoint is not resumed on a CPU, whatever the device setting says)."""
    return f"{job.fingerprint}-{amp.mode}"


def setup(cfg: StudyConfig, job: TrainJob, dev: torch.device, amp: Amp) -> Session:
    """Data, loss, model, optimiser and schedule; resumed from ``last.pt`` when there is one."""
    tc = cfg.train
    torch.manual_seed(job.key.seed)
    if dev.type == "cpu":
        torch.set_num_threads(tc.threads)
    train_v = load_volumes(job.pre_dir, job.fold["train"])
    val_v = load_volumes(job.pre_dir, job.fold["val"])
    combo = job.key.combo
    size = cfg.losses.params_for(combo).get("size")  # only combinations with S read it
    tau = None
    if size and size["tau"] == "auto":
        tau = estimate_tau([float(m.sum()) for m in train_v.masks], size["tau_quantile"])
    criterion = loss_from_config(cfg, combo, tau=tau, voxel_ml=train_v.voxel_ml)
    # channels-last 3D (weights and batches): a CPU training step in ~0.7x the time of
    # contiguous tensors, default recipe (bench/bench_training.py).
    model = model_from_config(cfg.model).to(dev, memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps = math.ceil(len(train_v.ids) * tc.patches_per_volume / tc.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=tc.lr, total_steps=steps * tc.epochs, pct_start=tc.pct_start,
        div_factor=tc.div_factor, final_div_factor=tc.final_div_factor, anneal_strategy="cos",
    )  # fmt: skip
    s = Session(cfg, job, dev, amp, train_v, val_v, criterion, model, optimizer, scheduler,
                torch.amp.GradScaler("cuda", enabled=amp.scaler), steps,
                size["size_warmup"] if size else 0.0, state=run_state(job, amp),
                clock=CheckpointClock(tc.checkpoint_minutes))  # fmt: skip
    last = Path(job.run_dir) / "last.pt"
    if last.exists():
        _resume(s, torch.load(last, map_location=dev, weights_only=True))
    return s


def _resume(s: Session, ck: dict[str, Any]) -> None:
    s.model.load_state_dict(ck["model"])
    s.optimizer.load_state_dict(ck["optimizer"])
    s.scheduler.load_state_dict(ck["scheduler"])
    s.scaler.load_state_dict(ck["scaler"])
    torch.set_rng_state(ck["torch_rng"])
    if s.device.type == "cuda" and "cuda_rng" in ck:
        torch.cuda.set_rng_state(ck["cuda_rng"])
    s.epoch, s.step, s.sums = ck["epoch"], ck.get("step", 0), dict(ck.get("sums", {}))
    s.best, s.best_epoch, s.history = ck["best"], ck["best_epoch"], list(ck["history"])
    s.saved = (s.epoch, s.step)
    if s.step:  # mid-epoch: the state is restored again once the epoch's loader exists
        s.resume_rng = ck["torch_rng"]


def _loader(s: Session, batches: list) -> Any:
    """One DataLoader over the planned batches (worker processes when ``train.workers`` > 0)."""
    from torch.utils.data import DataLoader

    flat = [spec for batch in batches for spec in batch]
    index_batches, i = [], 0
    for batch in batches:
        index_batches.append(list(range(i, i + len(batch))))
        i += len(batch)
    ds = PatchDataset(s.train_v.images, s.train_v.masks, flat, augment=s.cfg.train.augment)
    return DataLoader(ds, batch_sampler=index_batches, num_workers=s.cfg.train.workers,
                      pin_memory=torch.cuda.is_available(), worker_init_fn=_keep_workers)  # fmt: skip


def _keep_workers(_: int) -> None:
    # A cluster's stop signal reaches every process of the job: loader workers keep working so
    # the main process can finish its step and write the checkpoint.
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def run_epoch(s: Session, stop: StopFlag) -> dict[str, float]:
    """Optimiser steps for epoch ``s.epoch`` from step ``s.step`` on; the mean of each loss term.
    Raises :class:`Interrupted` (after a checkpoint) when a stop signal arrives."""
    tc = s.cfg.train
    batches = plan_epoch(
        s.train_v.masks, s.epoch, s.job.key.seed, tc.patches_per_volume, tc.batch_size,
        tc.patch_large, tc.patch_small, tc.small_prob, tc.pos_ratio_large, tc.pos_ratio_small,
    )  # fmt: skip
    if not s.step:
        s.sums = dict.fromkeys(("loss", *s.criterion.terms), 0.0)
    loader = iter(_loader(s, batches[s.step :]))
    if s.resume_rng is not None:
        # Making the loader draws from the global RNG, as it did in the interrupted run before
        # the checkpoint: restoring after it keeps dropout's stream identical.
        torch.set_rng_state(s.resume_rng)
        s.resume_rng = None
    for x, y in loader:
        total, terms = _step(s, x, y)
        s.step += 1
        s.sums["loss"] += float(total.detach())
        for k, v in terms.items():
            s.sums[k] += float(v.detach())
        if stop.signum is not None:
            checkpoint(s)
            raise Interrupted(stop.signum)
        if s.step < len(batches) and s.clock.due(epoch_end=False):  # (the epoch's end checks)
            checkpoint(s)
    return {k: v / len(batches) for k, v in s.sums.items()}


def _step(s: Session, x: torch.Tensor, y: torch.Tensor):
    tc = s.cfg.train
    total_steps = s.steps_per_epoch * tc.epochs
    s.criterion.size_scale = size_warmup_scale(
        s.epoch * s.steps_per_epoch + s.step, total_steps, s.warmup
    )
    x = x.to(s.device, non_blocking=True, memory_format=torch.channels_last_3d)
    y = y.to(s.device, non_blocking=True)
    s.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(s.device.type, dtype=s.amp.dtype, enabled=s.amp.enabled):
        logits = s.model(x)
    total, terms = s.criterion(logits, y)
    s.scaler.scale(total).backward()
    s.scaler.unscale_(s.optimizer)
    torch.nn.utils.clip_grad_norm_(s.model.parameters(), tc.grad_clip)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.scheduler.step()
    return total, terms


def validate(s: Session) -> float:
    """The validation monitor that picks ``best.pt`` (``train.validation``): mean over the
    validation volumes of their Dice at threshold 0.5, from a sliding window over each whole
    volume (``volume``) or, as the thesis (§4.4), from ``patches_per_volume`` patches of each
    volume (``patches``: drawn like training patches, once, with a fixed seed; Dice pooled over
    a volume's patches). No TTA."""
    vc = s.cfg.train.validation
    s.model.eval()
    if vc.mode == "patches":
        scores = _patch_scores(s)
    else:
        scores = []
        for img, msk in zip(s.val_v.images, s.val_v.masks):
            p = sliding_window_probs(s.model, img, vc.roi, vc.overlap, s.cfg.infer.sw_batch_size,
                                     s.device, s.amp) > 0.5  # fmt: skip
            scores.append(dice_score(msk, p))
    s.model.train()
    return float(np.mean(scores)) if scores else float("nan")


def _patch_scores(s: Session) -> list[float]:
    """Per validation volume, Dice pooled over its validation patches."""
    tc = s.cfg.train
    if s.val_patches is None:
        s.val_patches = [spec for batch in plan_epoch(
            s.val_v.masks, 0, VALIDATION_PATCH_SEED, tc.validation.patches_per_volume, 1,
            tc.patch_large, tc.patch_small, tc.small_prob, tc.pos_ratio_large, tc.pos_ratio_small,
        ) for spec in batch]  # fmt: skip
    inter = np.zeros(len(s.val_v.ids))
    denom = np.zeros(len(s.val_v.ids))
    with torch.no_grad():
        for spec in s.val_patches:
            img, msk = crop_patch(s.val_v.images[spec.volume], s.val_v.masks[spec.volume],
                                  spec.size, spec.centre)  # fmt: skip
            x = torch.from_numpy(np.ascontiguousarray(img[None])).to(s.device)
            with torch.autocast(s.device.type, dtype=s.amp.dtype, enabled=s.amp.enabled):
                logits = s.model(x)
            p = (torch.sigmoid(logits.float())[0, 0] > 0.5).cpu().numpy()
            g = msk > 0
            inter[spec.volume] += 2 * np.count_nonzero(p & g)
            denom[spec.volume] += np.count_nonzero(p) + np.count_nonzero(g)
    return [float(i / d) if d else 1.0 for i, d in zip(inter, denom)]


def _save(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def checkpoint(s: Session) -> None:
    """``last.pt`` (atomic): weights, optimiser, schedule, RNG and the position (epoch, step);
    restarts the checkpoint clock."""
    state = {
        "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(), "scaler": s.scaler.state_dict(),
        "torch_rng": torch.get_rng_state(), "epoch": s.epoch, "step": s.step, "sums": s.sums,
        "best": s.best, "best_epoch": s.best_epoch, "history": s.history,
        "fingerprint": s.state,
    }  # fmt: skip
    if s.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state()
    _save(Path(s.job.run_dir) / "last.pt", state)
    s.saved = (s.epoch, s.step)
    s.clock.reset()


def _end_epoch(s: Session, row: dict[str, float], t0: float) -> None:
    """Validation (every ``val_every`` epochs and the last), best.pt, epochs.csv and, when due
    (:class:`CheckpointClock`) or with a new best.pt, last.pt."""
    tc, run_dir = s.cfg.train, Path(s.job.run_dir)
    done = s.epoch + 1
    row.update(epoch=done, lr=s.scheduler.get_last_lr()[0], val_dice=math.nan)
    improved = False
    if done % tc.val_every == 0 or done == tc.epochs:
        row["val_dice"] = validate(s)
        if row["val_dice"] > s.best:
            s.best, s.best_epoch, improved = row["val_dice"], done, True
            _save(
                run_dir / "best.pt",
                {"model": s.model.state_dict(), "epoch": done, "val_dice": s.best},
            )
    row["epoch_time_s"] = time.perf_counter() - t0
    s.history.append(row)
    s.epoch, s.step, s.sums = done, 0, {}
    if improved or s.clock.due(epoch_end=True):
        checkpoint(s)
    _write_log(run_dir / "epochs.csv", s.history)


def train(cfg: StudyConfig, job: TrainJob, on_epoch: Callable[[dict], None], stop: StopFlag,
          dev: torch.device, amp: Amp,
          on_start: Callable[[], None] | None = None) -> TrainResult:  # fmt: skip
    """Train (or resume) one unfinished run on device ``dev`` with mixed precision ``amp``;
    ``on_epoch`` gets each epoch's log row, ``stop`` is installed and ``on_start`` called once
    the session is set up (:func:`run_train` skips finished runs and provides them all).

    Outputs in the run folder: ``last.pt`` (on a stop signal, every ``train.checkpoint_minutes``,
    with each new best and at the end: see the module doc), ``best.pt`` (best validation Dice),
    ``epochs.csv`` (every epoch), ``train_meta.json`` and ``done.json`` when all epochs ran.
    """
    tc, run_dir = cfg.train, Path(job.run_dir)
    t_setup = time.perf_counter()
    s = setup(cfg, job, dev, amp)
    timings = {"setup_s": time.perf_counter() - t_setup, "epochs_s": 0.0}
    stop.install()  # until now a stop signal just ends the process: nothing to save yet
    if on_start:
        on_start()
    print(f"{job.key.label}: SIGTERM or SIGUSR1 stops after the current step, with a checkpoint "
          "to resume from", flush=True)  # fmt: skip
    if s.epoch or s.step:
        print(f"{job.key.label}: resuming after epoch {s.epoch}, step {s.step}", flush=True)
    write_json_atomic(run_dir / "train_meta.json", job.key.values() | {
        "device": str(s.device), "amp": amp.mode,
        "tau": getattr(s.criterion.terms["S"], "tau", None) if "S" in s.criterion.terms else None,
        "steps_per_epoch": s.steps_per_epoch,
    })  # fmt: skip
    last = tc.epochs if job.max_epochs is None else min(tc.epochs, job.max_epochs)
    s.model.train()
    while s.epoch < last:
        t0 = time.perf_counter()
        row = run_epoch(s, stop)  # a stop inside an epoch checkpoints and raises
        _end_epoch(s, row, t0)
        timings["epochs_s"] += row["epoch_time_s"]
        _print_epoch(s, row)
        on_epoch(row)
    if s.saved != (s.epoch, s.step):  # the end of this process's training
        checkpoint(s)
    if s.epoch == tc.epochs:
        write_json_atomic(run_dir / "done.json", {"epochs": tc.epochs, "best_val_dice": s.best,
                          "best_epoch": s.best_epoch, "fingerprint": s.state})  # fmt: skip
    return TrainResult(run_dir, s.epoch, s.best, s.best_epoch, s.history, False,
                       describe(s.device), timings)  # fmt: skip


def _print_epoch(s: Session, row: dict[str, float]) -> None:
    """The epoch's log line (the console reads its ``epoch i/n``); ``val_dice`` only on the
    epochs that validated (the others carry NaN)."""
    terms = " ".join(f"{k} {row[k]:.4f}" for k in LETTERS if k in s.criterion.terms)
    val = "" if math.isnan(row["val_dice"]) else f" val_dice {row['val_dice']:.4f}"
    print(f"{s.job.key.label} epoch {row['epoch']}/{s.cfg.train.epochs} "
          f"loss {row['loss']:.4f} {terms} lr {row['lr']:.2e}{val} "
          f"({row['epoch_time_s']:.1f} s)", flush=True)  # fmt: skip


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in LOG_COLUMNS})
    write_text_atomic(path, buf.getvalue())


# ----------------------------------------------------------------------------- restarting a run


def _stored_state(run_dir: Path) -> tuple[str | None, tuple[int, int] | None, str | None]:
    """(fingerprint of the run folder's state, the (epoch, step) its ``last.pt`` stands at (None
    when the run is done or has no checkpoint), or why it cannot be read)."""
    import json

    if (run_dir / "done.json").exists():
        try:
            return json.loads((run_dir / "done.json").read_text()).get("fingerprint"), None, None
        except (ValueError, AttributeError) as exc:
            return None, None, f"done.json: {exc}"
    last = run_dir / "last.pt"
    try:
        # Memory-mapped: only the small fingerprint and position are read, not the weights.
        ck = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        return ck.get("fingerprint"), (int(ck.get("epoch", 0)), int(ck.get("step", 0))), None
    except Exception as exc:  # noqa: BLE001 - truncated, empty or foreign file
        return None, None, f"{type(exc).__name__}: {exc}".strip()


FINISHED_RERUN = "a rerun of a finished training (done.json removed, e.g. by snakemake --forcerun)"
"""Why a run folder whose ``last.pt`` is at its final epoch, without ``done.json``, starts over:
Snakemake removes a job's done marker before it runs the job again (``--forcerun``, a forced or
incomplete job), and a finished training has nothing to resume."""


def reset_if_stale(run_dir: str | Path, fingerprint: str, epochs: int | None = None) -> str | None:
    """Clear a run folder whose state is not to be resumed, before its training starts over:
    made with other settings or numerics (``fingerprint``: :func:`run_state`), an unreadable
    ``last.pt`` (moved aside, with one warning line naming the file, never deleted), or — given
    the run's ``epochs`` — a ``last.pt`` at its final epoch without ``done.json``
    (:data:`FINISHED_RERUN`; an unfinished ``last.pt``, a killed training's, is resumed).
    Returns why it was cleared, or None."""
    run_dir = Path(run_dir)
    if not (run_dir / "done.json").exists() and not (run_dir / "last.pt").exists():
        return None
    found, position, unreadable = _stored_state(run_dir)
    if unreadable is None and found == fingerprint:
        if epochs is None or position != (epochs, 0):
            return None
        why = FINISHED_RERUN
    elif unreadable:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        name = "done.json" if unreadable.startswith("done.json") else "last.pt"
        kept = run_dir / f"{name}.unreadable-{stamp}"
        (run_dir / name).rename(kept)
        print(f"warning: {run_dir / name} is unreadable ({unreadable[:200]}); moved to "
              f"{kept.name}, training restarts from epoch 0", file=sys.stderr, flush=True)  # fmt: skip
        why = "unreadable checkpoint"
    else:
        why = "settings changed"
    clear_run(run_dir)
    return why


def clear_run(run_dir: str | Path) -> None:
    """Delete a run folder's training state (:data:`RUN_FILES`: checkpoints, epoch log, done
    marker), so that its next training starts from epoch 0. Its tracking record is the caller's
    (:func:`sizepenalty.tracking.supersede` moves it aside)."""
    for name in RUN_FILES:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the stage


def run_train(
    cfg: StudyConfig, job: TrainJob, settings: dict[str, Any], config_hash: str
) -> TrainResult:
    """The train stage: reset a stale or damaged run folder, then train with the run's tracking
    record (``run.json``, mirrored to MLflow) and stop signals installed. ``settings`` (the
    run's declared settings) become the run's params; ``config_hash`` is the full config's."""
    from sizepenalty import __version__
    from sizepenalty.locks import hold_run_folder
    from sizepenalty.tracking import (
        RunRecord,
        TrainingRun,
        flatten,
        git_commit,
        supersede,
        tracker_for,
    )

    t0 = time.perf_counter()
    run_dir, key = Path(job.run_dir), job.key
    # One training per run folder: a second one (a rerun while an orphan still writes) stops here.
    held = hold_run_folder(run_dir)  # noqa: F841 - released when this function or process ends
    dev = pick_device(job.device or cfg.train.device)
    amp = amp_settings(cfg.train.amp, dev)
    state = run_state(job, amp)
    why = reset_if_stale(run_dir, state, cfg.train.epochs)
    tracker = tracker_for(cfg)
    record_key = f"{cfg.study}/{key.id}/{state}"
    if why:
        print(f"{key.label}: {why}; starting from epoch 0", flush=True)
    old = RunRecord.load(run_dir)
    if why or (old is not None and old.key != record_key):  # also a run killed before its checkpoint
        supersede(run_dir, tracker, why or "settings changed")
    if (run_dir / "done.json").exists():
        return TrainResult(run_dir, cfg.train.epochs, math.nan, -1, skipped=True)
    spent = _Stopwatch()  # the training's own time in tracking: its critical path
    with spent:
        run = TrainingRun(tracker, run_dir, record_key, key.name, job.parent_run_file, key.tags())
        run.log_params(key.values() | {"version": __version__, "amp": amp.mode,
                       "git_commit": git_commit(Path(__file__).parent), "config_hash": config_hash,
                       "fingerprint": job.fingerprint} | flatten(settings))  # fmt: skip

    def on_epoch(row: dict) -> None:
        with spent:
            step = int(row["epoch"])
            changed = run.log_epoch({("train_" + k if k == "loss" or k in LETTERS else k): v
                                     for k, v in row.items() if k != "epoch"}, step)  # fmt: skip
        if changed:  # a resumed run re-ran an epoch logged before the kill, to other values
            print(f"{key.label}: epoch {step} re-run after the resume changed its logged "
                  f"{', '.join(changed)} (a device that is not deterministic); the run record "
                  "keeps the re-run's values", flush=True)  # fmt: skip

    stop = StopFlag()  # installed once training starts (train()); before, nothing is lost
    try:
        # The mirror's first work (MLflow's imports in a fresh process, its store, the run) waits
        # for the set-up, whose imports it would slow: the epochs leave it more room.
        result = train(cfg, job, on_epoch, stop, dev, amp, on_start=run.go_live)
    except Interrupted:
        with spent:
            run.end("KILLED")
        raise
    except BaseException:
        run.end("FAILED")
        raise
    with spent:
        # A kill between an epoch's end and its metrics leaves that epoch out of the record: the
        # checkpoint's history (restored on resume) fills it in.
        logged = {int(step) for step, *_ in run.record.metrics.get("train_loss", [])}
        for row in result.history:
            if int(row["epoch"]) not in logged:
                on_epoch(row)
        run.log_params(result.device)
        run.log_metrics({"best_val_dice": result.best_score, "best_epoch": result.best_epoch})
        run.log_artifacts(["best.pt", "epochs.csv", "train_meta.json"])
        if result.epochs_done == cfg.train.epochs:
            run.end("FINISHED")
        else:
            run.close()  # stopped early (--max-epochs): the run stays RUNNING, to be resumed
    result.timings.update(tracking_s=spent.total, tracking_thread_cpu_s=run.background_cpu_s,
                          stage_s=time.perf_counter() - t0)  # fmt: skip
    write_json_atomic(run_dir / "timings.json", result.timings)
    return result


class _Stopwatch:
    """Seconds spent inside ``with`` blocks, summed (re-entrant: nested blocks count once)."""

    def __init__(self) -> None:
        self.total, self._depth, self._t = 0.0, 0, 0.0

    def __enter__(self) -> None:
        if not self._depth:
            self._t = time.perf_counter()
        self._depth += 1

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if not self._depth:
            self.total += time.perf_counter() - self._t


__all__ = ["Interrupted", "TrainJob", "TrainResult", "clear_run", "reset_if_stale", "run_train",
           "train"]
