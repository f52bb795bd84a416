"""A stale Snakemake lock after a kill, found and cleared before a run (``make run`` calls it).

Snakemake locks a working directory by writing ``.snakemake/locks/<n>.{input,output}.lock`` and
removes them when it ends. A run killed with ``kill -9`` (or whose terminal or machine went away)
leaves them behind, and every later run stops with Snakemake's ``LockException`` until
``snakemake --unlock``. Whether the lock is stale is decidable on this machine: the run that holds
it is a ``snakemake`` process working in this directory, and a killed run may leave its jobs (the
``sizepenalty`` stage commands) running. ``python -m sizepenalty.locks [snakemake options]``:

* no lock: says nothing, exit 0;
* a lock and no ``snakemake``/``sizepenalty`` process in this directory (``/proc/<pid>/cwd``):
  prints what happened and what it does, runs ``snakemake --unlock [options]``, exit 0, so the
  run that follows (``--rerun-incomplete``) resumes the killed jobs;
* a lock and such a process: says which (pid, command) and what to do, unlocks nothing, exit 1;
  except a warm worker of the killed run and the jobs it forked (:mod:`sizepenalty.worker`),
  which stop by themselves once the commands that handed them their jobs are gone (a training
  after writing its checkpoint): it waits for them first.

A run on another machine (a shared filesystem) is not visible here; the message says so.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("snakemake", "sizepenalty")
RESUME = "snakemake --cores all --rerun-incomplete"


@dataclass(frozen=True)
class Process:
    pid: int
    program: str  # "snakemake" or "sizepenalty"
    command: str  # its command line, shortened for messages
    # A warm worker (sizepenalty.worker) or one of its jobs whose Snakemake is gone: it stops by
    # itself within seconds (a training after a checkpoint).
    ending: bool = False


def lock_files(workdir: str | Path = ".") -> list[Path]:
    """Snakemake's lock files in ``workdir`` (empty when it is not locked)."""
    folder = Path(workdir) / ".snakemake" / "locks"
    return sorted(p for p in folder.glob("*.lock") if p.is_file()) if folder.is_dir() else []


def program(argv: list[str]) -> str:
    """The program a command line runs: the script or ``-m`` module of a Python interpreter
    (``python .venv/bin/snakemake ...`` is ``snakemake``), else the executable's name."""
    if not argv:
        return ""
    name = os.path.basename(argv[0])
    if not name.startswith("python"):
        return name
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, "").split(".")[0]
        if arg in ("-X", "-W"):  # options with a value
            next(args, None)
        elif not arg.startswith("-"):
            return os.path.basename(arg)
    return name


def processes_in(workdir: str | Path = ".", proc: str | Path = "/proc") -> list[Process]:
    """The ``snakemake`` and ``sizepenalty`` processes (other than this one) whose working
    directory is ``workdir``: a run in progress there, or the jobs a killed run left behind."""
    target = os.path.realpath(workdir)
    found = []
    for entry in Path(proc).iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.path.realpath(os.readlink(entry / "cwd")) != target:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:  # gone meanwhile, or another user's process
            continue
        name = program(argv)
        if name in PROGRAMS:
            command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))
            found.append(Process(int(entry.name), name, command[:160], _orphaned_worker(argv)))
    return sorted(found, key=lambda p: (p.program != "snakemake", p.pid))


def _orphaned_worker(argv: list[str]) -> bool:
    """A ``sizepenalty worker ... --parent PID`` (or a job it forked: same command line) whose
    Snakemake (PID) is gone."""
    from sizepenalty.worker import alive

    if "worker" not in argv or "--parent" not in argv[:-1]:
        return False
    try:
        parent = int(argv[argv.index("--parent") + 1])
    except ValueError:
        return False
    return not alive(parent)


def _wait_for_ending(workdir: str | Path, wait_s: float) -> list[Process]:
    """The processes working in ``workdir`` once those that stop by themselves have (at most
    ``wait_s`` seconds)."""
    deadline = time.monotonic() + wait_s
    live = processes_in(workdir)
    if live and all(p.ending for p in live):
        pids = " ".join(str(p.pid) for p in live)
        print(f"Waiting for the warm worker of a killed run and its jobs to stop (pid {pids}; "
              "a training writes its checkpoint first) ...", file=sys.stderr, flush=True)  # fmt: skip
    while live and all(p.ending for p in live) and time.monotonic() < deadline:
        time.sleep(0.5)
        live = processes_in(workdir)
    return live


def check(
    workdir: str | Path = ".", snakemake_args: list[str] | None = None, wait_s: float = 120.0
) -> int:
    """Clear a stale lock in ``workdir`` or explain why not (see the module doc); the exit code.
    ``snakemake_args`` (e.g. ``--configfile``) go to ``snakemake --unlock`` and the commands
    shown."""
    args = list(snakemake_args or [])
    locks = lock_files(workdir)
    if not locks:
        return 0
    folder = os.path.realpath(workdir)
    resume = " ".join([RESUME, *(shlex.quote(a) for a in args)])
    live = _wait_for_ending(workdir, wait_s)
    if live:
        runs = [p for p in live if p.program == "snakemake"]
        listed = "; ".join(f"pid {p.pid}: {p.command}" for p in live[:5])
        if runs:
            what = f"A Snakemake run is still working in {folder} ({listed})."
            todo = (f"Wait for it to end, or stop it with `kill {runs[0].pid}` (Snakemake stops "
                    "its jobs; a training checkpoints first)")  # fmt: skip
        else:
            what = (f"Snakemake's lock in {folder} is left from a killed run, but jobs of that run "
                    f"are still running ({listed}).")  # fmt: skip
            pids = " ".join(str(p.pid) for p in live)
            todo = (f"Wait for them to end, or stop them with `kill {pids}` (a training "
                    "checkpoints and exits)")  # fmt: skip
        print(f"{what} Not unlocking. {todo}, then run `make run` again (or `snakemake --unlock` "
              f"and `{resume}`).", file=sys.stderr)  # fmt: skip
        return 1
    print(f"Snakemake's lock in {folder} is stale: the run that took it was killed (or its "
          "terminal or machine went away) and no snakemake or sizepenalty process works in this "
          "folder any more (a run on another machine sharing the folder would not show here). "
          "Unlocking it with `snakemake --unlock`; the run that follows passes --rerun-incomplete: "
          "the jobs the killed run left unfinished run again, a killed training resumes from its "
          f"last checkpoint. By hand: `snakemake --unlock`, then `{resume}`.",
          file=sys.stderr, flush=True)  # fmt: skip
    cmd = [sys.executable, "-m", "snakemake", "--unlock", *args]
    return subprocess.run(cmd, cwd=workdir).returncode


def main(argv: list[str] | None = None) -> int:
    """``python -m sizepenalty.locks [snakemake options]``: :func:`check` the current directory
    (the options, e.g. ``--configfile``, are passed to ``snakemake --unlock``)."""
    return check(".", list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
