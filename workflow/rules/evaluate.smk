rule evaluate:
    input:
        probs=upstream("infer", L.probs),
        folds=L.folds,
    output:
        metrics=L.metrics(KEY),
        lesions=L.lesions(KEY),
        threshold=L.threshold(KEY),
        nifti=directory(L.predictions(KEY)),
    log:
        L.log("evaluate", KEY.id),
    benchmark:
        L.benchmark("evaluate", KEY.id)
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        predir=L.preprocessed,
        run=run_id,
        config=CONFIG_ARG,
        settings=settings("evaluate"),
    shell:
        "sizepenalty evaluate-fold {params.config} --fingerprint {params.settings}"
        " --run {params.run} --folds {input.folds}"
        " --pre-dir {params.predir} --prob-dir {input.probs} --out {output.metrics}"
        " --threshold-out {output.threshold} --nifti-dir {output.nifti} >> {log} 2>&1"
