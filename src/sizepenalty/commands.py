"""What each ``sizepenalty`` verb does with its parsed arguments: load the configuration its stage
may see (:func:`sizepenalty.runs.load_stage_config`), build the stage's typed job, call the
stage's entry function and print one line about it. No logic of its own; heavy imports happen
inside, so the command line starts fast.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path


def _cfg(args: Namespace, stage: str, key=None):
    """The job's :class:`~sizepenalty.runs.StageJob` (its config view, settings, fingerprint)."""
    from sizepenalty.runs import load_stage_config

    if not sys.stdout.isatty():  # a job's log is appended to: mark where each (re)start begins
        import time

        job = f" {key.label}" if key is not None else ""
        print(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} sizepenalty {args.command}{job}: start ===",
              flush=True)  # fmt: skip
    return load_stage_config(args.config, stage, key, getattr(args, "fingerprint", None))


def _key(args: Namespace):
    from sizepenalty.runs import RunKey

    return RunKey.parse(args.run)


def _fold(args: Namespace, key) -> dict:
    from sizepenalty.data.folds import load_fold

    return load_fold(args.folds, key.fold)


# ----------------------------------------------------------------------------- configuration


def validate_config(args: Namespace) -> None:
    import yaml

    from sizepenalty.config import stacked_config
    from sizepenalty.errors import InputError

    cfg, files = stacked_config(args.config)
    if not files:
        raise InputError("no configuration: ./config.yaml is not here and no -c FILE was given")
    print(yaml.safe_dump(cfg.raw, sort_keys=False), end="")
    print(f"# {' + '.join(map(str, files))}: valid (config hash {cfg.digest()})", file=sys.stderr)


def schema(args: Namespace) -> None:
    import yaml

    from sizepenalty.config import load_schema

    print(yaml.safe_dump(load_schema(), sort_keys=False), end="")


def losses(args: Namespace) -> None:
    from sizepenalty.combos import combo_id
    from sizepenalty.config import load_config
    from sizepenalty.losses import build_loss

    cfg = load_config(args.config)
    for name in cfg.combo_names:
        lc = cfg.losses
        weights = build_loss(name, lc.ungated_params_for(name), lc.weights_for(name)).weights
        terms = " + ".join(f"{w:g}*{k}" for k, w in weights.items())
        print(f"{name:5s} id={combo_id(name):4s} {terms}")


# ----------------------------------------------------------------------------- data stages


def synth(args: Namespace) -> None:
    from dataclasses import replace

    from sizepenalty.data.synth import SynthSpec, write_cohort
    from sizepenalty.errors import InputError

    spec = SynthSpec()
    if args.config:
        spec = SynthSpec.from_config(_cfg(args, "synth").config.dataset.synthetic)
    if args.cases < 3:
        raise InputError(f"--cases {args.cases}: need at least 3 cases")
    spec = replace(
        spec,
        shape=tuple(args.shape or spec.shape),
        spacing=tuple(args.spacing or spec.spacing),
        mean_lesions=args.mean_lesions or spec.mean_lesions,
        shine_through=spec.shine_through and not args.no_shine_through,
    )
    rows = write_cohort(args.out, args.cases, args.seed, spec)
    lesions = sum(int(r["n_lesions"]) for r in rows)
    print(f"wrote {len(rows)} cases ({lesions} lesions, shape {spec.shape}, spacing "
          f"{spec.spacing} mm) to {args.out}")  # fmt: skip


def cohort(args: Namespace) -> None:
    from sizepenalty.data.cohort import run_cohort

    found = run_cohort(_cfg(args, "cohort").config, args.out, args.root, args.skip_invalid)
    for err in found.bad:
        print(f"skipped invalid case: {err}", file=sys.stderr)
    # Lesion-free cases are valid but change what several metrics mean: say so where it shows.
    free = found.lesion_free
    named = f" ({', '.join(free[:10])}{', ...' if len(free) > 10 else ''})" if free else ""
    print(f"{len(found.good)} valid case(s), {len(found.bad)} skipped, {len(free)} lesion-free"
          f"{named} -> {args.out}")  # fmt: skip


def preprocess(args: Namespace) -> None:
    from sizepenalty.data.preprocess import run_preprocess

    cfg = _cfg(args, "preprocess").config
    n = run_preprocess(cfg, args.cases, args.out_dir, args.case, args.skip_invalid)
    print(f"preprocessed {n} case(s) -> {args.out_dir}")


def folds(args: Namespace) -> None:
    from sizepenalty.data.folds import run_folds

    result = run_folds(_cfg(args, "folds").config, args.stats_dir, args.out, args.cases)
    sizes = ", ".join(
        f"{len(f['train'])}/{len(f['val'])}/{len(f['test'])}" for f in result["folds"]
    )
    print(f"{result['k']} folds (train/val/test: {sizes}) -> {args.out}")


def summary(args: Namespace) -> None:
    from sizepenalty.data.summary import run_summary

    cfg = _cfg(args, "summary").config
    table = run_summary(cfg, args.stats_dir, args.out_csv, args.out_md, args.cases, args.folds)
    print(table.to_string(index=False))


# ----------------------------------------------------------------------------- training, inference, evaluation


def study_run(args: Namespace) -> None:
    from sizepenalty.tracking import start_study_run

    run_id = start_study_run(_cfg(args, "study_run").config, args.out)
    print(f"study parent run: {run_id or '(tracking unavailable)'} -> {args.out}")


def train(args: Namespace) -> int | None:
    from sizepenalty.train import Interrupted, TrainJob, run_train

    key = _key(args)
    sj = _cfg(args, "train", key)
    parent = Path(args.parent_run_file) if args.parent_run_file else None
    job = TrainJob(key, _fold(args, key), Path(args.pre_dir), Path(args.run_dir),
                   sj.fingerprint, parent, args.device, args.max_epochs)  # fmt: skip
    try:
        result = run_train(sj.config, job, sj.settings, sj.full.digest())
    except Interrupted as exc:
        print(f"{key.label}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    if result.skipped:
        print(f"{key.label}: already trained ({Path(args.run_dir) / 'done.json'})")
    return None


def infer(args: Namespace) -> None:
    from sizepenalty.infer import InferJob, run_infer

    key = _key(args)
    cfg = _cfg(args, "infer", key).config
    job = InferJob(key, _fold(args, key), Path(args.pre_dir), Path(args.run_dir),
                   Path(args.out_dir), args.device)  # fmt: skip
    print(f"{key.label}: {run_infer(cfg, job)} probability map(s) -> {args.out_dir}")


def evaluate_fold(args: Namespace) -> None:
    from sizepenalty.evaluate import EvaluateJob, run_evaluate

    key = _key(args)
    cfg = _cfg(args, "evaluate", key).config
    nifti = Path(args.nifti_dir) if args.nifti_dir else None
    job = EvaluateJob(key, _fold(args, key), Path(args.pre_dir), Path(args.prob_dir),
                      Path(args.out), Path(args.threshold_out), nifti)  # fmt: skip
    ev = run_evaluate(cfg, job)
    dice = sum(r["dice"] for r in ev.cases) / len(ev.cases) if ev.cases else float("nan")
    print(f"{key.label}: threshold {ev.threshold} (val Dice {ev.val_dice[ev.threshold]:.4f}); "
          f"test Dice {dice:.4f} over {len(ev.cases)} case(s)")  # fmt: skip


def evaluate(args: Namespace) -> None:
    from sizepenalty.errors import InputError

    folders = [n for n in ("reference", "method", "out", "folds", "fold", "pair", "config")
               if getattr(args, n) is not None]  # fmt: skip
    if args.gt is None and args.pred is None and folders:
        return evaluate_folders(args)
    if args.gt is None or args.pred is None:
        raise InputError("give --gt and --pred (one mask pair), or --reference, --method NAME=DIR "
                         "and --out (prediction folders)")  # fmt: skip
    if folders:
        raise InputError(f"--{folders[0].replace('_', '-')} is for prediction folders, not for "
                         "one --gt/--pred pair")  # fmt: skip
    import json

    from sizepenalty.evaluate import evaluate_pair
    from sizepenalty.metrics import InstanceRule

    rule = InstanceRule(args.connectivity or 26, args.matching or "iou",
                        0.5 if args.iou_threshold is None else args.iou_threshold,
                        bool(args.strict))  # fmt: skip
    result = evaluate_pair(args.gt, args.pred, args.profile or "thesis", rule, args.min_size,
                           args.removal_connectivity)  # fmt: skip
    if args.json:  # strict JSON: undefined values (NaN) are written as null
        print(json.dumps({k: None if v != v else v for k, v in result.items()}))
    else:
        for key, value in result.items():
            print(f"{key} = {value}")


def evaluate_folders(args: Namespace) -> None:
    from sizepenalty.report.folders import FolderJob, folder_config, parse_method, run_folders

    methods = tuple(parse_method(m) for m in args.method or ())
    metrics = {"connectivity": args.connectivity, "matching": args.matching,
               "iou_threshold": args.iou_threshold, "strict_threshold": args.strict,
               "profile": args.profile}  # fmt: skip
    cfg = folder_config(args.config, methods, args.pair,
                        {k: v for k, v in metrics.items() if v is not None})  # fmt: skip
    folds = args.fold or (cfg.folds.trained if args.config and args.folds else None)
    job = FolderJob(Path(args.reference) if args.reference else None, methods,
                    Path(args.out) if args.out else None, Path(args.folds) if args.folds else None,
                    tuple(folds) if folds else None)  # fmt: skip
    result = run_folders(cfg, job)
    print(f"{len(methods)} method(s), {result.cases['case_id'].nunique()} case(s) -> "
          f"{job.out}/tables, {job.out}/figures, {job.out}/report.html")  # fmt: skip


def evaluate_method(args: Namespace) -> None:
    from sizepenalty.data.folds import load_fold
    from sizepenalty.methods import MethodJob, run_method

    cfg = _cfg(args, "method").config
    job = MethodJob(args.method, load_fold(args.folds, args.fold), Path(args.pre_dir),
                    Path(args.out))  # fmt: skip
    rows = run_method(cfg, job)
    print(f"method {args.method} fold {args.fold}: {len(rows)} test case(s) -> {args.out}")


def predict(args: Namespace) -> None:
    from sizepenalty.predict import PredictJob, run_predict

    job = PredictJob(
        Path(args.study), args.arm, Path(args.cases), Path(args.out),
        tuple(args.seed) if args.seed else None, tuple(args.fold) if args.fold else None,
        tuple(args.case) if args.case else None, args.device, args.threads, args.skip_invalid,
    )  # fmt: skip
    result = run_predict(job)
    ens = result.ensemble
    runs = ", ".join(m.key.id for m in ens.members)
    print(f"{ens.arm}: {len(ens.members)} model(s) ({runs}), threshold {ens.threshold:g} "
          f"({ens.rule}); {result.written} case(s) predicted, {result.resumed} written before, "
          f"{len(result.invalid)} invalid -> {job.out}")  # fmt: skip


# ----------------------------------------------------------------------------- tables, figures, report, runs


def aggregate(args: Namespace) -> None:
    from sizepenalty.metrics import get_profile
    from sizepenalty.report.aggregate import run_aggregate
    from sizepenalty.report.tables import frame_markdown, main_columns, to_markdown

    sj = _cfg(args, "aggregate")
    cfg = sj.config
    result = run_aggregate(cfg, sj.plan, args.out_dir, args.parent_run_file)
    print(
        to_markdown(result.frames["table_main"], main_columns(
            get_profile(cfg.metrics.profile).columns("main"), result.frames["table_main"]))
    )
    pairs = result.frames["table_pairs"]
    if len(pairs):
        shown = [
            "Baseline",
            "Candidate",
            "Metric",
            "Delta",
            "Direction",
            "CI low",
            "CI high",
            "p (Holm)",
        ]
        print("\n" + frame_markdown(pairs[shown]))


def figures(args: Namespace) -> None:
    from sizepenalty.report.figures import run_figures

    sj = _cfg(args, "figures")
    for path in run_figures(sj.config, sj.plan, args.out_dir):
        print(path)


def report(args: Namespace) -> None:
    from sizepenalty.report.html import run_report

    size = run_report(_cfg(args, "report").config, args.tables_dir, args.figures_dir, args.out)
    print(f"report -> {args.out} ({size / 1e6:.1f} MB)")


def explainer(args: Namespace) -> None:
    from sizepenalty.report.explainer import run_explainer

    run_explainer(_cfg(args, "explainer").config, args.out)
    print(f"explainer -> {args.out}")


def sync(args: Namespace) -> None:
    from sizepenalty.config import study_config
    from sizepenalty.errors import InputError
    from sizepenalty.paths import StudyLayout
    from sizepenalty.tracking import sync_study

    cfg = study_config(args.config)
    runs = Path(args.runs_dir) if args.runs_dir else StudyLayout(cfg.study_dir).runs
    if not runs.is_dir():
        raise InputError(f"{runs}: no training run folders there (is {args.config} the config "
                         "of a study that ran?)")  # fmt: skip
    result = sync_study(cfg, runs)
    for note in result.notes:
        print(note)
    if result.parent_created:
        print(f"the study's parent run was made again ({result.parent}): the store had lost it")
    if result.relinked:
        print(f"{result.relinked} run(s) linked to the study's parent run {result.parent}")
    if result.unreachable:
        raise InputError(
            f"{cfg.tracking_uri()}: tracking store not reachable ({result.unreachable})"
        )
    print(f"{result.runs} run record(s) in sync with {cfg.tracking_uri()}: {result.created} run(s) "
          f"created, {result.metric_values} metric value(s) added")  # fmt: skip


def retrain(args: Namespace) -> None:
    from sizepenalty.config import study_config
    from sizepenalty.retrain import clear_training, select_runs, trained, training_dirs
    from sizepenalty.runs import StudyPlan
    from sizepenalty.tracking import tracker_for

    cfg = study_config(args.config)
    dirs = training_dirs(cfg, select_runs(StudyPlan(cfg), args.runs))
    tracker = tracker_for(cfg)
    cleared = 0
    for run_dir in dirs:
        if args.dry_run:
            print(f"would clear {run_dir}" if trained(run_dir) else f"{run_dir}: not trained yet")
        elif clear_training(run_dir, tracker):
            cleared += 1
            print(f"cleared {run_dir}")
        else:
            print(f"{run_dir}: not trained yet")
    if cleared:
        print(f"{cleared} run(s) cleared: the next `make run` (or snakemake with the study's "
              "options) trains them from epoch 0 and reruns what depends on them")  # fmt: skip


def compare(args: Namespace) -> None:
    from sizepenalty.config import study_config
    from sizepenalty.errors import InputError
    from sizepenalty.paths import StudyLayout
    from sizepenalty.tracking import Tracker, read_run_id, run_table

    cfg = study_config(args.config)
    uri, parent = args.uri or cfg.tracking_uri(), args.parent
    if parent is None:
        parent = read_run_id(StudyLayout(cfg.study_dir).parent_run)
    client = Tracker(uri, cfg.tracking.experiment).reader()  # never creates a store
    table = run_table(client, cfg.tracking.experiment, parent, args.metrics, args.all)
    if table is None:
        raise InputError(f"{uri}: no experiment {cfg.tracking.experiment!r} in this tracking store")
    table = table.drop(columns=["experiment_id"])
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        print(table.to_markdown(index=False, floatfmt=".4f", missingval="–"))
