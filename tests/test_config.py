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


# ----------------------------------------------------------------------------- --config overrides


def test_text_values_take_the_schema_type_they_spell_exactly():
    from sizepenalty.config import type_text_values

    raw = {"train": {"epochs": "2", "lr": "1e-3", "augment": "false", "amp": "off",
                     "patch_large": ["8", "16", "16"], "validation": {"roi": ["8", "16", "16"]}},
           "folds": {"run": "null", "k": "3"}, "losses": {"tau": "300"},
           "infer": {"connectivity": "6", "overlap_by_combo": {"DTS": "0.75"}},
           "study": "2024", "dataset": {"path": "123"},
           "variants": {"t": {"combinations": ["DTS"], "set": {"losses.tau": "150"}}}}  # fmt: skip
    typed = type_text_values(raw)
    assert typed["train"] == {"epochs": 2, "lr": 1e-3, "augment": False, "amp": "off",
                              "patch_large": [8, 16, 16], "validation": {"roi": [8, 16, 16]}}  # fmt: skip
    assert typed["folds"] == {"run": None, "k": 3} and typed["losses"] == {"tau": 300}
    assert typed["infer"] == {"connectivity": 6, "overlap_by_combo": {"DTS": 0.75}}
    assert typed["study"] == "2024" and typed["dataset"]["path"] == "123"  # text in the schema
    assert typed["variants"]["t"]["set"] == {"losses.tau": 150}
    assert raw["train"]["epochs"] == "2"  # a copy
    # Only exact spellings: "auto" stays text, "2.5" is no integer, "two" is no number.
    kept = type_text_values({"losses": {"tau": "auto"}, "train": {"epochs": "2.5", "batch_size": "two"}})
    assert kept == {"losses": {"tau": "auto"}, "train": {"epochs": "2.5", "batch_size": "two"}}


def test_nested_command_line_values_validate_like_the_same_yaml(tmp_path):
    from sizepenalty.config import workflow_config

    # What Snakemake hands the Snakefile for --config train='{epochs: 2, lr: 1e-3}'.
    as_text = workflow_config({"train": {"epochs": "2", "lr": "1e-3"}}, [])
    as_yaml = from_dict({"train": {"epochs": 2, "lr": 1e-3}})
    assert as_text.train.epochs == 2 and as_text.digest() == as_yaml.digest()
    with pytest.raises(ConfigError, match="train.epochs: '2.5' is not of type 'integer'"):
        workflow_config({"train": {"epochs": "2.5"}}, [])
    # A configfile's own values stay strict: a quoted number there is named with its file.
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text('train: {epochs: "2"}\n')
    with pytest.raises(ConfigError, match=f"{quoted}: train.epochs: '2' is not of type"):
        workflow_config({"train": {"epochs": "2"}}, [quoted])


def _dry_run(work: Path, *args: str):
    import subprocess

    from workflow_helpers import SNAKEMAKE, snakemake_env

    return subprocess.run([str(SNAKEMAKE), "-n", "--quiet", "rules", *args], cwd=work,
                          env=snakemake_env(PYTHONPATH=str(ROOT / "src")), capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_snakemake_config_overrides_of_nested_numbers_work_as_the_readme_says(tmp_path):
    from workflow_helpers import copy_workflow

    work = copy_workflow(tmp_path / "wf")
    (work / "two.yaml").write_text("train: {epochs: 2}\n")
    for args in (["--config", "train={epochs: 2}"], ["--configfile", "two.yaml"]):
        out = _dry_run(work, *args)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "train" in out.stdout and "total" in out.stdout
    out = _dry_run(work, "--config", "train={epochs: two}")
    assert out.returncode != 0
    assert "merged configuration (configfiles + --config): train.epochs: 'two' is not of type " \
           "'integer'" in out.stderr  # fmt: skip


# ----------------------------------------------------------------------------- what validation adds


def test_patches_must_fit_the_volume_and_windows_are_clipped_to_it():
    msg = _error({"preprocess": {"shape": [16, 32, 32]},
                  "train": {"patch_large": [16, 48, 32], "patch_small": [8, 8, 8]}})  # fmt: skip
    assert ("study.yaml: train.patch_large: [16, 48, 32] is larger than the preprocessed volume "
            "(preprocess.shape [16, 32, 32]) on H (48 > 32)") in msg  # fmt: skip
    assert "patch_small" not in msg
    # A sliding window larger than the volume is one whole-volume pass (as infer.roi): valid.
    windows = {"preprocess": {"shape": [16, 32, 32]},
               "train": {"patch_large": [8, 16, 16], "patch_small": [8, 8, 8],
                         "validation": {"roi": [32, 112, 112]}}, "infer": {"roi": [32, 112, 112]}}  # fmt: skip
    assert from_dict(windows).train.validation.roi == (32, 112, 112)
    # The schema's own defaults fit each other (thesis: 32x128x128 patches of 256x256x32 volumes).
    cfg = from_dict({})
    assert cfg.preprocess.shape == (32, 256, 256) and cfg.train.patch_large == (32, 128, 128)


def test_default_pairs_left_out_are_named_in_the_notes():
    two = from_dict({"losses": {"combinations": ["DTF", "DTS"]}})
    assert two.report.pairs == (("DTF", "DTS"),)
    assert two.notes[0] == ("report.pairs: the default comparison(s) DTF vs FSD are left out: FSD "
                            "is not an arm of this study (arms: DTF, DTS)")  # fmt: skip
    none = from_dict({"losses": {"combinations": ["D", "DTS"]}})
    assert none.report.pairs == () and "no comparison pair is left" in none.notes[0]
    assert any(n.startswith("report.curves: the default curve(s) of DTF, FSD") for n in none.notes)
    assert from_dict({}).notes == () and load_config(ROOT / "config.yaml").notes == ()


def test_the_workflow_prints_the_notes_once(capsys):
    from sizepenalty.config import workflow_config

    workflow_config({"losses": {"combinations": ["DTF", "DTS"]}}, [])
    err = capsys.readouterr().err
    assert err.count("warning: report.pairs: the default comparison(s) DTF vs FSD") == 1


def test_a_study_effective_config_finds_its_study_from_anywhere(tmp_path, monkeypatch):
    from sizepenalty.config import study_config

    study = tmp_path / "wf/results/demo"
    study.mkdir(parents=True)
    effective = study / "config.effective.yaml"
    effective.write_text(yaml.safe_dump(from_dict({"study": "demo"}).raw))
    monkeypatch.chdir(tmp_path)
    cfg = study_config(effective)
    assert cfg.study_dir == study and cfg.tracking_uri() == f"sqlite:///{study / 'mlflow.db'}"
    assert cfg.digest() == load_config(effective).digest()  # the same configuration
    other = tmp_path / "mine.yaml"  # any other config names its study as the workflow does
    other.write_text("study: demo\n")
    assert study_config(other).study_dir == Path("results/demo")


def test_preset_comments_name_only_files_of_the_repository():
    import re

    top = {p.name for p in ROOT.iterdir()} - {"results"}  # a run's outputs are not shipped
    for preset in sorted((ROOT / "presets").glob("*.yaml")):
        for number, line in enumerate(preset.read_text().splitlines(), 1):
            comment = line.partition("#")[2]
            where = f"{preset.name}:{number}: {comment.strip()!r}"
            # Nothing outside the repository: the specification, the shared notes, sibling folders.
            assert not re.search(r"SPEC|/work/|shared/|seeds/|\.\./", comment), where
            for token in re.findall(r"[\w.-]*/[\w./*<>-]+|[\w-]+\.(?:md|txt|py|yaml|smk)\b", comment):
                path = token.rstrip("/.,;")
                is_file = re.search(r"\.(md|txt|py|yaml|smk|toml)$", path) and not path.startswith("/")
                if "*" not in path and (is_file or path.split("/")[0] in top):
                    assert (ROOT / path).exists(), f"{where}: {token} is not in the repository"
