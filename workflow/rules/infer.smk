rule infer:
    input:
        # best.pt, in the training's run folder beside its done marker (the training this run
        # shares with another arm when their training settings are equal)
        done=upstream("train", L.done),
        folds=ancient(L.folds),
        stamp=stamp("infer"),
    output:
        probs=directory(L.probs(KEY)),
    log:
        L.log("infer", KEY.id),
    benchmark:
        L.benchmark("infer", KEY.id)
    conda:
        "../../envs/sizepenalty.yaml"
    threads: CFG.train.threads
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    params:
        rundir=upstream("train", L.run_dir),
        predir=L.preprocessed,
        run=run_id,
        config=CONFIG_ARG,
        settings=settings("infer"),
    shell:
        stoppable(
            "sizepenalty infer {params.config} --fingerprint {params.settings:q}"
            " --run {params.run:q} --folds={input.folds:q} --pre-dir={params.predir:q}"
            " --run-dir={params.rundir:q} --out-dir={output.probs:q} >> {log:q} 2>&1"
        )
