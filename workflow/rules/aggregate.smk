from sizepenalty.report.aggregate import TABLES


rule aggregate:
    input:
        metrics=expand(
            os.path.join(STUDY, "metrics/{combo}/fold{fold}.csv"),
            combo=COMBO_IDS,
            fold=FOLDS,
        ),
        # read beside each metrics file by `sizepenalty aggregate`
        lesions=expand(
            os.path.join(STUDY, "metrics/{combo}/fold{fold}_lesions.csv"),
            combo=COMBO_IDS,
            fold=FOLDS,
        ),
        parent=os.path.join(STUDY, "mlflow_parent_run.txt"),
        done=expand(
            os.path.join(STUDY, "runs/{combo}/fold{fold}/done.json"),
            combo=COMBO_IDS,
            fold=FOLDS,
        ),
    output:
        cases=os.path.join(STUDY, "tables/per_case_metrics.csv"),
        main=os.path.join(STUDY, "tables/table_main.md"),
        tables=[
            report(
                os.path.join(STUDY, f"tables/{name}.csv"),
                caption="../report/tables.rst",
                category="Tables",
            )
            for name in TABLES
        ],
        tex=expand(os.path.join(STUDY, "tables/{name}.tex"), name=TABLES),
        md=expand(
            os.path.join(STUDY, "tables/{name}.md"),
            name=[t for t in TABLES if t != "table_main"],
        ),
        lesions=os.path.join(STUDY, "tables/per_lesion_metrics.csv"),
    log:
        os.path.join(STUDY, "logs/aggregate.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        tables=lambda w, output: os.path.dirname(output.main),
        runs=lambda w, input: os.path.dirname(
            os.path.dirname(os.path.dirname(input.done[0]))
        ),
        config=CONFIG_ARG,
        settings=config_hash(
            {
                "report": CFG.raw["report"],
                "seed": CFG.raw["seed"],
                "metrics": CFG.raw["metrics"],
            }
        ),
    shell:
        "sizepenalty aggregate {params.config} --metrics {input.metrics} --out-dir {params.tables}"
        " --parent-run-file {input.parent} --runs-dir {params.runs} > {log} 2>&1"
