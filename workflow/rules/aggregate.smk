rule aggregate:
    input:
        # the per-lesion files beside them are read too (declared below as inputs)
        metrics=expand(L.metrics("{combo}", "{fold}"), combo=COMBO_IDS, fold=FOLDS),
        lesions=expand(L.lesions("{combo}", "{fold}"), combo=COMBO_IDS, fold=FOLDS),
        parent=L.parent_run,
        # each training's record (run.json) gets its test metrics and is pushed to MLflow
        done=expand(L.done("{combo}", "{fold}"), combo=COMBO_IDS, fold=FOLDS),
    output:
        cases=L.per_case,
        lesions=L.per_lesion,
        tables=[
            report(p, caption="../report/tables.rst", category="Tables")
            for p in L.all_tables("csv")
        ],
        md=L.all_tables("md"),
        tex=L.all_tables("tex"),
    log:
        L.log("aggregate"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        tables=L.tables,
        runs=L.runs,
        config=CONFIG_ARG,
        settings=settings("aggregate"),
    shell:
        "sizepenalty aggregate {params.config} --fingerprint {params.settings}"
        " --metrics {input.metrics} --out-dir {params.tables}"
        " --parent-run-file {input.parent} --runs-dir {params.runs} >> {log} 2>&1"
