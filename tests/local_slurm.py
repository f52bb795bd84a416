"""A throw-away single-node SLURM cluster on localhost for tests (munge + slurmctld + slurmd).

Everything lives in one scratch folder (keys, sockets, state, logs, slurm.conf); clients find it
through SLURM_CONF. Only the daemons started here are stopped, by the PIDs they were started with.
Needs Debian's `munge` and `slurm-wlm` (22.05+); cgroups are not used (proctrack/linuxproc,
task/none) so it also runs in unprivileged containers. A fake GPU (GRES without a device file)
lets jobs that ask for --gpus=1 be scheduled one at a time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from workflow_helpers import free_port

COMMANDS = ("munged", "slurmctld", "slurmd", "squeue", "sbatch", "srun")


def available() -> bool:
    return all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in COMMANDS)


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}

    def __enter__(self) -> LocalSlurm:
        try:
            return self._start_cluster()
        except BaseException:
            self.__exit__()  # a daemon that came up before the failure must not outlive the test
            raise

    def _start_cluster(self) -> LocalSlurm:
        r = self.root
        for d in ("munge", "state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o755)  # munged wants the socket folder traversable
        key = r / "munge/munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = r / "munge/munge.socket"
        self._start([_exe("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                     f"--pid-file={r / 'munge/munged.pid'}", f"--log-file={r / 'log/munged.log'}",
                     f"--seed-file={r / 'munge/munged.seed'}"])  # fmt: skip
        self._wait(lambda: sock.exists(), "munged socket")
        node = subprocess.run(
            [_exe("slurmd"), "-C"], capture_output=True, text=True, check=True
        ).stdout
        cpus = int(re.search(r"CPUs=(\d+)", node).group(1))
        mem = int(re.search(r"RealMemory=(\d+)", node).group(1))
        (r / "nvidia0").touch()  # a stand-in device file for the fake GPU
        (r / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File={r / 'nvidia0'}\n")
        conf = r / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=sizepenalty-test", f"SlurmctldHost={self.host}",
            "SlurmUser=root", "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={sock}",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log/slurmctld.log'}", f"SlurmdLogFile={r / 'log/slurmd.log'}",
            # No cgroups here; memory per CPU so one job never takes the whole node; keep finished
            # jobs visible to squeue (the test profile polls squeue: there is no slurmdbd/sacct).
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory", "DefMemPerCPU=1000", "MinJobAge=300",
            "ReturnToService=2", "MpiDefault=none", "GresTypes=gpu", "SlurmctldTimeout=30", "SlurmdTimeout=30",
            f"NodeName={self.host} CPUs={cpus} RealMemory={mem - 512} Gres=gpu:1 State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")  # fmt: skip
        # The jobstep plugin strips SLURM_* (SLURM_CONF too) before its nested `srun`, which then
        # looks for the system-wide /etc/slurm/slurm.conf, as on a real cluster. Rather than write
        # there, put an `srun` on PATH that points the real one at this cluster's config.
        bindir = r / "bin"
        bindir.mkdir(exist_ok=True)
        shim = bindir / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec "{_exe("srun")}" "$@"\n')
        shim.chmod(0o755)
        self.env = {"SLURM_CONF": str(conf), "PATH": f"{bindir}:{os.environ['PATH']}"}
        env = {**os.environ, **self.env}
        self._start([_exe("slurmctld"), "-D", "-i", "-f", str(conf)], env)
        self._start([_exe("slurmd"), "-D", "-N", self.host, "-f", str(conf)], env)

        def node_idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
            )
            return out.returncode == 0 and out.stdout.strip().startswith("idle")

        self._wait(node_idle, "an idle SLURM node")
        return self

    def _start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.root / "log" / (Path(argv[0]).name + ".out"), "ab")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))

    def _wait(self, ready, what: str, timeout: float = 30.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if ready():
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"{p.args[0]} exited with {p.returncode}; see {self.root / 'log'}"
                    )
            time.sleep(0.3)
        raise TimeoutError(f"no {what} after {timeout:.0f} s; see {self.root / 'log'}")

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
