"""The train rule on a tiny dataset: folds as Snakemake jobs, a finished DAG that reruns
nothing, and a training job killed with SIGKILL that the same command resumes to the weights
of a run that was never interrupted."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from segflow.demo import make_demo_dataset
from segflow.training.checkpoint import load_checkpoint

from .conftest import REPO

pytestmark = pytest.mark.workflow

EPOCHS = 4


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    return make_demo_dataset(root / "Dataset992_TinyTrain", num_training=5, num_test=0, seed=3)


def _config(results: Path, dataset: Path, folds: str = "[0]") -> dict[str, str]:
    # A narrow network and a small memory target keep the epochs short.
    return {
        "dataset": str(dataset),
        "results": str(results),
        "planning": "{gpu_memory_target_gb: 0.25, base_features: 4, max_features: 32}",
        "preprocessing": "{cases_per_job: 5, threads: 1}",
        "training": (
            f"{{configurations: [3d_fullres], folds: {folds}, epochs: {EPOCHS}, "
            "iterations_per_epoch: 2, val_iterations_per_epoch: 1, checkpoint_every: 1, "
            "deterministic: true, device: cpu, threads: 1, num_workers: 0}"
        ),
    }


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["network"]


def test_folds_train_as_jobs_and_a_second_run_does_nothing(tmp_path, tiny_dataset, snakemake):
    config = _config(tmp_path / "out", tiny_dataset, folds="[0, 1]")
    run = snakemake(tmp_path, config=config)
    assert run.returncode == 0, run.output
    counts = run.job_counts()
    assert counts["train"] == 2 and counts["validate"] == 2 and counts["crossval"] == 1

    for fold in (0, 1):
        folder = tmp_path / "out" / "models" / "3d_fullres" / f"fold_{fold}"
        final = load_checkpoint(folder / "checkpoint_final.pt")
        assert final["epoch"] == EPOCHS and final["fold"] == fold
        assert (folder / "checkpoint_best.pt").is_file()
        assert not (folder / "checkpoint_latest.pt").exists()  # removed once training ends
        with open(folder / "progress.csv", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
        # The poly schedule: 0.01 * (1 - epoch / 4) ** 0.9 at the start of each epoch.
        expected = [0.01 * (1 - e / EPOCHS) ** 0.9 for e in range(EPOCHS)]
        assert [float(r["learning_rate"]) for r in rows] == pytest.approx(expected, rel=1e-5)
        assert all(0.0 <= float(r["mean_pseudo_dice"]) <= 1.0 for r in rows)
        assert (folder / "progress.png").stat().st_size > 0
        assert "finished" in (folder / "training.log").read_text(encoding="utf-8")
    # The two folds hold out different cases, so they learn different weights.
    fold_dirs = [tmp_path / "out" / "models" / "3d_fullres" / f"fold_{k}" for k in (0, 1)]
    first, second = (_weights(d / "checkpoint_final.pt") for d in fold_dirs)
    assert any(not torch.equal(first[k], second[k]) for k in first)

    # Each fold predicted and scored the case it held out; crossval merged the two folds.
    crossval = tmp_path / "out" / "crossval" / "3d_fullres"
    summary = json.loads((crossval / "summary.json").read_text())
    assert summary["folds"] == [0, 1] and summary["num_cases"] == 2
    assert summary["classes"] == ["organ", "lesion"]
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    for fold in (0, 1):
        [held_out] = splits["folds"][fold]["val"]
        assert (crossval / f"fold_{fold}" / "predictions" / f"{held_out}.nii.gz").is_file()
    with open(crossval / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)

    again = snakemake(tmp_path, "--dry-run", config=config)
    assert again.returncode == 0 and "Nothing to be done" in again.output, again.output


def _start_snakemake(workdir: Path, config: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--cores", "1",
           "--config", *(f"{k}={v}" for k, v in config.items())]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _training_process(parent: subprocess.Popen) -> psutil.Process | None:
    try:
        children = psutil.Process(parent.pid).children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        if "segflow" in cmdline and "train" in cmdline:
            return child
    return None


def test_a_training_job_killed_with_sigkill_resumes_to_the_same_weights(
    tmp_path, tiny_dataset, snakemake
):
    fold_dir = tmp_path / "killed" / "models" / "3d_fullres" / "fold_0"
    latest = fold_dir / "checkpoint_latest.pt"
    proc = _start_snakemake(tmp_path, _config(tmp_path / "killed", tiny_dataset))
    try:
        # Kill the training process as the kernel's OOM killer or a lost node would: no
        # chance to save anything. Wait for a checkpoint of epoch 1 so there is one to resume.
        deadline = time.monotonic() + 600
        trainer = None
        while time.monotonic() < deadline and proc.poll() is None:
            trainer = trainer or _training_process(proc)
            if trainer is not None and latest.exists():
                trainer.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"training never wrote {latest}:\n{proc.communicate()[0]}")
        output = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, output
    assert not (fold_dir / "checkpoint_final.pt").exists()
    assert latest.exists()
    killed_at = load_checkpoint(latest)["epoch"]
    assert 1 <= killed_at < EPOCHS

    # Jobs independent of training (the other configuration's preprocessing, which `all`
    # asks for) may or may not have run before it: Snakemake chooses their order.
    # One batch per configuration here (5 cases, 5 per job).
    planned = json.loads((tmp_path / "killed" / "plans.json").read_text())["configurations"]
    preprocessed = tmp_path / "killed" / "preprocessed"
    unfinished_preprocessing = sum(
        1 for name in planned if not list((preprocessed / name / "batches").glob("*.json"))
    )

    # The same command again: it resumes and finishes.
    rerun = snakemake(tmp_path, config=_config(tmp_path / "killed", tiny_dataset))
    assert rerun.returncode == 0, rerun.output
    # Training resumed; everything downstream of it (with one configuration and no test
    # images: selection, postprocessing, export, report pages) follows; nothing that had
    # finished runs again.
    expected = {
        "train": 1, "validate": 1, "crossval": 1, "select": 1, "postprocess": 1,
        "export": 1, "report_pages": 1, "all": 1,
    }  # fmt: skip
    if unfinished_preprocessing:
        expected["preprocess"] = unfinished_preprocessing
    assert rerun.job_counts() == expected
    log = (fold_dir / "training.log").read_text(encoding="utf-8")
    assert f"resuming from {latest} at epoch {killed_at}" in log
    with open(fold_dir / "progress.csv", encoding="utf-8") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == list(range(EPOCHS))

    # Bit-identical to a run that was never interrupted.
    clean = snakemake(tmp_path, config=_config(tmp_path / "clean", tiny_dataset))
    assert clean.returncode == 0, clean.output
    resumed = _weights(fold_dir / "checkpoint_final.pt")
    uninterrupted = _weights(
        tmp_path / "clean" / "models" / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    )
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key
    assert os.listdir(fold_dir).count("checkpoint_latest.pt") == 0
