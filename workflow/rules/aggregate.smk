rule aggregate:
    input:
        # the per-lesion files beside them are read too (declared below as inputs); the job reads
        # every run's files from the study folder by the run plan (a run that shares another
        # arm's evaluation reads that one's)
        metrics=every("evaluate", L.metrics),
        lesions=every("evaluate", L.lesions),
        # the external methods' metrics (methods.smk) of every trained fold, beside the runs'
        methods=[L.method_metrics(m, f) for m in CFG.methods for f in CFG.folds.trained],
        method_lesions=[
            L.method_lesions(m, f) for m in CFG.methods for f in CFG.folds.trained
        ],
        parent=L.parent_run,
        # each training's record (run.json) gets its test metrics and is pushed to MLflow
        done=every("train", L.done),
        stamp=stamp("aggregate"),
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
        config=CONFIG_ARG,
        settings=settings("aggregate"),
    shell:
        "sizepenalty aggregate {params.config} --fingerprint {params.settings:q}"
        " --out-dir={params.tables:q} --parent-run-file={input.parent:q} >> {log:q} 2>&1"
