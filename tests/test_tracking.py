"""MLflow study runs: concurrent writers on the default SQLite store, a tracking server, failures."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient
from workflow_helpers import MlflowServer, cli_cohort, tiny_config, train_args

from sizepenalty.tracking import Tracker

WRITER = r"""
import sys
from sizepenalty.tracking import Tracker
uri, parent, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = Tracker(uri, "concurrency")
run = t.start(f"DTS-fold{k}", parent_id=parent, tags={"combo": "DTS", "fold": str(k)})
t.log_params({f"p{i}": i for i in range(40)} | {"fold": k})
for step in range(1, 31):
    t.log_metrics({"train_loss": 1.0 / step, "val_dice": step / 30}, step=step)
t.log_metrics({"test_dice": 0.5 + k / 100})
t.end("FINISHED")
print(run)
sys.exit(0 if t.enabled else 3)
"""


def _children(client: MlflowClient, experiment: str, parent: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")


def test_six_concurrent_jobs_on_sqlite_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = Tracker(uri, "concurrency").start("study-x")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, parent, str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for k in range(6)
    ]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for _out, err, rc in results:
        assert rc == 0 and "tracking disabled" not in err, err[-2000:]
    client = MlflowClient(tracking_uri=uri)
    runs = _children(client, "concurrency", parent)
    assert sorted(r.data.params["fold"] for r in runs) == [str(k) for k in range(6)]
    for r in runs:
        assert r.info.status == "FINISHED" and len(r.data.params) == 41
        history = client.get_metric_history(r.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == list(range(1, 31))
        assert r.data.metrics["test_dice"] == pytest.approx(0.5 + int(r.data.params["fold"]) / 100)


@pytest.mark.slow
def test_tracking_server_uri_works_the_same(tmp_path):
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path)
    try:
        uri = server.up()
        parent = Tracker(uri, "served").start("study-served")
        child = Tracker(uri, "served")
        run_id = child.start("D-fold0", parent_id=parent)
        child.log_params({"combo": "D", "fold": 0})
        child.log_metrics({"train_loss": 0.7}, step=1)
        (tmp_path / "epochs.csv").write_text("epoch,loss\n1,0.7\n")
        child.log_artifact(tmp_path / "epochs.csv")
        child.end()
        assert child.enabled, "a tracking call failed against the server"
        client = MlflowClient(tracking_uri=uri)
        (run,) = _children(client, "served", parent)
        assert run.info.run_id == run_id and run.data.metrics["train_loss"] == 0.7
        assert [a.path for a in client.list_artifacts(run_id)] == ["epochs.csv"]
    finally:
        server.stop()


def test_unreachable_store_warns_once_and_never_raises(capsys):
    t = Tracker("http://127.0.0.1:9", "nowhere")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        assert t.start("D-fold0") is None
        t.log_params({"a": 1})
        t.log_metrics({"x": 1.0}, step=1)
        t.end()
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    err = capsys.readouterr().err
    assert err.count("MLflow tracking disabled") == 1 and not t.enabled


# ----------------------------------------------------------------------------- a training's mirror


class _Recorder:
    """A stand-in tracker: what a Mirror asks it to do, in order (``fail`` raises on that call)."""

    def __init__(self, fail=None):
        self.calls, self.fail, self.failed = [], fail, []

    def log_batch(self, params, points):
        self.calls.append(("batch", dict(params), [p[0] for p in points]))

    def end(self, status):
        if status == self.fail:
            raise RuntimeError("store gone")
        self.calls.append(("end", status))

    def _fail(self, what, exc):
        self.failed.append((what, str(exc)))


def test_the_mirror_keeps_the_order_batches_neighbouring_logs_and_swallows_errors():
    from sizepenalty.tracking import Mirror

    t = _Recorder(fail="FAILED")
    m = Mirror(t)  # not started: what follows queues up
    m.log({"a": 1}, [("x", 1.0, 0, 1)])
    m.log({"b": 2}, [("x", 2.0, 0, 2), ("y", 3.0, 0, 2)])
    m.call(t.end, "FAILED")  # raises on the thread: reported, never raised here
    m.log({}, [("x", 4.0, 0, 3)])
    m.call(t.end, "FINISHED")
    assert t.calls == []
    m.start()
    assert m.close(30)
    assert t.calls == [("batch", {"a": 1, "b": 2}, ["x", "x", "y"]), ("batch", {}, ["x"]),
                       ("end", "FINISHED")]  # fmt: skip
    assert t.failed == [("tracking thread", "store gone")]


def _training_run(tmp_path, uri, key="s/D/main/seed42/fold0/fp"):
    from sizepenalty.tracking import TrainingRun

    return TrainingRun(Tracker(uri, "mirror"), tmp_path, key, "D-seed42-fold0", None, {"combo": "D"})


def test_a_re_run_epoch_is_logged_once_and_replaces_only_values_that_changed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _training_run(tmp_path, uri)
    for step in (1, 2):
        first.log_epoch({"train_loss": 1.0 / step, "epoch_time_s": 5.0}, step)
    first.close()  # killed after epoch 2; its checkpoint was from epoch 1
    resumed = _training_run(tmp_path, uri)  # same key: the same record and MLflow run
    # Epoch 2 again, bit-identical (a CPU): nothing is logged again, not even its new wall time.
    assert resumed.log_epoch({"train_loss": 0.5, "epoch_time_s": 7.0}, 2) == []
    # Epoch 2 again on a device that is not deterministic: the record takes the new value.
    assert resumed.log_epoch({"train_loss": 0.4, "epoch_time_s": 7.0}, 2) == ["train_loss"]
    resumed.log_epoch({"train_loss": 0.3, "epoch_time_s": 6.0}, 3)
    resumed.end("FINISHED")
    record = resumed.record
    assert [(s, v) for s, v, _ in record.metrics["train_loss"]] == [(1, 1.0), (2, 0.4), (3, 0.3)]
    assert [(s, v) for s, v, _ in record.metrics["epoch_time_s"]] == [(1, 5.0), (2, 5.0), (3, 6.0)]
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.info.run_id == first.record.run_id
    times = client.get_metric_history(record.run_id, "epoch_time_s")
    assert sorted((m.step, m.value) for m in times) == [(1, 5.0), (2, 5.0), (3, 6.0)]
    # MLflow cannot delete a point: the replaced one stays in its history, the latest is the
    # re-run's.
    losses = client.get_metric_history(record.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in losses) == [(1, 1.0), (2, 0.4), (2, 0.5), (3, 0.3)]
    assert run.data.metrics["train_loss"] == 0.3


def test_a_training_run_never_raises_when_mlflow_fails_and_its_record_is_complete(tmp_path, capsys,
                                                                                  monkeypatch):  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    calls = []

    def broken(self, params, points):
        calls.append(len(points))
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(Tracker, "_log_batch", broken)
    run = _training_run(tmp_path, uri)
    run.log_params({"lr": 0.01})
    for step in (1, 2, 3):
        run.log_epoch({"train_loss": 1.0 / step}, step)
    assert run.end("FINISHED")
    err = capsys.readouterr().err
    assert err.count("MLflow tracking disabled") == 1 and "disk I/O error" in err, err
    assert len(calls) == 1  # disabled after the first failure: no call per epoch
    assert [s for s, *_ in run.record.metrics["train_loss"]] == [1, 2, 3]
    assert run.record.status == "FINISHED" and run.record.params == {"lr": "0.01"}
    assert not any(t.name == "sizepenalty-mlflow" for t in threading.enumerate())


LIVE = tiny_config("live", losses={"combinations": ["D"]},
                   train={"epochs": 3, "batch_size": 2, "patches_per_volume": 2,
                          "patch_large": [8, 16, 16], "patch_small": [8, 8, 8], "workers": 0,
                          "threads": 1, "val_every": 1})  # fmt: skip


def test_a_trainings_metrics_reach_mlflow_while_it_runs(tmp_path, monkeypatch):
    """After its first epoch, with two to go, the training's MLflow run already holds that
    epoch's metrics: they are mirrored as they come, not when the training ends."""
    from sizepenalty import train as train_mod
    from sizepenalty.cli import main
    from sizepenalty.config import from_dict

    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(LIVE | {"results": str(tmp_path)}))
    cli_cohort(c, tmp_path, tmp_path / "live/data/raw", 5)
    client = MlflowClient(tracking_uri=from_dict(LIVE | {"results": str(tmp_path)}).tracking_uri())
    run_dir, seen = tmp_path / "run", []
    real_train = train_mod.train

    def watching(cfg, job, on_epoch, *args, **kwargs):
        def on_epoch_then_look(row):
            on_epoch(row)
            if row["epoch"] != 1:
                return
            deadline = time.monotonic() + 120  # a guard against a hang, not a timing
            while time.monotonic() < deadline:
                run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
                steps = [m.step for m in client.get_metric_history(run_id, "train_loss")] if run_id else []
                if steps:
                    seen.append((steps, client.get_run(run_id).info.status,
                                 (run_dir / "done.json").exists()))  # fmt: skip
                    return
                time.sleep(0.05)

        return real_train(cfg, job, on_epoch_then_look, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train", watching)
    assert main(train_args(c, tmp_path, run_dir, "D", 0)) == 0
    assert seen == [([1], "RUNNING", False)]
    record = json.loads((run_dir / "run.json").read_text())
    history = client.get_metric_history(record["run_id"], "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert client.get_run(record["run_id"]).info.status == "FINISHED"
    timings = json.loads((run_dir / "timings.json").read_text())
    assert "tracking_s" in timings  # its critical-path cost, for bench/bench_overhead.py
