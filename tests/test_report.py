"""Aggregation, statistics, figures and the HTML report on fabricated per-case tables with known
answers."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sizepenalty.report import figures as F
from sizepenalty.report import tables as T
from sizepenalty.report.stats import bootstrap_ci, holm, paired, wilcoxon_p
from sizepenalty.strata import bin_of, size_bins, size_strata

STRATA = ["< 1 mL", "1–5 mL", "≥ 5 mL"]


def fabricated(
    n_per_fold: int = 6, folds: int = 3, shift: float = 0.05, seed: int = 0
) -> pd.DataFrame:
    """Cases where DTS's Dice is DTF's + ``shift`` + small noise, and its RVE is 0.02 lower."""
    rng = np.random.default_rng(seed)
    rows = []
    for fold in range(folds):
        for i in range(n_per_fold):
            ref = [0.5, 3.0, 12.0][i % 3]
            base = {"case_id": f"c{fold}{i}", "fold": fold, "threshold": 0.5, "ref_ml": ref,
                    "stratum": STRATA[i % 3], "vol_ref_ml": ref}  # fmt: skip
            dice = 0.5 + 0.05 * i + 0.01 * fold
            for combo, d, r in (
                ("DTF", dice, 0.30),
                ("DTS", dice + shift + rng.normal(0, 0.005), 0.28),
            ):
                rows.append(base | {"arm": combo, "combo": combo, "variant": "main", "seed": 42,
                                    "dice": d, "rve": r,
                                    "fp_overlap": 1.0 + (combo == "DTS"), "fn_overlap": 2.0,
                                    "detection_overlap": 0.5, "fp_iou": 2.0, "fn_iou": 3.0,
                                    "detection_iou": 0.25, "pq": d / 2, "sq": 0.7, "rq": d / 1.4,
                                    "assd_mm": 3.0, "assd_tp_mm": 2.0, "lesion_f1": d, "vw_dice": d,
                                    "ave_ml": 0.1, "pq_dsc": d / 2, "sq_dsc": 0.8,
                                    "vol_pred_ml": ref * (1 + r)})  # fmt: skip
    return pd.DataFrame(rows)


def test_main_table_means_spread_and_best_marking():
    cases = fabricated()
    table = T.main_table(cases, ["DTF", "DTS"])
    assert list(table["Loss"]) == ["DTF", "DTS"] and set(table["folds"]) == {3}
    fold_means = cases[cases.arm == "DTF"].groupby("fold")["dice"].mean()
    assert table.loc[0, "Dice"] == pytest.approx(fold_means.mean())
    assert table.loc[0, "Dice_sd"] == pytest.approx(fold_means.std(ddof=1))
    best = T.best_rows(table)
    assert best["Dice"] == "DTS" and best["RVE"] == "DTS" and best["FP"] == "DTF"  # FP: lower wins
    md = T.to_markdown(table)
    assert "| DTS | **" in md and md.count("**") == 2 * len(T.MAIN_COLUMNS)
    assert r"\textbf{" in T.to_latex(table)


def test_extra_table_has_ccc_per_fold():
    cases = fabricated()
    extra = T.extra_table(cases, ["DTF", "DTS"])
    assert {"Lesion F1", "vw-Dice", "CCC", "AVE (mL)"} <= set(extra.columns)
    assert 0.9 < extra.loc[0, "CCC"] <= 1.0  # predicted volumes track the reference closely


def test_pair_table_deltas_directions_ci_and_holm():
    cases = fabricated(shift=0.05)
    pairs = T.pair_table(cases, [("DTF", "DTS")], n_boot=1000, seed=1)
    dice = pairs[pairs["Metric"] == "Dice"].iloc[0]
    assert dice["Delta"] == pytest.approx(0.05, abs=0.005) and dice["Direction"] == "better"
    assert dice["CI low"] < 0.05 < dice["CI high"]  # the CI contains the true difference
    assert dice["n cases"] == 18 and dice["p"] < 0.001 and dice["p (Holm)"] >= dice["p"]
    rve = pairs[pairs["Metric"] == "RVE"].iloc[0]
    assert (
        rve["Delta"] == pytest.approx(-0.02) and rve["Direction"] == "better"
    )  # lower RVE is better
    fp = pairs[pairs["Metric"] == "FP"].iloc[0]
    assert fp["Direction"] == "worse"
    same = pairs[pairs["Metric"] == "SQ"].iloc[0]
    assert (
        same["Direction"] == "tie" and same["p"] == 1.0 and same["CI low"] == same["CI high"] == 0.0
    )


def test_thesis_strata_cover_every_case_and_the_sub_ml_table_is_a_subset():
    strata = size_strata([5.0], [1.0])
    assert [(x.label, x.subset) for x in strata] == [
        ("< 5 mL", False), ("≥ 5 mL", False), ("< 1 mL", True)
    ]  # fmt: skip
    volumes = [0.0, 0.4, 0.999, 1.0, 4.99, 5.0, 370.0]
    for v in volumes:  # every case in exactly one covering bin
        assert sum(x.contains(v) for x in strata if not x.subset) == 1
    assert [bin_of(v, [5.0]) for v in (0.4, 3.0, 5.0)] == ["< 5 mL", "< 5 mL", "≥ 5 mL"]
    assert [x.label for x in size_bins([1.0, 5.0])] == STRATA  # exclusive bins say what they hold
    assert len(size_strata([1.0, 5.0], [1.0])) == 3  # a subset equal to a bin is not repeated


def test_strata_table_has_every_arm_by_stratum_with_its_seeds_averaged():
    cases = fabricated(n_per_fold=6, folds=3)  # references of 0.5, 3 and 12 mL
    # a second seed of DTS, Dice 0.1 higher: each case's value is the mean over the seeds
    more = cases[cases.arm == "DTS"].assign(seed=43, dice=lambda f: f["dice"] + 0.1)
    strata = T.strata_table(pd.concat([cases, more]), ["DTF", "DTS"], size_strata([5.0], [1.0, 0.1]))
    assert list(strata["Loss"]) == ["DTF"] * 4 + ["DTS"] * 4  # every arm, not only the pairs
    assert list(strata["Stratum"])[:4] == ["< 5 mL", "≥ 5 mL", "< 1 mL", "< 0.1 mL"]
    assert list(strata["n"])[:4] == [12, 6, 6, 0]  # < 5 mL includes the sub-mL cases
    big = strata[strata["Stratum"] == "≥ 5 mL"].set_index("Loss")
    sub = cases[cases.ref_ml >= 5]
    assert big.loc["DTF", "Dice"] == pytest.approx(sub[sub.arm == "DTF"]["dice"].mean())
    assert big.loc["DTS", "Dice"] == pytest.approx(sub[sub.arm == "DTS"]["dice"].mean() + 0.05)
    assert big.loc["DTS", "RVE"] - big.loc["DTF", "RVE"] == pytest.approx(-0.02)


def test_stratum_statistics_and_the_findings_they_state():
    from sizepenalty.report.html import findings

    cases = fabricated(n_per_fold=6, folds=3, shift=0.05)  # DTS: Dice +0.05, RVE -0.02 everywhere
    stats = T.stratum_stats_table(cases, [("DTF", "DTS")], size_strata([5.0], [1.0]), n_boot=500)
    dice = stats[(stats.Metric == "Dice")].set_index("Stratum")
    assert list(dice.index) == ["< 5 mL", "≥ 5 mL", "< 1 mL"]
    assert dice.loc["< 5 mL", "n cases"] == 12 and dice.loc["< 1 mL", "n cases"] == 6
    assert dice.loc["< 5 mL", "Mean diff"] == pytest.approx(0.05, abs=0.005)
    assert dice.loc["< 5 mL", "CI low"] < 0.05 < dice.loc["< 5 mL", "CI high"]
    assert (stats["p (Holm)"] >= stats["p"]).all() and dice.loc["< 5 mL", "Direction"] == "better"
    sentences = findings(stats)
    assert len(sentences) == 3 and sentences[0].startswith("DTS vs DTF, < 5 mL (n = 12 paired")
    assert "significant after Holm correction: Dice (better for DTS)" in sentences[0]
    same = T.stratum_stats_table(cases.assign(dice=0.5, rve=0.3), [("DTF", "DTS")],
                                 size_strata([5.0]), n_boot=200)  # fmt: skip
    assert "no difference is significant" in findings(same[same.Metric.isin(["Dice", "RVE"])])[0]


def test_lesion_detection_by_each_lesions_own_volume_under_both_rules():
    lesions = pd.DataFrame(
        [
            {"arm": c, "seed": 42, "fold": 0, "case_id": "a", "volume_ml": v,
             "detected_overlap": d, "detected_iou": i}
            for c, rows in (("DTF", ((0.3, 0, 0), (0.8, 1, 0), (12.0, 1, 1))),
                            ("DTS", ((0.3, 1, 1), (0.8, 1, 0), (12.0, 1, 0))))
            for v, d, i in rows
        ]
    )  # fmt: skip
    table = T.lesion_detection_table(lesions, ["DTF", "DTS"], size_strata([5.0], [1.0]))
    dtf = table[table["Loss"] == "DTF"].set_index("Lesion size")
    small = dtf.loc["< 5 mL"]
    assert small["Lesions"] == 2 and small["Detection rate (overlap)"] == 0.5
    assert small["Detected (IoU)"] == 0 and small["Detection rate (IoU)"] == 0.0
    assert dtf.loc["≥ 5 mL", "Detection rate (overlap)"] == 1.0
    assert dtf.loc["≥ 5 mL", "Detection rate (IoU)"] == 1.0
    dts = table[table["Loss"] == "DTS"].set_index("Lesion size")
    assert dts.loc["< 1 mL", "Detected (overlap)"] == 2 and dts.loc["< 1 mL", "Subset"]
    assert dts.loc["< 1 mL", "Detected (IoU)"] == 1
    assert dts.loc["≥ 5 mL", "Detection rate (IoU)"] == 0.0


def test_main_table_counts_the_undefined_cases_each_mean_left_out():
    cases = fabricated()  # 3 folds x 6 cases per combination
    rng = np.random.default_rng(3)
    gone = rng.choice(np.flatnonzero(cases["combo"] == "DTS"), 4, replace=False)
    cases.loc[gone, "assd_mm"] = float("nan")  # e.g. empty predictions: no surface
    cases.loc[gone[:1], "rve"] = float("nan")
    table = T.main_table(cases, ["DTF", "DTS"]).set_index("Loss")
    assert table.loc["DTS", "ASSD_undefined"] == 4 and table.loc["DTS", "RVE_undefined"] == 1
    assert table.loc["DTF", "ASSD_undefined"] == 0 and table.loc["DTS", "Dice_undefined"] == 0
    kept = cases[(cases.combo == "DTS")].dropna(subset=["assd_mm"])
    assert table.loc["DTS", "ASSD"] == pytest.approx(kept.groupby("fold")["assd_mm"].mean().mean())
    md = T.to_markdown(table.reset_index())
    dts_line = next(line for line in md.splitlines() if line.startswith("| DTS |"))
    assert "(4 undefined)" in dts_line and "(1 undefined)" in dts_line
    assert "undefined" not in next(line for line in md.splitlines() if line.startswith("| DTF |"))
    assert "(4 undefined)" in T.to_latex(table.reset_index())
    cells = dict(T.mean_sd_cells(table.reset_index(), T.MAIN_COLUMNS, str, missing="–"))
    assert cells["DTS"][[c[0] for c in T.MAIN_COLUMNS].index("ASSD")].endswith("(4 undefined)")


def test_a_column_without_any_defined_value_says_so():
    cases = fabricated().assign(assd_mm=float("nan"))
    table = T.main_table(cases, ["DTF"])
    cells = dict(T.mean_sd_cells(table, T.MAIN_COLUMNS, str, missing="–"))
    assert cells["DTF"][-1] == "– (18 undefined)"


def test_statistics_helpers():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([float("nan")])[0])
    lo, hi = bootstrap_ci(np.full(10, 0.3))
    assert lo == hi == pytest.approx(0.3)
    assert all(np.isnan(bootstrap_ci([1.0])))
    assert wilcoxon_p([0.0, 0.0]) == 1.0 and np.isnan(wilcoxon_p([]))
    cases = fabricated()
    assert len(paired(cases, "DTF", "DTS", "dice")) == 18


def test_thesis_side_by_side_is_labelled():
    table = T.main_table(fabricated(), ["DTF", "DTS"])
    side = T.thesis_side_by_side(table)
    assert side.loc[0, "Dice (thesis, proprietary)"] == 0.7315
    assert side.loc[1, "Dice (thesis, proprietary)"] == 0.7268
    assert side.loc[0, "Dice (this study)"] == table.loc[0, "Dice"]
    assert side.loc[0, "Dice (thesis, ISLES 2022)"] == 0.7503  # Table 5.3


def test_relative_improvement_direction():
    assert F.relative_improvement(0.5, 0.6, "Dice") == pytest.approx(0.2)
    assert F.relative_improvement(4.0, 3.0, "ASSD") == pytest.approx(0.25)  # reduction is positive
    assert np.isnan(F.relative_improvement(0.0, 1.0, "Dice"))


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def _is_pdf(path):
    return path.read_bytes()[:5] == b"%PDF-" and path.stat().st_size > 1000


def test_figures_are_valid_png_and_pdf(tmp_path):
    cases = fabricated()
    pairs = T.pair_table(cases, [("DTF", "DTS")], n_boot=200)
    strata = T.stratum_stats_table(cases, [("DTF", "DTS")], size_strata([5.0], [1.0]), n_boot=200)
    made = F.fig_spl(tmp_path / "spl") + F.fig_improvement(pairs, strata, tmp_path / "imp")
    run = tmp_path / "runs/DTS/main/seed42/fold0"
    run.mkdir(parents=True)
    run.joinpath("epochs.csv").write_text(
        "epoch,loss,D,T,F,S,lr,val_dice,epoch_time_s\n1,2.0,0.9,0.9,0,0.2,0.01,,1\n2,1.5,0.7,0.7,0,0.1,0.01,0.3,1\n"
    )
    made += F.fig_curves({"DTS": [run]}, tmp_path / "curves")
    made += F.fig_forest(_seed_table(cases), tmp_path / "forest")
    made += F.fig_volume(cases, ["DTF", "DTS"], tmp_path / "volume")
    made += F.fig_bland_altman(cases, ["DTF", "DTS"], tmp_path / "ba")
    made += F.fig_case_metrics(cases, ["DTF", "DTS"], [5.0], tmp_path / "case")
    made += F.fig_dice_box(cases, ["DTF", "DTS"], tmp_path / "box")
    made += _gallery(cases, tmp_path / "gallery")
    assert len(made) == 2 * 9
    for path in made:
        assert _is_png(path) if path.suffix == ".png" else _is_pdf(path), path


def _seed_table(cases, pairs=(("DTF", "DTS"),)):
    """The aggregate stage's seed table of ``cases``: all cases, then the thesis's strata."""
    from sizepenalty.report.aggregate import ALL_CASES
    from sizepenalty.report.seeds import seed_table

    return seed_table(cases, list(pairs), T.STRATUM_METRICS,
                      [ALL_CASES, *size_strata([5.0], [1.0])], n_boot=200)  # fmt: skip


def _gallery(cases, base, per_stratum=3):
    """A case gallery of DTF vs DTS from made-up images of every picked case."""
    strata = size_strata([5.0])
    picked = F.pick_gallery_cases(cases, "DTF", "DTS", strata, per_stratum)
    rng = np.random.default_rng(0)
    ref = np.zeros((8, 16, 16), bool)
    ref[3:5, 4:7, 4:7] = True
    images = {(int(r.fold), r.case_id): (rng.random((8, 16, 16)), ref, ref, np.roll(ref, 1, 2))
              for r in picked.itertuples()}  # fmt: skip
    return F.fig_gallery(picked, "DTF", "DTS", images, dict.fromkeys(images, 0.1), base,
                         [s.label for s in strata])  # fmt: skip


class Captured:
    """The figures the figure functions build, kept open for inspection (``F.save`` patched to
    write the same files without closing them)."""

    def __init__(self, monkeypatch):
        self.figures = []
        monkeypatch.setattr(F, "save", self.save)

    def save(self, fig, base):
        self.figures.append(fig)
        out = [Path(f"{base}.{ext}") for ext in ("png", "pdf")]
        for path in out:
            fig.savefig(path, format=path.suffix[1:], bbox_inches="tight")
        return out


def test_the_forest_plot_has_one_interval_per_row_of_the_seed_table(tmp_path, monkeypatch):
    cases = fabricated(shift=0.05)
    table = _seed_table(cases, [("DTF", "DTS"), ("DTS", "DTF")])
    keys = ["Dice", "RVE", "PQ", "Det."]
    assert F.forest_metrics(table) == keys  # the thesis profile's key metrics, detection included
    shown = table[table["Metric"].isin(keys)]
    captured = Captured(monkeypatch)
    made = F.fig_forest(table, tmp_path / "forest")
    assert [p.suffix for p in made] == [".png", ".pdf"] and _is_png(made[0]) and _is_pdf(made[1])
    fig = captured.figures[0]
    axes = [ax for ax in fig.axes if ax.get_lines()]
    assert [ax.get_title().split("\n")[0] for ax in axes] == keys  # one panel per metric
    gids = [line.get_gid() for ax in axes for line in ax.get_lines() if line.get_gid()]
    intervals = [g for g in gids if g.startswith("ci:")]
    effects = [g for g in gids if g.startswith("effect:")]
    assert len(intervals) == len(effects) == len(shown) == 2 * 4 * 4  # pairs x strata x metrics
    expected = {f"ci:{r.Baseline}|{r.Candidate}|{r.Stratum}|{r.Metric}" for r in shown.itertuples()}
    assert set(intervals) == expected
    # each interval is the table's CI, each marker its effect
    row = shown[(shown.Candidate == "DTS") & (shown.Stratum == "< 5 mL") & (shown.Metric == "Dice")].iloc[0]
    line = next(x for x in axes[0].get_lines() if x.get_gid() == "ci:DTF|DTS|< 5 mL|Dice")
    assert tuple(line.get_xdata()) == pytest.approx((row["CI low"], row["CI high"]))
    # one row label per (pair, stratum), naming n and marking the subset stratum
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert len(labels) == 2 * 4 and "DTS vs DTF: < 5 mL (n = 12)" in labels
    assert "DTS vs DTF: < 1 mL (subset) (n = 6)" in labels
    # the plot says what a marker means
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "CI excludes 0" in legend and "beyond the seed spread" in legend and "CI includes 0" in legend


def test_volume_figures_show_each_arms_cases_with_ccc_and_agreement_limits(tmp_path, monkeypatch):
    from sizepenalty.metrics import ccc

    cases = fabricated()
    cases.loc[(cases.arm == "DTS") & (cases.case_id == "c00"), "vol_pred_ml"] = 0.0  # empty prediction
    captured = Captured(monkeypatch)
    F.fig_volume(cases, ["DTF", "DTS"], tmp_path / "volume")
    F.fig_bland_altman(cases, ["DTF", "DTS"], tmp_path / "ba")
    volume, ba = captured.figures
    means = F.case_means(cases, ["DTF", "DTS"])
    for ax, arm in zip(volume.axes, ["DTF", "DTS"]):
        mine = means[means.arm == arm]
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert ax.get_title() == f"{arm}: CCC = {ccc(mine.vol_ref_ml, mine.vol_pred_ml):.3f} (n = 18)"
        assert any(line.get_label() == "identity" for line in ax.get_lines())
    floor = [line for line in volume.axes[1].get_lines() if line.get_label().startswith("0 mL")]
    assert len(floor) == 1 and len(floor[0].get_xdata()) == 1  # the empty prediction, marked
    dts = means[means.arm == "DTS"]
    diff = dts.vol_pred_ml - dts.vol_ref_ml
    labels = [line.get_label() for line in ba.axes[1].get_lines()]
    assert f"bias {diff.mean():+.2f} mL" in labels and "empty prediction (1)" in labels


def test_case_means_average_each_arms_seeds_per_case():
    cases = fabricated()
    more = cases[cases.arm == "DTS"].assign(seed=43, dice=lambda f: f["dice"] + 0.1, rve=np.nan)
    means = F.case_means(pd.concat([cases, more]), ["DTS", "DTF"])
    assert list(dict.fromkeys(means.arm)) == ["DTS", "DTF"] and len(means) == 36
    dts = means[means.arm == "DTS"].set_index("case_id")
    one = cases[cases.arm == "DTS"].set_index("case_id")
    assert dts.loc["c00", "dice"] == pytest.approx(one.loc["c00", "dice"] + 0.05)
    assert dts.loc["c00", "rve"] == pytest.approx(one.loc["c00", "rve"])  # undefined left out


def test_fig_5_1_has_intervals_and_marks_strata_with_few_cases(tmp_path, monkeypatch):
    cases = fabricated(n_per_fold=6, folds=1)  # 2 cases per stratum below 1 mL: n < 5
    pairs = T.pair_table(cases, [("DTF", "DTS")], n_boot=200)
    strata = T.stratum_stats_table(cases, [("DTF", "DTS")], size_strata([5.0], [1.0]), n_boot=200)
    captured = Captured(monkeypatch)
    F.fig_improvement(pairs, strata, tmp_path / "imp")
    ax = captured.figures[0].axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["all cases (n = 6)", "< 5 mL (n = 4 < 5: unreliable)",
                      "≥ 5 mL (n = 2 < 5: unreliable)", "< 1 mL (n = 2 < 5: unreliable)"]  # fmt: skip
    assert sum(t.get_text() == "n<5" for t in ax.texts) == 3 * 6  # every bar of those strata
    assert ax.collections  # the error bars
    lo, hi = F.relative_interval(0.5, -0.1, 0.05, "Dice")
    assert (lo, hi) == pytest.approx((-0.2, 0.1))
    assert F.relative_interval(2.0, -0.5, 0.1, "RVE") == pytest.approx((-0.05, 0.25))  # reduction


def test_the_gallery_shows_the_largest_differences_per_stratum(tmp_path, monkeypatch):
    cases = fabricated(n_per_fold=6, folds=3)
    gap = {"c00": 0.4, "c13": 0.3, "c22": 0.2, "c03": 0.25}  # c22: 12 mL, the others 0.5 mL
    for cid, g in gap.items():
        cases.loc[(cases.arm == "DTS") & (cases.case_id == cid), "dice"] -= g
    picked = F.pick_gallery_cases(cases, "DTF", "DTS", size_strata([5.0]), per_stratum=3)
    assert list(picked["stratum"]) == ["< 5 mL"] * 3 + ["≥ 5 mL"] * 3
    assert list(picked["case_id"][:3]) == ["c00", "c13", "c03"] and picked["case_id"][3] == "c22"
    captured = Captured(monkeypatch)
    _gallery(cases, tmp_path / "gallery")
    fig = captured.figures[0]
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 2 * 6  # two panels (one per arm) for each of the six cases
    # the reference contour: a colour over a black under-stroke, so it shows on any grey
    ref = images[0].collections[0]
    assert ref.get_edgecolor()[0][:3] == pytest.approx((0xE6 / 255, 0x9F / 255, 0.0))
    assert ref.get_path_effects()


def test_gallery_slice_and_window_follow_the_lesions():
    ref = np.zeros((6, 40, 40), bool)
    ref[4, 10:12, 30:33] = True
    pred = np.zeros_like(ref)
    pred[1, 5:9, 5:9] = True  # a disagreement of 16 voxels beats 6 reference voxels
    assert F.gallery_slice(ref, pred, np.zeros_like(ref)) == 1
    assert F.gallery_slice(ref, pred, pred) == 4
    assert F.gallery_slice(np.zeros_like(ref), pred * 0, pred * 0) == 3  # nothing: the middle
    rows, cols = F._window([ref[4]], (40, 40))
    assert rows.stop - rows.start == cols.stop - cols.start == 24  # zoomed, never below 24
    assert rows.start <= 10 and rows.stop >= 12 and cols.start <= 30 and cols.stop >= 33


def test_html_report_marks_best_values_in_bold(tmp_path):
    from sizepenalty.config import from_dict
    from sizepenalty.report.html import build_report

    cases = fabricated()
    tables = tmp_path / "tables"
    tables.mkdir()
    T.main_table(cases, ["DTF", "DTS"]).to_csv(tables / "table_main.csv", index=False)
    T.extra_table(cases, ["DTF", "DTS"]).to_csv(tables / "table_extra.csv", index=False)
    cfg = from_dict(
        {"study": "r", "results": str(tmp_path), "losses": {"combinations": ["DTF", "DTS"]}}
    )
    html = build_report(cfg, tables, tmp_path / "figures")
    assert "&lt;b&gt;" not in html  # the markup is not escaped into visible text
    assert html.count("<b>") >= len(T.MAIN_COLUMNS) + len(T.EXTRA_COLUMNS)


def _no_difference(cases):
    """``cases`` with DTS's Dice DTF's plus differences of alternating sign: no significant
    difference (mean +0.0005), but not an exact tie either."""
    out = cases.copy()
    dtf = out[out.arm == "DTF"]["dice"].to_numpy()
    wiggle = np.resize([0.01, -0.009], dtf.size)
    out.loc[out.arm == "DTS", "dice"] = dtf + wiggle
    return out


def test_direction_says_ns_unless_the_difference_is_significant():
    from sizepenalty.report.seeds import seed_table

    cases = _no_difference(fabricated())
    pairs = T.pair_table(cases, [("DTF", "DTS")], n_boot=200).set_index("Metric")
    assert pairs.loc["Dice", "p (Holm)"] > 0.05 and pairs.loc["Dice", "Delta"] != 0
    assert pairs.loc["Dice", "Direction"] == "n.s."  # was "better" at any p
    assert pairs.loc["RVE", "Direction"] == "better" and pairs.loc["FP", "Direction"] == "worse"
    assert pairs.loc["SQ", "Direction"] == "tie"
    stats = T.stratum_stats_table(cases, [("DTF", "DTS")], size_strata([5.0]), n_boot=200)
    dice = stats[stats.Metric == "Dice"]
    assert (dice["p (Holm)"] > 0.05).all() and set(dice["Direction"]) == {"n.s."}
    seeds = seed_table(cases, [("DTF", "DTS")], T.STRATUM_METRICS, n_boot=200).set_index("Metric")
    assert not seeds.loc["Dice", "CI excludes 0"] and seeds.loc["Dice", "Direction"] == "n.s."
    assert seeds.loc["RVE", "CI excludes 0"] and seeds.loc["RVE", "Direction"] == "better"


def test_one_plain_sentence_per_pair_from_the_seed_table():
    from sizepenalty.report.html import pair_sentences

    table = _seed_table(fabricated(shift=0.05), [("DTF", "DTS")])
    better = pair_sentences(table)
    dice = table[(table.Metric == "Dice") & (table.Stratum == "all cases")]["Effect"].iloc[0]
    assert dice == pytest.approx(0.05, abs=0.005)
    assert len(better) == 1 and better[0].startswith(
        f"DTS vs DTF (18 paired test cases): DTS is better on Dice (all cases {dice:+.3f}, ")
    assert "RVE (all cases -0.020, < 5 mL -0.020" in better[0] and "worse" not in better[0]
    assert "of these 12 effects, 12 with the seed spread unknown (one seed)" in better[0]
    assert better[0].endswith("; no clear difference in Det.")  # Det. is 0.5 for both
    flat = _no_difference(fabricated()).assign(rve=0.3, pq=lambda f: f["dice"] / 2)
    same = pair_sentences(_seed_table(flat, [("DTF", "DTS")]))
    assert "no difference in Dice, RVE, PQ, Det. has a 95 % CI that excludes 0" in same[0]


def test_undefined_values_and_edge_cases_are_explained_where_the_tables_show_them():
    from sizepenalty.report.html import edge_case_conventions, edge_case_counts, undefined_notes

    cases = fabricated()
    empty = (cases.arm == "DTS") & cases.case_id.isin(["c00", "c01"])
    cases.loc[empty, ["vol_pred_ml", "assd_mm"]] = [0.0, np.nan]  # empty predictions
    table = T.main_table(cases, ["DTF", "DTS"])
    note = undefined_notes(table, T.MAIN_COLUMNS)
    assert "ASSD is undefined for these case types: empty reference, empty prediction" in note
    assert "2 test-case value(s)" in note and "Dice" not in note  # only what left cases out
    counts = edge_case_counts(cases, ["DTF", "DTS"]).set_index("Loss")
    assert counts.loc["DTS", "empty prediction"] == 2 and counts.loc["DTF", "empty prediction"] == 0
    conventions = edge_case_conventions(T.MAIN_COLUMNS).set_index("Case type")
    assert "Dice 0" in conventions.loc["empty prediction", "Values by convention"]
    assert "ASSD undefined" in conventions.loc["empty prediction", "Values by convention"]
    assert "Dice 1" in conventions.loc["both empty", "Values by convention"]


def test_long_and_wide_statistics_tables_are_split_and_narrowed():
    from sizepenalty.report.html import narrow, per_pair

    cases = fabricated()
    stats = T.stratum_stats_table(cases, [("DTF", "DTS"), ("DTS", "DTF")], size_strata([5.0], [1.0]),
                                  n_boot=100)  # fmt: skip
    text = per_pair(stats)
    assert text.count("<details>") == 2 and "DTS vs DTF (27 rows)" in text
    seeds = narrow(_seed_table(cases))
    assert {"95 % CI", "seeds", "Holm p"} <= set(seeds.columns)
    assert not {"CI low", "CI high", "Subset", "CI excludes 0", "Seed SD (baseline)"} & set(seeds.columns)
    assert "< 1 mL (subset)" in set(seeds["Stratum"]) and "all cases" in set(seeds["Stratum"])


def _report_study(tmp_path):
    """A report's inputs from fabricated per-case metrics: the aggregate tables and the figures
    the report shows; returns (config, tables folder, figures folder)."""
    from sizepenalty.config import from_dict
    from sizepenalty.paths import FIGURES, gallery_figure

    cases = fabricated(shift=0.05)
    tables, figures = tmp_path / "tables", tmp_path / "figures"
    tables.mkdir()
    figures.mkdir()
    pairs = [("DTF", "DTS")]
    stats = T.stratum_stats_table(cases, pairs, size_strata([5.0], [1.0]), n_boot=100)
    seeds = _seed_table(cases, pairs)
    frames = {"table_main": T.main_table(cases, ["DTF", "DTS"]),
              "table_extra": T.extra_table(cases, ["DTF", "DTS"]),
              "table_pairs": T.pair_table(cases, pairs, n_boot=100),
              "table_strata": T.strata_table(cases, ["DTF", "DTS"], size_strata([5.0], [1.0])),
              "table_strata_stats": stats, "table_seeds": seeds, "per_case_metrics": cases}  # fmt: skip
    for name, frame in frames.items():
        frame.to_csv(tables / f"{name}.csv", index=False)
    F.fig_forest(seeds, figures / FIGURES["forest"])
    F.fig_volume(cases, ["DTF", "DTS"], figures / FIGURES["volume"])
    F.fig_improvement(frames["table_pairs"], stats, figures / FIGURES["improvement"])
    _gallery(cases, figures / gallery_figure(1))
    cfg = from_dict({"study": "r", "results": str(tmp_path),
                     "losses": {"combinations": ["DTF", "DTS"]}, "report": {"pairs": [["DTF", "DTS"]]}})  # fmt: skip
    return cfg, tables, figures


def test_the_report_opens_with_the_forest_plot_then_one_sentence_per_pair(tmp_path):
    import re

    from sizepenalty.report.html import build_report

    html = build_report(*_report_study(tmp_path))
    figures = re.findall(r'<figure id="([^"]+)"', html)
    assert figures[0] == "fig_forest" and "fig_volume" in figures and "fig_gallery_1" in figures
    lead = html[html.index('<ul class="lead">'):]
    assert lead[: lead.index("</ul>")].count("<li>") == 1  # one compared pair
    assert html.index('id="fig_forest"') < html.index('<ul class="lead">') < html.index("<table")
    assert "<script" not in html and "http://" not in html.replace("http://127.0.0.1:5000", "")
