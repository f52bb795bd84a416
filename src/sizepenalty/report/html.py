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
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h4{margin:.8em 0 .2em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}
table.msd td{white-space:normal;min-width:7em}table.text td,table.text th{white-space:normal;text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#444}
.note{background:#f7f7f7;border-left:4px solid #888;padding:.5em 1em;font-size:.9em}
.lead li{margin:.3em 0}details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
code,pre{background:#f4f4f4;font-size:.85em}pre{padding:.6em;overflow-x:auto}
"""


def _read(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError):
        return None


def _table(
    frame: pd.DataFrame | None, digits: int = 4, escape: bool = True, css: str | None = None
) -> str:
    """``escape=False`` only for cells this module built itself (the bold best values); ``css``:
    a class of :data:`CSS` (``msd``: wrapping mean ± SD cells, ``text``: prose cells)."""
    if frame is None or frame.empty:
        return "<p><em>(empty)</em></p>"
    return frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", na_rep="–",
                         border=0, escape=escape, classes=css)  # fmt: skip


def _mean_sd(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """Collapse ``X`` and ``X_sd`` into "mean ± sd" strings, best value per column in bold."""
    from sizepenalty.report.tables import mean_sd_cells

    rows = mean_sd_cells(frame, columns, lambda c: f"<b>{c}</b>", missing="–")
    return pd.DataFrame([[loss, *cells] for loss, cells in rows],
                        columns=["Loss", *(label for label, _, _ in columns)])  # fmt: skip


def _figure(path: Path, caption: str) -> str:
    """The PNG at ``path`` inline, in a ``<figure>`` whose id is the figure's name."""
    if not path.exists():
        return f"<p><em>missing figure {html.escape(path.name)}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure id="{html.escape(path.stem)}"><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')  # fmt: skip


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
    return _table(pd.DataFrame(rows, columns=["Quantity", "Definition"]), css="text")


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
    parts.append(f"<details><summary>{len(shown)} training runs</summary>"
                 + shown.to_html(index=False, escape=False, float_format=lambda v: f"{v:.4f}",
                                 na_rep="–", border=0) + "</details>")  # fmt: skip
    return "".join(parts)


# ------------------------------------------------------------------ the size question at a glance


def _signed(v: float, digits: int = 3) -> str:
    return "–" if v != v else f"{v:+.{digits}f}"


def pair_sentences(table: pd.DataFrame | None, metrics: list[str] | None = None) -> list[str]:
    """One plain sentence per compared pair from the seed table (what the forest plot shows):
    on which key metrics (:func:`figures.forest_metrics`) and in which size strata the
    candidate's effect has a 95 % CI that excludes 0, better or worse, how many of those effects
    are beyond the seed-to-seed spread, and which metrics show no clear difference."""
    from sizepenalty.report import seeds as S
    from sizepenalty.report.figures import LOWER_IS_BETTER, forest_metrics

    if table is None or table.empty:
        return []
    metrics = forest_metrics(table) if metrics is None else metrics
    rows = table[table["Metric"].isin(metrics)]
    out = []
    for (base, cand), group in rows.groupby(["Baseline", "Candidate"], sort=False):
        n = int(group["n cases"].max())
        clear = group[group["CI excludes 0"].astype(str) == "True"]
        found: dict[str, dict[str, list[str]]] = {"better": {}, "worse": {}}
        for _, r in clear.iterrows():
            good = (r["Effect"] < 0) if r["Metric"] in LOWER_IS_BETTER else (r["Effect"] > 0)
            where = f"{r.get('Stratum', 'all cases')} {_signed(r['Effect'])}"
            found["better" if good else "worse"].setdefault(r["Metric"], []).append(where)
        parts = [f"{word} on " + ", ".join(f"{m} ({', '.join(w)})" for m, w in found[word].items())
                 for word in ("better", "worse") if found[word]]  # fmt: skip
        head = f"{cand} vs {base} ({n} paired test cases): "
        if not parts:
            out.append(head + f"no difference in {', '.join(metrics)} has a 95 % CI that excludes 0, "
                       "in any size stratum.")  # fmt: skip
            continue
        verdicts = clear["Verdict"].value_counts()
        spread = [f"{int(verdicts[v])} {text}" for v, text in (
            (S.BEYOND_SPREAD, "beyond the seed spread"), (S.WITHIN_SPREAD, "within the seed spread"),
            (S.ONE_SEED, "with the seed spread unknown (one seed)")) if v in verdicts]  # fmt: skip
        rest = [m for m in metrics if m not in found["better"] and m not in found["worse"]]
        tail = f"; no clear difference in {', '.join(rest)}" if rest else ""
        text = (head + f"{cand} is " + "; ".join(parts) + f" — of these {len(clear)} effects, "
                + ", ".join(spread) + tail)  # fmt: skip
        out.append(text if text.endswith(".") else text + ".")  # "Det." ends a sentence itself
    return out


def _forest_caption(table: pd.DataFrame | None) -> str:
    metrics = ", ".join(_forest_metrics(table)) or "the key metrics"
    return (
        f"The size question at a glance: per compared pair (report.pairs) and size stratum (by the "
        f"case's total reference volume; n = paired test cases), the effect of the candidate over "
        f"the baseline on {metrics} — the mean over test cases of the seed-averaged difference "
        "(candidate − baseline) — with its 95 % CI from a two-level bootstrap (test cases, then "
        "each arm's seeds), not adjusted for multiplicity (the tables give Holm-adjusted p). "
        "Marker: filled square = CI excludes 0 and the effect exceeds twice the seed-to-seed SD "
        "of the effect (beyond the seed spread); filled diamond = CI excludes 0 but within the "
        "seed spread; filled triangle = CI excludes 0, seed spread unknown (an arm with one seed); "
        "open circle = CI includes 0. Det. is the overlap rule's detection (Table 5.1). Undefined "
        "values (e.g. an RVE of an empty reference) are left out; a panel gives its own n where "
        "that differs."
    )


def _forest_metrics(table: pd.DataFrame | None) -> list[str]:
    from sizepenalty.report.figures import forest_metrics

    return forest_metrics(table) if table is not None and len(table) else []


# ------------------------------------------------------------------ compact tables


def _ci_cell(lo: float, hi: float, digits: int = 3) -> str:
    return "–" if lo != lo or hi != hi else f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"


def narrow(frame: pd.DataFrame) -> pd.DataFrame:
    """A statistics table (pairs, stratum statistics, seeds, ablation) narrowed for the page:
    "CI low"/"CI high" as one "95 % CI" cell, the two arms' seed counts as one "seeds" cell, a
    subset stratum labelled as such, shorter headers, and the columns the other cells already
    say left out (Subset, CI excludes 0, Exceeds seed spread, the arms' own seed SDs: all in the
    CSV)."""
    out = frame.copy()
    if "CI low" in out:
        at = list(out.columns).index("CI low")
        out.insert(at, "95 % CI", [_ci_cell(lo, hi) for lo, hi in zip(out["CI low"], out["CI high"])])
    if "seeds (baseline)" in out:
        at = list(out.columns).index("seeds (baseline)")
        out.insert(at, "seeds", [f"{b} / {c}" for b, c in zip(out["seeds (baseline)"], out["seeds (candidate)"])])
    if "Subset" in out and "Stratum" in out:
        out["Stratum"] = [f"{s} (subset)" if str(sub) == "True" and s != "all cases" else s
                          for s, sub in zip(out["Stratum"], out["Subset"])]  # fmt: skip
    drop = ["CI low", "CI high", "seeds (baseline)", "seeds (candidate)", "Subset", "CI excludes 0",
            "Exceeds seed spread", "Seed SD (baseline)", "Seed SD (candidate)"]  # fmt: skip
    short = {"p (Holm)": "Holm p", "n cases": "n", "Baseline mean": "Baseline",
             "Candidate mean": "Candidate", "Seed SD (effect)": "Seed SD", "Baseline value": "Baseline",
             "Candidate value": "Candidate", "Case mean diff": "Case diff"}  # fmt: skip
    return out.drop(columns=[c for c in drop if c in out]).rename(columns=short)


def per_pair(frame: pd.DataFrame | None, open_first: bool = False, digits: int = 3) -> str:
    """One collapsed table per (baseline, candidate) of a statistics table (:func:`narrow`)."""
    if frame is None or frame.empty:
        return _table(None)
    parts = []
    for i, ((base, cand), rows) in enumerate(frame.groupby(["Baseline", "Candidate"], sort=False)):
        head = f"{cand} vs {base}"
        if "Setting" in rows:
            head += f" ({'; '.join(map(str, dict.fromkeys(rows['Setting'])))})"
        shown = narrow(rows.drop(columns=["Baseline", "Candidate", "Setting"], errors="ignore"))
        opened = " open" if open_first and i == 0 else ""
        parts.append(f"<details{opened}><summary>{html.escape(head)} ({len(rows)} rows)</summary>"
                     + _table(shown, digits) + "</details>")  # fmt: skip
    return "".join(parts)


def per_value(frame: pd.DataFrame | None, column: str, digits: int = 4) -> str:
    """A long table split into one table per value of ``column`` (e.g. each size stratum)."""
    if frame is None or frame.empty:
        return _table(None)
    parts = []
    for value, rows in frame.groupby(column, sort=False):
        subset = " (subset)" if "Subset" in rows and str(rows["Subset"].iloc[0]) == "True" else ""
        parts.append(f"<h4>{html.escape(str(value))}{subset}</h4>"
                     + _table(rows.drop(columns=[column, "Subset"], errors="ignore"), digits))  # fmt: skip
    return "".join(parts)


def variance_pivot(variance: pd.DataFrame | None) -> pd.DataFrame | None:
    """The variance components as one row per (arm, metric): per source "SD (share)", a
    truncated negative estimate marked "0*", a component that cannot be estimated "–"."""
    if variance is None or variance.empty:
        return variance
    rows = []
    for (arm, metric), g in variance.groupby(["Arm", "Metric"], sort=False):
        row = {"Arm": arm, "Metric": metric}
        for _, r in g.iterrows():
            if r["SD"] != r["SD"]:
                cell = "–"
            elif str(r["Truncated"]) == "True":
                cell = "0*"
            else:
                share = f" ({r['Share']:.0%})" if r["Share"] == r["Share"] else ""
                cell = f"{r['SD']:.4f}{share}"
            row[f"{r['Component']} SD (share)"] = cell
        rows.append(row)
    return pd.DataFrame(rows)


def thesis_tables(thesis: pd.DataFrame | None) -> str:
    """The side-by-side table as three narrow ones with the same columns: this study, the
    thesis's proprietary cohort (Table 5.1), the thesis's ISLES 2022 split (Table 5.3)."""
    if thesis is None or thesis.empty:
        return _table(None)
    parts = []
    for source, title in (("this study", "This study"),
                          ("thesis, proprietary", "Thesis, proprietary cohort (Table 5.1)"),
                          ("thesis, ISLES 2022", "Thesis, ISLES 2022 (Table 5.3)")):  # fmt: skip
        cols = [c for c in thesis.columns if c.endswith(f" ({source})")]
        shown = thesis[["Loss", *cols]].rename(columns={c: c[: -len(f" ({source})")] for c in cols})
        parts.append(f"<h4>{title}</h4>" + _table(shown))
    return "".join(parts)


# ------------------------------------------------------------------ edge-case conventions


def _undefined_when(key: str) -> list[str]:
    """The case types for which ``key`` is undefined by convention."""
    from sizepenalty.metrics.edge_cases import EDGE_CASES, CaseType

    conv = EDGE_CASES.get(key)
    if conv is None:
        return []
    return [c.value for c in CaseType if (v := conv.value(c)) is not None and v != v]


def undefined_notes(frame: pd.DataFrame | None, columns) -> str:
    """Under a mean ± SD table: for every column whose means left undefined test cases out (its
    ``<label>_undefined`` count), the edge-case convention that makes them undefined."""
    if frame is None or frame.empty:
        return ""
    items = []
    for label, key, _ in columns:
        col = f"{label}_undefined"
        total = int(frame[col].fillna(0).sum()) if col in frame else 0
        when = _undefined_when(key)
        if total and when:
            items.append(f"{label} is undefined for these case types: {', '.join(when)} — {total} "
                         "test-case value(s) over all arms left out of the means")  # fmt: skip
    if not items:
        return ""
    return ('<p class="note">Edge-case conventions in this table (sizepenalty.metrics.edge_cases): '
            + "; ".join(html.escape(i) for i in items) + ". Each such cell says how many values it "
            "left out.</p>")  # fmt: skip


def edge_case_counts(cases: pd.DataFrame | None, order: list[str]) -> pd.DataFrame | None:
    """Per arm, how many of its test-case values (cases × seeds) are each edge-case type (by the
    case's reference and predicted volumes)."""
    from sizepenalty.metrics.edge_cases import CaseType

    if cases is None or cases.empty or not {"vol_ref_ml", "vol_pred_ml"} <= set(cases.columns):
        return None
    ref, pred = cases["vol_ref_ml"] > 0, cases["vol_pred_ml"] > 0
    kinds = {CaseType.EMPTY_PREDICTION: ref & ~pred, CaseType.EMPTY_REFERENCE: ~ref & pred,
             CaseType.BOTH_EMPTY: ~ref & ~pred}  # fmt: skip
    rows = []
    for arm in [a for a in order if (cases["arm"] == a).any()]:
        mine = cases["arm"] == arm
        rows.append({"Loss": arm, "test-case values": int(mine.sum())}
                    | {k.value: int((mask & mine).sum()) for k, mask in kinds.items()})  # fmt: skip
    return pd.DataFrame(rows)


def edge_case_conventions(columns) -> pd.DataFrame:
    """Per edge-case type, the value each of ``columns`` takes by convention (metrics whose
    formula applies as written are left out)."""
    from sizepenalty.metrics.edge_cases import EDGE_CASES, FORMULA, CaseType, cell_text

    rows = []
    for case in (CaseType.EMPTY_PREDICTION, CaseType.EMPTY_REFERENCE, CaseType.BOTH_EMPTY):
        fixed = [f"{label} {cell_text(EDGE_CASES[key].value(case))}" for label, key, _ in columns
                 if key in EDGE_CASES and EDGE_CASES[key].value(case) is not FORMULA]  # fmt: skip
        rows.append({"Case type": case.value, "Values by convention": ", ".join(fixed)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the report


def _h(text: str) -> str:
    return html.escape(text)


@dataclass(frozen=True)
class Evaluated:
    """What a report of prediction folders (``sizepenalty evaluate --reference ... --method``)
    shows instead of a study's configuration: its title and one (what, value) row per input.
    Such a report leaves out what only a study has (dataset summary, training curves, the
    thesis side by side, MLflow runs) and the figures it did not draw."""

    title: str
    rows: tuple[tuple[str, str], ...]


def build_report(
    cfg: StudyConfig, tables_dir: str | Path, figures_dir: str | Path, about: Evaluated | None = None
) -> str:
    """The report's HTML text (see the module doc): the forest plot first, then one sentence
    per compared pair, the volume-fidelity figures, and the tables and figures below;
    ``about``: a report of prediction folders instead of a study."""
    from sizepenalty.metrics import get_profile
    from sizepenalty.paths import FIGURES, gallery_figure
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
    cases = _read(tables / "per_case_metrics.csv")
    seed_table, variance = _read(tables / "table_seeds.csv"), _read(tables / "table_variance.csv")
    ablation = _read(tables / "table_ablation.csv")
    order = list(main["Loss"]) if main is not None and len(main) else []
    shown_main = main_columns(main_cols, main) if main is not None and len(main) else main_cols
    sentences, found, seed_found = pair_sentences(seed_table), findings(stats), seed_findings(seed_table)
    fig = {role: figures / f"{name}.png" for role, name in FIGURES.items()}
    no_pair = "<p><em>No comparison pair is configured for this study.</em></p>"
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = about.title if about else f"Size Penalty Loss study: {cfg.study}"
    if about:  # what was evaluated, instead of how a study ran
        setup = ["<h2>What was evaluated</h2>",
                 _table(pd.DataFrame(list(about.rows), columns=["Input", "Value"]), css="text"),
                 "<h3>How the metrics are computed</h3>", _conventions(cfg, folders=True)]  # fmt: skip
    else:
        setup = [
            "<h2>Configuration</h2>", _table(_config_summary(cfg), css="text"),
            "<h3>How the metrics are computed</h3>", _conventions(cfg),
            "<details><summary>Full effective configuration</summary><pre>"
            + _h(yaml.safe_dump(cfg.raw, sort_keys=False)) + "</pre></details>",
            "<h2>Dataset</h2>", _table(summary, css="text"),
        ]  # fmt: skip
    body = [
        f"<h1>{_h(title)}</h1>",
        f"<p>Generated {now} by sizepenalty {__version__}. Everything in this file is inline; it needs no network.</p>",
        "<h2>Does the loss help small lesions? The size question at a glance</h2>",
        _figure(fig["forest"], _forest_caption(seed_table)),
        ('<ul class="lead">' + "".join(f"<li>{_h(s)}</li>" for s in sentences) + "</ul>") if sentences else no_pair,
        "<p>Every number is in the tables below (“Loss effect or training noise?” and “By lesion size”).</p>",
        "<details><summary>Every metric of every pair and stratum, as sentences</summary>",
        "<p>Within each size stratum: mean paired difference (candidate − baseline) over the "
        "stratum's test cases, [bootstrap 95% CI], Wilcoxon p and Holm-adjusted p over all of "
        "these tests. Lower is better for RVE, FP and Missed.</p>",
        ("<ul>" + "".join(f"<li>{_h(f)}</li>" for f in found) + "</ul>") if found else no_pair,
        "<p>All test cases, seed-aware (the forest plot's statistics):</p>",
        ("<ul>" + "".join(f"<li>{_h(f)}</li>" for f in seed_found) + "</ul>") if seed_found else no_pair,
        "</details>",
        "<h2>Volume fidelity</h2>",
        "<p>SPL penalises volume errors; these figures show them per test case for the arms of the "
        "compared pairs (each case's value is the mean over the arm's training seeds). A volume of "
        "0 mL (an empty prediction: Dice 0, RVE 1, ASSD undefined by convention) is drawn at the "
        "log axis's floor and marked.</p>",
        _figure(fig["volume"], "Predicted vs reference volume per test case (log axes, dashed: identity), with Lin's concordance correlation coefficient (CCC) of the panel's cases."),
        _figure(fig["bland_altman"], "Bland–Altman: predicted − reference volume against their mean, with the bias and the 95 % limits of agreement (bias ± 1.96 SD)."),
        _figure(fig["case_metrics"], "Per-case Dice and RVE against the reference volume (log axis; lines: medians of bins of about 4 consecutive cases by volume; dotted: the size strata's edges). An undefined RVE (empty reference) is left out and counted in the title."),
        _figure(fig["dice_box"], "Per-case Dice of every arm (test cases, mean over seeds): quartile boxes, whiskers to 1.5 IQR, the cases as points."),
        "<h2>Loss effect or training noise? (seeds)</h2>",
        "<p>Each arm's metric is averaged over its training seeds per test case; the effect is the "
        "mean over test cases of candidate − baseline, its 95% CI from a two-level bootstrap "
        "(test cases, then each arm's seeds within each fold). An effect is called beyond the "
        "seed spread when its CI excludes 0 and it exceeds twice the seed-to-seed SD of the "
        "effect (what retraining one model per arm with other seeds moves it by). With one seed "
        "an arm's seed spread is unknown and the table says so. Direction: better or worse for "
        "the candidate where the CI excludes 0, else n.s.; seeds = baseline / candidate. The "
        "arms' own seed SDs are in <code>tables/table_seeds.csv</code>.</p>",
        per_pair(seed_table),
        "<h3>Where the variance comes from</h3>",
        "<p>Variance components per compared arm and metric (ANOVA method-of-moments estimators "
        "for folds, seeds within folds, test cases within folds and the seed × case residual), as "
        "SD and share of the arm's total; 0* = a negative estimate set to 0; – = not estimable "
        "(notes in <code>tables/table_variance.csv</code>).</p>",
        "<details><summary>Variance components</summary>", _table(variance_pivot(variance)), "</details>",
        *setup,
        "<h2>Results (Table 5.1 analogue)</h2>",
        "<p>Mean over folds of each fold's mean over its test cases, ± standard deviation across folds; "
        "best value per column in bold. Lower is better for FP, Missed, RVE and ASSD.</p>",
        _table(_mean_sd(main, shown_main), escape=False, css="msd") if main is not None and len(main) else _table(None),
        undefined_notes(main, shown_main),
        "<h3>Further metrics</h3>",
        _table(_mean_sd(extra, extra_cols), escape=False, css="msd") if extra is not None and len(extra) else _table(None),
        undefined_notes(extra, extra_cols),
        "<h3>Edge cases among the test cases</h3>",
        "<p>How many of each arm's test-case values (cases × seeds) are an edge case, and the "
        "value each metric takes there by convention (<code>sizepenalty.metrics.edge_cases</code>; "
        "undefined = left out of the means).</p>",
        _table(edge_case_counts(cases, order)), _table(edge_case_conventions(main_cols), css="text"),
        "<h2>Baseline vs candidate (Table 5.2 analogue) with paired statistics</h2>",
        "<p>Delta = candidate − baseline of the fold-mean values. Over paired test cases: bootstrap "
        "95% CI of the mean difference and the Wilcoxon signed-rank p, Holm-adjusted over every "
        "row of this table. Direction: better or worse for the candidate where the Holm p is "
        "below 0.05, else n.s. (the difference is within noise).</p>", per_pair(pairs, open_first=True),
        "<h2>By lesion size (Tables 5.4/5.5 analogue)</h2>",
        "<p>Every arm the study ran, by the case's total reference volume, as the thesis: the "
        "covering bins hold every test case; a subset (e.g. &lt; 1 mL, the thesis's Table 5.5) "
        "repeats cases of a bin. n = test cases in the stratum; each case's value is the mean over "
        "the arm's seeds, undefined values (edge cases, above) left out.</p>",
        per_value(strata, "Stratum"),
        "<h3>Paired statistics by stratum</h3>",
        "<p>Per pair, stratum and metric: the mean paired difference, its bootstrap 95% CI, the "
        "Wilcoxon p and the Holm-adjusted p over every row of all pairs; Direction as above "
        "(n.s. unless Holm p &lt; 0.05).</p>",
        per_pair(stats),
        "<h3>Lesion-wise detection by lesion size</h3>",
        "<p>Every reference lesion of every test case, binned by its own volume (beyond the thesis, "
        "whose strata are by case): how many each rule found (overlap: touched by the prediction; IoU: matched one-to-one).</p>",
        per_value(lesions, "Lesion size"),
        _figure(fig["spl"], "Fig. 3.1 — Size Penalty Loss components, computed with the package's own loss."),
        _figure(fig["improvement"], "Fig. 5.1 — relative improvement of each candidate over its baseline, by size stratum; whiskers: the paired bootstrap 95 % CI of the difference relative to the baseline mean; pale bars labelled n<5: strata with fewer than 5 paired test cases (unreliable)."),
        _figure(fig["curves"], "Fig. 5.2 — training curves (loss terms and validation Dice, mean over folds and seeds)."),
    ]  # fmt: skip
    if about is not None:  # folders: only the figures it drew, nothing only a study has
        return _page(title, [part for part in body if not part.startswith("<p><em>missing figure")])
    if ablation is not None and len(ablation):
        body += [
            "<h2>Ablations: each variant against its main arm</h2>",
            "<p>Every variant (its settings in the heading) against its combination's main arm on "
            "the same test cases, by size stratum, with the seed-aware statistics above.</p>",
            per_pair(ablation),
            _figure(fig["tau_ablation"], "τ ablation: each combination's mean against τ, by size stratum."),
        ]  # fmt: skip
    body.append("<h2>Case galleries (Figs. 5.3/5.4 analogue)</h2>")
    for i, (a, b) in enumerate(cfg.report.pairs, start=1):
        body.append(_figure(figures / f"{gallery_figure(i)}.png",
                            f"{a} vs {b}: per size stratum, the test cases where the two differ most in "
                            "Dice (each arm's first training seed), on the DWI slice with the most "
                            "reference voxels and disagreement, zoomed to the lesions; reference solid "
                            "(orange), prediction dashed (blue)."))  # fmt: skip
    body += [
        "<h2>Side by side with the thesis</h2>",
        '<p class="note">Different data. The thesis numbers come from its private stroke cohort '
        "(5 folds, up to 400 GPU epochs; Table 5.1). This study ran on "
        f"<b>{_h(cfg.dataset.source)}</b> data with the settings above; agreement is not "
        "expected, and only the pattern across losses is worth comparing.</p>",
        thesis_tables(thesis),
        "<h2>MLflow runs</h2>", _runs_section(cfg, tables),
    ]  # fmt: skip
    return _page(cfg.study, body)


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>sizepenalty report: {_h(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")  # fmt: skip


def run_report(
    cfg: StudyConfig, tables_dir: str | Path, figures_dir: str | Path, out: str | Path
) -> int:
    """The report stage: the self-contained HTML report; returns its size in bytes."""
    from sizepenalty.data.io import write_text_atomic

    html_text = build_report(cfg, tables_dir, figures_dir)
    write_text_atomic(out, html_text)
    return len(html_text)
