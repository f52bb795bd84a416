"""Paired statistics for comparing two loss combinations on the same test cases.

The thesis compares fold means only and names statistical power as its first limitation. Here each
comparison also gets a paired bootstrap 95% confidence interval of the mean difference over test
cases and a Wilcoxon signed-rank p-value, Holm-corrected over every (pair, metric) tested together.
Arms trained over several seeds: :mod:`sizepenalty.report.seeds`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def paired(cases: pd.DataFrame, baseline: str, candidate: str, metric: str) -> pd.DataFrame:
    """Per test case (fold, case_id) the baseline and candidate arms' values of ``metric``, each
    the mean over the arm's seeds with a finite value; rows where both are finite; columns
    ``base``, ``cand``, ``diff`` (= cand - base)."""
    key = ["fold", "case_id"]
    finite = cases.replace([np.inf, -np.inf], np.nan)

    def arm(label: str, name: str) -> pd.Series:
        # sort=False: cases in the baseline's row order (the bootstrap's stream follows it)
        return finite[finite["arm"] == label].groupby(key, sort=False)[metric].mean().rename(name)

    b, c = arm(baseline, "base"), arm(candidate, "cand")
    both = pd.concat([b, c], axis=1, join="inner").replace([np.inf, -np.inf], np.nan).dropna()
    return both.assign(diff=both["cand"] - both["base"])


def bootstrap_ci(
    diff: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of paired differences (cases resampled with replacement).

    Returns (nan, nan) for fewer than 2 pairs; a constant difference gives a zero-width interval.
    """
    d = np.asarray(diff, dtype=float)
    if d.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(lo), float(hi)


def wilcoxon_p(diff: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zero differences dropped,
    Pratt's handling is not used); 1.0 when every difference is zero, nan for no pairs."""
    from scipy.stats import wilcoxon

    d = np.asarray(diff, dtype=float)
    if d.size == 0:
        return float("nan")
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control; nan entries are left out of
    the family and stay nan)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


__all__ = ["bootstrap_ci", "holm", "paired", "wilcoxon_p"]
