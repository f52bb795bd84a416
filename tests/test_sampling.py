"""How the augmentation drives MONAI: reseeding in place, skipping the elastic step's identity
resampling and smoothing its offsets without the other axes' padding (sizepenalty.elastic) give
the patches of MONAI's stock transforms seeded the old way.

The old way stays here as the reference, run in the same process: a deep copy of the same
transforms with MONAI's stock ``Rand3DElasticd`` back in place, seeded per patch with MONAI's
``Compose.set_random_state(seed=...)`` (a new ``np.random.RandomState`` per transform).
"""

import copy
import pickle

import numpy as np
import pytest
import torch
from monai.transforms import Compose, Rand3DElasticd, Randomizable, RandomizableTransform

from sizepenalty.data.preprocess import mismatch
from sizepenalty.sampling import (
    TRANSFORMS,
    Augmentation,
    InPlaceSeeder,
    PatchDataset,
    apply_augmentation,
    augment_patch,
    build_augment,
    plan_epoch,
)

PATCHES = [(16, 24, 24), (16, 16, 16)]  # config.yaml's train.patch_large and train.patch_small

# (name, only, prob_elastic, seeds): the default composition with the elastic step sometimes
# (the default 0.2), never and always firing, and every step alone (probability 1). Seeds per
# patch size: enough for every step to fire and not to fire many times.
CASES = [("default", None, 0.2, 48), ("default-no-elastic", None, 0.0, 32),
         ("default-elastic", None, 1.0, 12)] + [(n, (n,), 1.0, 12) for n in TRANSFORMS]  # fmt: skip
IDS = [c[0] for c in CASES]

# MONAI's identity resampling (float64 grid_sample, cast to float32) turns an exact 0 next to
# non-zero voxels into up to 6.2e-15 (measured over 80 volumes of both patch sizes and the
# default grid); every other voxel comes back unchanged.
IDENTITY_ROUNDING = 1e-14
# After the intensity steps (gamma's exponent down to 0.8 lifts 1e-15 to ~1e-12 at worst), the
# largest difference measured over the seeds below is 1.2e-13; only near-zero voxels differ.
END_TO_END_ROUNDING = 1e-12


def stock(aug: Augmentation) -> Augmentation:
    """A copy of ``aug`` with MONAI's own ``Rand3DElasticd`` (the shim adds behaviour, no state)."""
    ref = copy.deepcopy(aug)
    for t in ref.spatial.transforms:
        if isinstance(t, Rand3DElasticd):
            t.__class__ = Rand3DElasticd
    return ref


def reference_augment_patch(aug, image, mask, seed):
    """The old augment_patch: MONAI's set_random_state per stage and patch (a new RandomState per
    transform), then the same steps."""
    for i, part in enumerate((aug.spatial, aug.intensity, aug.cutout)):
        part.set_random_state(seed=seed + i)
    return apply_augmentation(aug, np.array(image[:2], np.float32), mask)


def _patch(shape, seed, zeros):
    """DWI/ADC/mismatch in (0, 1) with a lesion block; ``zeros``: 30 % exact zeros per channel,
    as at the floor of the preprocessing's intensity clipping."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 3:9, 4:12] = 1
    dwi, adc = rng.uniform(0.02, 0.98, (2, *shape)).astype(np.float32)
    if zeros:
        dwi[rng.random(shape) < 0.3] = 0.0
        adc[rng.random(shape) < 0.3] = 0.0
    return np.stack([dwi, adc, mismatch(dwi, adc)]), mask


def _states(t):
    """Every RandomState of a transform tree, in a fixed order (Compose children, then the
    transform's own and its randomizable attributes')."""
    if isinstance(t, Compose):
        return [t.R] + [r for c in t.transforms for r in _states(c)]
    if not isinstance(t, Randomizable):
        return []
    inner = [v for v in vars(t).values() if isinstance(v, Randomizable)]
    return [t.R] + [r for v in inner for r in _states(v)]


@pytest.mark.parametrize("name,only,prob_elastic,seeds", CASES, ids=IDS)
def test_in_place_seeding_leaves_every_state_as_monai_does(name, only, prob_elastic, seeds):
    aug = build_augment(prob_elastic=prob_elastic, only=only)
    ref = stock(aug)
    for seed in [*range(seeds), 2**31 - 2, 2**32 + 5]:
        aug.set_random_state(seed)
        for i, (new, old) in enumerate(zip(aug.stages(), ref.stages())):
            old.set_random_state(seed=seed + i)
            for a, b in zip(_states(new), _states(old), strict=True):
                for x, y in zip(a.get_state(), b.get_state(), strict=True):
                    assert np.array_equal(x, y), (name, seed, i)


@pytest.mark.parametrize("name,only,prob_elastic,seeds", CASES, ids=IDS)
def test_augment_patch_equals_the_old_way_bit_for_bit(name, only, prob_elastic, seeds):
    aug = build_augment(prob_elastic=prob_elastic, only=only)
    ref = stock(aug)
    for shape in PATCHES:
        image, mask = _patch(shape, 0, zeros=False)
        for seed in range(seeds):
            img, lab = augment_patch(aug, image, mask, seed)
            ref_img, ref_lab = reference_augment_patch(ref, image, mask, seed)
            assert np.array_equal(img, ref_img), (name, shape, seed)
            assert np.array_equal(lab, ref_lab), (name, shape, seed)
            assert img.dtype == ref_img.dtype and lab.dtype == ref_lab.dtype


@pytest.mark.parametrize("name,only,prob_elastic,seeds", CASES, ids=IDS)
def test_background_zeros_differ_by_rounding_only(name, only, prob_elastic, seeds):
    aug = build_augment(prob_elastic=prob_elastic, only=only)
    ref = stock(aug)
    worst = 0.0
    for shape in PATCHES:
        image, mask = _patch(shape, 1, zeros=True)
        for seed in range(seeds):
            img, lab = augment_patch(aug, image, mask, seed)
            ref_img, ref_lab = reference_augment_patch(ref, image, mask, seed)
            assert np.array_equal(lab, ref_lab), (name, shape, seed)
            differ = img != ref_img
            assert np.abs(img[differ]).max(initial=0) <= END_TO_END_ROUNDING, (name, seed)
            assert np.abs(ref_img[differ]).max(initial=0) <= END_TO_END_ROUNDING, (name, seed)
            worst = max(worst, float(np.abs(img.astype(np.float64) - ref_img).max()))
    if only is not None or prob_elastic == 1.0:
        assert worst == 0.0  # the elastic step always fires or is absent: nothing is skipped
    elif prob_elastic == 0.0:
        assert worst > 0.0  # the skipped resampling did touch zeros: the test sees it


def test_the_skipped_identity_resampling_only_lifts_exact_zeros():
    aug = build_augment(prob_elastic=0.0, only=None)
    (elastic,) = [t for t in aug.spatial.transforms if isinstance(t, Rand3DElasticd)]
    ref = stock(aug)
    (monai_elastic,) = [t for t in ref.spatial.transforms if isinstance(t, Rand3DElasticd)]
    lifted = 0
    for shape in [*PATCHES, (24, 48, 40)]:
        image, mask = _patch(shape, 2, zeros=True)
        data = {"image": image[:2].copy(), "label": mask[None].astype(np.float32)}
        ours, theirs = elastic(data), monai_elastic(data)
        for key in ("image", "label"):
            assert isinstance(ours[key], torch.Tensor) and ours[key].dtype == torch.float32
            assert np.array_equal(ours[key].numpy(), data[key])  # handed on unchanged
        assert np.array_equal(theirs["label"].numpy(), data["label"])
        img, moved = theirs["image"].numpy(), theirs["image"].numpy() != data["image"]
        assert (data["image"][moved] == 0).all()
        assert img[moved].max(initial=0) <= IDENTITY_ROUNDING
        lifted += int(moved.sum())
    assert lifted  # (16, 16, 16) comes back exact; the other sizes do not


def test_the_seeder_refuses_transforms_monai_seeds_otherwise():
    class Inner(RandomizableTransform):
        def __call__(self, x):
            return x

    class OffByOne(RandomizableTransform):
        """Seeds its inner transform with seed + 1: not what the in-place seeder assumes."""

        def __init__(self):
            super().__init__(prob=1.0)
            self.inner = Inner(prob=1.0)

        def set_random_state(self, seed=None, state=None):
            super().set_random_state(seed, state)
            self.inner.set_random_state(None if seed is None else seed + 1, state)
            return self

        def __call__(self, x):
            return x

    with pytest.raises(RuntimeError, match="no longer matches MONAI"):
        InPlaceSeeder(Compose([OffByOne()]))
    InPlaceSeeder(Compose([Inner(prob=1.0)]))  # a transform without inner ones is fine


def test_patches_do_not_depend_on_which_items_came_before_or_which_worker_draws_them():
    from torch.utils.data import DataLoader

    rng = np.random.default_rng(3)
    images = [rng.random((3, 16, 24, 24)).astype(np.float32) for _ in range(3)]
    masks = [(rng.random((16, 24, 24)) > 0.97).astype(np.uint8) for _ in range(3)]
    specs = [s for b in plan_epoch(masks, 0, 5, 6, 2, (16, 24, 24), (16, 16, 16), 0.3, 0.7, 1.0)
             for s in b]  # fmt: skip
    forward = [PatchDataset(images, masks, specs)[i] for i in range(len(specs))]
    ds = PatchDataset(images, masks, specs)
    backward = {i: ds[i] for i in reversed(range(len(specs)))}
    loaded = [b for b in DataLoader(PatchDataset(images, masks, specs), batch_size=None,
                                    num_workers=2, multiprocessing_context="fork")]  # fmt: skip
    for i, (x, y) in enumerate(forward):
        for other in (backward[i], loaded[i]):
            assert torch.equal(x, other[0]) and torch.equal(y, other[1]), i
    # A built augmentation survives pickling (a spawned worker's copy): the same patches.
    aug = build_augment()
    copied = pickle.loads(pickle.dumps(aug))
    image, mask = _patch((16, 24, 24), 6, zeros=True)
    for seed in range(8):
        pairs = zip(augment_patch(aug, image, mask, seed), augment_patch(copied, image, mask, seed))
        assert all(np.array_equal(a, b) for a, b in pairs), seed
