rule train:
    input:
        folds=os.path.join(STUDY, "data/folds.json"),
        parent=os.path.join(STUDY, "mlflow_parent_run.txt"),
    output:
        # Only the done marker is declared: checkpoints in the run folder survive a kill, so a
        # rerun (--rerun-incomplete) resumes from the last epoch instead of epoch 0.
        done=os.path.join(STUDY, "runs/{combo}/fold{fold}/done.json"),
    log:
        os.path.join(STUDY, "logs/train/{combo}_fold{fold}.log"),
    benchmark:
        os.path.join(STUDY, "benchmarks/train/{combo}_fold{fold}.tsv")
    conda:
        "../../envs/sizepenalty.yaml"
    threads: CFG.train.threads
    resources:
        mem_mb=4000,
        runtime=600,
        gpu=1,
    params:
        rundir=lambda w, output: os.path.dirname(output.done),
        predir=PREPROCESSED,
        config=CONFIG_ARG,
        settings=train_fingerprint,
    shell:
        "sizepenalty train {params.config} --combo {wildcards.combo} --fold {wildcards.fold}"
        " --folds {input.folds} --pre-dir {params.predir} --run-dir {params.rundir}"
        " --fingerprint {params.settings} --parent-run-file {input.parent} > {log} 2>&1"
