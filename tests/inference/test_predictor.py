"""Predicting a case end to end: raw files or a stored case in, a segmentation file out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage
from torch import nn

from segflow.inference.export import load_probabilities
from segflow.inference.options import PredictionOptions
from segflow.inference.predictor import (
    default_mirror_axes,
    predict_case,
    predict_case_logits,
    predict_files,
    preprocess_for_prediction,
)
from segflow.io.dataset import DatasetJson, parse_dataset_json
from segflow.io.image import write_image
from segflow.planning import Plans, plan_experiment
from segflow.preprocessing import CaseSpec, open_case, preprocess_and_save

SPACING = (2.5, 0.8, 0.9)
ORIGIN = (4.0, -3.5, 20.0)
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def _dataset() -> DatasetJson:
    raw = {
        "name": "Tiny",
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    dataset, problems = parse_dataset_json(raw)
    assert dataset is not None and not problems, problems
    return dataset


def _plans(dataset: DatasetJson) -> Plans:
    stats = {
        "mean": 120.0,
        "median": 120.0,
        "std": 40.0,
        "min": 0.0,
        "max": 200.0,
        "percentile_00_5": 100.0,
        "percentile_99_5": 200.0,
    }
    fingerprint = {
        "dataset_name": "Dataset999_Tiny",
        "spacings": [list(SPACING)] * 10,
        "shapes_after_crop": [[10, 30, 28]] * 10,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": stats},
        "is_2d": False,
        "num_cases": 10,
        "seed": 0,
    }
    plans = plan_experiment(fingerprint, dataset)
    conf = plans["configurations"]["3d_fullres"]
    conf["spacing"] = [2.0, 1.0, 1.0]  # resample, so that export has something to undo
    conf["patch_size"] = [8, 16, 16]  # several windows per case
    plans["configurations"]["2d"]["patch_size"] = [16, 16]
    return Plans.from_dict(plans)


def _case(folder: Path) -> tuple[Path, np.ndarray]:
    """An image whose intensity says the class: 100 background, 150 organ, 200 lesion,
    inside a zero frame; returns the image file and the label."""
    shape = (12, 32, 30)
    grid = np.meshgrid(
        *[(np.arange(n) - n / 2) * s for n, s in zip(shape, SPACING, strict=True)], indexing="ij"
    )
    radius = np.sqrt(sum((g / r) ** 2 for g, r in zip(grid, (10.0, 9.0, 9.0), strict=True)))
    label = np.zeros(shape, dtype=np.uint8)
    label[radius < 1] = 1
    label[radius < 0.5] = 2
    image = np.zeros(shape, dtype=np.int16)
    image[1:-1, 1:-1, 1:-1] = 100 + 50 * label[1:-1, 1:-1, 1:-1]
    path = folder / "case_0000.nii.gz"
    write_image(path, image, SPACING, ORIGIN, DIRECTION)
    return path, label


class IntensityClassifier(nn.Module):
    """A pointwise 'network': logit of class k = -(x - centre_k)^2."""

    def __init__(self, centres: list[float]) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor(centres).view(1, -1, 1, 1, 1))

    def forward(self, x):
        centres = self.centres if x.ndim == 5 else self.centres[..., 0]
        return -((x - centres) ** 2)


def _classifier(data: np.ndarray) -> IntensityClassifier:
    # z-scoring is affine: 150 lies halfway between the normalized 100 (most voxels) and 200.
    low, high = float(np.median(data)), float(data.max())
    return IntensityClassifier([low, (low + high) / 2, high])


def _changed_off_boundary(predicted: np.ndarray, reference: np.ndarray) -> int:
    on_boundary = ndimage.maximum_filter(reference, 3) != ndimage.minimum_filter(reference, 3)
    return int(np.sum((predicted != reference) & ~on_boundary))


def _header(path: Path) -> tuple:
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_predict_files_writes_the_segmentation_in_the_input_geometry(tmp_path, configuration):
    image_file, label = _case(tmp_path)
    dataset, plans = _dataset(), _plans(_dataset())
    data, _ = preprocess_for_prediction([image_file], plans, configuration, dataset)
    net = _classifier(data)
    out = tmp_path / "out" / "case.nii.gz"
    patch = plans.configuration(configuration).patch_size
    segmentation = predict_files(
        net,
        [image_file],
        out,
        plans,
        configuration,
        dataset,
        PredictionOptions(mirror_axes=default_mirror_axes(patch), batch_windows=4),
        save_probabilities=True,
    )
    assert segmentation.shape == label.shape
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    np.testing.assert_array_equal(written, segmentation)
    assert _header(out) == _header(image_file)
    assert np.mean(segmentation == label) >= 0.99
    assert _changed_off_boundary(segmentation, label) == 0
    probabilities, _ = load_probabilities(tmp_path / "out" / "case.npz")
    np.testing.assert_array_equal(probabilities.argmax(axis=0), segmentation)


def test_predict_case_from_a_stored_case(tmp_path):
    image_file, label = _case(tmp_path)
    dataset, plans = _dataset(), _plans(_dataset())
    stored = tmp_path / "preprocessed"
    preprocess_and_save(CaseSpec("case", (image_file,)), plans, "3d_fullres", dataset, 0, stored)
    case = open_case(stored, "case")
    net = _classifier(case.data[...])
    segmentation = predict_case(
        net,
        case.data,
        case.properties,
        plans,
        "3d_fullres",
        dataset,
        PredictionOptions(mirror_axes=None),
    )
    direct = predict_files(
        net,
        [image_file],
        tmp_path / "direct.nii.gz",
        plans,
        "3d_fullres",
        dataset,
        PredictionOptions(mirror_axes=None),
    )
    np.testing.assert_array_equal(segmentation, direct)
    assert np.mean(segmentation == label) >= 0.99


def test_several_networks_average_their_logits(tmp_path):
    image_file, _ = _case(tmp_path)
    dataset, plans = _dataset(), _plans(_dataset())
    data, _ = preprocess_for_prediction([image_file], plans, "3d_fullres", dataset)
    a = IntensityClassifier([0.0, 1.0, 2.0])
    b = IntensityClassifier([-1.0, 0.5, 3.0])
    logits = [
        predict_case_logits(n, data, plans, "3d_fullres", PredictionOptions(mirror_axes=(0, 1, 2)))
        for n in (a, b, [a, b])
    ]
    torch.testing.assert_close(logits[2], (logits[0] + logits[1]) / 2, rtol=1e-5, atol=1e-5)


def test_an_input_is_never_overwritten(tmp_path):
    image_file, _ = _case(tmp_path)
    dataset, plans = _dataset(), _plans(_dataset())
    before = image_file.read_bytes()
    with pytest.raises(ValueError, match="overwrite an input"):
        predict_files(
            nn.Identity(),
            [image_file],
            image_file,
            plans,
            "3d_fullres",
            dataset,
            PredictionOptions(mirror_axes=None),
        )
    assert image_file.read_bytes() == before


def test_a_2d_image_gives_a_2d_segmentation(tmp_path):
    dataset = _dataset()
    stats = {
        "mean": 120.0,
        "median": 120.0,
        "std": 40.0,
        "min": 0.0,
        "max": 200.0,
        "percentile_00_5": 100.0,
        "percentile_99_5": 200.0,
    }
    fingerprint = {
        "dataset_name": "Dataset999_Tiny",
        "spacings": [[999.0, 0.5, 0.6]] * 10,
        "shapes_after_crop": [[1, 60, 50]] * 10,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": stats},
        "is_2d": True,
        "num_cases": 10,
        "seed": 0,
    }
    raw_plans = plan_experiment(fingerprint, dataset)
    raw_plans["configurations"]["2d"].update(spacing=[0.7, 0.7], patch_size=[32, 32])
    plans = Plans.from_dict(raw_plans)
    yy, xx = np.meshgrid(np.arange(62) * 0.5 - 15, np.arange(52) * 0.6 - 15, indexing="ij")
    label = np.zeros((62, 52), dtype=np.uint8)
    label[np.hypot(yy, xx) < 10] = 1
    label[np.hypot(yy, xx) < 5] = 2
    image = np.zeros((62, 52), dtype=np.int16)
    image[1:-1, 1:-1] = 100 + 50 * label[1:-1, 1:-1]
    image_file = tmp_path / "flat_0000.nii.gz"
    write_image(image_file, image, (0.5, 0.6), (1.0, 2.0), (0.0, 1.0, 1.0, 0.0))
    data, _ = preprocess_for_prediction([image_file], plans, "2d", dataset)
    assert data.shape[1] == 1
    out = tmp_path / "flat.nii.gz"
    segmentation = predict_files(
        _classifier(data),
        [image_file],
        out,
        plans,
        "2d",
        dataset,
        PredictionOptions(mirror_axes=(0, 1)),
    )
    assert segmentation.shape == (1, 62, 52)
    assert _header(out) == _header(image_file)
    assert len(_header(out)[0]) == 2
    assert np.mean(segmentation[0] == label) >= 0.99
    assert _changed_off_boundary(segmentation[0], label) == 0
