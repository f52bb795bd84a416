"""The elastic step's offset smoothing: MONAI's Gaussian filter, bit for bit, with each axis padded
only for its own pass; a case where that would differ keeps MONAI's filter.

(The whole transform against MONAI's stock ``Rand3DElasticd``, firing and not: test_sampling.py.)
"""

import numpy as np
import pytest
import torch
from monai.networks.layers import GaussianFilter
from monai.networks.layers.convutils import gaussian_1d

from sizepenalty import elastic
from sizepenalty.elastic import TRUNCATED, separable_passes, smooth_like_monai

PATCHES = [(16, 24, 24), (16, 16, 16)]  # config.yaml's train.patch_large and train.patch_small
# The elastic step's sigma_range (5, 8) in steps that give every kernel length it can draw
# (round(3 sigma) from 15 to 24: 31 to 49 taps), plus both ends.
SIGMAS = [5.0, *np.arange(15, 25) / 3 + 0.01, 8.0]


@pytest.fixture
def fresh_verdicts(monkeypatch):
    verdicts: dict = {}
    monkeypatch.setattr(elastic, "_verdicts", verdicts)
    return verdicts


def _offsets(shape, seed):
    rng = np.random.RandomState(seed)  # as Rand3DElastic draws them: uniform(-1, 1), float32
    return torch.as_tensor(rng.uniform(-1.0, 1.0, (1, 3, *shape)).astype(np.float32))


@pytest.mark.parametrize("shape", [*PATCHES, (12, 20, 24), (24, 48, 40)])
def test_smoothing_equals_monais_gaussian_filter_bit_for_bit(shape, fresh_verdicts):
    for i, sigma in enumerate(SIGMAS):
        for seed in (i, 100 + i):  # the second call of a case takes the checked fast path
            x = _offsets(shape, seed)
            assert torch.equal(smooth_like_monai(x, sigma), GaussianFilter(3, sigma, TRUNCATED)(x))
    taps = {case[1] for case in fresh_verdicts}
    assert {t[0] for t in taps} == set(range(31, 50, 2))  # every kernel length was seen


def test_the_default_patches_take_the_fast_path(fresh_verdicts):
    """Each (patch, kernel length) of the default recipe was checked and matched MONAI: none
    falls back to MONAI's filter (which would still be right, only slower)."""
    for shape in PATCHES:
        for sigma in SIGMAS:
            smooth_like_monai(_offsets(shape, 0), sigma)
    assert len(fresh_verdicts) == 2 * 10
    assert all(fresh_verdicts.values())


def test_a_case_that_differs_keeps_monais_filter(fresh_verdicts, monkeypatch):
    calls = []

    def off_by_rounding(x, kernels):
        calls.append(x.shape)
        return separable_passes(x, kernels) + 1e-7

    monkeypatch.setattr(elastic, "separable_passes", off_by_rounding)
    for seed in range(3):
        x = _offsets((16, 24, 24), seed)
        assert torch.equal(smooth_like_monai(x, 6.0), GaussianFilter(3, 6.0, TRUNCATED)(x))
    assert list(fresh_verdicts.values()) == [False]
    assert len(calls) == 1  # checked once, then MONAI's filter alone


def test_separable_passes_filter_each_axis_with_its_kernel():
    """An impulse comes out as the outer product of the three kernels, centred on it, per
    channel; nothing leaks across channels or wraps around an edge."""
    kernels = [gaussian_1d(torch.tensor(s), truncated=TRUNCATED) for s in (1.0, 1.5, 2.0)]
    x = torch.zeros(1, 2, 11, 13, 15)
    x[0, 1, 5, 6, 7] = 1.0
    out = separable_passes(x, kernels)
    assert out.shape == x.shape
    assert torch.equal(out[0, 0], torch.zeros(11, 13, 15))
    k0, k1, k2 = kernels  # 7, 11 and 13 taps, centred on (5, 6, 7)
    expected = torch.zeros(11, 13, 15)
    expected[2:9, 1:12, 1:14] = k0[:, None, None] * k1[None, :, None] * k2[None, None, :]
    torch.testing.assert_close(out[0, 1], expected)
