"""The warm worker: a job handed to it gives exactly what the command gives by itself, exit codes
and stop signals pass through, and every doubt falls back to running in-process."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
import yaml
from workflow_helpers import BIN, cli_cohort, tiny_config, train_args

from sizepenalty import worker

SIZEPENALTY = str(BIN / "sizepenalty")
TINY = tiny_config(
    "w",
    dataset={"synthetic": {"cases": 6, "shape": [16, 32, 32]}},
    folds={"k": 3, "run": None},
    losses={"combinations": ["DTS"]},
    model={"base_filters": 4, "depth": 3},
    train={"epochs": 2, "batch_size": 2, "patches_per_volume": 6, "patch_large": [8, 16, 16],
           "patch_small": [8, 8, 8], "workers": 0, "lr": 3e-3, "validation": {"roi": [16, 32, 32]},
           "checkpoint_minutes": 0},
)  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("w")
    c = root / "c.yaml"
    c.write_text(yaml.safe_dump(dict(TINY, results=str(root / "res"))))
    cli_cohort(c, root, root / "res/w/data/raw", 6)
    return root, c


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    name = f"sizepenalty-test-{os.getpid()}"
    log = tmp_path_factory.mktemp("wlog") / "worker.log"
    worker.start(name, idle=300, log=log)
    deadline = time.monotonic() + 120
    while not worker.ready(name):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    yield name
    worker.stop(name)


def _train(study, run_dir, env_worker=None, **popen):
    root, c = study
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop(worker.ENV, None)
    if env_worker:
        env[worker.ENV] = env_worker
    cmd = [SIZEPENALTY, *train_args(c, root, run_dir, "DTS", 0)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)  # fmt: skip


def test_a_job_through_the_worker_equals_the_job_run_by_itself(study, warm, tmp_path):
    outputs = []
    for proc in (_train(study, tmp_path / "alone"), _train(study, tmp_path / "warm", warm)):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outputs.append(out)
    # The job's output reached the command's stdout.
    assert "DTS seed 42 fold 0 epoch 2/2" in outputs[1]
    a = torch.load(tmp_path / "alone/last.pt", weights_only=True)
    b = torch.load(tmp_path / "warm/last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    logs = [(tmp_path / d / "epochs.csv").read_text().splitlines() for d in ("alone", "warm")]
    assert [r.rsplit(",", 1)[0] for r in logs[0]] == [r.rsplit(",", 1)[0] for r in logs[1]]
    record = json.loads((tmp_path / "warm/run.json").read_text())
    assert record["status"] == "FINISHED" and record["params"]["combo"] == "DTS"


def test_output_and_exit_codes_pass_through(study, warm, tmp_path):
    root, c = study
    env = dict(os.environ, **{worker.ENV: warm})
    ok = subprocess.run([SIZEPENALTY, "folds", "-c", str(c), "--stats-dir", str(root / "pre"),
                         "--out", str(tmp_path / "f.json")], env=env, capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0 and "3 folds (train/val/test:" in ok.stdout
    assert (tmp_path / "f.json").read_text() == (root / "folds.json").read_text()
    bad = subprocess.run([SIZEPENALTY, "folds", "-c", str(tmp_path / "missing.yaml"), "--stats-dir",
                          str(root / "pre"), "--out", str(tmp_path / "g.json")], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "config file not found" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_stop_signal_reaches_the_job_and_a_killed_command_stops_it(study, warm, tmp_path):
    proc = _train(study, tmp_path / "stopped", warm)
    for line in proc.stdout:
        if "SIGUSR1 stops after the current step" in line:
            break
    proc.send_signal(signal.SIGUSR1)  # to the command; the worker's job gets it
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1
    assert json.loads((tmp_path / "stopped/run.json").read_text())["status"] == "KILLED"
    # kill -9 of the command (Snakemake aborting): the job notices and stops with a checkpoint.
    proc = _train(study, tmp_path / "orphan", warm)
    for line in proc.stdout:
        if "SIGUSR1 stops after the current step" in line:
            break
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 120
    record = tmp_path / "orphan/run.json"
    while json.loads(record.read_text())["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the orphaned job kept running"
        time.sleep(0.2)
    assert json.loads(record.read_text())["status"] == "KILLED"
    assert torch.load(tmp_path / "orphan/last.pt", weights_only=True)["step"] >= 1


def test_ctrl_c_in_a_worker_job_ends_it_as_in_a_fresh_process(study, warm, tmp_path):
    # Ctrl-C on `make run` reaches the command: the job gets KeyboardInterrupt, marks its run
    # FAILED and exits 130, exactly as without a worker.
    proc = _train(study, tmp_path / "interrupted", warm)
    for line in proc.stdout:
        if "SIGUSR1 stops after the current step" in line:
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert json.loads((tmp_path / "interrupted/run.json").read_text())["status"] == "FAILED"


def test_the_worker_serves_only_its_own_user(warm):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect("\0" + warm)
    assert worker._peer_uid(sock) == os.getuid()  # what the worker checks on every connection
    sock.close()


def test_no_worker_or_another_codes_worker_means_running_in_process(study, tmp_path, monkeypatch):
    # Nobody listening: the command runs by itself.
    proc = _train(study, tmp_path / "none", "sizepenalty-nobody-here")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    # A worker of other code (another key): never used.
    name = f"sizepenalty-stranger-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(1)
    requests = []

    def stranger():
        conn, _ = server.accept()
        worker._send(conn, {"key": "another python|another checkout|0"})
        requests.append(conn.recv(1024))
        conn.close()

    thread = threading.Thread(target=stranger, daemon=True)
    thread.start()
    monkeypatch.setenv(worker.ENV, name)
    assert worker.run_via_worker(["folds", "--help"]) is None
    thread.join(timeout=10)
    assert requests == [b""]  # it hung up without sending the job
    server.close()


def test_the_cli_hands_only_stage_verbs_to_a_worker(monkeypatch):
    from sizepenalty import cli

    seen = []
    monkeypatch.setenv(worker.ENV, "sizepenalty-recorder")
    monkeypatch.setattr(worker, "run_via_worker", lambda argv: seen.append(argv) or 0)
    assert cli.main(["schema"]) == 0 and seen == []  # not a stage: runs here
    assert cli.main(["folds", "-c", "x.yaml", "--stats-dir", "s", "--out", "o"]) == 0
    assert seen == [["folds", "-c", "x.yaml", "--stats-dir", "s", "--out", "o"]]
    assert sys.modules["sizepenalty.cli"] is cli
