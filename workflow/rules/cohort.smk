if CFG.dataset.source == "synthetic":

    rule synth:
        output:
            participants=os.path.join(STUDY, "data/raw/participants.tsv"),
        log:
            os.path.join(STUDY, "logs/synth.log"),
        conda:
            "../../envs/sizepenalty.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            cases=CFG.dataset.synthetic.cases,
            seed=CFG.seed,
            root=lambda w, output: os.path.dirname(output.participants),
            config=CONFIG_ARG,
        shell:
            "sizepenalty synth {params.config} --out {params.root} --cases {params.cases}"
            " --seed {params.seed} > {log} 2>&1"


checkpoint cohort:
    input:
        cohort_inputs,
    output:
        cases=os.path.join(STUDY, "data/cases.tsv"),
    log:
        os.path.join(STUDY, "logs/cohort.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        root=os.path.join(STUDY, "data/raw"),
        config=CONFIG_ARG,
    shell:
        "sizepenalty cohort {params.config} --root {params.root} --out {output.cases} > {log} 2>&1"
