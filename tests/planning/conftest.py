"""Small fingerprints and dataset descriptions for planning tests."""

from __future__ import annotations

import pytest

from segflow.io.dataset import DatasetJson, parse_dataset_json


def _make_dataset(
    channels: dict[str, str] | None = None, num_training: int = 20, **labels: int
) -> DatasetJson:
    raw = {
        "name": "Test",
        "channel_names": channels or {"0": "MRI"},
        "labels": {"background": 0, **(labels or {"organ": 1})},
        "numTraining": num_training,
        "file_ending": ".nii.gz",
    }
    dataset, problems = parse_dataset_json(raw)
    assert dataset is not None and not problems, problems
    return dataset


def _make_fingerprint(
    spacing, shape, num_cases: int = 20, relative_size: float = 1.0, channels: int = 1
) -> dict:
    stats = {
        "mean": 100.0,
        "median": 100.0,
        "std": 20.0,
        "min": 0.0,
        "max": 200.0,
        "percentile_00_5": 50.0,
        "percentile_99_5": 150.0,
    }
    return {
        "dataset_name": "Dataset999_Test",
        "spacings": [list(spacing)] * num_cases,
        "shapes_after_crop": [list(shape)] * num_cases,
        "shapes_before_crop": [list(shape)] * num_cases,
        "median_relative_size_after_cropping": relative_size,
        "foreground_intensity_properties_per_channel": {
            str(c): dict(stats) for c in range(channels)
        },
        "is_2d": shape[0] == 1,
        "num_cases": num_cases,
        "case_ids": [f"case_{i:03d}" for i in range(num_cases)],
        "seed": 0,
        "segflow_version": "0.1.0",
    }


@pytest.fixture
def make_dataset():
    """``make_dataset(channels=None, num_training=20, **labels)`` -> DatasetJson."""
    return _make_dataset


@pytest.fixture
def make_fingerprint():
    """``make_fingerprint(spacing, shape, num_cases=20, relative_size=1.0, channels=1)``.

    Every case has the same spacing and shape.
    """
    return _make_fingerprint


@pytest.fixture
def dataset() -> DatasetJson:
    return _make_dataset()


@pytest.fixture
def fingerprint() -> dict:
    """Twenty 1 mm isotropic 36x50x35 volumes (Hippocampus-like)."""
    return _make_fingerprint((1.0, 1.0, 1.0), (36, 50, 35))
