"""MLflow bookkeeping for the study: the only module that talks to MLflow.

Two layers, so tracking never costs a training and never loses one:

* :class:`RunRecord` — every training keeps its own record in its run folder (``run.json``:
  params, tags, per-step metrics, status, artifacts and, once known, the MLflow run id). It is
  written on every change and is the source of truth.
* :class:`Tracker` — a failure-tolerant MLflow client: a tracking server is asked once whether
  it answers (``/health``, 3 s) before the first call, then short HTTP timeouts and one retry
  (not MLflow's two minutes of back-off), SQLite "database is locked" retried, and after the
  first real failure a job stops trying and says so once on stderr.

A training's MLflow calls run on a background thread (:class:`TrainingRun`, :class:`Mirror`): the
training writes its record and goes on, the thread mirrors each change to MLflow at once (so
per-epoch metrics show up live) and the training waits for it only when it ends.

:func:`sync_study` (``sizepenalty sync``; the aggregate stage calls it) pushes every record to the
tracking store: it finds a run by its record's key (no duplicates), logs only the metric steps,
params, tags and artifacts the store lacks and sets the final status — so running it again, or
after a tracking server comes back, is safe. It also rebuilds what the records alone cannot
hold: the study's parent run (made again when the store lost it, its id written to the study's
parent-run file) and each child's link to it.

The study's own SQLite store (:func:`open_study_store`, at a run's start and in every sync): a
damaged file (``database disk image is malformed``, e.g. truncated by a full disk) is moved aside
as ``mlflow.db.damaged-<time>`` and said so, and the sync rebuilds a new store from the run
records; a study folder copied or moved elsewhere gets its artifact locations pointed into the
folder where it is now (MLflow keeps them as absolute paths).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sizepenalty.errors import InputError


def _http_defaults() -> None:
    # A dead tracking server must cost a job seconds, not MLflow's default 2 minutes per call.
    # (Set where a tracker is made: a warm worker's job gets its caller's environment.)
    for name, value in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "5"),
                        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
                        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")):  # fmt: skip
        os.environ.setdefault(name, value)


_http_defaults()

RECORD = "run.json"
KEY_TAG = "sizepenalty.key"
SUPERSEDED_TAG = "sizepenalty.superseded"
# MLflow 3's UI opens an experiment without this tag on its GenAI "traces" page.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
TERMINAL = ("FINISHED", "FAILED", "KILLED")


def _transient(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "database is locked" in text or "database is busy" in text or "sqlite_busy" in text


_DAMAGE = ("malformed", "not a database", "file is encrypted", "database corrupt")


def _damaged(exc: BaseException) -> bool:
    """Whether an error says the SQLite file itself is damaged (not busy, not absent)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(d in text for d in _DAMAGE)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if v is not None and not isinstance(v, bool) and math.isfinite(float(v))
    }


# ----------------------------------------------------------------------------- the MLflow client


class Tracker:
    """A thin, failure-tolerant wrapper around MLflow for one job (see the module doc).

    ``artifact_location`` is used only when this tracker creates the experiment.
    """

    RETRIES = 6

    def __init__(
        self, uri: str, experiment: str, enabled: bool = True, artifact_location: str | None = None
    ) -> None:
        _http_defaults()
        self.uri = uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.enabled = enabled
        self.run_id: str | None = None
        self._params: tuple[str | None, set[str]] = (None, set())  # (run id, its params' keys)
        self._warned = False
        self._checked = False  # the store was asked once whether it answers
        self._unreachable: str | None = None
        self._client = None
        self.failure: BaseException | None = None  # what disabled it

    def _fail(self, what: str, exc: BaseException) -> None:
        self.failure = exc
        if not self._warned:
            if _damaged(exc):
                why = (str(exc).strip().splitlines() or [""])[0]  # SQLAlchemy appends the SQL
                print(f"warning: the MLflow store {self.uri} is damaged ({what}: {why}); tracking "
                      "is disabled for this job and the run folder keeps the record: `sizepenalty "
                      "sync -c <study>/config.effective.yaml` (the aggregate step runs it) moves "
                      "the damaged file aside and rebuilds the store from the run records",
                      file=sys.stderr)  # fmt: skip
            else:
                print(f"warning: MLflow tracking disabled for this job ({what}: {type(exc).__name__}: {exc}); "
                      "the run folder keeps the record, `sizepenalty sync` pushes it later", file=sys.stderr)  # fmt: skip
            self._warned = True
        self.enabled = False

    def guard(self, what: str, fn, *args, **kwargs) -> Any:
        """``fn(*args)``, or None once tracking failed (retrying a locked SQLite file first)."""
        if not self.enabled:
            return None
        why = self.unreachable()  # a dead server costs one short request, not a timeout per call
        if why:
            self._fail(what, ConnectionError(f"{self.uri} does not answer ({why})"))
            return None
        for attempt in range(self.RETRIES + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any tracking error must not stop the job
                if attempt < self.RETRIES and _transient(exc):
                    time.sleep(0.2 * 2**attempt)
                    continue
                self._fail(what, exc)
                return None

    def unreachable(self) -> str | None:
        """Why the store does not answer, or None: asked once per tracker (:func:`check_store`)."""
        if not self._checked:
            self._checked, self._unreachable = True, check_store(self.uri)
        return self._unreachable

    def client(self):
        """The MLflow client (a local store is created on its first call when missing)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def reader(self):
        """:meth:`client`, for reading an existing store: a local store (SQLite file, file
        store folder) that is not there raises :class:`StoreMissing` instead of being
        created."""
        path = local_store(self.uri)
        if path is not None and not path.exists():
            raise StoreMissing(f"{path}: no MLflow store there (tracking URI {self.uri}): the "
                               "study logged no run yet, or the config names another study")  # fmt: skip
        return self.client()

    def experiment_id(self) -> str:
        client = self.client()
        exp = client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(
                self.experiment, artifact_location=self.artifact_location, tags=EXPERIMENT_KIND
            )
        except Exception:  # another job created it concurrently
            return client.get_experiment_by_name(self.experiment).experiment_id

    def start(
        self,
        name: str,
        run_id: str | None = None,
        parent_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str | None:
        """Continue ``run_id`` if given (resume), else create a run (child of ``parent_id``)."""

        def _start() -> str:
            client = self.client()
            if run_id:
                client.update_run(run_id, status="RUNNING")
                return run_id
            all_tags = {"mlflow.runName": name, **(tags or {})}
            if parent_id:
                all_tags["mlflow.parentRunId"] = parent_id
            new = client.create_run(self.experiment_id(), tags=all_tags, run_name=name).info.run_id
            self._params = (new, set())  # a new run has no params: no need to ask
            return new

        self.run_id = self.guard("start run", _start)
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        self.log_batch(params, [])

    def log_metrics(
        self, metrics: dict[str, float], step: int | None = None, ts: int | None = None
    ) -> None:
        ts = ts or int(time.time() * 1000)
        self.log_batch({}, [(k, v, ts, step or 0) for k, v in _finite(metrics).items()])

    def log_batch(self, params: dict[str, Any], points: list[tuple[str, float, int, int]]) -> None:
        """Params (those the run lacks: MLflow refuses to change one) and metric ``points``
        (key, value, timestamp in ms, step) in as few requests as MLflow allows."""
        if self.run_id and (params or points):
            self.guard("log batch", self._log_batch, params, points)

    def _log_batch(self, params: dict[str, Any], points: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric, Param

        client = self.client()
        run_id, known = self._params
        if params and run_id != self.run_id:  # a run this tracker did not create: ask once
            run_id, known = self.run_id, set(client.get_run(self.run_id).data.params)
            self._params = (run_id, known)
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in known]
        metrics = [Metric(k, v, int(ts), int(step)) for k, v, ts, step in points]
        while items or metrics:  # at most 100 params and 1000 entities per request
            p, items = items[:90], items[90:]
            m, metrics = metrics[: 900 - len(p)], metrics[900 - len(p) :]
            client.log_batch(self.run_id, metrics=m, params=p)
            known.update(x.key for x in p)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.run_id and Path(path).exists():
            self.guard(
                "log artifact",
                lambda: self.client().log_artifact(self.run_id, str(path), artifact_path),
            )

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id:
            self.guard(
                "set tags",
                lambda: [self.client().set_tag(self.run_id, k, v) for k, v in tags.items()],
            )

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self.guard("end run", lambda: self.client().set_terminated(self.run_id, status=status))


class StoreMissing(InputError):
    """A local tracking store that was to be read is not there (it is never created by reading)."""


def local_store(uri: str) -> Path | None:
    """The file or folder of a local tracking URI (``sqlite:///path``, ``file:`` or a plain
    path: MLflow's file store); None for a server or another scheme."""
    import re
    from urllib.parse import unquote, urlparse

    if uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:").removeprefix("///")  # sqlite:////abs, sqlite:///rel
        return Path(path) if path and path != ":memory:" else None
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):
        return Path(uri)
    return None


def tracker_for(cfg) -> Tracker:
    """The study's tracker (artifacts beside the SQLite store)."""
    return Tracker(
        cfg.tracking_uri(), cfg.tracking.experiment, cfg.tracking.enabled, cfg.artifact_location()
    )


def check_store(uri: str, timeout: float = 3.0) -> str | None:
    """None when the tracking store answers, else why not (one short HTTP request for a server;
    a SQLite or file store is always there)."""
    if not uri.startswith(("http://", "https://")):
        return None
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:
            return None if r.status == 200 else f"HTTP {r.status}"
    except OSError as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (None for a server or another store)."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def store_damage(uri: str) -> str | None:
    """Why the SQLite file of ``uri`` is damaged (SQLite's own integrity check), or None when it
    is sound, absent (MLflow creates it) or not a file store."""
    import sqlite3

    path = sqlite_path(uri)
    if path is None or not path.exists():
        return None
    try:
        con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            found = con.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return str(exc) if _damaged(exc) else None
    return None if found == "ok" else str(found)


def open_study_store(cfg) -> list[str]:
    """Make the study's own SQLite store usable where the study folder is now: a damaged file is
    moved aside, artifact locations left from another folder are pointed here. Returns what was
    done, one line each (for the console); nothing for a tracking server."""
    if not cfg.tracking.enabled or cfg.tracking.uri:
        return []
    uri = cfg.tracking_uri()
    path = sqlite_path(uri)
    why = store_damage(uri)
    if why:
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        path.rename(aside)
        return [f"The MLflow store {path} is damaged ({why}): moved aside to {aside.name}. A new "
                "store starts there; `sizepenalty sync` (the aggregate step runs it) rebuilds "
                "every run, the study's parent run and its tables from the run records."]  # fmt: skip
    moved = _relocate_artifacts(path, cfg.artifact_location())
    return [f"The study folder was moved or copied (MLflow's artifacts were under {old}): its "
            f"store now keeps them under {cfg.artifact_location()}." for old in moved]  # fmt: skip


def _relocate_artifacts(db: Path | None, here: str | None) -> list[str]:
    """Point the artifact locations of a study store copied from another folder (experiments
    made with a ``.../mlartifacts`` location other than ``here``) to ``here``; the old roots."""
    import sqlite3

    if db is None or here is None or not db.exists():
        return []
    moved = []
    con = sqlite3.connect(db, timeout=60)
    try:
        with con:  # one transaction
            rows = con.execute("SELECT experiment_id, artifact_location FROM experiments")
            for exp_id, old in rows.fetchall():
                if not old or old == here or not old.rstrip("/").endswith("/mlartifacts"):
                    continue
                con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                            (here, exp_id))  # fmt: skip
                for table, column in (("runs", "artifact_uri"),
                                      ("logged_models", "artifact_location")):  # fmt: skip
                    try:
                        con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                    f"WHERE experiment_id = ? AND substr({column}, 1, ?) = ?",
                                    (here, len(old) + 1, exp_id, len(old), old))  # fmt: skip
                    except sqlite3.OperationalError:  # a table this MLflow version lacks
                        pass
                moved.append(old)
    except sqlite3.DatabaseError:
        return []  # a damaged file: store_damage says so
    finally:
        con.close()
    return moved


# ----------------------------------------------------------------------------- run records


@dataclass
class RunRecord:
    """One training's tracking record, kept in its run folder (see the module doc)."""

    key: str  # "<study>/<run id>/<fingerprint>": the run's identity in any store
    name: str
    parent_file: str | None = None  # the study's parent-run file (its id, once made)
    run_id: str | None = None
    status: str = "RUNNING"
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[list[float]]] = field(default_factory=dict)  # key -> [step, value, ts]
    artifacts: list[str] = field(default_factory=list)  # files of the run folder

    @classmethod
    def load(cls, run_dir: str | Path) -> RunRecord | None:
        path = Path(run_dir) / RECORD
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, run_dir: str | Path) -> None:
        from sizepenalty.data.io import write_json_atomic

        write_json_atomic(Path(run_dir) / RECORD, asdict(self))

    def add_metrics(self, metrics: dict[str, float], step: int, ts: int) -> None:
        for k, v in _finite(metrics).items():
            self.metrics.setdefault(k, []).append([step, v, ts])


def read_run_id(path: str | Path | None) -> str | None:
    """The run id kept in a file (the study's parent-run file), or None if absent or empty."""
    if not path or not Path(path).exists():
        return None
    return Path(path).read_text().strip() or None


@dataclass
class _Log:
    """Params and metric points (key, value, timestamp in ms, step) for one ``log_batch``."""

    params: dict[str, Any]
    points: list[tuple[str, float, int, int]]


class Mirror:
    """A tracker's calls, made in order on a background thread, so that MLflow's latency and
    failures stay off a training's critical path: :meth:`call` and :meth:`log` return at once,
    consecutive :meth:`log` calls waiting in the queue go out as one batch, and an error only
    disables the tracker (one warning on stderr, as any tracking failure). The thread starts
    with :meth:`start` (calls queue up until then) and is a daemon: it never keeps a process
    alive; :meth:`close` waits for it."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._ops: deque[_Log | tuple[Callable[..., Any], tuple]] = deque()
        self._cv = threading.Condition()
        self._closing = self._started = False
        self.cpu_s = 0.0  # the thread's CPU time, once it ended: tracking's cost off the path
        self._thread = threading.Thread(target=self._run, name="sizepenalty-mlflow", daemon=True)

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(*args)`` on the thread, after everything queued before."""
        self._put((fn, args))

    def log(self, params: dict[str, Any], points: list[tuple[str, float, int, int]]) -> None:
        """:meth:`Tracker.log_batch` on the thread, merged with the logs queued next to it."""
        self._put(_Log(dict(params), list(points)))

    def _put(self, op) -> None:
        with self._cv:
            self._ops.append(op)
            self._cv.notify()

    def _next(self) -> tuple[Callable[..., Any], tuple] | None:
        with self._cv:
            while not self._ops:
                if self._closing:
                    return None
                self._cv.wait()
            op = self._ops.popleft()
            if not isinstance(op, _Log):
                return op
            while self._ops and isinstance(self._ops[0], _Log):
                more = self._ops.popleft()
                op.params.update(more.params)
                op.points.extend(more.points)
            return self.tracker.log_batch, (op.params, op.points)

    def _run(self) -> None:
        while (op := self._next()) is not None:
            fn, args = op
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - tracking must never stop a training
                self.tracker._fail("tracking thread", exc)
        self.cpu_s = time.thread_time()

    def close(self, timeout: float) -> bool:
        """Let the queued calls finish, waiting ``timeout`` s at most; True when all were made."""
        self.start()
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()


class TrainingRun:
    """A training's record plus its live MLflow mirror. Every call updates ``run.json`` at once on
    the caller's thread (the record is the source of truth) and queues the matching MLflow calls
    for a :class:`Mirror` thread, which makes them right away: per-epoch metrics appear in MLflow
    while the training runs, but the training never waits for MLflow, except in :meth:`end`
    (``FLUSH_S`` at most). The thread starts with :meth:`go_live` (or at the end). Resuming a run
    (same key) continues its record and MLflow run. ``background=False`` makes the MLflow calls
    on the caller's thread instead."""

    FLUSH_S = 30.0
    """How long :meth:`end` waits for MLflow (each call is bounded by the tracker's timeouts)."""

    def __init__(self, tracker: Tracker, run_dir: str | Path, key: str, name: str,
                 parent_file: str | Path | None, tags: dict[str, str],
                 background: bool = True) -> None:  # fmt: skip
        self.tracker, self.run_dir = tracker, Path(run_dir)
        self._lock = threading.Lock()  # the record: written by the caller and the mirror thread
        record = RunRecord.load(self.run_dir)
        if record is None or record.key != key:
            record = RunRecord(key, name, str(parent_file) if parent_file else None)
        elif parent_file:  # the study folder may have moved since the record was made
            record.parent_file = str(parent_file)
        record.status = "RUNNING"
        record.tags.update(tags | {KEY_TAG: key})
        self.record = record
        self.record.save(self.run_dir)
        self._mirror = Mirror(tracker) if background and tracker.enabled else None
        self._call(self._start, name, record.run_id, record.parent_file, dict(record.tags))

    @property
    def background_cpu_s(self) -> float:
        """CPU seconds the mirror thread used (known once :meth:`close` returned True)."""
        return self._mirror.cpu_s if self._mirror is not None else 0.0

    def go_live(self) -> None:
        """Start mirroring to MLflow (what was logged so far goes first)."""
        if self._mirror is not None:
            self._mirror.start()

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._mirror is None:
            fn(*args)
        else:
            self._mirror.call(fn, *args)

    def _log(self, params: dict[str, Any], points: list[tuple[str, float, int, int]]) -> None:
        if self._mirror is None:
            self.tracker.log_batch(params, points)
        else:
            self._mirror.log(params, points)

    def _start(self, name: str, run_id: str | None, parent_file: str | None,
               tags: dict[str, str]) -> None:  # fmt: skip
        run_id = self.tracker.start(name, run_id, read_run_id(parent_file), tags)
        with self._lock:
            if run_id and run_id != self.record.run_id:
                self.record.run_id = run_id
                self.record.save(self.run_dir)

    def log_params(self, params: dict[str, Any]) -> None:
        with self._lock:
            self.record.params.update({k: str(v)[:6000] for k, v in params.items()})
            self.record.save(self.run_dir)
        self._log(params, [])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        ts = int(time.time() * 1000)
        with self._lock:
            self.record.add_metrics(metrics, step, ts)
            self.record.save(self.run_dir)
        self._log({}, [(k, v, ts, step) for k, v in _finite(metrics).items()])

    def log_epoch(self, metrics: dict[str, float], step: int,
                  wall: tuple[str, ...] = ("epoch_time_s",)) -> list[str]:  # fmt: skip
        """One epoch's metrics at ``step``, each (metric, step) logged once. An epoch the record
        already holds — re-run after a resume from an earlier checkpoint — replaces the points
        whose value changed, and only those go to MLflow (which keeps every point it was sent:
        it cannot delete one, and shows the latest). A resume is bit-identical to the step on a
        CPU, so there nothing is logged twice; the wall times ``wall`` keep the first attempt's
        value. Returns the metrics whose logged value the re-run changed."""
        ts = int(time.time() * 1000)
        points, changed = [], []
        with self._lock:
            for k, v in _finite(metrics).items():
                logged = self.record.metrics.setdefault(k, [])
                before = [p for p in logged if int(p[0]) == step]
                if before and (k in wall or before[-1][1] == v):
                    continue
                if before:
                    logged[:] = [p for p in logged if int(p[0]) != step]
                    changed.append(k)
                logged.append([step, v, ts])
                points.append((k, v, ts, step))
            self.record.save(self.run_dir)
        if points:
            self._log({}, points)
        return changed

    def log_artifacts(self, names: Iterable[str]) -> None:
        names = list(names)
        with self._lock:
            for name in names:
                if (self.run_dir / name).exists() and name not in self.record.artifacts:
                    self.record.artifacts.append(name)
            self.record.save(self.run_dir)
        for name in names:
            self._call(self.tracker.log_artifact, self.run_dir / name)

    def end(self, status: str) -> bool:
        """Set the final status, then :meth:`close`."""
        with self._lock:
            self.record.status = status
            self.record.save(self.run_dir)
        self._call(self.tracker.end, status)
        return self.close()

    def close(self) -> bool:
        """Wait for MLflow to have everything (``FLUSH_S`` at most: after that the record alone
        holds the rest, for `sizepenalty sync`); no call after this one reaches MLflow. Returns
        whether MLflow caught up."""
        if self._mirror is None or self._mirror.close(self.FLUSH_S):
            return True
        print(f"warning: MLflow did not take this run's last calls within {self.FLUSH_S:.0f} s; "
              "its record is complete, `sizepenalty sync` pushes it later", file=sys.stderr)  # fmt: skip
        return False


def supersede(run_dir: str | Path, tracker: Tracker, why: str) -> Path | None:
    """Move a run folder's record aside (``superseded/<time>/run.json``) before its training
    starts over, and tag its MLflow run superseded so comparisons leave it out. Returns the
    archive folder (None when there was no record)."""
    run_dir = Path(run_dir)
    record = RunRecord.load(run_dir)
    if record is None:
        return None
    record.tags.update({SUPERSEDED_TAG: "true", "sizepenalty.superseded_why": why})
    if record.status == "RUNNING":
        record.status = "KILLED"
    archive = run_dir / "superseded" / time.strftime("%Y%m%dT%H%M%S")
    record.save(archive)
    (run_dir / RECORD).unlink()
    tracker.run_id = record.run_id
    tracker.set_tags({SUPERSEDED_TAG: "true", "sizepenalty.superseded_why": why})
    if record.status == "KILLED":
        tracker.end("KILLED")
    return archive


# ----------------------------------------------------------------------------- sync


@dataclass
class SyncResult:
    runs: int = 0
    created: int = 0
    metric_values: int = 0
    unreachable: str | None = None
    notes: list[str] = field(default_factory=list)  # what was done to the store (console lines)
    parent: str | None = None  # the study's parent run
    parent_created: bool = False  # made again (the store had lost it, or never had it)
    relinked: int = 0  # children whose link to the parent run was mended


def _find_run(client, experiment_id: str, record: RunRecord):
    if record.run_id:
        try:
            run = client.get_run(record.run_id)
            if run.info.lifecycle_stage == "active":
                return run
        except Exception:  # noqa: BLE001 - gone from this store (or another store): look it up
            pass
    found = client.search_runs(
        [experiment_id], f"tags.`{KEY_TAG}` = '{record.key}'", max_results=50
    )
    # A key seen again (settings A -> B -> A) also names runs superseded meanwhile: skip those
    # unless this record is the superseded one.
    want = record.tags.get(SUPERSEDED_TAG) == "true"
    same = [r for r in found if (r.data.tags.get(SUPERSEDED_TAG) == "true") == want]
    return same[0] if same else None


def sync_record(tracker: Tracker, record: RunRecord, run_dir: Path, result: SyncResult,
                parent: str | None = None) -> None:  # fmt: skip
    """Push one record to the store: create its run if missing, then only what is absent; link
    it to the study's parent run ``parent`` (else the one its record names)."""
    from mlflow.entities import Metric, Param

    client = tracker.client()
    exp_id = tracker.experiment_id()
    parent = parent or read_run_id(record.parent_file)
    run = _find_run(client, exp_id, record)
    if run is None:
        tags = {"mlflow.runName": record.name, **record.tags}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = client.create_run(exp_id, tags=tags, run_name=record.name)
        result.created += 1
    elif parent and run.data.tags.get("mlflow.parentRunId") != parent:
        client.set_tag(run.info.run_id, "mlflow.parentRunId", parent)  # its parent is gone
        result.relinked += 1
    run_id = run.info.run_id
    record.run_id = run_id
    have = run.data.params
    params = [Param(k, v) for k, v in record.params.items() if k not in have]
    for i in range(0, len(params), 90):
        client.log_batch(run_id, params=params[i : i + 90])
    for key, tag in record.tags.items():
        if run.data.tags.get(key) != tag:
            client.set_tag(run_id, key, tag)
    for key, points in record.metrics.items():
        logged = {(m.step, m.value) for m in client.get_metric_history(run_id, key)}
        missing = [Metric(key, v, int(ts), int(s)) for s, v, ts in points if (s, v) not in logged]
        for i in range(0, len(missing), 900):
            client.log_batch(run_id, metrics=missing[i : i + 900])
        result.metric_values += len(missing)
    # A superseded record's files are gone from the run folder (the new training's are there).
    names = [] if record.tags.get(SUPERSEDED_TAG) == "true" else record.artifacts
    stored = {a.path for a in client.list_artifacts(run_id)} if names else set()
    for name in names:
        if name not in stored and (run_dir / name).exists():
            client.log_artifact(run_id, str(run_dir / name))
    if record.status in TERMINAL and run.info.status != record.status:
        client.set_terminated(run_id, status=record.status)
    result.runs += 1


def _gone(exc: BaseException) -> bool:
    """Whether an MLflow error says the run does not exist in this store."""
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc)


def ensure_parent_run(cfg, tracker: Tracker, parent_file: Path) -> tuple[str | None, bool]:
    """The study's parent run (id, whether made now): the one its parent-run file names when
    the store has it; made again (and the file rewritten) when the store lost it or never had
    it; None when the study has no parent-run file (its runs live elsewhere)."""
    from sizepenalty.data.io import write_text_atomic

    if not Path(parent_file).exists():
        return None, False
    run_id = read_run_id(parent_file)
    if run_id:
        try:
            if tracker.client().get_run(run_id).info.lifecycle_stage == "active":
                return run_id, False
        except Exception as exc:  # noqa: BLE001 - only a run the store lacks is made again
            if not _gone(exc):
                raise
    run_id = _new_parent_run(cfg, tracker)
    if run_id:
        write_text_atomic(parent_file, run_id + "\n")
    return run_id, run_id is not None


def sync_study(cfg, runs_root: str | Path, tables: bool = True) -> SyncResult:
    """Push every run record under ``runs_root`` (current and superseded) to the study's tracking
    store, after :func:`open_study_store` (a damaged file moved aside, a moved study's artifact
    locations mended) and :func:`ensure_parent_run`; every child is linked to that parent run,
    and with ``tables`` the study's tables are attached to it when it lacks them (see the module
    doc). Returns what was done, or why the store could not be reached."""
    from sizepenalty.paths import StudyLayout

    result = SyncResult()
    if not cfg.tracking.enabled:
        return result
    result.notes = open_study_store(cfg)
    tracker = tracker_for(cfg)
    result.unreachable = tracker.unreachable()
    if result.unreachable:
        return result
    layout = StudyLayout(cfg.study_dir)
    found = tracker.guard("parent run", ensure_parent_run, cfg, tracker, layout.parent_run)
    if not tracker.enabled:
        result.unreachable = _why_failed(tracker)
        return result
    result.parent, result.parent_created = found
    statuses = []
    for path in sorted(Path(runs_root).rglob(RECORD)):
        record = RunRecord.load(path.parent)
        if record is None:
            continue
        known = record.run_id
        tracker.guard("sync", sync_record, tracker, record, path.parent, result, result.parent)
        if not tracker.enabled:
            result.unreachable = _why_failed(tracker)
            return result
        if record.run_id and record.run_id != known:
            _remember_run_id(path.parent, record.key, record.run_id)
        statuses.append(record.status)
    if result.parent and result.parent_created and all(s in TERMINAL for s in statuses):
        tracker.run_id = result.parent
        tracker.end("FINISHED")
    if tables and result.parent and layout.tables.is_dir():
        cases = _read_cases(layout.per_case)
        attach_tables(cfg, result.parent, layout.tables, cases, only_missing=True)
    return result


def _why_failed(tracker: Tracker) -> str:
    if tracker.failure is not None and _damaged(tracker.failure):
        return (f"the store is damaged ({tracker.failure}); run `sizepenalty sync` again: it "
                "moves the damaged file aside and rebuilds the store")  # fmt: skip
    return "a tracking call failed (see the warning above)"


def _read_cases(path: Path):
    import pandas as pd

    return pd.read_csv(path) if path.exists() else None


def _remember_run_id(run_dir: Path, key: str, run_id: str) -> None:
    """Write a run id into a record as it is now (a training may have updated it since it was
    read), so a sync during a study loses none of the training's own writes."""
    current = RunRecord.load(run_dir)
    if current is not None and current.key == key and current.run_id != run_id:
        current.run_id = run_id
        current.save(run_dir)


def record_test_metrics(cases, plan, layout) -> None:
    """Each run's test metrics (means over its test cases) and threshold into its training's
    record (``cases``: the study's per-case metrics table). A run that shares another arm's
    training (e.g. an inference-only variant) adds its metrics to that record under
    ``<variant>.test_<metric>``."""
    from sizepenalty.runs import AXES, RunKey

    ts = int(time.time() * 1000)
    records: dict = {}
    axes = [a.name for a in AXES]
    for values, group in cases.groupby(axes):
        key = RunKey(**dict(zip(axes, values)))
        trained = plan.canonical(key, "train")
        run_dir = layout.run_dir(trained)
        if run_dir not in records:
            records[run_dir] = RunRecord.load(run_dir)
        record = records[run_dir]
        if record is None:
            continue
        rows = group.to_dict("records")
        values = fold_test_metrics(rows) | {"threshold": float(group["threshold"].iloc[0])}
        if key != trained:
            values = {f"{key.variant}.{k}": v for k, v in values.items()}
        for name in values:  # an evaluation rerun replaces them
            record.metrics.pop(name, None)
        record.add_metrics(values, 0, ts)
    for run_dir, record in records.items():
        if record is not None:
            record.save(run_dir)


def track_study_tables(cfg, plan, cases, layout, parent_file: str | Path | None,
                       tables_dir: str | Path) -> None:  # fmt: skip
    """The aggregate stage's tracking: test metrics into every training's record, every record
    pushed to the store (:func:`sync_study`), and on the parent run the tables, the run
    comparison (also written as ``mlflow_runs.{md,csv}``) and the study's mean test metrics."""
    out = Path(tables_dir)
    for stale in ("mlflow_runs.md", "mlflow_runs.csv"):  # the report reads them when present
        (out / stale).unlink(missing_ok=True)
    if not cfg.tracking.enabled:
        return
    if layout is not None:
        record_test_metrics(cases, plan, layout)
        result = sync_study(cfg, layout.runs, tables=False)
        for note in result.notes:
            print(note, file=sys.stderr)
        if result.unreachable:
            print(f"MLflow store not reachable ({result.unreachable}); the run records stay in "
                  "the run folders: run `sizepenalty sync` when it is back", file=sys.stderr)  # fmt: skip
            return
        print(f"synced {result.runs} run record(s) to {cfg.tracking_uri()} "
              f"({result.created} created, {result.metric_values} metric value(s) added)")  # fmt: skip
    parent = read_run_id(parent_file)
    if parent is not None:
        attach_tables(cfg, parent, out, cases)


def attach_tables(cfg, parent: str, tables_dir: str | Path, cases, only_missing: bool = False
                  ) -> None:  # fmt: skip
    """On the parent run: the run comparison (written as ``mlflow_runs.{md,csv}`` too), the
    tables (``only_missing``: those it lacks) and the study's mean test metrics (``cases``: the
    per-case metrics, or None)."""
    from sizepenalty.data.io import write_text_atomic

    out = Path(tables_dir)
    tracker = tracker_for(cfg)
    tracker.run_id = parent
    comparison = compare_runs(tracker, tracker.run_id)
    if comparison is not None:
        shown = comparison.drop(columns=["run_id", "experiment_id"])
        write_text_atomic(out / "mlflow_runs.md",
                          shown.to_markdown(index=False, floatfmt=".4f", missingval="–") + "\n")  # fmt: skip
        write_text_atomic(out / "mlflow_runs.csv", comparison.to_csv(index=False))
    stored: set[str] = set()
    if only_missing:
        listed = tracker.guard("list tables", tracker.client().list_artifacts, parent, "tables")
        stored = {Path(a.path).name for a in listed or []}
    for f in sorted(out.glob("*")):
        if f.suffix in (".csv", ".md", ".tex") and f.name not in stored:
            tracker.log_artifact(f, "tables")
    if cases is None:
        return
    means = {f"mean_test_{m}": float(cases[m].mean()) for m in ("dice", "pq", "rve") if m in cases}
    if only_missing:
        run = tracker.guard("get parent run", tracker.client().get_run, parent)
        means = {k: v for k, v in means.items() if run is not None and k not in run.data.metrics}
    tracker.log_metrics(means)


# ----------------------------------------------------------------------------- the study's parent run


def start_study_run(cfg, out: str | Path) -> str | None:
    """Create the study's MLflow parent run once (its id goes to ``out``); say on stdout whether
    the tracking store answers. An existing parent-run file is kept."""
    from sizepenalty.data.io import write_text_atomic

    out = Path(out)
    existing = read_run_id(out)
    if existing:
        print(f"parent run {existing} exists")
        return existing
    tracker = tracker_for(cfg)
    why = tracker.unreachable() if cfg.tracking.enabled else None
    if not cfg.tracking.enabled:
        print("tracking.enabled is false: no MLflow runs (each training still keeps its record)")
        run_id = None
    elif why:
        print(f"MLflow store {tracker.uri} unreachable ({why}): every training keeps its record "
              "in its run folder; `sizepenalty sync` pushes them when the store is back")  # fmt: skip
        run_id = None
    else:
        run_id = _new_parent_run(cfg, tracker)
    write_text_atomic(out, (run_id or "") + "\n")
    return run_id


def _new_parent_run(cfg, tracker: Tracker) -> str | None:
    """A new parent run of the study, with the whole configuration as its params."""
    from sizepenalty import __version__

    tags = {"study": cfg.study, "sizepenalty_version": __version__}
    run_id = tracker.start(f"study-{cfg.study}", tags=tags)
    tracker.log_params(flatten(cfg.raw) | {"config_hash": cfg.digest()})
    return run_id


def set_study_status(cfg, parent_file: str | Path, status: str) -> None:
    """Mark the study's parent run RUNNING (a run starts or extends the study), FINISHED (its
    last job completed) or FAILED. Quiet and quick when the store is down."""
    run_id = read_run_id(parent_file) if cfg.tracking.enabled else None
    if not run_id:
        return
    tracker = tracker_for(cfg)
    if tracker.unreachable():
        return
    tracker.run_id = run_id
    if status == "RUNNING":
        tracker.guard("reopen parent run", lambda: tracker.client().update_run(run_id, "RUNNING"))
    else:
        tracker.end(status)


# ----------------------------------------------------------------------------- reading runs back


_NOT_METRICS = ("seed", "fold", "threshold")  # numeric columns of a metrics row that are keys


def fold_test_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``test_<metric>``: the mean over a fold's test cases of every numeric per-case metric."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            if k in _NOT_METRICS or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if math.isfinite(float(v)):
                sums.setdefault(k, []).append(float(v))
    return {f"test_{k}": sum(v) / len(v) for k, v in sums.items() if v}


RUN_COLUMNS = ("run", "combo", "variant", "seed", "fold", "status", "epochs", "minutes", "run_id",
               "experiment_id")  # fmt: skip


def run_table(client, experiment: str, parent_id: str | None, metrics: list[str],
              include_superseded: bool = False):  # fmt: skip
    """One row per training run of ``experiment`` (children of ``parent_id`` when given): name,
    combination, variant, seed, fold, status, epochs logged, wall minutes and the requested
    metrics (latest values), sorted by run; runs superseded by a rerun with other settings are
    left out unless ``include_superseded``. ``None`` when the experiment does not exist."""
    import pandas as pd

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = f"tags.mlflow.parentRunId = '{parent_id}'" if parent_id else "params.combo != ''"
    runs = client.search_runs([exp.experiment_id], query, max_results=5000)
    rows = []
    for r in runs:
        superseded = r.data.tags.get(SUPERSEDED_TAG) == "true"
        if superseded and not include_superseded:
            continue
        end = r.info.end_time or r.info.start_time
        row = {
            "run": r.info.run_name,
            "combo": r.data.params.get("combo", ""),
            "variant": r.data.params.get("variant", ""),
            "seed": int(r.data.params.get("seed", -1)),
            "fold": int(r.data.params.get("fold", -1)),
            "status": r.info.status + (" (superseded)" if superseded else ""),
            "epochs": len(client.get_metric_history(r.info.run_id, "train_loss")),
            "minutes": round((end - r.info.start_time) / 60000, 2),
            "run_id": r.info.run_id,
            "experiment_id": r.info.experiment_id,
        }
        row.update({m: r.data.metrics.get(m, float("nan")) for m in metrics})
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*RUN_COLUMNS, *metrics])
    order = ["combo", "variant", "seed", "fold"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def compare_runs(tracker: Tracker, parent_id: str, metrics: list[str] | None = None):
    """:func:`run_table` for a study's parent run, or ``None`` when tracking fails."""
    metrics = metrics or ["best_val_dice", "test_dice", "test_pq", "test_rve"]
    return tracker.guard(
        "compare runs", lambda: run_table(tracker.reader(), tracker.experiment, parent_id, metrics)
    )


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5, check=True)  # fmt: skip
        return out.stdout.strip()
    except Exception:  # noqa: BLE001 - not a git checkout, or no git
        return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
