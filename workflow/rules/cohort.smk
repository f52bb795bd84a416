if CFG.dataset.source == "synthetic":

    rule synth:
        output:
            participants=L.participants,
        log:
            L.log("synth"),
        conda:
            "../../envs/sizepenalty.yaml"
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            cases=CFG.dataset.synthetic.cases,
            seed=CFG.seeds.cohort,
            root=L.raw,
            config=CONFIG_ARG,
            settings=settings("synth"),
        shell:
            "sizepenalty synth {params.config} --fingerprint {params.settings}"
            " --out {params.root} --cases {params.cases} --seed {params.seed} >> {log} 2>&1"


checkpoint cohort:
    input:
        cohort_inputs,
    output:
        cases=L.cases,
    log:
        L.log("cohort"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        root=L.raw,
        config=CONFIG_ARG,
        settings=settings("cohort"),
    shell:
        "sizepenalty cohort {params.config} --fingerprint {params.settings}"
        " --root {params.root} --out {output.cases} >> {log} 2>&1"
