"""One training job with its epoch time taken apart; bench/bench_epoch.py runs it once per tree.

Run as ``PYTHONPATH=<tree>/src python bench/_epoch_parts.py OUT.json -- <train arguments>``: it
imports what the tree's warm worker preloads (the job starts as a worker's job would), wraps that
tree's own training functions with timers and runs the job in this process. Each part's time is
exclusive (a part called inside another counts for itself only):

* sampling: the epoch's patch plan, making the loader and each batch it yields (cropping,
  augmentation, collation);
* forward: the network in training mode; loss: the loss terms; backward: ``Tensor.backward``;
* optimiser: the rest of a step (zero_grad, unscaling, clipping, AdamW, the schedule);
* validation; checkpoint: last.pt and best.pt; epoch log: epochs.csv;
* tracking: the job's calls of its run record and MLflow mirror (``TrainingRun``: run start,
  params, per-epoch metrics, the end) and of ``git_commit``, whole job;
* other: the rest of the epoch loop.
Writes ``{"wall": {part: s}, "cpu": {part: s}, "epochs": n, "timings": ...}`` to OUT.json.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path


class Parts:
    """Exclusive seconds per part of whatever runs inside the functions it wraps, by the wall
    clock and by the calling thread's CPU clock (``time.thread_time``: what the training's own
    thread computed, unaffected by other processes' load as long as it is single-threaded)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [part, wall since, cpu since]

    def _add(self, part: str, wall: float, cpu: float, since: list) -> None:
        self.wall[part] += wall - since[1]
        self.cpu[part] += cpu - since[2]

    def wrap(self, fn, part: str):
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            if self._stack:  # the caller's part pauses
                self._add(self._stack[-1][0], wall, cpu, self._stack[-1])
            self._stack.append([part, wall, cpu])
            try:
                return fn(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter(), time.thread_time()
                self._add(part, wall, cpu, self._stack.pop())
                if self._stack:
                    self._stack[-1][1:] = [wall, cpu]

        return timed


class _TimedBatches:
    """A loader whose batches count as sampling."""

    def __init__(self, loader, parts: Parts) -> None:
        self.loader, self.parts = loader, parts

    def __iter__(self):
        it = iter(self.loader)
        take = self.parts.wrap(lambda: next(it), "sampling")
        while True:
            try:
                yield take()
            except StopIteration:
                return


def _only_training(module, parts: Parts, part: str) -> None:
    """Time ``module``'s forward as ``part`` while it trains (validation counts as validation)."""
    forward = module.forward
    timed = parts.wrap(forward, part)
    module.forward = lambda *a, **k: timed(*a, **k) if module.training else forward(*a, **k)


def instrument(parts: Parts) -> None:
    import torch

    from sizepenalty import train as T

    make_model, make_loss, make_loader = T.model_from_config, T.loss_from_config, T._loader

    def model_from_config(*a, **k):
        model = make_model(*a, **k)
        _only_training(model, parts, "forward")
        return model

    def loss_from_config(*a, **k):
        criterion = make_loss(*a, **k)
        _only_training(criterion, parts, "loss")
        return criterion

    def loader(*a, **k):
        return _TimedBatches(make_loader(*a, **k), parts)

    T.model_from_config, T.loss_from_config = model_from_config, loss_from_config
    T._loader = parts.wrap(loader, "sampling")
    T.plan_epoch = parts.wrap(T.plan_epoch, "sampling")
    T._step = parts.wrap(T._step, "optimiser")
    torch.Tensor.backward = parts.wrap(torch.Tensor.backward, "backward")
    T.validate = parts.wrap(T.validate, "validation")
    T.checkpoint = parts.wrap(T.checkpoint, "checkpoint")
    T._save = parts.wrap(T._save, "checkpoint")
    T._write_log = parts.wrap(T._write_log, "epoch log")
    T.run_epoch = parts.wrap(T.run_epoch, "other")
    T._end_epoch = parts.wrap(T._end_epoch, "other")
    from sizepenalty import tracking

    for name in ("__init__", "log_params", "log_metrics", "log_epoch", "log_artifacts", "end",
                 "close"):  # fmt: skip
        if hasattr(tracking.TrainingRun, name):  # (log_epoch and close are newer)
            setattr(tracking.TrainingRun, name,
                    parts.wrap(getattr(tracking.TrainingRun, name), "tracking"))  # fmt: skip
    tracking.git_commit = parts.wrap(tracking.git_commit, "tracking")


def main() -> None:
    out, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: _epoch_parts.py OUT.json -- <train arguments>"
    from sizepenalty import worker

    for module in worker.PRELOAD:  # as in a warm worker's job
        importlib.import_module(module)
    from sizepenalty.cli import main as cli

    parts = Parts()
    instrument(parts)
    assert cli(argv) in (0, None)
    run_dir = Path(argv[argv.index("--run-dir") + 1])
    timings = json.loads((run_dir / "timings.json").read_text())
    epochs = len((run_dir / "epochs.csv").read_text().splitlines()) - 1
    Path(out).write_text(json.dumps({"wall": parts.wall, "cpu": parts.cpu, "epochs": epochs,
                                     "timings": timings}))  # fmt: skip


if __name__ == "__main__":
    main()
