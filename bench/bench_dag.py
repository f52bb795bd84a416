"""How long Snakemake takes to plan a thesis-scale study: the 185-case ISLES 2022 preset.

Builds a 185-case ISLES 2022 layout (tiny volumes: planning reads no image data), runs the cohort
checkpoint once as the real study does, then times `snakemake -n` of the whole study (median of
--repeats) next to the same dry run of an empty workflow (Snakemake's own start-up), and prints
both and their ratio. Run from the repository root: .venv/bin/python bench/bench_dag.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from workflow_helpers import SNAKEMAKE, isles22_study, snakemake_env  # noqa: E402


def timed(cmd: list[str], cwd: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, env=snakemake_env(), capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=185)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work, cmd = isles22_study(tmp, args.cases)
        subprocess.run([*cmd, "--cores", "1", "results/isles22/data/cases.tsv"], cwd=work,
                       env=snakemake_env(), capture_output=True, check=True)  # fmt: skip
        study = timed([*cmd, "-n", "--quiet", "rules"], work, args.repeats)
        empty = tmp / "empty"
        empty.mkdir()
        (empty / "Snakefile").write_text(
            "rule all:\n    output: 'x'\n    shell: 'touch {output}'\n"
        )
        base = timed([str(SNAKEMAKE), "-n", "--quiet", "rules"], empty, args.repeats)
    print(
        f"dry run, {args.cases}-case ISLES 2022 preset: {study:6.2f} s (median of {args.repeats})"
    )
    print(f"dry run, one-rule workflow (start-up):  {base:6.2f} s")
    print(f"ratio:                                   {study / base:6.2f}x")


if __name__ == "__main__":
    main()
