# External methods (config `methods:`): each method's masks of one fold's test cases scored
# against the study's references (the preprocessed cases keep each original mask) as a run's test
# predictions are, without threshold or small-component removal. The aggregate reads them.


rule method:
    input:
        folds=L.folds,
        # the method's folder (a changed folder reruns its jobs)
        masks=lambda w: CFG.methods[w.method].path,
    output:
        metrics=L.method_metrics("{method}", "{fold}"),
        lesions=L.method_lesions("{method}", "{fold}"),
    log:
        L.log("method", "{method}/fold{fold}"),
    wildcard_constraints:
        method="|".join(CFG.methods) or "(?!)",
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        predir=L.preprocessed,
        config=CONFIG_ARG,
        settings=settings("method"),
    shell:
        "sizepenalty evaluate-method {params.config} --fingerprint {params.settings}"
        " --method {wildcards.method} --fold {wildcards.fold} --folds {input.folds}"
        " --pre-dir {params.predir} --out {output.metrics} >> {log} 2>&1"
