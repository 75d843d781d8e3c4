"""Rootful podman for the image tests: Debian's podman, runc and debootstrap (installed with
apt-get when missing, which needs root, as in CI), the configuration that lets podman run
containers on machines without systemd (containers/podman.conf), and an image store of the
tests' own, so that nothing of the machine's podman (its /etc/containers/containers.conf,
/var/lib/containers) is used or changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PROGRAMS = ("podman", "runc", "debootstrap")
PACKAGES = ("podman", "runc", "debootstrap")

#: podman's configuration for machines without systemd (see the file).
CONTAINERS_CONF = Path(__file__).resolve().parents[3] / "containers" / "podman.conf"


def _path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _missing() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p, path=_path()) is None]


def ensure_installed(timeout: float = 600) -> str | None:
    """Install podman, runc and debootstrap with apt-get when missing; why it cannot, or None."""
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if not _missing():
        return None
    if os.geteuid() != 0:
        return (f"{', '.join(_missing())} not installed, and installing "
                f"{' '.join(PACKAGES)} with apt-get needs root")  # fmt: skip
    if shutil.which("apt-get") is None:
        return f"{', '.join(_missing())} not installed and apt-get not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    deadline = time.monotonic() + timeout
    log = ""
    # A fresh machine may have no package lists yet: update once and try again.
    for command in (install, ["apt-get", "update", "-q"], install):
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=env,
                                  timeout=max(1.0, deadline - time.monotonic()))  # fmt: skip
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` did not finish within {timeout:.0f} s"
        log = proc.stdout[-1500:] + proc.stderr[-1500:]
        if command is install and proc.returncode == 0 and not _missing():
            return None
    return f"`{' '.join(install)}` failed: {log.strip()}"


def reachable(url: str, timeout: float = 15) -> str | None:
    """None when ``url`` answers; else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except OSError as error:
        return f"{url}: {error}"


class Store:
    """podman with its own configuration and image store under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.conf = CONTAINERS_CONF
        #: The podman command of every call: this configuration (CONTAINERS_CONF replaces the
        #: machine's) and this store.
        podman = shutil.which("podman", path=_path()) or "podman"
        self.engine = ["env", f"CONTAINERS_CONF={self.conf}", podman,
                       "--root", str(root / "storage"), "--runroot", str(root / "run")]  # fmt: skip

    def run(self, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self.engine, *args], capture_output=True, text=True,
                              timeout=timeout, **kwargs)  # fmt: skip

    def works(self) -> str | None:
        """None when podman answers with this configuration; else why not."""
        proc = self.run("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=120)
        if proc.returncode != 0:
            return f"`podman info` failed: {proc.stderr.strip()[-1500:]}"
        return None

    def remove(self) -> None:
        """Every image and container of the store, then the store itself."""
        self.run("rm", "--all", "--force", timeout=300)
        self.run("rmi", "--all", "--force", timeout=300)
        # What podman still has mounted (its overlay folder is a mount of its own), deepest
        # first, so that the folder can go.
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for mount in sorted(mounts, key=len, reverse=True):
            if Path(mount).is_relative_to(self.root):
                subprocess.run(["umount", "--lazy", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
