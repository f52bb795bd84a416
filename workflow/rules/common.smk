import os
import shlex
import sys

from sizepenalty.config import ConfigError, workflow_config
from sizepenalty.paths import StudyLayout
from sizepenalty.provenance import DataPlan, job_fingerprint, listing
from sizepenalty.runs import PER_RUN_STAGES, RunKey, StudyPlan, wildcard_constraints
from sizepenalty.stages import fingerprint

# The config validated once, by the package's own validator: one line per problem naming the
# configfile and the key (Snakemake's validate() would print the whole schema instead).
try:
    CFG = workflow_config(config, workflow.configfiles)
except ConfigError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)

L = StudyLayout(CFG.study_dir)
# The study's runs (combination x variant x seed x fold) and which of them share a job.
PLAN = StudyPlan(CFG)
# A run key whose values are the wildcards of the rules: per-run paths made from it are patterns.
KEY = RunKey.wildcards()


def run_id(wildcards):
    """The `--run` argument of a per-run job: its RunKey's id (DTS/main/seed42/fold0)."""
    return RunKey.from_wildcards(wildcards).id


# Every job reads the effective configuration (config.yaml + --configfile + --config, defaults
# filled) from this file. It is written when a run starts (onstart, below), never while the
# workflow is only parsed or dry-run; each job checks that its stage's settings in it still have
# the fingerprint the job was planned with (--fingerprint), so a job never runs with settings
# its rerun decision was not based on. The value is shell-quoted already (use it as
# `{params.config}`); every other value in a rule's shell is quoted (the `q` format), and path
# options take their value as `--opt=PATH`, so no path is ever read as shell syntax or an option.
CONFIG_ARG = f"--config={shlex.quote(str(L.effective_config))}"


def settings(stage):
    """The stage's fingerprint (sizepenalty.stages; a per-run stage's from the plan, with its
    variant and seed): params of its rule, checked by its job."""
    if stage in PER_RUN_STAGES:
        return lambda w: PLAN.job(RunKey.from_wildcards(w), stage).fingerprint
    return fingerprint(CFG, stage)


def upstream(stage, path):
    """An input function: ``path`` (a StudyLayout method) of the run whose ``stage`` output this
    run uses (itself, or the arm it shares that job with: StudyPlan.canonical)."""
    return lambda w: path(PLAN.canonical(RunKey.from_wildcards(w), stage))


def every(stage, path):
    """``path`` of every distinct run of ``stage`` (the jobs the study makes)."""
    return [path(k) for k in PLAN.jobs(stage)]


def stoppable(command):
    """A rule shell that runs ``command`` in the background and waits for it, forwarding stop
    signals (TERM, INT, HUP) to it as SIGTERM (a training checkpoints, then exits): a shell that
    gets SIGTERM while it waits for a foreground command dies and leaves the command running.
    The shell ends with the command's exit status, after the command has ended."""
    return (
        f"{command} & job=$!; trap 'kill -TERM $job 2>/dev/null || true' TERM INT HUP; "
        "while kill -0 $job 2>/dev/null; do wait $job || true; done; wait $job"
    )


# ---------------------------------------------------------------------------- fingerprint stamps
# Every job reads its stamp (sizepenalty.provenance): a file named by the fingerprint of its
# settings and of the content of the data it reads, made by the `fingerprint` rule. A changed
# setting, a changed input file (by content) or a study folder moved elsewhere: the jobs whose
# fingerprint changed find no stamp of that name and rerun, wherever the folder lives.
_SETTINGS = {}
_DATA = {}
_LISTING = {}


def stage_fingerprint(stage):
    if stage not in _SETTINGS:
        _SETTINGS[stage] = fingerprint(CFG, stage)
    return _SETTINGS[stage]


def current_case_list():
    """The case list (data/cases.tsv) when the cohort would make it again as it is: the cohort's
    stamp (and a synthetic dataset's synth stamp) is there and the list was written after it.
    Else None: the case list is the checkpoint's (data_plan)."""

    def newer(a, b):
        return (
            a.exists() and b.exists() and a.stat().st_mtime_ns >= b.stat().st_mtime_ns
        )

    current = newer(L.cases, stamp_of("cohort"))
    if CFG.dataset.source == "synthetic":
        current = current and newer(L.participants, stamp_of("synth"))
        current = current and newer(L.cases, L.participants)
    return L.cases if current else None


def data_plan():
    """The study's data plan (the case list's sources, volumes and planned folds), read once per
    version of the case list. While the case list is current (current_case_list) it is read as
    it is, so the per-run jobs do not wait on the cohort checkpoint and Snakemake plans them once
    (each job planned again after the checkpoint is what made planning a 185-case study slow);
    else through the checkpoint, and the jobs whose stamp reads it are planned again once the
    cohort has run."""
    tsv = current_case_list() or checkpoints.cohort.get().output.cases
    st = os.stat(tsv)
    key = (str(tsv), st.st_size, st.st_mtime_ns)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = DataPlan.load(CFG, L, stage_fingerprint("preprocess"))
    return _DATA[key]


def stamp_of(stage, job=None):
    """The stamp of a job of ``stage``: ``job`` is its RunKey (a per-run stage), its case id
    (preprocess), (method, fold) (an external method's job) or None (a stage of one job).
    """
    if stage in PER_RUN_STAGES:
        name, settings_fp = job.id, PLAN.job(job, stage).fingerprint
        data = data_plan().run(job, stage)
    elif stage == "method":  # job: (method name, fold)
        method, fold = job
        name, settings_fp = f"{method}/fold{fold}", stage_fingerprint(stage)
        data = data_plan().method(CFG.methods[method].path, int(fold))
    else:
        name, settings_fp = job or stage, stage_fingerprint(stage)
        if stage == "preprocess":
            data = data_plan().case(job)
        elif stage == "cohort":
            if not _LISTING:
                _LISTING["data"] = listing(CFG, L.root)
            data = _LISTING["data"]
        elif stage == "folds":
            data = data_plan().volumes()
        elif stage == "summary":
            data = data_plan().summary()
        else:
            data = None
    return L.stamp(stage, name, job_fingerprint(settings_fp, data))


def stamp(stage):
    """An input function: the job's stamp (see above)."""

    def path(w):
        if stage in PER_RUN_STAGES:
            return stamp_of(stage, RunKey.from_wildcards(w))
        if stage == "method":
            return stamp_of(stage, (w.method, w.fold))
        return stamp_of(stage, w.case if stage == "preprocess" else None)

    return path


# The stages whose jobs read a stamp (a rule file that adds a stage adds it here).
STAMPED = ["cohort", "folds", "summary", "aggregate", "figures", "report", "explainer"]


def every_stamp(wildcards):
    """Every job's stamp, an input of the `all` rule. Snakemake checks the missing inputs of the
    target, and each missing stamp reruns its job, however many jobs above it run or not (a job
    below a rerun job through an `ancient` input is otherwise never checked)."""
    stamps = [
        stamp_of(s)
        for s in STAMPED + (["synth"] if CFG.dataset.source == "synthetic" else [])
    ]
    stamps += [stamp_of("preprocess", c) for c in data_plan().ids]
    stamps += [stamp_of(s, k) for s in PER_RUN_STAGES for k in PLAN.jobs(s)]
    stamps += [
        stamp_of("method", (m, f)) for m in CFG.methods for f in CFG.folds.trained
    ]
    return stamps


def fingerprint_glob(path, fp):
    """A shell word matching ``path`` with any fingerprint in place of ``fp`` (the rest quoted)."""
    head, tail = path.name.rsplit(f".{fp}", 1)
    folder, fps = shlex.quote(str(path.parent)), "[0-9a-f]" * len(fp)
    return f"{folder}/{shlex.quote(head)}.{fps}" + (shlex.quote(tail) if tail else "")


def write_effective_config():
    import yaml
    from sizepenalty.data.io import write_text_atomic

    text = yaml.safe_dump(CFG.raw, sort_keys=False)
    path = L.effective_config
    if not path.exists() or path.read_text() != text:
        write_text_atomic(path, text)


wildcard_constraints:
    **wildcard_constraints([a.combo for a in PLAN.arms]),
    case=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def case_ids(wildcards):
    """Validated case ids, known once the cohort checkpoint has run."""
    tsv = checkpoints.cohort.get().output.cases
    with open(tsv) as fh:
        return [line.split("\t")[0] for line in fh.read().splitlines()[1:] if line]


def cohort_inputs(wildcards):
    if CFG.dataset.source == "synthetic":
        return [str(L.participants)]
    return []


def study_started():
    """Say on the console whether the tracking store answers; reopen the study's MLflow parent
    run when the study is extended (a first run creates it in the study_run job)."""
    from sizepenalty.tracking import check_store, open_study_store, set_study_status

    if CFG.tracking.enabled:
        # A damaged SQLite store is moved aside, a moved study's artifact paths mended: say so.
        for note in open_study_store(CFG):
            print(note, file=sys.stderr)
        why = check_store(CFG.tracking_uri())
        if why:
            print(f"MLflow store {CFG.tracking_uri()} is not reachable ({why}): every training keeps "
                  "its record in its run folder; `sizepenalty sync` (or the aggregate step) pushes "
                  "them when the store is back.", file=sys.stderr)  # fmt: skip
    set_study_status(CFG, L.parent_run, "RUNNING")


def announce_study():
    """Tell the console (`--logger sizepenalty`: sizepenalty.console) which checkpoint jobs will
    add jobs once they ran (the cohort lists the cases: a preprocess job each)."""
    from snakemake.logging import logger

    jobs = getattr(workflow.dag, "checkpoint_jobs", ())
    pending = sorted({job.rule.name for job in jobs})
    msg = f"Study {CFG.study} in {L.root}"
    if pending:
        msg += f"; checkpoint {', '.join(pending)} adds the per-case jobs"
    logger.info(msg, extra={"sizepenalty_plan": {"checkpoints": pending}})


def announce_report():
    """The run's last word on the console: where the report is."""
    from snakemake.logging import logger

    if L.report.exists():
        logger.info(f"Report: {L.report}", extra={"sizepenalty_report": str(L.report)})


def study_ended(status):
    from sizepenalty.tracking import set_study_status

    set_study_status(CFG, L.parent_run, status)


def start_worker():
    """A warm worker for this run's jobs (sizepenalty.worker): local execution without
    containers or conda only, and not with SIZEPENALTY_WORKER=0. Jobs fall back to running by
    themselves whenever the worker cannot serve them."""
    import os
    import time

    from sizepenalty import worker

    if os.environ.get(worker.ENV) == "0" or not workflow.local_exec:
        return
    if workflow.deployment_settings.deployment_method:
        return
    name = f"sizepenalty-{os.getpid()}-{time.time_ns()}"
    proc = worker.start(name, log=L.log("worker"))
    # Its imports take a few seconds; the first jobs wait for them here.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if worker.ready(name):
            os.environ[worker.ENV] = name
            return
        time.sleep(0.2)
    print(
        "warning: the warm worker did not start; jobs run by themselves",
        file=sys.stderr,
    )


def end_rate_timers():
    """Cancel Snakemake's pending job-rate reevaluation timers once the workflow has ended. They
    are threads Python waits for at exit, each up to the limit's timespan (1000 s in
    profiles/default/config.yaml, which keeps them from multiplying during the run): without
    this a finished run would linger that long before returning."""
    import threading

    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


def stop_worker():
    import os

    from sizepenalty import worker

    name = os.environ.get(worker.ENV)
    if name and name != "0":
        worker.stop(name)
