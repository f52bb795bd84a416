rule aggregate:
    input:
        metrics=expand(
            os.path.join(STUDY, "metrics/{combo}/fold{fold}.csv"),
            combo=COMBO_IDS,
            fold=FOLDS,
        ),
        parent=os.path.join(STUDY, "mlflow_parent_run.txt"),
    output:
        cases=os.path.join(STUDY, "tables/per_case_metrics.csv"),
        main=os.path.join(STUDY, "tables/table_main.md"),
    log:
        os.path.join(STUDY, "logs/aggregate.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        tables=lambda w, output: os.path.dirname(output.main),
        config=CONFIG_ARG,
    shell:
        "sizepenalty aggregate {params.config} --metrics {input.metrics} --out-dir {params.tables}"
        " --parent-run-file {input.parent} > {log} 2>&1"
