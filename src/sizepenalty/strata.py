"""Lesion-size strata (thesis Tables 5.4 and 5.5), by volume in mL. No heavy imports.

The thesis reports two bins that cover every test case, "< 5 mL" and "≥ 5 mL", by the case's total
reference volume (Table 5.4), and a sub-millilitre table whose cases are a *subset* of "< 5 mL"
(Table 5.5). Here ``edges_ml`` define the covering bins and ``subsets_ml`` the extra "< x mL"
subsets; both are configurable (``metrics.strata_ml``, ``metrics.subset_strata_ml``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stratum:
    """Volumes ``lo_ml <= v < hi_ml``; ``subset`` marks an extra table that overlaps the bins."""

    label: str
    lo_ml: float
    hi_ml: float
    subset: bool = False

    def contains(self, volume_ml: float) -> bool:
        return self.lo_ml <= volume_ml < self.hi_ml


def _label(lo: float, hi: float) -> str:
    if lo <= 0:
        return f"< {hi:g} mL"
    if math.isinf(hi):
        return f"≥ {lo:g} mL"
    return f"{lo:g}–{hi:g} mL"


def size_bins(edges_ml: Sequence[float]) -> list[Stratum]:
    """The covering bins: ``[5]`` -> "< 5 mL", "≥ 5 mL"; ``[1, 5]`` -> "< 1 mL", "1–5 mL", "≥ 5 mL"."""
    bounds = [0.0, *map(float, edges_ml), math.inf]
    return [Stratum(_label(lo, hi), lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def size_strata(edges_ml: Sequence[float], subsets_ml: Sequence[float] = ()) -> list[Stratum]:
    """The covering bins, then each "< x mL" subset that is not already one of them."""
    bins = size_bins(edges_ml)
    ranges = {(s.lo_ml, s.hi_ml) for s in bins}
    extra = [
        Stratum(_label(0.0, float(x)), 0.0, float(x), subset=True)
        for x in subsets_ml
        if (0.0, float(x)) not in ranges
    ]
    return bins + extra


def bin_of(volume_ml: float, edges_ml: Sequence[float]) -> str:
    """Label of the covering bin that holds ``volume_ml``."""
    for stratum in size_bins(edges_ml):
        if stratum.contains(volume_ml):
            return stratum.label
    raise ValueError(f"volume {volume_ml!r} mL is in no bin (negative or NaN?)")


__all__ = ["Stratum", "bin_of", "size_bins", "size_strata"]
