"""last.pt on a time budget (``train.checkpoint_minutes``): when it is written, that it is in no
fingerprint, and that a run resumed from an older checkpoint re-runs the epochs after it to the
same weights without logging any of them twice (run record and MLflow)."""

import json
import shutil

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from workflow_helpers import cli_cohort, tiny_config, train_args

from sizepenalty import train as train_mod
from sizepenalty.cli import main
from sizepenalty.config import from_dict
from sizepenalty.stages import EXECUTION, fingerprint, stage_config

TRAIN = {"epochs": 3, "batch_size": 2, "patches_per_volume": 4, "patch_large": [8, 16, 16],
         "patch_small": [8, 8, 8], "workers": 0, "threads": 1, "val_every": 3, "lr": 3e-3}  # fmt: skip
COHORT = tiny_config("ck", losses={"combinations": ["D"]}, train=TRAIN)
EPOCH_METRICS = ("train_loss", "train_D", "lr", "val_dice", "epoch_time_s")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    c = root / "c.yaml"
    c.write_text(yaml.safe_dump(COHORT | {"results": str(root)}))
    cli_cohort(c, root, root / "ck/data/raw", 5)
    return root


def _config(tmp_path, root, **train):
    c = tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml"
    c.write_text(yaml.safe_dump(COHORT | {"results": str(tmp_path / "res"),
                                          "train": TRAIN | train}))  # fmt: skip
    return c


def _train(c, root, run_dir, *extra):
    return main(train_args(c, root, run_dir, "D", 0, *extra))


def _epochs(run_dir):
    """epochs.csv's rows (column -> text)."""
    header, *rows = (run_dir / "epochs.csv").read_text().splitlines()
    return [dict(zip(header.split(","), r.split(","))) for r in rows]


@pytest.fixture
def written(monkeypatch):
    """The (epoch, step) of every last.pt this process writes, with the clock's time then."""
    positions = []
    real = train_mod.checkpoint

    def spy(s):
        positions.append((s.epoch, s.step, train_mod._now()))
        real(s)

    monkeypatch.setattr(train_mod, "checkpoint", spy)
    return positions


def test_the_checkpoint_interval_is_an_execution_setting_in_no_fingerprint():
    assert "train.checkpoint_minutes" in EXECUTION
    base = {"losses": {"combinations": ["D"]}}
    every_epoch = from_dict(base | {"train": {"checkpoint_minutes": 0}})
    default = from_dict(base)
    assert default.train.checkpoint_minutes == 10
    for stage in ("train", "infer", "evaluate"):
        assert fingerprint(every_epoch, stage, "D") == fingerprint(default, stage, "D")
    assert stage_config(every_epoch, "train", "D").train.checkpoint_minutes == 0  # readable


def test_with_a_long_interval_last_pt_is_written_once_at_the_end(cohort, tmp_path, written):
    c = _config(tmp_path, cohort, checkpoint_minutes=60)
    assert _train(c, cohort, tmp_path / "run") == 0
    # Validation only after epoch 3 (val_every 3): no new best before, no minute passed.
    assert [(e, s) for e, s, _ in written] == [(3, 0)]
    assert torch.load(tmp_path / "run/last.pt", weights_only=True)["epoch"] == 3
    assert len((tmp_path / "run/epochs.csv").read_text().splitlines()) == 4  # every epoch


def test_interval_zero_writes_last_pt_after_every_epoch(cohort, tmp_path, written):
    c = _config(tmp_path, cohort, checkpoint_minutes=0)
    assert _train(c, cohort, tmp_path / "run") == 0
    assert [(e, s) for e, s, _ in written] == [(1, 0), (2, 0), (3, 0)]


def test_a_new_best_writes_last_pt_with_it(cohort, tmp_path, written):
    c = _config(tmp_path, cohort, checkpoint_minutes=60, val_every=1)
    assert _train(c, cohort, tmp_path / "run") == 0
    val = [float(r["val_dice"]) for r in _epochs(tmp_path / "run")]
    bests = [e + 1 for e in range(3) if val[e] > max([-1.0, *val[:e]])]
    assert [(e, s) for e, s, _ in written] == [(e, 0) for e in sorted({*bests, 3})]
    best = torch.load(tmp_path / "run/best.pt", weights_only=True)
    assert torch.load(tmp_path / "run/last.pt", weights_only=True)["best_epoch"] == best["epoch"]


def test_the_interval_is_kept_inside_epochs_too(cohort, tmp_path, written, monkeypatch):
    """A clock that moves 30 s per optimiser step and a 1-minute interval: last.pt every two
    steps (inside an epoch too), so a kill -9 loses at most the interval plus one step."""
    clock = [0.0]
    monkeypatch.setattr(train_mod, "_now", lambda: clock[0])
    real_step = train_mod._step

    def step(s, x, y):
        clock[0] += 30.0
        return real_step(s, x, y)

    monkeypatch.setattr(train_mod, "_step", step)
    c = _config(tmp_path, cohort, checkpoint_minutes=1, patches_per_volume=6)  # 3+ steps an epoch
    assert _train(c, cohort, tmp_path / "run") == 0
    assert any(s > 0 for _, s, _ in written), written  # inside an epoch
    times = [0.0] + [t for _, _, t in written]
    assert all(60.0 <= b - a <= 90.0 for a, b in zip(times, times[1:-1])), written
    assert written[-1][:2] == (3, 0)


def test_a_run_resumed_from_an_older_checkpoint_logs_each_epoch_once(cohort, tmp_path, capsys):
    """The files a kill -9 in epoch 3 leaves when last.pt is from epoch 1 (the record, MLflow and
    epochs.csv are ahead of it): the resumed run re-runs epoch 2, ends with the weights of a run
    never stopped, and its record and MLflow run hold every epoch once, with the values of
    epochs.csv."""
    c = _config(tmp_path, cohort, checkpoint_minutes=60)
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert _train(c, cohort, straight) == 0
    assert _train(c, cohort, run, "--max-epochs", "1") == 0
    shutil.copy(run / "last.pt", tmp_path / "epoch1.pt")
    assert _train(c, cohort, run, "--max-epochs", "2") == 0
    shutil.copy(tmp_path / "epoch1.pt", run / "last.pt")  # epoch 2 was never checkpointed
    before = json.loads((run / "run.json").read_text())
    assert sorted(s for s, *_ in before["metrics"]["train_loss"]) == [1, 2]
    capsys.readouterr()
    assert _train(c, cohort, run) == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 1, step 0" in out and "epoch 2/3" in out
    assert "changed its logged" not in out  # bit-identical on a CPU: nothing to replace
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(run / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "FINISHED" and record["run_id"] == before["run_id"]
    client = MlflowClient(from_dict(COHORT | {"results": str(tmp_path / "res")}).tracking_uri())
    for key in EPOCH_METRICS:
        column = key.removeprefix("train_")
        csv = {int(r["epoch"]): float(r[column]) for r in _epochs(run) if r[column] != "nan"}
        points = record["metrics"][key]
        assert sorted(int(s) for s, *_ in points) == sorted(csv), (key, points)
        stored = client.get_metric_history(record["run_id"], key)
        assert sorted(m.step for m in stored) == sorted(csv), (key, stored)
        if key != "epoch_time_s":  # the wall time keeps the first attempt's value
            assert {int(s): v for s, v, _ in points} == csv, key
