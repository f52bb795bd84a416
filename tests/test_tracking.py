"""MLflow study runs: concurrent writers on the default SQLite store, a tracking server, failures."""

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from workflow_helpers import MlflowServer

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
