"""Paired statistics when the compared arms are trained over several seeds (the study's seed axis).

An *arm* is a compared unit (a loss combination or a named variant, e.g. ``"DTS@tau300"``). Each
(arm, fold, seed) is one trained model, scored on that fold's test cases. Seeds are nested in folds
(seed 0 of fold 0 and seed 0 of fold 1 are different models) and crossed with the fold's cases
(every seed of an arm scores the same cases); seed s of one arm is not paired with seed s of
another. Input everywhere: a tidy per-case frame with columns ``arm``, ``seed``, ``fold``,
``case_id`` and float metric columns (NaN or ±inf = undefined for that case, left out).

- :func:`compare_seeds` -- one (baseline, candidate, metric): the effect (mean over test cases of
  the seed-averaged candidate minus the seed-averaged baseline), its two-level bootstrap CI (cases,
  then each arm's seeds within fold), the seed spreads and a verdict (:data:`VERDICTS`).
- :func:`seed_table` -- that for every pair x metric [x size stratum], with the Wilcoxon p of the
  seed-averaged per-case differences and Holm over the table.
- :func:`variance_components` / :func:`variance_table` -- ANOVA (method-of-moments) estimates of
  the fold, seed, case and seed x case variances of one arm's metric.

With one seed per arm the CI is the paired bootstrap over cases of :mod:`sizepenalty.report.stats`
(same draws, same numbers) and the seed spread is reported as unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sizepenalty.report.stats import holm, wilcoxon_p

if TYPE_CHECKING:
    from sizepenalty.metrics.profiles import Column
    from sizepenalty.strata import Stratum

KEYS = ["fold", "case_id"]  # one test case
ID_COLUMNS = ("arm", "seed", "fold", "case_id")

# Verdicts, in the order they are decided (the first that applies is given).
TOO_FEW = "too few cases"
CI_INCLUDES_0 = "CI includes 0"
ONE_SEED = "one seed: seed spread unknown"
WITHIN_SPREAD = "within seed spread"
BEYOND_SPREAD = "effect beyond seed spread"
VERDICTS = (TOO_FEW, CI_INCLUDES_0, ONE_SEED, WITHIN_SPREAD, BEYOND_SPREAD)

TABLE_COLUMNS = (
    "Baseline", "Candidate", "Metric", "n cases", "seeds (baseline)", "seeds (candidate)",
    "Baseline mean", "Candidate mean", "Effect", "CI low", "CI high", "Seed SD (baseline)",
    "Seed SD (candidate)", "Seed SD (effect)", "CI excludes 0", "Exceeds seed spread",
    "Direction", "Verdict", "p", "p (Holm)",
)  # fmt: skip
"""Columns of :func:`seed_table`; with strata, "Stratum" and "Subset" follow "Candidate"."""

VARIANCE_COLUMNS = ("Arm", "Metric", "Component", "Variance", "SD", "Share", "df", "Truncated",
                    "Note")  # fmt: skip
"""Columns of :func:`variance_table`."""


# ------------------------------------------------------------------ input


@dataclass(frozen=True)
class ArmValues:
    """One arm's per-case values, one column per seed.

    Attributes:
        arm: the arm's name.
        keys: the arm's test cases (fold, case_id), in the order of its first row per case.
        seed_labels: every seed the arm has, ascending.
        values: metric -> array (``keys`` x ``seed_labels``); NaN where the value is undefined
            or where that seed was not trained in the case's fold.
        seeds: fold -> the positions (into ``seed_labels``) of the seeds the arm was trained with
            in that fold: the (arm, fold, seed) combinations that have rows, whatever their values.
    """

    arm: str
    keys: pd.MultiIndex
    seed_labels: tuple
    values: dict[str, np.ndarray]
    seeds: dict[int, np.ndarray]


def arm_values(cases: pd.DataFrame, arm: str, metrics: Sequence[str]) -> ArmValues:
    """The rows of ``arm`` in ``cases`` (the tidy frame) as :class:`ArmValues` of ``metrics``
    (±inf counts as undefined, as in :func:`stats.paired`).

    Raises ValueError naming the problem: a missing column, an arm without rows, or two rows for
    the same (seed, fold, case_id)."""
    _check_columns(cases, metrics)
    rows = cases[cases["arm"] == arm]
    if rows.empty:
        known = sorted(map(str, cases["arm"].unique()))
        raise ValueError(f"cases: no rows for arm {arm!r} (arms present: {known})")
    dup = rows.duplicated(["seed", "fold", "case_id"])
    if dup.any():
        r = rows[dup].iloc[0]
        raise ValueError(
            f"cases: arm {arm!r} has more than one row for seed {r['seed']}, fold {r['fold']},"
            f" case {r['case_id']!r}"
        )
    keys = pd.MultiIndex.from_frame(rows[KEYS].drop_duplicates())
    at = keys.get_indexer(pd.MultiIndex.from_frame(rows[KEYS]))
    labels, col = np.unique(rows["seed"].to_numpy(), return_inverse=True)
    values = {}
    for metric in metrics:
        v = rows[metric].to_numpy(float)
        values[metric] = np.full((len(keys), len(labels)), np.nan)
        values[metric][at, col] = np.where(np.isfinite(v), v, np.nan)
    fold = rows["fold"].to_numpy()
    seeds = {int(f): np.unique(col[fold == f]) for f in np.unique(fold)}
    return ArmValues(arm, keys, tuple(labels.tolist()), values, seeds)


def _check_columns(cases: pd.DataFrame, metrics: Iterable[str]) -> None:
    missing = [c for c in (*ID_COLUMNS, *metrics) if c not in cases.columns]
    if missing:
        raise ValueError(
            f"cases: missing column(s) {missing}; need {list(ID_COLUMNS)} and the metric columns"
        )


@dataclass(frozen=True)
class PairedSeeds:
    """The test cases one comparison uses and both arms' seed values on them.

    Attributes:
        keys: the compared cases' (fold, case_id): those where both arms have at least one seed
            with a defined value, in the baseline's row order (as :func:`stats.paired`).
        folds: the folds that have compared cases, ascending.
        positions: per fold, the positions of its cases in ``keys``.
        base, cand: per fold, the arm's values as an array (the arm's seeds in that fold, ascending)
            x (the fold's compared cases); NaN where a seed's value is undefined.
    """

    keys: pd.MultiIndex
    folds: tuple[int, ...]
    positions: tuple[np.ndarray, ...]
    base: tuple[np.ndarray, ...]
    cand: tuple[np.ndarray, ...]

    @property
    def n_cases(self) -> int:
        return len(self.keys)


def pair_seeds(
    base: ArmValues, cand: ArmValues, metric: str, within: pd.MultiIndex | None = None
) -> PairedSeeds:
    """The :class:`PairedSeeds` of ``metric`` for two arms, optionally restricted to the cases
    ``within`` (e.g. a size stratum's (fold, case_id) keys)."""
    at = cand.keys.get_indexer(base.keys)
    keep = at >= 0
    if within is not None:
        keep &= base.keys.isin(within)
    b, c = base.values[metric][keep], cand.values[metric][at[keep]]
    both = ~np.isnan(b).all(axis=1) & ~np.isnan(c).all(axis=1)
    keys, b, c = base.keys[keep][both], b[both], c[both]
    fold_of = keys.get_level_values("fold").to_numpy()
    folds = tuple(int(f) for f in np.unique(fold_of))
    positions = tuple(np.flatnonzero(fold_of == f) for f in folds)

    def blocks(y: np.ndarray, arm: ArmValues) -> tuple[np.ndarray, ...]:
        return tuple(y[pos][:, arm.seeds[f]].T for f, pos in zip(folds, positions))

    return PairedSeeds(keys, folds, positions, blocks(b, base), blocks(c, cand))


# ------------------------------------------------------------------ the comparison


def _seed_average(y: np.ndarray) -> np.ndarray:
    """Per case (column), the mean over the seeds (rows) with a defined value."""
    ok = ~np.isnan(y)
    with np.errstate(invalid="ignore"):
        return np.where(ok, y, 0.0).sum(axis=0) / ok.sum(axis=0)


def seed_averaged(ps: PairedSeeds) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, candidate) per compared case: the mean over the arm's seeds with a defined
    value."""
    out = np.empty((2, ps.n_cases))
    for row, blocks in enumerate((ps.base, ps.cand)):
        for pos, y in zip(ps.positions, blocks):
            out[row, pos] = _seed_average(y)
    return out[0], out[1]


def _counts(draws: np.ndarray, k: int) -> np.ndarray:
    """How often each index 0..k-1 occurs in each row of ``draws`` (n_boot x m) -> n_boot x k."""
    n_boot = draws.shape[0]
    flat = (draws + k * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * k).reshape(n_boot, k).astype(float)


def bootstrap_effects(ps: PairedSeeds, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """The effect in each replicate of the two-level bootstrap (n_boot values).

    One replicate: draw ``n`` of the ``n`` compared cases with replacement (pooled over folds, as
    :func:`stats.bootstrap_ci`); then, independently for each arm and each fold, draw that fold's
    ``k`` seeds of the arm with replacement -- *one* draw per (arm, fold), used for every drawn case
    of the fold, because a seed is one model that scores all of its fold's cases. A drawn case's
    arm value is the mean over its drawn seeds with a defined value (with multiplicity); the
    replicate's effect is the mean over drawn cases (with multiplicity) where both arm values are
    defined.

    Random stream (``numpy.random.default_rng(seed)``): first ``integers(0, n, (n_boot, n))`` for
    the cases, then ``integers(0, k, (n_boot, k))`` per fold (ascending) for the baseline, then the
    same for the candidate. With one seed per arm the replicates are those of
    :func:`stats.bootstrap_ci` for the same seed.
    """
    rng = np.random.default_rng(seed)
    n = ps.n_cases
    case_w = _counts(rng.integers(0, n, size=(n_boot, n)), n)
    arms = np.empty((2, n_boot, n))
    for row, blocks in enumerate((ps.base, ps.cand)):
        for pos, y in zip(ps.positions, blocks):
            k = y.shape[0]
            seed_w = _counts(rng.integers(0, k, size=(n_boot, k)), k)
            ok = ~np.isnan(y)
            with np.errstate(invalid="ignore"):
                arms[row][:, pos] = (seed_w @ np.where(ok, y, 0.0)) / (seed_w @ ok)
    diff = arms[1] - arms[0]
    ok = ~np.isnan(diff)
    if ok.all():  # the usual case: every drawn seed defined
        return np.einsum("ij,ij->i", case_w, diff) / n
    with np.errstate(invalid="ignore"):
        return np.einsum("ij,ij->i", case_w, np.where(ok, diff, 0.0)) / (case_w * ok).sum(axis=1)


@dataclass(frozen=True)
class SeedVariance:
    """The seed-to-seed variance of one arm's fold means on a comparison's cases.

    Attributes:
        per_fold: per fold of the comparison, the sample variance (ddof 1) across the arm's seeds
            of the seed's mean over the fold's compared cases where it is defined; NaN for a fold
            with fewer than two such seeds.
        df: per fold, the number of those seeds minus one (0 when the variance is NaN).
    """

    per_fold: np.ndarray
    df: np.ndarray

    @property
    def pooled(self) -> float:
        """Degrees-of-freedom weighted mean of the fold variances (NaN without any df)."""
        if self.df.sum() == 0:
            return float("nan")
        return float(np.nansum(self.per_fold * self.df) / self.df.sum())

    def filled(self) -> np.ndarray:
        """``per_fold`` with the pooled variance standing in for folds with fewer than two seeds."""
        return np.where(self.df > 0, self.per_fold, self.pooled)


def seed_variance(blocks: Sequence[np.ndarray]) -> SeedVariance:
    """:class:`SeedVariance` of one arm from its per-fold (seeds x cases) arrays."""
    var, df = np.full(len(blocks), np.nan), np.zeros(len(blocks))
    for i, y in enumerate(blocks):
        ok = ~np.isnan(y)
        has = ok.any(axis=1)
        means = np.where(ok, y, 0.0).sum(axis=1)[has] / ok.sum(axis=1)[has]
        if means.size >= 2:
            var[i], df[i] = means.var(ddof=1), means.size - 1
    return SeedVariance(var, df)


def effect_seed_sd(ps: PairedSeeds) -> float:
    """SD of the effect over re-draws of one candidate seed and one baseline seed per fold.

    A *pairing* picks, in each fold f, one seed of each arm; its effect is
    ``sum_f w_f (c_f - b_f)`` with ``w_f = n_f / n`` (the fold's share of the compared cases) and
    ``c_f``, ``b_f`` the picked seeds' means over the fold's compared cases (where defined) -- the
    effect a one-seed-per-arm study would report. Seeds are independent across arms and folds, so
    its variance is ``sum_f w_f^2 (var_c,f + var_b,f)``, each var the arm's sample variance (ddof 1,
    :func:`seed_variance`) across its seeds in fold f: the variance over all enumerated pairings,
    corrected by k/(k - 1) to estimate the variance over the population of seeds. A fold where an
    arm has one seed takes that arm's pooled variance; NaN when an arm has one seed everywhere.
    """
    w = np.array([pos.size for pos in ps.positions], dtype=float) / max(ps.n_cases, 1)
    vb, vc = seed_variance(ps.base).filled(), seed_variance(ps.cand).filled()
    return float(np.sqrt(np.sum(w**2 * (vb + vc))))


@dataclass(frozen=True)
class SeedComparison:
    """One (baseline, candidate, metric) comparison over test cases and training seeds.

    Attributes:
        baseline, candidate, metric: what is compared (arm names, metric column).
        n_cases: compared test cases: (fold, case_id) where both arms have a defined value for
            at least one seed.
        seeds_baseline, seeds_candidate: the fewest seeds the arm has in any compared fold.
        baseline_mean, candidate_mean: mean over the compared cases of the seed-averaged value.
        effect: ``candidate_mean - baseline_mean`` = mean over cases of the seed-averaged
            difference (each arm averaged over its seeds with a defined value for that case).
        ci_low, ci_high: percentile CI of the effect from :func:`bootstrap_effects` (NaN for
            fewer than two cases).
        seed_sd_baseline, seed_sd_candidate: SD across the arm's seeds of a seed's mean over a
            fold's compared cases, per fold, pooled over folds (square root of the
            df-weighted mean of the fold variances, :class:`SeedVariance`); NaN with one seed.
        seed_sd_effect: SD of the effect over re-drawn single seeds (:func:`effect_seed_sd`);
            NaN when either arm has one seed in every fold.
        ci_excludes_0: whether the CI lies entirely above or below 0.
        exceeds_seed_spread: whether ``|effect| > spread_factor * seed_sd_effect``; None when the
            seed spread is unknown.
        verdict: one of :data:`VERDICTS` (the first that applies, in that order).
        p: two-sided Wilcoxon signed-rank p of the seed-averaged per-case differences.
        case_diff: those differences, in the order of :attr:`PairedSeeds.keys`.
    """

    baseline: str
    candidate: str
    metric: str
    n_cases: int
    seeds_baseline: int
    seeds_candidate: int
    baseline_mean: float
    candidate_mean: float
    effect: float
    ci_low: float
    ci_high: float
    seed_sd_baseline: float
    seed_sd_candidate: float
    seed_sd_effect: float
    ci_excludes_0: bool
    exceeds_seed_spread: bool | None
    verdict: str
    p: float
    case_diff: np.ndarray = field(repr=False, compare=False)

    @property
    def seed_spread_known(self) -> bool:
        return self.exceeds_seed_spread is not None


def verdict(
    effect: float, ci: tuple[float, float], seed_sd_effect: float, spread_factor: float = 2.0
) -> tuple[bool, bool | None, str]:
    """(CI excludes 0, exceeds seed spread or None when unknown, verdict phrase).

    The rule: an effect is reported as beyond the seed spread when its CI excludes 0 *and*
    ``|effect| > spread_factor * seed_sd_effect``. The CI (cases and seeds resampled) says whether
    the seed-averaged effect is distinguishable from 0; the second test says whether it is larger
    than what re-training one model per arm with other seeds typically moves the effect by (about
    95% of such moves lie within 2 SD), i.e. whether a one-seed study would reliably see it.
    """
    lo, hi = ci
    excludes = bool(lo > 0 or hi < 0)
    exceeds = None
    if not np.isnan(seed_sd_effect):
        exceeds = bool(abs(effect) > spread_factor * seed_sd_effect)
    if np.isnan(lo) or np.isnan(hi):
        phrase = TOO_FEW
    elif not excludes:
        phrase = CI_INCLUDES_0
    elif exceeds is None:
        phrase = ONE_SEED
    else:
        phrase = BEYOND_SPREAD if exceeds else WITHIN_SPREAD
    return excludes, exceeds, phrase


def compare_paired(
    ps: PairedSeeds,
    baseline: str,
    candidate: str,
    metric: str,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    spread_factor: float = 2.0,
) -> SeedComparison:
    """:func:`compare_seeds` on already paired values (what :func:`seed_table` calls)."""
    b, c = seed_averaged(ps)
    d = c - b
    nan = float("nan")
    ci = (nan, nan)
    if ps.n_cases >= 2:
        a = (1.0 - level) / 2.0
        lo, hi = np.nanquantile(bootstrap_effects(ps, n_boot, seed), [a, 1.0 - a])
        ci = (float(lo), float(hi))
    effect = float(d.mean()) if d.size else nan
    sd_b, sd_c = seed_variance(ps.base).pooled, seed_variance(ps.cand).pooled
    sd_e = effect_seed_sd(ps) if d.size else nan
    excludes, exceeds, phrase = verdict(effect, ci, sd_e, spread_factor)
    return SeedComparison(
        baseline=baseline, candidate=candidate, metric=metric, n_cases=int(d.size),
        seeds_baseline=min((y.shape[0] for y in ps.base), default=0),
        seeds_candidate=min((y.shape[0] for y in ps.cand), default=0),
        baseline_mean=float(b.mean()) if d.size else nan,
        candidate_mean=float(c.mean()) if d.size else nan,
        effect=effect, ci_low=ci[0], ci_high=ci[1],
        seed_sd_baseline=float(np.sqrt(sd_b)), seed_sd_candidate=float(np.sqrt(sd_c)),
        seed_sd_effect=sd_e, ci_excludes_0=excludes, exceeds_seed_spread=exceeds, verdict=phrase,
        p=wilcoxon_p(d), case_diff=d,
    )  # fmt: skip


def compare_seeds(
    cases: pd.DataFrame,
    baseline: str,
    candidate: str,
    metric: str,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    spread_factor: float = 2.0,
) -> SeedComparison:
    """Compare two arms on one metric over test cases and training seeds.

    Args:
        cases: the tidy per-case frame (``arm``, ``seed``, ``fold``, ``case_id``, ``metric``); pass
            a subset of its rows (e.g. a size stratum's cases) to compare within that subset.
        baseline, candidate: the arms; the effect is candidate - baseline.
        metric: the metric column.
        n_boot: bootstrap replicates; level: the CI's coverage; seed: the bootstrap's random seed.
        spread_factor: the effect must exceed this many seed SDs of the effect (:func:`verdict`).

    Returns: a :class:`SeedComparison` (effect, two-level bootstrap CI, seed spreads, verdict).
    """
    base, cand = (arm_values(cases, a, [metric]) for a in (baseline, candidate))
    ps = pair_seeds(base, cand, metric)
    return compare_paired(ps, baseline, candidate, metric, n_boot, level, seed, spread_factor)


def _direction(delta: float, higher: bool, significant: bool) -> str:
    from sizepenalty.report.tables import _direction as direction  # one home for the wording

    return direction(delta, higher, significant)


def _row(cmp: SeedComparison, label: str, higher: bool) -> dict[str, object]:
    return {
        "Metric": label, "n cases": cmp.n_cases, "seeds (baseline)": cmp.seeds_baseline,
        "seeds (candidate)": cmp.seeds_candidate, "Baseline mean": cmp.baseline_mean,
        "Candidate mean": cmp.candidate_mean, "Effect": cmp.effect, "CI low": cmp.ci_low,
        "CI high": cmp.ci_high, "Seed SD (baseline)": cmp.seed_sd_baseline,
        "Seed SD (candidate)": cmp.seed_sd_candidate, "Seed SD (effect)": cmp.seed_sd_effect,
        "CI excludes 0": cmp.ci_excludes_0, "Exceeds seed spread": cmp.exceeds_seed_spread,
        "Direction": _direction(cmp.effect, higher, cmp.ci_excludes_0), "Verdict": cmp.verdict, "p": cmp.p,
    }  # fmt: skip


def seed_table(
    cases: pd.DataFrame,
    pairs: Sequence[Sequence[str]],
    columns: Sequence[Column],
    strata: Sequence[Stratum] | None = None,
    volume: str = "ref_ml",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    spread_factor: float = 2.0,
) -> pd.DataFrame:
    """:func:`compare_seeds` for every (baseline, candidate) pair, metric and optionally stratum.

    Args:
        cases: the tidy per-case frame; with ``strata`` also a ``volume`` column (the case's
            reference volume in mL, the same for every arm and seed).
        pairs: (baseline, candidate) arm names.
        columns: ``(label, metric column, higher is better)`` per metric (a profile's columns).
        strata: size strata; each row then compares the cases whose ``volume`` falls in it.
        n_boot, level, seed, spread_factor: as :func:`compare_seeds`.

    Returns: one row per pair, [stratum,] metric with :data:`TABLE_COLUMNS` ("Stratum" and
    "Subset" after "Candidate" with strata), the fields of :class:`SeedComparison`;
    "Exceeds seed spread" is None where the seed spread is unknown, "Direction" says whether the
    effect is better for the candidate where its CI excludes 0 ("n.s." where it does not), "p
    (Holm)" is Holm-adjusted over the whole table.
    """
    from sizepenalty.report.tables import in_stratum

    metrics = [m for _, m, _ in columns]
    _check_columns(cases, [*metrics, volume] if strata is not None else metrics)
    arms = {a: arm_values(cases, a, metrics) for pair in pairs for a in pair}
    subsets: list[tuple[dict[str, object], pd.MultiIndex | None]] = [({}, None)]
    if strata is not None:
        subsets = [
            ({"Stratum": s.label, "Subset": s.subset},
             pd.MultiIndex.from_frame(in_stratum(cases, s, volume)[KEYS].drop_duplicates()))
            for s in strata
        ]  # fmt: skip
    rows = []
    for base, cand in pairs:
        for head, within in subsets:
            for label, metric, higher in columns:
                ps = pair_seeds(arms[base], arms[cand], metric, within)
                cmp = compare_paired(ps, base, cand, metric, n_boot, level, seed, spread_factor)
                rows.append({"Baseline": base, "Candidate": cand} | head | _row(cmp, label, higher))
    order = list(TABLE_COLUMNS)
    if strata is not None:
        order[2:2] = ["Stratum", "Subset"]
    table = pd.DataFrame(rows, columns=order[:-1])
    table["p (Holm)"] = holm(table["p"].tolist()) if len(table) else []
    return table


# ------------------------------------------------------------------ variance components

SOURCES = ("folds", "seeds", "cases", "seed x case")


@dataclass(frozen=True)
class Component:
    """One variance component.

    Attributes:
        source: one of :data:`SOURCES`.
        variance: the estimate, negative values truncated at 0; NaN when not estimable.
        raw: the untruncated method-of-moments estimate (unbiased; may be negative).
        df: degrees of freedom of the mean square it comes from.
        truncated: whether ``raw`` was negative and set to 0.
        note: why it is NaN, or what it includes when the design confounds it; else "".
    """

    source: str
    variance: float
    raw: float
    df: int
    truncated: bool
    note: str = ""


@dataclass(frozen=True)
class VarianceComponents:
    """Variance components of one arm's metric for ``y[f,s,c] = mu + F_f + S_(f)s + C_(f)c +
    e_(f)sc`` (folds; seeds and cases crossed within folds; residual = seed x case interaction).

    Attributes:
        arm, metric: what was analysed.
        seeds_per_fold, cases_per_fold: the balanced (complete) block each fold contributed.
        components: one :class:`Component` per source, in :data:`SOURCES` order.
    """

    arm: str
    metric: str
    seeds_per_fold: tuple[int, ...]
    cases_per_fold: tuple[int, ...]
    components: tuple[Component, ...]

    def __getitem__(self, source: str) -> Component:
        for comp in self.components:
            if comp.source == source:
                return comp
        raise KeyError(f"no variance component {source!r} (sources: {list(SOURCES)})")

    @property
    def total(self) -> float:
        """Sum of the estimable (truncated) components."""
        return float(np.nansum([c.variance for c in self.components]))


def _complete(y: np.ndarray) -> np.ndarray:
    """A fold's (seeds x cases) block without seeds lacking any value, then without cases that
    lack a value for a remaining seed: the balanced block the fold's ANOVA needs."""
    y = y[~np.isnan(y).all(axis=1)]
    return y[:, ~np.isnan(y).any(axis=0)]


def _component(source: str, raw: float, df: int, note: str = "") -> Component:
    if np.isnan(raw):
        return Component(source, float("nan"), float("nan"), df, False, note)
    neg = raw < 0
    note = note or ("negative estimate truncated at 0" if neg else "")
    return Component(source, max(float(raw), 0.0), float(raw), df, bool(neg), note)


def anova_components(
    blocks: Sequence[np.ndarray], arm: str = "", metric: str = ""
) -> VarianceComponents:
    """ANOVA (method-of-moments) variance components from per-fold (seeds x cases) arrays.

    Each fold's block is made balanced (:func:`_complete`: NaN values leave out the case, an
    all-NaN seed leaves out the seed); folds keep their own numbers of seeds k_f and cases n_f.
    Per fold, the two-way crossed ANOVA without replication gives the seed, case and residual sums
    of squares (df k_f - 1, n_f - 1, (k_f - 1)(n_f - 1)); they are pooled over folds (summed with
    their df), and with ``E[SS_seed,f] = (k_f - 1)(s2_e + n_f s2_S)``,
    ``E[SS_case,f] = (n_f - 1)(s2_e + k_f s2_C)``:

    - seed x case: ``MS_e = sum SS_e / sum df_e``;
    - seeds: ``(sum SS_seed - sum df_seed MS_e) / sum_f (k_f - 1) n_f``;
    - cases: ``(sum SS_case - sum df_case MS_e) / sum_f (n_f - 1) k_f``;
    - folds: the unweighted-means method: the sample variance of the fold means minus the mean
      over folds of their within-fold part ``s2_S/k_f + s2_C/n_f + s2_e/(k_f n_f)`` (i.e. with
      harmonic-mean sizes).

    All four are unbiased (untruncated, in ``raw``); negative estimates are truncated at 0 and
    flagged. With one seed in every fold, seeds and seed x case are not estimable (NaN, noted);
    the case component then includes the seed x case interaction and the fold component the seed
    variance (a fold's single model is confounded with the fold). One fold: no fold component.
    """
    ys = [y for y in (_complete(np.asarray(b, dtype=float)) for b in blocks) if y.size]
    k = np.array([y.shape[0] for y in ys], dtype=float)
    n = np.array([y.shape[1] for y in ys], dtype=float)
    ss = np.zeros(3)  # seeds, cases, residual
    for y in ys:
        rows, cols, grand = y.mean(axis=1), y.mean(axis=0), y.mean()
        resid = y - rows[:, None] - cols[None, :] + grand
        ss += [y.shape[1] * ((rows - grand) ** 2).sum(), y.shape[0] * ((cols - grand) ** 2).sum(),
               (resid**2).sum()]  # fmt: skip
    df_s, df_c, df_e = int((k - 1).sum()), int((n - 1).sum()), int(((k - 1) * (n - 1)).sum())
    nan = float("nan")
    one_seed = "not estimable: one seed per fold"
    if df_e > 0:
        ms_e = ss[2] / df_e
        resid = _component("seed x case", ms_e, df_e)
        seeds = _component("seeds", (ss[0] - df_s * ms_e) / ((k - 1) * n).sum(), df_s)
        raw_c = (ss[1] - df_c * ms_e) / ((n - 1) * k).sum() if df_c else nan
        cases = _component("cases", raw_c, df_c, "" if df_c else "not estimable: one case per fold")
        within = seeds.raw / k + cases.raw / n + ms_e / (k * n)
        fold_note = ""
    else:
        resid = _component("seed x case", nan, 0, one_seed)
        seeds = _component("seeds", nan, 0, one_seed)
        note = "includes seed x case (one seed)" if df_c else "not estimable: one case per fold"
        cases = _component("cases", ss[1] / df_c if df_c else nan, df_c, note)
        within = cases.raw / n
        fold_note = "includes seeds (one seed per fold)"
    if len(ys) >= 2:
        fold_means = np.array([y.mean() for y in ys])
        folds = _component("folds", fold_means.var(ddof=1) - within.mean(), len(ys) - 1, fold_note)
    else:
        folds = _component("folds", nan, 0, "not estimable: one fold")
    return VarianceComponents(arm, metric, tuple(int(x) for x in k), tuple(int(x) for x in n),
                              (folds, seeds, cases, resid))  # fmt: skip


def variance_components(cases: pd.DataFrame, arm: str, metric: str) -> VarianceComponents:
    """:func:`anova_components` of ``metric`` for ``arm`` in the tidy per-case frame."""
    return _components(arm_values(cases, arm, [metric]), metric)


def _components(arm: ArmValues, metric: str) -> VarianceComponents:
    fold_of = arm.keys.get_level_values("fold").to_numpy()
    blocks = [
        arm.values[metric][fold_of == fold][:, cols].T for fold, cols in sorted(arm.seeds.items())
    ]
    return anova_components(blocks, arm.arm, metric)


def variance_table(
    cases: pd.DataFrame, arms: Sequence[str], columns: Sequence[Column]
) -> pd.DataFrame:
    """Variance components per arm, metric and source (:data:`VARIANCE_COLUMNS`): the estimate,
    its SD (square root), its share of the arm's estimable total, df, truncation and note."""
    rows = []
    for name in arms:
        arm = arm_values(cases, name, [m for _, m, _ in columns])
        for label, metric, _ in columns:
            vc = _components(arm, metric)
            total = vc.total
            for comp in vc.components:
                rows.append({
                    "Arm": name, "Metric": label, "Component": comp.source,
                    "Variance": comp.variance, "SD": float(np.sqrt(comp.variance)),
                    "Share": comp.variance / total if total > 0 else float("nan"),
                    "df": comp.df, "Truncated": comp.truncated, "Note": comp.note,
                })  # fmt: skip
    return pd.DataFrame(rows, columns=list(VARIANCE_COLUMNS))


__all__ = [
    "BEYOND_SPREAD", "CI_INCLUDES_0", "ONE_SEED", "SOURCES", "TABLE_COLUMNS", "TOO_FEW",
    "VARIANCE_COLUMNS", "VERDICTS", "WITHIN_SPREAD", "ArmValues", "Component", "PairedSeeds",
    "SeedComparison", "SeedVariance", "VarianceComponents", "anova_components", "arm_values",
    "bootstrap_effects", "compare_paired", "compare_seeds", "effect_seed_sd", "pair_seeds",
    "seed_averaged", "seed_table", "seed_variance", "variance_components", "variance_table",
    "verdict",
]  # fmt: skip
