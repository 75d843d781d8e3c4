"""Running the Snakemake workflow of the repository on tiny data in a temporary folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class SnakemakeRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def job_counts(self) -> dict[str, int]:
        """Jobs per rule that this run executed (or, in a dry run, would execute).

        Counted from the job headers Snakemake prints, because its "Job stats" table is
        printed before checkpoints add their downstream jobs.
        """
        counts: dict[str, int] = {}
        for name in re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):$", self.output, re.M):
            counts[name] = counts.get(name, 0) + 1
        return counts


def run_snakemake(
    workdir: Path,
    *args: str,
    config: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> SnakemakeRun:
    """Run the repository's Snakefile with ``workdir`` as working directory."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    if config:
        cmd += ["--config", *(f"{k}={v}" for k, v in config.items())]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})}
    )
    return SnakemakeRun(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def snakemake():
    return run_snakemake
