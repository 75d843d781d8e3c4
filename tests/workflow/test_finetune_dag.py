"""Fine-tuning in the workflow: planning.plans_from moves another dataset's plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.demo import make_demo_dataset
from segflow.io.dataset import parse_dataset_json
from segflow.planning import plan_experiment

from .test_experiments_dag import _jobs

pytestmark = pytest.mark.workflow


def _source_plans(path: Path) -> dict:
    """Plans of another MRI dataset: 1 mm isotropic 48^3 volumes."""
    dataset, _ = parse_dataset_json(
        {
            "name": "Source",
            "channel_names": {"0": "MRI"},
            "labels": {"background": 0, "a": 1},
            "numTraining": 10,
            "file_ending": ".nii.gz",
        }
    )
    stats = {"mean": 1.0, "median": 1.0, "std": 1.0, "min": 0.0, "max": 2.0,
             "percentile_00_5": 0.0, "percentile_99_5": 2.0}  # fmt: skip
    fingerprint = {
        "dataset_name": "Dataset100_Source",
        "spacings": [[1.0, 1.0, 1.0]] * 10,
        "shapes_after_crop": [[48, 48, 48]] * 10,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": stats},
    }
    plans = plan_experiment(fingerprint, dataset, base_features=4, max_features=16)
    path.write_text(json.dumps(plans))
    return plans


def test_the_plan_job_moves_the_source_plans(tmp_path, snakemake):
    dataset = make_demo_dataset(tmp_path / "raw" / "Dataset992_Fine", num_training=3, num_test=0)
    source = _source_plans(tmp_path / "source_plans.json")
    config = {
        "dataset": str(dataset),
        "results": str(tmp_path / "out"),
        "planning": "{plans_from: source_plans.json}",
    }
    run = snakemake(tmp_path, "-p", str(tmp_path / "out" / "plans.json"), config=config)
    assert run.returncode == 0, run.output
    assert "move-plans --source-plans=source_plans.json" in run.output
    plans = json.loads((tmp_path / "out" / "plans.json").read_text())
    assert plans["moved_from"] == {"dataset_name": "Dataset100_Source"}
    assert plans["dataset_name"] != "Dataset100_Source"
    fullres = plans["configurations"]["3d_fullres"]
    assert fullres["network"] == source["configurations"]["3d_fullres"]["network"]
    assert fullres["spacing"] == [1.0, 1.0, 1.0]
    # The demo's own intensities (its organ is about 200), not the source's (about 1).
    assert plans["foreground_intensity_properties_per_channel"]["0"]["mean"] > 100


def test_one_experiment_moves_plans_beside_one_planned_here(tmp_path, snakemake):
    from segflow.config import check_config, experiment_plans, load_config_schema

    dataset = make_demo_dataset(tmp_path / "raw" / "Dataset991_FineExp", num_training=4, num_test=0)
    source = _source_plans(tmp_path / "source_plans.json")
    config = {
        "dataset": str(dataset),
        "results": str(tmp_path / "out"),
        "splits": "{num_folds: 2}",
        "training": "{configurations: [2d], device: cpu}",
        "experiments": "{scratch: null, tuned: {planning: {plans_from: source_plans.json}}}",
    }
    schema = load_config_schema(Path(__file__).parents[2] / "workflow/schemas/config.schema.yaml")
    # The plans' name depends on the planning values alone.
    planning = {"planning": {"plans_from": "source_plans.json"}}
    checked = check_config({"dataset": "d", "experiments": {"tuned": planning}}, schema)
    name = experiment_plans(checked)["tuned"]
    assert name.startswith("moved-")
    out = tmp_path / "out"
    run = snakemake(tmp_path, "-p", str(out / "plans.json"), str(out / "plans" / f"{name}.json"),
                    config=config)  # fmt: skip
    assert run.returncode == 0, run.output
    assert run.job_counts().get("plan_experiment") == 1
    assert "move-plans --source-plans=source_plans.json" in run.output
    moved = json.loads((out / "plans" / f"{name}.json").read_text())
    here = json.loads((out / "plans.json").read_text())
    assert moved["moved_from"] == {"dataset_name": "Dataset100_Source"}
    assert moved["configurations"]["2d"]["network"] == source["configurations"]["2d"]["network"]
    assert "moved_from" not in here
    # The moved plans resample to the source's 1 mm spacing: their data is preprocessed apart,
    # named by the plans; the other experiment's stays where plans.json's goes.
    assert moved["configurations"]["2d"]["spacing"] != here["configurations"]["2d"]["spacing"]
    dry = snakemake(tmp_path, "-n", config=config)
    assert dry.returncode == 0, dry.output
    counts = dry.job_counts()
    assert counts.get("preprocess_experiment") == 2, counts  # 2d and 3d_fullres, one batch each
    assert counts.get("preprocess") == 2, counts
    assert f"preprocessed/2d__{name}/batches/batch_0000.json" in dry.output
    assert counts.get("train") == 4, counts
    for job in _jobs(dry.output, ("train",)):
        if "2d__tuned" in job:
            assert f"plans/{name}.json" in job and f"preprocessed/2d__{name}/" in job, job
        else:
            assert "2d__scratch" in job and "plans.json" in job and f"2d__{name}" not in job, job
