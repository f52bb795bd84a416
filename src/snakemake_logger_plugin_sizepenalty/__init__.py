"""Snakemake's logger plugin ``sizepenalty`` (``snakemake --logger sizepenalty``; `make run` uses
it): the study's console, :mod:`sizepenalty.console`. Snakemake finds it by its package name and
imports it on every start, so it imports nothing heavy."""

import logging
import os
import sys
import threading

from snakemake_interface_logger_plugins.base import LogHandlerBase

from sizepenalty.console import Console

__all__ = ["LogHandler"]

TICK_S = 1.0
"""How often running trainings' logs are read for their epoch (and a terminal line redrawn)."""


def _snakemake_logfile() -> str | None:
    """The file Snakemake's own handler writes the full log to (relative to the working directory
    when inside it), once Snakemake has set it up."""
    for handler in logging.getLogger("snakemake.logging").handlers:
        if isinstance(handler, logging.FileHandler):
            path = handler.baseFilename
            rel = os.path.relpath(path)
            return path if rel.startswith("..") else rel
    return None


class LogHandler(LogHandlerBase):
    """Feeds each Snakemake log record to a :class:`~sizepenalty.console.Console` on stderr
    (stdout with Snakemake's ``--stdout``) and ticks it from a thread of its own."""

    def __post_init__(self) -> None:
        s = self.common_settings
        stream = sys.stdout if getattr(s, "stdout", False) else sys.stderr
        self.console = Console(
            stream,
            tty=stream.isatty() and os.environ.get("TERM") != "dumb",
            dryrun=bool(getattr(s, "dryrun", False)),
            printshellcmds=bool(getattr(s, "printshellcmds", False)),
            verbose=bool(getattr(s, "verbose", False)),
        )
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="sizepenalty-console", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.console.tick()
            except Exception:  # a console must never stop a run
                pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.console.logfile is None:
                self.console.logfile = _snakemake_logfile()
            self.console.handle(vars(record) | {"msg": record.msg})
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._stop.set()
        try:
            self.console.close()
        finally:
            super().close()

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
