rule infer:
    input:
        # best.pt, in the training's run folder beside its done marker
        done=L.done("{combo}", "{fold}"),
        folds=L.folds,
    output:
        probs=directory(L.probs("{combo}", "{fold}")),
    log:
        L.log("infer", "{combo}_fold{fold}"),
    benchmark:
        L.benchmark("infer", "{combo}_fold{fold}")
    conda:
        "../../envs/sizepenalty.yaml"
    threads: CFG.train.threads
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    params:
        rundir=lambda w: L.run_dir(w.combo, w.fold),
        predir=L.preprocessed,
        config=CONFIG_ARG,
        settings=settings("infer"),
    shell:
        "sizepenalty infer {params.config} --fingerprint {params.settings}"
        " --combo {wildcards.combo} --fold {wildcards.fold} --folds {input.folds}"
        " --pre-dir {params.predir} --run-dir {params.rundir} --out-dir {output.probs}"
        " >> {log} 2>&1"
