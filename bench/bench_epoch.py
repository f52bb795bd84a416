"""A default-recipe training epoch taken apart, now against commit 6c0beb9, in one run.

Makes the default study's cohort (config.yaml) with each tree's own CLI, then trains the same
run (DTS, seed 42, fold 0 by default) with each tree in turn, ``--rounds`` times, alternating
which goes first; each job is a fresh process that imports what the tree's warm worker preloads
(as a job of `make run`) and times its parts by wrapping that tree's own functions
(bench/_epoch_parts.py): sampling and augmentation, forward, loss, backward, optimiser,
validation, checkpoint (last.pt, best.pt), epoch log (epochs.csv), tracking (the job's own time
in tracking calls, spread over its epochs) and the rest of the loop. Prints per part the median
seconds per epoch of each tree and the ratio now / before, and the epoch's speed-up (the median
of the round-by-round ratios: the machine's load drifts less within a round), twice: by the wall
clock, and by the training thread's CPU time, which other processes' load hardly moves (the
default recipe computes on that one thread: 1 torch thread, no loader workers; a background
thread's work, such as the MLflow mirror's, is not in it). Then whether both learned the same:
every column of epochs.csv but the wall time, and the final weights, compared exactly.

The reference tree is extracted from this repository with `git archive` (``--ref``) unless
``--before`` names a checkout of it.

Run from the repository root: .venv/bin/python bench/bench_epoch.py [--rounds 3] [--before PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _reference import REFERENCE, ROOT, machine, prepare, reference_tree, train_argv, tree_env

PARTS = ("sampling", "forward", "loss", "backward", "optimiser", "validation", "checkpoint",
         "epoch log", "tracking", "other")  # fmt: skip
CLOCKS = {"wall": "wall clock", "cpu": "the training thread's CPU time"}
DRIVER = Path(__file__).with_name("_epoch_parts.py")


def job(tree: Path, config: Path, combo: str, fold: int, run_dir: Path) -> dict:
    """One training job of ``tree``, taken apart: per clock ("wall", "cpu"), seconds per epoch
    of each part and of the whole epoch."""
    out = run_dir.with_suffix(".json")
    argv = train_argv(tree, config, combo, fold, run_dir)
    done = subprocess.run([sys.executable, str(DRIVER), str(out), "--", *argv],
                          env=tree_env(tree), capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"training with {tree} failed: {done.stderr[-3000:]}")
    found = json.loads(out.read_text())
    result = {}
    for clock in CLOCKS:
        per_epoch = {p: found[clock].get(p, 0.0) / found["epochs"] for p in PARTS}
        result[clock] = per_epoch | {"epoch": sum(per_epoch.values())}
    return result


def same_learning(a: Path, b: Path) -> tuple[bool, bool]:
    """(epochs.csv equal but for the wall time, final weights bit-identical) of two run folders."""
    import torch

    def log(run: Path) -> list[list[str]]:
        return [row.split(",")[:-1] for row in (run / "epochs.csv").read_text().splitlines()]

    wa = torch.load(a / "last.pt", weights_only=True)["model"]
    wb = torch.load(b / "last.pt", weights_only=True)["model"]
    return log(a) == log(b), wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def report(clock: str, what: str, runs: dict[str, list[dict]], ref: str) -> None:
    """The parts' medians by one clock, and the epoch's speed-up (the median of the round by
    round ratios: the machine's load drifts less within a round)."""
    med = {name: {p: statistics.median(j[clock][p] for j in jobs) for p in (*PARTS, "epoch")}
           for name, jobs in runs.items()}  # fmt: skip
    print(f"\nby {what}:")
    print(f"{'part':12s} {'before':>9s} {'now':>9s} {'now/before':>11s}")
    for p in (*PARTS, "epoch"):
        b, n = med["before"][p], med["now"][p]
        ratio = f"{n / b:10.2f}x" if b > 0 else f"{'-':>11s}"
        print(f"{p:12s} {b:9.3f} {n:9.3f} {ratio}")
    pairs = list(zip(runs["before"], runs["now"]))
    print("epoch, job by job: " + ", ".join(f"{b[clock]['epoch']:.3f} -> {n[clock]['epoch']:.3f} s"
                                           for b, n in pairs))  # fmt: skip
    faster = 1 - statistics.median(n[clock]["epoch"] / b[clock]["epoch"] for b, n in pairs)
    print(f"a training epoch by {what}: {100 * faster:.0f} % faster than {ref} (median of the "
          f"{len(pairs)} paired ratios; target: >= 25 %)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="jobs per tree (alternating order)")
    ap.add_argument("--ref", default=REFERENCE, help="the reference commit")
    ap.add_argument("--before", default=None, help="a checkout of the reference (default: git archive)")
    ap.add_argument("--combo", default="DTS")
    ap.add_argument("--fold", type=int, default=0)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with reference_tree(args.ref, args.before) as before, tempfile.TemporaryDirectory() as tmp:
        trees = {"before": before, "now": ROOT}
        configs = {name: prepare(tree, Path(tmp) / name) for name, tree in trees.items()}
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name in (("before", "now") if r % 2 == 0 else ("now", "before")):
                run_dir = Path(tmp) / name / f"run{r}"
                runs[name].append(job(trees[name], configs[name], args.combo, args.fold, run_dir))
        same_log, same_weights = same_learning(Path(tmp) / "before/run0", Path(tmp) / "now/run0")
    print(f"{args.combo} seed 42 fold {args.fold} of the default recipe, seconds per epoch "
          f"(median of {args.rounds} job(s) per tree; before = {args.ref})")  # fmt: skip
    for clock, what in CLOCKS.items():
        report(clock, what, runs, args.ref)
    print(f"identical learning (run 1 of each tree): epochs.csv but the wall time "
          f"{'equal' if same_log else 'DIFFERS'}, final weights "
          f"{'bit-identical' if same_weights else 'DIFFER'}")  # fmt: skip
    print(f"machine at the end: {machine()}")


if __name__ == "__main__":
    main()
