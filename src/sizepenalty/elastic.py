"""MONAI's elastic deformation (``Rand3DElasticd``) with the same output at a fraction of the work.

Two costs of MONAI's transform that buy nothing here:

* When its coin says no (1 - ``prob`` of the patches: 80 % by default), it still draws a full-size
  random offset field and resamples image and label through an identity grid.
* When it fires, it smooths the offset field with ``GaussianFilter`` (sigma 5-8 voxels: 31-49
  taps per axis). MONAI's separable filtering zero-pads *every* axis before the first 1-D pass,
  so each pass convolves the padding of the other axes too: for a 16x24x24 patch and sigma 8 the
  passes run over 64x72x72 voxels, ~13x the patch, ~30 ms of a ~40 ms patch on one CPU thread.

:class:`LeanRand3DElasticd` skips the first and smooths with :func:`smooth_like_monai`, which runs
the same three 1-D passes (same kernels, same axis order) with each axis padded only for its
own pass. The padding of the other axes holds zeros whose convolution is zero, so every output
voxel is the same sum; whether the convolution adds its terms in the same order for the smaller
array is up to the backend, so each new case (patch shape, kernel lengths, dtype, device) is
checked once against MONAI's filter, whose result is then used, and a case that differs keeps
MONAI's filter for the rest of the process.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import get_track_meta
from monai.networks.layers import GaussianFilter
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import Rand3DElasticd, create_grid
from monai.utils import convert_to_tensor, fall_back_tuple

log = logging.getLogger(__name__)

TRUNCATED = 3.0  # MONAI's Rand3DElastic truncates its Gaussian at 3 sigma

_verdicts: dict[tuple, bool] = {}
"""Per case (spatial shape, kernel lengths, dtype, device): does :func:`separable_passes` give
MONAI's result bit for bit? Filled on first sight of each case, for the process's lifetime."""


def separable_passes(x: torch.Tensor, kernels: list[torch.Tensor]) -> torch.Tensor:
    """Convolve ``x`` (N, C, D, H, W) with one 1-D kernel per spatial axis, axis 0 first, each
    zero-padded ("same" size) along its own axis only; channels filtered independently."""
    c = x.shape[1]
    for axis, k in enumerate(kernels):
        shape = [1, 1, 1, 1, 1]
        shape[axis + 2] = -1
        weight = k.to(x).reshape(shape).repeat(c, 1, 1, 1, 1)
        pad = [0] * 6  # F.pad lists the last axis first
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = (k.shape[0] - 1) // 2
        x = F.conv3d(F.pad(x, pad), weight, groups=c)
    return x


@torch.no_grad()
def smooth_like_monai(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``GaussianFilter(3, sigma, truncated=3.0)(x)``, MONAI's result bit for bit, via
    :func:`separable_passes` wherever that was checked to match (see the module's docstring)."""
    monai_filter = GaussianFilter(3, sigma, TRUNCATED).to(x.device)
    kernels = [gaussian_1d(s, truncated=monai_filter.truncated, approx=monai_filter.approx)
               for s in monai_filter.sigma]  # fmt: skip
    case = (tuple(x.shape), tuple(k.shape[0] for k in kernels), x.dtype, str(x.device))
    verdict = _verdicts.get(case)
    if verdict:
        return separable_passes(x, kernels)
    theirs = monai_filter(x)
    if verdict is None:
        _verdicts[case] = torch.equal(separable_passes(x, kernels), theirs)
        if not _verdicts[case]:
            log.info("elastic smoothing: MONAI's filter kept for case %s (not bit-identical)", case)
    return theirs


class LeanRand3DElasticd(Rand3DElasticd):
    """MONAI's ``Rand3DElasticd`` that hands its inputs on when it does not fire and smooths its
    offsets with :func:`smooth_like_monai` when it does (see the module's docstring).

    Not firing: MONAI's identity resampling (float64 ``grid_sample``, cast back to float32)
    returns every voxel unchanged except exact zeros next to non-zero voxels, which come back as
    values up to ~6e-15; here the inputs come back as float32 tensors, like MONAI's. Skipping the
    inner transform's draws changes nothing else because every patch reseeds every transform
    (``sampling.InPlaceSeeder``). Firing: the same draws, grid, affine and resampling as MONAI's
    ``__call__`` (that of MONAI 1.6.1, the lock's), so the deformation is MONAI's, bit for bit
    (tests/test_sampling.py compares it with the stock transform). Same arguments as
    ``Rand3DElasticd``; one array transform per patch, with no pending lazy operations.
    """

    def __call__(self, data: Any) -> dict:
        d = dict(data)
        first = self.first_key(d)
        if first == ():
            return super().__call__(d)
        self.randomize(None)
        if not self._do_transform:
            for key in self.key_iterator(d):
                d[key] = convert_to_tensor(d[key], dtype=torch.float32, track_meta=get_track_meta())
            return d
        elastic = self.rand_3d_elastic
        size = fall_back_tuple(elastic.spatial_size, d[first].shape[1:])
        elastic.randomize(size)
        device = elastic.device
        if device is None and isinstance(d[first], torch.Tensor):
            device = d[first].device
            elastic.set_device(device)
        grid = create_grid(spatial_size=size, device=device, backend="torch")
        offset = torch.as_tensor(elastic.rand_offset, device=device).unsqueeze(0)
        grid[:3] += smooth_like_monai(offset, elastic.sigma)[0] * elastic.magnitude
        grid = elastic.rand_affine_grid(grid=grid)
        for key, mode, padding_mode in self.key_iterator(d, self.mode, self.padding_mode):
            d[key] = elastic.resampler(d[key], grid, mode=mode, padding_mode=padding_mode)
        return d
