rule preprocess:
    input:
        # ancient: a new case list reruns no case by itself; a case reruns when the content of
        # its files changes (its stamp: sizepenalty.provenance)
        cases=ancient(L.cases),
        stamp=stamp("preprocess"),
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
        "sizepenalty preprocess {params.config} --fingerprint {params.settings:q}"
        " --cases={input.cases:q} --case {wildcards.case:q} --out-dir={params.outdir:q}"
        " >> {log:q} 2>&1"


rule dataset_summary:
    input:
        cases=L.cases,
        folds=L.folds,
        stats=lambda w: [L.preprocessed_case(c, "json") for c in case_ids(w)],
        stamp=stamp("summary"),
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
        "sizepenalty summary {params.config} --fingerprint {params.settings:q}"
        " --stats-dir={params.statsdir:q} --cases={input.cases:q} --folds={input.folds:q}"
        " --out-csv={output.csv:q} --out-md={output.md:q} >> {log:q} 2>&1"
