"""Augmentation time per patch of the default recipe: how sampling.py drives MONAI now against
the old driving, measured in the same run.

The default recipe is config.yaml's: its synthetic grid (volumes normalised as preprocessing
does, so the background holds exact zeros), its patch plan (large/small patch sizes, lesion
ratios) and the default augmentation, on ``train.threads`` CPU threads. Three drivings of the
same transforms on the same crops:

  * old:     MONAI's ``Compose.set_random_state`` per stage and patch (a new RandomState per
             transform) and MONAI's stock ``Rand3DElasticd`` (the reference of
             tests/test_sampling.py);
  * reseed:  the in-place seeding alone (stock ``Rand3DElasticd``);
  * new:     ``augment_patch`` as training runs it (in-place seeding; the elastic step without
             its identity resampling when it does not fire and smoothing only the patch, not
             the padding, when it does: ``sizepenalty.elastic``).

Rounds are interleaved (the order rotates), each round augments every planned patch; the script
prints the median ms per patch of each and the median over rounds of each round's ratio to old,
then the largest difference between new and old patches (zero but for exact zeros, <= 1e-12).

Run: .venv/bin/python bench/bench_augment.py [--rounds 9] [--volumes 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sizepenalty.config import load_config
from sizepenalty.data.preprocess import image_channels, normalize
from sizepenalty.data.synth import SynthSpec, make_case
from sizepenalty.sampling import augment_patch, build_augment, crop_patch, plan_epoch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.yaml"
# The old driving is the reference the equality tests hold the new one to: one copy of it.
sys.path.insert(0, str(ROOT / "tests"))
from test_sampling import reference_augment_patch, stock  # noqa: E402


def default_patches(cfg, n_volumes: int):
    """(image crop, mask crop, seed) of one epoch's plan over ``n_volumes`` synthetic cases."""
    spec = SynthSpec.from_config(cfg.dataset.synthetic)
    images, masks = [], []
    for i in range(1, n_volumes + 1):
        case = make_case(i, cfg.seed, spec)
        images.append(image_channels(normalize(case.dwi), normalize(case.adc)))
        masks.append(case.mask)
    tc = cfg.train
    plan = plan_epoch(masks, 0, cfg.seed, tc.patches_per_volume, tc.batch_size, tc.patch_large,
                      tc.patch_small, tc.small_prob, tc.pos_ratio_large, tc.pos_ratio_small)  # fmt: skip
    return [(*crop_patch(images[s.volume], masks[s.volume], s.size, s.centre), s.seed)
            for batch in plan for s in batch]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds")
    ap.add_argument("--volumes", type=int, default=32, help="synthetic training volumes (a fold has 32)")
    args = ap.parse_args()
    cfg = load_config(CONFIG)
    torch.set_num_threads(cfg.train.threads)
    patches = default_patches(cfg, args.volumes)
    aug = build_augment()
    ref = stock(aug)
    drivings = {
        "old": lambda img, msk, seed: reference_augment_patch(ref, img, msk, seed),
        "reseed": lambda img, msk, seed: augment_patch(ref, img, msk, seed),
        "new": lambda img, msk, seed: augment_patch(aug, img, msk, seed),
    }
    worst = 0.0
    for img, msk, seed in patches:  # warm-up, and the check that the patches are the same
        a, la = drivings["new"](img, msk, seed)
        b, lb = drivings["old"](img, msk, seed)
        assert np.array_equal(la, lb), "labels differ"
        worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()))
        drivings["reseed"](img, msk, seed)
    per_patch = {name: [] for name in drivings}
    names = list(drivings)
    for r in range(args.rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            fn = drivings[name]
            t0 = time.perf_counter()
            for img, msk, seed in patches:
                fn(img, msk, seed)
            per_patch[name].append((time.perf_counter() - t0) / len(patches))
    sizes = sorted({p[0].shape[1:] for p in patches})
    print(f"default recipe ({CONFIG.name}): {len(patches)} patches of {sizes}, "
          f"{args.rounds} interleaved rounds, torch threads {torch.get_num_threads()}")  # fmt: skip
    for name in names:
        ratios = [t / o for t, o in zip(per_patch[name], per_patch["old"])]
        print(f"  {name:7s} {statistics.median(per_patch[name]) * 1e3:7.2f} ms/patch   "
              f"{statistics.median(ratios):.2f}x old")  # fmt: skip
    print(f"largest |new - old| over the patches: {worst:.2g} (labels identical)")


if __name__ == "__main__":
    main()
