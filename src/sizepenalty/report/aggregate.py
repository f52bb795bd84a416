"""The aggregate stage: every run's metrics file of a study -> the thesis-style tables.

Rows are keyed by run (:data:`sizepenalty.runs.KEY_COLUMNS`: arm, combination, variant, seed,
fold); tables compare arms, averaging each arm's seeds. :data:`sizepenalty.paths.TABLES` names
every table this stage writes (each as CSV, Markdown and LaTeX); the workflow's aggregate rule
declares its outputs from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sizepenalty.config import StudyConfig
from sizepenalty.data.io import write_text_atomic
from sizepenalty.errors import InputError
from sizepenalty.metrics import get_profile
from sizepenalty.paths import StudyLayout
from sizepenalty.report import seeds, tables
from sizepenalty.runs import KEY_COLUMNS, MAIN, Arm, StudyPlan, arm_label
from sizepenalty.strata import Stratum

CASE_KEYS = (*KEY_COLUMNS, "case_id", "stratum", "ref_ml")
LESION_KEYS = (*KEY_COLUMNS, "case_id", "volume_ml", "detected_overlap", "detected_iou")


ALL_CASES = Stratum("all cases", 0.0, float("inf"), subset=True)
"""Every test case, as a stratum (the seed table's first rows)."""


def compared_arms(pairs) -> list[str]:
    """The arms of the comparison pairs, each once, in pair order."""
    return list(dict.fromkeys(arm_label(a) for pair in pairs for a in pair))


def ablation_pairs(cfg: StudyConfig, arms: Sequence[str]) -> list[tuple[str, str, str]]:
    """(main arm, variant arm, the variant's settings as text) for every variant arm whose
    combination also runs its main arm."""
    out = []
    for label in arms:
        if label in cfg.methods:  # an external method: no variant, no main arm
            continue
        arm = Arm.parse(label)
        if arm.variant != MAIN and Arm(arm.combo).label in arms:
            sets = cfg.variants[arm.variant].set
            out.append((Arm(arm.combo).label, label, "; ".join(f"{k} = {v}" for k, v in sets.items())))
    return out


def ablation_table(cfg, cases, arms, columns, strata, seed: int) -> pd.DataFrame:
    """Each variant against its combination's main arm, by size stratum: the seed-aware effect
    table (:func:`sizepenalty.report.seeds.seed_table`) with the variant's settings. Empty (with
    its columns) when the study has no variant."""
    found = ablation_pairs(cfg, arms)
    table = seeds.seed_table(cases, [(b, c) for b, c, _ in found], columns, strata,
                             n_boot=cfg.report.bootstrap, seed=seed)  # fmt: skip
    settings = {c: text for _, c, text in found}
    table.insert(2, "Setting", [settings[c] for c in table["Candidate"]])
    return table


class AggregateError(InputError):
    """A metrics file that cannot be aggregated; the message names the file."""


@dataclass(frozen=True)
class StudyTables:
    cases: pd.DataFrame  # every test case of every run (arm x seed x fold)
    lesions: pd.DataFrame  # every reference lesion of those cases
    frames: dict[str, pd.DataFrame]  # TABLES name -> table


def read_metrics(paths: Sequence[str | Path], required: Sequence[str]) -> pd.DataFrame:
    """Concatenate per-fold CSVs, naming the first file that cannot be read or lacks a column."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise AggregateError(f"{path}: cannot read per-case metrics: {exc}") from None
        missing = sorted(set(required) - set(frame.columns))
        if missing and len(frame):
            raise AggregateError(f"{path}: lacks column(s) {', '.join(missing)}")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=required)


def collect_runs(plan: StudyPlan, layout: StudyLayout) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run's per-case and per-lesion metrics, read from the study folder: a run that shares
    another arm's evaluation (:meth:`StudyPlan.canonical`) reads that one's file, relabelled
    with its own key."""
    import json

    from sizepenalty.evaluate import lesions_csv

    case_frames, lesion_frames, read = [], [], {}
    for key in plan.runs():
        path = layout.metrics(plan.canonical(key, "evaluate"))
        if path not in read:
            read[path] = (read_metrics([path], CASE_KEYS), read_metrics([lesions_csv(path)], LESION_KEYS))
        done = layout.done(plan.canonical(key, "train"))
        # the epoch whose checkpoint (best.pt) the run was evaluated with (thesis Table 5.3)
        best = json.loads(done.read_text()).get("best_epoch") if done.exists() else None
        case_frames.append(read[path][0].assign(**key.values(), best_epoch=best))
        lesion_frames.append(read[path][1].assign(**key.values()))
    cases = pd.concat(case_frames, ignore_index=True) if case_frames else pd.DataFrame(columns=CASE_KEYS)
    lesions = pd.concat(lesion_frames, ignore_index=True) if lesion_frames else pd.DataFrame(columns=LESION_KEYS)
    return cases, lesions


def build_tables(
    cfg: StudyConfig, cases: pd.DataFrame, lesions: pd.DataFrame, arms: Sequence[str]
) -> StudyTables:
    """Every table of the study from its per-case and per-lesion metrics (rows keyed by run), for
    the arms in table order, with the column sets of the configured metric profile and the
    configured size strata."""
    profile = get_profile(cfg.metrics.profile)
    missing = sorted(set(profile.keys) - set(cases.columns))
    if missing:
        raise AggregateError(
            f"per-case metrics lack the {profile.name} profile's column(s) {', '.join(missing)}"
            " (were they computed with another metrics.profile?)"
        )
    arms = list(arms)
    order, pairs, strata = arms, cfg.report.pairs, cfg.metrics.strata
    seed = cfg.seeds.bootstrap
    main = tables.main_table(cases, order, tables.main_columns(profile.columns("main"), cases))
    frames = {
        "table_main": main,
        "table_extra": tables.main_table(cases, order, profile.columns("extra")),
        "table_pairs": tables.pair_table(
            cases, pairs, cfg.report.bootstrap, seed=seed, columns=profile.columns("pairs")
        ),
        "table_strata": tables.strata_table(cases, order, strata, profile.columns("strata")),
        "table_strata_stats": tables.stratum_stats_table(
            cases, pairs, strata, profile.columns("strata"), cfg.report.bootstrap, seed
        ),
        "table_lesions": tables.lesion_detection_table(lesions, order, strata),
        "table_thesis": tables.thesis_side_by_side(main),
        # training noise: effects against the seed-to-seed spread, and where variance comes from
        "table_seeds": seeds.seed_table(
            cases, [tuple(map(arm_label, p)) for p in pairs], profile.columns("strata"),
            [ALL_CASES, *strata], n_boot=cfg.report.bootstrap, seed=seed,
        ),  # fmt: skip
        "table_variance": seeds.variance_table(
            cases, compared_arms(pairs), profile.columns("strata")
        ),
        "table_ablation": ablation_table(
            cfg, cases, arms, profile.columns("strata"), [ALL_CASES, *strata], seed
        ),
    }
    return StudyTables(cases, lesions, frames)


def write_tables(cfg: StudyConfig, result: StudyTables, out_dir: str | Path) -> list[Path]:
    """``per_case_metrics.csv``, ``per_lesion_metrics.csv`` and each table as CSV, Markdown and
    LaTeX (mean ± SD layout with the best value in bold for the two per-combination tables)."""
    profile = get_profile(cfg.metrics.profile)
    out = Path(out_dir)
    written = {
        out / "per_case_metrics.csv": result.cases.to_csv(index=False),
        out / "per_lesion_metrics.csv": result.lesions.to_csv(index=False),
    }
    mean_sd = {"table_main": tables.main_columns(profile.columns("main"), result.cases),
               "table_extra": profile.columns("extra")}  # fmt: skip
    for name, frame in result.frames.items():
        if name in mean_sd:
            md = tables.to_markdown(frame, mean_sd[name])
            tex = tables.to_latex(frame, mean_sd[name])
        else:
            md, tex = tables.frame_markdown(frame), tables.frame_latex(frame)
        written[out / f"{name}.md"] = md + "\n"
        written[out / f"{name}.tex"] = tex
        written[out / f"{name}.csv"] = frame.to_csv(index=False)
    for path, text in written.items():
        write_text_atomic(path, text)
    return list(written)


def collect_methods(layout: StudyLayout, names: Sequence[str], folds: Sequence[int]):
    """The per-case and per-lesion rows of external methods ``names`` over ``folds``, read from
    the metrics files :mod:`sizepenalty.methods` wrote
    (:meth:`~sizepenalty.paths.StudyLayout.method_metrics`) as the runs' are read."""
    from sizepenalty.evaluate import lesions_csv

    paths = [layout.method_metrics(n, f) for n in names for f in folds]
    cases = read_metrics(paths, CASE_KEYS)
    return cases, read_metrics([lesions_csv(p) for p in paths], LESION_KEYS)


def run_aggregate(
    cfg: StudyConfig,
    plan: StudyPlan,
    out_dir: str | Path,
    parent_run_file: str | Path | None = None,
) -> StudyTables:
    """The aggregate stage: every table from the study's run files (:func:`collect_runs`), then
    the tracking bookkeeping (:func:`sizepenalty.tracking.track_study_tables`)."""
    from sizepenalty.tracking import track_study_tables

    layout = StudyLayout(plan.cfg.study_dir)
    runs, lesions = collect_runs(plan, layout)
    cases, arms = runs, [a.label for a in plan.arms]
    if cfg.methods:  # external methods' rows beside the runs' (sizepenalty.methods)
        extra = collect_methods(layout, list(cfg.methods), plan.cfg.folds.trained)
        cases = pd.concat([runs, extra[0]], ignore_index=True)
        lesions = pd.concat([lesions, extra[1]], ignore_index=True)
        arms += list(cfg.methods)
    result = build_tables(cfg, cases, lesions, arms)
    write_tables(cfg, result, out_dir)
    track_study_tables(cfg, plan, runs, layout, parent_run_file, out_dir)
    return result
