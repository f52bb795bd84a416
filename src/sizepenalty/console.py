"""The console of a study run (`make run`, which runs `snakemake --logger sizepenalty`).

Snakemake's own console prints every job's inputs, outputs and reason (649 lines for the 40 jobs
of the tiny test study) and, for a failed job, its shell command but not its error. This one
prints:

* a header: the jobs planned, whether a checkpoint will add jobs, where the full log is;
* one progress line: a bar, jobs done / total, elapsed time, an ETA and the running jobs, each
  training with its epoch (read from its log). On a terminal the line is redrawn in place; in a
  log file or a pipe it is printed when a job finishes, and every :data:`HEARTBEAT_S` seconds while
  a training's epoch moves;
* for a failed job, its one-line error (:func:`error_lines`) and its log's path;
* at the end, the jobs done and the full log's path, and as the last line the report's path.

Snakemake's file log (``.snakemake/log/*.snakemake.log``) is written by Snakemake's own handler,
unaffected: it keeps everything this console leaves out. Snakemake's ``--quiet rules`` would have
quieted that file log too (one filter serves both), hence a logger plugin.

:class:`Console` consumes Snakemake's log records as plain attribute dicts (the Snakemake side is
the plugin package ``snakemake_logger_plugin_sizepenalty``), so it is tested without Snakemake.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

HEARTBEAT_S = 30.0
"""Off a terminal: the longest gap between progress lines while a training's epoch moves."""
BAR_WIDTH = 20
ERROR_LINE = re.compile(r"sizepenalty [\w-]+: error: ")
"""How every CLI verb reports bad input (sizepenalty.cli): the line a failed job is known by."""
EPOCH = re.compile(r"\bepoch (\d+)/(\d+)\b")
"""A training's epoch line (sizepenalty.train prints ``<run> epoch 2/9 loss ...``)."""
START = re.compile(r"^=== \S+ sizepenalty .*: start ===$", re.M)
"""The line each (re)start of a job appends to its log (sizepenalty.commands)."""
TAIL_BYTES = 64 * 1024
# Snakemake's errors that say a job failed (its shell command, then the run): the console shows
# the job's own error instead. Its plain messages at INFO level stay in its file log, except
# KEPT_INFO; its warnings and other errors are always shown.
JOB_FAILURE_ERRORS = ("CalledProcessError", "At least one job did not complete successfully")
KEPT_INFO = ("Nothing to be done",)
QUIET_RULES = ("fingerprint",)
"""Bookkeeping jobs (the workflow's stamps, a local job before each real one): counted in the
progress, never named in it, and off a terminal no line of their own (half of a study's jobs)."""


# ----------------------------------------------------------------------------- what a log says


def read_tail(path: str | Path, size: int = TAIL_BYTES) -> str:
    """The last ``size`` bytes of a text file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(fh.tell() - size, 0))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def last_attempt(text: str) -> str:
    """A job log's part since its last (re)start: a log is appended to by every attempt."""
    starts = list(START.finditer(text))
    return text[starts[-1].end() :] if starts else text


def error_lines(text: str, fallback: int = 3) -> list[str]:
    """A failed job's error from its log's last attempt: the last ``sizepenalty <verb>: error:
    ...`` line (every verb reports bad input so), else a Python traceback's last line (the
    exception), else the last ``fallback`` non-empty lines."""
    lines = [line.rstrip() for line in last_attempt(text).splitlines()]
    marked = [line.strip() for line in lines if ERROR_LINE.search(line)]
    if marked:
        return marked[-1:]
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if tracebacks:
        tail = [line for line in lines[tracebacks[-1] + 1 :] if line and not line[0].isspace()]
        if tail:
            return tail[-1:]
    return [line.strip() for line in lines if line.strip()][-fallback:]


def last_epoch(text: str) -> tuple[int, int] | None:
    """(epoch, epochs) of a training log's last epoch line in its last attempt, or None before
    that attempt's first epoch."""
    found = EPOCH.findall(last_attempt(text))
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def live_logs(logs: Iterable[str]) -> list[str]:
    """The files a running job writes its output to: the train rule appends to
    ``<log>.attempts.log`` while it runs (and copies it to its log when it ends, workflow/rules/
    train.smk); other rules write their log directly."""
    out = []
    for log in logs:
        if log.endswith(".log"):
            out.append(log[: -len(".log")] + ".attempts.log")
        out.append(log)
    return out


# ----------------------------------------------------------------------------- formatting


def duration(seconds: float) -> str:
    """``45s``, ``2m05s``, ``1h02m``."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = 0 if total <= 0 else min(width, done * width // total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def job_label(rule: str, wildcards: Mapping[str, Any]) -> str:
    """A job as the console names it: its rule and, for a per-run job, the run's id
    (``train DTS/main/seed42/fold0``), else its wildcard values (``preprocess case03``)."""
    from types import SimpleNamespace

    from sizepenalty.runs import AXES, RunKey

    if not wildcards:
        return rule
    if all(a.name in wildcards for a in AXES):
        try:
            return f"{rule} {RunKey.from_wildcards(SimpleNamespace(**wildcards)).id}"
        except ValueError:
            pass
    return f"{rule} {'/'.join(str(v) for v in wildcards.values())}"


def progress_line(done: int, total: int, grows: bool, elapsed: float, eta: float | None,
                  running: Iterable[str] = (), news: str = "") -> str:  # fmt: skip
    """The progress line: ``[####----]  12/29 jobs (41%) · 2m13s elapsed, ETA ~3m05s``, then
    ``news`` (what just happened) and the running jobs. ``grows``: a checkpoint still to run will
    add jobs (the total gets a ``+``)."""
    pct = 0 if total <= 0 else done * 100 // total
    eta_text = "ETA --" if eta is None else f"ETA ~{duration(eta)}"
    parts = [f"{bar(done, total)} {done:>3}/{total}{'+' if grows else ''} jobs ({pct}%)",
             f"{duration(elapsed)} elapsed, {eta_text}"]  # fmt: skip
    if news:
        parts.append(news)
    running = list(running)
    if running:
        parts.append("running: " + ", ".join(running))
    return " · ".join(parts)


# ----------------------------------------------------------------------------- ETA


def eta_seconds(
    remaining: Mapping[str, int],
    running: Iterable[tuple[str, float, float | None]],
    durations: Mapping[str, list[float]],
    concurrency: float,
) -> float | None:
    """Seconds until every job has run, or None before anything can be estimated.

    Args:
        remaining: jobs not started yet per rule ('' for jobs of unknown rule, e.g. those a
            checkpoint added).
        running: per running job (its rule, seconds it has run, fraction done: its epochs, or
            None).
        durations: wall seconds of each rule's finished jobs.
        concurrency: the mean number of jobs run at once so far (work per wall second).

    A rule's job takes the mean of its finished jobs; without one, what its running trainings'
    epochs extrapolate to; else the mean of every finished job.
    """
    running = list(running)
    every = [d for ds in durations.values() for d in ds]
    overall = sum(every) / len(every) if every else None
    projected: dict[str, list[float]] = {}
    for rule, ran, frac in running:
        if frac and ran > 0:
            projected.setdefault(rule, []).append(ran / frac)

    def expected(rule: str) -> float | None:
        known = durations.get(rule) or projected.get(rule)
        return sum(known) / len(known) if known else overall

    work = 0.0
    for rule, n in remaining.items():
        if n > 0:
            each = expected(rule)
            if each is None:
                return None
            work += n * each
    for rule, ran, frac in running:
        if frac and ran > 0:
            work += ran * (1 - frac) / frac
        else:
            each = expected(rule)
            if each is None:
                return None
            work += max(each - ran, 0.0)
    return work / max(concurrency, 1.0)


# ----------------------------------------------------------------------------- the console


@dataclass
class Job:
    """A running job: its Snakemake id, rule, console label, log files and start time."""

    jobid: int
    rule: str
    label: str
    logs: list[str]
    started: float
    epoch: tuple[int, int] | None = None

    def text(self) -> str:
        return self.label + (f" epoch {self.epoch[0]}/{self.epoch[1]}" if self.epoch else "")


@dataclass
class Failure:
    """A failed job: its label, its error (:func:`error_lines`) and the log it is in."""

    label: str
    lines: list[str]
    log: str | None

    def text(self) -> list[str]:
        first, *rest = self.lines or ["(its log is empty)" if self.log else "(no log file)"]
        out = [f"FAILED {self.label}: {first}", *(f"  {line}" for line in rest)]
        return out + ([f"  log: {self.log}"] if self.log else [])


@dataclass
class Console:
    """The console's state and output, fed one Snakemake log record at a time (:meth:`handle`),
    polled for trainings' epochs and redrawn (:meth:`tick`), ended by :meth:`close`.

    Args:
        stream: where it writes.
        tty: redraw one line in place (a terminal) or print whole lines (a file, a pipe).
        clock: seconds (monotonic), injectable for tests.
        width: a terminal line's width (None: the terminal's own).
        logfile: Snakemake's full log, named in the header and at the end.
        dryrun: Snakemake's ``-n``: its plain messages (the job table) are shown.
        printshellcmds: Snakemake's ``-p``: each job's command is shown.
        verbose: Snakemake's ``--verbose``: its debug messages are shown.
    """

    stream: TextIO
    tty: bool = False
    clock: Callable[[], float] = time.monotonic
    width: int | None = None
    logfile: str | None = None
    dryrun: bool = False
    printshellcmds: bool = False
    verbose: bool = False
    heartbeat: float = HEARTBEAT_S
    done: int = 0
    total: int = 0
    planned: Counter = field(default_factory=Counter)
    running: dict[int, Job] = field(default_factory=dict)
    durations: dict[str, list[float]] = field(default_factory=dict)
    started_rules: Counter = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    errors: int = 0
    checkpoints: set[str] = field(default_factory=set)
    report: str | None = None
    start: float | None = None
    _busy: float = 0.0  # job-seconds run so far (the concurrency's numerator)
    _busy_at: float | None = None
    # After a checkpoint: (progress records to wait for, the total before, the checkpoint).
    _grow: tuple[int, int, str] | None = None
    _finished: str = ""
    _quiet: bool = False  # the job just finished is a QUIET_RULES one
    _live: bool = False
    _last_line: float = 0.0
    _shown_epochs: dict[int, tuple[int, int] | None] = field(default_factory=dict)
    _header: bool = False
    _closed: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- output

    def println(self, text: str) -> None:
        """A permanent line (above the live line on a terminal)."""
        if self.tty and self._live:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self._live = False
        self._last_line = self.clock()
        if self.tty and self.start is not None and not self._closed:
            self._draw()
        self.stream.flush()

    def _draw(self) -> None:
        width = self.width or shutil.get_terminal_size((100, 24)).columns
        line = self.status()
        if len(line) > width - 1:
            line = line[: width - 4] + "..."
        self.stream.write("\r" + line + "\x1b[K")
        self._live = True
        self.stream.flush()

    # -- state

    def _account(self, now: float) -> None:
        if self._busy_at is not None:
            self._busy += len(self.running) * (now - self._busy_at)
        self._busy_at = now

    def eta(self, now: float) -> float | None:
        if self.start is None:
            return None
        self._account(now)
        remaining = Counter({r: n - self.started_rules[r] for r, n in self.planned.items()})
        # Jobs no rule count covers: those a checkpoint added.
        planned = sum(max(n, 0) for n in remaining.values())
        remaining[""] += max(self.total - self.done - len(self.running) - planned, 0)
        running = []
        for job in self.running.values():
            frac = job.epoch[0] / job.epoch[1] if job.epoch and job.epoch[1] else None
            running.append((job.rule, now - job.started, frac))
        elapsed = max(now - self.start, 1e-9)
        return eta_seconds(remaining, running, self.durations, self._busy / elapsed)

    def grows(self) -> bool:
        return bool(self.checkpoints) or self._grow is not None

    def status(self, news: str = "") -> str:
        now = self.clock()
        elapsed = 0.0 if self.start is None else now - self.start
        shown = [j for j in self.running.values() if j.rule not in QUIET_RULES]
        running = [job.text() for job in sorted(shown, key=lambda j: j.jobid)]
        return progress_line(self.done, self.total, self.grows(), elapsed, self.eta(now),
                             running, news)  # fmt: skip

    def header(self) -> None:
        if self._header:
            return
        self._header = True
        names = ", ".join(sorted(self.checkpoints))
        more = f", more once checkpoint {names} has run" if self.checkpoints else ""
        log = f"; full log: {self.logfile}" if self.logfile else ""
        self.println(f"{self.total} jobs to run{more}{log}")

    # -- records

    def handle(self, rec: Mapping[str, Any]) -> None:
        """One Snakemake log record (its attributes: ``event``, ``msg``, ``levelno``, ...)."""
        with self.lock:
            event = str(rec.get("event") or "")
            handler = getattr(self, f"_on_{event}", None) if event else None
            if handler is not None:
                handler(rec)
            elif not event:
                self._on_message(rec)

    def _on_run_info(self, rec: Mapping[str, Any]) -> None:
        stats = dict(rec.get("stats") or {})
        self.total = int(stats.pop("total", sum(stats.values())))
        self.planned = Counter({str(k): int(v) for k, v in stats.items()})
        if self.dryrun:
            self.println(str(rec.get("msg")))

    def _on_job_info(self, rec: Mapping[str, Any]) -> None:
        if self.dryrun:  # a dry run lists every job: the table of counts says it
            return
        now = self.clock()
        if self.start is None:
            self.start = now
            self.header()
        self._account(now)
        rule = str(rec.get("rule_name"))
        job = Job(int(rec["jobid"]), rule, job_label(rule, rec.get("wildcards") or {}),
                  list(rec.get("log") or []), now)  # fmt: skip
        self.running[job.jobid] = job
        self.started_rules[rule] += 1
        if rec.get("is_checkpoint"):
            self.checkpoints.add(rule)
        if self.tty:
            self._draw()

    def _on_shellcmd(self, rec: Mapping[str, Any]) -> None:
        if self.printshellcmds and rec.get("shellcmd"):
            self.println(str(rec["shellcmd"]))

    def _on_job_finished(self, rec: Mapping[str, Any]) -> None:
        now = self.clock()
        self._account(now)
        job = self.running.pop(int(rec["job_id"]), None)
        if job is None:
            return
        took = now - job.started
        self.durations.setdefault(job.rule, []).append(took)
        job.epoch = self._epoch(job) or job.epoch
        if job.rule in QUIET_RULES:
            self._quiet = True
        else:
            self._finished = f"{job.text()} ({duration(took)})"
        if job.rule in self.checkpoints:
            # Snakemake reports this job's progress before it updates the DAG: the total that
            # counts the checkpoint's new jobs comes with the next progress record.
            self.checkpoints.discard(job.rule)
            self._grow = (2, self.total, job.rule)

    def _on_progress(self, rec: Mapping[str, Any]) -> None:
        self.done, self.total = int(rec["done"]), int(rec["total"])
        news, self._finished = (f"done: {self._finished}" if self._finished else ""), ""
        quiet, self._quiet = self._quiet and not news, False
        if self._grow is not None:
            wait, before, rule = self._grow
            self._grow = (wait - 1, before, rule) if wait > 1 else None
            if self._grow is None and self.total != before:
                self.println(f"checkpoint {rule} added {self.total - before} jobs: {self.total} "
                             f"in all ({before} planned before)")  # fmt: skip
        if self.tty:
            self._draw()
        elif not quiet:
            self.println(self.status(news))
        self._shown_epochs = {j.jobid: j.epoch for j in self.running.values()}

    def _on_job_error(self, rec: Mapping[str, Any]) -> None:
        self._account(self.clock())
        jobid = int(rec.get("jobid", -1))
        job = self.running.pop(jobid, None)
        rule = str(rec.get("rule_name"))
        label = job.label if job else rule
        logs = [str(p) for p in rec.get("log") or []]
        texts = [(p, read_tail(p)) for p in logs]
        log, text = next(((p, t) for p, t in texts if t.strip()), (logs[0] if logs else None, ""))
        failure = Failure(label, error_lines(text), log)
        self.failures.append(failure)
        for line in failure.text():
            self.println(line)

    def _on_error(self, rec: Mapping[str, Any]) -> None:
        msg = str(rec.get("msg") or "")
        # A failed shell command, then Snakemake's closing error: the failure is on the console
        # already with its own error (_on_job_error), which is what these lack.
        if any(text in msg for text in JOB_FAILURE_ERRORS):
            return
        self.errors += 1
        self.println(msg)

    def _on_group_error(self, rec: Mapping[str, Any]) -> None:
        self.errors += 1
        self.println(str(rec.get("msg") or "a group job failed"))

    def _on_message(self, rec: Mapping[str, Any]) -> None:
        msg = "" if rec.get("msg") is None else str(rec.get("msg"))
        level = int(rec.get("levelno") or 20)
        if "sizepenalty_plan" in rec:
            plan = rec["sizepenalty_plan"]
            self.checkpoints |= set(plan.get("checkpoints") or ())
            return
        if "sizepenalty_report" in rec:
            self.report = str(rec["sizepenalty_report"])
            return
        if msg.startswith("Complete log(s): "):
            self.logfile = self.logfile or msg.split(": ", 1)[1]
            return
        if msg.startswith(("Elapsed time", "Exiting because a job execution failed")):
            return
        if level >= 30 or msg.startswith(KEPT_INFO) or self.dryrun or (self.verbose and level < 20):
            if msg:
                self.println(msg)

    # -- polling and the end

    @staticmethod
    def _epoch(job: Job) -> tuple[int, int] | None:
        for path in live_logs(job.logs):
            epoch = last_epoch(read_tail(path, 4096))
            if epoch:
                return epoch
        return None

    def tick(self) -> None:
        """Read running trainings' epochs from their logs; redraw (terminal) or, off a terminal,
        print the progress line when an epoch moved and the last line is ``heartbeat`` old."""
        with self.lock:
            if self._closed or self.start is None:
                return
            for job in self.running.values():
                job.epoch = self._epoch(job) or job.epoch
            if self.tty:
                self._draw()
                return
            moved = any(self._shown_epochs.get(j.jobid) != j.epoch for j in self.running.values()
                        if j.epoch)  # fmt: skip
            if moved and self.clock() - self._last_line >= self.heartbeat:
                self.println(self.status())
                self._shown_epochs = {j.jobid: j.epoch for j in self.running.values()}

    def close(self) -> None:
        """The last lines: how the run ended, the full log, and (after a success) the report."""
        with self.lock:
            if self._closed:
                return
            self._closed = True  # no live line from here on
            if self.tty and self._live:
                self.stream.write("\r\x1b[K")
                self._live = False
            if self.start is not None and not self.dryrun:
                took = duration(self.clock() - self.start)
                log = f" Full Snakemake log: {self.logfile}" if self.logfile else ""
                done = f"{self.done} of {self.total}{'+' if self.grows() else ''} jobs done"
                if self.failures:
                    failed = plural(len(self.failures), "job")
                    self.println(f"Stopped: {failed} failed; {done} in {took}.{log}")
                    for failure in self.failures:
                        for line in failure.text():
                            self.println(line)
                elif self.errors:
                    self.println(f"Stopped by the error above; {done} in {took}.{log}")
                else:
                    self.println(f"Done: {plural(self.done, 'job')} in {took}.{log}")
                    if self.report:
                        self.println(f"Report: {self.report}")
            self.stream.flush()
