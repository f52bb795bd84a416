FIGURES = [
    "fig_3_1_spl",
    "fig_5_1_improvement",
    "fig_5_2_curves",
    *(f"fig_overlay_{i}" for i, _ in enumerate(CFG.report.pairs, start=1)),
]


rule figures:
    input:
        cases=os.path.join(STUDY, "tables/per_case_metrics.csv"),
        pairs=os.path.join(STUDY, "tables/table_pairs.csv"),
        strata=os.path.join(STUDY, "tables/table_strata.csv"),
        thresholds=expand(
            os.path.join(STUDY, "metrics/{combo}/fold{fold}_threshold.json"),
            combo=COMBO_IDS,
            fold=FOLDS,
        ),
        probs=expand(
            os.path.join(STUDY, "probs/{combo}/fold{fold}"),
            combo=COMBO_IDS,
            fold=FOLDS,
        ),
        done=expand(
            os.path.join(STUDY, "runs/{combo}/fold{fold}/done.json"),
            combo=COMBO_IDS,
            fold=FOLDS,
        ),
    output:
        png=[
            report(
                os.path.join(STUDY, f"figures/{name}.png"),
                caption="../report/figures.rst",
                category="Figures",
            )
            for name in FIGURES
        ],
        pdf=[os.path.join(STUDY, f"figures/{name}.pdf") for name in FIGURES],
    log:
        os.path.join(STUDY, "logs/figures.log"),
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        tables=lambda w, input: os.path.dirname(input.cases),
        runs=lambda w, input: os.path.dirname(
            os.path.dirname(os.path.dirname(input.done[0]))
        ),
        probs=lambda w, input: os.path.dirname(os.path.dirname(input.probs[0])),
        metrics=lambda w, input: os.path.dirname(os.path.dirname(input.thresholds[0])),
        pre=PREPROCESSED,
        out=lambda w, output: os.path.dirname(output.png[0]),
        config=CONFIG_ARG,
        settings=config_hash({"report": CFG.raw["report"], "losses": CFG.raw["losses"]}),
    shell:
        "sizepenalty figures {params.config} --tables-dir {params.tables} --runs-dir {params.runs}"
        " --probs-dir {params.probs} --metrics-dir {params.metrics} --pre-dir {params.pre}"
        " --out-dir {params.out} > {log} 2>&1"
