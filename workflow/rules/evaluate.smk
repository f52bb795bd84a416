rule evaluate:
    input:
        probs=upstream("infer", L.probs),
        folds=ancient(L.folds),
        stamp=stamp("evaluate"),
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
        "sizepenalty evaluate-fold {params.config} --fingerprint {params.settings:q}"
        " --run {params.run:q} --folds={input.folds:q}"
        " --pre-dir={params.predir:q} --prob-dir={input.probs:q} --out={output.metrics:q}"
        " --threshold-out={output.threshold:q} --nifti-dir={output.nifti:q} >> {log:q} 2>&1"
