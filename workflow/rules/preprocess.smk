rule preprocess:
    input:
        cases=os.path.join(STUDY, "data/cases.tsv"),
    output:
        npz=os.path.join(STUDY, "data/preprocessed/{case}.npz"),
        stats=os.path.join(STUDY, "data/preprocessed/{case}.json"),
    log:
        os.path.join(STUDY, "logs/preprocess/{case}.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        outdir=lambda w, output: os.path.dirname(output.npz),
        config=CONFIG_ARG,
        settings=config_hash(CFG.raw["preprocess"]),
    shell:
        "sizepenalty preprocess {params.config} --cases {input.cases} --case {wildcards.case}"
        " --out-dir {params.outdir} > {log} 2>&1"


rule dataset_summary:
    input:
        cases=os.path.join(STUDY, "data/cases.tsv"),
        folds=os.path.join(STUDY, "data/folds.json"),
        stats=lambda w: expand(
            os.path.join(STUDY, "data/preprocessed/{case}.json"), case=case_ids(w)
        ),
    output:
        csv=os.path.join(STUDY, "tables/dataset_summary.csv"),
        md=os.path.join(STUDY, "tables/dataset_summary.md"),
    log:
        os.path.join(STUDY, "logs/dataset_summary.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        statsdir=lambda w, input: os.path.dirname(input.stats[0]),
        config=CONFIG_ARG,
    shell:
        "sizepenalty summary {params.config} --stats-dir {params.statsdir} --cases {input.cases}"
        " --folds {input.folds} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
