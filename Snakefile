# The Size Penalty Loss study as one DAG: cohort -> preprocess -> folds -> train -> infer ->
# threshold + evaluate -> aggregate -> figures -> report. Rules live in workflow/rules/; every step
# is a `sizepenalty <stage>` command, so each also runs by hand.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml", set_default=False)


container: config["container"]["image"]


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/folds.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        os.path.join(STUDY, "tables/dataset_summary.md"),
        os.path.join(STUDY, "tables/table_main.md"),
        os.path.join(STUDY, "tables/per_case_metrics.csv"),
        os.path.join(STUDY, "report.html"),
        os.path.join(STUDY, "explainer.html"),
