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
from workflow_helpers import cli_cohort

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
              "workers": 0, "threads": 1, "val_every": 1, "lr": 3e-3},
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
    rc = main(["train", "-c", str(c), "--combo", combo, "--fold", "0", "--folds", str(root / "folds.json"),
               "--pre-dir", str(root / "pre"), "--run-dir", str(run), "--parent-run-file", str(root / "parent.txt")])  # fmt: skip
    assert rc == 0
    for f in ("last.pt", "best.pt", "epochs.csv", "done.json"):
        assert (run / f).is_file(), f
    lines = (run / "epochs.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,loss,D,T,F,S,lr,val_dice") and len(lines) == 3
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["epoch"] == 2
    import mlflow

    cfg = from_dict(dict(TINY, results=str(root)))
    mlflow.set_tracking_uri(cfg.tracking_uri())
    runs = mlflow.search_runs(
        experiment_names=["sizepenalty"], filter_string=f"tags.mlflow.runName = '{combo}-fold0'"
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
    assert main(["train", "-c", str(c), "--combo", combo, "--fold", "0", "--folds", str(root / "folds.json"),
                 "--pre-dir", str(root / "pre"), "--run-dir", str(run)]) == 0  # fmt: skip
    assert (run / "last.pt").stat().st_mtime_ns == before


def test_kill_and_resume_gives_the_same_weights(tiny_study, tmp_path):
    root, _ = tiny_study
    cfg = dict(TINY, results=str(root))
    cfg["train"] = dict(TINY["train"], epochs=4, patches_per_volume=6)
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")

    def cmd(run_dir):
        return [sys.executable, "-m", "sizepenalty", "train", "-c", str(c), "--combo", "DTS", "--fold", "1",
                "--folds", str(root / "folds.json"), "--pre-dir", str(root / "pre"), "--run-dir", str(run_dir)]  # fmt: skip

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
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    assert json.loads((killed / "done.json").read_text())["epochs"] == 4


def test_changed_settings_restart_from_epoch_zero(tiny_study, tmp_path):
    from sizepenalty.train import train

    root, _ = tiny_study
    cfg = from_dict(dict(TINY, results=str(tmp_path)))
    fold = json.loads((root / "folds.json").read_text())["folds"][0]
    r1 = train(cfg, "D", fold, root / "pre", tmp_path / "run", max_epochs=1, fingerprint="a")
    assert r1.epochs_done == 1
    r2 = train(cfg, "D", fold, root / "pre", tmp_path / "run", fingerprint="b")
    assert r2.resumed_from == 0 and r2.epochs_done == 2


def test_infer_reuses_the_training_jobs_maps_only_when_they_match(tiny_study, tmp_path):
    """The training job leaves val/test probabilities; `infer` copies them when checkpoint and
    inference settings match, and they equal what running the network again gives."""
    from sizepenalty.cli import main

    root, c = tiny_study
    run = root / "runs" / "D"  # trained by the two-epoch test above (or now, if run alone)
    args = [
        "--combo",
        "D",
        "--fold",
        "0",
        "--folds",
        str(root / "folds.json"),
        "--pre-dir",
        str(root / "pre"),
    ]
    if not (run / "done.json").exists():
        assert main(["train", "-c", str(c), *args, "--run-dir", str(run)]) == 0
    assert (run / "predictions/key.json").exists()
    reused, fresh = tmp_path / "reused", tmp_path / "fresh"
    assert (
        main(["infer", "-c", str(c), *args, "--run-dir", str(run), "--out-dir", str(reused)]) == 0
    )
    assert (
        main(
            [
                "infer",
                "-c",
                str(c),
                *args,
                "--run-dir",
                str(run),
                "--out-dir",
                str(fresh),
                "--recompute",
            ]
        )
        == 0
    )
    files = sorted(p.relative_to(reused) for p in reused.rglob("*.npz"))
    assert files and files == sorted(p.relative_to(fresh) for p in fresh.rglob("*.npz"))
    for f in files:
        np.testing.assert_array_equal(np.load(reused / f)["prob"], np.load(fresh / f)["prob"])
    # Other inference settings: the stored maps no longer match, inference runs again.
    from sizepenalty.infer import reuse_predictions

    cfg = from_dict(dict(TINY, results=str(root), infer=dict(TINY.get("infer", {}), overlap=0.25)))
    fold = json.loads((root / "folds.json").read_text())["folds"][0]
    assert reuse_predictions(cfg, "D", fold, run, tmp_path / "other") is None
