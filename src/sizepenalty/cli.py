"""The ``sizepenalty`` command line: one subcommand per pipeline stage.

Kept thin: it parses arguments, loads the validated config, calls library functions and turns
expected failures (bad config, bad input data) into one clear line on stderr and exit code 2.
Heavy imports (torch, MONAI, MLflow) happen inside the subcommands that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sizepenalty import __version__


class UserError(Exception):
    """An error caused by input the user controls; printed as one line, exit code 2."""


Handler = Callable[[argparse.Namespace], int | None]
_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Handler]] = []


def command(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand: ``configure`` adds its arguments, the decorated function runs it."""

    def wrap(func: Handler) -> Handler:
        _COMMANDS.append((name, help_text, configure, func))
        return func

    return wrap


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", "-c", default="config.yaml", help="study config YAML (default: %(default)s)"
    )


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


@command(
    "validate-config", "validate a study config and print it with defaults filled", _add_config
)
def _validate_config(args: argparse.Namespace) -> int:
    import yaml

    from sizepenalty.config import load_config

    cfg = load_config(args.config)
    print(yaml.safe_dump(cfg.raw, sort_keys=False), end="")
    print(f"# {args.config}: valid (config hash {cfg.digest()})", file=sys.stderr)
    return 0


@command("losses", "list the loss combinations with their terms and weights", _add_config)
def _losses(args: argparse.Namespace) -> int:
    from sizepenalty.config import load_config
    from sizepenalty.losses import combo_id
    from sizepenalty.study import loss_from_config

    cfg = load_config(args.config)
    for name in cfg.combo_names:
        loss = loss_from_config(cfg, name)
        terms = " + ".join(f"{w:g}*{k}" for k, w in loss.weights.items())
        print(f"{name:5s} id={combo_id(name):4s} {terms}")
    return 0


# ----------------------------------------------------------------------------- data stages


def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="cohort root to write (ISLES 2022 layout)")
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), default=None)
    p.add_argument(
        "--spacing", type=float, nargs=3, metavar=("D", "H", "W"), default=None, help="mm"
    )
    p.add_argument("--mean-lesions", type=float, default=None)
    p.add_argument("--no-shine-through", action="store_true")
    p.add_argument(
        "--config",
        "-c",
        default=None,
        help="take shape/spacing/lesions from this config's dataset.synthetic",
    )


@command(
    "synth", "write the embedded synthetic stroke cohort (ISLES 2022 BIDS layout)", _synth_args
)
def _synth(args: argparse.Namespace) -> int:
    from sizepenalty.data.synth import SynthSpec, write_cohort

    spec = SynthSpec()
    if args.config:
        from sizepenalty.config import load_config

        sc = load_config(args.config).dataset.synthetic
        spec = SynthSpec(tuple(sc.shape), tuple(sc.spacing), sc.mean_lesions, sc.shine_through)
    if args.cases < 3:
        raise UserError(f"--cases {args.cases}: need at least 3 cases (one per lesion-size type)")
    spec = SynthSpec(
        shape=tuple(args.shape) if args.shape else spec.shape,
        spacing=tuple(args.spacing) if args.spacing else spec.spacing,
        mean_lesions=args.mean_lesions if args.mean_lesions else spec.mean_lesions,
        shine_through=spec.shine_through and not args.no_shine_through,
    )
    rows = write_cohort(args.out, args.cases, args.seed, spec)
    n_les = sum(int(r["n_lesions"]) for r in rows)
    print(
        f"wrote {len(rows)} cases ({n_les} lesions, shape {spec.shape}, spacing {spec.spacing} mm) to {args.out}"
    )
    return 0


def _cohort_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument(
        "--root",
        default=None,
        help="cohort root for dataset.source synthetic (default <study>/data/raw)",
    )
    p.add_argument("--out", required=True, help="validated case list (TSV) to write")
    p.add_argument(
        "--skip-invalid", action="store_true", help="list and skip bad cases instead of stopping"
    )


def _discover(cfg, root: str | None):
    from sizepenalty.data.cohort import discover

    synthetic_root = root or str(cfg.study_dir / "data" / "raw")
    return discover(cfg.dataset.source, cfg.dataset.path, synthetic_root)


@command("cohort", "discover and validate every case of the configured dataset", _cohort_args)
def _cohort(args: argparse.Namespace) -> int:
    from sizepenalty.config import load_config
    from sizepenalty.data.cohort import CaseError, CohortError, validate_cohort, write_cases_tsv

    cfg = load_config(args.config)
    skip = args.skip_invalid or cfg.dataset.skip_invalid
    try:
        cases = _discover(cfg, args.root)
        good, bad = validate_cohort(
            cases, cfg.dataset.binarize_labels, cfg.dataset.affine_atol, skip
        )
    except (CaseError, CohortError) as exc:
        raise UserError(str(exc)) from None
    for err in bad:
        print(f"skipped invalid case: {err}", file=sys.stderr)
    write_cases_tsv(args.out, good)
    print(f"{len(good)} valid case(s), {len(bad)} skipped -> {args.out}")
    return 0


def _preprocess_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--cases", required=True, help="case list from `sizepenalty cohort`")
    p.add_argument(
        "--case", action="append", default=None, help="case id (repeatable; default: all)"
    )
    p.add_argument("--out-dir", required=True, help="writes <case>.npz and <case>.json here")
    p.add_argument("--skip-invalid", action="store_true")


@command(
    "preprocess",
    "normalise, add the mismatch channel, crop/pad or resample; one file per case",
    _preprocess_args,
)
def _preprocess(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sizepenalty.config import load_config
    from sizepenalty.data.cohort import CaseError, load_case, read_cases_tsv
    from sizepenalty.data.io import write_json_atomic
    from sizepenalty.data.preprocess import lesion_stats, preprocess_case, save_preprocessed

    cfg = load_config(args.config)
    skip = args.skip_invalid or cfg.dataset.skip_invalid
    listed = {c.case_id: c for c in read_cases_tsv(args.cases)}
    wanted = args.case or list(listed)
    unknown = [c for c in wanted if c not in listed]
    if unknown:
        raise UserError(f"{args.cases}: no case {', '.join(unknown)}")
    out = Path(args.out_dir)
    loaded = []
    # Validate (load) everything asked for before writing anything: a bad case leaves no output.
    for cid in wanted:
        try:
            loaded.append(
                load_case(listed[cid], cfg.dataset.binarize_labels, cfg.dataset.affine_atol)
            )
        except CaseError as exc:
            if not skip:
                raise UserError(str(exc)) from None
            print(f"skipped invalid case: {exc}", file=sys.stderr)
    pp = cfg.preprocess
    for case in loaded:
        pre = preprocess_case(case, tuple(pp.shape), pp.mode, tuple(pp.clip_percentiles))
        stats = lesion_stats(pre.mask, pre.spacing, cfg.metrics.connectivity)
        stats.update(
            case_id=case.case_id,
            shape="x".join(map(str, pre.mask.shape)),
            spacing="x".join(f"{s:g}" for s in pre.spacing),
            orig_shape_xyz="x".join(map(str, case.orig_shape)),
            lesion_voxels_outside_crop=pre.lesion_voxels_outside,
        )
        if pre.lesion_voxels_outside:
            print(
                f"warning: {case.case_id}: {pre.lesion_voxels_outside} lesion voxel(s) fall outside the "
                f"{pp.shape} crop; consider a larger preprocess.shape or mode resample",
                file=sys.stderr,
            )
        save_preprocessed(out / f"{case.case_id}.npz", pre)
        write_json_atomic(out / f"{case.case_id}.json", stats)
    print(f"preprocessed {len(loaded)} case(s) -> {out}")
    return 0


def _stats_table(stats_dir: str, cases: str | None = None):
    import json
    from pathlib import Path

    import pandas as pd

    files = sorted(Path(stats_dir).glob("*.json"))
    if cases:
        from sizepenalty.data.cohort import read_cases_tsv

        ids = [c.case_id for c in read_cases_tsv(cases)]
        files = [Path(stats_dir) / f"{cid}.json" for cid in ids]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise UserError(f"missing preprocessed statistics: {', '.join(missing[:3])}")
    if not files:
        raise UserError(
            f"{stats_dir}: no per-case statistics (*.json); run `sizepenalty preprocess` first"
        )
    return pd.DataFrame([json.loads(f.read_text()) for f in files])


def _folds_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument(
        "--stats-dir", required=True, help="folder of per-case statistics from preprocess"
    )
    p.add_argument("--cases", default=None, help="restrict to the cases of this list")
    p.add_argument("--out", required=True, help="folds JSON to write")


@command("folds", "deterministic k-fold train/val/test splits, written once as JSON", _folds_args)
def _folds(args: argparse.Namespace) -> int:
    from sizepenalty.config import load_config
    from sizepenalty.data.folds import FoldError, check_folds, make_folds
    from sizepenalty.data.io import write_json_atomic

    cfg = load_config(args.config)
    stats = _stats_table(args.stats_dir, args.cases)
    volumes = dict(zip(stats["case_id"], stats["lesion_ml"].astype(float)))
    try:
        folds = make_folds(
            volumes, cfg.folds.k, cfg.folds.val_fraction, cfg.seed, cfg.folds.stratify
        )
    except FoldError as exc:
        raise UserError(str(exc)) from None
    check_folds(folds)
    write_json_atomic(args.out, folds)
    sizes = ", ".join(f"{len(f['train'])}/{len(f['val'])}/{len(f['test'])}" for f in folds["folds"])
    print(f"{cfg.folds.k} folds (train/val/test: {sizes}) -> {args.out}")
    return 0


def _summary_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--stats-dir", required=True)
    p.add_argument("--cases", default=None)
    p.add_argument(
        "--folds", default=None, help="folds JSON: add each fold's train/val/test counts"
    )
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)


@command(
    "summary",
    "dataset summary table (thesis Table 4.1 analogue) as CSV and Markdown",
    _summary_args,
)
def _summary(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from sizepenalty.config import load_config
    from sizepenalty.data.io import write_text_atomic
    from sizepenalty.data.summary import dataset_summary

    cfg = load_config(args.config)
    folds = json.loads(Path(args.folds).read_text()) if args.folds else None
    table = dataset_summary(
        _stats_table(args.stats_dir, args.cases), cfg.metrics.strata, cfg.study, folds,
        cfg.folds.trained, tau=cfg.losses.nominal_tau,
    )  # fmt: skip
    write_text_atomic(args.out_csv, table.to_csv(index=False))
    write_text_atomic(args.out_md, table.to_markdown(index=False) + "\n")
    print(table.to_string(index=False))
    return 0


# ----------------------------------------------------------------------------- evaluation


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", required=True, help="reference mask (NIfTI)")
    p.add_argument("--pred", required=True, help="predicted mask (NIfTI), same grid as --gt")
    p.add_argument(
        "--connectivity",
        type=int,
        choices=(6, 18, 26),
        default=26,
        help="lesion instances (default: %(default)s, as panoptica)",
    )
    p.add_argument("--matching", choices=("iou", "overlap"), default="iou")
    p.add_argument("--iou-threshold", type=float, default=0.5)
    p.add_argument(
        "--strict", action="store_true", help="match at IoU > threshold (default: >=, as panoptica)"
    )
    p.add_argument(
        "--min-size", type=int, default=0, help="drop predicted components smaller than N voxels"
    )
    p.add_argument(
        "--removal-connectivity",
        type=int,
        choices=(6, 18, 26),
        default=18,
        help="connectivity of the --min-size removal (default: %(default)s, thesis §4.5)",
    )
    p.add_argument("--profile", choices=("thesis", "isles22"), default="thesis")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object (default: key = value lines)"
    )


def _read_mask(path: str, role: str):
    from pathlib import Path

    import numpy as np

    from sizepenalty.data.cohort import CaseError, _load_volume

    try:
        img, data = _load_volume(role, "mask", Path(path))
    except CaseError as exc:
        raise UserError(str(exc)) from None
    values = np.unique(data)
    if not np.isin(values, (0.0, 1.0)).all():
        raise UserError(f"{role}: mask is not binary (values {values[:5].tolist()}) [{path}]")
    return img, data


@command("evaluate", "metrics for one reference/prediction mask pair", _evaluate_args)
def _evaluate(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from sizepenalty.metrics import InstanceRule, case_metrics, isles22_metrics

    gt_img, gt = _read_mask(args.gt, "reference")
    pred_img, pred = _read_mask(args.pred, "prediction")
    if gt.shape != pred.shape:
        raise UserError(
            f"prediction: shape ({','.join(map(str, pred.shape))}) != reference shape ({','.join(map(str, gt.shape))}) [{args.pred}]"
        )
    if not np.allclose(gt_img.affine, pred_img.affine, atol=1e-3, rtol=0):
        raise UserError(f"prediction: affine differs from the reference affine [{args.pred}]")
    spacing = tuple(float(z) for z in gt_img.header.get_zooms()[:3])
    if args.profile == "isles22":
        result = isles22_metrics(gt, pred, spacing)
    else:
        rule = InstanceRule(args.connectivity, args.matching, args.iou_threshold, args.strict)
        result = case_metrics(
            gt, pred, spacing, rule, min_size=args.min_size,
            removal_connectivity=args.removal_connectivity,
        )  # fmt: skip
    if args.json:
        # Strict JSON: undefined values (NaN, e.g. the matched-pair ASSD without a match) -> null.
        print(json.dumps({k: None if v != v else v for k, v in result.items()}))
    else:
        for key, value in result.items():
            print(f"{key} = {value}")
    return 0


# ----------------------------------------------------------------------------- training, inference


def _fold_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--combo", required=True, help="loss combination, e.g. DTS or F+S")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--folds", required=True, help="folds JSON from `sizepenalty folds`")
    p.add_argument("--pre-dir", required=True, help="preprocessed cases")


def _load_fold(path: str, k: int) -> dict:
    import json

    folds = json.loads(open(path).read())["folds"]
    if not 0 <= k < len(folds):
        raise UserError(f"{path}: no fold {k} (have 0..{len(folds) - 1})")
    return folds[k]


def _tracker(cfg):
    """The study's failure-tolerant MLflow tracker (artifacts beside the SQLite store)."""
    from sizepenalty.tracking import Tracker

    return Tracker(
        cfg.tracking_uri(), cfg.tracking.experiment, cfg.tracking.enabled, cfg.artifact_location()
    )


def _check_combo(cfg, combo: str) -> str:
    from sizepenalty.combos import LossCodeError, canonical_name, combo_id

    try:
        name = canonical_name(combo)
    except LossCodeError as exc:
        raise UserError(str(exc)) from None
    if combo_id(name) not in {combo_id(c) for c in cfg.combo_names}:
        raise UserError(
            f"--combo {combo}: not one of losses.combinations ({', '.join(cfg.combo_names)})"
        )
    return name


def _train_args(p: argparse.ArgumentParser) -> None:
    _fold_args(p)
    p.add_argument("--run-dir", required=True, help="checkpoints, epoch log and done marker")
    p.add_argument(
        "--parent-run-file", default=None, help="file holding the study's MLflow parent run id"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument(
        "--fingerprint",
        default=None,
        help="settings hash; a run made with another one restarts from epoch 0",
    )
    p.add_argument("--max-epochs", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--no-predict",
        action="store_true",
        help="do not leave validation/test probabilities in the run folder for the infer stage",
    )


@command(
    "train", "train one (loss combination, fold); resumes from its last checkpoint", _train_args
)
def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sizepenalty import __version__
    from sizepenalty.combos import combo_id
    from sizepenalty.config import load_config
    from sizepenalty.tracking import flatten, git_commit
    from sizepenalty.train import train

    cfg = load_config(args.config)
    name = _check_combo(cfg, args.combo)
    fold = _load_fold(args.folds, args.fold)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from sizepenalty.train import reset_if_stale

    fingerprint = args.fingerprint or cfg.digest()
    reset_if_stale(
        run_dir, fingerprint
    )  # before reading the MLflow run id: a reset starts a new run
    tracker = _tracker(cfg)
    id_file = run_dir / "mlflow_run_id.txt"
    parent = (
        Path(args.parent_run_file).read_text().strip()
        if args.parent_run_file and Path(args.parent_run_file).exists()
        else None
    )
    run_id = tracker.start(f"{name}-fold{args.fold}", id_file.read_text().strip() if id_file.exists() else None, parent,
                           {"combo": name, "fold": str(args.fold)})  # fmt: skip
    if run_id and not id_file.exists():
        id_file.write_text(run_id + "\n")
    params = {"combo": name, "combo_id": combo_id(name), "fold": args.fold, "seed": cfg.seed, "version": __version__,
              "git_commit": git_commit(Path(__file__).parent), "config_hash": cfg.digest()}  # fmt: skip
    params.update(flatten({k: cfg.raw[k] for k in ("losses", "model", "train", "preprocess")}))
    tracker.log_params(params)

    def on_epoch(row: dict) -> None:
        tracker.log_metrics(
            {
                f"train_{k}" if k in ("loss", "D", "T", "F", "S") else k: v
                for k, v in row.items()
                if k != "epoch"
            },
            step=int(row["epoch"]),
        )

    try:
        result = train(
            cfg,
            name,
            fold,
            args.pre_dir,
            run_dir,
            on_epoch,
            args.device,
            args.max_epochs,
            fingerprint,
        )
    except BaseException:
        tracker.end("FAILED" if not isinstance(sys.exc_info()[1], KeyboardInterrupt) else "KILLED")
        raise
    if result.skipped:
        print(f"{name} fold {args.fold}: already trained ({run_dir / 'done.json'}); nothing to do")
        return 0
    for f in ("best.pt", "epochs.csv", "train_meta.json"):
        tracker.log_artifact(run_dir / f)
    tracker.log_metrics({"best_val_dice": result.best_score, "best_epoch": result.best_epoch})
    if result.epochs_done == cfg.train.epochs:
        tracker.end("FINISHED")
        if not args.no_predict:
            from sizepenalty.infer import predict_into_run

            n = predict_into_run(cfg, name, fold, args.pre_dir, run_dir)
            print(f"{name} fold {args.fold}: {n} probability map(s) left for the infer stage")
    return 0


def _infer_args(p: argparse.ArgumentParser) -> None:
    _fold_args(p)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out-dir", required=True, help="probability maps (float16) for val/ and test/")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument(
        "--recompute",
        action="store_true",
        help="always run the network, even when the training job left matching probabilities",
    )


@command(
    "infer",
    "sliding-window (+TTA) probabilities for a fold's validation and test cases",
    _infer_args,
)
def _infer(args: argparse.Namespace) -> int:
    from sizepenalty.config import load_config
    from sizepenalty.infer import predict_fold, reuse_predictions

    cfg = load_config(args.config)
    name = _check_combo(cfg, args.combo)
    fold = _load_fold(args.folds, args.fold)
    n = None if args.recompute else reuse_predictions(cfg, name, fold, args.run_dir, args.out_dir)
    if n is not None:
        print(
            f"{name} fold {args.fold}: {n} probability map(s) made by the training job from the same "
            f"checkpoint and inference settings -> {args.out_dir}"
        )
        return 0
    n = predict_fold(cfg, name, fold, args.pre_dir, args.run_dir, args.out_dir, args.device)
    print(f"{name} fold {args.fold}: {n} probability map(s) -> {args.out_dir}")
    return 0


def _evalfold_args(p: argparse.ArgumentParser) -> None:
    _fold_args(p)
    p.add_argument("--prob-dir", required=True)
    p.add_argument("--out", required=True, help="per-case metrics CSV (test split)")
    p.add_argument(
        "--threshold-out", required=True, help="JSON with the validation-selected threshold"
    )
    p.add_argument(
        "--nifti-dir", default=None, help="write thresholded test predictions as NIfTI here"
    )
    p.add_argument(
        "--run-dir",
        default=None,
        help="training run folder (to add test metrics to its MLflow run)",
    )


@command(
    "evaluate-fold",
    "pick the threshold on validation, apply it to test, per-case metrics CSV",
    _evalfold_args,
)
def _evaluate_fold(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sizepenalty.config import load_config
    from sizepenalty.data.io import write_json_atomic
    from sizepenalty.evaluate import LESION_COLUMNS, evaluate_fold

    # No pandas/MLflow here: this runs once per (combo, fold); the aggregate step attaches the
    # test metrics to every training's MLflow run in one go (or --run-dir does it here).
    cfg = load_config(args.config)
    name = _check_combo(cfg, args.combo)
    ev = evaluate_fold(
        cfg, name, _load_fold(args.folds, args.fold), args.pre_dir, args.prob_dir, args.nifti_dir
    )
    _write_csv(args.out, ev.cases, ["case_id"])
    _write_csv(_lesions_path(args.out), ev.lesions, LESION_COLUMNS)
    write_json_atomic(
        args.threshold_out,
        {
            "threshold": ev.threshold,
            "val_dice_by_threshold": {str(k): v for k, v in ev.val_dice.items()},
        },
    )
    if args.run_dir and (Path(args.run_dir) / "mlflow_run_id.txt").exists():
        from sizepenalty.tracking import test_metrics

        tracker = _tracker(cfg)
        tracker.run_id = (Path(args.run_dir) / "mlflow_run_id.txt").read_text().strip()
        tracker.log_metrics(test_metrics(ev.cases) | {"threshold": ev.threshold})
        tracker.log_artifact(args.out)
    dice = sum(r["dice"] for r in ev.cases) / len(ev.cases) if ev.cases else float("nan")
    print(
        f"{name} fold {args.fold}: threshold {ev.threshold} (val Dice {ev.val_dice[ev.threshold]:.4f}); "
        f"test Dice {dice:.4f} over {len(ev.cases)} case(s)"
    )
    return 0


def _lesions_path(metrics_csv: str):
    """``<combo>/fold<k>.csv`` -> ``<combo>/fold<k>_lesions.csv`` (one row per reference lesion)."""
    from pathlib import Path

    p = Path(metrics_csv)
    return p.with_name(f"{p.stem}_lesions.csv")


def _write_csv(path, rows: list[dict], empty_header) -> None:
    import csv
    import io

    from sizepenalty.data.io import write_text_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(rows[0]) if rows else list(empty_header), lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _study_run_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--out", required=True, help="file to store the parent run id in")


@command("study-run", "create the study's MLflow parent run once and store its id", _study_run_args)
def _study_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sizepenalty import __version__
    from sizepenalty.config import load_config
    from sizepenalty.data.io import write_text_atomic
    from sizepenalty.tracking import flatten

    cfg = load_config(args.config)
    out = Path(args.out)
    if out.exists() and out.read_text().strip():
        print(f"parent run {out.read_text().strip()} exists")
        return 0
    tracker = _tracker(cfg)
    run_id = tracker.start(
        f"study-{cfg.study}", tags={"study": cfg.study, "sizepenalty_version": __version__}
    )
    tracker.log_params(flatten(cfg.raw) | {"config_hash": cfg.digest()})
    write_text_atomic(out, (run_id or "") + "\n")
    print(f"study parent run: {run_id or '(tracking unavailable)'} -> {out}")
    return 0


# ----------------------------------------------------------------------------- aggregation


def _aggregate_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument(
        "--metrics", nargs="+", required=True, help="per-case metric CSVs from evaluate-fold"
    )
    p.add_argument("--out-dir", required=True)
    p.add_argument("--parent-run-file", default=None, help="attach the tables to this MLflow run")
    p.add_argument(
        "--runs-dir",
        default=None,
        help="training run folders (<combo>/fold<k>/): add each fold's test metrics to its MLflow run",
    )


@command(
    "aggregate",
    "thesis-style tables, paired statistics and the thesis side-by-side from per-case metrics",
    _aggregate_args,
)
def _aggregate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sizepenalty.config import load_config
    from sizepenalty.report.aggregate import (
        CASE_KEYS,
        LESION_KEYS,
        AggregateError,
        build_tables,
        read_metrics,
        write_tables,
    )
    from sizepenalty.report.tables import frame_markdown, to_markdown

    cfg = load_config(args.config)
    try:
        cases = read_metrics(args.metrics, CASE_KEYS)
        lesions = read_metrics([_lesions_path(m) for m in args.metrics], LESION_KEYS)
        result = build_tables(cfg, cases, lesions)
    except AggregateError as exc:
        raise UserError(str(exc)) from None
    out = Path(args.out_dir)
    write_tables(cfg, result, out)
    _track_aggregate(cfg, args, cases, out)
    from sizepenalty.metrics import get_profile

    print(
        to_markdown(result.frames["table_main"], get_profile(cfg.metrics.profile).columns("main"))
    )
    pairs = result.frames["table_pairs"]
    if len(pairs):
        print("\n" + frame_markdown(pairs[["Baseline", "Candidate", "Metric", "Delta", "Direction", "CI low", "CI high", "p (Holm)"]]))  # fmt: skip
    return 0


def _track_aggregate(cfg, args, cases, out) -> None:
    """Test metrics onto each training's MLflow run; tables and the run comparison onto the parent."""
    from pathlib import Path

    from sizepenalty.combos import combo_id
    from sizepenalty.tracking import compare_runs, test_metrics

    if not cfg.tracking.enabled:
        return
    tracker = _tracker(cfg)
    if args.runs_dir:
        for (combo, fold), group in cases.groupby(["combo", "fold"]):
            id_file = Path(args.runs_dir) / combo_id(combo) / f"fold{fold}" / "mlflow_run_id.txt"
            if not id_file.exists():
                continue
            tracker.run_id = id_file.read_text().strip()
            rows = group.to_dict("records")
            tracker.log_metrics(
                test_metrics(rows) | {"threshold": float(group["threshold"].iloc[0])}
            )
    parent = Path(args.parent_run_file) if args.parent_run_file else None
    if parent is None or not parent.exists() or not parent.read_text().strip():
        return
    tracker.run_id = parent.read_text().strip()
    from sizepenalty.data.io import write_text_atomic

    comparison = compare_runs(tracker, tracker.run_id)
    if comparison is not None:
        shown = comparison.drop(columns=["run_id", "experiment_id"])
        write_text_atomic(
            out / "mlflow_runs.md",
            shown.to_markdown(index=False, floatfmt=".4f", missingval="–") + "\n",
        )
        write_text_atomic(out / "mlflow_runs.csv", comparison.to_csv(index=False))
    for f in sorted(out.glob("*")):
        if f.suffix in (".csv", ".md", ".tex"):
            tracker.log_artifact(f, "tables")
    tracker.log_metrics(
        {f"mean_test_{m}": float(cases[m].mean()) for m in ("dice", "pq", "rve") if m in cases}
    )


def _compare_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--uri", default=None, help="tracking URI (default: from the config)")
    p.add_argument(
        "--parent",
        default=None,
        help="parent run id (default: the study's, from its results folder)",
    )
    p.add_argument(
        "--metrics",
        nargs="+",
        default=["best_val_dice", "test_dice", "test_pq", "test_rve", "test_fn", "test_fp"],
        help="metric columns to show",
    )
    p.add_argument("--format", choices=("markdown", "csv"), default="markdown")


@command(
    "compare", "table of the study's MLflow runs (one per combination and fold)", _compare_args
)
def _compare(args: argparse.Namespace) -> int:
    from sizepenalty.config import load_config
    from sizepenalty.tracking import Tracker, run_table

    cfg = load_config(args.config)
    uri = args.uri or cfg.tracking_uri()
    parent = args.parent
    parent_file = cfg.study_dir / "mlflow_parent_run.txt"
    if parent is None and parent_file.exists():
        parent = parent_file.read_text().strip() or None
    tracker = Tracker(uri, cfg.tracking.experiment)
    table = run_table(tracker.client(), cfg.tracking.experiment, parent, args.metrics)
    if table is None:
        raise UserError(f"{uri}: no experiment {cfg.tracking.experiment!r} in this tracking store")
    table = table.drop(columns=["experiment_id"])
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        print(table.to_markdown(index=False, floatfmt=".4f", missingval="–"))
    return 0


# ----------------------------------------------------------------------------- figures and report


def _figures_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--tables-dir", required=True, help="output folder of `sizepenalty aggregate`")
    p.add_argument("--runs-dir", required=True, help="training run folders (epochs.csv)")
    p.add_argument("--probs-dir", required=True, help="probability maps from `sizepenalty infer`")
    p.add_argument("--metrics-dir", required=True, help="per-fold thresholds from evaluate-fold")
    p.add_argument("--pre-dir", required=True, help="preprocessed cases")
    p.add_argument("--out-dir", required=True)


@command("figures", "Figs. 3.1, 5.1, 5.2 and the case overlays (PNG + PDF)", _figures_args)
def _figures(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from sizepenalty.combos import canonical_name, combo_id
    from sizepenalty.config import load_config
    from sizepenalty.data.preprocess import load_preprocessed
    from sizepenalty.evaluate import postprocess
    from sizepenalty.metrics import get_profile
    from sizepenalty.report import figures as F

    cfg = load_config(args.config)
    tables, out = Path(args.tables_dir), Path(args.out_dir)

    def read(name: str, optional: bool = False) -> pd.DataFrame:
        try:
            return pd.read_csv(tables / name)
        except pd.errors.EmptyDataError:
            if optional:  # aggregate writes an empty table when no pair is configured
                return pd.DataFrame()
            raise UserError(f"{tables / name}: empty") from None
        except (OSError, pd.errors.ParserError) as exc:
            raise UserError(f"{tables}: cannot read the aggregate tables: {exc}") from None

    cases = read("per_case_metrics.csv")
    cases = cases.assign(combo=cases["combo"].map(canonical_name))
    pairs, strata = read("table_pairs.csv", True), read("table_strata.csv", True)
    made = F.fig_spl(out / "fig_3_1_spl", cfg.losses.nominal_tau, cfg.losses.eps, cfg.losses.cap)
    improvement = [label for label, _, _ in get_profile(cfg.metrics.profile).columns("improvement")]
    made += F.fig_improvement(pairs, strata, out / "fig_5_1_improvement", improvement)
    studied = {canonical_name(x) for x in cfg.combo_names}
    curves = [c for c in cfg.report.curves if canonical_name(c) in studied]
    made += F.fig_curves(args.runs_dir, curves, out / "fig_5_2_curves")
    small = cfg.metrics.strata_ml[0]  # the smallest covering bin (thesis: < 5 mL)
    for i, (a, b) in enumerate(cfg.report.pairs, start=1):
        a, b = canonical_name(a), canonical_name(b)
        row = F.pick_overlay_case(cases, a, b, small)
        base = out / f"fig_overlay_{i}"
        if row is None:
            note = f"{a} vs {b}: no shared test case with a lesion below {small:g} mL"
            made += F.fig_note(note, base)
            continue
        fold, cid = int(row["fold"]), str(row["case_id"])
        pre = load_preprocessed(Path(args.pre_dir) / f"{cid}.npz")
        preds = []
        for combo in (a, b):
            threshold_file = Path(args.metrics_dir) / combo_id(combo) / f"fold{fold}_threshold.json"
            t = json.loads(threshold_file.read_text())["threshold"]
            prob_file = (
                Path(args.probs_dir) / combo_id(combo) / f"fold{fold}" / "test" / f"{cid}.npz"
            )
            preds.append(postprocess(np.load(prob_file)["prob"].astype(np.float32), t, cfg))
        made += F.fig_overlay(
            row, a, b, pre.image[0], pre.mask > 0, preds[0], preds[1], pre.voxel_ml, base
        )
    for path in made:
        print(path)
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--tables-dir", required=True)
    p.add_argument("--figures-dir", required=True)
    p.add_argument("--out", required=True, help="the HTML report (self-contained)")


@command(
    "report",
    "one self-contained HTML report: config, data, tables, figures, statistics, runs",
    _report_args,
)
def _report(args: argparse.Namespace) -> int:
    from sizepenalty.config import load_config
    from sizepenalty.data.io import write_text_atomic
    from sizepenalty.report.html import build_report

    cfg = load_config(args.config)
    html = build_report(cfg, args.tables_dir, args.figures_dir)
    write_text_atomic(args.out, html)
    print(f"report -> {args.out} ({len(html) / 1e6:.1f} MB)")
    return 0


def _explainer_args(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--out", required=True, help="the explainer page (one offline HTML file)")


@command("explainer", "the interactive SPL explainer as one offline HTML page", _explainer_args)
def _explainer(args: argparse.Namespace) -> int:
    from sizepenalty.config import load_config
    from sizepenalty.data.io import write_text_atomic
    from sizepenalty.report.explainer import build_explainer
    from sizepenalty.study import loss_hyperparams

    cfg = load_config(args.config)
    html = build_explainer(loss_hyperparams(cfg))
    write_text_atomic(args.out, html)
    print(f"explainer -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sizepenalty",
        description="Size Penalty Loss study: data, training, inference, metrics and report stages.",
    )
    parser.add_argument("--version", action="version", version=f"sizepenalty {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<stage>")
    for name, help_text, configure, func in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from sizepenalty.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as exc:
        print(f"sizepenalty {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
