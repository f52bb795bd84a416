# Training, inference and evaluation read the preprocessed cases from L.preprocessed. They depend
# on the folds file, which is made from every preprocessed case, so they run after preprocessing
# and again when it changes, without each job listing all cases (planning a 185-case study took
# 6.7 s when every job re-resolved the cohort checkpoint).


rule train:
    input:
        folds=L.folds,
        parent=L.parent_run,
    output:
        # Only the done marker is declared. Kept in the run folder beyond it, on purpose:
        # last.pt (written every epoch and on a stop signal, so a rerun resumes where the
        # killed job stopped instead of at epoch 0), best.pt (read by infer), epochs.csv and
        # run.json (the run's tracking record, pushed to MLflow by aggregate/`sizepenalty sync`).
        done=L.done(KEY),
    log:
        L.log("train", KEY.id),
    benchmark:
        L.benchmark("train", KEY.id)
    conda:
        "../../envs/sizepenalty.yaml"
    threads: CFG.train.threads
    resources:
        mem_mb=4000,
        runtime=600,
        gpu=1,
    params:
        rundir=lambda w: L.run_dir(RunKey.from_wildcards(w)),
        predir=L.preprocessed,
        run=run_id,
        config=CONFIG_ARG,
        settings=settings("train"),
        # Snakemake empties {log} before a rerun; the attempts log keeps every (re)start of a
        # resumed training, and {log} gets a copy of it when the job ends, however it ends.
        attempts=lambda w: L.log("train", RunKey.from_wildcards(w).id + ".attempts"),
    shell:
        # SLURM's SIGUSR1 reaches every process of the job: the shell ignores it, the training
        # checkpoints on it.
        "trap '' USR1; trap 'cp {params.attempts} {log}' EXIT; "
        "sizepenalty train {params.config} --fingerprint {params.settings}"
        " --run {params.run} --folds {input.folds}"
        " --pre-dir {params.predir} --run-dir {params.rundir}"
        " --parent-run-file {input.parent} >> {params.attempts} 2>&1"
