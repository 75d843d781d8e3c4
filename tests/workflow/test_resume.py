"""The README's own command resumes a run killed with SIGKILL: `snakemake --cores all
--configfile <file>` from the repository root, the whole process group killed mid-training,
then the same command again, with no option added (no --rerun-incomplete, no --unlock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from base64 import urlsafe_b64encode
from pathlib import Path

import blosc2
import numpy as np
import pytest
import torch
import yaml

from segflow.demo import make_demo_dataset
from segflow.io.image import read_image
from segflow.training.checkpoint import load_checkpoint
from segflow.workflow_locks import SNAKEMAKE_LOCKS

from .conftest import REPO

pytestmark = pytest.mark.workflow

EPOCHS = 4


def _readme_command(configfile: Path) -> list[str]:
    return ["snakemake", "--cores", "all", "--configfile", str(configfile)]


def _environment() -> dict[str, str]:
    # `snakemake` as a user has it: the interpreter's environment first on PATH.
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _read_back(path: Path) -> None:
    """Read an artifact whole; a half-written file raises."""
    name = path.name
    if name.endswith(".json"):
        json.loads(path.read_text(encoding="utf-8"))
    elif name.endswith(".pt"):
        torch.load(path, map_location="cpu", weights_only=False)
    elif name.endswith(".b2nd"):
        np.asarray(blosc2.open(str(path))[:])
    elif name.endswith((".nii.gz", ".png")) and "report" not in path.parts:
        read_image(path)


def _start(configfile: Path, log: Path) -> subprocess.Popen:
    """The README command, from the repository root, in a process group of its own."""
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen(
            _readme_command(configfile), cwd=REPO, env=_environment(), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _kill_group_when(proc: subprocess.Popen, exists: Path, log: Path) -> None:
    """SIGKILL Snakemake and every job (as a lost terminal or node would) the moment
    ``exists`` appears, which a running job writes."""
    try:
        deadline = time.monotonic() + 600
        while not exists.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the run never wrote {exists}:\n{log.read_text()}")
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL


def _rerun(configfile: Path) -> str:
    """The same command again, with nothing added; it must finish."""
    rerun = subprocess.run(_readme_command(configfile), cwd=REPO, env=_environment(),
                           capture_output=True, text=True, timeout=900)  # fmt: skip
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output
    assert "IncompleteFilesException" not in output and "LockException" not in output, output
    return output


def test_the_readme_command_resumes_a_run_killed_with_sigkill(tmp_path):
    dataset = make_demo_dataset(tmp_path / "raw" / "Dataset994_Resume", 5, num_test=0, seed=4)
    results = tmp_path / "results"
    configfile = tmp_path / "resume.yaml"
    config = {
        "dataset": str(dataset),
        "results": str(results),
        "planning": {"gpu_memory_target_gb": 0.25, "base_features": 4, "max_features": 32},
        "preprocessing": {"cases_per_job": 5, "threads": 1},
        "splits": {"num_folds": 2},
        "training": {
            "configurations": ["3d_fullres"], "folds": [0], "epochs": EPOCHS,
            "iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "checkpoint_every": 1,
            "device": "cpu", "threads": 1, "num_workers": 0,
        },
        "inference": {"device": "cpu", "threads": 1, "mirroring": False},
    }  # fmt: skip
    configfile.write_text(yaml.safe_dump(config), encoding="utf-8")
    fold_dir = results / "models" / "3d_fullres" / "fold_0"
    latest = fold_dir / "checkpoint_latest.pt"
    final = fold_dir / "checkpoint_final.pt"
    incomplete = REPO / ".snakemake" / "incomplete"
    log = tmp_path / "killed.log"

    report = results / "dataset_report.json"
    marker = incomplete / urlsafe_b64encode(str(report).encode()).decode()

    # 1. Killed the moment validate_dataset has written its output, before the job has
    # exited: the output exists but Snakemake still marks it incomplete
    # (IncompleteFilesException before, without --rerun-incomplete), and the killed run's
    # locks stay behind ("Directory cannot be locked" before, without --unlock).
    _kill_group_when(_start(configfile, log), report, log)
    assert marker.exists(), "the kill came after validate_dataset had ended"
    assert any((REPO / SNAKEMAKE_LOCKS).iterdir())

    # 2. The same command starts over from the incomplete job; killed again mid-training,
    # once the train job has a checkpoint of an epoch.
    _kill_group_when(_start(configfile, log), latest, log)
    started = log.read_text(encoding="utf-8")
    assert "Removed the locks of a segflow run" in started
    assert "IncompleteFilesException" not in started
    assert not final.exists()

    # 3. The same command resumes training and finishes the DAG.
    output = _rerun(configfile)
    assert "Removed the locks of a segflow run" in output
    assert "resuming from" in (fold_dir / "training.log").read_text(encoding="utf-8")
    dry = subprocess.run(
        [*_readme_command(configfile), "--dry-run"], cwd=REPO, env=_environment(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stderr
    assert not marker.exists()
    assert load_checkpoint(final)["epoch"] == EPOCHS
    assert not latest.exists()
    # No artifact the rerun accepted (or wrote) is half-written: each reads back whole.
    artifacts = [p for p in results.rglob("*") if p.is_file() and "logs" not in p.parts]
    assert len(artifacts) > 20
    for path in artifacts:
        _read_back(path)
    assert (results / "model.zip").stat().st_size > 0
