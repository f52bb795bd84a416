"""The ``sizepenalty`` command line: one verb per pipeline stage, as an argument table.

Each verb's arguments are declared here and handed to the function of the same name in
:mod:`sizepenalty.commands`, which calls the stage. Input problems
(:class:`~sizepenalty.errors.InputError`: a config key, a case, a file) become one line on stderr
and exit code 2; a verb that needs an optional dependency the installation lacks says which
extra brings it; output to a reader that stopped reading (``sizepenalty losses | head -1``)
ends the command quietly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from sizepenalty import __version__


def a(*flags: str, **kwargs) -> tuple[tuple[str, ...], dict]:
    return flags, kwargs


CONFIG = a("--config", "-c", default="config.yaml", help="study config YAML (default: %(default)s)")
STUDY = a("--config", "-c", default="config.yaml", help="the study's config: its effective config "
          "results/<study>/config.effective.yaml (found from any folder), or a config file "
          "read as the workflow reads it, relative to this folder (default: %(default)s)")  # fmt: skip
PLANNED = a("--fingerprint", default=None, help="the stage's settings hash the workflow planned "
            "this job with; the job stops if the configuration it reads has other settings")  # fmt: skip
RUN = (CONFIG, a("--run", required=True, metavar="COMBO/VARIANT/seedS/foldK",
                 help="the run, e.g. DTS/main/seed42/fold0 (variant main = no overrides)"),
       PLANNED, a("--folds", required=True, help="folds JSON from `sizepenalty folds`"),
       a("--pre-dir", required=True, help="preprocessed cases"))  # fmt: skip
DEVICE = a("--device", choices=("auto", "cpu", "cuda"), default=None,
           help="where to compute (default: the config's train.device)")
CONN = (6, 18, 26)

VERBS: dict[str, tuple[str, tuple]] = {
    "validate-config": ("print the configuration a workflow run would use, defaults filled, or "
                        "every problem in it", (
        a("--config", "-c", action="append", default=[], metavar="FILE",
          help="a --configfile of the run (repeatable; merged in order over ./config.yaml, the "
               "Snakefile's own configfile, as `snakemake --configfile FILE ...` merges them)"),)),
    "schema": ("print the complete config schema (with the loss terms' keys) as YAML", ()),
    "losses": ("list the loss combinations with their terms and weights", (CONFIG,)),
    "synth": ("write the embedded synthetic stroke cohort (ISLES 2022 BIDS layout)", (
        a("--out", required=True, help="cohort root to write (ISLES 2022 layout)"),
        a("--cases", type=int, default=20, help="number of cases (default: %(default)s, at least 3)"),
        a("--seed", type=int, default=42, help="the cohort's random seed (default: %(default)s)"),
        a("--shape", type=int, nargs=3, metavar=("D", "H", "W"), default=None, help="volume shape in voxels (default: the config's, else 24 48 40)"),
        a("--spacing", type=float, nargs=3, metavar=("D", "H", "W"), default=None, help="voxel spacing in mm (default: the config's, else 2 2 2)"),
        a("--mean-lesions", type=float, default=None, help="mean number of lesions per case (default: the config's, else 5.9)"),
        a("--no-shine-through", action="store_true", help="no T2 shine-through regions (bright on both DWI and ADC, not lesions)"),
        a("--config", "-c", default=None, help="take shape/spacing/lesions from this config"),
        PLANNED)),
    "cohort": ("discover and validate every case of the configured dataset", (CONFIG, PLANNED,
        a("--root", default=None, help="cohort root for a synthetic dataset (default <study>/data/raw)"),
        a("--out", required=True, help="validated case list (TSV) to write"),
        a("--skip-invalid", action="store_true", help="list and skip bad cases instead of stopping"))),
    "preprocess": ("normalise, add the mismatch channel, crop/pad or resample; one file per case", (
        CONFIG, PLANNED, a("--cases", required=True, help="case list from `sizepenalty cohort`"),
        a("--case", action="append", default=None, help="case id (repeatable; default: all)"),
        a("--out-dir", required=True, help="writes <case>.npz and <case>.json here"),
        a("--skip-invalid", action="store_true", help="list and skip bad cases instead of stopping"))),
    "folds": ("deterministic k-fold train/val/test splits, written once as JSON", (CONFIG, PLANNED,
        a("--stats-dir", required=True, help="folder of per-case statistics from preprocess"),
        a("--cases", default=None, help="restrict to the cases of this list"),
        a("--out", required=True, help="folds JSON to write"))),
    "summary": ("dataset summary table (thesis Table 4.1 analogue) as CSV and Markdown", (
        CONFIG, PLANNED, a("--stats-dir", required=True, help="folder of per-case statistics from preprocess"),
        a("--cases", default=None, help="restrict to the cases of this list"),
        a("--folds", default=None, help="folds JSON: add each fold's train/val/test counts"),
        a("--out-csv", required=True, help="the table as CSV"),
        a("--out-md", required=True, help="the table as Markdown"))),
    "study-run": ("create the study's MLflow parent run once and store its id", (
        CONFIG, a("--out", required=True, help="file to store the parent run id in"))),
    "train": ("train one run (combination, variant, seed, fold); resumes an unfinished checkpoint", (*RUN,
        a("--run-dir", required=True, help="checkpoints, epoch log, run record and done marker"),
        a("--parent-run-file", default=None, help="the study's MLflow parent-run file"), DEVICE,
        a("--max-epochs", type=int, default=None, help=argparse.SUPPRESS))),
    "infer": ("sliding-window (+TTA) probabilities for a fold's validation and test cases", (
        *RUN, a("--run-dir", required=True, help="the training's run folder (best.pt)"), DEVICE,
        a("--out-dir", required=True, help="probability maps (float16) for val/ and test/"))),
    "evaluate-fold": ("pick the threshold on validation, apply it to test, per-case metrics CSV", (
        *RUN, a("--prob-dir", required=True, help="the run's probability maps (val/, test/)"),
        a("--out", required=True, help="per-case metrics CSV (per-lesion rows go beside it)"),
        a("--threshold-out", required=True, help="JSON with the validation-selected threshold"),
        a("--nifti-dir", default=None, help="write thresholded test predictions as NIfTI here"))),
    "evaluate": ("metrics for one mask pair (--gt/--pred), or the study's tables, statistics, figures "
                 "and report for the prediction folders of any methods (--reference/--method)", (
        a("--gt", default=None, help="one pair: the reference mask (NIfTI)"),
        a("--pred", default=None, help="one pair: the predicted mask (NIfTI), same grid as --gt"),
        a("--reference", default=None, help="folders: the references, an ISLES 2022 root, a manifest CSV (case_id,dwi,adc,mask) or a folder of <case>.nii.gz masks"),
        a("--method", action="append", default=None, metavar="NAME=DIR", help="folders: a method's masks, <case>.nii.gz or <case>_pred.nii.gz on each reference's grid, taken as final (repeatable; NAME: a lowercase name or a combination's)"),
        a("--out", default=None, help="folders: writes metrics/, tables/, figures/ and report.html here"),
        a("--folds", default=None, help="folders: a folds JSON (`sizepenalty folds`, a study's data/folds.json): each test case in its fold (default: every case, one fold)"),
        a("--fold", type=int, action="append", default=None, help="folders: only this fold of --folds (repeatable; default: the study's folds.run with --config, else all)"),
        a("--pair", nargs=2, action="append", default=None, metavar=("BASELINE", "CANDIDATE"), help="folders: a paired comparison (repeatable; default: the first method against each other)"),
        a("--config", "-c", default=None, help="folders: a study (results folder or config file) whose metric settings, strata and bootstrap to use (default: the defaults)"),
        a("--connectivity", type=int, choices=CONN, default=None, help="lesion instances (default: 26, as panoptica)"),
        a("--matching", choices=("iou", "overlap"), default=None, help="matching behind PQ, SQ and RQ: one-to-one at an IoU threshold (panoptica's) or by any shared voxel (default: iou)"),
        a("--iou-threshold", type=float, default=None, help="IoU a matched pair needs (default: 0.5)"),
        a("--strict", action="store_const", const=True, default=None, help="match at IoU > threshold (default: >=, as panoptica)"),
        a("--min-size", type=int, default=0, help="one pair: drop predicted components smaller than N voxels"),
        a("--removal-connectivity", type=int, choices=CONN, default=18, help="of --min-size (default: %(default)s, thesis §4.5)"),
        a("--profile", choices=("thesis", "isles22"), default=None, help="metric set (default: thesis)"),
        a("--json", action="store_true", help="one pair: print one JSON object (default: key = value lines)"))),
    "evaluate-method": ("score an external method's masks of one fold's test cases (the study's methods:)", (
        CONFIG, PLANNED, a("--method", required=True, help="the method's name (methods.<name>)"),
        a("--fold", type=int, required=True, help="the fold whose test cases to score"),
        a("--folds", required=True, help="folds JSON from `sizepenalty folds`"),
        a("--pre-dir", required=True, help="preprocessed cases (their original masks are the references)"),
        a("--out", required=True, help="per-case metrics CSV (per-lesion rows go beside it)"))),
    "predict": ("apply a study's trained models to new cases: masks and probability maps as NIfTI on each input's grid", (
        a("--study", required=True, help="the study: its results folder (holding config.effective.yaml) or that file"),
        a("--arm", required=True, help="the arm to apply: a combination (DTS), optionally @variant (DTS@tau300)"),
        a("--seed", type=int, action="append", default=None, help="only this training seed's models (repeatable; default: all the arm's)"),
        a("--fold", type=int, action="append", default=None, help="only this fold's model (repeatable; default: every fold: the ensemble)"),
        a("--cases", required=True, help="an ISLES 2022 root, a manifest CSV (case_id,dwi,adc) or a folder of <case>_dwi/<case>_adc NIfTI pairs"),
        a("--case", action="append", default=None, help="only this case id (repeatable; default: all)"),
        a("--out", required=True, help="writes <case>_pred.nii.gz, <case>_prob.nii.gz and predictions.csv here (resumes)"),
        DEVICE, a("--threads", type=int, default=None, help="CPU threads (default: the study's train.threads)"),
        a("--skip-invalid", action="store_true", help="name and skip invalid cases instead of stopping"))),
    "aggregate": ("thesis-style tables, paired statistics and the thesis side-by-side", (
        CONFIG, PLANNED, a("--out-dir", required=True, help="tables folder to write (the runs' metrics are read from the study folder)"),
        a("--parent-run-file", default=None, help="attach the tables to this MLflow run; every run record is pushed to MLflow"))),
    "figures": ("Figs. 3.1, 5.1, 5.2 and the case overlays (PNG + PDF)", (CONFIG, PLANNED,
        a("--out-dir", required=True, help="figures folder to write (tables, runs and probability maps are read from the study folder)"))),
    "report": ("one self-contained HTML report: config, data, tables, figures, statistics, runs", (
        CONFIG, PLANNED, a("--tables-dir", required=True, help="the aggregate stage's tables"),
        a("--figures-dir", required=True, help="the figures stage's figures"),
        a("--out", required=True, help="the HTML report (self-contained)"))),
    "explainer": ("the interactive SPL explainer as one offline HTML page", (CONFIG, PLANNED,
        a("--out", required=True, help="the explainer page (one offline HTML file)"))),
    "sync": ("push every training's run record to the tracking store (missing runs and steps)", (
        STUDY, a("--runs-dir", default=None, help="training run folders (default: <study>/runs)"))),
    "retrain": ("clear runs' trainings so that the next `make run` (or snakemake) trains them from epoch 0", (
        STUDY, a("runs", nargs="+", metavar="RUN", help="a run (DTS/main/seed42/fold0), or a prefix "
                 "of one (DTS/main/seed42: its folds), or an arm (DTS, DTS@tau300: all its runs)"),
        a("--dry-run", "-n", action="store_true", help="only list the run folders it would clear"))),
    "worker": (None, (  # internal: the workflow starts one per run (sizepenalty.worker)
        a("--name", required=True, help="the worker's socket name (abstract unix socket)"),
        a("--idle", type=float, default=900.0, help="exit after this many seconds without a job"),
        a("--parent", type=int, default=None, help="exit when this process is gone"))),
    "compare": ("table of the study's MLflow runs (one per combination and fold)", (STUDY,
        a("--uri", default=None, help="tracking URI (default: from the config)"),
        a("--parent", default=None, help="parent run id (default: the study's, from its results folder)"),
        a("--metrics", nargs="+", default=["best_val_dice", "test_dice", "test_pq", "test_rve", "test_fn_overlap", "test_fp_overlap"], help="MLflow metrics to show, one column each (default: %(default)s)"),
        a("--all", action="store_true", help="also list runs superseded by a rerun with other settings"),
        a("--format", choices=("markdown", "csv"), default="markdown", help="table format (default: %(default)s)"))),
}  # fmt: skip
"""Every verb: its help (None: internal, left out of the listing) and its arguments (flags,
argparse keyword arguments)."""

DESCRIPTION = """\
Size Penalty Loss study: data, training, inference, metrics and report stages.

Run a study from the repository's folder (its Snakefile and config.yaml):
  make run                                   set up .venv, then the default study
  snakemake --cores all                      the same with the environment active
  snakemake --cores all --configfile presets/isles22.yaml my.yaml
                                             another study (files merged over config.yaml)
Results go to <results>/<study>/ (report.html first). `sizepenalty validate-config -c FILE`
shows the configuration a run would use; the README's "Running a study" has the rest."""

EPILOG = """\
The workflow calls one stage per job; each also runs by hand (`sizepenalty <stage> --help`).
After a study: `compare` lists its MLflow runs, `retrain` clears runs to train them again,
`sync` pushes run records to a tracking server that was down."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sizepenalty", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"sizepenalty {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<stage>", title="stages")
    for name, (help_text, arguments) in VERBS.items():
        # A verb without help (the internal worker) is not listed: argparse lists a sub-command
        # only when it is given a help text.
        listed = {"help": help_text} if help_text else {}
        p = sub.add_parser(name, description=help_text, **listed)
        for flags, kwargs in arguments:
            p.add_argument(*flags, **kwargs)
    return parser


# Verbs a warm worker may run (sizepenalty.worker); everything else starts as usual.
WARM = {"synth", "cohort", "preprocess", "folds", "summary", "study-run", "train", "infer",
        "evaluate-fold", "evaluate-method", "aggregate", "figures", "report", "explainer", "sync"}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in WARM and os.environ.get("SIZEPENALTY_WORKER"):
        from sizepenalty.worker import run_via_worker

        rc = run_via_worker(argv)
        if rc is not None:
            return rc
    args = build_parser().parse_args(argv)
    if not args.command:
        build_parser().print_help()
        return 0
    if args.command == "worker":
        from sizepenalty.worker import serve

        serve(args.name, main, args.idle, args.parent)
        return 0
    from sizepenalty import commands
    from sizepenalty.errors import InputError

    try:
        rc = int(getattr(commands, args.command.replace("-", "_"))(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is met inside the try
        return rc
    except InputError as exc:
        print(f"sizepenalty {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"sizepenalty {args.command}: error: needs {exc.name}, which this installation "
              f"lacks: pip install 'sizepenalty[{extra}]'", file=sys.stderr)  # fmt: skip
        return 2
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:
        return 130


EXTRAS = {"yaml": "study", "jsonschema": "study", "mlflow": "study", "snakemake": "study",
          "matplotlib": "study", "tabulate": "study", "nilearn": "synthetic"}  # fmt: skip
"""The optional dependencies a verb may import, and the extra that brings each (pyproject.toml);
the core install (losses, metrics, strata, statistics) has none of them."""


def _reader_gone() -> int:
    """The reader of stdout stopped reading (``sizepenalty losses | head -1``): end quietly,
    with the status of a process that SIGPIPE ended (the output is incomplete)."""
    # What is still buffered cannot be written: point stdout at /dev/null so that Python's
    # final flush does not report the closed pipe again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
