"""The study's figures, regenerated from its outputs (PNG + PDF).

* :func:`fig_forest` — the forest plot: per compared pair and size stratum, the seed-aware paired
  effect with its 95 % CI for the key metrics (the report's first figure).
* Volume fidelity: :func:`fig_volume` (predicted vs reference volume, log axes, CCC),
  :func:`fig_bland_altman`, :func:`fig_case_metrics` (per-case Dice and RVE against reference
  volume) and :func:`fig_dice_box` (per-case Dice of every arm).
* Fig. 3.1 :func:`fig_spl` — SPL components from the package's own loss (:func:`spl_curves`).
* Fig. 5.1 :func:`fig_improvement` — relative improvement of candidate vs baseline, per stratum,
  with the paired CI; strata with fewer than :data:`FEW_CASES` cases are marked.
* Fig. 5.2 :func:`fig_curves` — training curves (loss terms, validation Dice) from epochs.csv.
* Figs. 5.3/5.4 :func:`fig_gallery` — per comparison pair, the test cases where its two arms
  differ most in Dice, per size stratum: a DWI slice with the reference and each prediction.

Colours are the Okabe–Ito colour-blind-safe palette, and never carry meaning alone: line styles,
markers and hatches separate the series in greyscale print too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sizepenalty.metrics import METRICS

# Okabe & Ito's colour-blind-safe palette (blue, vermillion, bluish green, reddish purple,
# orange, sky blue, black), then line styles, markers and hatches for greyscale.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LINES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
HATCHES = ("", "//", "..", "xx", "\\\\", "++")
# Metrics where a lower value is better: their improvement is plotted as a relative reduction.
LOWER_IS_BETTER = frozenset(m.label for m in METRICS.values() if not m.higher)
FOREST_METRICS = ("Dice", "RVE", "PQ", "Det.")
"""The forest plot's key metrics (``Det.`` is the overlap rule's detection, Table 5.1's)."""
FEW_CASES = 5
"""Strata with fewer paired test cases are marked as unreliable in Fig. 5.1."""
# The overlays' contours: a colour over a black under-stroke shows on dark and bright pixels.
REFERENCE_COLOR, PREDICTION_COLOR = "#E69F00", "#56B4E9"


def series_style(i: int) -> dict[str, object]:
    """Colour, line style and marker of the ``i``-th series (distinct in greyscale too)."""
    return {"color": COLORS[i % len(COLORS)], "ls": LINES[i % len(LINES)],
            "marker": MARKERS[i % len(MARKERS)]}  # fmt: skip


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    plt.rcParams.update({
        "font.size": 9, "axes.grid": True, "grid.color": "0.9", "savefig.dpi": 150,
        "axes.prop_cycle": cycler(color=COLORS), "xtick.labelsize": 8, "ytick.labelsize": 8,
        "axes.labelsize": 8.5, "axes.titlesize": 9,
    })  # fmt: skip
    return plt


def save(fig, base: str | Path) -> list[Path]:
    """Write ``base``.png and ``base``.pdf atomically; returns both paths."""
    from sizepenalty.data.io import atomic_path

    out = []
    for ext in ("png", "pdf"):
        path = Path(f"{base}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight")
        out.append(path)
    _plt().close(fig)
    return out


def fig_note(text: str, base: str | Path) -> list[Path]:
    """A figure that only says why the expected one could not be drawn (keeps outputs complete)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.text(0.5, 0.5, text, ha="center")
    ax.set_axis_off()
    return save(fig, base)


# ------------------------------------------------------------------ the forest plot


def forest_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics the forest plot shows: :data:`FOREST_METRICS` where the seed table has them,
    else (another metric profile) its first four metrics."""
    present = list(dict.fromkeys(table["Metric"])) if len(table) else []
    return [m for m in FOREST_METRICS if m in present] or present[:4]


def _verdict_markers() -> dict[str, dict[str, object]]:
    """How the forest plot draws each verdict of :mod:`sizepenalty.report.seeds` (legend text,
    marker, filled or not); shapes differ, so the verdicts read without colour."""
    from sizepenalty.report import seeds as S

    return {
        S.BEYOND_SPREAD: {"text": "CI excludes 0 and |effect| > 2 seed SDs: beyond the seed spread",
                          "marker": "s", "filled": True},
        S.WITHIN_SPREAD: {"text": "CI excludes 0, but within the seed spread", "marker": "D",
                          "filled": True},
        S.ONE_SEED: {"text": "CI excludes 0; seed spread unknown (one seed)", "marker": "^",
                     "filled": True},
        S.CI_INCLUDES_0: {"text": "CI includes 0", "marker": "o", "filled": False},
        S.TOO_FEW: {"text": "fewer than 2 cases: no CI", "marker": "x", "filled": True},
    }  # fmt: skip


def forest_figure(table: pd.DataFrame, metrics: Sequence[str] | None = None):
    """The forest plot as a matplotlib figure (:func:`fig_forest` saves it).

    ``table`` is the seed table (``tables/table_seeds.csv``, :func:`seeds.seed_table` with strata):
    one row per (pair, stratum) — pairs in blocks, in the table's order — and one panel per metric
    (default :func:`forest_metrics`). Each row shows the seed-averaged effect (candidate −
    baseline) with its two-level 95 % CI; the marker says the verdict (:func:`_verdict_markers`),
    the row label the paired test cases (a panel whose metric left cases out says its own n).
    Every interval is a line with ``gid`` ``"ci:<baseline>|<candidate>|<stratum>|<metric>"``,
    every effect a marker with ``gid`` ``"effect:..."``."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from sizepenalty.report import seeds as S

    plt = _plt()
    metrics = forest_metrics(table) if metrics is None else list(metrics)
    rows = table[table["Metric"].isin(metrics)]
    stratum = rows["Stratum"] if "Stratum" in rows else pd.Series("all cases", index=rows.index)
    subset = rows["Subset"].astype(str) == "True" if "Subset" in rows else False
    rows = rows.assign(Stratum=stratum, _label=np.where(subset & (stratum != "all cases"),
                                                        stratum + " (subset)", stratum))  # fmt: skip
    groups = list(dict.fromkeys(zip(rows["Baseline"], rows["Candidate"], rows["Stratum"])))
    pairs = list(dict.fromkeys((b, c) for b, c, _ in groups))
    ypos, labels, at = {}, [], 0.0
    for i, (b, c, s) in enumerate(groups):
        if i and (b, c) != groups[i - 1][:2]:
            at += 0.7  # a gap between the pairs' blocks
        ypos[(b, c, s)] = -at
        mine = rows[(rows["Baseline"] == b) & (rows["Candidate"] == c) & (rows["Stratum"] == s)]
        labels.append(f"{c} vs {b}: {mine['_label'].iloc[0]} (n = {int(mine['n cases'].max())})")
        at += 1.0
    height = 1.6 + 0.3 * at
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.5 * len(metrics) + 1.5, height),
                             sharey=True, squeeze=False)  # fmt: skip
    look = _verdict_markers()
    for ax, metric in zip(axes[0], metrics):
        sub = rows[rows["Metric"] == metric]
        n_all = {g: int(rows[(rows["Baseline"] == g[0]) & (rows["Candidate"] == g[1])
                             & (rows["Stratum"] == g[2])]["n cases"].max()) for g in groups}  # fmt: skip
        for _, r in sub.iterrows():
            key = (r["Baseline"], r["Candidate"], r["Stratum"])
            k, y = pairs.index(key[:2]), ypos[key]
            color, ls = COLORS[k % len(COLORS)], LINES[k % len(LINES)]
            tag = "|".join(map(str, (*key, metric)))
            lo, hi, eff = float(r["CI low"]), float(r["CI high"]), float(r["Effect"])
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [y, y], color=color, ls=ls, lw=1.6, gid=f"ci:{tag}",
                        solid_capstyle="butt")  # fmt: skip
                ax.plot([lo, hi], [y, y], ls="none", marker="|", ms=6, color=color)
            if np.isfinite(eff):
                m = look.get(r["Verdict"], look[next(iter(look))])
                ax.plot([eff], [y], ls="none", marker=m["marker"], ms=6, color=color,
                        markerfacecolor=color if m["filled"] else "white", markeredgewidth=1.3,
                        gid=f"effect:{tag}", zorder=3)  # fmt: skip
            if int(r["n cases"]) != n_all[key]:  # this metric left undefined cases out
                ax.annotate(f"n = {int(r['n cases'])}", (1.0, y), xycoords=("axes fraction", "data"),
                            xytext=(-2, 2), textcoords="offset points", ha="right", fontsize=6.5)  # fmt: skip
        ax.axvline(0, color="0.3", lw=0.9, zorder=1)
        reach = np.nanmax(np.abs(sub[["CI low", "CI high", "Effect"]].to_numpy(float)), initial=0)
        reach = 1.15 * reach if np.isfinite(reach) and reach > 0 else 1.0
        ax.set_xlim(-reach, reach)  # 0 in the middle: each side is one direction
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, symmetric=True))
        ax.set_xlabel(f"Δ {metric} (candidate − baseline)")
        better = "← candidate better" if metric in LOWER_IS_BETTER else "candidate better →"
        ax.set_title(f"{metric}\n{better}", fontsize=9)
    axes[0][0].set_yticks(list(ypos.values()), labels)
    axes[0][0].set_ylim(-at + 0.4, 0.8)
    handles = [Line2D([], [], ls="none", marker=m["marker"], color="0.2", ms=6,
                      markerfacecolor="0.2" if m["filled"] else "white", label=m["text"])
               for v, m in look.items() if v != S.TOO_FEW or v in set(rows["Verdict"])]  # fmt: skip
    handles += [Line2D([], [], color=COLORS[k % len(COLORS)], ls=LINES[k % len(LINES)], lw=1.6,
                       label=f"{c} vs {b}: 95 % CI") for k, (b, c) in enumerate(pairs)]  # fmt: skip
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
               frameon=False, fontsize=7.5)  # fmt: skip
    fig.suptitle("Paired effect by lesion size: mean over test cases of the seed-averaged "
                 "difference, 95 % CI (two-level bootstrap, not multiplicity-adjusted)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


def fig_forest(table: pd.DataFrame, base: str | Path, metrics: Sequence[str] | None = None) -> list[Path]:
    """The forest plot (:func:`forest_figure`) of the seed table, as PNG + PDF."""
    if table is None or table.empty:
        return fig_note("no comparison pair is configured: no forest plot", base)
    return save(forest_figure(table, metrics), base)


# ------------------------------------------------------------------ volume fidelity


def case_means(cases: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    """Per arm (in ``arms``' order) and test case, the mean over the arm's seeds of the volumes
    and per-case metrics (undefined values left out); columns ``arm``, ``fold``, ``case_id`` and
    the numeric columns of ``cases``."""
    mine = cases[cases["arm"].isin(list(arms))].replace([np.inf, -np.inf], np.nan)
    value_cols = [c for c in mine.select_dtypes("number").columns if c not in ("seed", "fold")]
    out = mine.groupby(["arm", "fold", "case_id"], sort=False)[value_cols].mean().reset_index()
    out["arm"] = pd.Categorical(out["arm"], categories=list(arms), ordered=True)
    return out.sort_values(["arm", "fold", "case_id"], kind="stable").reset_index(drop=True)


def plain_log(ax, which: str = "x") -> None:
    """A log axis (call once its data are drawn) with plain tick labels (0.1, 1, 10 rather than
    10^-1 ...): at 1, 2 and 5 per decade over a range of up to three decades, else at powers of
    ten; no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    decades = np.log10(hi / lo) if lo > 0 else np.inf
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _log_floor(*columns: pd.Series) -> float:
    """Where a log axis draws 0 mL: half the smallest positive volume shown (or 0.01 mL)."""
    pos = pd.concat(columns)
    pos = pos[pos > 0]
    return float(pos.min()) / 2 if len(pos) else 0.01


def fig_volume(cases: pd.DataFrame, arms: Sequence[str], base: str | Path) -> list[Path]:
    """Predicted against reference volume per test case (each the mean over the arm's seeds),
    one panel per arm, log axes with the identity line and Lin's CCC of the panel's cases. A 0 mL
    volume (an empty prediction, a lesion-free case) is drawn at the axis floor, marked."""
    from sizepenalty.metrics import ccc

    plt = _plt()
    data = case_means(cases, arms)
    if data.empty:
        return fig_note("no per-case volumes for the compared arms", base)
    floor = _log_floor(data["vol_ref_ml"], data["vol_pred_ml"])
    top = float(max(data["vol_ref_ml"].max(), data["vol_pred_ml"].max(), floor * 10)) * 1.5
    fig, axes = plt.subplots(1, len(arms), figsize=(3.3 * len(arms), 3.4), squeeze=False)
    for i, (ax, arm) in enumerate(zip(axes[0], arms)):
        d = data[data["arm"] == arm]
        ref, pred = d["vol_ref_ml"].to_numpy(float), d["vol_pred_ml"].to_numpy(float)
        zero = (ref <= 0) | (pred <= 0)
        ax.plot([floor, top], [floor, top], color="0.3", ls="--", lw=1, label="identity")
        st = series_style(i)
        ax.plot(ref[~zero], pred[~zero], ls="none", marker=st["marker"], color=st["color"],
                ms=4, alpha=0.8, label="test case")  # fmt: skip
        if zero.any():
            ax.plot(np.maximum(ref[zero], floor), np.maximum(pred[zero], floor), ls="none",
                    marker="v", color="0", ms=5, markerfacecolor="white",
                    label=f"0 mL at the floor ({int(zero.sum())})")  # fmt: skip
        ax.set(xscale="log", yscale="log", xlim=(floor / 1.3, top), ylim=(floor / 1.3, top),
               xlabel="reference volume (mL)", ylabel="predicted volume (mL)")  # fmt: skip
        plain_log(ax, "x")
        plain_log(ax, "y")
        ax.set_title(f"{arm}: CCC = {ccc(ref, pred):.3f} (n = {len(d)})", fontsize=9)
        ax.legend(frameon=False, fontsize=7, loc="upper left")
    fig.suptitle("Volume fidelity: predicted vs reference volume per test case (mean over seeds)")
    fig.tight_layout()
    return save(fig, base)


def fig_bland_altman(cases: pd.DataFrame, arms: Sequence[str], base: str | Path) -> list[Path]:
    """Bland–Altman plot per arm: predicted − reference volume against their mean (log axis),
    per test case (mean over the arm's seeds), with the bias and the 95 % limits of agreement
    (bias ± 1.96 SD). Empty predictions are marked; cases with neither volume are left out."""
    plt = _plt()
    data = case_means(cases, arms)
    if data.empty:
        return fig_note("no per-case volumes for the compared arms", base)
    fig, axes = plt.subplots(1, len(arms), figsize=(3.3 * len(arms), 4.0), squeeze=False,
                             sharey=True)  # fmt: skip
    for i, (ax, arm) in enumerate(zip(axes[0], arms)):
        d = data[data["arm"] == arm]
        ref, pred = d["vol_ref_ml"].to_numpy(float), d["vol_pred_ml"].to_numpy(float)
        mean, diff = (ref + pred) / 2, pred - ref
        shown, empty = mean > 0, (pred <= 0) & (ref > 0)
        st = series_style(i)
        ax.plot(mean[shown & ~empty], diff[shown & ~empty], ls="none", marker=st["marker"],
                color=st["color"], ms=4, alpha=0.8, label="test case")  # fmt: skip
        if empty.any():
            ax.plot(mean[empty], diff[empty], ls="none", marker="v", color="0", ms=5,
                    markerfacecolor="white", label=f"empty prediction ({int(empty.sum())})")  # fmt: skip
        if shown.sum() >= 2:
            bias, sd = float(diff[shown].mean()), float(diff[shown].std(ddof=1))
            ax.axhline(bias, color="0.2", lw=1.2, label=f"bias {bias:+.2f} mL")
            for lim in (bias - 1.96 * sd, bias + 1.96 * sd):
                ax.axhline(lim, color="0.2", lw=1, ls="--")
            ax.plot([], [], color="0.2", ls="--", label=f"bias ± 1.96 SD (± {1.96 * sd:.2f} mL)")
        ax.axhline(0, color="0.6", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="mean of predicted and reference volume (mL)")
        if i == 0:
            ax.set_ylabel("predicted − reference volume (mL)")
        plain_log(ax, "x")
        left_out = int((~shown).sum())
        note = f", {left_out} without lesion or prediction left out" if left_out else ""
        ax.set_title(f"{arm} (n = {int(shown.sum())}{note})", fontsize=9)
        ax.legend(frameon=False, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle("Bland–Altman: volume agreement per test case (mean over seeds)")
    fig.tight_layout()
    return save(fig, base)


def _binned_medians(x: np.ndarray, y: np.ndarray, per_bin: int = 4, most: int = 8):
    """Medians of ``x`` and ``y`` in bins of consecutive ``x`` holding about ``per_bin`` points
    each (at most ``most`` bins; none with fewer than 4 points): a trend line over the whole
    range of ``x``."""
    ok = (x > 0) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 4:
        return np.array([]), np.array([])
    order = np.argsort(x, kind="stable")
    chunks = np.array_split(order, min(most, max(2, x.size // per_bin)))
    return (np.array([np.exp(np.median(np.log(x[c]))) for c in chunks]),
            np.array([np.median(y[c]) for c in chunks]))  # fmt: skip


UNITS = {
    "dice": "(0–1, higher is better)",
    "rve": "(|V_p − V_g| / V_g, lower is better)",
    "avd_ml": "(mL, lower is better)",
}


def fig_case_metrics(
    cases: pd.DataFrame,
    arms: Sequence[str],
    edges_ml: Sequence[float],
    base: str | Path,
    metrics: Sequence[str] = ("dice", "rve", "avd_ml"),
) -> list[Path]:
    """Per-case metrics (default Dice and RVE, or the ISLES profile's AVD where there is no RVE)
    against the reference volume (log axis), every arm of ``arms`` in one panel per metric (each
    case the mean over the arm's seeds; a line through the medians of consecutive volume bins),
    the size strata's edges (``edges_ml``) marked. Lesion-free cases have no place on the volume
    axis; an undefined value (e.g. the RVE of an empty reference) is left out, and counted."""
    plt = _plt()
    data = case_means(cases, arms)
    keys = [k for k in metrics if k in data][:2]
    if data.empty or not keys:
        return fig_note("no per-case metrics for the compared arms", base)
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
    lesion_free = int((data.drop_duplicates(["fold", "case_id"])["vol_ref_ml"] <= 0).sum())
    notes = [f"{lesion_free} lesion-free test case(s) not shown"] if lesion_free else []
    for ax, key in zip(axes[0], keys):
        label = METRICS[key].label
        for i, arm in enumerate(arms):
            d = data[(data["arm"] == arm) & (data["vol_ref_ml"] > 0)]
            x, y = d["vol_ref_ml"].to_numpy(float), d[key].to_numpy(float)
            st = series_style(i)
            ax.plot(x, y, ls="none", marker=st["marker"], color=st["color"], ms=4, alpha=0.55,
                    label=f"{arm} (case)")  # fmt: skip
            cx, cy = _binned_medians(x, y)
            if cx.size:
                ax.plot(cx, cy, color=st["color"], ls=st["ls"], lw=1.6, label=f"{arm} (binned median)")
        for edge in edges_ml:
            ax.axvline(edge, color="0.4", ls=":", lw=1)
            ax.annotate(f"{edge:g} mL", (edge, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -10), textcoords="offset points", fontsize=7, color="0.3")  # fmt: skip
        ax.set(xscale="log", xlabel="reference volume (mL)", ylabel=f"{label} {UNITS.get(key, '')}")
        plain_log(ax, "x")
        if key == "dice":
            ax.set_ylim(-0.03, 1.03)
        elif np.nanmax(data[key].to_numpy(float), initial=0) > 5:  # a few huge errors
            ax.set_yscale("symlog", linthresh=1.0)
            plain_log(ax, "y")
        ax.set_title(f"per-case {label} by lesion size", fontsize=9)
        undefined = int(data[data["vol_ref_ml"] > 0][key].isna().sum())
        if undefined:
            notes.append(f"{undefined} undefined {label} value(s) left out")
    axes[0][0].legend(frameon=False, fontsize=7, ncol=1 + (len(arms) > 3))
    fig.suptitle("Per-case metrics against reference volume (mean over seeds)"
                 + (f"; {'; '.join(notes)}" if notes else ""), fontsize=9)  # fmt: skip
    fig.tight_layout()
    return save(fig, base)


def fig_dice_box(cases: pd.DataFrame, arms: Sequence[str], base: str | Path) -> list[Path]:
    """A box plot of per-case Dice (each case the mean over the arm's seeds) for every arm, in
    ``arms``' order, with the cases as points over the boxes and n under each arm."""
    plt = _plt()
    data = case_means(cases, arms)
    present = [a for a in arms if (data["arm"] == a).any()]
    if not present:
        return fig_note("no per-case Dice values", base)
    values = [data[data["arm"] == a]["dice"].dropna().to_numpy(float) for a in present]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * len(present) + 1.5), 3.6))
    box = ax.boxplot(values, widths=0.55, patch_artist=True, showfliers=False,
                     medianprops={"color": "0", "lw": 1.5})  # fmt: skip
    rng = np.random.default_rng(0)  # jitter only: the points' horizontal spread
    for i, (patch, v) in enumerate(zip(box["boxes"], values)):
        patch.set(facecolor=COLORS[i % len(COLORS)], alpha=0.35, hatch=HATCHES[i % len(HATCHES)])
        ax.plot(i + 1 + rng.uniform(-0.15, 0.15, v.size), v, ls="none", marker="o", ms=2.5,
                color=COLORS[i % len(COLORS)], alpha=0.8)  # fmt: skip
    ax.set_xticks(range(1, len(present) + 1), [f"{a}\n(n = {v.size})" for a, v in zip(present, values)],
                  rotation=45 if len(present) > 6 else 0, fontsize=7.5)  # fmt: skip
    ax.set(ylabel="per-case Dice (0–1)", ylim=(-0.03, 1.03))
    ax.set_title("Per-case Dice of every arm (test cases, mean over seeds; box: quartiles, "
                 "whiskers: 1.5 IQR)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return save(fig, base)


# ------------------------------------------------------------------ the thesis's figures


def fig_spl(
    base: str | Path, tau: float = 600.0, eps: float = 1e-5, cap: float = 10.0
) -> list[Path]:
    """Fig. 3.1: (a) size weight exp(-V_g/tau), (b) relative error, (c) clamped loss, (d) gradient
    magnitude w.r.t. V_p before the cap (lines) and with it (markers), for several V_g."""
    from sizepenalty.losses import spl_curves

    plt = _plt()
    vg_axis = np.linspace(1, 5 * tau, 400)
    ratio = np.linspace(0.0, 4.0, 401)
    sizes = (20.0, 100.0, 600.0, 2000.0)
    curves = spl_curves(sizes, ratio, tau, eps, cap)
    weight = spl_curves(vg_axis, [1.0], tau, eps, cap)["weight"][:, 0]
    fig, ax = plt.subplots(2, 2, figsize=(8, 6))
    ax[0, 0].plot(vg_axis, weight, color=COLORS[0], lw=1.5)
    ax[0, 0].axvline(tau, color="0.4", ls=":", lw=1)
    ax[0, 0].annotate(f"τ = {tau:g}", (tau, 0.9), xytext=(4, 0), textcoords="offset points",
                      fontsize=7)  # fmt: skip
    ax[0, 0].set(title="(a) size weight exp(−V_g/τ)", xlabel="reference volume V_g (voxels)",
                 ylabel="weight (unitless)")  # fmt: skip
    for i, vg in enumerate(sizes):
        st = series_style(i)
        style = dict(color=st["color"], ls=st["ls"], lw=1.5, label=f"V_g = {vg:g} voxels")
        ax[0, 1].plot(ratio, curves["rel_error"][i], **style)
        ax[1, 0].plot(ratio, curves["loss"][i], **style)
        ax[1, 1].semilogy(ratio, np.abs(curves["grad_precap"][i]) + 1e-12, **style)
        ax[1, 1].semilogy(ratio, np.abs(curves["grad"][i]) + 1e-12, color=st["color"], ls="none",
                          marker=st["marker"], markevery=40, ms=3)  # fmt: skip
    ax[0, 1].set(title="(b) relative error |V_p−V_g|/(V_g+ε)", xlabel="V_p / V_g (ratio)",
                 ylabel="relative error (× V_g)")  # fmt: skip
    ax[1, 0].axhline(cap, color="0.4", ls=":", lw=1)
    ax[1, 0].set(title=f"(c) SPL, clamped at c = {cap:g}", xlabel="V_p / V_g (ratio)",
                 ylabel="loss (unitless)")  # fmt: skip
    ax[1, 1].set(title="(d) |∂SPL/∂V_p|: lines pre-cap, markers capped", xlabel="V_p / V_g (ratio)",
                 ylabel="gradient magnitude (1/voxel)", ylim=(1e-6, None))  # fmt: skip
    ax[0, 1].legend(frameon=False)
    fig.suptitle(f"Size Penalty Loss components (τ = {tau:g} voxels, ε = {eps:g})")
    fig.tight_layout()
    return save(fig, base)


def relative_improvement(base: float, cand: float, label: str) -> float:
    """(cand - base)/|base| for higher-is-better metrics, (base - cand)/|base| for lower-is-better
    ones (so positive always means the candidate is better); nan when the baseline is 0 or nan."""
    if not np.isfinite(base) or not np.isfinite(cand) or base == 0:
        return float("nan")
    gain = (base - cand) if label in LOWER_IS_BETTER else (cand - base)
    return float(gain / abs(base))


def relative_interval(base: float, lo: float, hi: float, label: str) -> tuple[float, float]:
    """The CI ``[lo, hi]`` of a paired difference (candidate − baseline) as a relative
    improvement of ``base`` (the sign of :func:`relative_improvement`; the baseline mean taken
    as fixed); NaN when the baseline is 0 or any value is NaN."""
    if not all(np.isfinite(v) for v in (base, lo, hi)) or base == 0:
        return float("nan"), float("nan")
    if label in LOWER_IS_BETTER:
        lo, hi = -hi, -lo
    return float(lo / abs(base)), float(hi / abs(base))


def _improvement_groups(pairs: pd.DataFrame, strata: pd.DataFrame, b: str, c: str):
    """(name, n cases, metric -> (baseline, candidate, CI low, CI high)) for all cases, then each
    stratum of one pair."""
    mine = pairs[(pairs["Baseline"] == b) & (pairs["Candidate"] == c)]
    groups = [("all cases", int(mine["n cases"].max()) if len(mine) else 0,
               {r["Metric"]: (r["Baseline value"], r["Candidate value"], r["CI low"], r["CI high"])
                for _, r in mine.iterrows()})]  # fmt: skip
    sub = strata[(strata["Baseline"] == b) & (strata["Candidate"] == c)] if len(strata) else strata
    for stratum, rows in (sub.groupby("Stratum", sort=False) if len(sub) else ()):
        groups.append((str(stratum), int(rows["n cases"].max()),
                       {r["Metric"]: (r["Baseline mean"], r["Candidate mean"], r["CI low"], r["CI high"])
                        for _, r in rows.iterrows()}))  # fmt: skip
    return groups


def fig_improvement(
    pairs: pd.DataFrame,
    strata: pd.DataFrame,
    base: str | Path,
    metrics: Sequence[str] = ("Dice", "RVE", "PQ", "SQ", "RQ", "ASSD"),
) -> list[Path]:
    """Fig. 5.1: one panel per (baseline, candidate); grouped bars per metric (labels, default the
    thesis's: the bold columns of its Tables 5.1-5.3, RVE and ASSD as relative reductions), one
    bar per size stratum (all cases first), coloured and hatched so strata stay apart in
    greyscale. Whiskers: the paired bootstrap 95 % CI of the difference relative to the baseline
    mean (:func:`relative_interval`). Strata with fewer than :data:`FEW_CASES` paired cases are
    drawn pale and labelled "n < 5". ``pairs`` is the pair table (Table 5.2 analogue),
    ``strata`` the stratum statistics (baseline and candidate means per pair, stratum and
    metric)."""
    plt = _plt()
    metrics = list(metrics)
    # No configured pair: an empty panel (aggregate's pair table then has no columns at all).
    keys = list(dict.fromkeys(zip(pairs["Baseline"], pairs["Candidate"]))) if len(pairs) else []
    fig, axes = plt.subplots(
        1, max(len(keys), 1), figsize=(5.8 * max(len(keys), 1), 3.8), squeeze=False
    )
    for ax, (b, c) in zip(axes[0], keys):
        groups = _improvement_groups(pairs, strata, b, c)
        width = 0.8 / len(groups)
        x = np.arange(len(metrics))
        for i, (name, n, values) in enumerate(groups):
            nan4 = (np.nan,) * 4
            vals = np.array([100 * relative_improvement(*values.get(m, nan4)[:2], m) for m in metrics])
            ci = np.array([relative_interval(values.get(m, nan4)[0], *values.get(m, nan4)[2:], m)
                           for m in metrics]) * 100  # fmt: skip
            few = n < FEW_CASES
            at = x + (i - (len(groups) - 1) / 2) * width
            label = f"{name} (n = {n}" + (f" < {FEW_CASES}: unreliable)" if few else ")")
            ax.bar(at, np.nan_to_num(vals), width, color=COLORS[i % len(COLORS)],
                   alpha=0.35 if few else 0.85, edgecolor="0", hatch=HATCHES[i % len(HATCHES)],
                   lw=0.6, label=label)  # fmt: skip
            ok = np.isfinite(ci).all(axis=1) & np.isfinite(vals)
            if ok.any():  # the CI as drawn from its ends (it need not hold the fold-mean bar)
                ax.vlines(at[ok], ci[ok, 0], ci[ok, 1], colors="0", lw=0.9)
                for end in (0, 1):
                    ax.hlines(ci[ok, end], at[ok] - width / 5, at[ok] + width / 5, colors="0", lw=0.9)
            if few:  # the label beyond the bar's end and its whisker
                for xi, v, (lo, hi) in zip(at, np.nan_to_num(vals), np.nan_to_num(ci)):
                    end = max(v, hi) if v >= 0 else min(v, lo)
                    ax.annotate(f"n<{FEW_CASES}", (xi, end), xytext=(0, 2 if v >= 0 else -8),
                                textcoords="offset points", ha="center", fontsize=5.5)  # fmt: skip
        ax.axhline(0, color="0", lw=0.8)
        ax.set_xticks(
            x, [f"{m}\n(reduction)" if m in LOWER_IS_BETTER else m for m in metrics], fontsize=7
        )
        ax.set(title=f"{c} vs {b}", ylabel="relative improvement (%)")
        ax.legend(frameon=False, fontsize=7)
    fig.suptitle("Relative improvement of the candidate over the baseline (positive = better; "
                 "whiskers: paired 95 % CI relative to the baseline mean)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return save(fig, base)


def fig_curves(run_dirs: dict[str, list[Path]], base: str | Path) -> list[Path]:
    """Fig. 5.2: per arm (label -> its runs' folders), the loss terms per epoch (mean over the
    runs, folds and seeds, that have an epoch log) and the validation Dice on a second axis."""
    from matplotlib.ticker import MaxNLocator

    from sizepenalty.combos import LETTERS

    plt = _plt()
    n = max(len(run_dirs), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, (label, dirs) in zip(axes[0], run_dirs.items()):
        logs = [pd.read_csv(d / "epochs.csv") for d in dirs if (d / "epochs.csv").exists()]
        ax.set(title=f"{label} ({len(logs)} run(s))", xlabel="epoch", ylabel="loss (unitless)")
        if not logs:
            continue
        mean = pd.concat(logs).groupby("epoch").mean(numeric_only=True).reset_index()
        terms = ["loss"] + [t for t in LETTERS if t in mean and mean[t].abs().sum() > 0]
        for i, term in enumerate(terms):
            st = series_style(i)
            ax.plot(mean["epoch"], mean[term], color=st["color"], ls=st["ls"], lw=1.4,
                    label="total" if term == "loss" else term)  # fmt: skip
        val = mean.dropna(subset=["val_dice"])
        ax2 = ax.twinx()
        ax2.plot(
            val["epoch"], val["val_dice"], color="0", marker="o", ms=3, ls="none", label="val Dice"
        )
        ax2.set(ylabel="validation Dice (0–1)", ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.grid(False)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, frameon=False, fontsize=7)
    fig.suptitle("Training curves (mean over folds and seeds)")
    fig.tight_layout()
    return save(fig, base)


def fig_tau_ablation(
    ablation: pd.DataFrame,
    taus: dict[str, float],
    base: str | Path,
    metrics: Sequence[str] = ("Dice", "RVE", "PQ"),
) -> list[Path]:
    """The τ ablation: per size stratum (rows) and metric (columns), each combination's mean
    (over test cases and seeds) against τ (log axis): its main arm and every variant that sets
    ``losses.tau``; a variant's bar is its paired 95 % CI of the effect against the main arm,
    placed at the main arm's mean plus the effect. ``taus``: arm label -> τ in voxels (the mean
    estimated τ for ``tau: auto``)."""
    plt = _plt()
    rows = ablation[ablation["Setting"].astype(str).str.contains("losses.tau")] if len(ablation) else ablation
    if rows.empty:
        return fig_note("no variant sets losses.tau: no τ ablation in this study", base)
    metrics = [m for m in metrics if m in set(rows["Metric"])] or list(dict.fromkeys(rows["Metric"]))[:3]
    strata = list(dict.fromkeys(rows["Stratum"]))
    fig, axes = plt.subplots(len(strata), len(metrics), figsize=(3.6 * len(metrics), 2.6 * len(strata)),
                             squeeze=False)  # fmt: skip
    for i, stratum in enumerate(strata):
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            sub = rows[(rows["Stratum"] == stratum) & (rows["Metric"] == metric)]
            for k, (combo, g) in enumerate(sub.groupby("Baseline", sort=False)):
                main = float(g["Baseline mean"].iloc[0])
                pts = sorted([(taus[combo], main, main, main)] + [
                    (taus[c], cm, main + lo, main + hi) for c, cm, lo, hi in
                    zip(g["Candidate"], g["Candidate mean"], g["CI low"], g["CI high"])
                ])  # fmt: skip
                x, y, lo, hi = (np.array(v, dtype=float) for v in zip(*pts))
                st = series_style(k)
                ax.errorbar(x, y, yerr=[y - lo, hi - y], color=st["color"], ls=st["ls"],
                            marker=st["marker"], ms=4, lw=1.2, capsize=2, label=combo)  # fmt: skip
                ax.plot([taus[combo]], [main], marker="*", ms=9, color=st["color"], ls="none")
            n = int(sub["n cases"].max()) if len(sub) else 0
            ax.set_xscale("log")
            plain_log(ax, "x")
            ax.set(title=f"{metric}, {stratum} (n={n})", xlabel="τ (voxels)", ylabel=metric)
            if i == 0 and j == 0:
                ax.legend(frameon=False, fontsize=7)
    fig.suptitle("τ ablation: mean over test cases and seeds (star = main arm; bars: paired 95 % CI vs it)")
    fig.tight_layout()
    return save(fig, base)


# ------------------------------------------------------------------ case galleries (Figs. 5.3/5.4)


def pick_gallery_cases(
    cases: pd.DataFrame, a: str, b: str, strata: Sequence, per_stratum: int = 3
) -> pd.DataFrame:
    """Per size stratum (``strata``: :class:`~sizepenalty.strata.Stratum`, by reference volume),
    the ``per_stratum`` test cases where arms ``a`` and ``b`` differ most in Dice, each arm's first
    seed (the lowest: the model whose masks the gallery shows). Rows in stratum order, largest
    difference first, with ``stratum``, ``fold``, ``case_id``, ``ref_ml`` and both seeds, Dice
    and predicted volumes (suffixes ``_a``/``_b``); empty when the two share no test case."""
    cols = ["fold", "case_id", "ref_ml", "seed", "dice", "vol_pred_ml"]

    def first_seed(arm: str) -> pd.DataFrame:
        mine = cases[cases["arm"] == arm]
        return mine[mine["seed"] == mine["seed"].min()][cols]

    both = first_seed(a).merge(first_seed(b).drop(columns="ref_ml"), on=["fold", "case_id"],
                               suffixes=("_a", "_b"))  # fmt: skip
    both = both.assign(gap=(both["dice_a"] - both["dice_b"]).abs())
    picked = []
    for stratum in strata:
        v = both["ref_ml"].astype(float)
        inside = both[(v >= stratum.lo_ml) & (v < stratum.hi_ml)]
        top = inside.sort_values(["gap", "case_id"], ascending=[False, True], kind="stable")
        picked.append(top.head(per_stratum).assign(stratum=stratum.label))
    out = pd.concat(picked, ignore_index=True) if picked else both.iloc[:0].assign(stratum="")
    return out.drop(columns="gap")


def gallery_slice(ref: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> int:
    """The axial slice that shows a case best: most reference voxels plus voxels where the two
    predictions disagree (the middle slice when all three are empty)."""
    score = ref.sum(axis=(1, 2)) + (pred_a != pred_b).sum(axis=(1, 2))
    return int(np.argmax(score)) if score.any() else ref.shape[0] // 2


def _window(masks: Sequence[np.ndarray], shape: tuple[int, int], least: int = 24) -> tuple[slice, slice]:
    """A square-ish in-plane window around everything the masks hold (at least ``least`` voxels
    a side, clipped to the image), so small lesions are visible."""
    fg = np.argwhere(np.any(np.stack(masks), axis=0))
    if not fg.size:
        return slice(0, shape[0]), slice(0, shape[1])
    out = []
    for axis, size in enumerate(shape):
        lo, hi = int(fg[:, axis].min()), int(fg[:, axis].max()) + 1
        side = min(size, max(least, int((hi - lo) * 1.6) + 6))
        start = max(0, min(size - side, (lo + hi - side) // 2))
        out.append(slice(start, start + side))
    return out[0], out[1]


def _contour(ax, mask: np.ndarray, color: str, dashed: bool) -> None:
    """A mask's outline in ``color`` over a black under-stroke (visible on any grey)."""
    import matplotlib.patheffects as pe

    if not mask.any():
        return
    ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.4,
               linestyles="dashed" if dashed else "solid",
               path_effects=[pe.withStroke(linewidth=3.0, foreground="black")])  # fmt: skip


def fig_gallery(
    picked: pd.DataFrame,
    a: str,
    b: str,
    images: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    voxel_ml: dict[tuple[int, str], float],
    base: str | Path,
    strata: Sequence[str] = (),
) -> list[Path]:
    """Figs. 5.3/5.4 as a gallery: one row per size stratum, for each of its picked cases
    (:func:`pick_gallery_cases`) two panels, arm ``a``'s and arm ``b``'s prediction (dashed) with
    the reference (solid) on the case's DWI slice (:func:`gallery_slice`), zoomed to the lesions.
    ``images``: (fold, case_id) -> (DWI, reference, prediction of a, prediction of b), 3D;
    ``voxel_ml``: the grid's voxel volume per case; ``strata``: every stratum label, so a stratum
    without a case still gets its row."""
    from matplotlib.lines import Line2D

    plt = _plt()
    rows = list(dict.fromkeys([*strata, *picked["stratum"]]))
    if not rows:
        return fig_note(f"{a} vs {b}: no shared test case", base)
    per_row = max([int((picked["stratum"] == s).sum()) for s in rows] + [1])
    fig = plt.figure(figsize=(2.2 * 2 * per_row, 2.5 * len(rows) + 0.4), layout="constrained")
    subs = np.atleast_1d(fig.subfigures(len(rows), 1))
    for sub, stratum in zip(subs, rows):
        mine = picked[picked["stratum"] == stratum]
        axes = np.atleast_1d(sub.subplots(1, 2 * per_row))
        for ax in axes:
            ax.set_axis_off()
        sub.suptitle(f"{stratum}: the {len(mine)} test case(s) where {a} and {b} differ most in Dice"
                     if len(mine) else f"{stratum}: no shared test case", fontsize=9)  # fmt: skip
        for j, (_, r) in enumerate(mine.iterrows()):
            dwi, ref, pa, pb = images[(int(r["fold"]), str(r["case_id"]))]
            z = gallery_slice(ref, pa, pb)
            win = _window([ref[z], pa[z], pb[z]], ref.shape[1:])
            ml = voxel_ml[(int(r["fold"]), str(r["case_id"]))]
            for k, (arm, pred, suffix) in enumerate(((a, pa, "_a"), (b, pb, "_b"))):
                ax = axes[2 * j + k]
                ax.imshow(dwi[z][win], cmap="gray", origin="lower", interpolation="nearest")
                _contour(ax, ref[z][win], REFERENCE_COLOR, dashed=False)
                _contour(ax, pred[z][win], PREDICTION_COLOR, dashed=True)
                head = f"{r['case_id']} (fold {int(r['fold'])}, z {z}), ref {r['ref_ml']:.2f} mL\n" if k == 0 else "\n"
                ax.set_title(f"{head}{arm} (seed {int(r['seed' + suffix])}): Dice {r['dice' + suffix]:.2f}, "
                             f"{float(pred.sum()) * ml:.2f} mL", fontsize=6.5, loc="left")  # fmt: skip
    handles = [Line2D([], [], color=REFERENCE_COLOR, lw=1.6, label="reference (solid)"),
               Line2D([], [], color=PREDICTION_COLOR, lw=1.6, ls="--", label="prediction (dashed)")]  # fmt: skip
    fig.legend(handles=handles, loc="upper center", ncol=2, frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, 1.0 + 0.25 / (2.5 * len(rows) + 0.4)))  # fmt: skip
    return save(fig, base)


def _read_table(tables: Path, name: str, optional: bool = False) -> pd.DataFrame:
    from sizepenalty.errors import InputError

    try:
        return pd.read_csv(tables / name)
    except pd.errors.EmptyDataError:
        if optional:  # aggregate writes an empty table when no pair is configured
            return pd.DataFrame()
        raise InputError(f"{tables / name}: empty") from None
    except (OSError, pd.errors.ParserError) as exc:
        raise InputError(f"{tables}: cannot read the aggregate tables: {exc}") from None


def _gallery(cfg, plan, layout, cases: pd.DataFrame, a: str, b: str, base: Path) -> list[Path]:
    """The case gallery of one pair of arms (:func:`fig_gallery`): per covering size stratum the
    test cases where the two differ most (each arm's first seed), from the probability maps and
    thresholds its runs used (an external method's: its mask)."""
    import json

    from sizepenalty.data.preprocess import load_preprocessed
    from sizepenalty.evaluate import postprocess
    from sizepenalty.runs import Arm, RunKey
    from sizepenalty.strata import size_bins

    strata = size_bins(cfg.metrics.strata_ml)  # the covering bins (thesis: < 5 mL, ≥ 5 mL)
    picked = pick_gallery_cases(cases, a, b, strata)
    images, voxel_ml = {}, {}
    for _, row in picked.iterrows():
        fold, cid = int(row["fold"]), str(row["case_id"])
        pre = load_preprocessed(layout.preprocessed_case(cid))
        preds = []
        for label, suffix in ((a, "_a"), (b, "_b")):
            if label in cfg.methods:  # an external method's mask, brought to the preprocessed grid
                from sizepenalty.methods import grid_prediction

                preds.append(grid_prediction(cfg, label, pre))
                continue
            arm = Arm.parse(label)
            key = RunKey(arm.combo, arm.variant, int(row[f"seed{suffix}"]), fold)
            t = json.loads(layout.threshold(plan.canonical(key, "evaluate")).read_text())
            probs = layout.probs(plan.canonical(key, "infer")) / "test" / f"{cid}.npz"
            prob = np.load(probs)["prob"]
            preds.append(postprocess(prob.astype(np.float32), t["threshold"], cfg))
        images[(fold, cid)] = (pre.image[0], pre.mask > 0, preds[0], preds[1])
        voxel_ml[(fold, cid)] = pre.voxel_ml
    return fig_gallery(picked, a, b, images, voxel_ml, base, [s.label for s in strata])


def _arm_taus(cfg, plan, layout) -> dict[str, float]:
    """τ (voxels) of every arm with a size term: its configured value, or with ``tau: auto`` the
    mean of the τ its trainings estimated (train_meta.json)."""
    import json

    out = {}
    for arm in plan.arms:
        tau = cfg.variants[arm.variant].set.get("losses.tau", cfg.losses.size["tau"]) \
            if arm.variant != "main" else cfg.losses.size["tau"]  # fmt: skip
        if tau == "auto":
            found = []
            for key in plan.runs(arm):
                meta = layout.run_dir(plan.canonical(key, "train")) / "train_meta.json"
                if meta.exists() and json.loads(meta.read_text()).get("tau") is not None:
                    found.append(float(json.loads(meta.read_text())["tau"]))
            tau = float(np.mean(found)) if found else float("nan")
        out[arm.label] = float(tau)
    return out


def run_figures(cfg, plan, out_dir: str | Path) -> list[Path]:
    """The figures stage: every figure :func:`sizepenalty.paths.figure_names` declares (PNG +
    PDF), from the study folder of the run plan ``plan`` (tables, run folders, probability maps,
    thresholds, preprocessed cases)."""
    from sizepenalty.metrics import get_profile
    from sizepenalty.paths import FIGURES, StudyLayout, figure_names, gallery_figure
    from sizepenalty.report.aggregate import compared_arms
    from sizepenalty.runs import arm_label

    layout = StudyLayout(plan.cfg.study_dir)
    out = Path(out_dir)
    cases = _read_table(layout.tables, "per_case_metrics.csv")
    pairs = _read_table(layout.tables, "table_pairs.csv", optional=True)
    strata = _read_table(layout.tables, "table_strata_stats.csv", optional=True)
    seed_table = _read_table(layout.tables, "table_seeds.csv", optional=True)
    compared = compared_arms(cfg.report.pairs)
    made = fig_forest(seed_table, out / FIGURES["forest"])
    made += fig_volume(cases, compared, out / FIGURES["volume"])
    made += fig_bland_altman(cases, compared, out / FIGURES["bland_altman"])
    made += fig_case_metrics(cases, compared, cfg.metrics.strata_ml, out / FIGURES["case_metrics"])
    made += fig_dice_box(cases, [a.label for a in plan.arms], out / FIGURES["dice_box"])
    size = cfg.losses.size
    made += fig_spl(out / FIGURES["spl"], cfg.losses.nominal_tau, size["eps"], size["cap"])
    improvement = [label for label, _, _ in get_profile(cfg.metrics.profile).columns("improvement")]
    made += fig_improvement(pairs, strata, out / FIGURES["improvement"], improvement)
    curves = {}
    for label in map(arm_label, cfg.report.curves):
        runs = plan.runs(plan.arm(label))
        curves[label] = [layout.run_dir(plan.canonical(k, "train")) for k in runs]
    made += fig_curves(curves, out / FIGURES["curves"])
    ablation = _read_table(layout.tables, "table_ablation.csv", optional=True)
    made += fig_tau_ablation(ablation, _arm_taus(cfg, plan, layout), out / FIGURES["tau_ablation"])
    for i, (a, b) in enumerate(cfg.report.pairs, start=1):
        made += _gallery(cfg, plan, layout, cases, arm_label(a), arm_label(b), out / gallery_figure(i))
    expected = {f"{n}.{e}" for n in figure_names(len(cfg.report.pairs)) for e in ("png", "pdf")}
    if {p.name for p in made} != expected:  # the rule's outputs are paths.figure_names
        raise RuntimeError(f"figures: wrote {sorted(p.name for p in made)}, declared {sorted(expected)}")
    return made
