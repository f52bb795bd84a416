"""The command line as a user meets it: the help says how to run a study and documents every
argument, output into a closed pipe ends quietly, `validate-config` shows the merged stack a run
uses, and the verbs that read a study (`compare`, `sync`, `retrain`) find it from any folder and
never create a tracking store while reading one."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import BIN, ROOT, SNAKEMAKE, snakemake_env, tiny_config

from sizepenalty.cli import VERBS, build_parser, main
from sizepenalty.config import from_dict, study_config
from sizepenalty.runs import RunKey, RunKeyError, StudyPlan

SIZEPENALTY = BIN / "sizepenalty"


def _env() -> dict[str, str]:
    """The environment of a `sizepenalty` process: this checkout's sources first."""
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), MLFLOW_DISABLE_TELEMETRY="true")


# ----------------------------------------------------------------------------- help


def test_help_says_how_to_run_a_study(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "make run" in out and "snakemake --cores all" in out and "--configfile" in out
    assert "report.html" in out and "Running a study" in out
    assert "validate-config" in out and "retrain" in out


def test_the_internal_worker_verb_is_not_listed_but_still_runs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "worker" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["worker", "--help"])  # the workflow still starts it
    assert exc.value.code == 0 and "--name" in capsys.readouterr().out


def _verb_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_argument_of_every_verb_has_help():
    parsers = _verb_parsers()
    assert set(parsers) == set(VERBS)
    missing = [f"{verb} {'/'.join(action.option_strings) or action.dest}"
               for verb, parser in parsers.items() for action in parser._actions
               if not isinstance(action, argparse._HelpAction) and not action.help]  # fmt: skip
    assert missing == []  # (argparse.SUPPRESS: a hidden option, e.g. train --max-epochs)
    listed = [v for v, (text, _) in VERBS.items() if text]
    assert set(VERBS) - set(listed) == {"worker"}


def test_output_into_a_pipe_whose_reader_stops_ends_quietly():
    # As a user types it: the pipeline succeeds, one line, nothing on stderr.
    out = subprocess.run(["bash", "-c", f"'{SIZEPENALTY}' losses -c config.yaml | head -1"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.startswith("D ") and out.stdout.count("\n") == 1
    # A reader gone before the first write (deterministic): the status of a SIGPIPE, no traceback.
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([str(SIZEPENALTY), "losses", "-c", "config.yaml"], cwd=ROOT, env=_env(),
                          stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    os.close(write)
    assert proc.stderr == "" and proc.returncode == 141, proc.stderr


# ----------------------------------------------------------------------------- validate-config

PROBE = """\
configfile: "config.yaml"

import yaml

from sizepenalty.config import workflow_config

# What the workflow's own Snakefile does with Snakemake's merged config (common.smk).
CFG = workflow_config(config, workflow.configfiles)
with open("seen.yaml", "w") as fh:
    fh.write(yaml.safe_dump(CFG.raw, sort_keys=False))


rule all:
    input: []
"""


def _stack(tmp_path: Path) -> Path:
    """A working directory with config.yaml and two configfiles: a.yaml changes two sections,
    b.yaml overrides one key of a.yaml's and adds another."""
    work = tmp_path / "wf"
    work.mkdir()
    (work / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    (work / "a.yaml").write_text(yaml.safe_dump({"train": {"epochs": 2, "lr": 0.005},
                                                 "losses": {"combinations": ["D", "DTS"]}}))  # fmt: skip
    (work / "b.yaml").write_text(yaml.safe_dump({"train": {"epochs": 3}, "seed": 7}))
    (work / "probe.smk").write_text(PROBE)
    return work


def test_validate_config_prints_exactly_the_stack_a_workflow_run_merges(tmp_path, capsys,
                                                                         monkeypatch):  # fmt: skip
    work = _stack(tmp_path)
    monkeypatch.chdir(work)
    assert main(["validate-config", "-c", "a.yaml", "-c", "b.yaml"]) == 0
    captured = capsys.readouterr()
    shown = yaml.safe_load(captured.out)
    assert shown["train"]["epochs"] == 3 and shown["train"]["lr"] == 0.005 and shown["seed"] == 7
    assert shown["losses"]["combinations"] == ["D", "DTS"]
    assert shown["folds"]["k"] == 10  # config.yaml's, under both
    assert "config.yaml + a.yaml + b.yaml: valid" in captured.err
    # Snakemake's own merge of the same files, through the Snakefile's validation.
    run = subprocess.run([str(SNAKEMAKE), "-n", "-s", "probe.smk", "--configfile", "a.yaml",
                          "b.yaml"], cwd=work, env=snakemake_env(PYTHONPATH=str(ROOT / "src")),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert captured.out == (work / "seen.yaml").read_text()
    # Without -c: config.yaml alone, as a plain `snakemake` run.
    assert main(["validate-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 9


def test_validate_config_names_the_file_a_problem_is_in(tmp_path, capsys, monkeypatch):
    work = _stack(tmp_path)
    (work / "bad.yaml").write_text("train: {epochs: 0}\n")
    monkeypatch.chdir(work)
    assert main(["validate-config", "-c", "a.yaml", "-c", "bad.yaml"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: train.epochs: 0 is less than the minimum of 1" in err
    assert main(["validate-config", "-c", "missing.yaml"]) == 2
    assert "missing.yaml: config file not found" in capsys.readouterr().err


def test_validate_config_warns_about_comparison_pairs_it_leaves_out(tmp_path, capsys,
                                                                   monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two.yaml").write_text("losses: {combinations: [DTF, DTS]}\n")
    (tmp_path / "none.yaml").write_text("losses: {combinations: [D, DTS]}\n")
    assert main(["validate-config", "-c", "two.yaml"]) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out)["report"]["pairs"] == [["DTF", "DTS"]]
    assert "warning: report.pairs: the default comparison(s) DTF vs FSD are left out: FSD is not " \
           "an arm of this study (arms: DTF, DTS)" in captured.err  # fmt: skip
    assert main(["validate-config", "-c", "none.yaml"]) == 0
    err = capsys.readouterr().err
    assert "no comparison pair is left" in err and "report.pairs: [[D, DTS]]" in err
    # Pairs the user configures are not defaults: nothing to say.
    (tmp_path / "mine.yaml").write_text("losses: {combinations: [D, DTS]}\n"
                                        "report: {pairs: [[D, DTS]], curves: [D]}\n")  # fmt: skip
    assert main(["validate-config", "-c", "mine.yaml"]) == 0
    assert "warning" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- a study's readers


def _study(tmp_path: Path, tracked: bool = True) -> tuple[Path, RunKey]:
    """A finished-looking study "s" under tmp/wf/results/s (results named relative to tmp/wf, as
    a workflow writes it): its effective config, parent run and one training's record (pushed to
    the SQLite store when ``tracked``, else only in its run folder)."""
    from sizepenalty.paths import StudyLayout
    from sizepenalty.tracking import Tracker, TrainingRun, start_study_run, tracker_for

    raw = tiny_config("s", losses={"combinations": ["D"]}, folds={"k": 2, "run": [0]},
                      results="results")  # fmt: skip
    layout = StudyLayout(tmp_path / "wf/results/s")
    layout.root.mkdir(parents=True)
    layout.effective_config.write_text(yaml.safe_dump(from_dict(raw).raw, sort_keys=False))
    cfg = study_config(layout.effective_config)
    key = RunKey("D", "main", 42, 0)
    if tracked:
        start_study_run(cfg, layout.parent_run)
        tracker = tracker_for(cfg)
    else:
        tracker = Tracker(cfg.tracking_uri(), cfg.tracking.experiment, enabled=False)
    run = TrainingRun(tracker, layout.run_dir(key), f"s/{key.id}/fp", key.name,
                      layout.parent_run if tracked else None, key.tags())  # fmt: skip
    run.log_params(key.values())
    run.log_metrics({"train_loss": 0.5}, step=1)
    run.end("FINISHED")
    return layout.effective_config, key


def test_compare_finds_the_study_of_an_effective_config_from_any_folder(tmp_path, capsys,
                                                                       monkeypatch):  # fmt: skip
    effective, key = _study(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["compare", "-c", str(effective), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert key.name in out and "FINISHED" in out
    assert list(elsewhere.iterdir()) == []  # no stray results/ or mlflow.db here


def test_reading_a_study_without_a_store_creates_none(tmp_path, capsys, monkeypatch):
    effective, _ = _study(tmp_path, tracked=False)
    (effective.parent / "mlflow.db").unlink(missing_ok=True)
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "-c", str(effective)]) == 2
    assert "no MLflow store there" in capsys.readouterr().err
    assert not (effective.parent / "mlflow.db").exists()
    # A config whose study never ran: sync says so and creates nothing.
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(tiny_config("never")))
    assert main(["sync", "-c", "other.yaml"]) == 2
    assert "no training run folders there" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_sync_pushes_the_study_of_an_effective_config_from_any_folder(tmp_path, capsys,
                                                                     monkeypatch):  # fmt: skip
    from mlflow.tracking import MlflowClient

    effective, key = _study(tmp_path, tracked=False)  # a record that never reached MLflow
    monkeypatch.chdir(tmp_path)
    assert main(["sync", "-c", str(effective)]) == 0
    assert "1 run record(s) in sync" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{effective.parent / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sizepenalty")
    assert [r.info.run_name for r in client.search_runs([exp.experiment_id])] == [key.name]
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


# ----------------------------------------------------------------------------- retrain


def test_retrain_selects_runs_by_id_prefix_or_arm():
    cfg = from_dict(tiny_config("s", losses={"combinations": ["D", "DTS"]},
                                seeds={"train": [1, 2]}, folds={"k": 2, "run": None},
                                variants={"tau300": {"combinations": ["DTS"],
                                                     "set": {"losses.tau": 300}}}))  # fmt: skip
    from sizepenalty.retrain import select_runs

    plan = StudyPlan(cfg)
    ids = lambda *patterns: [k.id for k in select_runs(plan, list(patterns))]  # noqa: E731
    assert ids("DTS/main/seed1/fold1") == ["DTS/main/seed1/fold1"]
    assert ids("dts/main/seed2") == ["DTS/main/seed2/fold0", "DTS/main/seed2/fold1"]
    assert len(ids("DTS")) == 4 and len(ids("DTS@tau300")) == 4 and len(ids("D", "D/main")) == 4
    for bad, says in (("DTF", "not an arm of this study"), ("D/main/seed9", "names no run"),
                      ("DXS/main", "DXS"), ("D/main/seed1/fold0/x", "has 4 parts")):  # fmt: skip
        with pytest.raises(RunKeyError, match=says):
            select_runs(plan, [bad])


def test_retrain_clears_a_training_and_supersedes_its_record(tmp_path, capsys, monkeypatch):
    effective, key = _study(tmp_path, tracked=False)
    run_dir = effective.parent / "runs" / key.id
    for name in ("last.pt", "best.pt", "done.json", "epochs.csv", "train_meta.json"):
        (run_dir / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    assert main(["retrain", "-c", str(effective), "-n", "D"]) == 0
    assert f"would clear {run_dir}" in capsys.readouterr().out and (run_dir / "done.json").exists()
    assert main(["retrain", "-c", str(effective), key.id]) == 0
    out = capsys.readouterr().out
    assert f"cleared {run_dir}" in out and "trains them from epoch 0" in out
    assert sorted(p.name for p in run_dir.iterdir()) == ["superseded"]
    (archived,) = run_dir.glob("superseded/*/run.json")
    tags = json.loads(archived.read_text())["tags"]
    assert tags["sizepenalty.superseded"] == "true" and "retrain" in tags["sizepenalty.superseded_why"]
    assert not (effective.parent / "mlflow.db").exists()  # the record had no MLflow run
    assert main(["retrain", "-c", str(effective), "D/main/seed42"]) == 0  # nothing left to clear
    assert "not trained yet" in capsys.readouterr().out


def test_stage_verbs_say_which_extra_a_missing_dependency_needs(capsys, monkeypatch):
    # As on a core-only install (no PyYAML, no MLflow): a verb names the extra to install.
    monkeypatch.setitem(sys.modules, "yaml", None)
    assert main(["validate-config", "-c", str(ROOT / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert "needs yaml" in err and "pip install 'sizepenalty[study]'" in err
