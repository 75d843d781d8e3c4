"""A tiny preprocessed dataset with tiny plans, for training tests that really train.

Six 20x24x24 MRI cases with two foreground classes (a large ellipsoid and a small one
inside it), plans whose 3d_fullres and 2d networks have three stages of 4, 8 and 16
features and 16-voxel patches, preprocessed with segflow's own preprocessing, and two folds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segflow.io.dataset import DatasetJson, parse_dataset_json
from segflow.io.image import write_image
from segflow.planning import Plans, plan_experiment
from segflow.preprocessing.preprocessor import CaseSpec, preprocess_cases
from segflow.training.splits import make_splits

SHAPE = (20, 24, 24)
NUM_CASES = 6


@dataclass
class TinyExperiment:
    """Paths and parsed inputs of the tiny training set-up."""

    root: Path
    dataset: DatasetJson
    dataset_json: Path
    plans: Plans
    plans_path: Path
    splits_path: Path
    preprocessed: dict[str, Path]

    def fold(self, k: int) -> dict[str, list[str]]:
        return json.loads(self.splits_path.read_text())["folds"][k]


def make_tiny_dataset(labels: dict[str, Any] | None = None) -> DatasetJson:
    raw = {
        "name": "TinyTrain",
        "channel_names": {"0": "MRI"},
        "labels": labels or {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": NUM_CASES,
        "file_ending": ".nii.gz",
    }
    dataset, problems = parse_dataset_json(raw)
    assert dataset is not None and not problems, problems
    return dataset


def tiny_plans(dataset: DatasetJson) -> Plans:
    """The planner's plans for 20x24x24 cases, shrunk to a three-stage 4-8-16 network."""
    stats = {
        "mean": 100.0,
        "median": 100.0,
        "std": 20.0,
        "min": 0.0,
        "max": 200.0,
        "percentile_00_5": 50.0,
        "percentile_99_5": 150.0,
    }
    fingerprint = {
        "dataset_name": "Dataset998_TinyTrain",
        "spacings": [[1.0, 1.0, 1.0]] * NUM_CASES,
        "shapes_after_crop": [list(SHAPE)] * NUM_CASES,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": stats},
        "is_2d": False,
        "num_cases": NUM_CASES,
        "seed": 0,
    }
    plans = plan_experiment(fingerprint, dataset)
    for name, conf in plans["configurations"].items():
        ndim = 2 if name == "2d" else 3
        conf["patch_size"] = [16] * ndim
        conf["batch_size"] = 2
        conf["network"].update(
            n_stages=3,
            features_per_stage=[4, 8, 16],
            kernel_sizes=[[3] * ndim] * 3,
            strides=[[1] * ndim, [2] * ndim, [2] * ndim],
            n_conv_per_stage=[2, 2, 2],
            n_conv_per_stage_decoder=[2, 2],
        )
    return Plans.from_dict(plans)


def synthetic_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An image with an ellipsoid organ (1) holding a small lesion (2), plus noise."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), axis=-1)
    centre = np.asarray(SHAPE) / 2 + rng.uniform(-2, 2, 3)
    radii = np.asarray([6.0, 7.0, 7.0]) * rng.uniform(0.8, 1.1)
    organ = (((grid - centre) / radii) ** 2).sum(-1) <= 1
    lesion_centre = centre + rng.uniform(-2, 2, 3)
    lesion = (((grid - lesion_centre) / 3.0) ** 2).sum(-1) <= 1
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[organ] = 1
    label[lesion & organ] = 2
    image = 50 + 60 * organ + 60 * (label == 2) + rng.normal(0, 8, SHAPE)
    return image.astype(np.float32), label


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory) -> TinyExperiment:
    root = tmp_path_factory.mktemp("tiny_training")
    dataset = make_tiny_dataset()
    dataset_json = root / "dataset.json"
    dataset_json.write_text(json.dumps(dataset.raw))
    plans = tiny_plans(dataset)
    plans_path = root / "plans.json"
    plans_path.write_text(json.dumps(plans.to_dict()))
    rng = np.random.default_rng(7)
    cases = []
    for i in range(NUM_CASES):
        image, label = synthetic_case(rng)
        image_path = root / "raw" / f"tiny_{i:02d}_0000.nii.gz"
        label_path = root / "raw" / f"tiny_{i:02d}.nii.gz"
        image_path.parent.mkdir(exist_ok=True)
        write_image(image_path, image, (1.0, 1.0, 1.0))
        write_image(label_path, label, (1.0, 1.0, 1.0))
        cases.append(CaseSpec(f"tiny_{i:02d}", (image_path,), label_path))
    preprocessed = {}
    for name in ("3d_fullres", "2d"):
        folder = root / "preprocessed" / name
        preprocess_cases(cases, plans, name, dataset, seed=0, out_dir=folder)
        preprocessed[name] = folder
    splits_path = root / "splits.json"
    splits_path.write_text(json.dumps(make_splits([c.case_id for c in cases], 2, 12345)))
    return TinyExperiment(root, dataset, dataset_json, plans, plans_path, splits_path, preprocessed)
