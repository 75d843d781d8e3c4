"""Snakemake's directory locks left behind by a killed run, recognised and removed.

Snakemake locks the files a run reads and writes by listing them under
``.snakemake/locks/`` and removes the lists when it ends. A run killed with SIGKILL cannot
remove them, so the next run of the same command stops with "Directory cannot be locked"
until ``snakemake --unlock``. The lists do not say which process wrote them; an OS lock
does: every segflow run holds ``.snakemake/segflow_run.lock`` (``flock``) while it lives,
and the kernel releases it when the process ends, however it ends. A run that can take that
lock knows no other segflow run is alive in the folder, so the lists it finds are stale.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import IO

__all__ = ["RUN_LOCK", "SNAKEMAKE_LOCKS", "claim_working_directory"]

logger = logging.getLogger(__name__)

#: Snakemake's lock lists, relative to its working directory (file persistence, the default).
SNAKEMAKE_LOCKS = Path(".snakemake") / "locks"
#: The file every live segflow run holds an OS lock on.
RUN_LOCK = Path(".snakemake") / "segflow_run.lock"

# The open lock file of this process: closing it (at exit) releases the lock.
_held: IO[str] | None = None


def claim_working_directory(workdir: str | Path = ".") -> list[Path]:
    """Hold the run lock of ``workdir`` for the life of this process and, when no other
    segflow run holds it, remove Snakemake's stale lock lists.

    Returns:
        The lock lists removed (empty when there were none, or another run is alive and
        its lists are real).
    """
    global _held
    workdir = Path(workdir)
    if _held is not None and not _held.closed:
        return []
    (workdir / RUN_LOCK).parent.mkdir(parents=True, exist_ok=True)
    handle = open(workdir / RUN_LOCK, "a", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        logger.debug("another segflow run holds %s", workdir / RUN_LOCK)
        return []
    _held = handle
    locks = workdir / SNAKEMAKE_LOCKS
    stale = sorted(Path(e.path) for e in os.scandir(locks)) if locks.is_dir() else []
    if stale:
        shutil.rmtree(locks, ignore_errors=True)
    return stale
