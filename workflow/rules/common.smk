import sys

from sizepenalty.config import ConfigError, workflow_config
from sizepenalty.paths import StudyLayout
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
# its rerun decision was not based on.
CONFIG_ARG = f"--config {L.effective_config}"


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
    from sizepenalty.tracking import check_store, set_study_status

    if CFG.tracking.enabled:
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


def stop_worker():
    import os

    from sizepenalty import worker

    name = os.environ.get(worker.ENV)
    if name and name != "0":
        worker.stop(name)
