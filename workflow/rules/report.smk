rule report:
    input:
        summary=L.summary("csv"),
        tables=rules.aggregate.output.tables,
        cases=L.per_case,  # edge-case counts per arm
        figures=rules.figures.output.png,
    output:
        html=report(L.report, caption="../report/report.rst", category="Report"),
    log:
        L.log("report"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        tables=L.tables,
        figures=L.figures,
        config=CONFIG_ARG,
        settings=settings("report"),
    shell:
        "sizepenalty report {params.config} --fingerprint {params.settings}"
        " --tables-dir {params.tables} --figures-dir {params.figures} --out {output.html}"
        " >> {log} 2>&1"


rule explainer:
    output:
        html=report(L.explainer, caption="../report/report.rst", category="Report"),
    log:
        L.log("explainer"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config=CONFIG_ARG,
        settings=settings("explainer"),
    shell:
        "sizepenalty explainer {params.config} --fingerprint {params.settings}"
        " --out {output.html} >> {log} 2>&1"
