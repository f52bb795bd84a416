rule preprocess:
    input:
        cases=L.cases,
    output:
        npz=L.preprocessed_case("{case}", "npz"),
        stats=L.preprocessed_case("{case}", "json"),
    log:
        L.log("preprocess", "{case}"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        outdir=L.preprocessed,
        config=CONFIG_ARG,
        settings=settings("preprocess"),
    shell:
        "sizepenalty preprocess {params.config} --fingerprint {params.settings}"
        " --cases {input.cases} --case {wildcards.case} --out-dir {params.outdir} >> {log} 2>&1"


rule dataset_summary:
    input:
        cases=L.cases,
        folds=L.folds,
        stats=lambda w: [L.preprocessed_case(c, "json") for c in case_ids(w)],
    output:
        csv=L.summary("csv"),
        md=L.summary("md"),
    log:
        L.log("dataset_summary"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        statsdir=L.preprocessed,
        config=CONFIG_ARG,
        settings=settings("summary"),
    shell:
        "sizepenalty summary {params.config} --fingerprint {params.settings}"
        " --stats-dir {params.statsdir} --cases {input.cases} --folds {input.folds}"
        " --out-csv {output.csv} --out-md {output.md} >> {log} 2>&1"
