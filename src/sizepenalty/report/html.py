"""One self-contained HTML report per study: everything inline (figures as data URIs, no scripts,
no external stylesheets), so it opens offline and can be mailed or archived as a single file."""

from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from sizepenalty import __version__
from sizepenalty.config import StudyConfig
from sizepenalty.metrics.instances import PANOPTICA_RULE

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#111;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#444}
.note{background:#f7f7f7;border-left:4px solid #888;padding:.5em 1em;font-size:.9em}
code,pre{background:#f4f4f4;font-size:.85em}pre{padding:.6em;overflow-x:auto}
"""

FIGURES = (
    (
        "fig_3_1_spl",
        "Fig. 3.1 — Size Penalty Loss components, computed with the package's own loss.",
    ),
    (
        "fig_5_1_improvement",
        "Fig. 5.1 — relative improvement of each candidate over its baseline, by size stratum.",
    ),
    (
        "fig_5_2_curves",
        "Fig. 5.2 — training curves (loss terms and validation Dice, mean over folds).",
    ),
)


def _read(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError):
        return None


def _table(frame: pd.DataFrame | None, digits: int = 4, escape: bool = True) -> str:
    """``escape=False`` only for cells this module built itself (the bold best values)."""
    if frame is None or frame.empty:
        return "<p><em>(empty)</em></p>"
    return frame.to_html(
        index=False, float_format=lambda v: f"{v:.{digits}f}", na_rep="–", border=0, escape=escape
    )


def _mean_sd(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """Collapse ``X`` and ``X_sd`` into "mean ± sd" strings, best value per column in bold."""
    from sizepenalty.report.tables import mean_sd_cells

    rows = mean_sd_cells(frame, columns, lambda c: f"<b>{c}</b>", missing="–")
    return pd.DataFrame([[loss, *cells] for loss, cells in rows],
                        columns=["Loss", *(label for label, _, _ in columns)])  # fmt: skip


def _figure(path: Path, caption: str) -> str:
    if not path.exists():
        return f"<p><em>missing figure {html.escape(path.name)}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


def _config_summary(cfg: StudyConfig) -> pd.DataFrame:
    tc, mc, lc = cfg.train, cfg.model, cfg.losses
    rows = [
        ("Study", cfg.study), ("Dataset", f"{cfg.dataset.source} {cfg.dataset.path or ''}".strip()),
        ("Input shape (D×H×W)", "×".join(map(str, cfg.preprocess.shape))),
        ("Folds", f"{cfg.folds.k}-fold split, folds {', '.join(map(str, cfg.folds.trained))} trained and evaluated; "
                  f"validation {cfg.folds.val_fraction:g} of all cases (counts per fold under Dataset)"),
        ("Combinations", ", ".join(cfg.combo_names)),
        ("Arms and training seeds", _arms_text(cfg)),
        ("Seeds", f"cohort {cfg.seeds.cohort}, split {cfg.seeds.split}, bootstrap {cfg.seeds.bootstrap}; "
                  "each training seed is a training of its own on the same split"),
        ("Model", f"{'Attention ' if mc.attention else ''}U-Net{' + ASPP' if mc.aspp else ''}, base {mc.base_filters}, depth {mc.depth}, dropout {mc.dropout}"),
        ("Training", f"{tc.epochs} epochs, batch {tc.batch_size}, lr {tc.lr:g}, {tc.patches_per_volume} patches/volume"),
        ("SPL", f"τ = {lc.size['tau']}, ε = {lc.size['eps']:g}, cap = {lc.size['cap']:g}, λ_S = {lc.weights['size']:g} (alone {lc.weights['size_alone']:g}), warm-up {lc.size['size_warmup']:g}"),
        ("Inference", f"roi {'×'.join(map(str, cfg.infer.roi))}, overlap {cfg.infer.overlap:g}, TTA {cfg.infer.tta}"),
        ("Config hash", cfg.digest()), ("sizepenalty", __version__),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["Setting", "Value"])


def _arms_text(cfg: StudyConfig) -> str:
    """Every arm with its seeds, and each variant's settings."""
    from sizepenalty.runs import StudyPlan

    plan = StudyPlan(cfg)
    arms = "; ".join(f"{a.label} (seeds {', '.join(map(str, plan.seeds(a)))})" for a in plan.arms)
    variants = "; ".join(
        f"{v.name}: " + ", ".join(f"{k} = {x}" for k, x in v.set.items())
        + (f" ({v.description})" if v.description else "")
        for v in cfg.variants.values()
    )
    methods = "; ".join(f"{m.name} ({m.path}" + (f": {m.description}" if m.description else "")
                        + ")" for m in cfg.methods.values())  # fmt: skip
    return (arms + (f". Variants — {variants}" if variants else "")
            + (f". External methods (no training, variant external, seed 0) — {methods}" if methods else ""))  # fmt: skip


def seed_findings(table: pd.DataFrame | None) -> list[str]:
    """One sentence per compared pair (all test cases): each metric's seed-averaged effect with
    its two-level 95% CI and the verdict against the seed-to-seed spread."""
    if table is None or table.empty:
        return []
    rows = table[table["Stratum"] == "all cases"] if "Stratum" in table else table
    out = []
    for (base, cand), group in rows.groupby(["Baseline", "Candidate"], sort=False):
        seeds_b, seeds_c = int(group["seeds (baseline)"].min()), int(group["seeds (candidate)"].min())
        parts = []
        for _, r in group.iterrows():
            sd = r["Seed SD (effect)"]
            spread = f"seed SD of the effect {sd:.3f}" if sd == sd else "seed spread unknown"
            parts.append(f"{r['Metric']} {r['Effect']:+.3f} [{r['CI low']:+.3f}, "
                         f"{r['CI high']:+.3f}], {spread}: {r['Verdict']}")  # fmt: skip
        out.append(f"{cand} ({seeds_c} seed(s)) vs {base} ({seeds_b} seed(s)), all test cases: "
                   + "; ".join(parts) + ".")  # fmt: skip
    return out


EXTERNAL_MASKS = ("each method's masks are taken as final binary masks: no threshold, no "
                  "small-component removal")  # fmt: skip


def _post_processing(cfg: StudyConfig, folders: bool) -> str:
    ic = cfg.infer
    if folders:
        return EXTERNAL_MASKS
    text = (f"threshold chosen on validation from {list(ic.thresholds)}; components < "
            f"{ic.min_size} voxels removed ({ic.connectivity}-connectivity)")  # fmt: skip
    if cfg.methods:
        text += f"; external methods ({', '.join(cfg.methods)}): {EXTERNAL_MASKS}"
    return text


def _conventions(cfg: StudyConfig, folders: bool = False) -> str:
    """How the numbers below were computed, in the study's own settings (``folders``: of
    prediction folders, whose masks are final)."""
    mc = cfg.metrics
    cmp = ">" if mc.strict_threshold else "≥"
    is_panoptica = mc.instance_rule == PANOPTICA_RULE
    matching = (
        f"one-to-one, IoU {cmp} {mc.iou_threshold:g}, greedy by decreasing IoU"
        if mc.matching == "iou"
        else "one-to-one, any shared voxel"
    )
    rows = [
        ("Metric profile", mc.profile),
        ("Post-processing", _post_processing(cfg, folders)),
        ("Lesion instances", f"3D connected components, {mc.connectivity}-connectivity"),
        ("Matching (PQ, SQ, RQ)", matching + (" — panoptica 2.1's NaiveThresholdMatching default, as the thesis used" if is_panoptica else " — differs from panoptica's default")),
        ("FP / Missed / Det.", "the overlap rule, as the thesis counted them (ISLES 2022's lesion-wise rule): a reference lesion is found when any predicted voxel touches it; FP = predicted components touching no reference lesion; Det. = found / reference lesions. Its Table 5.1 row for S (Det. 0.78 with RQ 0) cannot come from IoU matching"),
        ("FP / Missed / Det. (IoU)", f"one-to-one IoU {cmp} {mc.iou_threshold:g} matching (extra table)"),
        ("Lesion F1", "ISLES 2022's: TP / (TP + (FP + FN)/2) under the overlap rule, 1 when both masks are empty"),
        ("Undefined values", "a metric without a defined value for a case (e.g. RVE of an empty reference, ASSD with one mask empty) is left out of the means; each cell says how many cases it left out"),
        ("PQ, SQ, RQ", "SQ = mean IoU of matched pairs, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ·RQ"),
        ("ASSD", "whole-mask average symmetric surface distance in mm (voxel spacing); the thesis columns are compared with this one"),
        ("ASSD (TP)", "panoptica's per-instance ASSD, mean over matched pairs; undefined (left out of means) without a match"),
        ("Size strata", "by the case's total reference volume: " + ", ".join(s.label + (" (subset)" if s.subset else "") for s in mc.strata)),
        ("Detection by lesion size", "each reference lesion binned by its own volume, same bins"),
    ]  # fmt: skip
    return _table(pd.DataFrame(rows, columns=["Quantity", "Definition"]))


def findings(stats: pd.DataFrame | None, alpha: float = 0.05) -> list[str]:
    """One sentence per (pair, size stratum) from the stratum statistics: every metric's mean
    difference with its paired 95% CI and Holm-adjusted p, and which differences are significant
    (Holm p < ``alpha``) — whatever they turn out to be."""
    if stats is None or stats.empty:
        return []
    out = []
    for (base, cand, stratum), rows in stats.groupby(
        ["Baseline", "Candidate", "Stratum"], sort=False
    ):
        n = int(rows["n cases"].max())
        if n == 0:
            out.append(f"{cand} vs {base}, {stratum}: no paired test case.")
            continue
        parts, significant = [], []
        for _, r in rows.iterrows():
            parts.append(f"{r['Metric']} {r['Mean diff']:+.3f} [{r['CI low']:+.3f}, {r['CI high']:+.3f}], "
                         f"p {r['p']:.3g} (Holm {r['p (Holm)']:.3g})")  # fmt: skip
            if r["p (Holm)"] < alpha:
                significant.append(f"{r['Metric']} ({r['Direction']} for {cand})")
        verdict = ("significant after Holm correction: " + ", ".join(significant) if significant
                   else "no difference is significant after Holm correction")  # fmt: skip
        out.append(f"{cand} vs {base}, {stratum} (n = {n} paired test cases): " + "; ".join(parts)
                   + f" — {verdict}.")  # fmt: skip
    return out


def _runs_section(cfg: StudyConfig, tables: Path) -> str:
    uri = cfg.tracking_uri()
    parts = [f"<p>Tracking store: <code>{html.escape(uri)}</code>. Browse it with "
             f"<code>mlflow ui --backend-store-uri {html.escape(uri)}</code> (then the links below work), "
             "or print this table with <code>sizepenalty compare</code>.</p>"]  # fmt: skip
    runs = _read(tables / "mlflow_runs.csv")
    if runs is None or runs.empty:
        return (
            parts[0] + "<p><em>No MLflow runs recorded (tracking disabled or unavailable).</em></p>"
        )
    base = "http://127.0.0.1:5000" if uri.startswith("sqlite") else uri.rstrip("/")
    runs = runs.copy()
    runs["run"] = [
        f'<a href="{html.escape(base)}/#/experiments/{e}/runs/{r}">{html.escape(str(n))}</a>'
        for n, e, r in zip(runs["run"], runs["experiment_id"], runs["run_id"])
    ]
    shown = runs.drop(columns=["run_id", "experiment_id"])
    parts.append(
        shown.to_html(
            index=False, escape=False, float_format=lambda v: f"{v:.4f}", na_rep="–", border=0
        )
    )
    return "".join(parts)


@dataclass(frozen=True)
class Evaluated:
    """What a report of prediction folders (``sizepenalty evaluate --reference ... --method``)
    shows instead of a study's configuration: its title and one (what, value) row per input.
    Such a report leaves out what only a study has (dataset summary, training curves, the
    thesis side by side, MLflow runs)."""

    title: str
    rows: tuple[tuple[str, str], ...]


def build_report(
    cfg: StudyConfig, tables_dir: str | Path, figures_dir: str | Path, about: Evaluated | None = None
) -> str:
    """The report's HTML text (see the module doc); ``about``: of prediction folders."""
    from sizepenalty.metrics import get_profile
    from sizepenalty.report.tables import main_columns

    profile = get_profile(cfg.metrics.profile)
    main_cols, extra_cols = profile.columns("main"), profile.columns("extra")
    tables, figures = Path(tables_dir), Path(figures_dir)
    main, extra = _read(tables / "table_main.csv"), _read(tables / "table_extra.csv")
    pairs, strata = _read(tables / "table_pairs.csv"), _read(tables / "table_strata.csv")
    summary = _read(tables / "dataset_summary.csv")
    thesis = _read(tables / "table_thesis.csv")
    lesions = _read(tables / "table_lesions.csv")
    stats = _read(tables / "table_strata_stats.csv")
    found = findings(stats)
    seed_table, variance = _read(tables / "table_seeds.csv"), _read(tables / "table_variance.csv")
    ablation = _read(tables / "table_ablation.csv")
    seed_found = seed_findings(seed_table)
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = about.title if about else f"Size Penalty Loss study: {cfg.study}"
    if about:  # what was evaluated, instead of how a study ran
        setup = ["<h2>What was evaluated</h2>",
                 _table(pd.DataFrame(list(about.rows), columns=["Input", "Value"])),
                 "<h3>How the metrics are computed</h3>", _conventions(cfg, folders=True)]  # fmt: skip
    else:
        setup = [
            "<h2>Configuration</h2>", _table(_config_summary(cfg)),
            "<h3>How the metrics are computed</h3>", _conventions(cfg),
            "<details><summary>Full effective configuration</summary><pre>"
            + html.escape(yaml.safe_dump(cfg.raw, sort_keys=False)) + "</pre></details>",
            "<h2>Dataset</h2>", _table(summary),
        ]  # fmt: skip
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {now} by sizepenalty {__version__}. Everything in this file is inline; it needs no network.</p>",
        "<h2>What this study shows about lesion size</h2>",
        "<p>Each comparison of <code>report.pairs</code> within each size stratum: mean paired "
        "difference (candidate − baseline) over the stratum's test cases, [bootstrap 95% CI], "
        "Wilcoxon p and Holm-adjusted p over all of these tests. Lower is better for RVE, FP and "
        "Missed.</p>",
        ("<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in found) + "</ul>") if found
        else "<p><em>No comparison pair is configured for this study.</em></p>",
        "<h2>Loss effect or training noise? (seeds)</h2>",
        "<p>Each arm's metric is averaged over its training seeds per test case; the effect is the "
        "mean over test cases of candidate − baseline, its 95% CI from a two-level bootstrap "
        "(test cases, then each arm's seeds within each fold). An effect is called beyond the "
        "seed spread when its CI excludes 0 and it exceeds twice the seed-to-seed SD of the "
        "effect (what retraining one model per arm with other seeds moves it by). With one seed "
        "an arm's seed spread is unknown and the table says so.</p>",
        ("<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in seed_found) + "</ul>") if seed_found
        else "<p><em>No comparison pair is configured for this study.</em></p>",
        "<details><summary>Every pair, stratum and metric</summary>", _table(seed_table), "</details>",
        "<h3>Where the variance comes from</h3>",
        "<p>Variance components per compared arm and metric (ANOVA method-of-moments estimators "
        "for folds, seeds within folds, test cases within folds and the seed × case residual; "
        "negative estimates set to 0 and flagged).</p>", _table(variance),
        *setup,
        "<h2>Results (Table 5.1 analogue)</h2>",
        "<p>Mean over folds of each fold's mean over its test cases, ± standard deviation across folds; "
        "best value per column in bold. Lower is better for FP, Missed, RVE and ASSD.</p>",
        _table(_mean_sd(main, main_columns(main_cols, main)), escape=False) if main is not None and len(main) else _table(None),
        "<h3>Further metrics</h3>",
        _table(_mean_sd(extra, extra_cols), escape=False) if extra is not None and len(extra) else _table(None),
        "<h2>Baseline vs candidate (Table 5.2 analogue) with paired statistics</h2>",
        "<p>Delta = candidate − baseline of the fold-mean values; Direction says whether that is better "
        "for the candidate. Over paired test cases: bootstrap 95% CI of the mean difference and the "
        "Wilcoxon signed-rank p, Holm-adjusted over every row of this table. A CI that spans 0 or a "
        "large adjusted p means the difference is within noise.</p>", _table(pairs),
        "<h2>By lesion size (Tables 5.4/5.5 analogue)</h2>",
        "<p>Every arm the study ran, by the case's total reference volume, as the thesis: the "
        "covering bins hold every test case; a subset row (e.g. &lt; 1 mL, the thesis's Table 5.5) "
        "repeats cases of a bin. n = test cases in the stratum; each case's value is the mean over "
        "the arm's seeds.</p>",
        _table(strata),
        "<h3>Paired statistics by stratum</h3>", _table(stats),
        "<h3>Lesion-wise detection by lesion size</h3>",
        "<p>Every reference lesion of every test case, binned by its own volume (beyond the thesis, "
        "whose strata are by case): how many each rule found (overlap: touched by the prediction; IoU: matched one-to-one).</p>", _table(lesions),
    ]  # fmt: skip
    for stem, caption in FIGURES:
        if about is None or (figures / f"{stem}.png").exists():  # folders: Fig. 5.1 only
            body.append(_figure(figures / f"{stem}.png", caption))
    if ablation is not None and len(ablation):
        body += [
            "<h2>Ablations: each variant against its main arm</h2>",
            "<p>Every variant (its settings in the Setting column) against its combination's main "
            "arm on the same test cases, by size stratum, with the seed-aware statistics above.</p>",
            _table(ablation),
            _figure(figures / "fig_tau_ablation.png", "τ ablation: each combination's mean against τ, by size stratum."),
        ]  # fmt: skip
    body.append("<h2>Case overlays (Figs. 5.3/5.4 analogue)</h2>")
    for i, (a, b) in enumerate(cfg.report.pairs):
        body.append(_figure(figures / f"fig_overlay_{i + 1}.png",
                            f"{a} vs {b}: the small-lesion test case where the two differ most in Dice."))  # fmt: skip
    if about is not None:
        return _page(about.title, body)
    body += [
        "<h2>Side by side with the thesis</h2>",
        '<p class="note">Different data. The thesis numbers come from its private stroke cohort '
        "(5 folds, up to 400 GPU epochs; Table 5.1). This study ran on "
        f"<b>{html.escape(cfg.dataset.source)}</b> data with the settings above; agreement is not "
        "expected, and only the pattern across losses is worth comparing.</p>",
        _table(thesis),
        "<h2>MLflow runs</h2>", _runs_section(cfg, tables),
    ]  # fmt: skip
    return _page(cfg.study, body)


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>sizepenalty report: {html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")  # fmt: skip


def run_report(
    cfg: StudyConfig, tables_dir: str | Path, figures_dir: str | Path, out: str | Path
) -> int:
    """The report stage: the self-contained HTML report; returns its size in bytes."""
    from sizepenalty.data.io import write_text_atomic

    html_text = build_report(cfg, tables_dir, figures_dir)
    write_text_atomic(out, html_text)
    return len(html_text)
