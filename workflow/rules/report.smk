rule report:
    input:
        summary=L.summary("csv"),
        tables=rules.aggregate.output.tables,
        cases=L.per_case,  # edge-case counts per arm
        figures=rules.figures.output.png,
        stamp=stamp("report"),
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
        "sizepenalty report {params.config} --fingerprint {params.settings:q}"
        " --tables-dir={params.tables:q} --figures-dir={params.figures:q} --out={output.html:q}"
        " >> {log:q} 2>&1"


rule explainer:
    input:
        stamp=stamp("explainer"),
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
        "sizepenalty explainer {params.config} --fingerprint {params.settings:q}"
        " --out={output.html:q} >> {log:q} 2>&1"
