"""Thesis-style tables from the per-case metrics CSV (one row per run and test case: arm,
seed, fold, case).

Tables compare **arms** (a combination under a variant, e.g. ``DTS`` or ``DTS@tau300``): an arm's
fold value is the mean over its test cases and training seeds, and comparisons pair test cases
after averaging each arm's seeds per case. Which metrics a table shows comes from the study's
metric profile (:mod:`sizepenalty.metrics.profiles`) as ``(label, key, higher is better)``
columns; nothing here names a metric key itself, so every profile flows through the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from sizepenalty.metrics import METRICS, PROFILES, ccc
from sizepenalty.metrics.profiles import Column
from sizepenalty.runs import arm_label
from sizepenalty.strata import Stratum

_THESIS = PROFILES["thesis"]
# The thesis profile's column sets (Table 5.1; the extra metrics; Table 5.2; Tables 5.4/5.5).
MAIN_COLUMNS = _THESIS.columns("main")
EXTRA_COLUMNS = _THESIS.columns("extra")
PAIR_METRICS = _THESIS.columns("pairs")
STRATUM_METRICS = _THESIS.columns("strata")


EPOCHS: Column = ("Epochs", "best_epoch", None)
"""Table 5.3's "Epochs": each run's best validation epoch (no better direction)."""


def main_columns(columns: Sequence[Column], frame: pd.DataFrame) -> tuple[Column, ...]:
    """The main table's columns: the profile's, and Epochs when ``frame`` (per-case metrics or
    the main table itself) has the runs' best epochs."""
    has = EPOCHS[0] in frame.columns or EPOCHS[1] in frame.columns
    return (*columns, EPOCHS) if has else tuple(columns)


def fold_means(cases: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean of each metric per (arm, fold) over the fold's test cases and the arm's seeds."""
    return cases.groupby(["arm", "fold"], sort=False)[list(metrics)].mean().reset_index()


def _with_fold_ccc(cases: pd.DataFrame) -> pd.DataFrame:
    """Adds a ``ccc`` column: each run's (arm, seed, fold) CCC of predicted vs reference volume
    over its test cases (the same on each of its rows, so fold means average it over seeds)."""
    group = ["arm", "seed", "fold"]
    per = {key: ccc(g["vol_ref_ml"], g["vol_pred_ml"]) for key, g in cases.groupby(group)}
    return cases.assign(ccc=[per[k] for k in zip(*(cases[c] for c in group))])


def main_table(
    cases: pd.DataFrame,
    order: Sequence[str],
    columns: Sequence[Column] = MAIN_COLUMNS,
) -> pd.DataFrame:
    """Every arm x ``columns`` (default: the Table 5.1 metrics): mean over folds of the fold
    means (over test cases and seeds), with the standard deviation across folds
    (``<label>_sd``); rows in ``order`` (the study's arms, thesis order first). Undefined case
    values (NaN, e.g. ``assd_tp_mm`` without a matched pair; see
    :mod:`sizepenalty.metrics.edge_cases`) are left out of the means and counted per column
    (``<label>_undefined``: the arm's test-case rows, over its seeds, without a value)."""
    if any(m == "ccc" for _, m, _ in columns):
        cases = _with_fold_ccc(cases)
    metrics = [m for _, m, _ in columns]
    finite = cases.replace([float("inf"), float("-inf")], float("nan"))
    per_fold = fold_means(finite, metrics)
    undefined = finite[metrics].isna().groupby(finite["arm"]).sum()
    rows = []
    seeds = cases.groupby("arm")["seed"].nunique()
    for arm in map(arm_label, order):
        sub = per_fold[per_fold["arm"] == arm]
        if sub.empty:
            continue
        row: dict[str, object] = {"Loss": arm, "folds": len(sub), "seeds": int(seeds[arm])}
        for label, metric, _ in columns:
            row[label] = float(sub[metric].mean())
            row[f"{label}_sd"] = float(sub[metric].std(ddof=1)) if len(sub) > 1 else 0.0
            row[f"{label}_undefined"] = int(undefined.loc[arm, metric])
        rows.append(row)
    return pd.DataFrame(rows)


def extra_table(
    cases: pd.DataFrame, order: Sequence[str], columns: Sequence[Column] = EXTRA_COLUMNS
) -> pd.DataFrame:
    """The further metrics (default: the thesis profile's lesion F1, vw-Dice, CCC, AVE, matched
    ASSD, Dice-based PQ/SQ) per combination, mean ± SD across folds."""
    return main_table(cases, order, columns)


def best_rows(table: pd.DataFrame, columns: Sequence[Column] = MAIN_COLUMNS) -> dict[str, str]:
    """The best combination per column (direction-aware; NaN ignored)."""
    out = {}
    for label, _, higher in columns:
        if higher is not None and label in table and table[label].notna().any():
            idx = table[label].idxmax() if higher else table[label].idxmin()
            out[label] = str(table.loc[idx, "Loss"])
    return out


def mean_sd_cells(
    table: pd.DataFrame,
    columns: Sequence[Column],
    bold: Callable[[str], str],
    pm: str = "±",
    missing: str | None = None,
) -> list[tuple[str, list[str]]]:
    """Per row ``(loss, cells)``: "mean ± SD" for each column (the metric's decimals: 2 for counts
    and mL, else 4), the best value per column (:func:`best_rows`) passed through ``bold``; a NaN mean is shown
    as ``missing`` when given; a mean that left undefined cases out says how many ("(3 undefined)",
    from the ``<label>_undefined`` column of :func:`main_table`). Shared by the Markdown, LaTeX and
    HTML renderings."""
    best = best_rows(table, columns)
    rows = []
    for _, r in table.iterrows():
        cells = []
        for label, key, _ in columns:
            value, sd = r[label], r[f"{label}_sd"]
            digits = METRICS[key].digits
            if missing is not None and value != value:
                cell = missing
            else:
                cell = f"{value:.{digits}f} {pm} {sd:.{digits}f}"
            left_out = r.get(f"{label}_undefined", 0)
            if left_out == left_out and left_out > 0:  # absent or NaN: nothing to say
                cell += f" ({int(left_out)} undefined)"
            cells.append(bold(cell) if best.get(label) == r["Loss"] else cell)
        rows.append((str(r["Loss"]), cells))
    return rows


def to_markdown(table: pd.DataFrame, columns: Sequence[Column] = MAIN_COLUMNS) -> str:
    """Markdown with mean ± SD across folds; the best value per column in bold."""
    labels = [label for label, _, _ in columns]
    lines = ["| Loss | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for loss, cells in mean_sd_cells(table, columns, lambda c: f"**{c}**"):
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_latex(table: pd.DataFrame, columns: Sequence[Column] = MAIN_COLUMNS) -> str:
    """LaTeX tabular with mean $\\pm$ SD across folds; the best value per column in bold."""
    labels = [label for label, _, _ in columns]
    lines = [
        r"\begin{tabular}{l" + "r" * len(labels) + "}",
        r"\hline",
        "Loss & " + " & ".join(labels) + r" \\",
        r"\hline",
    ]
    for loss, cells in mean_sd_cells(table, columns, lambda c: r"\textbf{" + c + "}", pm=r"$\pm$"):
        lines.append(f"{loss} & " + " & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ comparisons (Tables 5.2, 5.4/5.5)


ALPHA = 0.05
"""A difference is significant when its Holm-adjusted p is below this."""


def _direction(delta: float, higher: bool, significant: bool) -> str:
    """What a difference (candidate − baseline) means for the candidate: "better" or "worse"
    only when it is ``significant``, else "n.s."; "tie" for an exact 0 (or NaN)."""
    if delta != delta or delta == 0:  # nan or exact tie
        return "tie"
    if not significant:
        return "n.s."
    return "better" if (delta > 0) == higher else "worse"


def _paired_stats(diff: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """The statistics columns of paired differences: bootstrap 95% CI and Wilcoxon p."""
    from sizepenalty.report.stats import bootstrap_ci, wilcoxon_p

    lo, hi = bootstrap_ci(diff, n_boot, seed=seed)
    return {"CI low": lo, "CI high": hi, "p": wilcoxon_p(diff)}


def _holm_family(rows: list[dict[str, object]], delta: str) -> pd.DataFrame:
    """The rows as a table, with the Holm-adjusted p over all of them (the table is the family),
    and "Direction" (which each row holds as whether higher is better until then) worded from
    the ``delta`` column and whether that Holm p is below :data:`ALPHA`."""
    from sizepenalty.report.stats import holm

    table = pd.DataFrame(rows)
    if len(table):
        table["p (Holm)"] = holm(table["p"].tolist())
        table["Direction"] = [_direction(d, h, significant=bool(p < ALPHA)) for d, h, p
                              in zip(table[delta], table["Direction"], table["p (Holm)"])]  # fmt: skip
    return table


def pair_table(
    cases: pd.DataFrame,
    pairs: Sequence[Sequence[str]],
    n_boot: int = 2000,
    seed: int = 0,
    columns: Sequence[Column] = PAIR_METRICS,
) -> pd.DataFrame:
    """Table 5.2 analogue for every (baseline, candidate) pair and metric.

    ``Baseline``/``Candidate`` values are the fold-mean averages (as in Table 5.1), ``Delta`` their
    difference (candidate - baseline) and ``Direction`` whether that is better for the candidate.
    Beyond the thesis: over the paired test cases, the mean difference, its bootstrap 95% CI, the
    Wilcoxon signed-rank p and the Holm-adjusted p over all rows of the table (the family).
    """
    from sizepenalty.report.stats import paired

    rows = []
    for base, cand in pairs:
        base, cand = arm_label(base), arm_label(cand)
        means = main_table(cases, [base, cand], columns).set_index("Loss")
        if base not in means.index or cand not in means.index:
            continue
        for label, metric, higher in columns:
            d = paired(cases, base, cand, metric)["diff"].to_numpy()
            delta = float(means.loc[cand, label] - means.loc[base, label])
            rows.append({
                "Baseline": base, "Candidate": cand, "Metric": label,
                "Baseline value": float(means.loc[base, label]), "Candidate value": float(means.loc[cand, label]),
                "Delta": delta, "Direction": higher, "n cases": int(d.size),
                "Case mean diff": float(d.mean()) if d.size else float("nan"),
            } | _paired_stats(d, n_boot, seed))  # fmt: skip
    return _holm_family(rows, "Delta")


def in_stratum(frame: pd.DataFrame, stratum: Stratum, volume: str = "ref_ml") -> pd.DataFrame:
    """Rows whose ``volume`` column (mL) falls in ``stratum``."""
    v = frame[volume].astype(float)
    return frame[(v >= stratum.lo_ml) & (v < stratum.hi_ml)]


def _by_stratum(cases: pd.DataFrame, pairs: Sequence[Sequence[str]], strata: Sequence[Stratum]):
    """(baseline, candidate, stratum, the stratum's cases) for every pair and stratum."""
    for base, cand in pairs:
        for stratum in strata:
            yield arm_label(base), arm_label(cand), stratum, in_stratum(cases, stratum)


def strata_table(
    cases: pd.DataFrame,
    order: Sequence[str],
    strata: Sequence[Stratum],
    columns: Sequence[Column] = STRATUM_METRICS,
) -> pd.DataFrame:
    """Tables 5.4/5.5 analogue for every arm the study ran: per arm and size stratum (the case's
    total reference volume: the covering bins, then subsets such as "< 1 mL"), the number of
    test cases and each metric's mean over them (each case's value the mean over the arm's
    seeds; undefined values left out). Strata with no case are listed with n = 0. The paired
    statistics of the compared pairs are :func:`stratum_stats_table`'s."""
    finite = cases.replace([np.inf, -np.inf], np.nan)
    metrics = [m for _, m, _ in columns]
    per_case = finite.groupby(["arm", "fold", "case_id"], sort=False)[[*metrics, "ref_ml"]].mean()
    rows = []
    for arm in map(arm_label, order):
        if arm not in per_case.index.get_level_values("arm"):
            continue
        mine = per_case.loc[arm]
        for stratum in strata:
            sub = in_stratum(mine, stratum)
            row: dict[str, object] = {"Loss": arm, "Stratum": stratum.label,
                                      "Subset": stratum.subset, "n": len(sub)}  # fmt: skip
            for label, metric, _ in columns:
                row[label] = float(sub[metric].mean()) if len(sub) else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def stratum_stats_table(
    cases: pd.DataFrame,
    pairs: Sequence[Sequence[str]],
    strata: Sequence[Stratum],
    columns: Sequence[Column] = STRATUM_METRICS,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The paired statistics of Table 5.2 within each size stratum: per pair, stratum and metric,
    the paired test cases, both means, the mean difference (candidate - baseline), its bootstrap
    95% CI, the Wilcoxon signed-rank p, the Holm-adjusted p over every row of this table, and
    whether the difference is better for the candidate. What the study's question ("does SPL help
    small lesions?") is answered with."""
    from sizepenalty.report.stats import paired

    rows = []
    for base, cand, stratum, sub in _by_stratum(cases, pairs, strata):
        for label, metric, higher in columns:
            d = paired(sub, base, cand, metric)
            diff = d["diff"].to_numpy()
            mean = float(diff.mean()) if diff.size else float("nan")
            rows.append({
                "Baseline": base, "Candidate": cand, "Stratum": stratum.label,
                "Subset": stratum.subset, "Metric": label, "n cases": int(diff.size),
                "Baseline mean": float(d["base"].mean()) if diff.size else float("nan"),
                "Candidate mean": float(d["cand"].mean()) if diff.size else float("nan"),
                "Mean diff": mean, "Direction": higher,
            } | _paired_stats(diff, n_boot, seed))  # fmt: skip
    return _holm_family(rows, "Mean diff")


def lesion_detection_table(
    lesions: pd.DataFrame, order: Sequence[str], strata: Sequence[Stratum]
) -> pd.DataFrame:
    """Lesion-wise detection by lesion size: every reference lesion of every test case, binned by
    its *own* volume (same bins as the case strata), and the fraction found under each counting
    rule: the overlap rule (any predicted voxel touches it: the thesis's Det.) and the IoU rule
    (matched one-to-one at the IoU threshold), pooled over the arm's seeds. Beyond the thesis,
    whose strata are by the case's total volume. Rows: arm x stratum, with the number of lesions
    and of detected lesions per rule."""
    rows = []
    for label in map(arm_label, order):
        mine = lesions[lesions["arm"] == label]
        if mine.empty and len(lesions):
            continue
        for stratum in strata:
            sub = in_stratum(mine, stratum, "volume_ml")
            n = len(sub)
            row = {"Loss": label, "Lesion size": stratum.label, "Subset": stratum.subset,
                   "Lesions": n}  # fmt: skip
            for rule, name in (("overlap", "overlap"), ("iou", "IoU")):
                found = int(sub[f"detected_{rule}"].sum()) if n else 0
                row[f"Detected ({name})"] = found
                row[f"Detection rate ({name})"] = found / n if n else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def thesis_side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """Our Table 5.1 means next to the thesis's published ones, per combination and column: its
    proprietary cohort (Table 5.1; Table 5.2 is the DTF and DTS rows of it) and its ISLES 2022
    split (Table 5.3, four combinations). Different data: not expected to agree; labels say so.
    Our ``ASSD`` is the whole-mask ASSD (``assd_mm``). Columns the study's profile does not
    have are left empty for this study."""
    from sizepenalty.report.thesis import COLUMNS, TABLE_5_1, TABLE_5_3, TABLE_5_3_EPOCHS

    nan = float("nan")
    rows = []
    for _, r in table.iterrows():
        if "@" in str(r["Loss"]):  # the thesis ran the main arms only
            continue
        prop, isles = TABLE_5_1.get(str(r["Loss"])), TABLE_5_3.get(str(r["Loss"]))
        row: dict[str, object] = {"Loss": r["Loss"]}
        for i, col in enumerate(COLUMNS):
            row[f"{col} (this study)"] = float(r[col]) if col in r else nan
            row[f"{col} (thesis, proprietary)"] = prop[i] if prop else nan
            row[f"{col} (thesis, ISLES 2022)"] = isles[i] if isles else nan
        row["Epochs (this study)"] = float(r["Epochs"]) if "Epochs" in r else nan
        row["Epochs (thesis, ISLES 2022)"] = float(TABLE_5_3_EPOCHS.get(str(r["Loss"]), nan))
        rows.append(row)
    return pd.DataFrame(rows)


def frame_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A plain Markdown table of any frame (floats rounded, NaN shown as an en dash)."""
    return frame.to_markdown(index=False, floatfmt=f".{digits}f", missingval="–")


def frame_latex(frame: pd.DataFrame, digits: int = 4) -> str:
    """A plain LaTeX tabular of any frame (no extra packages needed)."""

    def cell(v: object) -> str:
        if v is None:
            return "--"
        if isinstance(v, float):
            return "--" if v != v else f"{v:.{digits}f}"
        return (
            str(v)
            .replace("&", r"\&")
            .replace("%", r"\%")
            .replace("_", r"\_")
            .replace("<", "$<$")
            .replace("≥", "$\\geq$")
            .replace("–", "--")
        )

    cols = list(frame.columns)
    lines = [
        r"\begin{tabular}{" + "l" * len(cols) + "}",
        r"\hline",
        " & ".join(cell(c) for c in cols) + r" \\",
        r"\hline",
    ]
    lines += [" & ".join(cell(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    return "\n".join(lines + [r"\hline", r"\end{tabular}", ""])


__all__ = [
    "EXTRA_COLUMNS",
    "MAIN_COLUMNS",
    "PAIR_METRICS",
    "STRATUM_METRICS",
    "best_rows",
    "extra_table",
    "fold_means",
    "frame_latex",
    "frame_markdown",
    "in_stratum",
    "lesion_detection_table",
    "main_table",
    "mean_sd_cells",
    "pair_table",
    "strata_table",
    "stratum_stats_table",
    "thesis_side_by_side",
    "to_latex",
    "to_markdown",
]
