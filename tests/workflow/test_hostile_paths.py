"""The whole workflow on a dataset and a results folder whose paths hold every character a
shell would act on, and a case id beginning with '-': every rule runs, and nothing the paths
spell out is executed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segflow.demo import make_demo_dataset

from .conftest import REPO

pytestmark = pytest.mark.workflow

# Spaces, both quotes, `$`, a variable, command substitution in both spellings, a glob, a
# semicolon, a backslash and non-ASCII characters. (Braces are refused by the config check:
# Snakemake reads them as wildcards.)
HOSTILE = "a b 'q' \"dq\" $HOME $(touch PWNED) `touch PWNED2`; * \\ ü 日本"
DASH_CASE = "-demo_000"


def _hostile_dataset(root: Path) -> Path:
    dataset = make_demo_dataset(root / "Dataset993_Hostile", num_training=4, num_test=1, seed=5)
    # The first training case gets an id beginning with '-': argparse must take it as a value.
    (dataset / "imagesTr" / "demo_000_0000.nii.gz").rename(
        dataset / "imagesTr" / f"{DASH_CASE}_0000.nii.gz"
    )
    (dataset / "labelsTr" / "demo_000.nii.gz").rename(dataset / "labelsTr" / f"{DASH_CASE}.nii.gz")
    return dataset


def test_every_rule_runs_on_paths_a_shell_would_act_on(tmp_path, snakemake):
    root = tmp_path / HOSTILE
    dataset = _hostile_dataset(root / "raw")
    results = root / f"out {HOSTILE}"
    config = {
        "dataset": str(dataset),
        "results": str(results),
        "planning": {"gpu_memory_target_gb": 0.25, "base_features": 4, "max_features": 16},
        "preprocessing": {"cases_per_job": 2, "threads": 1},
        "splits": {"num_folds": 2},
        "training": {
            "configurations": ["3d_fullres"], "folds": [0], "epochs": 1,
            "iterations_per_epoch": 1, "val_iterations_per_epoch": 1, "device": "cpu",
            "threads": 1, "num_workers": 0,
        },
        "inference": {"device": "cpu", "threads": 1, "mirroring": False},
    }  # fmt: skip
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    workdir = tmp_path / "work"
    workdir.mkdir()

    run = snakemake(workdir, "--configfile", str(configfile))
    assert run.returncode == 0, run.output

    # Nothing the paths spell out ran, in the working directory or anywhere under tmp_path.
    injected = [p for p in tmp_path.rglob("PWNED*")]
    assert injected == [] and not Path("PWNED").exists(), injected
    # Every rule of the DAG ran once (one fold, one test case).
    counts = run.job_counts()
    for rule in ("validate_dataset", "fingerprint_batch", "fingerprint", "plan", "preprocess",
                 "split", "train", "validate", "crossval", "select", "postprocess", "export",
                 "report_pages", "predict", "apply_postprocessing", "evaluate",
                 "report_test_pages"):  # fmt: skip
        assert counts.get(rule, 0) >= 1, (rule, counts)

    # The '-' case went through every per-case step under its own id.
    report = json.loads((results / "dataset_report.json").read_text(encoding="utf-8"))
    assert DASH_CASE in [c["case_id"] for c in report["training_cases"]]
    batches = sorted((results / "fingerprint" / "batches").glob("*.json"))
    batched = [c["case_id"] for b in batches for c in json.loads(b.read_text("utf-8"))["cases"]]
    assert DASH_CASE in batched
    fingerprint = json.loads((results / "fingerprint.json").read_text(encoding="utf-8"))
    assert DASH_CASE in fingerprint["case_ids"]
    manifests = sorted((results / "preprocessed" / "3d_fullres" / "batches").glob("*.json"))
    listed = [json.loads(m.read_text(encoding="utf-8")) for m in manifests]
    assert DASH_CASE in json.dumps(listed)
    assert (results / "predictions" / "demo_test_000.nii.gz").is_file()
    assert (results / "model.zip").is_file()
    assert os.listdir(results / "logs")


def test_jobs_find_an_interpreter_whose_folder_a_shell_would_act_on(tmp_path):
    """The jobs' PATH (shell.prefix) holds the folder of the interpreter running Snakemake:
    the same environment, seen through a folder named with shell syntax."""
    venv = Path(sys.prefix)
    env_root = tmp_path / f"env {HOSTILE}"
    bin_dir = env_root / "bin $(touch PWNED3)"
    bin_dir.mkdir(parents=True)
    (env_root / "pyvenv.cfg").write_bytes((venv / "pyvenv.cfg").read_bytes())
    (env_root / "lib").symlink_to(venv / "lib")
    (bin_dir / "python").symlink_to(Path(sys.executable).resolve())
    dataset = make_demo_dataset(tmp_path / "raw", num_training=2, num_test=0, seed=1)
    results = tmp_path / "out"
    work = tmp_path / "work"
    work.mkdir()
    cmd = [str(bin_dir / "python"), "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(work), "--cores", "1", "--config", f"dataset={dataset}",
           f"results={results}", "--", str(results / "dataset_report.json")]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (results / "dataset_report.json").is_file()
    assert list(tmp_path.rglob("PWNED*")) == []
