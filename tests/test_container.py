"""Container wiring: the image reference, the Dockerfile, and `--use-singularity` end to end.

There is no Docker engine or apptainer on our machines. The fast test runs the DAG with an
`apptainer` stand-in that records each call and runs the command on the host; the `container` test
(`make test-container`, its own CI step) runs it inside the image built with podman, through the
podman `apptainer` shim in .ci/podman/.
"""

import csv
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from workflow_helpers import ROOT, SNAKEMAKE, copy_workflow, snakemake_env, tiny_config

import sizepenalty

# The one PyTorch pin of the lock, `make setup`, CI and the image.
LOCK = (ROOT / "envs/requirements.lock").read_text()
TORCH_PIN = re.search(r"^torch==(\S+)$", LOCK, flags=re.MULTILINE).group(1)

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
    text = (ROOT / "Dockerfile").read_text()
    lines = text.splitlines()
    # One base, a build argument whose default is a plain Python of the lock's version (torch and
    # its CUDA libraries come from the lock's pin, not from the base).
    python = re.search(r"\(Python (\d+\.\d+)\)", LOCK).group(1)
    assert [ln for ln in lines if ln.startswith("FROM ")] == ["FROM ${BASE}"]
    assert f"ARG BASE=docker.io/library/python:{python}-slim-bookworm" in lines
    assert lines.index(f"ARG BASE=docker.io/library/python:{python}-slim-bookworm") < lines.index(
        "FROM ${BASE}"
    )
    assert "ARG TORCH_VARIANT=cuda" in lines  # a plain `docker build .` is the CUDA image
    assert "USER 10001:10001" in lines
    assert not any(ln.startswith("USER root") for ln in lines)
    # Dependencies before the source: a source edit does not reinstall them.
    copies = [ln for ln in lines if ln.startswith("COPY ")]
    assert copies[0] == "COPY envs/requirements.lock envs/check_torch.py envs/"
    assert copies[-1] == "COPY src src"
    # Every step that runs pip checks torch against the pin after it, in the same RUN (layer).
    instructions = re.sub(r"\\\n\s*", " ", re.sub(r"(?m)^#.*\n", "", text)).splitlines()
    pip_runs = [r for r in instructions if r.startswith("RUN ") and "pip install" in r]
    assert len(pip_runs) == 2
    for run in pip_runs:
        check = 'python envs/check_torch.py --variant "${TORCH_VARIANT}"'
        assert check in run and run.rindex("pip install") < run.index(check)
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
    assert "monai==" in LOCK and "snakemake==" in LOCK
    # torch is pinned (no build label); the variant's own wheels are left to torch's metadata.
    assert re.findall(r"^torch==.*$", LOCK, flags=re.MULTILINE) == [f"torch=={TORCH_PIN}"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", TORCH_PIN)
    assert not re.search(r"^(nvidia-|cuda-|triton)", LOCK, flags=re.MULTILINE)


def test_one_torch_pin_for_the_lock_setup_ci_and_image():
    pin = f"torch=={TORCH_PIN}"
    make = subprocess.run(["make", "-s", "--no-print-directory", "print-TORCH_SPEC"], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert make.stdout.strip() == pin  # `make setup` (CI) installs the lock's pin
    assert not re.search(r"torch[=<>~]=\s*\d", (ROOT / "Makefile").read_text())  # no 2nd copy
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"torch[=<>~]=\s*\d", dockerfile)
    assert "$(grep -E '^torch==' envs/requirements.lock)+cpu" in dockerfile  # read from the lock
    ci = (ROOT / ".ci/run").read_text()
    assert "envs/check_torch.py --variant cpu" in ci  # CI tests the pinned torch


FAKE_TORCH = """__version__ = {version!r}
class version:
    cuda = {cuda!r}
"""


@pytest.mark.parametrize(
    ("version", "cuda", "variant", "error"),
    [
        ("{pin}+cpu", None, "cpu", None),
        ("{pin}", "13.0", "cuda", None),
        ("{pin}+cu126", "12.6", "any", None),
        # What `pip install -r envs/requirements.lock` once did to the CUDA 12.4 base's torch.
        ("99.15.0", "13.0", "cuda", "torch 99.15.0 is installed, but the lock pins torch=={pin}"),
        ("2.5.1+cu124", "12.4", "cuda", "torch 2.5.1+cu124 is installed, but the lock pins"),
        ("{pin}+cpu", None, "cuda", "is a CPU-only build, but the CUDA variant was requested"),
        ("{pin}", "13.0", "cpu", "is a CUDA 13.0 build, but the CPU variant was requested"),
    ],
)
def test_image_build_fails_loudly_on_any_other_torch(tmp_path, version, cuda, variant, error):
    """envs/check_torch.py, which every pip step of the image build runs, on a stand-in torch."""
    version, error = version.format(pin=TORCH_PIN), error and error.format(pin=TORCH_PIN)
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch/__init__.py").write_text(FAKE_TORCH.format(version=version, cuda=cuda))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, str(ROOT / "envs/check_torch.py"), "--variant", variant],
                         env=env, capture_output=True, text=True)  # fmt: skip
    if error is None:
        assert out.returncode == 0, out.stderr
        assert f"is the lock's torch=={TORCH_PIN}" in out.stdout
    else:
        assert out.returncode == 1
        assert out.stderr.startswith("check_torch: FAILED: ") and error in out.stderr


def test_torch_check_needs_exactly_one_unlabelled_pin(tmp_path):
    check = str(ROOT / "envs/check_torch.py")
    for text, message in [("monai==1.6.1\n", "found 0"),
                          ("torch==2.13.0\ntorch==2.14.0\n", "found 2"),
                          ("torch==2.13.0+cpu\n", "without a build label")]:  # fmt: skip
        (tmp_path / "lock").write_text(text)
        out = subprocess.run([sys.executable, check, "--variant", "any", "--lock", str(tmp_path / "lock")],
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode != 0 and message in out.stderr, out.stderr


SHIM_DIR = ROOT / ".ci/podman"


def load_shim():
    loader = importlib.machinery.SourceFileLoader("apptainer_shim", str(SHIM_DIR / "apptainer"))
    spec = importlib.util.spec_from_loader("apptainer_shim", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_podman_shim_never_shadows_a_real_apptainer(tmp_path):
    real = tmp_path / "real-bin"
    real.mkdir()
    (real / "apptainer").write_text('#!/bin/sh\necho "apptainer version 1.3.4 (real) $*"\n')
    (real / "apptainer").chmod(0o755)
    path = f"{SHIM_DIR}:{real}:{os.environ['PATH']}"
    call = ["apptainer", "exec", "img.sif", "true"]
    out = subprocess.run(call, env=dict(os.environ, PATH=path), capture_output=True, text=True)
    assert out.stdout.strip() == "apptainer version 1.3.4 (real) exec img.sif true"
    forced = dict(os.environ, PATH=path, SIZEPENALTY_APPTAINER_SHIM="force")
    out = subprocess.run(["apptainer", "--version"], env=forced, capture_output=True, text=True)
    assert out.stdout.strip() == "apptainer version 1.3.6+podman.shim"
    # Only the container test and CI put the shim on PATH: `make run` and the README do not.
    makefile = (ROOT / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:")[1].split("\n\n")[0]
    assert ".ci/podman" not in run_recipe and "PATH" in run_recipe
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"PATH=\S*\.ci/podman", readme)


def test_podman_shim_translates_snakemakes_exec_call(tmp_path, monkeypatch):
    shim = load_shim()
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    data.mkdir()
    simg = work / "img.simg"
    simg.write_text(json.dumps({"url": "docker://x/y:1", "ref": "x/y:1", "id": "abc123"}))
    monkeypatch.chdir(work)
    env = {"PATH": "/usr/bin", "HOME": "/root", "LD_PRELOAD": "x.so", "MLFLOW_X": "1",
           "SINGULARITYENV_THREADS": "3", "CONTAINERS_CONF": "c.conf", "BASH_FUNC_f%%": "() {"}  # fmt: skip
    argv = ["--home", str(work), "--bind", f"{data}", "-B", f"{data}:/in:ro", str(simg),
            "bash", "-c", "sizepenalty train x"]  # fmt: skip
    cmd, image, command = shim.exec_command(argv, env)
    assert image == "abc123" and command == ["bash", "-c", "sizepenalty train x"]
    assert cmd[:2] == ["podman", "run"]
    for flag in ("--rm", "--network=none", "--read-only", "--pull=never"):
        assert flag in cmd
    assert cmd[cmd.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert ("--userns=keep-id" in cmd) == (os.getuid() != 0)
    volumes = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--volume"]
    assert volumes[:3] == [f"{work}:{work}", f"{data}:{data}", f"{data}:/in:ro"]
    assert cmd[cmd.index("--workdir") + 1] == str(work)
    envs = [a.removeprefix("--env=") for a in cmd if a.startswith("--env=")]
    assert cmd[cmd.index("--env") + 1] == f"HOME={work}"
    assert "THREADS=3" in envs and "MLFLOW_X" in envs
    assert not {"PATH", "HOME", "LD_PRELOAD", "CONTAINERS_CONF", "BASH_FUNC_f%%"} & set(envs)
    with pytest.raises(shim.ShimError, match="--nv is not supported"):
        shim.exec_command(["--nv", str(simg), "sh", "-c", "true"], env)
    with pytest.raises(shim.ShimError, match="not an image pulled by this shim"):
        shim.exec_command([str(work / "other.sif"), "sh", "-c", "true"], env)


@pytest.mark.slow
def host_stamps(stderr: str) -> int:
    """How many fingerprint jobs (stamps, run on the host: `container: None`) Snakemake's own
    console says it ran."""
    return len(re.findall(r"^localrule fingerprint:$", stderr, re.M))


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
    tiny = tiny_config("ctr", losses={"combinations": ["DTS"]}, container={"image": image},
                       report={"pairs": [], "curves": ["DTS"]})  # fmt: skip
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
    # Every job with a shell command went through the container, but the `all` target and the
    # workflow's bookkeeping (the fingerprint stamps: touch and rm on the host, `container: None`).
    stamps = host_stamps(out.stderr)
    assert stamps > 0 and len(execs) == int(done.group(2)) - 1 - stamps
    assert not any("touch -- " in argv[-1] for argv in execs)
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


# The image's own test: `make test-container` builds it first (.ci/podman/build_image.py).
TINY = tiny_config(
    "ctr",
    losses={"combinations": ["DTS"]},
    report={"pairs": [], "curves": ["DTS"]},
    # not all empty after one epoch, so the compared metrics depend on the model
    infer={"roi": [16, 32, 32], "tta": False, "thresholds": [0.1]},
)


def podman(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def built_image():
    """The configured image in podman's storage: (reference, id, torch variant)."""
    assert shutil.which("podman"), "podman is not installed (Debian: podman runc uidmap)"
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    ref = config["container"]["image"].removeprefix("docker://")
    out = podman("image", "inspect", "--format",
                 '{{.Id}} {{index .Labels "io.github.sizepenalty.torch-variant"}}', ref)  # fmt: skip
    assert out.returncode == 0, f"no image {ref}: build it with `make image`\n{out.stderr}"
    image_id, variant = out.stdout.split()
    return ref, image_id, variant


@pytest.mark.container
def test_image_runs_the_package_as_a_non_root_user_with_the_pinned_torch(built_image):
    ref, _, variant = built_image
    script = f"id -u && sizepenalty --version && python envs/check_torch.py --variant {variant}"
    out = podman("run", "--rm", "--read-only", "--network=none", "--workdir=/opt/sizepenalty",
                 ref, "sh", "-c", script, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    uid, version, torch_line = out.stdout.splitlines()
    assert uid == "10001"
    assert version == f"sizepenalty {sizepenalty.__version__}"
    assert f"is the lock's torch=={TORCH_PIN}" in torch_line


def per_case_metrics(study: Path) -> str:
    return (study / "tables/per_case_metrics.csv").read_text()


@pytest.mark.container
def test_tiny_study_runs_every_rule_inside_the_image_and_matches_the_host(tmp_path, built_image):
    ref, image_id, _ = built_image
    shared = tmp_path / "shared"  # results outside the working directory: reached via --bind
    shared.mkdir()
    runs = {}
    for where in ("host", "image"):
        work = copy_workflow(tmp_path / where)
        results = shared / where
        (work / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "results": str(results)}))
        cmd = [str(SNAKEMAKE), "--cores", "2", "--configfile", "tiny.yaml"]
        env = snakemake_env()
        if where == "image":
            log = tmp_path / "apptainer.jsonl"
            # No `sizepenalty` on PATH: a rule run on the host instead of in the image fails.
            env.update(PATH=f"{SHIM_DIR}:/usr/sbin:/usr/bin:/sbin:/bin",
                       SIZEPENALTY_APPTAINER_SHIM="force", SIZEPENALTY_APPTAINER_LOG=str(log))  # fmt: skip
            assert shutil.which("sizepenalty", path=env["PATH"]) is None
            cmd += ["--use-singularity", "--apptainer-args", f"--bind {shared}"]
        out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{where}:\n{out.stderr[-4000:]}"
        runs[where] = (work, results / "ctr", out.stderr)

    work, study, stderr = runs["image"]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    pulls = [c for c in calls if c["argv"][0] == "pull"]
    execs = [c for c in calls if "exec" in c["argv"]]
    assert len(pulls) == 1 and pulls[0]["image"] == image_id and pulls[0]["rc"] == 0
    done = re.search(r"(\d+) of (\d+) steps \(100%\) done", stderr)
    assert done, stderr[-2000:]
    # Every job with a shell command (all but `all` and the fingerprint stamps, which run on the
    # host) ran in its own container of the built image, with the caller's uid, no network and
    # the --bind of the results folder.
    stamps = host_stamps(stderr)
    assert stamps > 0 and len(execs) == int(done.group(2)) - 1 - stamps
    verbs = set()
    for call in execs:
        assert call["rc"] == 0 and call["image"] == image_id
        assert re.fullmatch(r"[0-9a-f]{64}", call["container"] or "")
        assert call["uid"] == os.getuid()
        podman_cmd = call["podman"]
        assert "--network=none" in podman_cmd and "--read-only" in podman_cmd
        assert podman_cmd[podman_cmd.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
        assert f"{shared}:{shared}" in podman_cmd and f"{work}:{work}" in podman_cmd
        verbs.add(re.search(r"sizepenalty ([a-z-]+)", call["argv"][-1]).group(1))
    assert len({c["container"] for c in execs}) == len(execs)
    assert {"synth", "cohort", "preprocess", "folds", "study-run", "train", "infer",
            "evaluate-fold", "aggregate", "figures", "report"} <= verbs  # fmt: skip
    # What the rules wrote belongs to the caller, as under apptainer.
    for path in [study, *study.rglob("*")]:
        assert path.stat().st_uid == os.getuid(), path
    # The same study on the host and in the image: the same per-case metrics, losses and
    # predicted probabilities (CPU torch, same versions: bit for bit).
    host = runs["host"][1]
    assert per_case_metrics(study) == per_case_metrics(host)
    with open(study / "tables/per_case_metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and all(float(r["vol_pred_ml"]) > 0 for r in rows)  # model-dependent
    for epochs in study.glob("runs/**/fold*/epochs.csv"):
        other = host / epochs.relative_to(study)
        assert [ln.rsplit(",", 1)[0] for ln in epochs.read_text().splitlines()] == [
            ln.rsplit(",", 1)[0] for ln in other.read_text().splitlines()
        ]  # all but the last column, epoch_time_s
    predictions = sorted(study.glob("probs/**/fold*/*/*.npz"))
    assert len(predictions) >= 5
    for npz in predictions:
        with np.load(npz) as a, np.load(host / npz.relative_to(study)) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files), npz


@pytest.mark.container
def test_the_image_runs_predict_with_a_studys_models_as_the_host_does(tmp_path, built_image):
    """`sizepenalty predict` in the image through `apptainer exec` (the podman shim) on a study
    the host ran: a fold's model on its test cases gives the study's own test predictions, as
    the host's predict does."""
    import nibabel as nib

    ref, image_id, _ = built_image
    shared = tmp_path / "shared"
    shared.mkdir()
    work = copy_workflow(tmp_path / "wf")
    (work / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "results": str(shared)}))
    cmd = [str(SNAKEMAKE), "--cores", "2", "--configfile", "tiny.yaml"]
    out = subprocess.run(cmd, cwd=work, env=snakemake_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    study = shared / "ctr"
    test = json.loads((study / "data/folds.json").read_text())["folds"][0]["test"]
    args = ["predict", "--study", str(study), "--arm", "DTS", "--fold", "0",
            "--cases", str(study / "data/raw"), *(a for c in test for a in ("--case", c))]  # fmt: skip
    env = dict(snakemake_env(), PATH=f"{SHIM_DIR}:/usr/sbin:/usr/bin:/sbin:/bin",
               SIZEPENALTY_APPTAINER_SHIM="force")  # fmt: skip
    assert shutil.which("sizepenalty", path=env["PATH"]) is None  # only the image has it
    simg = work / "image.simg"
    pull = subprocess.run(["apptainer", "pull", "--name", str(simg), f"docker://{ref}"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert pull.returncode == 0 and json.loads(simg.read_text())["id"] == image_id, pull.stderr
    inside = subprocess.run(["apptainer", "exec", "--bind", str(shared), str(simg), "sizepenalty",
                             *args, "--out", str(shared / "image")], cwd=work, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert inside.returncode == 0, inside.stderr[-3000:]
    host = subprocess.run([str(SNAKEMAKE.parent / "sizepenalty"), *args, "--out", str(shared / "host")],
                          cwd=work, env=snakemake_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert host.returncode == 0, host.stderr[-3000:]
    assert (shared / "image/predictions.csv").read_text() == (shared / "host/predictions.csv").read_text()
    for cid in test:
        own = nib.load(study / "predictions/DTS/main/seed42/fold0" / f"{cid}_pred.nii.gz")
        for where in ("image", "host"):
            mask = nib.load(shared / where / f"{cid}_pred.nii.gz")
            assert mask.shape == own.shape and np.array_equal(mask.affine, own.affine), where
            assert np.array_equal(np.asarray(mask.dataobj), np.asarray(own.dataobj)), (where, cid)
        assert np.asarray(own.dataobj).any()  # model-dependent (thresholds [0.1])
