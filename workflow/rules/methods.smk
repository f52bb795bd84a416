# External methods (config `methods:`): each method's masks of one fold's test cases scored
# against the study's references (the preprocessed cases keep each original mask) as a run's test
# predictions are, without threshold or small-component removal. The aggregate reads them.


rule method:
    input:
        folds=ancient(L.folds),
        # the method's folder (a changed folder reruns its jobs)
        masks=lambda w: CFG.methods[w.method].path,
        # its files and the fold's test cases by content (common.smk: stamp)
        stamp=stamp("method"),
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
        "sizepenalty evaluate-method {params.config} --fingerprint {params.settings:q}"
        " --method={wildcards.method:q} --fold={wildcards.fold:q} --folds={input.folds:q}"
        " --pre-dir={params.predir:q} --out={output.metrics:q} >> {log:q} 2>&1"
