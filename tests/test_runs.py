"""The study's axes and run plan: one run identity everywhere, separate seeds, seed and variant
axes, jobs shared between arms whose settings agree, and variants that are checked."""

from pathlib import Path

import pytest

from sizepenalty.config import ConfigError, from_dict
from sizepenalty.paths import StudyLayout
from sizepenalty.runs import AXES, Arm, RunKey, RunKeyError, StudyPlan, wildcard_constraints
from sizepenalty.stages import fingerprint

STUDY = {
    "losses": {"combinations": ["D", "DTS", "F+S"]},
    "seeds": {"train_by_combo": {"DTS": [42, 43, 44]}},
    "folds": {"k": 5, "run": [0, 1]},
    "variants": {
        "tau300": {"combinations": ["DTS", "F+S"], "set": {"losses.tau": 300}},
        "lowlr": {"combinations": ["D"], "set": {"train.lr": 1e-3}, "seeds": [7]},
        # inference only: it shares the main arm's trainings
        "eq": {"combinations": ["DTS"], "set": {"infer.overlap": 0.25}},
        # no effect on D at all (D has no size term): every job is the main arm's
        "tau_d": {"combinations": ["D"], "set": {"losses.tau": 300}},
    },
}


@pytest.fixture(scope="module")
def plan():
    return StudyPlan(from_dict(STUDY))


def test_a_run_key_is_one_value_with_one_text_form_for_paths_cli_and_tracking():
    key = RunKey("F+S", "tau300", 43, 1)
    assert key.id == "FS/tau300/seed43/fold1" and RunKey.parse(key.id) == key
    assert key.name == "F+S@tau300-seed43-fold1" and key.arm == Arm("F+S", "tau300")
    assert key.values() == {"arm": "F+S@tau300", "combo": "F+S", "variant": "tau300",
                            "seed": 43, "fold": 1}  # fmt: skip
    assert key.tags()["seed"] == "43"
    layout = StudyLayout(Path("results/s"))
    assert str(layout.run_dir(key)) == "results/s/runs/FS/tau300/seed43/fold1"
    assert str(layout.metrics(key)) == "results/s/metrics/FS/tau300/seed43/fold1.csv"
    # the wildcard key makes every per-run path a rule pattern, and reads back from wildcards
    pattern = RunKey.wildcards()
    assert str(layout.done(pattern)) == "results/s/runs/{combo}/{variant}/seed{seed}/fold{fold}/done.json"

    class W:
        combo, variant, seed, fold = "FS", "tau300", "43", "1"

    assert RunKey.from_wildcards(W) == key
    assert set(wildcard_constraints(["F+S", "DTS"])) == {a.name for a in AXES}
    for bad in ("DTS/main/fold0", "DTS/main/s42/fold0", "XYZ/main/seed42/fold0"):
        with pytest.raises(RunKeyError, match="run"):
            RunKey.parse(bad)


def test_the_plan_repeats_chosen_combinations_over_seeds_on_one_split(plan):
    assert [a.label for a in plan.arms] == ["D", "DTS", "F+S", "DTS@tau300", "F+S@tau300",
                                            "D@lowlr", "DTS@eq", "D@tau_d"]  # fmt: skip
    assert plan.seeds(Arm("DTS")) == (42, 43, 44) and plan.seeds(Arm("D")) == (42,)
    assert plan.seeds(Arm("DTS", "tau300")) == (42, 43, 44)  # the combination's seeds
    assert plan.seeds(Arm("D", "lowlr")) == (7,)  # the variant's own
    runs = plan.runs()
    assert len(runs) == 2 * (1 + 3 + 1 + 3 + 1 + 1 + 3 + 1) and len(set(runs)) == len(runs)
    # seeds are separate trainings with separate fingerprints; the split is one for all
    a, b = (plan.job(RunKey("DTS", seed=s), "train") for s in (42, 43))
    assert a.fingerprint != b.fingerprint and a.settings["seed"] == 42
    assert plan.job(RunKey("DTS", seed=43), "infer").fingerprint == plan.job(
        RunKey("DTS", seed=42), "infer").fingerprint  # the same inference settings
    with pytest.raises(RunKeyError, match="not part of this study"):
        plan.check(RunKey("D", seed=43))
    with pytest.raises(RunKeyError, match="not an arm"):
        plan.arm("TFS")


def test_changing_the_training_seeds_never_moves_the_cohort_or_the_split():
    one, three = from_dict({}), from_dict({"seeds": {"train": [1, 2, 3]}})
    for stage in ("synth", "cohort", "preprocess", "folds"):
        assert fingerprint(one, stage) == fingerprint(three, stage), stage
    assert (one.seeds.cohort, one.seeds.split, one.seeds.bootstrap) == (42, 42, 42)
    moved = from_dict({"seed": 7, "seeds": {"split": 42}})  # the top-level seed is the default
    assert (moved.seeds.cohort, moved.seeds.split, moved.seeds.train) == (7, 42, (7,))


def test_a_variant_runs_only_the_jobs_whose_settings_differ(plan):
    key = RunKey("DTS", "eq", 43, 1)
    # inference-only: the training is the main arm's, inference and evaluation its own
    assert plan.canonical(key, "train") == RunKey("DTS", "main", 43, 1)
    assert plan.canonical(key, "infer") == key and plan.canonical(key, "evaluate") == key
    tau = RunKey("DTS", "tau300", 42, 0)
    assert plan.canonical(tau, "train") == tau  # its training differs
    same = RunKey("D", "tau_d", 42, 0)  # D has no size term: nothing differs
    assert all(plan.canonical(same, s) == RunKey("D") for s in ("train", "infer", "evaluate"))
    view = plan.job(tau, "train").config
    assert view.losses.size["tau"] == 300 and plan.job(RunKey("DTS"), "train").config.losses.size["tau"] == 600
    trainings = plan.jobs("train")
    assert len(trainings) == 2 * (1 + 3 + 1 + 3 + 1 + 1)  # eq and tau_d train nothing
    assert len(plan.jobs("infer")) == len(trainings) + 2 * 3  # eq infers its own
    assert {(k.arm.label, s) for k, s, _ in plan.shared()} >= {("DTS@eq", "train"), ("D@tau_d", "evaluate")}


@pytest.mark.parametrize(
    "variant,message",
    [
        ({"combinations": ["D"], "set": {"preprocess.shape": [8, 8, 8]}}, "shared by every arm"),
        ({"combinations": ["D"], "set": {"metrics.matching": "overlap"}}, "shared by every arm"),
        ({"combinations": ["D"], "set": {"train.threads": 4}}, "execution setting"),
        ({"combinations": ["D"], "set": {"train.lrr": 1}}, "unknown setting"),
        ({"combinations": ["DX"], "set": {"train.lr": 1}}, "variants.v.combinations"),
        ({"combinations": ["D"], "set": {"train.lr": -1}}, "variants.v"),
    ],
)  # fmt: skip
def test_a_bad_variant_is_one_line_naming_it(variant, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({"variants": {"v": variant}}).variant_config("v")


def test_comparison_pairs_name_arms_and_are_checked():
    cfg = from_dict(STUDY | {"report": {"pairs": [["DTS", "DTS@tau300"]], "curves": ["DTS@eq"]}})
    assert cfg.report.pairs == (("DTS", "DTS@tau300"),) and cfg.report.curves == ("DTS@eq",)
    with pytest.raises(ConfigError, match="DTS@nope.*not an arm of this study"):
        from_dict(STUDY | {"report": {"pairs": [["DTS", "DTS@nope"]]}})
    with pytest.raises(ConfigError, match="main"):
        from_dict({"variants": {"main": {"combinations": ["D"], "set": {"train.lr": 1}}}})
