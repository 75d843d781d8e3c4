"""Hand-made datasets, plans and cases for the preprocessing tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segflow.io.dataset import DatasetJson, parse_dataset_json
from segflow.io.image import write_image
from segflow.planning import Plans, plan_experiment

_STATS = {
    "mean": 100.0,
    "median": 100.0,
    "std": 20.0,
    "min": 0.0,
    "max": 200.0,
    "percentile_00_5": 50.0,
    "percentile_99_5": 150.0,
}


def _make_dataset(channels: Sequence[str] = ("MRI",), **labels: Any) -> DatasetJson:
    raw = {
        "name": "Tiny",
        "channel_names": {str(i): name for i, name in enumerate(channels)},
        "labels": {"background": 0, **(labels or {"organ": 1, "lesion": 2})},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    dataset, problems = parse_dataset_json(raw)
    if dataset is None or problems:
        raise RuntimeError(f"bad test dataset: {problems}")
    return dataset


def _make_plans(
    dataset: DatasetJson,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    shape: Sequence[int] = (16, 20, 24),
    configurations: dict[str, dict[str, Any]] | None = None,
    **top_level: Any,
) -> Plans:
    """Plans from a fingerprint of identical cases, then the given fields replaced.

    ``configurations`` maps a configuration name to the fields to replace in it (applied to
    every configuration under the name ``"*"``); other keywords replace top-level fields.
    """
    fingerprint = {
        "dataset_name": "Dataset999_Tiny",
        "spacings": [list(spacing)] * 10,
        "shapes_after_crop": [list(shape)] * 10,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {
            str(c): dict(_STATS) for c in range(dataset.num_channels)
        },
        "is_2d": shape[0] == 1,
        "num_cases": 10,
        "seed": 0,
    }
    plans = plan_experiment(fingerprint, dataset)
    plans.update(top_level)
    for name, fields in (configurations or {}).items():
        targets = (
            plans["configurations"].values() if name == "*" else [plans["configurations"][name]]
        )
        for conf in targets:
            conf.update(fields)
    return Plans.from_dict(plans)


def _write_case(
    folder: Path,
    case_id: str,
    channels: Sequence[np.ndarray],
    spacing: Sequence[float],
    label: np.ndarray | None = None,
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
) -> tuple[list[Path], Path | None]:
    """Write ``(z, y, x)`` channel arrays (and a label) as NIfTI files; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for c, array in enumerate(channels):
        path = folder / f"{case_id}_{c:04d}.nii.gz"
        write_image(path, array, tuple(spacing), origin, direction)
        images.append(path)
    label_path = None
    if label is not None:
        label_path = folder / f"{case_id}.nii.gz"
        write_image(label_path, label, tuple(spacing), origin, direction)
    return images, label_path


@pytest.fixture
def make_dataset():
    """``make_dataset(channels=("MRI",), **labels)`` -> DatasetJson (labels 1, 2 by default)."""
    return _make_dataset


@pytest.fixture
def dataset() -> DatasetJson:
    return _make_dataset()


@pytest.fixture
def make_plans():
    """``make_plans(dataset, spacing, shape, configurations=None, **top_level)`` -> Plans."""
    return _make_plans


@pytest.fixture
def write_case():
    """``write_case(folder, case_id, channels, spacing, label=None, origin, direction)``."""
    return _write_case
