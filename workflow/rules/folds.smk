rule folds:
    input:
        cases=os.path.join(STUDY, "data/cases.tsv"),
        stats=lambda w: expand(
            os.path.join(STUDY, "data/preprocessed/{case}.json"), case=case_ids(w)
        ),
    output:
        folds=os.path.join(STUDY, "data/folds.json"),
    log:
        os.path.join(STUDY, "logs/folds.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        statsdir=lambda w, input: os.path.dirname(input.stats[0]),
        config=CONFIG_ARG,
        settings=config_hash({"folds": CFG.raw["folds"], "seed": CFG.raw["seed"]}),
    shell:
        "sizepenalty folds {params.config} --stats-dir {params.statsdir} --cases {input.cases}"
        " --out {output.folds} > {log} 2>&1"


rule study_run:
    output:
        parent=os.path.join(STUDY, "mlflow_parent_run.txt"),
    log:
        os.path.join(STUDY, "logs/study_run.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config=CONFIG_ARG,
    shell:
        "sizepenalty study-run {params.config} --out {output.parent} > {log} 2>&1"
