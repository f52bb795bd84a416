# The Size Penalty Loss study as one DAG: cohort -> preprocess -> folds -> train -> infer ->
# threshold + evaluate -> aggregate -> figures -> report. Rules live in workflow/rules/; every step
# is a `sizepenalty <stage>` command, so each also runs by hand. Paths come from
# sizepenalty.paths.StudyLayout (L), rerun fingerprints from sizepenalty.stages.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


container: CFG.container.image


report: "workflow/report/workflow.rst"


include: "workflow/rules/fingerprints.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/folds.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/methods.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


onstart:
    write_effective_config()
    study_started()
    start_worker()
    announce_study()


onsuccess:
    stop_worker()
    study_ended("FINISHED")
    announce_report()
    end_rate_timers()


onerror:
    stop_worker()
    study_ended("FAILED")
    end_rate_timers()


# Every training's done marker is a target of its own: a deleted run folder (or one cleared by
# `sizepenalty retrain`) trains again, and what depends on it reruns, although the later outputs
# are still there (Snakemake does not remake a missing file that only feeds up-to-date ones).
rule all:
    default_target: True
    input:
        every("train", L.done),
        L.summary("md"),
        L.table("table_main", "md"),
        L.per_case,
        L.report,
        L.explainer,
        # every job's stamp (workflow/rules/common.smk): a changed one reruns its job
        every_stamp,
