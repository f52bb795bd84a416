"""The console of `make run` (sizepenalty.console through Snakemake's logger plugin): progress
and ETA, trainings' epochs, a failed job's one-line error and log, the report as the last line
(issue 23). The console is fed Snakemake's records as Snakemake sends them (the order checked on
a real run: a job's progress comes before the DAG update a checkpoint makes); the slow tests run
the workflow through `make run`."""

import io
import logging
import math
import re
from types import SimpleNamespace

import pytest
import yaml

from sizepenalty.console import (
    Console,
    error_lines,
    eta_seconds,
    job_label,
    last_epoch,
    progress_line,
)

TRAIN = {"combo": "DTS", "variant": "main", "seed": "42", "fold": "0"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _console(**kw) -> tuple[Console, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return Console(out, clock=clock, logfile=".snakemake/log/x.snakemake.log", **kw), out, clock


def _job(c: Console, jobid: int, rule: str, logs=(), wildcards=None, checkpoint=False) -> None:
    c.handle({"event": "job_info", "jobid": jobid, "rule_name": rule, "log": list(logs),
              "wildcards": wildcards or {}, "is_checkpoint": checkpoint})  # fmt: skip


def _finish(c: Console, jobid: int, done: int, total: int) -> None:
    c.handle({"event": "job_finished", "job_id": jobid})
    c.handle({"event": "progress", "done": done, "total": total})


# ----------------------------------------------------------------------------- what a log says


def test_a_failed_jobs_error_is_its_sizepenalty_error_line():
    log = ("=== 2026-12-01T23:01:31 sizepenalty cohort: start ===\nreading 4 cases\n"
           "sizepenalty cohort: error: case03: mask affine differs from the DWI affine by up to 5 "
           "(tolerance 0.001) [/data/case03_mask.nii.gz]\n")  # fmt: skip
    assert error_lines(log) == [
        "sizepenalty cohort: error: case03: mask affine differs from the DWI affine by up to 5 "
        "(tolerance 0.001) [/data/case03_mask.nii.gz]"
    ]
    crash = 'a\nTraceback (most recent call last):\n  File "x.py", line 1\n    f()\nValueError: x\n'
    assert error_lines(crash) == ["ValueError: x"]
    assert error_lines("one\n\ntwo\nthree\nfour\n") == ["two", "three", "four"]
    # An earlier attempt's error is not this one's.
    rerun = log + "=== 2026-12-01T23:05:00 sizepenalty cohort: start ===\nKilled\n"
    assert error_lines(rerun) == ["Killed"]
    assert error_lines("") == []


def test_the_last_epoch_line_of_a_training_log():
    log = ("DTS s42 fold 0 epoch 1/3 loss 0.9 D 0.9 lr 1.00e-02 (0.3 s)\n"
           "DTS s42 fold 0: resuming after epoch 1, step 0\n"
           "DTS s42 fold 0 epoch 2/3 loss 0.8 D 0.8 lr 1e-02 val_dice 0.4 (0.3 s)\n")  # fmt: skip
    assert last_epoch(log) == (2, 3)
    # A rerun appends to the log: before its first epoch it has none, whatever the last run had.
    rerun = log + "=== 2026-12-01T23:25:40 sizepenalty train DTS s42 fold 0: start ===\n"
    assert last_epoch(rerun) is None
    assert last_epoch(rerun + "DTS s42 fold 0 epoch 1/4 loss 0.9 (0.3 s)\n") == (1, 4)


def test_jobs_are_named_by_their_run_or_case():
    assert job_label("train", TRAIN) == "train DTS/main/seed42/fold0"
    assert job_label("preprocess", {"case": "case03"}) == "preprocess case03"
    assert job_label("cohort", {}) == "cohort"


# ----------------------------------------------------------------------------- progress and ETA


def test_the_progress_line():
    line = progress_line(12, 40, True, 133, 185, ["train D/main/seed42/fold1 epoch 2/3"],
                         "done: infer DTS/main/seed42/fold0 (4s)")  # fmt: skip
    assert line == ("[######--------------]  12/40+ jobs (30%) · 2m13s elapsed, ETA ~3m05s · "
                    "done: infer DTS/main/seed42/fold0 (4s) · running: train D/main/seed42/fold1 "
                    "epoch 2/3")  # fmt: skip
    start = progress_line(0, 29, False, 0, None)
    assert start == "[--------------------]   0/29 jobs (0%) · 0s elapsed, ETA --"


def test_the_eta_weights_each_rule_by_its_jobs_and_trainings_by_their_epochs():
    # 3 jobs of a rule whose jobs took 10 s and 20 s, one running for 5 s, 2 at once:
    # (3 x 15 + 10) / 2.
    assert eta_seconds({"a": 3}, [("a", 5.0, None)], {"a": [10.0, 20.0]}, 2.0) == 27.5
    # No training has finished: one a quarter through after 30 s takes 120 s; one more to start.
    assert eta_seconds({"train": 1}, [("train", 30.0, 0.25)], {"cohort": [2.0]}, 1.0) == 210.0
    # A rule with no finished job takes the mean of all finished jobs; nothing finished: unknown.
    assert eta_seconds({"b": 2}, [], {"a": [4.0, 8.0]}, 1.0) == 12.0
    assert eta_seconds({"b": 2}, [], {}, 1.0) is None


def _tiny_run(c: Console, clock: Clock) -> None:
    """A study's records in Snakemake's order: 3 jobs planned before the cohort checkpoint, which
    adds 2 per-case jobs (the total grows with the progress record after the checkpoint's)."""
    c.handle({"event": "run_info", "stats": {"cohort": 1, "study_run": 1, "all": 1, "total": 3}})
    c.handle({"msg": "Study tiny in results/tiny", "levelno": logging.INFO,
              "sizepenalty_plan": {"checkpoints": ["cohort"]}})  # fmt: skip
    _job(c, 1, "cohort", checkpoint=True)
    _job(c, 2, "study_run")
    clock.now += 4
    _finish(c, 1, 1, 3)
    _job(c, 3, "preprocess", wildcards={"case": "case01"})
    _job(c, 4, "preprocess", wildcards={"case": "case02"})
    clock.now += 2
    _finish(c, 2, 2, 5)
    _finish(c, 3, 3, 5)
    _finish(c, 4, 4, 5)
    _job(c, 5, "all")
    _finish(c, 5, 5, 5)
    c.handle({"msg": "Report: results/tiny/report.html", "levelno": logging.INFO,
              "sizepenalty_report": "results/tiny/report.html"})  # fmt: skip
    c.handle({"msg": "Complete log(s): /w/.snakemake/log/x.snakemake.log", "levelno": logging.INFO})
    c.handle({"msg": "Elapsed time: 0:00:06", "levelno": logging.INFO})
    c.close()


def test_the_total_counts_the_jobs_a_checkpoint_adds_and_the_run_ends_naming_the_report():
    c, out, clock = _console()
    _tiny_run(c, clock)
    lines = out.getvalue().splitlines()
    assert lines[0] == ("3 jobs to run, more once checkpoint cohort has run; "
                        "full log: .snakemake/log/x.snakemake.log")  # fmt: skip
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 5  # one per finished job
    # Until the DAG has the checkpoint's jobs the total says more are coming ...
    assert " 1/3+ jobs " in progress[0] and "done: cohort (4s)" in progress[0]
    # ... then it counts them, and says where they came from.
    assert " 2/5 jobs " in progress[1] and "done: study_run (6s)" in progress[1]
    assert lines[lines.index(progress[1]) - 1] == (
        "checkpoint cohort added 2 jobs: 5 in all (3 planned before)"
    )
    assert " 5/5 jobs (100%) " in progress[-1]
    assert lines[-2] == "Done: 5 jobs in 6s. Full Snakemake log: .snakemake/log/x.snakemake.log"
    assert lines[-1] == "Report: results/tiny/report.html"
    assert len(lines) == 9


def test_bookkeeping_jobs_are_counted_but_never_named_nor_printed():
    c, out, clock = _console()
    _job(c, 1, "fingerprint", wildcards={"stage": "train", "name": "D/main/seed42/fold0"})
    _job(c, 2, "train", wildcards=TRAIN)
    clock.now += 1
    _finish(c, 1, 1, 3)
    assert out.getvalue().count("\n") == 1, out.getvalue()  # the header alone
    clock.now += 4
    _finish(c, 2, 2, 3)
    line = out.getvalue().splitlines()[-1]
    assert " 2/3 jobs " in line and "done: train DTS/main/seed42/fold0 (5s)" in line
    assert "fingerprint" not in out.getvalue()
    _job(c, 3, "fingerprint", wildcards={"stage": "infer", "name": "D/main/seed42/fold0"})
    assert "fingerprint" not in c.status()


def test_snakemakes_job_listings_and_chatter_stay_off_the_console_but_warnings_do_not():
    c, out, _ = _console()
    for msg in ("Building DAG of jobs...", "Select jobs to execute...", "Execute 2 jobs...",
                "DAG of jobs will be updated after completion."):  # fmt: skip
        c.handle({"msg": msg, "levelno": logging.INFO})
    c.handle({"event": "shellcmd", "shellcmd": "sizepenalty cohort ...", "msg": "x"})
    c.handle({"msg": "Nothing to be done (all requested files are present and up to date).",
              "levelno": logging.INFO})  # fmt: skip
    c.handle({"msg": "a warning", "levelno": logging.WARNING})
    c.close()
    assert out.getvalue().splitlines() == [
        "Nothing to be done (all requested files are present and up to date).",
        "a warning",
    ]


def test_a_failed_job_shows_its_error_line_and_its_log(tmp_path):
    log = tmp_path / "logs" / "cohort.log"
    log.parent.mkdir()
    log.write_text("=== sizepenalty cohort: start ===\nsizepenalty cohort: error: case03: mask "
                   "affine differs from the DWI affine by up to 5 (tolerance 0.001)\n")  # fmt: skip
    c, out, clock = _console()
    c.handle({"event": "run_info", "stats": {"cohort": 1, "study_run": 1, "total": 2}})
    _job(c, 1, "cohort", [str(log)], checkpoint=True)
    _job(c, 2, "study_run")
    shell = "RuleException:\nCalledProcessError in file cohort.smk, line 42:"
    c.handle({"event": "error", "exception": "RuleException", "levelno": 40, "msg": shell})
    c.handle({"event": "job_error", "jobid": 1, "rule_name": "cohort", "log": [str(log)],
              "msg": "Error in rule cohort, jobid: 1"})  # fmt: skip
    clock.now += 10
    _finish(c, 2, 1, 2)
    end = "WorkflowError:\nAt least one job did not complete successfully."
    c.handle({"event": "error", "exception": "WorkflowError", "levelno": 40, "msg": end})
    c.close()
    text = out.getvalue()
    failed = [
        "FAILED cohort: sizepenalty cohort: error: case03: mask affine differs from the DWI "
        "affine by up to 5 (tolerance 0.001)",
        f"  log: {log}",
    ]
    lines = text.splitlines()
    assert lines[1:3] == failed  # when it happens ...
    assert lines[-2:] == failed  # ... and at the end
    assert lines[-3].startswith("Stopped: 1 job failed; 1 of 2+ jobs done in 10s. Full Snakemake")
    assert "CalledProcessError" not in text and "message: None" not in text
    assert "Report:" not in text


def test_running_trainings_show_their_epoch_from_their_log(tmp_path):
    log = tmp_path / "train" / "DTS" / "main" / "seed42" / "fold0.log"
    log.parent.mkdir(parents=True)
    # The train rule writes to the attempts log while it runs (workflow/rules/train.smk).
    attempts = log.with_name("fold0.attempts.log")
    c, out, clock = _console(heartbeat=30.0)
    c.handle({"event": "run_info", "stats": {"train": 2, "total": 2}})
    _job(c, 1, "train", [str(log)], TRAIN)
    attempts.write_text("DTS epoch 1/9 loss 1.0 (1.0 s)\n")
    clock.now += 40
    c.tick()
    last = out.getvalue().splitlines()[-1]
    assert last.endswith("running: train DTS/main/seed42/fold0 epoch 1/9")
    attempts.write_text("DTS epoch 1/9 loss 1.0 (1.0 s)\nDTS epoch 2/9 loss 0.9 (1.0 s)\n")
    clock.now += 10
    c.tick()  # off a terminal: at most a line per heartbeat
    assert "epoch 2/9" not in out.getvalue()
    clock.now += 20
    c.tick()
    assert out.getvalue().splitlines()[-1].endswith("epoch 2/9")
    n = len(out.getvalue().splitlines())
    clock.now += 60
    c.tick()  # no epoch moved: nothing new
    assert len(out.getvalue().splitlines()) == n
    # On a terminal one line is redrawn in place, every tick.
    tty, screen, clock = _console(tty=True, width=200)
    tty.handle({"event": "run_info", "stats": {"train": 1, "total": 1}})
    _job(tty, 1, "train", [str(log)], TRAIN)
    tty.tick()
    assert screen.getvalue().rsplit("\r", 1)[-1] == (
        "[--------------------]   0/1 jobs (0%) · 0s elapsed, ETA -- · running: train "
        "DTS/main/seed42/fold0 epoch 2/9\x1b[K"
    )
    clock.now += 5
    _finish(tty, 1, 1, 1)
    tty.close()
    # The live line is cleared for the last lines.
    assert screen.getvalue().endswith(
        "\r\x1b[KDone: 1 job in 5s. Full Snakemake log: .snakemake/log/x.snakemake.log\n"
    )


def test_snakemake_finds_the_plugin_and_it_feeds_the_console(capsys):
    from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

    plugin = LoggerPluginRegistry().get_plugin("sizepenalty")
    settings = SimpleNamespace(stdout=False, dryrun=False, printshellcmds=False, verbose=False)
    handler = plugin.log_handler(settings, None)
    try:
        rec = logging.makeLogRecord({"msg": "a warning", "levelno": logging.WARNING})
        handler.emit(rec)
    finally:
        handler.close()
    assert capsys.readouterr().err == "a warning\n"


# ----------------------------------------------------------------------------- training logs


def test_epochs_without_validation_print_no_val_dice(capsys):
    from sizepenalty.train import _print_epoch

    s = SimpleNamespace(job=SimpleNamespace(key=SimpleNamespace(label="DTS s42 fold 0")),
                        cfg=SimpleNamespace(train=SimpleNamespace(epochs=3)),
                        criterion=SimpleNamespace(terms={"D": None, "S": None}))  # fmt: skip
    row = {"epoch": 1, "loss": 0.5, "D": 0.4, "S": 0.1, "lr": 0.01, "epoch_time_s": 1.25}
    _print_epoch(s, row | {"val_dice": math.nan})
    _print_epoch(s, row | {"epoch": 2, "val_dice": 0.625})
    first, second = capsys.readouterr().out.splitlines()
    assert first == "DTS s42 fold 0 epoch 1/3 loss 0.5000 D 0.4000 S 0.1000 lr 1.00e-02 (1.2 s)"
    assert second.endswith("lr 1.00e-02 val_dice 0.6250 (1.2 s)")


# ----------------------------------------------------------------------------- `make run`


def _bad_manifest_study(tmp_path):
    """A workflow copy on a 4-case manifest whose case03 mask lies 5 mm off its DWI."""
    import nibabel as nib
    import numpy as np
    from workflow_helpers import copy_workflow, tiny_config

    work = copy_workflow(tmp_path / "wf")
    data = tmp_path / "cohort"
    data.mkdir()
    rows = []
    for i in range(1, 5):
        case = f"case{i:02d}"
        for kind in ("dwi", "adc", "mask"):
            affine = np.diag([2.0, 2.0, 2.0, 1.0])
            if case == "case03" and kind == "mask":
                affine[0, 3] = 5.0
            arr = np.zeros((16, 32, 32), np.uint8 if kind == "mask" else np.float32)
            nib.Nifti1Image(arr, affine).to_filename(data / f"{case}_{kind}.nii.gz")
        rows.append(f"{case},{case}_dwi.nii.gz,{case}_adc.nii.gz,{case}_mask.nii.gz")
    (data / "manifest.csv").write_text("case_id,dwi,adc,mask\n" + "\n".join(rows) + "\n")
    cfg = tiny_config("bad", dataset={"source": "manifest", "path": str(data / "manifest.csv")})
    (work / "bad.yaml").write_text(yaml.safe_dump(cfg))
    return work


@pytest.mark.slow
def test_make_run_on_a_bad_manifest_shows_the_cases_error_and_the_log(tmp_path):
    from fault_study import make_run

    work = _bad_manifest_study(tmp_path)
    out = make_run(work, "--configfile", "bad.yaml")
    assert out.returncode != 0
    console = out.stderr
    lines = console.splitlines()
    error = ("FAILED cohort: sizepenalty cohort: error: case03: mask affine differs from the DWI "
             "affine by up to 5 (tolerance 0.001)")  # fmt: skip
    assert sum(line.startswith(error) for line in lines) == 2, console
    assert lines.count("  log: results/bad/logs/cohort.log") == 2, console
    assert "CalledProcessError" not in console and "message: None" not in console
    assert re.search(r"^Stopped: 1 job failed; \d+ of \d+\+ jobs done", console, re.M)
    assert len(lines) < 15, console
    # Snakemake's full log is still written, in full.
    (full,) = (work / ".snakemake" / "log").glob("*.snakemake.log")
    assert f"Full Snakemake log: .snakemake/log/{full.name}" in console
    # (Which other jobs started before the cohort failed depends on the machine's load.)
    assert "CalledProcessError" in full.read_text() and "Error in rule cohort:" in full.read_text()


@pytest.mark.slow
def test_make_run_shows_progress_not_noise_and_ends_naming_the_report(killed_study):
    """The `make run` that recovered the killed tiny study (tests/fault_study.py)."""
    s = killed_study
    console = s.make_run.stderr
    lines = console.splitlines()
    assert lines[-1] == "Report: results/tiny/report.html", console[-2000:]
    assert re.fullmatch(r"Done: (\d+) jobs in \S+\. Full Snakemake log: \.snakemake/log/\S+",
                        lines[-2]), lines[-2]  # fmt: skip
    done = int(re.match(r"Done: (\d+)", lines[-2]).group(1))
    progress = [line for line in lines if line.startswith("[")]
    finished = [line for line in progress if " · done: " in line]
    # A line per finished job (but the bookkeeping ones: console.QUIET_RULES), the last at 100 %.
    assert 0 < len(finished) <= done
    assert f" {done}/{done} jobs (100%) " in finished[-1]
    # Each training that ran says where it ended: the killed one resumed to its last epoch.
    assert any(f"done: train {s.killed.id} epoch 3/3" in line for line in finished), console
    # No job listings (inputs, reasons, wildcards): besides the progress lines (one per job, and
    # one per 30 s at most while a training's epoch moves), a few lines: the lock check's, the
    # console's first and last ones.
    assert not re.search(r"^\s+(input|reason|wildcards|resources):", console, re.M)
    assert len(lines) - len(progress) <= 10, console
    assert len(progress) <= 2 * done, console
