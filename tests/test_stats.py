"""Statistics over test cases and training seeds (sizepenalty.report.seeds), checked against
slow direct computations, exact enumerations and data simulated with known variance components."""

import itertools

import numpy as np
import pandas as pd
import pytest

from sizepenalty.report import seeds as S
from sizepenalty.report.stats import bootstrap_ci, paired, wilcoxon_p
from sizepenalty.strata import size_strata


def tidy(
    arms: dict[str, dict[int, int]],
    cases_per_fold: dict[int, int],
    effect: dict[str, float] | None = None,
    seed_shift: dict[str, float] | None = None,
    noise: float = 0.01,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """A tidy per-case frame: ``arms`` maps arm -> {fold: number of seeds}. Case c of fold f has a
    base value; arm a adds ``effect[a]``, its seed s a shift ``seed_shift[a] * (s - mean seed)``
    (fixed, so the seed SD is known) and every value gets N(0, noise) noise."""
    rng = np.random.default_rng(rng_seed)
    effect, seed_shift = effect or {}, seed_shift or {}
    rows = []
    for arm, seeds in arms.items():
        for fold, n in cases_per_fold.items():
            k = seeds[fold]
            for s in range(k):
                shift = seed_shift.get(arm, 0.0) * (s - (k - 1) / 2)
                for c in range(n):
                    value = 0.5 + 0.03 * c + effect.get(arm, 0.0) + shift + rng.normal(0, noise)
                    rows.append({"arm": arm, "seed": s, "fold": fold, "case_id": f"f{fold}c{c}",
                                 "dice": value, "ref_ml": [0.5, 3.0, 12.0][c % 3]})  # fmt: skip
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ one seed = the case bootstrap


def test_one_seed_per_arm_is_the_paired_case_bootstrap():
    cases = tidy({"DTF": {0: 1, 1: 1, 2: 1}, "DTS": {0: 1, 1: 1, 2: 1}}, {0: 7, 1: 6, 2: 8},
                 effect={"DTS": 0.01}, noise=0.02)  # fmt: skip
    cases = cases.sample(frac=1.0, random_state=3)  # any row order
    cases.loc[cases.index[:2], "dice"] = np.nan  # undefined cases are left out by both
    d = paired(cases, "DTF", "DTS", "dice")["diff"].to_numpy()
    cmp = S.compare_seeds(cases, "DTF", "DTS", "dice", n_boot=500, seed=7)
    assert cmp.n_cases == d.size == 19
    assert (cmp.ci_low, cmp.ci_high) == pytest.approx(bootstrap_ci(d, 500, seed=7), abs=1e-12)
    assert cmp.effect == pytest.approx(d.mean()) and cmp.p == pytest.approx(wilcoxon_p(d))
    np.testing.assert_allclose(cmp.case_diff, d)
    assert cmp.seeds_baseline == cmp.seeds_candidate == 1
    assert np.isnan(cmp.seed_sd_baseline) and np.isnan(cmp.seed_sd_effect)
    assert cmp.exceeds_seed_spread is None and not cmp.seed_spread_known
    assert cmp.verdict == (S.ONE_SEED if cmp.ci_excludes_0 else S.CI_INCLUDES_0)


# ------------------------------------------------------------------ the two-level bootstrap


def slow_bootstrap(cases, baseline, candidate, metric, n_boot, seed):
    """The two-level bootstrap written out case by case, from the documented random stream."""
    ps = S.pair_seeds(*(S.arm_values(cases, a, [metric]) for a in (baseline, candidate)), metric)
    keys = list(ps.keys)
    fold_of = {key: key[0] for key in keys}
    rng = np.random.default_rng(seed)
    n = len(keys)
    case_draws = rng.integers(0, n, size=(n_boot, n))
    seed_draws = {}
    for arm, blocks in ((baseline, ps.base), (candidate, ps.cand)):
        for fold, y in zip(ps.folds, blocks):
            seed_draws[arm, fold] = rng.integers(0, y.shape[0], size=(n_boot, y.shape[0]))
    # each arm's values per case: {(fold, case_id): {seed index: value}}
    value = {}
    for arm, blocks in ((baseline, ps.base), (candidate, ps.cand)):
        for pos, y in zip(ps.positions, blocks):
            for j, p in enumerate(pos):
                value[arm, keys[p]] = y[:, j]
    out = []
    for b in range(n_boot):
        diffs = []
        for i in case_draws[b]:
            key = keys[i]
            means = []
            for arm in (baseline, candidate):
                drawn = [value[arm, key][s] for s in seed_draws[arm, fold_of[key]][b]]
                drawn = [v for v in drawn if not np.isnan(v)]
                means.append(sum(drawn) / len(drawn) if drawn else np.nan)
            if not np.isnan(means[0]) and not np.isnan(means[1]):
                diffs.append(means[1] - means[0])
        out.append(sum(diffs) / len(diffs) if diffs else np.nan)
    return np.array(out)


def test_bootstrap_matches_a_case_by_case_computation():
    shifts = {"DTF": 0.05, "DTS": 0.03}
    cases = tidy({"DTF": {0: 3, 1: 2}, "DTS": {0: 2, 1: 3}}, {0: 4, 1: 3},
                 effect={"DTS": 0.02}, seed_shift=shifts, noise=0.02)  # fmt: skip
    undefined = ((cases.arm == "DTS") & (cases.seed == 0) & (cases.case_id == "f0c1")) | (
        (cases.arm == "DTF") & (cases.case_id == "f1c2")  # every DTF seed: case left out
    )
    cases.loc[undefined, "dice"] = np.nan
    ps = S.pair_seeds(*(S.arm_values(cases, a, ["dice"]) for a in ("DTF", "DTS")), "dice")
    assert ps.n_cases == 6 and ps.folds == (0, 1)
    fast = S.bootstrap_effects(ps, n_boot=300, seed=11)
    np.testing.assert_allclose(fast, slow_bootstrap(cases, "DTF", "DTS", "dice", 300, 11))


def test_bootstrap_distribution_equals_exact_enumeration():
    """Tiny table: every equally likely resample (3^3 case draws x seed draws per arm and fold)
    gives the exact distribution; the bootstrap's replicates follow it. (Drawing seeds anew for
    each drawn case instead would give a variance about 10% smaller: outside the tolerance.)"""
    base = {0: np.array([[0.10, 0.35], [0.52, 0.20]]), 1: np.array([[0.40], [0.71]])}
    cand = {0: np.array([[0.30, 0.95], [0.44, 0.61]]), 1: np.array([[0.90]])}
    keys = [(0, "a"), (0, "b"), (1, "c")]
    rows = [{"arm": arm, "seed": s, "fold": f, "case_id": cid, "m": blocks[f][s, j]}
            for arm, blocks in (("B", base), ("C", cand)) for f in blocks
            for s in range(blocks[f].shape[0])
            for j, (_, cid) in enumerate(k for k in keys if k[0] == f)]  # fmt: skip
    ps = S.pair_seeds(*(S.arm_values(pd.DataFrame(rows), a, ["m"]) for a in "BC"), "m")
    def draws(y):  # every ordered draw of the block's seeds with replacement
        return list(itertools.product(range(y.shape[0]), repeat=y.shape[0]))

    exact = []
    for draw in itertools.product(range(3), repeat=3):
        arm_fold = [draws(base[0]), draws(base[1]), draws(cand[0]), draws(cand[1])]
        for sb0, sb1, sc0, sc1 in itertools.product(*arm_fold):
            drawn = {"B": {0: sb0, 1: sb1}, "C": {0: sc0, 1: sc1}}
            diffs = []
            for i in draw:
                f, j = keys[i][0], [0, 1, 0][i]
                arm_mean = {a: np.mean([blocks[f][s, j] for s in drawn[a][f]])
                            for a, blocks in (("B", base), ("C", cand))}  # fmt: skip
                diffs.append(arm_mean["C"] - arm_mean["B"])
            exact.append(np.mean(diffs))
    exact = np.array(exact)
    n_boot = 40000
    boot = S.bootstrap_effects(ps, n_boot=n_boot, seed=5)
    assert boot.mean() == pytest.approx(exact.mean(), abs=5 * exact.std() / np.sqrt(n_boot))
    # distribution function at several points, each within 5 binomial SDs
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        x = np.quantile(exact, q)
        p = (exact <= x).mean()
        assert (boot <= x).mean() == pytest.approx(p, abs=5 * np.sqrt(p * (1 - p) / n_boot))
    # the variance, too (relative SD of a variance estimate ~ sqrt(2/n) for near-normal values)
    assert boot.var() == pytest.approx(exact.var(), rel=6 * np.sqrt(2 / n_boot))


# ------------------------------------------------------------------ seed spreads


def test_effect_seed_sd_is_the_spread_over_enumerated_pairings():
    shifts = {"DTF": 0.04, "DTS": 0.02}
    cases = tidy({"DTF": {0: 3, 1: 3}, "DTS": {0: 3, 1: 3}}, {0: 5, 1: 3},
                 effect={"DTS": 0.02}, seed_shift=shifts, noise=0.03)  # fmt: skip
    cmp = S.compare_seeds(cases, "DTF", "DTS", "dice", n_boot=200)
    wide = cases.pivot_table(index=["arm", "fold", "case_id"], columns="seed", values="dice")
    effects = []
    for sb0, sb1, sc0, sc1 in itertools.product(range(3), repeat=4):
        picked = {("DTF", 0): sb0, ("DTF", 1): sb1, ("DTS", 0): sc0, ("DTS", 1): sc1}
        per_case = [
            wide.loc[("DTS", f, c), picked["DTS", f]] - wide.loc[("DTF", f, c), picked["DTF", f]]
            for f, c in wide.loc["DTF"].index
        ]
        effects.append(np.mean(per_case))
    # population variance over all 81 pairings, k/(k-1) for the 3 seeds drawn from many
    assert cmp.seed_sd_effect == pytest.approx(np.sqrt(np.var(effects) * 3 / 2))
    fold_means = cases.groupby(["arm", "fold", "seed"])["dice"].mean()
    for arm, sd in (("DTF", cmp.seed_sd_baseline), ("DTS", cmp.seed_sd_candidate)):
        per_fold = fold_means.loc[arm].groupby(level="fold").var(ddof=1)
        assert sd == pytest.approx(np.sqrt(per_fold.mean()))  # equal seeds per fold: plain mean
    assert cmp.seed_sd_baseline == pytest.approx(0.04, rel=0.3)  # the simulated seed shift


def test_a_fold_with_one_seed_borrows_the_pooled_seed_variance():
    cases = tidy({"B": {0: 3, 1: 1}, "C": {0: 2, 1: 2}}, {0: 4, 1: 4}, seed_shift={"B": 0.1})
    ps = S.pair_seeds(*(S.arm_values(cases, a, ["dice"]) for a in "BC"), "dice")
    vb, vc = S.seed_variance(ps.base), S.seed_variance(ps.cand)
    assert vb.df.tolist() == [2, 0] and np.isnan(vb.per_fold[1])
    assert vb.filled()[1] == pytest.approx(vb.pooled) == pytest.approx(vb.per_fold[0])
    expected = np.sqrt(0.25 * (vb.pooled + vc.per_fold[0]) + 0.25 * (vb.pooled + vc.per_fold[1]))
    assert S.effect_seed_sd(ps) == pytest.approx(expected)
    cmp = S.compare_paired(ps, "B", "C", "dice", n_boot=100)
    assert cmp.seeds_baseline == 1 and cmp.seeds_candidate == 2 and cmp.seed_spread_known


def test_nan_seeds_are_averaged_over_the_defined_ones():
    cases = tidy({"B": {0: 2}, "C": {0: 3}}, {0: 3}, noise=0.0)
    one = (cases.arm == "C") & (cases.case_id == "f0c0") & (cases.seed == 1)
    cases.loc[one, "dice"] = np.nan  # seeds 0 and 2 of this case stay at the base value
    cases.loc[(cases.arm == "B") & (cases.case_id == "f0c2"), "dice"] = np.inf  # all B seeds
    cases.loc[(cases.arm == "C") & (cases.case_id == "f0c1") & (cases.seed == 2), "dice"] = 1.53
    cmp = S.compare_seeds(cases, "B", "C", "dice", n_boot=50)
    assert cmp.n_cases == 2  # f0c2 has no defined baseline value
    c1 = (0.53 + 0.53 + 1.53) / 3 - 0.53
    np.testing.assert_allclose(cmp.case_diff, [0.0, c1], atol=1e-12)
    assert cmp.effect == pytest.approx(c1 / 2)


# ------------------------------------------------------------------ verdicts and the table


@pytest.mark.parametrize(
    ("effect", "expected"),
    [(0.0, S.CI_INCLUDES_0), (0.09, S.WITHIN_SPREAD), (0.3, S.BEYOND_SPREAD)],
)
def test_verdict_separates_ci_and_seed_spread(effect, expected):
    # seed shifts -0.1, 0, +0.1 per arm and fold: single-seed effect SD = sqrt(5 * 0.04 * 0.02)
    folds = {f: 3 for f in range(5)}
    shifts = {"DTF": 0.1, "DTS": 0.1}
    cases = tidy({"DTF": folds, "DTS": folds}, {f: 20 for f in range(5)},
                 effect={"DTS": effect}, seed_shift=shifts, noise=0.002)  # fmt: skip
    cmp = S.compare_seeds(cases, "DTF", "DTS", "dice")
    assert cmp.seed_sd_effect == pytest.approx(np.sqrt(0.004), rel=0.05)
    assert cmp.verdict == expected
    assert cmp.ci_excludes_0 == (expected != S.CI_INCLUDES_0)
    assert cmp.exceeds_seed_spread == (expected == S.BEYOND_SPREAD)


def test_seed_table_rows_columns_strata_and_holm():
    folds = {f: 3 for f in range(3)}
    cases = tidy({"DTF": folds, "DTS": folds, "DTS@tau300": {f: 1 for f in range(3)}},
                 {0: 6, 1: 6, 2: 6}, effect={"DTS": 0.3, "DTS@tau300": 0.01},
                 seed_shift={"DTF": 0.02, "DTS": 0.02})  # fmt: skip
    cases["rve"] = 1.0 - cases["dice"]
    columns = [("Dice", "dice", True), ("RVE", "rve", False)]
    pairs = [("DTF", "DTS"), ("DTS", "DTS@tau300")]
    plain = S.seed_table(cases, pairs, columns, n_boot=300)
    assert tuple(plain.columns) == S.TABLE_COLUMNS and len(plain) == 4
    strata = size_strata([5.0], [1.0])
    table = S.seed_table(cases, pairs, columns, strata=strata, n_boot=300)
    assert list(table.columns[:5]) == ["Baseline", "Candidate", "Stratum", "Subset", "Metric"]
    assert len(table) == 2 * 3 * 2 and (table["p (Holm)"] >= table["p"]).all()
    row = table.set_index(["Candidate", "Stratum", "Metric"])
    assert row.loc[("DTS", "< 5 mL", "Dice"), "n cases"] == 12
    assert row.loc[("DTS", "< 1 mL", "Dice"), "n cases"] == 6
    assert row.loc[("DTS", "< 5 mL", "Dice"), "Verdict"] == S.BEYOND_SPREAD
    assert row.loc[("DTS", "< 5 mL", "RVE"), "Direction"] == "better"
    ablation = row.loc[("DTS@tau300", "≥ 5 mL", "Dice")]
    assert ablation["seeds (candidate)"] == 1 and pd.isna(ablation["Exceeds seed spread"])
    assert ablation["Verdict"] in (S.ONE_SEED, S.CI_INCLUDES_0)
    # each stratum row is compare_seeds on that stratum's cases
    sub = cases[cases["ref_ml"] >= 5.0]
    direct = S.compare_seeds(sub, "DTF", "DTS", "rve", n_boot=300)
    got = row.loc[("DTS", "≥ 5 mL", "RVE")]
    assert (got["Effect"], got["CI low"], got["Seed SD (effect)"]) == pytest.approx(
        (direct.effect, direct.ci_low, direct.seed_sd_effect))


def test_bad_input_is_named():
    cases = tidy({"B": {0: 2}, "C": {0: 2}}, {0: 3})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['seed'\]"):
        S.compare_seeds(cases.drop(columns="seed"), "B", "C", "dice")
    with pytest.raises(ValueError, match="no rows for arm 'X'"):
        S.compare_seeds(cases, "B", "X", "dice")
    with pytest.raises(ValueError, match="missing column.*'ref_ml'"):
        S.seed_table(cases.drop(columns="ref_ml"), [("B", "C")], [("Dice", "dice", True)],
                     strata=size_strata([5.0]))  # fmt: skip
    twice = pd.concat([cases, cases.iloc[[0]]])
    with pytest.raises(ValueError, match="arm 'B' has more than one row for seed 0, fold 0, case"):
        S.compare_seeds(twice, "B", "C", "dice")


# ------------------------------------------------------------------ variance components


def simulate(rng, seeds_per_fold, cases_per_fold, sd):
    """Per-fold (seeds x cases) arrays from y = mu + F + S(f) + C(f) + e(f) with the given SDs."""
    blocks = []
    for k, n in zip(seeds_per_fold, cases_per_fold):
        fold = rng.normal(0, sd["folds"])
        y = (1.0 + fold + rng.normal(0, sd["seeds"], (k, 1)) + rng.normal(0, sd["cases"], (1, n))
             + rng.normal(0, sd["seed x case"], (k, n)))  # fmt: skip
        blocks.append(y)
    return blocks


def test_variance_components_recover_known_sigmas():
    """Unbiased estimators: over many simulated studies (unequal seeds and cases per fold) each
    component's average raw estimate is the true variance within 4.5 standard errors. The sizes
    are unequal enough that the fold component with the plain mean of the sizes (instead of the
    mean of 1/n_f) misses by about 8 standard errors."""
    rng = np.random.default_rng(2024)
    sd = {"folds": 0.6, "seeds": 0.4, "cases": 1.0, "seed x case": 0.5}
    k, n = (2, 3, 4, 2, 3, 2), (3, 5, 20, 4, 30, 6)
    raw = np.array([[c.raw for c in S.anova_components(simulate(rng, k, n, sd)).components]
                    for _ in range(1000)])  # fmt: skip
    for j, source in enumerate(S.SOURCES):
        se = raw[:, j].std(ddof=1) / np.sqrt(len(raw))
        assert raw[:, j].mean() == pytest.approx(sd[source] ** 2, abs=4.5 * se), source


def test_variance_components_with_one_seed_say_what_is_confounded():
    rng = np.random.default_rng(7)
    sd = {"folds": 0.6, "seeds": 0.4, "cases": 1.0, "seed x case": 0.5}
    estimates = [S.anova_components(simulate(rng, (1,) * 5, (10,) * 5, sd)) for _ in range(600)]
    vc = estimates[0]
    assert np.isnan(vc["seeds"].variance) and "one seed" in vc["seeds"].note
    assert np.isnan(vc["seed x case"].variance) and vc["seeds"].df == 0
    assert "includes seed x case" in vc["cases"].note and "includes seeds" in vc["folds"].note
    for source, truth in (("cases", 1.0**2 + 0.5**2), ("folds", 0.6**2 + 0.4**2)):
        raw = np.array([e[source].raw for e in estimates])
        assert raw.mean() == pytest.approx(truth, abs=4.5 * raw.std(ddof=1) / np.sqrt(raw.size))


def test_negative_estimates_are_truncated_and_flagged():
    # seeds with identical means but a seed x case interaction: the seed estimate is negative
    y = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [0.5, 2.0, 3.5]])  # every row mean is 2
    vc = S.anova_components([y, y + 1.0])
    seeds = vc["seeds"]
    assert seeds.raw < 0 and seeds.variance == 0.0 and seeds.truncated and "truncated" in seeds.note
    assert not vc["cases"].truncated and vc["cases"].variance > 0
    assert np.isnan(S.anova_components([y])["folds"].variance)  # one fold


def test_variance_table_from_the_tidy_frame():
    rng = np.random.default_rng(3)
    sd = {"folds": 0.3, "seeds": 0.2, "cases": 0.5, "seed x case": 0.1}
    blocks = simulate(rng, (3, 2), (5, 4), sd)
    rows = [{"arm": "DTF", "seed": s, "fold": f, "case_id": f"{f}-{c}", "dice": y[s, c]}
            for f, y in enumerate(blocks) for s in range(y.shape[0]) for c in range(y.shape[1])]
    cases = pd.DataFrame(rows).sample(frac=1.0, random_state=0)
    cases.loc[(cases.fold == 0) & (cases.case_id == "0-4") & (cases.seed == 1), "dice"] = np.nan
    vc = S.variance_components(cases, "DTF", "dice")
    assert vc.seeds_per_fold == (3, 2) and vc.cases_per_fold == (4, 4)  # the NaN drops case 0-4
    blocks[0] = blocks[0][:, :4]
    direct = S.anova_components(blocks)
    assert [c.raw for c in vc.components] == pytest.approx([c.raw for c in direct.components])
    table = S.variance_table(cases, ["DTF"], [("Dice", "dice", True)])
    assert tuple(table.columns) == S.VARIANCE_COLUMNS
    assert table["Component"].tolist() == list(S.SOURCES)
    assert table["Share"].sum() == pytest.approx(1.0)
    assert table["SD"].to_numpy() == pytest.approx(np.sqrt(table["Variance"].to_numpy()))


def test_too_few_cases_and_empty_strata():
    cases = tidy({"B": {0: 2, 1: 2}, "C": {0: 2, 1: 2}}, {0: 3, 1: 3})
    table = S.seed_table(cases, [("B", "C")], [("Dice", "dice", True)],
                         strata=size_strata([0.6, 100.0]), n_boot=100)  # fmt: skip
    by = table.set_index("Stratum")
    assert by.loc["≥ 100 mL", "n cases"] == 0 and by.loc["≥ 100 mL", "Verdict"] == S.TOO_FEW
    assert by.loc["< 0.6 mL", "n cases"] == 2 and by.loc["< 0.6 mL", "Verdict"] != S.TOO_FEW
    one = S.compare_seeds(cases[cases.case_id == "f0c0"], "B", "C", "dice")
    assert one.n_cases == 1 and np.isnan(one.ci_low) and one.verdict == S.TOO_FEW
