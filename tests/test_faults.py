"""Faults a user causes or suffers (issue 15), each tried for real on a tiny study: a kill -9
mid-run and its stale lock, a dry run beside a study, settings changed between runs, a typo in a
config file, a dead tracking server, a setting change that supersedes runs."""

import json
import re
from pathlib import Path

import pytest
import yaml
from workflow_helpers import (
    SNAKEMAKE,
    MlflowServer,
    copy_workflow,
    free_port,
    snakemake_env,
    tiny_config,
    train_args,
)


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
    key = s.killed
    log = (s.study / "logs" / "train" / f"{key.id}.log").read_text()
    # The killed training resumed where it stopped (after an epoch, or inside one where a warm
    # worker's job got SIGTERM and wrote a checkpoint), and its log kept the epochs before the
    # kill: one start marker per attempt.
    starts = re.findall(rf"sizepenalty train {re.escape(key.label)}: start", log)
    assert len(starts) == 2, log
    before, after = log.split(starts[0], 1)[1].split(starts[1], 1)
    epoch, _ = map(int, re.search(r"resuming after epoch (\d+), step (\d+)", after).groups())
    assert 1 <= epoch < 3, log
    for done in range(1, epoch + 1):
        assert f"epoch {done}/3" in before and f"epoch {done}/3" not in after, log
    assert "epoch 3/3" in after, log
    record = json.loads((s.study / "runs" / key.id / "run.json").read_text())
    assert record["status"] == "FINISHED"
    assert sorted(step for step, *_ in record["metrics"]["train_loss"]) == [1, 2, 3]


def _snapshot(folder):
    """Every file under ``folder``: its bytes' hash and its mtime."""
    import hashlib

    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _planned(out, rule="train"):
    """The jobs a dry run (`-n`) lists, by rule name, and the shell commands it prints (`-p`)."""
    text = out.stdout + out.stderr
    jobs = [job for job in re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", text, re.M)
            if job != "fingerprint"]  # each job's stamp (sizepenalty.provenance)  # fmt: skip
    commands = [line[line.index("sizepenalty ") :] for line in text.splitlines()
                if f"sizepenalty {rule} " in line]  # fmt: skip
    return jobs, commands


@pytest.fixture(scope="module")
def tau_dry_run(killed_study):
    """A dry run (`-n -p`) of the finished study with tau 300: the results folder's snapshot
    before and right after it, and its output."""
    s = killed_study
    before = _snapshot(s.work / "results")
    (s.work / "tau.yaml").write_text(yaml.safe_dump({"losses": {"tau": 300}}))
    dry = s.snakemake("tau.yaml", "-n", "-p")
    return before, _snapshot(s.work / "results"), dry


@pytest.mark.slow
def test_a_dry_run_beside_a_study_changes_nothing_under_results(tau_dry_run):
    before, after, dry = tau_dry_run
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs, trainings = _planned(dry)
    # It plans the size-penalty trainings for tau 300 (the other combination keeps its runs) ...
    assert len(trainings) == 2 and all("--run DTS/main/" in t for t in trainings), trainings
    # ... and writes nothing: not the effective configuration the study's jobs read, nor
    # anything else, byte for byte and time stamp for time stamp.
    assert after == before


@pytest.mark.slow
def test_a_job_planned_with_other_settings_than_the_studys_stops_with_exit_2(
    killed_study, tau_dry_run
):
    import shlex

    s = killed_study
    _, trainings = _planned(tau_dry_run[2])
    # The job that plan would run, started while the study's effective configuration still has
    # tau 600 (as when a dry run or another configuration planned it): it must not train.
    planned = shlex.split(trainings[0].split(" >> ")[0])
    (run_dir,) = [s.work / a.split("=", 1)[1] for a in planned if a.startswith("--run-dir=")]
    before = _snapshot(run_dir)
    job = s.sizepenalty(*planned[1:])
    assert job.returncode == 2, job.stdout + job.stderr
    (line,) = job.stderr.strip().splitlines()  # one line, no traceback
    assert "the train settings of DTS seed 42 fold" in line
    assert "changed after the workflow planned this job" in line
    assert _snapshot(run_dir) == before


INFERENCE = {"infer", "evaluate", "aggregate", "figures", "report", "all"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "rerun"),
    [
        # The validation monitor that picks best.pt has its own window: every training.
        ({"train": {"validation": {"overlap": 0.25}}}, "train"),
        # Inference's window: the inferences and what reads them, no training.
        ({"infer": {"roi": [16, 16, 16]}}, INFERENCE),
        ({"infer": {"overlap": 0.25}}, INFERENCE),
        # How fast, not what: nothing.
        ({"infer": {"sw_batch_size": 2}}, set()),
        # A report-only setting: nothing upstream of aggregate.
        ({"report": {"bootstrap": 300}}, {"aggregate", "figures", "report", "all"}),
    ],
    ids=["train.validation", "infer.roi", "infer.overlap", "infer.sw_batch_size", "report.bootstrap"],
)  # fmt: skip
def test_a_setting_change_reruns_exactly_the_jobs_that_read_it(killed_study, change, rerun):
    s = killed_study
    (s.work / "change.yaml").write_text(yaml.safe_dump(change))
    dry = s.snakemake("change.yaml", "-n", "-p")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs, trainings = _planned(dry)
    if rerun == "train":
        assert len(trainings) == 4 and jobs.count("train") == 4, jobs
    else:
        assert set(jobs) == rerun and not trainings, jobs


def test_a_config_typo_is_one_line_naming_the_file_and_the_key(tmp_path):
    import subprocess

    work = copy_workflow(tmp_path / "wf")
    (work / "typo.yaml").write_text("train: {epoch: 3}\n")
    out = subprocess.run([str(SNAKEMAKE), "-n", "--configfile", "typo.yaml"], cwd=work,
                         env=snakemake_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    problems = [line for line in out.stderr.splitlines() if "unknown key" in line]
    assert len(problems) == 1 and "typo.yaml: train.epoch: unknown key" in problems[0], out.stderr
    assert "expected one of: " in problems[0] and "epochs" in problems[0]
    # Ours only: no schema dump, no traceback.
    assert len(out.stderr.strip().splitlines()) <= 3, out.stderr
    assert "Traceback" not in out.stderr and "additionalProperties" not in out.stderr


@pytest.mark.slow
def test_superseded_runs_leave_compare_and_an_extended_study_reopens_its_parent_run(killed_study):
    """Last of this file's study tests: it changes the study (tau 300 and one more combination)."""
    import csv
    import io

    from mlflow.tracking import MlflowClient

    s = killed_study
    client = MlflowClient(f"sqlite:///{s.study / 'mlflow.db'}")
    parent = (s.study / "mlflow_parent_run.txt").read_text().strip()
    ended = client.get_run(parent).info
    assert ended.status == "FINISHED"  # the study's last job completed
    exp = client.get_experiment_by_name("sizepenalty")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (s.work / "more.yaml").write_text(
        yaml.safe_dump({"losses": {"tau": 300, "combinations": ["D", "DTS", "S"]}})
    )
    more = s.snakemake("more.yaml")
    assert more.returncode == 0, more.stderr[-3000:]
    again = client.get_run(parent).info
    assert again.status == "FINISHED" and again.end_time > ended.end_time  # reopened, ended again

    def compare(*extra):
        out = s.sizepenalty("compare", "-c", "results/tiny/config.effective.yaml", "--format",
                            "csv", *extra)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return list(csv.DictReader(io.StringIO(out.stdout)))

    rows = compare()  # one row per run (combination, variant, seed, fold), every one current
    assert sorted((r["combo"], r["variant"], r["seed"], r["fold"]) for r in rows) == [
        (c, "main", "42", f) for c in ("D", "DTS", "S") for f in ("0", "1")
    ]
    assert all(r["status"] == "FINISHED" for r in rows)
    everything = compare("--all")  # the DTS runs of tau 600 too, marked
    old = [r for r in everything if r["status"] == "FINISHED (superseded)"]
    assert len(everything) == 8 and sorted((r["combo"], r["fold"]) for r in old) == [
        ("DTS", "0"),
        ("DTS", "1"),
    ]
    assert {r["run_id"] for r in everything} - {r["run_id"] for r in old} == {
        r["run_id"] for r in rows
    }


def _fake(folder, name, cwd, *args, lives=600, out=None):
    """A process whose command line runs a program called ``name``, working in ``cwd``, for
    ``lives`` seconds (its stdout to the file ``out``, when given)."""
    import subprocess
    import sys

    script = folder / name
    script.write_text(f"import sys, time\nprint('up', file=sys.stderr, flush=True)\n"
                      f"time.sleep({lives})\n")  # fmt: skip
    stdout = open(out, "w") if out else subprocess.DEVNULL  # noqa: SIM115 - the child's
    proc = subprocess.Popen([sys.executable, str(script), *(args or ("--cores", "all"))], cwd=cwd,
                            stdout=stdout, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr.readline() == "up\n"
    return proc


def _study_config(work, study):
    """``<study>.yaml`` in ``work`` naming the study; the snakemake options that use it."""
    (work / f"{study}.yaml").write_text(yaml.safe_dump({"study": study}))
    return ["--configfile", f"{study}.yaml"]


def _lock(work, n, *outputs):
    """Snakemake's lock of a run whose output files are ``outputs`` (paths in ``work``)."""
    locks = work / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / f"{n}.input.lock").write_text("")
    (locks / f"{n}.output.lock").write_text("".join(f"{o}\n" for o in outputs))
    return [locks / f"{n}.input.lock", locks / f"{n}.output.lock"]


@pytest.mark.parametrize("program", ["snakemake", "sizepenalty"])
def test_the_lock_check_never_unlocks_while_a_run_or_its_jobs_work_here(tmp_path, capsys, program):
    from sizepenalty.locks import check

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    tiny = _study_config(work, "tiny")
    (lock, _) = _lock(work, 0, "results/tiny/report.html")
    # A run of the study (its options name it), or a job it left (its arguments name the study).
    args = tiny if program == "snakemake" else ["train", "--config=results/tiny/config.effective.yaml"]
    other = _fake(tmp_path, program, elsewhere, *args)  # another folder's run does not count
    live = _fake(tmp_path, program, work, *args)
    try:
        assert check(work, tiny) == 1
    finally:
        for p in (other, live):
            p.kill()
            p.wait()
    said = capsys.readouterr().err
    assert lock.exists() and "Not unlocking" in said and f"kill {live.pid}" in said
    assert f"pid {other.pid}" not in said
    if program == "sizepenalty":  # the jobs a killed run left behind
        assert "left from a killed run" in said
    assert check(tmp_path / "elsewhere", tiny) == 0  # no lock: nothing to say
    assert not capsys.readouterr().err


def test_the_lock_check_is_scoped_to_the_study_its_options_name(tmp_path, capsys):
    """Two studies in one checkout: one runs, the other was killed with kill -9. `make run` for
    the killed one goes on and removes only that study's lock; the running one keeps its lock
    and is never told to unlock."""
    from sizepenalty.locks import check

    work = tmp_path / "work"
    work.mkdir()
    running, killed = _study_config(work, "running"), _study_config(work, "killed")
    ours = _lock(work, 0, "results/running/report.html", "results/running/runs/D/done.json")
    stale = _lock(work, 1, "results/killed/report.html")
    # The running study: its Snakemake, a job and a warm worker whose log is in the study.
    log = work / "results" / "running" / "logs" / "worker.log"
    log.parent.mkdir(parents=True)
    run = _fake(tmp_path, "snakemake", work, "--cores", "2", *running)
    job = _fake(tmp_path, "sizepenalty", work, "train",
                "--config=results/running/config.effective.yaml")  # fmt: skip
    worker = _fake(tmp_path, "sizepenalty", work, "worker", "--name", "w", out=log)
    try:
        assert check(work, killed) == 0
        said = capsys.readouterr().err
        assert "lock of the study results/killed" in said and "is stale" in said, said
        assert not any(p.exists() for p in stale) and all(p.exists() for p in ours)
        assert "Removing its lock files (.snakemake/locks/: 1.input.lock, 1.output.lock" in said
        # The running study's own check sees its run and unlocks nothing.
        assert check(work, running) == 1
        said = capsys.readouterr().err
        assert f"kill {run.pid}" in said and "Not unlocking" in said
        assert all(p.exists() for p in ours)
    finally:
        for p in (run, job, worker):
            p.kill()
            p.wait()


def test_the_study_a_snakemake_command_line_runs(tmp_path):
    from sizepenalty.locks import study_of

    (tmp_path / "config.yaml").write_text("study: base\nresults: out\n")
    (tmp_path / "a.yaml").write_text("study: a\n")
    assert study_of([], tmp_path) == tmp_path / "out" / "base"
    assert study_of(["--cores", "2", "--configfile", "a.yaml"], tmp_path) == tmp_path / "out/a"
    assert study_of(["--configfile", "a.yaml", "--config", "results=/r", "study=z"],
                    tmp_path) == Path("/r/z")  # fmt: skip
    assert study_of(["--configfile", "missing.yaml"], tmp_path) is None  # cannot tell


def test_the_lock_check_waits_for_the_warm_worker_of_a_killed_run(tmp_path, capsys):
    """A warm worker (sizepenalty.worker) lives in its own session, so killing Snakemake's
    process group leaves it, and the job it forked, running until they notice (seconds)."""
    import os
    import subprocess
    import sys

    from sizepenalty.locks import _wait_for_ending, processes_in

    killed, running = tmp_path / "killed", tmp_path / "running"
    killed.mkdir()
    running.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a Snakemake that was killed
    orphan = _fake(tmp_path, "sizepenalty", killed, "worker", "--name", "w", "--parent",
                   str(gone.pid), lives=1)  # fmt: skip
    served = _fake(tmp_path, "sizepenalty", running, "worker", "--parent", str(os.getpid()))
    try:
        (found,) = processes_in(killed)
        assert found.pid == orphan.pid and found.ending
        assert _wait_for_ending(killed, 120) == []  # it stopped by itself; waited for it
        assert orphan.poll() is not None
        assert "Waiting for the warm worker" in capsys.readouterr().err
        # A worker whose Snakemake is alive is a run in progress: no waiting for it.
        (live,) = processes_in(running)
        assert live.pid == served.pid and not live.ending
        assert _wait_for_ending(running, 120) == [live]
    finally:
        for p in (orphan, served):
            p.kill()
            p.wait()


def test_the_program_of_a_command_line():
    from sizepenalty.locks import program

    assert program(["/v/bin/python", "/v/bin/snakemake", "--cores", "all"]) == "snakemake"
    assert program(["python3.11", "-X", "utf8", "-m", "snakemake", "-n"]) == "snakemake"
    assert program(["/v/bin/sizepenalty", "train"]) == "sizepenalty"
    assert program(["/bin/sh", "-c", "/v/bin/snakemake --cores all"]) == "sh"
    assert program(["python", "-m", "sizepenalty.locks"]) == "sizepenalty"


# ----------------------------------------------------------------------------- a dead tracking server


class HungServer:
    """A tracking 'server' that accepts connections and never answers (a hung or overloaded
    server, the worst case for a client: every request waits for its timeout). The kernel
    completes each connection in the listen backlog; :meth:`connections` accepts and counts them."""

    def __init__(self, port: int) -> None:
        import socket

        self.port = port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.held: list = []

    def connections(self) -> int:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except BlockingIOError:
                return len(self.held)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


COHORT = tiny_config(
    "faults",
    losses={"combinations": ["D", "DTS"]},
    train={"epochs": 2, "batch_size": 2, "patches_per_volume": 2, "patch_large": [8, 16, 16],
           "patch_small": [8, 8, 8], "workers": 0, "threads": 1, "val_every": 1,
           "validation": {"roi": [16, 32, 32]}},
)  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A tiny preprocessed cohort and its folds, made with the CLI (no Snakemake)."""
    from workflow_helpers import cli_cohort

    root = tmp_path_factory.mktemp("cohort")
    c = root / "c.yaml"
    c.write_text(yaml.safe_dump(COHORT | {"results": str(root)}))
    cli_cohort(c, root, root / "faults/data/raw", 5)
    return root


def _train_cmd(c, root, run_dir, fold, *extra):
    import sys

    return [sys.executable, "-m", "sizepenalty", *train_args(c, root, run_dir, "D", fold,
            "--parent-run-file", str(root / "parent.txt"), *extra)]  # fmt: skip


def _steps(record, key="train_loss"):
    return sorted(int(step) for step, *_ in record["metrics"][key])


@pytest.mark.slow
def test_a_dead_tracking_server_costs_a_job_one_request_and_sync_backfills_the_runs(
    cohort, tmp_path
):
    """The issue's story: the tracking server stops answering during a study, comes back, and
    `sizepenalty sync` fills in what it missed. The hung server and the live one listen on two
    ports; switching the config's tracking.uri between them stands in for one server dying and
    coming back (tracking.uri is in no stage's fingerprint, so trainings do not restart)."""
    import subprocess

    from mlflow.tracking import MlflowClient

    root, runs = cohort, tmp_path / "runs"
    hung = HungServer(free_port())
    live = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path)  # comes up meanwhile
    dead, back = tmp_path / "dead.yaml", tmp_path / "back.yaml"
    for c, uri in ((dead, f"http://127.0.0.1:{hung.port}"), (back, live.uri)):
        c.write_text(yaml.safe_dump(COHORT | {"results": str(root), "tracking": {"uri": uri}}))
    sizepenalty = str(SNAKEMAKE.with_name("sizepenalty"))
    env = snakemake_env()

    def run(cmd):
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    try:
        # The study's parent run: the console says the store is down and what to do later.
        made = run([sizepenalty, "study-run", "-c", str(dead), "--out", str(root / "parent.txt")])
        assert made.returncode == 0 and "unreachable" in made.stdout, made.stdout + made.stderr
        assert "`sizepenalty sync`" in made.stdout
        # A whole training with the server hung: it finishes, its record holds every epoch, it
        # asked the server once (not a timeout per call), and it says how to push the record.
        before = hung.connections()
        job = run(_train_cmd(dead, root, runs / "fold0", 0))
        assert job.returncode == 0, job.stderr[-3000:]
        assert hung.connections() - before <= 1  # one /health request, then no more calls
        warnings = [line for line in job.stderr.splitlines() if "tracking disabled" in line]
        assert len(warnings) == 1 and "`sizepenalty sync`" in warnings[0], job.stderr
        record = json.loads((runs / "fold0" / "run.json").read_text())
        assert record["status"] == "FINISHED" and record["run_id"] is None
        assert _steps(record) == _steps(record, "val_dice") == [1, 2]
        # Fold 1 starts while the server answers (its MLflow run gets epoch 1), then the server
        # hangs and the resumed training ends with the record only: a partial run in the store.
        live.up()
        job = run(_train_cmd(back, root, runs / "fold1", 1, "--max-epochs", "1"))
        assert job.returncode == 0 and "tracking disabled" not in job.stderr, job.stderr[-3000:]
        partial = json.loads((runs / "fold1" / "run.json").read_text())["run_id"]
        assert MlflowClient(live.uri).get_run(partial).info.status == "RUNNING"
        before = hung.connections()
        job = run(_train_cmd(dead, root, runs / "fold1", 1))
        assert job.returncode == 0 and "resuming after epoch 1" in job.stdout, job.stderr[-3000:]
        assert hung.connections() - before <= 1
        # The server is back: one command pushes what is missing; a second push adds nothing.
        sync = [sizepenalty, "sync", "-c", str(back), "--runs-dir", str(runs)]
        first = run(sync)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "2 run record(s) in sync" in first.stdout and "1 run(s) created" in first.stdout
        client = MlflowClient(live.uri)
        exp = client.get_experiment_by_name("sizepenalty")

        def stored():
            """Per run name: (status, every metric's logged (step, value) points, in order)."""
            found = {}
            for r in client.search_runs([exp.experiment_id], max_results=100):
                points = {k: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, k))
                          for k in r.data.metrics}  # fmt: skip
                found.setdefault(r.info.run_name, []).append((r.info.status, points))
            return found

        synced = stored()
        assert sorted(synced) == ["D-seed42-fold0", "D-seed42-fold1"]
        for fold in (0, 1):
            ((status, points),) = synced[f"D-seed42-fold{fold}"]  # one run each: no duplicates
            record = json.loads((runs / f"fold{fold}" / "run.json").read_text())
            assert status == "FINISHED"
            assert points == {k: sorted({(s, v) for s, v, _ in p})
                              for k, p in record["metrics"].items()}  # fmt: skip
            assert [step for step, _ in points["train_loss"]] == [1, 2]  # each epoch once
        assert json.loads((runs / "fold1" / "run.json").read_text())["run_id"] == partial
        second = run(sync)
        assert "0 run(s) created, 0 metric value(s) added" in second.stdout, second.stdout
        assert stored() == synced
    finally:
        hung.close()
        live.stop()


def test_epochs_a_kill_kept_from_the_record_are_filled_in_from_the_checkpoint(cohort, tmp_path):
    """A kill between an epoch's checkpoint and its metrics (the record is written just after
    last.pt) must not leave that epoch out of the run's record and MLflow run for good."""
    import subprocess

    from mlflow.tracking import MlflowClient

    root, run_dir = cohort, tmp_path / "run"
    c, untracked = tmp_path / "c.yaml", tmp_path / "untracked.yaml"
    c.write_text(yaml.safe_dump(COHORT | {"results": str(tmp_path)}))
    untracked.write_text(yaml.safe_dump(COHORT | {"results": str(tmp_path),
                                                  "tracking": {"enabled": False}}))  # fmt: skip
    env = snakemake_env()
    # Epoch 1 reaches no MLflow store, then its metrics leave the record: the state a kill
    # right after writing last.pt leaves.
    first = subprocess.run(_train_cmd(untracked, root, run_dir, 0, "--max-epochs", "1"), env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    record["metrics"] = {}
    (run_dir / "run.json").write_text(json.dumps(record))
    second = subprocess.run(_train_cmd(c, root, run_dir, 0), env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert second.returncode == 0 and "resuming after epoch 1" in second.stdout, second.stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert _steps(record) == _steps(record, "val_dice") == [1, 2]
    history = MlflowClient(f"sqlite:///{tmp_path / 'faults' / 'mlflow.db'}").get_metric_history(
        record["run_id"], "train_loss"
    )
    assert sorted(m.step for m in history) == [1, 2]


@pytest.mark.slow
def test_a_workflow_run_says_on_the_console_that_the_tracking_server_does_not_answer(tmp_path):
    import subprocess

    work = copy_workflow(tmp_path / "wf")
    port = free_port()
    tiny = COHORT | {"tracking": {"uri": f"http://127.0.0.1:{port}"}}
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    hung = HungServer(port)
    try:
        # Only the study's parent run (no data, no training): onstart, that job, onsuccess.
        out = subprocess.run(
            [str(SNAKEMAKE), "results/faults/mlflow_parent_run.txt", "--cores", "1",
             "--configfile", "tiny.yaml"],
            cwd=work, env=snakemake_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        hung.close()
    assert out.returncode == 0, out.stderr[-3000:]
    said = [line for line in out.stderr.splitlines() if "not reachable" in line]
    assert len(said) == 1 and "`sizepenalty sync`" in said[0], out.stderr
    assert "unreachable" in (work / "results/faults/logs/study_run.log").read_text()


# ----------------------------------------------------------------------------- a damaged store


def test_a_damaged_store_is_named_moved_aside_and_rebuilt_whole_by_sync(cohort, tmp_path):
    """The store truncated mid-study (a full disk): a training says the store is damaged and what
    to do; `sizepenalty sync` moves the file aside and rebuilds the store from the run records:
    the children, the study's parent run (its file rewritten), the children's links to it and
    the tables on it. A second sync adds nothing."""
    import subprocess

    import pandas as pd
    from mlflow.tracking import MlflowClient

    root, study = cohort, tmp_path / "faults"
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(COHORT | {"results": str(tmp_path)}))
    parent_file, db = study / "mlflow_parent_run.txt", study / "mlflow.db"
    sizepenalty = str(SNAKEMAKE.with_name("sizepenalty"))

    def run(*args):
        out = subprocess.run([sizepenalty, *args], env=snakemake_env(), capture_output=True,
                             text=True, timeout=600)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr[-3000:]
        return out

    def train(fold, *extra):
        cmd = _train_cmd(c, root, study / "runs" / f"fold{fold}", fold, *extra)
        cmd[cmd.index("--parent-run-file") + 1] = str(parent_file)
        return subprocess.run(cmd, env=snakemake_env(), capture_output=True, text=True,
                              timeout=600)  # fmt: skip

    run("study-run", "-c", str(c), "--out", str(parent_file))
    old_parent = parent_file.read_text().strip()
    assert train(0).returncode == 0 and train(1, "--max-epochs", "1").returncode == 0
    tables = study / "tables"
    tables.mkdir()
    pd.DataFrame({"dice": [0.5, 0.7], "pq": [0.4, 0.6], "rve": [0.2, 0.1]}).to_csv(
        tables / "per_case_metrics.csv", index=False)  # fmt: skip
    (tables / "table_main.md").write_text("| Method | Dice |\n|---|---|\n| D | 0.6 |\n")
    # Half the file gone, as after a full disk.
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    resumed = train(1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (warning,) = [line for line in resumed.stderr.splitlines() if "is damaged" in line]
    assert "`sizepenalty sync" in warning and "rebuilds the store from the run records" in warning
    first = run("sync", "-c", str(c))
    assert "is damaged" in first.stdout and "moved aside to mlflow.db.damaged-" in first.stdout
    assert len(list(study.glob("mlflow.db.damaged-*"))) == 1
    assert "2 run(s) created" in first.stdout and "parent run was made again" in first.stdout
    parent = parent_file.read_text().strip()
    assert parent and parent != old_parent
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("sizepenalty")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.info.run_id != parent]
    assert sorted(r.info.run_name for r in children) == ["D-seed42-fold0", "D-seed42-fold1"]
    assert {r.data.tags.get("mlflow.parentRunId") for r in children} == {parent}
    for r in children:  # each run as its record has it
        record = json.loads((study / "runs" / r.data.params["fold"].join(["fold", ""])
                             / "run.json").read_text())  # fmt: skip
        assert record["run_id"] == r.info.run_id and r.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")] == [1, 2]
    attached = {Path(a.path).name for a in client.list_artifacts(parent, "tables")}
    assert {"per_case_metrics.csv", "table_main.md", "mlflow_runs.md"} <= attached
    assert client.get_run(parent).data.metrics["mean_test_dice"] == pytest.approx(0.6)
    second = run("sync", "-c", str(c))
    assert "0 run(s) created, 0 metric value(s) added" in second.stdout, second.stdout
    assert "made again" not in second.stdout and parent_file.read_text().strip() == parent
    assert len(client.search_runs([exp.experiment_id])) == 3
