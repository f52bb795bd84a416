# Training, inference and evaluation read the preprocessed cases from L.preprocessed. They depend
# on the folds file, which is made from every preprocessed case, so they run after preprocessing,
# without each job listing all cases (planning a 185-case study took 6.7 s when every job listed
# them). The file is `ancient`: a rerun of the folds job reruns no run by itself; a run reruns when
# its stamp changes, i.e. when its own cases or their content change (sizepenalty.provenance).


rule train:
    input:
        folds=ancient(L.folds),
        parent=L.parent_run,
        stamp=stamp("train"),
    output:
        # Only the done marker is declared. Kept in the run folder beyond it, on purpose:
        # last.pt (written on a stop signal, with each new best.pt, at the end and every
        # train.checkpoint_minutes, so a rerun resumes the killed job instead of starting at
        # epoch 0), best.pt (read by infer), epochs.csv and
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
        # checkpoints on it. A stop signal to the shell reaches the training (stoppable).
        "attempts={params.attempts:q}; log={log:q}; "
        "trap '' USR1; trap 'cp -- \"$attempts\" \"$log\"' EXIT; "
        + stoppable(
            "sizepenalty train {params.config} --fingerprint {params.settings:q}"
            " --run {params.run:q} --folds={input.folds:q}"
            " --pre-dir={params.predir:q} --run-dir={params.rundir:q}"
            ' --parent-run-file={input.parent:q} >> "$attempts" 2>&1'
        )
