"""Model, sampler/augmentation, training (2-epoch CPU runs), kill -9 + resume, MLflow run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from workflow_helpers import cli_cohort, train_args

from sizepenalty.config import from_dict
from sizepenalty.data.preprocess import mismatch
from sizepenalty.model import THESIS_PARAMETERS, build_model, count_parameters
from sizepenalty.sampling import (
    TRANSFORMS,
    PatchDataset,
    augment_patch,
    build_augment,
    plan_epoch,
)

TINY = {
    "study": "tiny",
    "dataset": {"synthetic": {"cases": 6, "shape": [16, 32, 32]}},
    "preprocess": {"shape": [16, 32, 32]},
    "folds": {"k": 3, "run": None},
    "losses": {"combinations": ["D", "S", "DTS"]},
    "model": {"base_filters": 2, "depth": 3},
    "train": {"epochs": 2, "batch_size": 2, "patches_per_volume": 2, "patch_large": [8, 16, 16], "patch_small": [8, 8, 8],
              "workers": 0, "threads": 1, "val_every": 1, "lr": 3e-3, "validation": {"roi": [16, 32, 32]}},
    "infer": {"roi": [16, 32, 32], "tta": False},
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    cfg = dict(TINY, results=str(root))
    c = root / "c.yaml"
    c.write_text(yaml.safe_dump(cfg))
    cli_cohort(c, root, root / "tiny/data/raw", 6)
    return root, c


def test_thesis_model_parameter_count():
    n = count_parameters(build_model(32, 5, 0.2))
    # Ours: 15,260,238 trainable parameters; the thesis reports ~14.54 M (+5 %).
    assert n == 15_260_238
    assert abs(n - THESIS_PARAMETERS) / THESIS_PARAMETERS < 0.06


def test_model_output_shape_and_prior():
    m = build_model(4, 3, prior_prob=0.01).eval()
    with torch.no_grad():
        y = m(torch.zeros(1, 3, 8, 16, 16))
    assert y.shape == (1, 1, 8, 16, 16)
    assert float(torch.sigmoid(y).mean()) < 0.1  # starts near the 1 % foreground prior
    assert (
        float(build_model(4, 3).head.bias.detach()[0]) == 0.0
    )  # default: the usual zero bias (thesis)


def test_patch_plan_sizes_and_positive_ratio():
    rng = np.random.default_rng(0)
    masks = [(rng.random((16, 32, 32)) > 0.995).astype(np.uint8) for _ in range(4)]
    plan = plan_epoch(masks, 0, 1, 10, 4, (8, 16, 16), (8, 8, 8), 0.2, 0.7, 1.0)
    assert sum(len(b) for b in plan) == 40
    sizes = {b[0].size for b in plan}
    assert sizes <= {(8, 16, 16), (8, 8, 8)}
    for b in plan:
        assert len({s.size for s in b}) == 1  # one patch size per batch
    assert plan == plan_epoch(masks, 0, 1, 10, 4, (8, 16, 16), (8, 8, 8), 0.2, 0.7, 1.0)
    big = plan_epoch(masks * 25, 3, 1, 10, 4, (8, 16, 16), (8, 8, 8), 0.0, 0.7, 1.0)
    centres_on_lesion = np.mean([masks[s.volume % 4][s.centre] > 0 for b in big for s in b])
    assert 0.6 < centres_on_lesion < 0.8


def test_mismatch_is_recomputed_after_augmentation():
    rng = np.random.default_rng(1)
    dwi, adc = rng.random((2, 8, 16, 16)).astype(np.float32)
    image = np.stack([dwi, adc, mismatch(dwi, adc)])
    mask = (rng.random((8, 16, 16)) > 0.9).astype(np.uint8)
    t = build_augment(prob_elastic=1.0)
    for seed in range(5):
        img, lab = augment_patch(t, image, mask, seed)
        np.testing.assert_allclose(img[2], img[0] * (1 - np.clip(img[1], 0, 1)), rtol=1e-6)
        assert not np.allclose(img[2], image[2])  # the channel follows the augmented DWI/ADC
        assert set(np.unique(lab)) <= {0.0, 1.0}
    a, _ = augment_patch(t, image, mask, 3)
    b, _ = augment_patch(t, image, mask, 3)
    np.testing.assert_array_equal(a, b)  # seeded: the same item gives the same patch


def _lesion_patch():
    """DWI-bright/ADC-dark lesion filling a third of the patch: image and label agree voxel by voxel."""
    mask = np.zeros((8, 16, 16), np.uint8)
    mask[1:7, 3:13, 2:9] = 1
    dwi = np.where(mask > 0, 0.9, 0.3).astype(np.float32)
    adc = np.where(mask > 0, 0.2, 0.7).astype(np.float32)
    return np.stack([dwi, adc, mismatch(dwi, adc)]), mask


@pytest.mark.parametrize("only", [(name,) for name in TRANSFORMS] + [TRANSFORMS, None],
                         ids=lambda o: "default" if o is None else "+".join(o) if len(o) < 3 else "all")  # fmt: skip
def test_augmentation_keeps_image_and_label_consistent(only):
    from scipy import ndimage

    image, mask = _lesion_patch()
    aug = build_augment(prob_elastic=1.0, only=only) if only else build_augment()
    for seed in range(40):
        img, lab = augment_patch(aug, image, mask, seed)
        lesion = lab > 0
        # Never a blanked lesion voxel: the cutout only takes background.
        assert not ((img[0] == 0) & (img[1] == 0) & lesion).any(), seed
        # Away from the border that interpolation blurs, every lesion voxel looks like lesion and
        # every background voxel like background (or a cutout hole).
        core = ndimage.binary_erosion(lesion, iterations=1)
        bg = ndimage.binary_erosion(~lesion, iterations=1)
        assert (img[0][core] > img[1][core]).all(), seed
        hole = (img[0] == 0) & (img[1] == 0)
        assert ((img[0] < img[1]) | hole)[bg].all(), seed
        if only in (
            (name,)
            for name in ("flip_d", "flip_h", "flip_w", "scale", "shift", "noise", "gamma", "cutout")
        ):
            assert lesion.sum() == mask.sum()  # no spatial resampling: the label keeps its voxels


def test_dataset_items():
    rng = np.random.default_rng(2)
    imgs = [rng.random((3, 16, 32, 32)).astype(np.float32)]
    masks = [(rng.random((16, 32, 32)) > 0.99).astype(np.uint8)]
    plan = plan_epoch(masks, 0, 0, 4, 2, (8, 16, 16), (8, 8, 8), 0.5, 0.7, 1.0)
    ds = PatchDataset(imgs, masks, [s for b in plan for s in b])
    x, y = ds[0]
    assert x.shape[0] == 3 and y.shape[0] == 1 and x.dtype == torch.float32


@pytest.mark.parametrize("combo", ["D", "S", "DTS"])
def test_two_epoch_training_writes_checkpoint_csv_and_mlflow_run(tiny_study, combo):
    from sizepenalty.cli import main

    root, c = tiny_study
    run = root / "runs" / combo
    assert main(["study-run", "-c", str(c), "--out", str(root / "parent.txt")]) == 0
    rc = main(train_args(c, root, run, combo, 0, "--parent-run-file", str(root / "parent.txt")))
    assert rc == 0
    for f in ("last.pt", "best.pt", "epochs.csv", "done.json"):
        assert (run / f).is_file(), f
    lines = (run / "epochs.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,loss,D,T,F,S,lr,val_dice") and len(lines) == 3
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["epoch"] == 2
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "FINISHED" and len(record["metrics"]["train_loss"]) == 2
    import mlflow

    cfg = from_dict(dict(TINY, results=str(root)))
    mlflow.set_tracking_uri(cfg.tracking_uri())
    runs = mlflow.search_runs(
        experiment_names=["sizepenalty"], filter_string=f"tags.mlflow.runName = '{combo}-seed42-fold0'"
    )
    assert len(runs) == 1
    r = runs.iloc[0]
    assert (
        r["params.combo"] == combo
        and r["tags.mlflow.parentRunId"] == (root / "parent.txt").read_text().strip()
    )
    assert "metrics.train_loss" in runs.columns and r["status"] == "FINISHED"
    # A finished run is not retrained.
    before = (run / "last.pt").stat().st_mtime_ns
    assert main(train_args(c, root, run, combo, 0)) == 0
    assert (run / "last.pt").stat().st_mtime_ns == before


def _train_cmd(c, root, run_dir, fold):
    """`sizepenalty train` of DTS on one fold of the tiny study, as a separate process."""
    return [sys.executable, "-m", "sizepenalty", *train_args(c, root, run_dir, "DTS", fold)]


def _assert_same_weights(run_a, run_b):
    """The two runs' final checkpoints hold bit-identical weights."""
    a = torch.load(run_a / "last.pt", weights_only=True)
    b = torch.load(run_b / "last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)


def _variant(tmp_path, results, **train):
    """A config file of the tiny study with other training settings, and the process env."""
    cfg = dict(TINY, results=str(results), train=dict(TINY["train"], **train))
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(cfg))
    return c, dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")


def test_kill_and_resume_gives_the_same_weights(tiny_study, tmp_path):
    root, _ = tiny_study
    # A checkpoint after every epoch: the kill -9 comes after the first epoch's.
    c, env = _variant(tmp_path, root, epochs=4, patches_per_volume=6, checkpoint_minutes=0)

    def cmd(run_dir):
        return _train_cmd(c, root, run_dir, 1)

    straight = tmp_path / "straight"
    subprocess.run(cmd(straight), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for the first epoch's checkpoint, then kill mid-run
        if (killed / "epochs.csv").exists() and len(
            (killed / "epochs.csv").read_text().splitlines()
        ) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "done.json").exists()
    done_epochs = torch.load(killed / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done_epochs < 4
    out = subprocess.run(cmd(killed), check=True, env=env, capture_output=True, text=True)
    assert (
        f"epoch {done_epochs + 1}/4" in out.stdout and "epoch 1/4" not in out.stdout
    )  # resumed, not restarted
    _assert_same_weights(straight, killed)
    assert json.loads((killed / "done.json").read_text())["epochs"] == 4


def _train_cli(c, root, run_dir, combo="D", fold="0", *extra):
    from sizepenalty.cli import main

    return main(train_args(c, root, run_dir, combo, fold, *extra))


def _runs(cfg, name):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    exp = client.get_experiment_by_name("sizepenalty")
    return client.search_runs([exp.experiment_id], f"tags.mlflow.runName = '{name}'")


def test_changed_settings_restart_from_epoch_zero_in_a_fresh_superseded_run(tiny_study, tmp_path):
    root, _ = tiny_study
    run = tmp_path / "run"
    configs = []
    for lr in (3e-3, 1e-3):
        raw = dict(TINY, results=str(tmp_path / "res"), train=dict(TINY["train"], lr=lr))
        configs.append(tmp_path / f"c{lr}.yaml")
        configs[-1].write_text(yaml.safe_dump(raw))
    assert _train_cli(configs[0], root, run, "D", "0", "--max-epochs", "1") == 0
    first = json.loads((run / "run.json").read_text())
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    assert _train_cli(configs[1], root, run) == 0  # other settings: starts over, all epochs
    assert json.loads((run / "done.json").read_text())["epochs"] == 2
    second = json.loads((run / "run.json").read_text())
    assert second["run_id"] != first["run_id"] and second["key"] != first["key"]
    (archived,) = (run / "superseded").glob("*/run.json")
    assert json.loads(archived.read_text())["tags"]["sizepenalty.superseded"] == "true"
    cfg = from_dict(dict(TINY, results=str(tmp_path / "res")))
    runs = {r.info.run_id: r for r in _runs(cfg, "D-seed42-fold0")}
    assert runs[first["run_id"]].data.tags["sizepenalty.superseded"] == "true"
    assert "sizepenalty.superseded" not in runs[second["run_id"]].data.tags
    # Every train_loss step is logged once in the new run (not appended to the old one).
    from mlflow.tracking import MlflowClient

    history = MlflowClient(cfg.tracking_uri()).get_metric_history(second["run_id"], "train_loss")
    assert sorted(m.step for m in history) == [1, 2]


@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_an_unreadable_checkpoint_is_moved_aside_and_the_run_restarts(
    tiny_study, tmp_path, damage, capsys
):
    root, c = tiny_study
    run = tmp_path / "run"
    assert _train_cli(c, root, run, "D", "1", "--max-epochs", "1") == 0
    last = run / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "random": np.random.default_rng(0).bytes(4096)}[damage])  # fmt: skip
    capsys.readouterr()
    assert _train_cli(c, root, run, "D", "1") == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "unreadable" in line]
    assert len(warnings) == 1 and str(last) in warnings[0], err
    (kept,) = run.glob("last.pt.unreadable-*")
    assert kept.stat().st_size == len({"truncated": data[: len(data) // 2], "empty": b"",
                                       "random": b"x" * 4096}[damage])  # fmt: skip
    assert json.loads((run / "done.json").read_text())["epochs"] == 2


def test_an_unreadable_done_marker_is_moved_aside_and_the_run_restarts(
    tiny_study, tmp_path, capsys
):
    root, c = tiny_study
    run = tmp_path / "run"
    assert _train_cli(c, root, run, "D", "1") == 0
    (run / "done.json").write_text("{not json")
    capsys.readouterr()
    assert _train_cli(c, root, run, "D", "1") == 0
    assert "done.json is unreadable" in capsys.readouterr().err
    assert list(run.glob("done.json.unreadable-*")) and json.loads((run / "done.json").read_text())


def test_a_finished_training_run_again_without_its_done_marker_trains_from_scratch(
    tiny_study, tmp_path, capsys
):
    # What `snakemake --forcerun train` does: the job's done.json is removed, then the job runs.
    from sizepenalty.train import FINISHED_RERUN

    root, c = tiny_study
    run = tmp_path / "run"
    assert _train_cli(c, root, run, "D", "1") == 0
    first = json.loads((run / "run.json").read_text())
    (run / "done.json").unlink()
    capsys.readouterr()
    assert _train_cli(c, root, run, "D", "1") == 0
    out = capsys.readouterr().out
    assert f"{FINISHED_RERUN}; starting from epoch 0" in out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "resuming" not in out
    second = json.loads((run / "run.json").read_text())
    assert second["run_id"] != first["run_id"] and second["status"] == "FINISHED"
    assert sorted(step for step, *_ in second["metrics"]["train_loss"]) == [1, 2]
    (archived,) = (run / "superseded").glob("*/run.json")
    assert json.loads(archived.read_text())["run_id"] == first["run_id"]
    # An unfinished checkpoint is a killed training's: it resumes.
    assert _train_cli(c, root, tmp_path / "part", "D", "1", "--max-epochs", "1") == 0
    capsys.readouterr()
    assert _train_cli(c, root, tmp_path / "part", "D", "1") == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 1" in out and "epoch 1/2" not in out and "epoch 2/2" in out


def test_retrain_then_train_starts_a_new_run_from_epoch_zero(tiny_study, capsys):
    from sizepenalty.cli import main
    from sizepenalty.paths import StudyLayout
    from sizepenalty.runs import RunKey

    root, c = tiny_study  # the study "tiny" in root: run folders under root/tiny/runs
    key = RunKey("S", "main", 42, 2)
    run = StudyLayout(root / "tiny").run_dir(key)
    assert _train_cli(c, root, run, "S", "2") == 0
    first = json.loads((run / "run.json").read_text())
    assert main(["retrain", "-c", str(c), "S/main/seed42/fold2"]) == 0
    assert not (run / "done.json").exists() and not (run / "last.pt").exists()
    capsys.readouterr()
    assert _train_cli(c, root, run, "S", "2") == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "resuming" not in out
    second = json.loads((run / "run.json").read_text())
    assert second["run_id"] != first["run_id"]
    cfg = from_dict(dict(TINY, results=str(root)))
    runs = {r.info.run_id: r for r in _runs(cfg, key.name)}
    assert runs[first["run_id"]].data.tags["sizepenalty.superseded_why"].startswith("retrain")
    assert "sizepenalty.superseded" not in runs[second["run_id"]].data.tags


def test_a_stop_signal_checkpoints_mid_epoch_and_resumes_to_the_same_weights(tiny_study, tmp_path):
    root, _ = tiny_study
    # No periodic checkpoint before the signal (an hour apart): the signal writes the only one.
    c, env = _variant(tmp_path, tmp_path / "res", epochs=3, patches_per_volume=12, val_every=3,
                      checkpoint_minutes=60)  # fmt: skip

    def cmd(run_dir):
        return _train_cmd(c, root, run_dir, 0)

    straight = tmp_path / "straight"
    subprocess.run(cmd(straight), check=True, env=env, capture_output=True)
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(
        cmd(stopped), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in proc.stdout:  # the handlers are in place: stop before the first step ends
        if "SIGUSR1 stops after the current step" in line:
            break
    proc.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=USR1@...` sends before the wall time
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1, err
    ck = torch.load(stopped / "last.pt", weights_only=True)
    assert ck["epoch"] == 0 and ck["step"] == 1, (ck["epoch"], ck["step"])  # inside epoch 1
    assert json.loads((stopped / "run.json").read_text())["status"] == "KILLED"
    run_id = json.loads((stopped / "run.json").read_text())["run_id"]
    out = subprocess.run(cmd(stopped), check=True, env=env, capture_output=True, text=True)
    assert "resuming after epoch 0, step 1" in out.stdout
    _assert_same_weights(straight, stopped)
    record = json.loads((stopped / "run.json").read_text())
    assert record["run_id"] == run_id and record["status"] == "FINISHED"  # the same MLflow run


def _sliding_window_reference(model, image, roi, overlap, sw_batch, device, amp, tta=False):
    """sliding_window_probs as it was: MONAI's sliding window for every volume."""
    from monai.inferers import sliding_window_inference

    from sizepenalty.infer import _FLIP_AXES

    x = torch.from_numpy(image[None]).to(device)
    roi = tuple(min(r, s) for r, s in zip(roi, image.shape[1:]))
    flips = [()]
    if tta:
        flips = [tuple(a for a, bit in zip(_FLIP_AXES, (i & 1, i & 2, i & 4)) if bit)
                 for i in range(8)]  # fmt: skip
    total = torch.zeros((1, 1, *image.shape[1:]), device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=amp.dtype, enabled=amp.enabled):
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            logits = sliding_window_inference(xi, roi, sw_batch, model, overlap=overlap,
                                              mode="gaussian")  # fmt: skip
            p = torch.sigmoid(logits.float())
            total += torch.flip(p, dims) if dims else p
    return (total / len(flips))[0, 0].cpu().numpy()


def _trained_like_model():
    """The default recipe's network with weights moved off their initialisation (varied logits)."""
    torch.manual_seed(0)
    model = build_model(4, 3, 0.1, prior_prob=0.03).eval()
    with torch.no_grad():
        for p in model.parameters():
            p += 0.05 * torch.randn_like(p)
    return model.to(memory_format=torch.channels_last_3d)  # as training validates it


@pytest.mark.parametrize("tta", [False, True], ids=["no-tta", "tta"])
@pytest.mark.parametrize("precision", ["float32", "bf16-autocast"])
def test_a_roi_covering_the_volume_gives_the_sliding_windows_probabilities_in_one_pass(
    tta, precision, monkeypatch
):
    import monai.inferers

    from sizepenalty.devices import Amp
    from sizepenalty.infer import sliding_window_probs

    model, cpu = _trained_like_model(), torch.device("cpu")
    amp = Amp(precision != "float32", torch.bfloat16, False)  # bf16: MONAI's in-place rounding
    image = np.random.default_rng(4).random((3, 12, 20, 16)).astype(np.float32)
    expected = {str(roi): _sliding_window_reference(model, image, roi, 0.5, 4, cpu, amp, tta)
                for roi in ([12, 20, 16], [16, 32, 32], [12, 20, -1], [8, 16, 16])}  # fmt: skip
    calls = []
    window = monai.inferers.sliding_window_inference
    monkeypatch.setattr(monai.inferers, "sliding_window_inference",
                        lambda *a, **k: calls.append(a[1]) or window(*a, **k))  # fmt: skip
    for roi, ref in expected.items():
        got = sliding_window_probs(model, image, json.loads(roi), 0.5, 4, cpu, amp, tta)
        # Bit-identical: one window's Gaussian weighting is reproduced in MONAI's order (without
        # it, ~7 % of the float32 logits move by 1 ulp).
        assert np.array_equal(got, ref), roi
    assert calls == [(8, 16, 16)] * (8 if tta else 1)  # only the ROI that does not cover it


def test_validation_scores_are_those_of_the_sliding_window(tiny_study, tmp_path, monkeypatch):
    import sizepenalty.train as train
    from sizepenalty.data.folds import load_fold
    from sizepenalty.devices import amp_settings
    from sizepenalty.runs import RunKey

    root, _ = tiny_study
    cfg = from_dict(dict(TINY, results=str(root),
                         train=dict(TINY["train"], validation={"roi": [16, 32, 32]})))
    job = train.TrainJob(RunKey.parse("DTS/main/seed42/fold0"), load_fold(root / "folds.json", 0),
                         root / "pre", tmp_path / "run", "test")  # fmt: skip
    cpu = torch.device("cpu")
    s = train.setup(cfg, job, cpu, amp_settings(cfg.train.amp, cpu))
    train.run_epoch(s, train.StopFlag())
    with torch.no_grad():
        for p in s.model.parameters():  # one tiny epoch leaves p ~ prior: spread the scores
            p += 0.05 * torch.randn_like(p)
    assert tuple(cfg.train.validation.roi) == s.val_v.images[0].shape[1:]  # the one-window case
    score = train.validate(s)
    monkeypatch.setattr(train, "sliding_window_probs", _sliding_window_reference)
    assert train.validate(s) == score and not np.isnan(score)


def test_inference_probabilities_do_not_depend_on_the_memory_layout():
    from sizepenalty.devices import Amp
    from sizepenalty.infer import sliding_window_probs

    channels_last, cpu = _trained_like_model(), torch.device("cpu")
    contiguous = build_model(4, 3, 0.1, prior_prob=0.03).eval()
    contiguous.load_state_dict(channels_last.state_dict())  # load_model's layout
    off = Amp(False, torch.float32, False)
    image = np.random.default_rng(5).random((3, 12, 20, 16)).astype(np.float32)
    for roi in ([12, 20, 16], [8, 16, 16]):  # one window; several
        a = sliding_window_probs(channels_last, image, roi, 0.5, 4, cpu, off)
        b = sliding_window_probs(contiguous, image, roi, 0.5, 4, cpu, off)
        assert np.array_equal(a, b), roi  # on CPU, bit for bit (bench_training.py: same time)


def test_settings_that_cannot_touch_the_arithmetic_give_identical_results(tiny_study, tmp_path):
    """Loader workers and sliding-window batching are execution settings (no fingerprint holds
    them): on the CPU they give the very same training and probabilities."""
    from workflow_helpers import run_arg

    from sizepenalty.cli import main
    from sizepenalty.runs import StudyPlan, load_stage_config

    root, c = tiny_study
    fast = tmp_path / "fast.yaml"
    cfg = yaml.safe_load(c.read_text())
    fast.write_text(yaml.safe_dump(cfg | {"train": cfg["train"] | {"workers": 2},
                                          "infer": cfg["infer"] | {"sw_batch_size": 1}}))  # fmt: skip
    key = StudyPlan(from_dict(cfg)).runs()[0]
    planned = [load_stage_config(p, s, key).fingerprint for p in (c, fast) for s in ("train", "infer")]
    assert planned[:2] == planned[2:]  # nothing reruns for them
    runs = {}
    for name, config in (("slow", c), ("fast", fast)):
        run_dir = tmp_path / name
        assert main(train_args(config, root, run_dir, "DTS", 0)) == 0
        out = tmp_path / f"{name}-probs"
        assert main(["infer", "-c", str(config), "--run", run_arg("DTS", 0), "--folds",
                     str(root / "folds.json"), "--pre-dir", str(root / "pre"), "--run-dir",
                     str(run_dir), "--out-dir", str(out)]) == 0  # fmt: skip
        runs[name] = (run_dir, out)
    (a, pa), (b, pb) = runs["slow"], runs["fast"]
    wa, wb = (torch.load(d / "best.pt", weights_only=True)["model"] for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = [ln.rsplit(",", 1)[0] for ln in (a / "epochs.csv").read_text().splitlines()]
    assert strip == [ln.rsplit(",", 1)[0] for ln in (b / "epochs.csv").read_text().splitlines()]
    maps = sorted(pa.rglob("*.npz"))
    assert maps and all(np.array_equal(np.load(m)["prob"], np.load(pb / m.relative_to(pa))["prob"])
                        for m in maps)  # fmt: skip
