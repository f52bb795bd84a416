"""The study config: the default validates; each class of wrong config names its key path."""

from pathlib import Path

import pytest
import yaml

from sizepenalty.config import ConfigError, from_dict, load_config, load_schema

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_validates_and_is_typed():
    cfg = load_config(ROOT / "config.yaml")
    assert cfg.dataset.source == "synthetic"
    assert (cfg.folds.k, cfg.folds.trained, cfg.folds.val_fraction) == (10, (0, 1, 2, 3, 4), 0.1)
    assert len(cfg.combo_names) == 14
    size = cfg.losses.size
    assert size["tau"] == 600 and size["cap"] == 10.0 and size["eps"] == 1e-5
    assert cfg.losses.params["tversky"]["alpha"] == 0.3 and cfg.losses.params["focal"]["gamma"] == 2
    assert cfg.losses.weights == {"dice": 1, "tversky": 1, "focal": 1, "size": 0.3, "size_alone": 1}
    assert isinstance(cfg.train.patch_large, tuple) and len(cfg.train.patch_large) == 3
    assert cfg.tracking_uri().startswith("sqlite:///") and cfg.tracking_uri().endswith("mlflow.db")
    assert len(cfg.digest()) == 12


def test_schema_is_the_workflow_schema_plus_the_term_registry():
    on_disk = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    schema = load_schema()
    losses = schema["properties"]["losses"]["properties"]
    assert set(losses) == {"combinations", "weights", "dice", "tversky", "focal", "tau",
                           "tau_quantile", "eps", "cap", "size_warmup", "gate"}  # fmt: skip
    assert losses["weights"]["properties"]["size"]["default"] == 0.3
    for key in ("combinations",):  # what the file itself declares is kept as is
        assert losses[key] == on_disk["properties"]["losses"]["properties"][key]
    others = {k: v for k, v in schema["properties"].items() if k != "losses"}
    assert others == {k: v for k, v in on_disk["properties"].items() if k != "losses"}


def test_empty_config_gets_thesis_defaults():
    cfg = from_dict({})
    assert cfg.train.lr == 3e-4 and cfg.train.batch_size == 18 and cfg.train.epochs == 400
    assert cfg.train.patch_large == (32, 128, 128) and cfg.train.patch_small == (32, 64, 64)
    assert cfg.infer.thresholds == (0.3, 0.4, 0.5, 0.6, 0.7)
    assert cfg.infer.min_size == 5 and cfg.infer.connectivity == 18
    assert cfg.model.base_filters == 32 and cfg.model.dropout == 0.2
    assert cfg.report.pairs == (("DTF", "DTS"), ("DTF", "FSD"))
    # The thesis's protocol: 80/10/10 (a 10-fold rule, 5 folds run), panoptica matching, its bins.
    assert (cfg.folds.k, cfg.folds.trained, cfg.folds.val_fraction) == (10, (0, 1, 2, 3, 4), 0.1)
    rule = cfg.metrics.instance_rule
    assert (rule.connectivity, rule.criterion, rule.threshold, rule.strict) == (
        26,
        "iou",
        0.5,
        False,
    )
    assert [s.label for s in cfg.metrics.strata] == ["< 5 mL", "≥ 5 mL", "< 1 mL"]


def _error(raw) -> str:
    with pytest.raises(ConfigError) as exc:
        from_dict(raw, source="study.yaml")
    return str(exc.value)


def test_unknown_key_is_named():
    msg = _error({"train": {"epochz": 3}})
    assert "study.yaml: train.epochz: unknown key" in msg and "epochs" in msg
    assert "bogus: unknown key" in _error({"bogus": 1})


def test_unknown_loss_letter_is_named():
    msg = _error({"losses": {"combinations": ["DTS", "DXS"]}})
    assert "losses.combinations[1]" in msg and "'DXS'" in msg and "D (Dice)" in msg


def test_repeated_letter_is_rejected():
    assert "losses.combinations[0]" in _error({"losses": {"combinations": ["DDS"]}})


def test_negative_tau_is_rejected():
    msg = _error({"losses": {"tau": -600}})
    assert "losses.tau" in msg and "> 0" in msg


def test_auto_tau_is_accepted():
    cfg = from_dict({"losses": {"tau": "auto"}})
    assert cfg.losses.size["tau"] == "auto" and cfg.losses.nominal_tau == 600


def test_too_few_folds_is_rejected():
    msg = _error({"folds": {"k": 1}})
    assert "folds.k" in msg and "minimum of 2" in msg
    msg = _error({"folds": {"k": 3}})  # the default run list names folds 0-4
    assert "folds.run: fold(s) 3, 4 do not exist with folds.k = 3" in msg and "null for all" in msg
    assert from_dict({"folds": {"k": 3, "run": None}}).folds.trained == (0, 1, 2)


def test_settings_for_combinations_not_studied_do_not_apply():
    # A preset's per-combination overlaps merge key by key into a subset study: they just don't apply.
    raw = {
        "losses": {"combinations": ["DTS", "DTF"]},
        "infer": {"overlap_by_combo": {"F+S": 0.75, "DTS": 0.75, "S": 0.75}},
    }
    cfg = from_dict(raw)
    assert cfg.infer.overlap_by_combo == {"DTS": 0.75} and cfg.infer.overlap_for("DTF") == 0.5


def test_missing_data_path_is_rejected(tmp_path):
    msg = _error({"dataset": {"source": "isles22", "path": str(tmp_path / "nowhere")}})
    assert "dataset.path" in msg and "nowhere" in msg
    msg = _error({"dataset": {"source": "manifest", "path": str(tmp_path / "cases.csv")}})
    assert "dataset.path" in msg and "cases.csv" in msg
    assert "dataset.path: required" in _error({"dataset": {"source": "manifest"}})


def test_wrong_type_and_shape_are_named():
    assert "preprocess.shape" in _error({"preprocess": {"shape": [24, 48]}})
    assert "train.batch_size" in _error({"train": {"batch_size": "four"}})
    assert "metrics.connectivity" in _error({"metrics": {"connectivity": 8}})


def test_comparison_pairs_must_be_studied():
    msg = _error({"losses": {"combinations": ["D", "DTS"]}, "report": {"pairs": [["DTF", "DTS"]]}})
    assert "report.pairs[0][0]" in msg
    # Default pairs shrink to the studied combinations instead of failing.
    assert from_dict({"losses": {"combinations": ["D", "DTS"]}}).report.pairs == ()


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("losses: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_rejects_bad_config_before_work(tmp_path, capsys):
    from sizepenalty.cli import main

    bad = tmp_path / "c.yaml"
    bad.write_text("folds: {k: 1}\n")
    assert main(["validate-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "folds.k" in err and str(bad) in err


def test_both_schema_copies_are_one_file_with_the_methods_section():
    package = ROOT / "src/sizepenalty/schemas/config.schema.yaml"
    assert package.read_text() == (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    methods = yaml.safe_load(package.read_text())["properties"]["methods"]
    assert methods["default"] == {} and methods["additionalProperties"]["required"] == ["path"]


def test_external_methods_are_arms_of_the_tables_and_comparisons_but_never_combinations():
    import jsonschema

    raw = {"losses": {"combinations": ["DTF", "DTS"]},
           "methods": {"nnunet": {"path": "/data/nnunet", "description": "nnU-Net 3d_fullres"}},
           "report": {"pairs": [["DTF", "nnunet"]], "curves": ["DTS"]}}  # fmt: skip
    cfg = from_dict(raw)
    assert cfg.methods["nnunet"].path == "/data/nnunet"
    assert cfg.methods["nnunet"].description == "nnU-Net 3d_fullres"
    assert cfg.report.pairs == (("DTF", "nnunet"),)
    assert from_dict({}).methods == {}
    # The default pairs keep those whose arms (methods included) the study has.
    assert from_dict({"losses": {"combinations": ["DTF"]}, "methods": {"dts-copy": {"path": "x"}},
                      "report": {"curves": []}}).report.pairs == ()  # fmt: skip
    arm = load_schema()["$defs"]["arm"]
    for label in ("DTS", "F+S", "DTS@tau300", "nnunet", "nn-unet_2"):
        jsonschema.validate(label, arm)
    for label in ("NNUNET", "DXS", "dts@", "2d"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(label, arm)
    msg = _error(raw | {"methods": {"tfs": {"path": "x"}}, "report": {"pairs": []}})
    assert "methods.tfs: the name reads as the loss combination TFS" in msg
    assert "methods: 'NN' does not match" in _error({"methods": {"NN": {"path": "x"}}})
    assert "methods.nnunet: 'path' is a required property" in _error({"methods": {"nnunet": {}}})
    msg = _error(raw | {"report": {"pairs": [], "curves": ["nnunet"]}})
    assert "report.curves[0]: 'nnunet' is an external method: it has no training curves" in msg
    msg = _error(raw | {"report": {"pairs": [["DTF", "nnunt"]]}})
    assert "report.pairs[0][1]: 'nnunt' is not an arm of this study (arms: DTF, DTS, nnunet)" in msg


def test_a_study_opens_from_its_folder_or_file_wherever_its_data_went(tmp_path):
    from sizepenalty.config import open_study

    raw = {"results": "elsewhere", "dataset": {"source": "manifest", "path": str(tmp_path / "m.csv")}}
    (tmp_path / "m.csv").write_text("case_id,dwi,adc,mask\n")
    study = tmp_path / "study"
    study.mkdir()
    (study / "config.effective.yaml").write_text(yaml.safe_dump(from_dict(raw).raw))
    (tmp_path / "m.csv").unlink()  # the study's data is gone: its models are still usable
    for where in (study, study / "config.effective.yaml"):
        cfg, root = open_study(where)
        assert root == study and cfg.dataset.affine_atol == 1e-3
    with pytest.raises(ConfigError, match="not a study's results folder"):
        open_study(tmp_path)
