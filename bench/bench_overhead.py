"""Where a training job's time goes, with and without the warm worker (sizepenalty.worker).

Prepares the default study's cohort (config.yaml) in a temporary folder, then runs the same
trainings twice as Snakemake would — one `sizepenalty train` process per job, one after the
other — first each command by itself, then handed to a warm worker. For every job it prints the
wall time measured from outside and its parts: start-up (Python, imports, config; the wall time
minus the stage's own), set-up (data, model), tracking (MLflow run and logging), epochs; the
overhead is the wall time minus the epochs. Ends with the medians and their ratio.

Run from the repository root: .venv/bin/python bench/bench_overhead.py [--jobs 4]
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
SIZEPENALTY = str(Path(sys.executable).with_name("sizepenalty"))


def prepare(tmp: Path) -> Path:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw.update(results=str(tmp / "results"), study="bench")
    c = tmp / "config.yaml"
    c.write_text(yaml.safe_dump(raw))
    data = tmp / "results/bench/data"
    for argv in (["synth", "-c", c, "--out", data / "raw", "--cases", str(raw["dataset"]["synthetic"]["cases"])],
                 ["cohort", "-c", c, "--out", data / "cases.tsv"],
                 ["preprocess", "-c", c, "--cases", data / "cases.tsv", "--out-dir", data / "preprocessed"],
                 ["folds", "-c", c, "--stats-dir", data / "preprocessed", "--out", data / "folds.json"]):  # fmt: skip
        subprocess.run([SIZEPENALTY, *map(str, argv)], check=True, capture_output=True)
    return c


def train(c: Path, combo: str, fold: int, run_dir: Path, env: dict) -> dict[str, float]:
    data = c.parent / "results/bench/data"
    from sizepenalty.combos import combo_id

    argv = [SIZEPENALTY, "train", "-c", str(c), "--run", f"{combo_id(combo)}/main/seed42/fold{fold}",
            "--folds", str(data / "folds.json"), "--pre-dir", str(data / "preprocessed"),
            "--run-dir", str(run_dir)]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    t = json.loads((run_dir / "timings.json").read_text())
    return {"wall": wall, "startup": wall - t["stage_s"], "setup": t["setup_s"],
            "tracking": t["tracking_s"], "epochs": t["epochs_s"], "overhead": wall - t["epochs_s"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="trainings per variant")
    args = parser.parse_args()
    from sizepenalty import worker

    combos = ["D", "DTS", "DTF", "FSD"]
    jobs = [(combos[i % len(combos)], i // len(combos)) for i in range(args.jobs)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        c = prepare(tmp)
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
        env.pop(worker.ENV, None)
        results = {"by itself": [], "warm worker": []}
        for i, (combo, fold) in enumerate(jobs):
            results["by itself"].append(train(c, combo, fold, tmp / f"alone{i}", env))
        name = f"sizepenalty-bench-{os.getpid()}"
        worker.start(name, idle=120)
        while not worker.ready(name):
            time.sleep(0.2)
        try:
            for i, (combo, fold) in enumerate(jobs):
                results["warm worker"].append(
                    train(c, combo, fold, tmp / f"warm{i}", env | {worker.ENV: name})
                )
        finally:
            worker.stop(name)
    cols = ("wall", "startup", "setup", "tracking", "epochs", "overhead")
    print(f"{len(jobs)} training job(s) of the default recipe, seconds per job")
    print(f"{'':12s} " + " ".join(f"{c:>9s}" for c in cols))
    medians = {}
    for variant, rows in results.items():
        for (combo, fold), row in zip(jobs, rows):
            print(
                f"{combo + ' f' + str(fold):12s} "
                + " ".join(f"{row[c]:9.2f}" for c in cols)
                + f"  {variant}"
            )
        medians[variant] = {c: statistics.median(r[c] for r in rows) for c in cols}
        print(
            f"{'median':12s} "
            + " ".join(f"{medians[variant][c]:9.2f}" for c in cols)
            + f"  {variant}"
        )
    before, after = medians["by itself"]["overhead"], medians["warm worker"]["overhead"]
    print(f"median overhead per training job: {before:.2f} s by itself, {after:.2f} s with the "
          f"warm worker ({before / after:.1f}x less)")  # fmt: skip


if __name__ == "__main__":
    main()
