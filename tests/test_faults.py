"""Faults a user causes or suffers (issue 15), each tried for real on a tiny study: a kill -9
mid-run and its stale lock, a dry run beside a study, settings changed between runs, a typo in a
config file, a dead tracking server, a setting change that supersedes runs."""

import json
import re

import pytest


@pytest.mark.slow
def test_a_stale_lock_after_kill_9_is_cleared_by_make_run_and_the_training_resumes(killed_study):
    s = killed_study
    # What the README used to say after a kill fails: the dead run's lock is still there.
    assert s.locked.returncode != 0
    assert "LockException" in s.locked.stderr or "cannot be locked" in s.locked.stderr
    # `make run` says what happened and what it does, unlocks, and finishes the study.
    said = s.make_run.stderr
    assert "is stale" in said and "snakemake --unlock" in said and "--rerun-incomplete" in said
    assert (s.study / "report.html").exists() and not list((s.work / ".snakemake/locks").glob("*"))
    combo, fold = s.killed
    log = (s.study / "logs" / "train" / f"{combo}_fold{fold}.log").read_text()
    # The killed training resumed where it stopped, and its log kept the epochs before the kill
    # (one start marker per attempt).
    starts = re.findall(rf"sizepenalty train {combo} fold {fold}: start", log)
    assert len(starts) == 2, log
    before, after = log.split(starts[0], 1)[1].split(starts[1], 1)
    for epoch in range(1, s.killed_epochs + 1):
        assert f"epoch {epoch}/3" in before, log
    assert f"resuming after epoch {s.killed_epochs}, step 0" in after, log
    assert "epoch 1/3" not in after and "epoch 3/3" in after, log
    record = json.loads((s.study / "runs" / combo / f"fold{fold}" / "run.json").read_text())
    assert record["status"] == "FINISHED"
    assert [step for step, *_ in record["metrics"]["train_loss"]] == [1, 2, 3]


def _fake(folder, name, cwd):
    """A process whose command line runs a program called ``name``, working in ``cwd``."""
    import subprocess
    import sys

    script = folder / name
    script.write_text("import sys, time\nprint('up', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, str(script), "--cores", "all"], cwd=cwd,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline() == "up\n"
    return proc


@pytest.mark.parametrize("program", ["snakemake", "sizepenalty"])
def test_the_lock_check_never_unlocks_while_a_run_or_its_jobs_work_here(tmp_path, capsys, program):
    from sizepenalty.locks import check

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / ".snakemake" / "locks").mkdir(parents=True)
    elsewhere.mkdir()
    lock = work / ".snakemake" / "locks" / "0.output.lock"
    lock.write_text("results/tiny/report.html\n")
    other = _fake(tmp_path, program, elsewhere)  # another folder's run does not count
    live = _fake(tmp_path, program, work)
    try:
        assert check(work) == 1
    finally:
        for p in (other, live):
            p.kill()
            p.wait()
    said = capsys.readouterr().err
    assert lock.exists() and "Not unlocking" in said and f"kill {live.pid}" in said
    assert f"pid {other.pid}" not in said
    if program == "sizepenalty":  # the jobs a killed run left behind
        assert "left from a killed run" in said
    assert check(tmp_path / "elsewhere") == 0  # no lock: nothing to say
    assert not capsys.readouterr().err


def test_the_program_of_a_command_line():
    from sizepenalty.locks import program

    assert program(["/v/bin/python", "/v/bin/snakemake", "--cores", "all"]) == "snakemake"
    assert program(["python3.11", "-X", "utf8", "-m", "snakemake", "-n"]) == "snakemake"
    assert program(["/v/bin/sizepenalty", "train"]) == "sizepenalty"
    assert program(["/bin/sh", "-c", "/v/bin/snakemake --cores all"]) == "sh"
    assert program(["python", "-m", "sizepenalty.locks"]) == "sizepenalty"
