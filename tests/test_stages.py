"""The stage declarations: fingerprints follow exactly the declared settings, and a stage's code
sees only those (every other setting raises when used)."""

import pytest

from sizepenalty.config import from_dict
from sizepenalty.stages import (
    STAGES,
    Undeclared,
    UndeclaredSetting,
    fingerprint,
    settings,
    stage_config,
)


def test_an_undeclared_setting_raises_whenever_it_is_used():
    u = Undeclared("train.lr", "infer")
    for use in (lambda: u == 1, lambda: bool(u), lambda: float(u), lambda: list(u),
                lambda: u + 1, lambda: f"{u}", lambda: u["x"], lambda: u.attr):  # fmt: skip
        with pytest.raises(UndeclaredSetting, match="stage 'infer' read train.lr"):
            use()
    assert repr(u) == "<undeclared train.lr>"


def test_a_stage_sees_its_declared_settings_and_no_others():
    cfg = from_dict({"losses": {"combinations": ["D", "DTS"]}})
    view = stage_config(cfg, "train", "D")
    assert view.train.lr == cfg.train.lr  # declared
    assert view.train.validation.roi == cfg.train.validation.roi  # the monitor's own settings
    assert view.study == cfg.study and view.tracking_uri() == cfg.tracking_uri()  # neutral
    assert view.train.threads == 1 and view.infer.sw_batch_size == 4  # execution
    with pytest.raises(UndeclaredSetting):
        view.infer.thresholds[0]  # evaluate's, not train's
    with pytest.raises(UndeclaredSetting):
        view.infer.roi[0]  # inference's window: the validation monitor has its own
    with pytest.raises(UndeclaredSetting):
        bool(view.seeds.split)  # the split's seed: a training gets its own from its run key
    with pytest.raises(UndeclaredSetting):
        bool(view.losses.size["tau"])  # D has no size term
    assert stage_config(cfg, "train", "DTS").losses.size["tau"] == 600


@pytest.mark.parametrize(
    "change,reruns",
    [
        ({"losses": {"tau": 300}}, {("train", "DTS"), ("explainer", None), ("summary", None), ("figures", None)}),
        ({"infer": {"thresholds": [0.5]}}, {("evaluate", None)}),
        ({"infer": {"overlap_by_combo": {"DTS": 0.75}}}, {("infer", "DTS")}),
        ({"report": {"bootstrap": 500}}, {("aggregate", None)}),
        ({"tracking": {"uri": "http://elsewhere:5000"}}, set()),
        # execution settings change speed, never results: nothing reruns
        ({"train": {"threads": 2, "workers": 3, "device": "cpu"}}, set()),
        ({"infer": {"sw_batch_size": 1}}, set()),
        # the validation monitor's settings are the training's, inference's window is infer's
        ({"train": {"validation": {"overlap": 0.25}}}, {("train", "D"), ("train", "DTS")}),
        ({"infer": {"roi": [16, 32, 32]}}, {("infer", "D"), ("infer", "DTS")}),
        # each seed moves only what it seeds (the training seeds are run keys: runs.py)
        ({"seeds": {"split": 7}}, {("folds", None)}),
        ({"seeds": {"cohort": 7}}, {("synth", None)}),
        ({"seeds": {"bootstrap": 7}}, {("aggregate", None)}),
        ({"seeds": {"train": [1, 2]}}, {("aggregate", None), ("figures", None)}),
        # an external method is scored, tabled and drawn; no run reruns
        ({"methods": {"nnunet": {"path": "/data/nnunet"}}},
         {("method", None), ("aggregate", None), ("figures", None)}),
    ],
)  # fmt: skip
def test_a_fingerprint_changes_with_exactly_the_settings_its_stage_declares(change, reruns):
    from sizepenalty.config import deep_merge

    base = {"losses": {"combinations": ["D", "DTS"]}}
    a, b = from_dict(base), from_dict(deep_merge(base, change))
    changed = set()
    for stage in STAGES:
        for combo in ("D", "DTS") if "[combo]" in str(STAGES[stage].reads) else (None,):
            if fingerprint(a, stage, combo) != fingerprint(b, stage, combo):
                changed.add((stage, combo))
    changed.discard(("report", None))  # the report prints the whole configuration
    assert changed == reruns


def test_settings_name_the_per_combination_values():
    cfg = from_dict(
        {"losses": {"combinations": ["D", "S"]}, "infer": {"overlap_by_combo": {"S": 0.75}}}
    )
    assert settings(cfg, "infer", "S")["infer.overlap[combo]"] == 0.75
    assert settings(cfg, "infer", "D")["infer.overlap[combo]"] == 0.5
    assert "losses.weights.size_alone" in settings(cfg, "train", "S")
    assert "losses.weights.size" not in settings(cfg, "train", "S")
