rule evaluate:
    input:
        probs=os.path.join(STUDY, "probs/{combo}/fold{fold}"),
        folds=os.path.join(STUDY, "data/folds.json"),
    output:
        metrics=os.path.join(STUDY, "metrics/{combo}/fold{fold}.csv"),
        lesions=os.path.join(STUDY, "metrics/{combo}/fold{fold}_lesions.csv"),
        threshold=os.path.join(STUDY, "metrics/{combo}/fold{fold}_threshold.json"),
        nifti=directory(os.path.join(STUDY, "predictions/{combo}/fold{fold}")),
    log:
        os.path.join(STUDY, "logs/evaluate/{combo}_fold{fold}.log"),
    benchmark:
        os.path.join(STUDY, "benchmarks/evaluate/{combo}_fold{fold}.tsv")
    conda:
        "../../envs/sizepenalty.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        predir=PREPROCESSED,
        config=CONFIG_ARG,
        settings=config_hash(
            {
                "metrics": CFG.raw["metrics"],
                "thresholds": CFG.raw["infer"]["thresholds"],
                "min_size": CFG.raw["infer"]["min_size"],
                "connectivity": CFG.raw["infer"]["connectivity"],
            }
        ),
    shell:
        "sizepenalty evaluate-fold {params.config} --combo {wildcards.combo} --fold {wildcards.fold}"
        " --folds {input.folds} --pre-dir {params.predir} --prob-dir {input.probs}"
        " --out {output.metrics} --threshold-out {output.threshold}"
        " --nifti-dir {output.nifti} > {log} 2>&1"
