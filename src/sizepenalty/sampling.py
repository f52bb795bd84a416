"""Size-aware patch sampling and augmentation for training (thesis §4.4).

Per epoch every training volume contributes ``patches_per_volume`` patches. Each batch is either
large-patch or (with probability ``small_prob``) small-patch; a patch is centred on a lesion voxel
with probability ``pos_ratio_large`` / ``pos_ratio_small`` (0.7 / 1.0), else on a random voxel.

Augmentation works on the DWI and ADC channels and the mask with MONAI transforms — flips on every
axis (depth included), elastic deformation, intensity scale/shift, Gaussian noise, gamma — plus a
background cutout applied last that never erases lesion voxels. The mismatch channel is then *recomputed* from
the augmented DWI/ADC, never augmented itself.

Everything random is seeded by (seed, epoch, item), so an epoch is the same whichever worker
process draws it and however often it is replayed after a resume. Each patch reseeds MONAI's
transforms in place, as MONAI's ``set_random_state`` would seed them (:class:`InPlaceSeeder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Randomizable
from monai.utils import MAX_SEED
from torch.utils.data import Dataset

from sizepenalty.data.preprocess import mismatch
from sizepenalty.elastic import LeanRand3DElasticd


@dataclass(frozen=True)
class PatchSpec:
    volume: int
    size: tuple[int, int, int]
    centre: tuple[int, int, int]
    seed: int


def _fit(size: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple(min(s, d) for s, d in zip(size, shape))  # type: ignore[return-value]


def plan_epoch(
    masks: list[np.ndarray],
    epoch: int,
    seed: int,
    patches_per_volume: int,
    batch_size: int,
    patch_large: tuple[int, int, int],
    patch_small: tuple[int, int, int],
    small_prob: float,
    pos_ratio_large: float,
    pos_ratio_small: float,
) -> list[list[PatchSpec]]:
    """The epoch's batches of patch specifications (deterministic in seed and epoch)."""
    rng = np.random.default_rng([seed, epoch, 7])
    order = rng.permutation(np.repeat(np.arange(len(masks)), patches_per_volume))
    lesion_idx = [np.argwhere(m > 0) for m in masks]
    batches = []
    for start in range(0, len(order), batch_size):
        small = rng.random() < small_prob
        size = patch_small if small else patch_large
        ratio = pos_ratio_small if small else pos_ratio_large
        batch = []
        for vol in order[start : start + batch_size]:
            shape = masks[vol].shape
            fitted = _fit(size, shape)
            if len(lesion_idx[vol]) and rng.random() < ratio:
                centre = lesion_idx[vol][rng.integers(len(lesion_idx[vol]))]
            else:
                centre = np.array([rng.integers(s) for s in shape])
            batch.append(
                PatchSpec(
                    int(vol), fitted, tuple(int(c) for c in centre), int(rng.integers(2**31 - 1))
                )
            )
        batches.append(batch)
    return batches


def crop_patch(
    image: np.ndarray, mask: np.ndarray, size: tuple[int, int, int], centre: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Crop a (C, *size) patch centred on ``centre`` (shifted to stay inside the volume)."""
    starts = [int(np.clip(c - s // 2, 0, d - s)) for c, s, d in zip(centre, size, mask.shape)]
    sl = tuple(slice(a, a + s) for a, s in zip(starts, size))
    return image[(slice(None), *sl)], mask[sl]


SPATIAL = ("flip_d", "flip_h", "flip_w", "elastic")
INTENSITY = ("scale", "shift", "noise", "gamma")
TRANSFORMS = (*SPATIAL, *INTENSITY, "cutout")
"""Every augmentation step, in the order applied: spatial (image and label together), intensity
(image only), then the background cutout."""


@dataclass(frozen=True)
class SeedNode:
    """Who gets one seed in MONAI's ``set_random_state``: a ``Compose`` (``owners`` is the
    compose, whose state then draws each child's seed in order) or another transform (``owners``
    is the transform and its randomizable attributes, recursively: they all get the seed)."""

    owners: tuple[Any, ...]
    children: tuple[SeedNode, ...] = ()

    @classmethod
    def of(cls, t: Any) -> SeedNode:
        """The seeding tree of transform ``t`` (a ``Compose`` or any ``Randomizable``)."""
        if isinstance(t, Compose):
            kids = tuple(cls.of(c) for c in t.transforms if isinstance(c, Randomizable))
            return cls((t,), kids)
        owners, todo = [], [t]
        while todo:
            obj = todo.pop(0)
            if not any(obj is o for o in owners):
                owners.append(obj)
                todo += [v for v in vars(obj).values() if isinstance(v, Randomizable)]
        return cls(tuple(owners))

    def all_owners(self) -> list[Any]:
        """Every transform of the tree whose ``R`` gets seeded."""
        return [*self.owners, *(o for c in self.children for o in c.all_owners())]

    def seed(self, seed: int) -> None:
        """Reseed every owner's ``R`` in place, deriving the children's seeds as MONAI does."""
        seed = int(seed) % MAX_SEED
        for t in self.owners:
            t.R.seed(seed)
        for child in self.children:
            child.seed(int(self.owners[0].R.randint(MAX_SEED, dtype="uint32")))


class InPlaceSeeder:
    """Seeds a MONAI ``Compose`` exactly as ``Compose.set_random_state(seed=...)`` does, but
    reseeds the ``np.random.RandomState`` each transform already owns instead of building new ones.

    MONAI's ``Randomizable.set_random_state`` constructs a fresh ``RandomState`` per transform
    and per inner transform (a dictionary transform forwards the seed to its array transform,
    ``Rand3DElastic`` to its ``RandAffineGrid``): 18 per patch for the default augmentation, each
    ~200 us spent initialising a new MT19937 that the legacy seeding then overwrites.
    ``RandomState.seed`` on the existing object gives the same state in ~2 us.

    The seeds are derived as MONAI derives them (:class:`SeedNode`). At construction the seeder
    runs MONAI's ``set_random_state`` (so every transform owns its state) and checks that its
    own seeding leaves every state as MONAI's does, raising ``RuntimeError`` otherwise (e.g. a
    MONAI release that derives seeds differently, or transforms sharing one state).

    Args:
        compose: the ``monai.transforms.Compose`` to seed (its transforms are not changed).
    """

    def __init__(self, compose: Any) -> None:
        self.compose = compose
        self.tree = SeedNode.of(compose)
        owners = self.tree.all_owners()
        compose.set_random_state(seed=0)
        if len({id(t.R) for t in owners}) != len(owners):
            raise RuntimeError("MONAI transforms share a RandomState: cannot reseed them in place")
        for seed in (0, 12345, 2**31 - 2):
            compose.set_random_state(seed=seed)
            expected = [t.R.get_state() for t in owners]
            for t in owners:
                t.R.random_sample()  # move every state on, so one this seeder misses shows
            self(seed)
            if not all(_same_state(t.R.get_state(), e) for t, e in zip(owners, expected)):
                raise RuntimeError(
                    "InPlaceSeeder no longer matches MONAI's Compose.set_random_state; "
                    "seed the transforms with compose.set_random_state(seed=...) instead"
                )

    def __call__(self, seed: int) -> None:
        """Seed every transform of the ``Compose`` from ``seed``."""
        self.tree.seed(seed)


def _same_state(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@dataclass
class Augmentation:
    """The three stages of :func:`augment_patch`; each is a MONAI ``Compose`` (seeded per item),
    with the :class:`InPlaceSeeder` of each."""

    spatial: Any
    intensity: Any
    cutout: Any

    def __post_init__(self) -> None:
        self._seeders = tuple(InPlaceSeeder(c) for c in self.stages())

    def stages(self) -> tuple[Any, Any, Any]:
        """The ``Compose`` of each stage, in the order applied."""
        return self.spatial, self.intensity, self.cutout

    def set_random_state(self, seed: int) -> None:
        """Seed stage ``i`` with ``seed + i``, as ``Compose.set_random_state(seed=seed + i)``
        would (bit-identical states, in place)."""
        for i, seeder in enumerate(self._seeders):
            seeder(seed + i)


def build_augment(prob_elastic: float = 0.2, only: tuple[str, ...] | None = None) -> Augmentation:
    """MONAI transforms for {"image": (2, D, H, W) DWI/ADC, "label": (1, D, H, W)}.

    Spatial steps (flips on every axis, depth included; elastic deformation) move image and label
    together; intensity steps (scale, shift, Gaussian noise, gamma) touch the image only; the
    background cutout comes last so its holes are true zeros and it never erases a lesion voxel
    (see :func:`augment_patch`). ``only`` keeps just the named steps, each with probability 1
    (for testing them one by one). The elastic step is MONAI's ``Rand3DElasticd`` without its
    idle work: no identity resampling when it does not fire, no smoothing of padding when it
    does (:class:`sizepenalty.elastic.LeanRand3DElasticd`, same patches).

    Turns off MONAI's MetaTensor tracking for the process (plain tensors: ~1/3 less time per
    patch); nothing downstream uses the metadata.
    """
    from monai.data import set_track_meta

    set_track_meta(False)
    from monai.transforms import (
        RandAdjustContrastd,
        RandCoarseDropout,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    unknown = sorted(set(only or ()) - set(TRANSFORMS))
    if unknown:
        raise ValueError(f"unknown augmentation step(s) {unknown}; expected some of {TRANSFORMS}")

    def prob(name: str, default: float) -> float | None:
        if only is None:
            return default
        return 1.0 if name in only else None

    keys, img = ["image", "label"], ["image"]
    steps = {
        "flip_d": lambda p: RandFlipd(keys, prob=p, spatial_axis=0),
        "flip_h": lambda p: RandFlipd(keys, prob=p, spatial_axis=1),
        "flip_w": lambda p: RandFlipd(keys, prob=p, spatial_axis=2),
        "elastic": lambda p: LeanRand3DElasticd(
            keys,
            sigma_range=(5, 8),
            magnitude_range=(20, 60),
            prob=p,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),  # fmt: skip
        "scale": lambda p: RandScaleIntensityd(img, factors=0.1, prob=p),
        "shift": lambda p: RandShiftIntensityd(img, offsets=0.05, prob=p),
        "noise": lambda p: RandGaussianNoised(img, std=0.02, prob=p),
        "gamma": lambda p: RandAdjustContrastd(img, gamma=(0.8, 1.25), prob=p),
        "cutout": lambda p: RandCoarseDropout(
            holes=2, spatial_size=(4, 8, 8), max_holes=4, fill_value=0.0, prob=p
        ),
    }
    defaults = {"flip_d": 0.5, "flip_h": 0.5, "flip_w": 0.5, "elastic": prob_elastic,
                "scale": 0.5, "shift": 0.5, "noise": 0.3, "gamma": 0.3, "cutout": 0.3}  # fmt: skip

    def stage(names: tuple[str, ...]):
        chosen = [(n, prob(n, defaults[n])) for n in names]
        return Compose([steps[n](p) for n, p in chosen if p is not None])

    return Augmentation(stage(SPATIAL), stage(INTENSITY), stage(("cutout",)))


def augment_patch(
    aug: Augmentation, image: np.ndarray, mask: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Augment DWI/ADC + mask with ``aug`` reseeded in place for this patch (``seed``): see
    :func:`apply_augmentation`."""
    aug.set_random_state(seed)
    # A copy: steps that do not fire hand their input on, and the crop may be a view of the volume.
    return apply_augmentation(aug, np.array(image[:2], np.float32), mask)


def apply_augmentation(
    aug: Augmentation, image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Augment DWI/ADC (``image``, 2 channels, a copy the steps may write to) + mask with the
    transforms' current random state, keep lesions out of the cutout, recompute the mismatch
    channel.

    Order matters for the label: spatial steps first (image and label stay aligned), then
    intensity, then the cutout, whose holes are drawn on a ones-array and applied to the image
    only where the *augmented* label is background.
    """
    out = aug.spatial({"image": image, "label": mask[None].astype(np.float32)})
    lab = (np.asarray(out["label"])[0] > 0.5).astype(np.float32)
    img = np.asarray(aug.intensity({"image": out["image"]})["image"], dtype=np.float32)
    holes = np.asarray(aug.cutout(np.ones((1, *lab.shape), np.float32)))[0] == 0
    img = np.where(holes & (lab == 0), 0.0, img)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return np.concatenate([img, mismatch(img[0], img[1])[None]]), lab


class PatchDataset(Dataset):
    """Map-style dataset over one epoch's patch plan (a flat list of PatchSpec)."""

    def __init__(
        self,
        images: list[np.ndarray],
        masks: list[np.ndarray],
        specs: list[PatchSpec],
        augment: bool = True,
    ) -> None:
        self.images = images
        self.masks = masks
        self.specs = specs
        self.augment = augment
        self._transform = None

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.specs[i]
        img, msk = crop_patch(
            self.images[spec.volume], self.masks[spec.volume], spec.size, spec.centre
        )
        if self.augment:
            if self._transform is None:  # built lazily, once per worker process
                self._transform = build_augment()
            img, lab = augment_patch(self._transform, img, msk, spec.seed)
        else:
            lab = msk.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)), torch.from_numpy(
            np.ascontiguousarray(lab[None], dtype=np.float32)
        )
