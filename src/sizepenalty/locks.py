"""Locks: a stale Snakemake lock after a kill, found and cleared before a run (``make run`` calls
it), and the lock a training holds on its run folder.

Snakemake locks the files of a run by writing ``.snakemake/locks/<n>.{input,output}.lock`` (the
run's input and output files) and removes them when it ends; runs whose files do not overlap,
e.g. two studies in one checkout, run side by side. A run killed with ``kill -9`` (or whose
terminal or machine went away) leaves its lock behind, and every later run of that study stops
with Snakemake's ``LockException`` until it is removed. Whether it is stale is decidable on this
machine: the run that holds it is a ``snakemake`` process of that study working in this
directory, and a killed run may leave its jobs (the ``sizepenalty`` stage commands) running.
``python -m sizepenalty.locks [snakemake options]`` looks at the study those options name
(``results``/``study`` of ``config.yaml``, ``--configfile`` files and ``--config``) only:

* no lock of the study: says nothing, exit 0 (another study's lock is that study's business);
* a lock of the study and no ``snakemake``/``sizepenalty`` process of the study in this
  directory (``/proc/<pid>/cwd``; a job belongs to the study whose folder its arguments or
  output name, a run to the study its options name): prints what happened and what it does,
  removes the study's lock files (not ``snakemake --unlock``, which would remove every study's),
  exit 0, so the run that follows (``--rerun-incomplete``) resumes the killed jobs;
* a lock and such a process: says which (pid, command) and what to do, unlocks nothing, exit 1;
  except a warm worker of the killed run and the jobs it forked (:mod:`sizepenalty.worker`),
  which stop by themselves once the commands that handed them their jobs are gone (a training
  after writing its checkpoint): it waits for them first.

A run on another machine (a shared filesystem) is not visible here; the message says so.

:func:`hold_run_folder`: a training holds an exclusive lock (``flock``) on its run folder for
as long as it runs, so a second training of the same run (a rerun while an orphaned one still
writes) stops at once and says which process holds the folder.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sizepenalty.errors import InputError

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
    argv: tuple[str, ...] = ()


def lock_files(workdir: str | Path = ".", study: Path | None = None) -> list[Path]:
    """Snakemake's lock files in ``workdir`` (empty when it is not locked); with ``study`` (a
    study folder) only the locks of runs whose output files all lie in it."""
    folder = Path(workdir) / ".snakemake" / "locks"
    found = sorted(p for p in folder.glob("*.lock") if p.is_file()) if folder.is_dir() else []
    if study is None:
        return found
    ours = {p.name.split(".")[0] for p in found
            if p.name.endswith(".output.lock") and _outputs_in(p, workdir, study)}  # fmt: skip
    return [p for p in found if p.name.split(".")[0] in ours]


def _outputs_in(lock: Path, workdir: str | Path, study: Path) -> bool:
    try:
        lines = [line for line in lock.read_text().splitlines() if line.strip()]
    except OSError:
        return False
    return bool(lines) and all(_inside(os.path.join(workdir, line), study) for line in lines)


def _inside(path: str | Path, folder: Path) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


# ----------------------------------------------------------------------------- whose study


def _snakemake_args(argv: list[str]) -> list[str]:
    """The options of a snakemake command line (after the program or ``-m snakemake``)."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "snakemake" or (arg == "snakemake" and argv[i - 1] == "-m"):
            return argv[i + 1 :]
    return []


def study_of(snakemake_args: list[str], workdir: str | Path = ".") -> Path | None:
    """The study folder (``<results>/<study>``, absolute) that snakemake options name in
    ``workdir``: ``config.yaml`` there, then each ``--configfile``, then ``--config`` entries, as
    Snakemake merges them; None when they cannot be read."""
    import argparse

    import yaml

    from sizepenalty.config import deep_merge

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--configfile", "--configfiles", nargs="+", action="extend", default=[])
    parser.add_argument("--config", "-C", nargs="+", action="extend", default=[])
    parser.add_argument("--directory", "-d", default=None)
    try:
        opts, _ = parser.parse_known_args(snakemake_args)
    except SystemExit:  # a malformed command line
        return None
    workdir = Path(workdir)
    merged: dict = {}
    try:
        for name in ["config.yaml", *opts.configfile]:
            path = workdir / name
            if path.exists() or name != "config.yaml":
                merged = deep_merge(merged, yaml.safe_load(path.read_text()) or {})
        for entry in opts.config:
            key, _, value = entry.partition("=")
            merged[key] = yaml.safe_load(value) if value else None
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return None
    if opts.directory:
        workdir = workdir / opts.directory
    results, study = merged.get("results", "results"), merged.get("study", "synthetic-demo")
    return Path(os.path.abspath(workdir / str(results) / str(study)))


def _writes_in(pid: int, study: Path, proc: str | Path) -> bool:
    """Whether the process's stdout or stderr is a file in ``study`` (a job's log, a worker's)."""
    for fd in (1, 2):
        try:
            if _inside(os.readlink(Path(proc) / str(pid) / "fd" / str(fd)), study):
                return True
        except OSError:
            continue
    return False


def belongs(p: Process, study: Path, workdir: str | Path, proc: str | Path = "/proc") -> bool:
    """Whether a process working in ``workdir`` works for ``study``: a Snakemake run whose
    options name it (or cannot be read: then it might), a job or worker whose arguments name a
    path in it, whose output goes there, or whose Snakemake (``--parent``) runs it."""
    if p.program == "snakemake":
        found = study_of(_snakemake_args(list(p.argv)), workdir)
        return found is None or _inside(found, study)
    for arg in p.argv[1:]:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if value and not value.startswith("-") and _inside(os.path.join(workdir, value), study):
            return True
    if _writes_in(p.pid, study, proc):
        return True
    if "--parent" in p.argv[:-1]:
        parent = p.argv[p.argv.index("--parent") + 1]
        try:
            argv = (Path(proc) / parent / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return belongs(Process(int(parent), "snakemake", "", False, tuple(argv.split("\0")[:-1])),
                       study, workdir, proc)  # fmt: skip
    return False


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


def processes_in(
    workdir: str | Path = ".", proc: str | Path = "/proc", study: Path | None = None
) -> list[Process]:
    """The ``snakemake`` and ``sizepenalty`` processes (other than this one) whose working
    directory is ``workdir``: a run in progress there, or the jobs a killed run left behind;
    with ``study``, only those that work for it (:func:`belongs`)."""
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
            found.append(Process(int(entry.name), name, command[:160], _orphaned_worker(argv),
                                 tuple(argv)))  # fmt: skip
    if study is not None:
        found = [p for p in found if belongs(p, study, workdir, proc)]
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


def _wait_for_ending(
    workdir: str | Path, wait_s: float, study: Path | None = None
) -> list[Process]:
    """The processes working in ``workdir`` (for ``study``) once those that stop by themselves
    have (at most ``wait_s`` seconds)."""
    deadline = time.monotonic() + wait_s
    live = processes_in(workdir, study=study)
    if live and all(p.ending for p in live):
        pids = " ".join(str(p.pid) for p in live)
        print(f"Waiting for the warm worker of a killed run and its jobs to stop (pid {pids}; "
              "a training writes its checkpoint first) ...", file=sys.stderr, flush=True)  # fmt: skip
    while live and all(p.ending for p in live) and time.monotonic() < deadline:
        time.sleep(0.5)
        live = processes_in(workdir, study=study)
    return live


def check(
    workdir: str | Path = ".", snakemake_args: list[str] | None = None, wait_s: float = 120.0
) -> int:
    """Clear a stale lock of the study that ``snakemake_args`` (e.g. ``--configfile``) name in
    ``workdir``, or explain why not (see the module doc); the exit code."""
    args = list(snakemake_args or [])
    study = study_of(args, workdir)
    locks = lock_files(workdir, study)
    if not locks:
        return 0
    folder = os.path.realpath(workdir)
    shown = os.path.relpath(study, folder) if study else folder  # type: ignore[arg-type]
    resume = " ".join([RESUME, *(shlex.quote(a) for a in args)])
    live = _wait_for_ending(workdir, wait_s, study)
    if live:
        runs = [p for p in live if p.program == "snakemake"]
        listed = "; ".join(f"pid {p.pid}: {p.command}" for p in live[:5])
        if runs:
            what = f"A Snakemake run of the study {shown} is still working in {folder} ({listed})."
            todo = (f"Wait for it to end, or stop it with `kill {runs[0].pid}` (Snakemake stops "
                    "its jobs; a training checkpoints first)")  # fmt: skip
        else:
            what = (f"Snakemake's lock of the study {shown} in {folder} is left from a killed "
                    f"run, but jobs of that run are still running ({listed}).")  # fmt: skip
            pids = " ".join(str(p.pid) for p in live)
            todo = (f"Wait for them to end, or stop them with `kill {pids}` (a training "
                    "checkpoints and exits)")  # fmt: skip
        print(f"{what} Not unlocking. {todo}, then run `make run` again.", file=sys.stderr)
        return 1
    names = ", ".join(p.name for p in locks)
    print(f"Snakemake's lock of the study {shown} in {folder} is stale: the run that took it was "
          "killed (or its terminal or machine went away) and no snakemake or sizepenalty process "
          "of this study works in this folder any more (a run on another machine sharing the "
          f"folder would not show here). Removing its lock files (.snakemake/locks/: {names}; "
          "`snakemake --unlock` would remove the locks of every study run here); the run that "
          "follows passes --rerun-incomplete: the jobs the killed run left unfinished run again, "
          f"a killed training resumes from its last checkpoint. By hand: remove those files, then "
          f"`{resume}`.", file=sys.stderr, flush=True)  # fmt: skip
    for lock in locks:
        lock.unlink(missing_ok=True)
    return 0


# ----------------------------------------------------------------------------- a run folder's lock


class FolderInUse(InputError):
    """Another process holds the folder's lock (:func:`hold_run_folder`); one line, exit 2."""


@dataclass
class FolderLock:
    """An exclusive ``flock`` on a folder's ``.lock`` file, held while this object lives (and
    by the process until it exits: the kernel releases it with the last descriptor)."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.release()


LOCK_NAME = ".lock"


def hold_run_folder(folder: str | Path) -> FolderLock:
    """Take the exclusive lock of a run folder, or raise :class:`FolderInUse` naming the process
    that holds it (its pid, since when, its command line) and what to do. The lock file keeps
    the holder's description for that message."""
    import fcntl

    path = Path(folder) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        pid = holder.split()[1] if holder.startswith("pid ") else "PID"
        raise FolderInUse(
            f"{folder}: this run folder is in use by {holder}; this training stops here. Wait "
            f"for that one to end, or stop it with `kill {pid}` (it checkpoints first)"
        ) from None
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    text = f"pid {os.getpid()} (since {time.strftime('%Y-%m-%dT%H:%M:%S')}: {command[:300]})\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)
    return FolderLock(path, fd)


def main(argv: list[str] | None = None) -> int:
    """``python -m sizepenalty.locks [snakemake options]``: :func:`check` the current directory
    (the options, e.g. ``--configfile``, are passed to ``snakemake --unlock``)."""
    return check(".", list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
