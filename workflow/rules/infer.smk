rule infer:
    input:
        done=os.path.join(STUDY, "runs/{combo}/fold{fold}/done.json"),
        folds=os.path.join(STUDY, "data/folds.json"),
    output:
        probs=directory(os.path.join(STUDY, "probs/{combo}/fold{fold}")),
    log:
        os.path.join(STUDY, "logs/infer/{combo}_fold{fold}.log"),
    benchmark:
        os.path.join(STUDY, "benchmarks/infer/{combo}_fold{fold}.tsv")
    conda:
        "../../envs/sizepenalty.yaml"
    threads: CFG.train.threads
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    params:
        rundir=lambda w, input: os.path.dirname(input.done),
        predir=PREPROCESSED,
        config=CONFIG_ARG,
        settings=infer_fingerprint,
    shell:
        "sizepenalty infer {params.config} --combo {wildcards.combo} --fold {wildcards.fold}"
        " --folds {input.folds} --pre-dir {params.predir} --run-dir {params.rundir}"
        " --out-dir {output.probs} > {log} 2>&1"
