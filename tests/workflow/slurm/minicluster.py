"""A throwaway one-node SLURM cluster for tests: munged, slurmctld and slurmd started directly
(no systemd) from Debian's packages, with every file of theirs in one folder.

Nothing outside that folder is touched: the daemons get their own munge key and socket, their
own slurm.conf (clients find it through ``SLURM_CONF``), free TCP ports, and state, spool, log
and PID files in the folder. The node is this host (``hostname -s``) with its CPUs, most of its
free memory and one stand-in GPU (a GRES of type ``gpu`` backed by an empty file), so that jobs
asking ``--gres=gpu:1`` schedule. There is no accounting database (``sacct`` answers nothing):
finished jobs stay visible to ``squeue`` for ``MinJobAge`` seconds instead.

    python tests/workflow/slurm/minicluster.py DIR     # start one by hand; Ctrl-C stops it
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")
PACKAGES = ("slurm-wlm", "munge")
PARTITION = "segflowtest"
#: Seconds finished jobs stay visible to squeue (the executor plugin's status command without
#: accounting must still see a job when it polls next).
MIN_JOB_AGE = 600


def _missing_programs() -> list[str]:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [p for p in DAEMONS + CLIENTS if shutil.which(p, path=path) is None]


def _program(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(name)
    return found


def ensure_installed(timeout: float = 600) -> str | None:
    """Install slurm-wlm and munge with apt-get when missing; the reason it cannot, or None."""
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if not _missing_programs():
        return None
    if os.geteuid() != 0:
        return (
            f"{', '.join(_missing_programs())} not installed, and installing "
            f"{' '.join(PACKAGES)} with apt-get needs root"
        )
    if shutil.which("apt-get") is None:
        return f"{', '.join(_missing_programs())} not installed and apt-get not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    deadline = time.monotonic() + timeout
    log = ""
    # A fresh machine may have no package lists yet: update once and try again.
    for command in (install, ["apt-get", "update", "-q"], install):
        try:
            proc = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=env,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` did not finish within {timeout:.0f} s"
        log = proc.stdout[-1500:] + proc.stderr[-1500:]
        if command is install and proc.returncode == 0 and not _missing_programs():
            return None
    return f"`{' '.join(install)}` failed: {log.strip()}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _available_memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        info = {line.split(":")[0]: line.split()[1] for line in fh}
    return int(info.get("MemAvailable", info["MemFree"])) // 1024


class MiniSlurm:
    """One SLURM node in ``root``: :meth:`start`, submit with :attr:`env`, :meth:`stop`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        # Most of the free memory, leaving the machine room for everything else it runs.
        self.memory_mb = max(1000, int(_available_memory_mb() * 0.8))
        self.conf = self.root / "slurm.conf"
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list = []

    @property
    def env(self) -> dict[str, str]:
        """Variables that point SLURM's commands (and jobs' own) at this cluster."""
        return {
            "SLURM_CONF": str(self.conf),
            "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _write_config(self) -> None:
        r = self.root
        for sub in ("state", "spool", "munge", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        # The stand-in GPU: gres/gpu only needs a file to name (no cgroup device limits here).
        gpu = r / "fake-gpu0"
        try:  # a character device like /dev/null, which is what gres.conf expects ...
            os.mknod(gpu, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:  # ... or a plain file, which slurmd accepts with a complaint
            gpu.touch()
        node = (
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.memory_mb} Gres=gpu:1 State=UNKNOWN"
        )
        conf = f"""\
# Generated by tests/workflow/slurm/minicluster.py: a one-node test cluster.
ClusterName=segflowtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r / "munge" / "munge.socket"}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "log" / "slurmctld.log"}
SlurmdLogFile={r / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MinJobAge={MIN_JOB_AGE}
ReturnToService=2
KillWait=10
InactiveLimit=0
{node}
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        self.conf.write_text(conf)
        (r / "gres.conf").write_text(f"AutoDetect=off\nName=gpu File={gpu}\n")
        # Inside a job, the executor plugin's job step calls srun with every SLURM_* variable
        # removed, SLURM_CONF too; a real node has /etc/slurm/slurm.conf for it to fall back
        # on. Here an srun first on PATH puts the variable back, and /etc stays untouched.
        (r / "bin").mkdir(exist_ok=True)
        srun = r / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{_program("srun")}" "$@"\n')
        srun.chmod(0o755)
        # Empty plug-in stack and cgroup files, so the daemons read nothing from /etc/slurm.
        (r / "plugstack.conf").write_text("")
        (r / "cgroup.conf").write_text("")

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        self.processes[name] = subprocess.Popen(
            [_program(name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )

    def _wait_for(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [_program(args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **self.env},
        )

    def start(self, timeout: float = 60) -> MiniSlurm:
        self._write_config()
        m = self.root / "munge"
        self._spawn("munged", ["--foreground", "--force", f"--socket={m / 'munge.socket'}",
                               f"--key-file={m / 'munge.key'}", f"--pid-file={m / 'munged.pid'}",
                               f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}",
                               "--num-threads=2"])  # fmt: skip
        self._wait_for("munged", (m / "munge.socket").exists, timeout)
        self._spawn("slurmctld", ["-D", "-c", "-f", str(self.conf)])
        self._wait_for("slurmctld", lambda: self._run("scontrol", "ping").returncode == 0, timeout)
        self._spawn("slurmd", ["-D", "-f", str(self.conf), "-N", self.node])

        def node_idle() -> bool:
            out = self._run("sinfo", "-h", "-N", "-o", "%T").stdout.strip()
            return out in ("idle", "mixed", "allocated")

        self._wait_for("the node to come up", node_idle, timeout)
        return self

    def logs(self) -> str:
        parts = []
        for path in [*sorted((self.root / "log").glob("*")), self.root / "munge" / "munged.log"]:
            if path.is_file():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the daemons (jobs first), however far :meth:`start` got."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            self._run("scancel", "--full", "--partition", PARTITION)
            # Let slurmd end the jobs' processes before it goes.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self._run(
                "squeue", "-h", "--states=PENDING,RUNNING,COMPLETING,SUSPENDED", "-o", "%i"
            ).stdout.strip():
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        for log in self._logs:
            log.close()
        self._logs.clear()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    reason = ensure_installed()
    if reason:
        sys.exit(f"cannot start SLURM: {reason}")
    cluster = MiniSlurm(Path(sys.argv[1]))
    try:
        cluster.start()  # (daemons started before the mask, which they would inherit)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        print(f"export SLURM_CONF={cluster.conf}  # partition {PARTITION}; Ctrl-C stops it")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
