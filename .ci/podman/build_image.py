"""Build the project image from the repository's Dockerfile with podman, as CI does (`make image`).

    .venv/bin/python .ci/podman/build_image.py [--variant cpu|cuda] [--base IMAGE] [--no-host-pip]
    .venv/bin/python .ci/podman/build_image.py --print-pip-conf   # the pip.conf it binds

* Base: no image registry is reachable in CI, so unless --base names one, Debian bookworm with
  python3, python3-venv and ca-certificates is bootstrapped from Debian packages (mmdebstrap) and
  imported as localhost/sizepenalty-base:bookworm (once: reused while podman has it).
* pip: the host pip's effective configuration (`pip config list`: its files and PIP_* variables)
  is bound into the build as /etc/pip.conf, with the files and folders it names (constraints, CA
  bundle, find-links folders, file:// indexes) read-only at the same paths, so pip in the build
  resolves exactly like the host's pip (e.g. the CPU torch wheel of a local wheel folder). Bound
  paths are mounted only while a RUN step runs: none of them ends up in the image.
* Variant: `cpu` (default here: what CI tests) or `cuda` (the Dockerfile's default, PyPI's wheel).

podman must work for the caller (rootless is fine); CI sets CONTAINERS_CONF to
.ci/podman/containers.conf (runc, no ulimits to raise: see that file). Prints the timings and the
image's size; the tag is config.yaml's container.image without `docker://`.
"""

from __future__ import annotations

import argparse
import ast
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/sizepenalty-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PRECEDENCE = (":env:", "install", "global")  # pip: PIP_* variables > [install] > [global]


def image_ref() -> str:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    return config["container"]["image"].removeprefix("docker://")


def pip_config(python: str = sys.executable) -> dict[str, str]:
    """The effective pip configuration for `pip install`: {key: value}, as `pip config list` sees
    it across its files (global, user, site) and the PIP_* environment variables."""
    out = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    by_section: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        name, sep, value = line.partition("=")
        section, dot, key = name.rpartition(".")
        if sep and dot:
            by_section.setdefault(section, {})[key] = ast.literal_eval(value)
    merged: dict[str, str] = {}
    for section in reversed(PRECEDENCE):
        merged.update(by_section.get(section, {}))
    return merged


def local_paths(config: dict[str, str]) -> list[Path]:
    """Host files and folders the pip configuration names, to bind at the same paths."""
    paths: list[Path] = []
    for key in ("cert", "client-cert", "constraint", "requirement", "find-links"):
        for item in config.get(key, "").split():
            path = Path(urlparse(item).path) if item.startswith("file:") else Path(item)
            if "://" not in item or item.startswith("file:"):
                paths.append(path)
    for key in ("index-url", "extra-index-url"):
        for item in config.get(key, "").split():
            if item.startswith("file:"):
                # A file:// index's pages link their files relative to the index root (../../files).
                index = Path(urlparse(item).path)
                paths.append(index.parent if index.name == "simple" else index)
    if CA_BUNDLE.exists():
        paths.append(CA_BUNDLE)
    unique: list[Path] = []
    for path in paths:
        path = path.resolve()
        if path.exists() and path not in unique:
            unique.append(path)
    return unique


def pip_conf_text(config: dict[str, str]) -> str:
    lines = ["# The host pip's effective configuration (build_image.py); bound during the build."]
    lines += ["[global]", *(f"{k} = {v}" for k, v in sorted(config.items()))]
    return "\n".join(lines) + "\n"


def have_image(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref]).returncode == 0


def bootstrap_base(ref: str = BASE) -> float:
    """Debian bookworm from Debian packages, imported into podman as ``ref``; seconds taken."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sizepenalty-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        cmd = ["mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "--quiet",
               "bookworm", str(tar)]  # fmt: skip
        run(cmd)
        run(["podman", "import", "--quiet",
             "--change", "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change", 'CMD=["/bin/bash"]', str(tar), ref])  # fmt: skip
    return time.monotonic() - start


def run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build_command(tag: str, variant: str, base: str | None, binds: list[str]) -> list[str]:
    cmd = ["podman", "build", "--network=host", "--tag", tag]
    cmd += ["--build-arg", f"TORCH_VARIANT={variant}"]
    if base:
        cmd += ["--build-arg", f"BASE={base}"]
    if variant == "cpu" and binds:
        cmd += ["--build-arg", "TORCH_CPU_INDEX="]  # the CPU wheel from the bound pip configuration
    for bind in binds:
        cmd += ["--volume", bind]
    return [*cmd, "--file", str(ROOT / "Dockerfile"), str(ROOT)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--base", help=f"base image (default: bootstrap {BASE} unless present)")
    ap.add_argument("--tag", default=image_ref())
    ap.add_argument("--no-host-pip", action="store_true", help="do not bind the host's pip setup")
    ap.add_argument("--print-pip-conf", action="store_true",
                    help="print the pip.conf the build would use, and stop")  # fmt: skip
    args = ap.parse_args(argv)
    if args.print_pip_conf:
        print(pip_conf_text(pip_config()), end="")
        return 0

    base = args.base
    if base is None:
        base = BASE
        if not have_image(BASE):
            print(f"base image {BASE}: bootstrapped in {bootstrap_base():.0f} s", flush=True)
    binds: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sizepenalty-pip-") as tmp:
        if not args.no_host_pip:
            config = pip_config()
            conf = Path(tmp) / "pip.conf"
            conf.write_text(pip_conf_text(config))
            conf.chmod(0o644)
            binds = [f"{conf}:/etc/pip.conf:ro"]
            binds += [f"{p}:{p}:ro" for p in local_paths(config)]
        start = time.monotonic()
        run(build_command(args.tag, args.variant, base, binds))
        took = time.monotonic() - start
    size = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", args.tag],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    print(f"image {args.tag} ({args.variant}): built in {took:.0f} s, {int(size) / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
