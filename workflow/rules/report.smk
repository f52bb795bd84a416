rule report:
    input:
        summary=os.path.join(STUDY, "tables/dataset_summary.csv"),
        tables=rules.aggregate.output.tables,
        figures=rules.figures.output.png,
    output:
        html=report(
            os.path.join(STUDY, "report.html"),
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        os.path.join(STUDY, "logs/report.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        tables=lambda w, input: os.path.dirname(input.summary),
        figures=lambda w, input: os.path.dirname(input.figures[0]),
        config=CONFIG_ARG,
    shell:
        "sizepenalty report {params.config} --tables-dir {params.tables}"
        " --figures-dir {params.figures} --out {output.html} > {log} 2>&1"


rule explainer:
    output:
        html=report(
            os.path.join(STUDY, "explainer.html"),
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        os.path.join(STUDY, "logs/explainer.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config=CONFIG_ARG,
        settings=config_hash(
            {k: CFG.raw["losses"][k] for k in ("tau", "eps", "cap", "weights")}
        ),
    shell:
        "sizepenalty explainer {params.config} --out {output.html} > {log} 2>&1"
