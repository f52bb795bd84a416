rule folds:
    input:
        cases=L.cases,
        stats=lambda w: [L.preprocessed_case(c, "json") for c in case_ids(w)],
        stamp=stamp("folds"),
    output:
        folds=L.folds,
    log:
        L.log("folds"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        statsdir=L.preprocessed,
        config=CONFIG_ARG,
        settings=settings("folds"),
    shell:
        "sizepenalty folds {params.config} --fingerprint {params.settings:q}"
        " --stats-dir={params.statsdir:q} --cases={input.cases:q} --out={output.folds:q}"
        " >> {log:q} 2>&1"


# Bookkeeping: the MLflow parent run, made once (the Snakefile's onstart/onsuccess/onerror
# reopen and end it).
rule study_run:
    output:
        parent=L.parent_run,
    log:
        L.log("study_run"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config=CONFIG_ARG,
    shell:
        "sizepenalty study-run {params.config} --out={output.parent:q} >> {log:q} 2>&1"
