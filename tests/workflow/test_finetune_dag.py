"""Fine-tuning in the workflow: planning.plans_from moves another dataset's plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.demo import make_demo_dataset
from segflow.io.dataset import parse_dataset_json
from segflow.planning import plan_experiment

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
