rule figures:
    input:
        cases=L.per_case,
        tables=rules.aggregate.output.tables,
        # the figures read the study folder by the run plan: thresholds, probability maps and
        # (beside each training's done marker) epochs.csv
        thresholds=every("evaluate", L.threshold),
        probs=every("infer", L.probs),
        done=every("train", L.done),
        stamp=stamp("figures"),
    output:
        png=[
            report(p, caption="../report/figures.rst", category="Figures")
            for p in L.all_figures(len(CFG.report.pairs), "png")
        ],
        pdf=L.all_figures(len(CFG.report.pairs), "pdf"),
    log:
        L.log("figures"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        out=L.figures,
        config=CONFIG_ARG,
        settings=settings("figures"),
    shell:
        "sizepenalty figures {params.config} --fingerprint {params.settings:q}"
        " --out-dir={params.out:q} >> {log:q} 2>&1"
