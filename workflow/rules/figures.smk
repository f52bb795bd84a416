rule figures:
    input:
        cases=L.per_case,
        tables=rules.aggregate.output.tables,
        thresholds=expand(L.threshold("{combo}", "{fold}"), combo=COMBO_IDS, fold=FOLDS),
        probs=expand(L.probs("{combo}", "{fold}"), combo=COMBO_IDS, fold=FOLDS),
        # epochs.csv, in each training's run folder beside its done marker
        done=expand(L.done("{combo}", "{fold}"), combo=COMBO_IDS, fold=FOLDS),
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
        tables=L.tables,
        runs=L.runs,
        probs=L.probs_root,
        metrics=L.metrics_root,
        pre=L.preprocessed,
        out=L.figures,
        config=CONFIG_ARG,
        settings=settings("figures"),
    shell:
        "sizepenalty figures {params.config} --fingerprint {params.settings}"
        " --tables-dir {params.tables} --runs-dir {params.runs} --probs-dir {params.probs}"
        " --metrics-dir {params.metrics} --pre-dir {params.pre} --out-dir {params.out}"
        " >> {log} 2>&1"
