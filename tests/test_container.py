"""Container wiring: the image reference, the Dockerfile, and `--use-singularity` end to end.

There is no Docker engine or apptainer on our machines, so the DAG runs with an `apptainer`
stand-in on PATH that records each call and runs the command on the host.
"""

import hashlib
import json
import re
import subprocess

import pytest
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, copy_workflow, snakemake_env

import sizepenalty

FAKE_APPTAINER = r'''#!/usr/bin/env python3
"""apptainer stand-in: `--version`, `pull --name FILE URL` and `exec ... IMAGE SHELL -c CMD`."""
import json, os, subprocess, sys

log = os.environ["FAKE_APPTAINER_LOG"]
args = sys.argv[1:]
with open(log, "a") as fh:
    fh.write(json.dumps({"argv": args, "cwd": os.getcwd()}) + "\n")
if args == ["--version"]:
    print("apptainer version 1.3.4")
    sys.exit(0)
while args and args[0] in ("--quiet", "--silent"):
    args.pop(0)
if args[0] == "pull":
    name, url = args[args.index("--name") + 1], args[-1]
    open(name, "w").write(url + "\n")  # an "image" that remembers where it came from
    sys.exit(0)
assert args[0] == "exec", args
i, opts = 1, {"--bind": []}
while args[i].startswith("--"):
    if args[i] == "--bind":
        opts["--bind"].append(args[i + 1])
    else:
        opts[args[i]] = args[i + 1]
    i += 2
image, shell, flag, cmd = args[i], args[i + 1], args[i + 2], args[i + 3]
assert flag == "-c", args
assert os.path.exists(image), f"image {image} was never pulled"
sys.exit(subprocess.call([shell, "-c", cmd]))
'''


def test_image_tag_follows_package_version():
    image = yaml.safe_load((ROOT / "config.yaml").read_text())["container"]["image"]
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    default = schema["properties"]["container"]["properties"]["image"]["default"]
    version = sizepenalty.__version__
    assert image == default == f"docker://ghcr.io/sizepenalty/sizepenalty:{version}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG VERSION={version}" in dockerfile
    assert f"sizepenalty:{version} ." in dockerfile  # the documented build command
    assert f"version: {version}" in (ROOT / "CITATION.cff").read_text()
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()


def test_dockerfile_copies_only_what_exists_and_is_not_ignored():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    base = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(base) == 1 and re.fullmatch(
        r"FROM pytorch/pytorch:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime", base[0]
    )
    assert any(ln.startswith("USER ") and not ln.startswith("USER root") for ln in lines)
    allowed = [
        ln[1:].rstrip("/")
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.startswith("!")
    ]
    for ln in lines:
        if ln.startswith("COPY "):
            for src in ln.split()[1:-1]:
                assert (ROOT / src).exists(), src
                assert any(src == a or src.startswith(a + "/") for a in allowed), (
                    f"{src} is excluded by .dockerignore"
                )
    lock = (ROOT / "envs/requirements.lock").read_text()
    assert "monai==" in lock and "snakemake==" in lock and "\ntorch==" not in lock


@pytest.mark.slow
def test_every_rule_runs_in_the_configured_image_under_use_singularity(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    (fake_bin / "apptainer").write_text(FAKE_APPTAINER)
    (fake_bin / "apptainer").chmod(0o755)
    log = tmp_path / "apptainer.jsonl"
    data = tmp_path / "shared-data"  # stands for a dataset folder outside the working directory
    data.mkdir()
    image = "docker://example.org/lab/sizepenalty:test"
    tiny = {
        "study": "ctr",
        "dataset": {"synthetic": {"cases": 5, "shape": [16, 32, 32]}},
        "preprocess": {"shape": [16, 32, 32]},
        "folds": {"k": 2, "run": None},
        "losses": {"combinations": ["DTS"]},
        "model": {"base_filters": 2, "depth": 3},
        "train": {"epochs": 1, "batch_size": 2, "patches_per_volume": 1, "patch_large": [8, 16, 16], "patch_small": [8, 8, 8]},
        "infer": {"roi": [16, 32, 32], "tta": False},
        "report": {"pairs": [], "curves": ["DTS"]},
        "container": {"image": image},
    }  # fmt: skip
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    env = snakemake_env(FAKE_APPTAINER_LOG=str(log))
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    cmd = [str(SNAKEMAKE), "--cores", "2", "--configfile", "tiny.yaml", "--use-singularity",
           "--apptainer-args", f"--bind {data}"]  # fmt: skip
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    pulls = [c["argv"] for c in calls if "pull" in c["argv"]]
    execs = [c["argv"] for c in calls if "exec" in c["argv"]]
    assert len(pulls) == 1 and pulls[0][-1] == image
    image_file = (
        work / ".snakemake/singularity" / (hashlib.md5(image.encode()).hexdigest() + ".simg")
    )
    assert image_file.read_text().strip() == image
    done = re.search(r"(\d+) of (\d+) steps \(100%\) done", out.stderr)
    assert done, out.stderr[-2000:]
    # Every job with a shell command (all but the `all` target) went through the container.
    assert len(execs) == int(done.group(2)) - 1
    verbs = set()
    for argv in execs:
        assert str(image_file.relative_to(work)) in argv or str(image_file) in argv
        assert argv[argv.index("--home") + 1] == str(work)
        binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
        assert str(data) in binds
        verbs.add(re.search(r"sizepenalty ([a-z-]+)", argv[-1]).group(1))
    assert {"synth", "cohort", "preprocess", "folds", "study-run", "train", "infer",
            "evaluate-fold", "aggregate"} <= verbs  # fmt: skip
    assert (work / "results/ctr/tables/table_main.md").exists()
