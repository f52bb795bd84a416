"""Thesis-style tables from the per-case metrics CSV (one row per combo, fold, test case)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from sizepenalty.combos import canonical_name
from sizepenalty.metrics import ccc

# Table 5.1 columns: (label, per-case metric, higher is better)
MAIN_COLUMNS = (
    ("Dice", "dice", True), ("FP", "fp", False), ("Missed", "fn", False), ("Det.", "detection", True),
    ("RVE", "rve", False), ("PQ", "pq", True), ("SQ", "sq", True), ("RQ", "rq", True), ("ASSD", "assd_mm", False),
)  # fmt: skip


def fold_means(cases: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean of each metric per (combo, fold) over the fold's test cases."""
    return cases.groupby(["combo", "fold"], sort=False)[list(metrics)].mean().reset_index()


def main_table(cases: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Every combination x Table 5.1 metrics: mean over folds of the fold means, with the standard
    deviation across folds (``<metric>_sd``); rows in the configured (thesis) order."""
    metrics = [m for _, m, _ in MAIN_COLUMNS]
    per_fold = fold_means(cases.assign(combo=cases["combo"].map(canonical_name)), metrics)
    rows = []
    for combo in order:
        sub = per_fold[per_fold["combo"] == canonical_name(combo)]
        if sub.empty:
            continue
        row: dict[str, object] = {"Loss": canonical_name(combo), "folds": len(sub)}
        for label, metric, _ in MAIN_COLUMNS:
            row[label] = float(sub[metric].mean())
            row[f"{label}_sd"] = float(sub[metric].std(ddof=1)) if len(sub) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def best_rows(table: pd.DataFrame) -> dict[str, str]:
    """The best combination per Table 5.1 column (direction-aware)."""
    out = {}
    for label, _, higher in MAIN_COLUMNS:
        if label in table and len(table):
            idx = table[label].idxmax() if higher else table[label].idxmin()
            out[label] = str(table.loc[idx, "Loss"])
    return out


def _fmt(label: str, value: float, sd: float) -> str:
    digits = 2 if label in ("FP", "Missed") else 4
    return f"{value:.{digits}f} ± {sd:.{digits}f}"


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown with mean ± SD across folds; the best value per column in bold."""
    best = best_rows(table)
    labels = [label for label, _, _ in MAIN_COLUMNS]
    lines = ["| Loss | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for _, r in table.iterrows():
        cells = []
        for label in labels:
            cell = _fmt(label, r[label], r[f"{label}_sd"])
            cells.append(f"**{cell}**" if best.get(label) == r["Loss"] else cell)
        lines.append(f"| {r['Loss']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_latex(table: pd.DataFrame) -> str:
    best = best_rows(table)
    labels = [label for label, _, _ in MAIN_COLUMNS]
    lines = [
        r"\begin{tabular}{l" + "r" * len(labels) + "}",
        r"\hline",
        "Loss & " + " & ".join(labels) + r" \\",
        r"\hline",
    ]
    for _, r in table.iterrows():
        cells = []
        for label in labels:
            cell = _fmt(label, r[label], r[f"{label}_sd"]).replace("±", r"$\pm$")
            cells.append(r"\textbf{" + cell + "}" if best.get(label) == r["Loss"] else cell)
        lines.append(f"{r['Loss']} & " + " & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}", ""]
    return "\n".join(lines)


def volume_ccc(cases: pd.DataFrame) -> dict[str, float]:
    """CCC of predicted vs reference volumes across all test cases, per combination."""
    return {str(c): ccc(g["vol_ref_ml"], g["vol_pred_ml"]) for c, g in cases.groupby("combo")}


__all__ = [
    "MAIN_COLUMNS",
    "best_rows",
    "fold_means",
    "main_table",
    "to_latex",
    "to_markdown",
    "volume_ccc",
]
