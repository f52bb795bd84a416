"""Where a training job's time goes, now against commit 6c0beb9, with and without the warm worker.

Makes the default study's cohort (config.yaml) with each tree's own CLI, then runs the same
trainings as Snakemake would — one `sizepenalty train` process per job, one after the other —
with each tree, alternating between the trees job by job: first each command by itself, then
handed to a warm worker of its tree (sizepenalty.worker). For every job it prints the wall time
measured from outside and its parts: start-up (Python, imports, config; the wall time minus the
stage's own), set-up (data, model), tracking (the training's own time in tracking calls, its
critical path: timings.json), epochs, the overhead (the wall time minus the epochs) and bg_cpu,
the CPU time of the tracking thread that took MLflow off the critical path (not in the wall
time's parts; 0 before it existed). Ends with the medians per tree and mode and the ratios now /
before of the overhead and of tracking.

The reference tree is extracted from this repository with `git archive` (``--ref``) unless
``--before`` names a checkout of it.

Run from the repository root: .venv/bin/python bench/bench_overhead.py [--jobs 4] [--before PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _reference import (
    REFERENCE,
    ROOT,
    machine,
    prepare,
    reference_tree,
    start_worker,
    train_argv,
    tree_env,
)

COLUMNS = ("wall", "startup", "setup", "tracking", "epochs", "overhead", "bg_cpu")
MODES = ("by itself", "warm worker")


def train(tree: Path, config: Path, combo: str, fold: int, run_dir: Path,
          env: dict[str, str]) -> dict[str, float]:  # fmt: skip
    argv = [sys.executable, "-m", "sizepenalty", *train_argv(tree, config, combo, fold, run_dir)]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    t = json.loads((run_dir / "timings.json").read_text())
    return {"wall": wall, "startup": wall - t["stage_s"], "setup": t["setup_s"],
            "tracking": t["tracking_s"], "epochs": t["epochs_s"], "overhead": wall - t["epochs_s"],
            "bg_cpu": t.get("tracking_thread_cpu_s", 0.0)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="trainings per tree and mode")
    parser.add_argument("--ref", default=REFERENCE, help="the reference commit")
    parser.add_argument("--before", default=None, help="a checkout of the reference (default: git archive)")
    args = parser.parse_args()
    combos = ["D", "DTS", "DTF", "FSD"]
    jobs = [(combos[i % len(combos)], i // len(combos)) for i in range(args.jobs)]
    print(f"machine: {machine()}")
    results: dict[tuple[str, str], list[dict]] = {}
    with reference_tree(args.ref, args.before) as before, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {"before": before, "now": ROOT}
        configs = {name: prepare(tree, tmp / name) for name, tree in trees.items()}
        workers, procs = {}, {}
        try:
            for mode in MODES:
                if mode == "warm worker":
                    workers = {name: f"sizepenalty-bench-{name}-{os.getpid()}" for name in trees}
                    procs = {name: start_worker(trees[name], workers[name], tmp / f"{name}.log")
                             for name in trees}  # fmt: skip
                for i, (combo, fold) in enumerate(jobs):
                    order = ("before", "now") if i % 2 == 0 else ("now", "before")
                    for name in order:
                        extra = {"SIZEPENALTY_WORKER": workers[name]} if workers else {}
                        run_dir = tmp / name / f"{mode.replace(' ', '-')}{i}"
                        row = train(trees[name], configs[name], combo, fold, run_dir,
                                    tree_env(trees[name], **extra))  # fmt: skip
                        results.setdefault((name, mode), []).append(row)
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait()
    report(jobs, results, args.ref)
    print(f"machine at the end: {machine()}")


def report(jobs, results, ref: str) -> None:
    print(f"{len(jobs)} training job(s) of the default recipe per tree and mode, seconds per job "
          f"(before = {ref})")  # fmt: skip
    print(f"{'':12s} " + " ".join(f"{c:>9s}" for c in COLUMNS))
    medians = {}
    for (name, mode), rows in results.items():
        for (combo, fold), row in zip(jobs, rows):
            print(f"{combo + ' f' + str(fold):12s} " + " ".join(f"{row[c]:9.2f}" for c in COLUMNS)
                  + f"  {name}, {mode}")  # fmt: skip
        medians[name, mode] = {c: statistics.median(r[c] for r in rows) for c in COLUMNS}
        print(f"{'median':12s} " + " ".join(f"{medians[name, mode][c]:9.2f}" for c in COLUMNS)
              + f"  {name}, {mode}")  # fmt: skip
    for mode in MODES:
        b, n = medians["before", mode], medians["now", mode]
        print(f"{mode}: median overhead per training job {b['overhead']:.2f} s before, "
              f"{n['overhead']:.2f} s now = {n['overhead'] / b['overhead']:.2f}x (target <= 0.6x "
              f"with the warm worker); tracking on the critical path {b['tracking']:.3f} s -> "
              f"{n['tracking']:.3f} s = {n['tracking'] / b['tracking']:.2f}x (target <= 0.20x)")  # fmt: skip
    less = {name: medians[name, "by itself"]["overhead"] / medians[name, "warm worker"]["overhead"]
            for name in ("before", "now")}  # fmt: skip
    print(f"the warm worker's overhead: {less['before']:.1f}x less than a command by itself "
          f"before, {less['now']:.1f}x less now")  # fmt: skip


if __name__ == "__main__":
    main()
