rule evaluate:
    input:
        probs=L.probs("{combo}", "{fold}"),
        folds=L.folds,
    output:
        metrics=L.metrics("{combo}", "{fold}"),
        lesions=L.lesions("{combo}", "{fold}"),
        threshold=L.threshold("{combo}", "{fold}"),
        nifti=directory(L.predictions("{combo}", "{fold}")),
    log:
        L.log("evaluate", "{combo}_fold{fold}"),
    benchmark:
        L.benchmark("evaluate", "{combo}_fold{fold}")
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        predir=L.preprocessed,
        config=CONFIG_ARG,
        settings=settings("evaluate"),
    shell:
        "sizepenalty evaluate-fold {params.config} --fingerprint {params.settings}"
        " --combo {wildcards.combo} --fold {wildcards.fold} --folds {input.folds}"
        " --pre-dir {params.predir} --prob-dir {input.probs} --out {output.metrics}"
        " --threshold-out {output.threshold} --nifti-dir {output.nifti} >> {log} 2>&1"
