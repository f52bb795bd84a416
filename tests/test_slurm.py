"""The SLURM profile against a real single-node SLURM on localhost.

Run:  .venv/bin/python -m pytest -m slurm   (needs Debian's munge and slurm-wlm; `.ci/run` installs
them). The cluster is started by the test and stopped afterwards by the PIDs it started.
"""

import subprocess

import local_slurm
import pytest
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, copy_workflow, snakemake_env, tiny_config

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not local_slurm.available(), reason="munge/slurm-wlm not installed"),
]


def _test_profile(dest) -> None:
    """The shipped profile with the site-specific values a laptop-sized test node can satisfy."""
    prof = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    prof["default-resources"].update(slurm_partition="debug", mem_mb=500, runtime=10)
    for rule in ("train", "infer"):
        assert prof["set-resources"][rule]["gpu"] == 1  # the real profile asks for a GPU...
        prof["set-resources"][rule].update(
            slurm_partition="debug", cpus_per_task=1, mem_mb=1000, runtime=10
        )
    # ...and the stop signal 10 minutes before a training's wall time (test_training checks what
    # the training does with it). With this test's 10-minute limit it would come at once.
    assert prof["set-resources"]["train"]["slurm_extra"] == "'--signal=USR1@600'"
    prof["set-resources"]["train"]["slurm_extra"] = "'--signal=USR1@60'"
    prof.update({
        "jobs": 4, "latency-wait": 5, "slurm-keep-successful-logs": True,
        # No slurmdbd here: poll squeue (finished jobs stay listed for MinJobAge=300 s).
        "slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 2,
        "slurm-no-account": True, "seconds-between-status-checks": 2,
    })  # fmt: skip
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof))


def test_slurm_profile_runs_a_training_chain_on_local_slurm(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    _test_profile(work / "testprofile")
    tiny = tiny_config("slurm", losses={"combinations": ["D"]})
    tiny["dataset"]["synthetic"]["cases"] = 4
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    with local_slurm.LocalSlurm(tmp_path / "slurm") as cluster:
        env = snakemake_env(SLURM_CONF=cluster.env["SLURM_CONF"])
        env["PATH"] = cluster.env["PATH"].split(":", 1)[0] + ":" + env["PATH"]
        cmd = ["timeout", "-k", "10", "420", str(SNAKEMAKE), "results/slurm/metrics/D/main/seed42/fold0.csv",
               "--workflow-profile", "testprofile", "--configfile", "tiny.yaml"]  # fmt: skip
        out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=480)
        assert out.returncode == 0, out.stderr[-4000:]
        jobs = subprocess.run(["scontrol", "-o", "show", "job"], env=env, capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
    by_rule: dict[str, list[tuple[str, str]]] = {}
    for line in jobs.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        rule = fields.get("Comment", "").split("_wildcards")[0].removeprefix("rule_")
        tres = fields.get("TresPerJob", "") + fields.get("TresPerNode", "")
        by_rule.setdefault(rule, []).append((tres, fields.get("JobState", "")))
    rows = by_rule
    # Every step ran as its own SLURM job and finished; training and inference got the GPU.
    for rule in (
        "synth",
        "cohort",
        "preprocess",
        "folds",
        "study_run",
        "train",
        "infer",
        "evaluate",
    ):
        assert rule in by_rule and all(s == "COMPLETED" for _, s in by_rule[rule]), (rule, rows)
    for rule in ("train", "infer"):
        assert all("gpu" in tres for tres, _ in by_rule[rule]), by_rule[rule]
    assert not any("gpu" in tres for tres, _ in by_rule["preprocess"])
    assert (work / "results/slurm/metrics/D/main/seed42/fold0.csv").read_text().count("\n") >= 2
    assert any((work / "logs/slurm").rglob("*.log"))
