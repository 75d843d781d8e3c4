"""Two experiments in one DAG on a tiny dataset: each trains and cross-validates as its own
model (<configuration>__<experiment>), `select` compares them by Dice, the exported model
predicts, the checkpoints record their experiment; changing one experiment's overrides reruns
only its jobs (and what follows the selection), not the other's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from segflow.cli import main
from segflow.demo import make_demo_dataset
from segflow.training.checkpoint import load_checkpoint

from .conftest import run_snakemake

pytestmark = pytest.mark.workflow

MODELS = ["2d__base", "2d__fast"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    return make_demo_dataset(
        root / "Dataset994_TinyExperiments", num_training=4, num_test=1, seed=5
    )


def _config(results: Path, dataset: Path, fast_lr: str = "0.05") -> dict[str, str]:
    return {
        "dataset": str(dataset),
        "results": str(results),
        "planning": "{gpu_memory_target_gb: 0.25, base_features: 4, max_features: 32}",
        "preprocessing": "{cases_per_job: 10, threads: 1}",
        "splits": "{num_folds: 2}",
        "training": (
            "{configurations: [2d], epochs: 1, iterations_per_epoch: 2, "
            "val_iterations_per_epoch: 1, checkpoint_every: 1, device: cpu, threads: 1, "
            "num_workers: 0}"
        ),
        # fast also trains with the focal loss and a gamma of its own (loss_parameters).
        "experiments": (
            f"{{base: null, fast: {{initial_lr: {fast_lr}, optimizer: adamw, loss: focal, "
            "loss_parameters: {gamma: 1.0}}}"
        ),
        # No save_probabilities: with experiments the workflow keeps the cross-validation
        # probabilities, so when `select` reruns for the changed experiment the other
        # model's are still there and its validate jobs do not rerun.
        "inference": "{device: cpu, threads: 1}",
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, dataset):
    work = tmp_path_factory.mktemp("experiments")
    config = _config(work / "out", dataset)
    run = run_snakemake(work, config=config)
    assert run.returncode == 0, run.output
    return work, config, run


def test_every_experiment_trains_and_cross_validates_as_its_own_model(finished):
    work, _, run = finished
    counts = run.job_counts()
    for rule, count in {"train": 4, "validate": 4, "crossval": 2, "select": 1,
                        "export": 1, "predict": 1}.items():  # fmt: skip
        assert counts.get(rule) == count, (rule, counts)
    out = work / "out"
    assert sorted(p.name for p in (out / "models").iterdir()) == MODELS
    for name, experiment, optimizer in (("2d__base", "base", "sgd"), ("2d__fast", "fast", "adamw")):
        for fold in (0, 1):
            state = load_checkpoint(out / "models" / name / f"fold_{fold}" / "checkpoint_final.pt")
            assert state["configuration"] == "2d" and state["fold"] == fold
            assert state["settings"]["experiment"] == experiment
            assert state["settings"]["optimizer"] == optimizer
        summary = json.loads((out / "crossval" / name / "summary.json").read_text())
        assert summary["configuration"] == name
        # What the ablation table shows besides Dice: the model's cost.
        assert summary["model"]["experiment"] == experiment
        assert (
            summary["model"]["parameters"] > 1000 and summary["model"]["seconds_per_iteration"] > 0
        )
    page = (out / "report" / "crossval.html").read_text(encoding="utf-8")
    assert "Models compared" in page and "s / iteration" in page
    assert "<td>base</td>" in page and "<td>fast</td>" in page
    # What each model overrides, from its checkpoints' settings.
    assert "<td>nothing</td>" in page
    assert (
        "<td>initial_lr 0.05, loss focal, loss_parameters gamma 1.0, optimizer adamw</td>" in page
    )
    fast = load_checkpoint(out / "models" / "2d__fast" / "fold_0" / "checkpoint_final.pt")
    assert fast["settings"]["loss_parameters"] == {"gamma": 1.0}


def test_select_compares_every_model_and_picks_by_dice(finished):
    work, _, _ = finished
    selection = json.loads((work / "out" / "selection.json").read_text())
    names = [c["name"] for c in selection["candidates"]]
    assert names == [*MODELS, ",".join(MODELS)]
    best = max(c["mean_foreground_dice"] for c in selection["candidates"])
    assert selection["selected"]["mean_foreground_dice"] == best
    assert set(selection["selected"]["configurations"]) <= set(MODELS)


def test_the_exported_model_names_the_experiment_and_predicts(finished, dataset, tmp_path, caplog):
    work, _, _ = finished
    out = work / "out"
    selected = json.loads((out / "selection.json").read_text())["selected"]["configurations"]
    assert sorted(p.name for p in (out / "model").iterdir() if p.is_dir()) == sorted(selected)
    status = main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(tmp_path / "pred"),
                   "-m", str(out / "model"), "--device", "cpu", "--threads", "1"])  # fmt: skip
    assert status == 0
    assert (tmp_path / "pred" / "demo_test_000.nii.gz").is_file()
    # The log names each model by its experiment, not only its configuration.
    assert all(f"{name} folds [0, 1]" in caplog.text for name in selected)


def _jobs(output: str, rules: tuple[str, ...]) -> list[str]:
    """The text of each job of ``rules`` a run prints (its header's indented lines)."""
    jobs, current = [], None
    for line in output.splitlines():
        header = re.match(r"^(?:local)?rule (\w+):$", line)
        if header:
            current = [] if header.group(1) in rules else None
            if current is not None:
                jobs.append(current)
        elif current is not None and line.startswith(" "):
            current.append(line)
        else:
            current = None
    return ["\n".join(job) for job in jobs]


def test_changing_one_experiment_reruns_only_its_jobs(finished):
    work, config, _ = finished
    assert run_snakemake(work, "-n", config=config).job_counts() == {}
    changed = _config(work / "out", Path(config["dataset"]), fast_lr="0.02")
    run = run_snakemake(work, "-n", config=changed)
    assert run.returncode == 0, run.output
    counts = run.job_counts()
    assert counts.get("train") == 2 and counts.get("validate") == 2, counts
    assert counts.get("crossval") == 1 and counts.get("select") == 1, counts
    assert counts.get("export") == 1, counts
    jobs = _jobs(run.output, ("train", "validate", "crossval"))
    assert len(jobs) == 5, run.output
    for job in jobs:
        assert "2d__fast" in job and "2d__base" not in job, job
