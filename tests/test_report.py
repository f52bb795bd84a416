"""Aggregation, statistics, figures and the HTML report on fabricated per-case tables with known
answers."""

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
    row = F.pick_overlay_case(cases, "DTF", "DTS")
    assert row is not None and row["ref_ml"] < 5
    ref = np.zeros((8, 16, 16), bool)
    ref[3:5, 4:7, 4:7] = True
    made += F.fig_overlay(
        row,
        "DTF",
        "DTS",
        np.random.default_rng(0).random((8, 16, 16)),
        ref,
        ref,
        np.roll(ref, 1, 2),
        0.1,
        tmp_path / "ov",
    )
    assert len(made) == 8
    for path in made:
        assert _is_png(path) if path.suffix == ".png" else _is_pdf(path), path


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
