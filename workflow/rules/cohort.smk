if CFG.dataset.source == "synthetic":

    rule synth:
        input:
            stamp=stamp("synth"),
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
            "sizepenalty synth {params.config} --fingerprint {params.settings:q}"
            " --out={params.root:q} --cases {params.cases:q} --seed {params.seed:q}"
            " >> {log:q} 2>&1"


checkpoint cohort:
    input:
        cohort_inputs,
        stamp=stamp("cohort"),
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
        # Its last line (cases found, skipped, lesion-free) goes to the console too.
        "sizepenalty cohort {params.config} --fingerprint {params.settings:q}"
        " --root={params.root:q} --out={output.cases:q} >> {log:q} 2>&1; tail -n 1 -- {log:q}"
