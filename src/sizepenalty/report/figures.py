"""The thesis's figures, regenerated from a study's outputs (PNG + PDF, readable in grayscale).

* Fig. 3.1 :func:`fig_spl` — SPL components from the package's own loss (:func:`spl_curves`).
* Fig. 5.1 :func:`fig_improvement` — relative improvement of candidate vs baseline, per stratum.
* Fig. 5.2 :func:`fig_curves` — training curves (loss terms, validation Dice) from epochs.csv.
* Figs. 5.3/5.4 :func:`fig_overlay` — one DWI slice through a small lesion with the reference and
  two combinations' predictions, chosen where the two differ most.

Styles never rely on colour alone: line styles, markers and hatches separate the series.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sizepenalty.metrics import METRICS

GRAYS = ("0.0", "0.35", "0.6", "0.8")
LINES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D")
HATCHES = ("", "//", "..", "xx")
# Metrics where a lower value is better: their improvement is plotted as a relative reduction.
LOWER_IS_BETTER = frozenset(m.label for m in METRICS.values() if not m.higher)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"font.size": 9, "axes.grid": True, "grid.color": "0.9", "savefig.dpi": 150}
    )
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


def fig_spl(
    base: str | Path, tau: float = 600.0, eps: float = 1e-5, cap: float = 10.0
) -> list[Path]:
    """Fig. 3.1: (a) size weight exp(-V_g/tau), (b) relative error, (c) clamped loss, (d) gradient
    magnitude w.r.t. V_p before the cap (solid) and with it (dashed), for several V_g."""
    from sizepenalty.losses import spl_curves

    plt = _plt()
    vg_axis = np.linspace(1, 5 * tau, 400)
    ratio = np.linspace(0.0, 4.0, 401)
    sizes = (20.0, 100.0, 600.0, 2000.0)
    curves = spl_curves(sizes, ratio, tau, eps, cap)
    weight = spl_curves(vg_axis, [1.0], tau, eps, cap)["weight"][:, 0]
    fig, ax = plt.subplots(2, 2, figsize=(8, 6))
    ax[0, 0].plot(vg_axis, weight, color="0", lw=1.5)
    ax[0, 0].axvline(tau, color="0.5", ls=":", lw=1)
    ax[0, 0].set(title="(a) size weight exp(-V_g/τ)", xlabel="V_g (voxels)", ylabel="weight")
    for i, vg in enumerate(sizes):
        style = dict(color=GRAYS[i], ls=LINES[i], lw=1.5, label=f"V_g = {vg:g}")
        ax[0, 1].plot(ratio, curves["rel_error"][i], **style)
        ax[1, 0].plot(ratio, curves["loss"][i], **style)
        ax[1, 1].semilogy(ratio, np.abs(curves["grad_precap"][i]) + 1e-12, **style)
        ax[1, 1].semilogy(ratio, np.abs(curves["grad"][i]) + 1e-12, color=GRAYS[i], ls="none",
                          marker=MARKERS[i], markevery=40, ms=3)  # fmt: skip
    ax[0, 1].set(
        title="(b) relative error |V_p-V_g|/(V_g+ε)", xlabel="V_p / V_g", ylabel="relative error"
    )
    ax[1, 0].axhline(cap, color="0.5", ls=":", lw=1)
    ax[1, 0].set(title=f"(c) SPL, clamped at c = {cap:g}", xlabel="V_p / V_g", ylabel="loss")
    ax[1, 1].set(title="(d) |∂SPL/∂V_p|: lines pre-cap, markers capped", xlabel="V_p / V_g",
                 ylabel="gradient magnitude", ylim=(1e-6, None))  # fmt: skip
    ax[0, 1].legend(frameon=False)
    fig.suptitle(f"Size Penalty Loss components (τ = {tau:g} voxels, ε = {eps:g})")
    fig.tight_layout()
    return save(fig, base)


def fig_note(text: str, base: str | Path) -> list[Path]:
    """A figure that only says why the expected one could not be drawn (keeps outputs complete)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.text(0.5, 0.5, text, ha="center")
    ax.set_axis_off()
    return save(fig, base)


def relative_improvement(base: float, cand: float, label: str) -> float:
    """(cand - base)/|base| for higher-is-better metrics, (base - cand)/|base| for lower-is-better
    ones (so positive always means the candidate is better); nan when the baseline is 0 or nan."""
    if not np.isfinite(base) or not np.isfinite(cand) or base == 0:
        return float("nan")
    gain = (base - cand) if label in LOWER_IS_BETTER else (cand - base)
    return float(gain / abs(base))


def fig_improvement(
    pairs: pd.DataFrame,
    strata: pd.DataFrame,
    base: str | Path,
    metrics: Sequence[str] = ("Dice", "RVE", "PQ", "SQ", "RQ", "ASSD"),
) -> list[Path]:
    """Fig. 5.1: one panel per (baseline, candidate); grouped bars per metric (labels, default the
    thesis's: the bold columns of its Tables 5.1-5.3, RVE and ASSD as relative reductions), one
    bar per size stratum (all cases first), hatched so strata stay apart in grayscale.
    ``pairs`` is the pair table (Table 5.2 analogue), ``strata`` the stratum statistics
    (baseline and candidate means per pair, stratum and metric)."""
    plt = _plt()
    metrics = list(metrics)
    # No configured pair: an empty panel (aggregate's pair table then has no columns at all).
    keys = list(dict.fromkeys(zip(pairs["Baseline"], pairs["Candidate"]))) if len(pairs) else []
    fig, axes = plt.subplots(
        1, max(len(keys), 1), figsize=(5.5 * max(len(keys), 1), 3.6), squeeze=False
    )
    for ax, (b, c) in zip(axes[0], keys):
        groups = [("all cases", {r["Metric"]: (r["Baseline value"], r["Candidate value"])
                                 for _, r in pairs[(pairs["Baseline"] == b) & (pairs["Candidate"] == c)].iterrows()})]  # fmt: skip
        sub = strata[(strata["Baseline"] == b) & (strata["Candidate"] == c)] if len(strata) else strata
        for stratum, rows in (sub.groupby("Stratum", sort=False) if len(sub) else ()):
            n = int(rows["n cases"].max())
            groups.append((f"{stratum} (n={n})", {r["Metric"]: (r["Baseline mean"], r["Candidate mean"])
                                                  for _, r in rows.iterrows()}))  # fmt: skip
        width = 0.8 / len(groups)
        x = np.arange(len(metrics))
        for i, (name, values) in enumerate(groups):
            vals = [
                100 * relative_improvement(*values.get(m, (np.nan, np.nan)), m) for m in metrics
            ]
            ax.bar(x + (i - (len(groups) - 1) / 2) * width, np.nan_to_num(vals), width,
                   color=GRAYS[i % 4], edgecolor="0", hatch=HATCHES[i % 4], lw=0.6, label=name)  # fmt: skip
        ax.axhline(0, color="0", lw=0.8)
        ax.set_xticks(
            x, [f"{m}\n(reduction)" if m in LOWER_IS_BETTER else m for m in metrics], fontsize=7
        )
        ax.set(title=f"{c} vs {b}", ylabel="relative improvement (%)")
        ax.legend(frameon=False, fontsize=7)
    fig.suptitle("Relative improvement of the candidate over the baseline (positive = better)")
    fig.tight_layout()
    return save(fig, base)


def fig_curves(run_dirs: dict[str, list[Path]], base: str | Path) -> list[Path]:
    """Fig. 5.2: per arm (label -> its runs' folders), the loss terms per epoch (mean over the
    runs, folds and seeds, that have an epoch log) and the validation Dice on a second axis."""
    from sizepenalty.combos import LETTERS

    plt = _plt()
    n = max(len(run_dirs), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, (label, dirs) in zip(axes[0], run_dirs.items()):
        logs = [pd.read_csv(d / "epochs.csv") for d in dirs if (d / "epochs.csv").exists()]
        ax.set(title=f"{label} ({len(logs)} run(s))", xlabel="epoch", ylabel="loss")
        if not logs:
            continue
        mean = pd.concat(logs).groupby("epoch").mean(numeric_only=True).reset_index()
        terms = ["loss"] + [t for t in LETTERS if t in mean and mean[t].abs().sum() > 0]
        for i, term in enumerate(terms):
            ax.plot(mean["epoch"], mean[term], color=GRAYS[i % 4], ls=LINES[i % 4], lw=1.4,
                    label="total" if term == "loss" else term)  # fmt: skip
        val = mean.dropna(subset=["val_dice"])
        ax2 = ax.twinx()
        ax2.plot(
            val["epoch"], val["val_dice"], color="0", marker="o", ms=3, ls="none", label="val Dice"
        )
        ax2.set(ylabel="validation Dice", ylim=(0, 1))
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
                ax.errorbar(x, y, yerr=[y - lo, hi - y], color=GRAYS[k % 4], ls=LINES[k % 4],
                            marker=MARKERS[k % 4], ms=4, lw=1.2, capsize=2, label=combo)  # fmt: skip
                ax.plot([taus[combo]], [main], marker="*", ms=9, color=GRAYS[k % 4], ls="none")
            n = int(sub["n cases"].max()) if len(sub) else 0
            ax.set_xscale("log")
            ax.set(title=f"{metric}, {stratum} (n={n})", xlabel="τ (voxels)", ylabel=metric)
            if i == 0 and j == 0:
                ax.legend(frameon=False, fontsize=7)
    fig.suptitle("τ ablation: mean over test cases and seeds (star = main arm; bars: paired 95 % CI vs it)")
    fig.tight_layout()
    return save(fig, base)


def pick_overlay_case(
    cases: pd.DataFrame, a: str, b: str, small_ml: float = 5.0
) -> pd.Series | None:
    """The test case (with a reference lesion below ``small_ml``) where arms ``a`` and ``b``
    differ most in Dice, each arm's first seed (the lowest) shown; ``None`` if the two share no
    such case. Returns a row with ``fold``, ``case_id``, ``ref_ml``, both seeds and both
    Dice/volume values (suffixes ``_a``/``_b``)."""
    cols = ["fold", "case_id", "ref_ml", "seed", "dice", "vol_pred_ml"]

    def first_seed(arm: str) -> pd.DataFrame:
        mine = cases[cases["arm"] == arm]
        return mine[mine["seed"] == mine["seed"].min()][cols]

    x = first_seed(a)
    y = first_seed(b).drop(columns="ref_ml")
    both = x.merge(y, on=["fold", "case_id"], suffixes=("_a", "_b"))
    both = both[(both["ref_ml"] > 0) & (both["ref_ml"] < small_ml)]
    if both.empty:
        return None
    gap = (both["dice_a"] - both["dice_b"]).abs()
    return both.loc[gap.idxmax()]


def fig_overlay(
    row: pd.Series,
    a: str,
    b: str,
    dwi: np.ndarray,
    ref: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    voxel_ml: float,
    base: str | Path,
) -> list[Path]:
    """Figs. 5.3/5.4: the axial DWI slice through the centre of the case's smallest reference
    lesion; reference contour solid, predictions dashed, annotated with volumes (mL) and Dice."""
    import cc3d

    plt = _plt()
    labels = cc3d.connected_components(ref.astype(np.uint8), connectivity=26)
    sizes = np.bincount(labels.ravel())[1:]
    target = int(np.argmin(sizes)) + 1 if sizes.size else 0
    z = int(np.round(np.argwhere(labels == target)[:, 0].mean())) if target else ref.shape[0] // 2
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    panels = [("reference", None, None), (a, pred_a, row["dice_a"]), (b, pred_b, row["dice_b"])]
    for ax, (name, pred, dice) in zip(axes, panels):
        ax.imshow(dwi[z], cmap="gray", origin="lower")
        ax.contour(ref[z].astype(float), levels=[0.5], colors="white", linewidths=1.2)
        title = f"reference: {row['ref_ml']:.2f} mL"
        if pred is not None:
            for color, width in (("black", 1.4), ("white", 0.6)):  # a dashed line on any gray
                ax.contour(pred[z].astype(float), levels=[0.5], colors=color, linewidths=width,
                           linestyles="dashed")  # fmt: skip
            vol = float(pred.sum()) * voxel_ml
            title = f"{name}: {vol:.2f} mL, Dice {dice:.3f}"
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(
        f"{row['case_id']} (fold {int(row['fold'])}), slice {z}: reference solid, prediction dashed"
    )
    fig.tight_layout()
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


def _overlay(cfg, plan, layout, cases: pd.DataFrame, a: str, b: str, base: Path) -> list[Path]:
    """Figs. 5.3/5.4 for one pair of arms: the small-lesion test case where the two differ most
    (each arm's first seed), from the probability maps and thresholds its runs used (an
    external method's: its mask)."""
    import json

    from sizepenalty.data.preprocess import load_preprocessed
    from sizepenalty.evaluate import postprocess
    from sizepenalty.runs import Arm, RunKey

    small = cfg.metrics.strata_ml[0]  # the smallest covering bin (thesis: < 5 mL)
    row = pick_overlay_case(cases, a, b, small)
    if row is None:
        return fig_note(f"{a} vs {b}: no shared test case with a lesion below {small:g} mL", base)
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
    return fig_overlay(
        row, a, b, pre.image[0], pre.mask > 0, preds[0], preds[1], pre.voxel_ml, base
    )


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
    """The figures stage: Figs. 3.1, 5.1, 5.2 and one overlay per comparison pair (PNG + PDF),
    named as :func:`sizepenalty.paths.figure_names` declares, from the study folder of the
    run plan ``plan`` (tables, run folders, probability maps, thresholds, preprocessed cases)."""
    from sizepenalty.metrics import get_profile
    from sizepenalty.paths import StudyLayout, figure_names
    from sizepenalty.runs import arm_label

    layout = StudyLayout(plan.cfg.study_dir)
    out = Path(out_dir)
    names = figure_names(len(cfg.report.pairs))
    cases = _read_table(layout.tables, "per_case_metrics.csv")
    pairs = _read_table(layout.tables, "table_pairs.csv", optional=True)
    strata = _read_table(layout.tables, "table_strata_stats.csv", optional=True)
    size = cfg.losses.size
    made = fig_spl(out / names[0], cfg.losses.nominal_tau, size["eps"], size["cap"])
    improvement = [label for label, _, _ in get_profile(cfg.metrics.profile).columns("improvement")]
    made += fig_improvement(pairs, strata, out / names[1], improvement)
    curves = {}
    for label in map(arm_label, cfg.report.curves):
        runs = plan.runs(plan.arm(label))
        curves[label] = [layout.run_dir(plan.canonical(k, "train")) for k in runs]
    made += fig_curves(curves, out / names[2])
    ablation = _read_table(layout.tables, "table_ablation.csv", optional=True)
    made += fig_tau_ablation(ablation, _arm_taus(cfg, plan, layout), out / names[3])
    for name, (a, b) in zip(names[4:], cfg.report.pairs):
        made += _overlay(cfg, plan, layout, cases, arm_label(a), arm_label(b), out / name)
    return made
