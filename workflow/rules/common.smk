import json
import os

from sizepenalty.combos import canonical_name, combo_id
from sizepenalty.config import config_hash, from_dict

# Typed, fully validated view of the config (also checks data paths and loss letters).
CFG = from_dict(config, source="config")
STUDY = str(CFG.study_dir)
COMBO_IDS = [combo_id(c) for c in CFG.combo_names]
FOLDS = list(CFG.folds.trained)
# Training, inference, evaluation and figures read the preprocessed cases from here. They depend
# on data/folds.json, which is made from every preprocessed case, so they run after preprocessing
# and again when it changes, without each job listing all cases: that made planning a 185-case
# study take 6.7 s (Snakemake re-resolves every job that calls the cohort checkpoint).
PREPROCESSED = os.path.join(STUDY, "data/preprocessed")


def _effective_config_file():
    """The merged, defaults-filled config (config.yaml + --configfile + --config) as one file
    that every `sizepenalty` step reads; rewritten only when its content changes."""
    import yaml
    from sizepenalty.data.io import write_text_atomic

    path = os.path.join(STUDY, "config.effective.yaml")
    text = yaml.safe_dump(CFG.raw, sort_keys=False)
    if not os.path.exists(path) or open(path).read() != text:
        write_text_atomic(path, text)
    return path


CONFIG_ARG = f"--config {_effective_config_file()}"


wildcard_constraints:
    combo="|".join(sorted(COMBO_IDS, key=len, reverse=True)),
    fold=r"\d+",
    case=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def case_ids(wildcards):
    """Validated case ids, known once the cohort checkpoint has run."""
    tsv = checkpoints.cohort.get().output.cases
    with open(tsv) as fh:
        return [line.split("\t")[0] for line in fh.read().splitlines()[1:] if line]


def train_fingerprint(wildcards):
    """Only the settings a (combo, fold) training depends on: changing tau reruns S combos only."""
    letters = set(canonical_name(wildcards.combo).replace("+", ""))
    losses = {
        k: v
        for k, v in CFG.raw["losses"].items()
        if k in ("weights", "eps")
        or (k == "dice" and "D" in letters)
        or (k == "tversky" and "T" in letters)
        or (k == "focal" and "F" in letters)
        or (
            k in ("tau", "tau_quantile", "cap", "gate", "size_warmup")
            and "S" in letters
        )
    }
    keep = {
        "losses": losses,
        "model": CFG.raw["model"],
        "train": CFG.raw["train"],
        "preprocess": CFG.raw["preprocess"],
        "seed": CFG.raw["seed"],
    }
    return config_hash(keep)


def infer_fingerprint(wildcards):
    """The settings that change probability maps (thresholds and post-processing are evaluate's)."""
    return config_hash(CFG.prediction_settings(wildcards.combo))


def cohort_inputs(wildcards):
    if CFG.dataset.source == "synthetic":
        return [os.path.join(STUDY, "data/raw/participants.tsv")]
    return []
