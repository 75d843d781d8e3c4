"""Tiny hand-made cases and case fingerprints for the fingerprint tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from segflow.io.dataset import DatasetJson, parse_dataset_json
from segflow.io.image import write_image


def _make_dataset(channels: Sequence[str] = ("MRI",), file_ending: str = ".nii.gz", **labels):
    raw = {
        "name": "Tiny",
        "channel_names": {str(i): name for i, name in enumerate(channels)},
        "labels": {"background": 0, **(labels or {"structure": 1})},
        "numTraining": 2,
        "file_ending": file_ending,
    }
    dataset, problems = parse_dataset_json(raw)
    if dataset is None or problems:
        raise RuntimeError(f"bad test dataset: {problems}")
    return dataset


@pytest.fixture
def make_dataset():
    """``make_dataset(channels=("MRI",), file_ending=".nii.gz", **labels)`` -> DatasetJson."""
    return _make_dataset


@pytest.fixture
def dataset() -> DatasetJson:
    return _make_dataset()


def _tiny_volume() -> tuple[np.ndarray, np.ndarray]:
    """A (4, 5, 6) image, nonzero only in [1:3, 1:4, 2:5], and its label.

    Foreground inside the box: values 10, 20, 30, 60 (labels 1, 1, 2, 1). One labelled voxel
    lies outside the box, where the image is zero; cropping drops it.
    """
    image = np.zeros((4, 5, 6), dtype=np.int16)
    image[1:3, 1:4, 2:5] = 5
    label = np.zeros((4, 5, 6), dtype=np.uint8)
    for (z, y, x), value, cls in [
        ((1, 1, 2), 10, 1),
        ((1, 2, 3), 20, 1),
        ((2, 1, 4), 30, 2),
        ((2, 3, 4), 60, 1),
    ]:
        image[z, y, x] = value
        label[z, y, x] = cls
    label[0, 0, 0] = 1
    return image, label


@pytest.fixture
def tiny_case(tmp_path: Path) -> tuple[list[Path], Path]:
    """One NIfTI case with spacing (z, y, x) = (3.0, 0.5, 0.75); see ``_tiny_volume``."""
    image, label = _tiny_volume()
    image_file, label_file = tmp_path / "tiny_001_0000.nii.gz", tmp_path / "tiny_001.nii.gz"
    write_image(image_file, image, (3.0, 0.5, 0.75))
    write_image(label_file, label, (3.0, 0.5, 0.75))
    return [image_file], label_file


@pytest.fixture
def noisy_case(tmp_path: Path) -> tuple[list[Path], Path]:
    """A (6, 20, 20) NIfTI case with 720 foreground voxels of distinct intensities."""
    rng = np.random.default_rng(7)
    image = rng.permutation(6 * 20 * 20).reshape(6, 20, 20).astype(np.float32) + 1
    label = np.zeros(image.shape, dtype=np.uint8)
    label[:, 5:15, 4:16] = 1
    image_file, label_file = tmp_path / "noisy_0000.nii.gz", tmp_path / "noisy.nii.gz"
    write_image(image_file, image, (1.0, 1.0, 1.0))
    write_image(label_file, label, (1.0, 1.0, 1.0))
    return [image_file], label_file


def make_case_fingerprint(
    case_id: str,
    samples: Sequence[float] | Sequence[Sequence[float]],
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    shape_before: Sequence[int] = (4, 4, 4),
    bbox: Sequence[Sequence[int]] = ((0, 4), (0, 4), (0, 4)),
    minimum: float | None = None,
    maximum: float | None = None,
    seed: int = 0,
    is_2d: bool = False,
) -> dict:
    """A valid case fingerprint whose samples are all of its foreground voxels.

    ``samples`` is one list (one channel) or one list per channel; ``minimum``/``maximum``
    override the extremes of the case statistics (which may lie outside a sample).
    """
    per_channel = [list(samples)] if not samples or np.isscalar(samples[0]) else samples
    channels = []
    for values in per_channel:
        values = [float(v) for v in values]
        stats = None
        if values:
            array = np.asarray(values)
            stats = {
                "mean": float(array.mean()),
                "median": float(np.median(array)),
                "std": float(array.std()),
                "min": float(array.min() if minimum is None else minimum),
                "max": float(array.max() if maximum is None else maximum),
                "percentile_00_5": float(np.percentile(array, 0.5)),
                "percentile_99_5": float(np.percentile(array, 99.5)),
            }
        channels.append(
            {"num_foreground_voxels": len(values), "statistics": stats, "samples": values}
        )
    shape_after = [int(b[1]) - int(b[0]) for b in bbox]
    return {
        "segflow_version": "0.1.0",
        "case_id": case_id,
        "seed": seed,
        "num_samples": 10_000,
        "image_files": [f"{case_id}_0000.nii.gz"],
        "label_file": f"{case_id}.nii.gz",
        "is_2d": is_2d,
        "spacing": [float(s) for s in spacing],
        "shape_before_crop": [int(s) for s in shape_before],
        "bbox": [[int(a), int(b)] for a, b in bbox],
        "shape_after_crop": shape_after,
        "relative_size_after_cropping": float(np.prod(shape_after) / np.prod(shape_before)),
        "channels": channels,
    }


@pytest.fixture
def make_case_fp():
    """``make_case_fp(case_id, samples, **geometry)`` -> a valid case fingerprint dict."""
    return make_case_fingerprint
