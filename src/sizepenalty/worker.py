"""A warm worker: the ``sizepenalty`` command without paying PyTorch/MONAI/MLflow's start-up.

Importing torch, MONAI (which loads all its subpackages) and MLflow costs a Python process ~6 s;
a study runs some 260 short jobs, so on a laptop most of its time went to imports. The worker
imports all of that once and then, for each job, *forks*: the child is an ordinary
``sizepenalty`` process that already holds the modules. Every stage is still a CLI verb in its
own Snakemake job:

* Snakemake runs ``sizepenalty <verb> ...`` as always. When ``SIZEPENALTY_WORKER`` names a
  worker, the command (:func:`run_via_worker`) hands the job over instead of importing anything:
  its argv, working directory, environment and umask, and its stdin/stdout/stderr as file
  descriptors. It forwards stop signals to the job, and exits with the job's exit code.
* The worker (:func:`serve`) forks a child per job, which takes those descriptors, directory
  and environment and runs the command line's ``main`` — the same code as without a worker,
  so results cannot differ. If the command disappears (killed by Snakemake), the child gets
  SIGTERM, which a training answers with a checkpoint.
* Any doubt falls back to running in-process: no worker, a worker of another Python or another
  version of the code (``key``), a worker that does not answer. Once a job was handed over it
  is never run a second time here. The worker serves only the user it runs as (the peer
  credentials of each connection). Containers and cluster jobs never
  reach it (the socket is an abstract unix socket, local to the machine's network namespace, and
  the Snakefile starts a worker only for local execution without containers).

The Snakefile starts one worker per run (``onstart``) and stops it when the run ends; it also
exits after ``idle`` seconds without a job, or when the process that started it is gone.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

ENV = "SIZEPENALTY_WORKER"
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
# What a job would import on first use too: torch._dynamo (a torch optimiser's constructor imports
# it), MLflow's client and SQL store (SQLAlchemy, alembic): seconds per job on a loaded laptop.
PRELOAD = (
    "torch", "torch._dynamo", "monai", "mlflow", "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "pandas", "scipy.ndimage", "matplotlib.pyplot", "cc3d",
    "sizepenalty.train", "sizepenalty.infer", "sizepenalty.evaluate", "sizepenalty.tracking",
    "sizepenalty.report.aggregate", "sizepenalty.report.figures", "sizepenalty.report.html",
    "sizepenalty.report.explainer", "sizepenalty.data.preprocess", "sizepenalty.data.synth",
    "sizepenalty.data.summary", "sizepenalty.commands",
)  # fmt: skip


def key() -> str:
    """Who may use a worker: the same Python and the same package sources (path and mtimes)."""
    pkg = Path(__file__).resolve().parent
    newest = max(p.stat().st_mtime_ns for p in pkg.rglob("*.py"))
    return f"{sys.executable}|{pkg}|{newest}"


def _address(name: str) -> str:
    return "\0" + name  # abstract namespace: no file, no path length limit, machine-local


# ----------------------------------------------------------------------------- protocol


def _send(sock: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    msg = struct.pack("!I", len(data)) + data
    if fds:  # the descriptors travel with the first bytes; the rest (a large env) follows
        sent = sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        msg = msg[sent:]
    sock.sendall(msg)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def _recv(sock: socket.socket, with_fds: int = 0) -> tuple[dict, list[int]]:
    fds: list[int] = []
    if with_fds:
        head, anc, _, _ = sock.recvmsg(4, socket.CMSG_SPACE(with_fds * array.array("i").itemsize))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array.array("i", data[: len(data) - len(data) % 4]).tolist()
        head += _recv_exact(sock, 4 - len(head))
    else:
        head = _recv_exact(sock, 4)
    (n,) = struct.unpack("!I", head)
    return json.loads(_recv_exact(sock, n)), fds


# ----------------------------------------------------------------------------- client side


_NO_WORKER = (OSError, ConnectionError, ValueError)  # nothing answers, or not a worker


def _connect(name: str, timeout: float) -> tuple[socket.socket, dict]:
    """A socket connected to the worker ``name`` and its hello (raises one of ``_NO_WORKER``,
    with the socket closed, when none answers)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(_address(name))
        hello, _ = _recv(sock)
    except BaseException:
        sock.close()
        raise
    return sock, hello


def run_via_worker(argv: list[str]) -> int | None:
    """Hand a command to the worker named by ``SIZEPENALTY_WORKER``; its exit code, or None when
    no usable worker answers (the caller then runs the command itself)."""
    name = os.environ.get(ENV)
    if not name:
        return None
    try:
        sock, hello = _connect(name, 5)
    except _NO_WORKER:
        return None
    if hello.get("key") != key():
        sock.close()
        return None
    umask = os.umask(0)
    os.umask(umask)
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}
    try:  # from here on the job may be running: never run it a second time here
        sock.settimeout(120)
        _send(sock, request, [0, 1, 2])
        started, _ = _recv(sock)
    except _NO_WORKER as exc:
        print(f"sizepenalty: the warm worker took the job but did not start it ({exc})",
              file=sys.stderr)  # fmt: skip
        return 1
    child = started["pid"]

    def forward(signum, frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for s in _FORWARDED:
        signal.signal(s, forward)
    sock.settimeout(None)
    try:
        done, _ = _recv(sock)
        return int(done["rc"])
    except _NO_WORKER:
        print(f"sizepenalty: the worker's job {child} ended without an exit code", file=sys.stderr)
        return 1


# ----------------------------------------------------------------------------- worker side


def _child(conn: socket.socket, request: dict, fds: list[int], entry) -> None:
    """In the forked child: become the client's process, run the command, report its code."""
    import threading
    import traceback

    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (*_FORWARDED, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # As a fresh interpreter: Ctrl-C raises KeyboardInterrupt, a closed pipe is an error.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ENV, None)  # the job runs here; a command it starts runs by itself
    os.umask(request["umask"])
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.argv = ["sizepenalty", *request["argv"]]
    _send(conn, {"pid": os.getpid()})

    def watch() -> None:  # the command is gone (Snakemake killed it): stop the job as it would
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    rc = 1
    try:
        rc = entry(request["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass
        try:
            _send(conn, {"rc": rc})
        except OSError:
            pass
        os._exit(rc)


def _reap() -> set[int]:
    """The pids of the children that ended (and are reaped now)."""
    ended = set()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.add(pid)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def serve(name: str, entry, idle: float = 900.0, parent: int | None = None) -> None:
    """Import everything, then fork a child per job — which runs ``entry(argv)``, the command
    line's main — until ``idle`` seconds pass without one, the process ``parent`` is gone, or a
    ``{"stop": true}`` request arrives."""
    import importlib
    import threading

    os.environ.setdefault("MPLBACKEND", "Agg")
    for module in PRELOAD:
        importlib.import_module(module)
    if threading.active_count() > 1:  # fork() copies only this thread: say so if that changes
        names = [t.name for t in threading.enumerate()]
        print(
            f"sizepenalty worker: warning: {len(names)} threads after imports: {names}", flush=True
        )
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(_address(name))
    server.listen(64)
    server.settimeout(5.0)
    my_key = key()
    last = time.monotonic()
    children: set[int] = set()
    print(f"sizepenalty worker {name}: ready (pid {os.getpid()})", flush=True)
    while True:
        children -= _reap()
        if children:  # idle means no job running either: a long training keeps it warm
            last = time.monotonic()
        if time.monotonic() - last > idle or (parent and not alive(parent)):
            return
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        last = time.monotonic()
        if _peer_uid(conn) != os.getuid():  # only this user's commands: a job runs as them
            conn.close()
            continue
        fds: list[int] = []
        try:
            conn.settimeout(10)
            _send(conn, {"key": my_key})
            request, fds = _recv(conn, with_fds=3)
        except (OSError, ConnectionError, ValueError):
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        if request.get("stop") or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            conn.close()
            if request.get("stop"):
                return
            continue
        pid = os.fork()
        if pid == 0:
            try:  # whatever happens, the child never returns into the server's loop
                server.close()
                conn.settimeout(None)
                _child(conn, request, fds, entry)
            finally:
                os._exit(1)
        children.add(pid)
        for fd in fds:
            os.close(fd)
        conn.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(name: str, idle: float = 900.0, log: str | Path | None = None):
    """Start a worker in the background (the Snakefile's onstart) with this Python; returns its
    process (``subprocess.Popen``). Jobs whose ``sizepenalty`` is another installation do not
    match its key and run as usual."""
    import subprocess

    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "sizepenalty", "worker", "--name", name, "--idle", str(idle),
         "--parent", str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def ready(name: str) -> bool:
    """Whether a worker of this name answers with this code's key."""
    try:
        sock, hello = _connect(name, 2)
    except _NO_WORKER:
        return False
    sock.close()
    return hello.get("key") == key()


def stop(name: str) -> None:
    """Ask the worker to exit (it also exits by itself once its parent is gone)."""
    try:
        sock, _ = _connect(name, 5)
    except _NO_WORKER:
        return
    try:
        _send(sock, {"stop": True}, [0, 1, 2])
    except _NO_WORKER:
        pass
    finally:
        sock.close()
