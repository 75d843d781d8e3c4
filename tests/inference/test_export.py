"""Export: predictions on the preprocessed grid back in the input's geometry.

The round trips preprocess a synthetic case with the real preprocessor, take the one-hot
encoding of its preprocessed segmentation as logits, export them, and compare with the
label image that went in: the header must be the input's, the labels (nearly) the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from segflow.inference.export import (
    export_prediction,
    load_probabilities,
    logits_to_segmentation,
    probabilities_path,
    probabilities_to_segmentation,
    uncrop_and_untranspose,
)
from segflow.io.dataset import DatasetJson, parse_dataset_json
from segflow.io.image import write_image
from segflow.planning import Plans, plan_experiment
from segflow.preprocessing.preprocessor import preprocess_case

# Labels must come back on at least this fraction of the voxels (resampling twice moves
# boundaries by a voxel here and there).
MIN_AGREEMENT = 0.99

_STATS = {
    "mean": 100.0,
    "median": 100.0,
    "std": 20.0,
    "min": 0.0,
    "max": 200.0,
    "percentile_00_5": 50.0,
    "percentile_99_5": 150.0,
}


def _dataset(**labels: Any) -> DatasetJson:
    raw = {
        "name": "Tiny",
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, **(labels or {"organ": 1, "lesion": 2})},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    if any(isinstance(v, list) for v in raw["labels"].values()):
        raw["regions_class_order"] = [1, 2]
    dataset, problems = parse_dataset_json(raw)
    assert dataset is not None and not problems, problems
    return dataset


def _plans(
    dataset: DatasetJson,
    spacing: Sequence[float],
    shape: Sequence[int],
    configurations: dict[str, dict[str, Any]] | None = None,
) -> Plans:
    """Plans of a dataset of identical cases; ``configurations`` replaces fields."""
    fingerprint = {
        "dataset_name": "Dataset999_Tiny",
        "spacings": [list(spacing)] * 10,
        "shapes_after_crop": [list(shape)] * 10,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": dict(_STATS)},
        "is_2d": shape[0] == 1,
        "num_cases": 10,
        "seed": 0,
    }
    plans = plan_experiment(fingerprint, dataset)
    for name, fields in (configurations or {}).items():
        plans["configurations"][name].update(fields)
    return Plans.from_dict(plans)


def _blobs(shape: Sequence[int], spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """An image with a zero frame (so that cropping crops) and a label of two nested
    ellipsoids, both several voxels across at the given spacing."""
    grid = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)],
        indexing="ij",
    )
    extent = [n * s for n, s in zip(shape, spacing, strict=True)]
    radius = np.sqrt(sum((g / (0.3 * e)) ** 2 for g, e in zip(grid, extent, strict=True)))
    rng = np.random.default_rng(0)
    image = np.zeros(shape, dtype=np.int16)
    body = tuple(slice(1, n - 1) if n > 2 else slice(None) for n in shape)
    image[body] = rng.integers(50, 150, size=image[body].shape)
    label = np.zeros(shape, dtype=np.uint8)
    label[radius < 1.0] = 1
    label[radius < 0.55] = 2
    return image, label


def _write(path: Path, array: np.ndarray, spacing, origin, direction) -> Path:
    write_image(path, array, tuple(spacing), origin, direction)
    return path


def _one_hot_logits(seg: np.ndarray, channels: int) -> torch.Tensor:
    """The preprocessed label map (-1 outside the nonzero region is background) as logits."""
    labels = torch.from_numpy(np.maximum(seg[0], 0).astype(np.int64))
    return torch.nn.functional.one_hot(labels, channels).movedim(-1, 0).float()


def _changed_off_boundary(predicted: np.ndarray, reference: np.ndarray) -> int:
    """Voxels whose label changed although no other label lies within one voxel."""
    on_boundary = ndimage.maximum_filter(reference, 3) != ndimage.minimum_filter(reference, 3)
    return int(np.sum((predicted != reference) & ~on_boundary))


def _header(path: Path) -> tuple:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return (reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def _round_trip(
    tmp_path: Path,
    image: np.ndarray,
    label: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    plans: Plans,
    configuration: str,
    dataset: DatasetJson,
    ending: str = ".nii.gz",
) -> dict[str, Any]:
    image_file = _write(tmp_path / f"case_0000{ending}", image, spacing, origin, direction)
    label_file = _write(tmp_path / f"label{ending}", label, spacing, origin, direction)
    _, seg, props = preprocess_case([image_file], label_file, plans, configuration, dataset, 0)
    logits = _one_hot_logits(seg, dataset.num_segmentation_heads)
    out = tmp_path / "out" / f"case{ending}"
    written = export_prediction(logits, props, plans, configuration, dataset, out)
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(written["segmentation"])))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
    return {
        "props": props,
        "seg": seg,
        "written": written,
        "agreement": float(np.mean(predicted == reference)),
        "changed_off_boundary": _changed_off_boundary(predicted, reference),
        "header": _header(written["segmentation"]),
        "input_header": _header(image_file),
        "predicted": predicted,
        "reference": reference,
    }


ORIGIN_3D = (12.5, -40.25, 7.0)
# A rotation about z by 30 degrees and a flipped x axis: nothing here is an identity.
_C, _S = np.cos(np.pi / 6), np.sin(np.pi / 6)
DIRECTION_3D = (-_C, -_S, 0.0, -_S, _C, 0.0, 0.0, 0.0, 1.0)


def test_round_trip_anisotropic(tmp_path):
    spacing = (3.0, 0.7, 0.75)  # (z, y, x): thick slices, resampled apart along z
    image, label = _blobs((12, 44, 40), spacing)
    dataset = _dataset()
    plans = _plans(dataset, spacing, (10, 42, 38), {"3d_fullres": {"spacing": [2.0, 0.9, 0.8]}})
    result = _round_trip(
        tmp_path, image, label, spacing, ORIGIN_3D, DIRECTION_3D, plans, "3d_fullres", dataset
    )
    props = result["props"]
    assert props["separate_z_axis"] == 0
    assert props["shape_after_resampling"] != props["shape_after_cropping"]
    assert props["bbox_used_for_cropping"] == [[1, 11], [1, 43], [1, 39]]
    assert result["header"] == result["input_header"]
    assert result["agreement"] >= MIN_AGREEMENT
    assert result["changed_off_boundary"] == 0
    # Both classes survive, and the frame outside the crop box is background.
    assert set(np.unique(result["predicted"])) == {0, 1, 2}
    assert result["predicted"].dtype == np.uint8


def test_round_trip_transposed(tmp_path):
    spacing = (0.8, 0.9, 3.2)  # the thick axis is x: planning puts it first
    image, label = _blobs((40, 36, 12), spacing)
    dataset = _dataset()
    plans = _plans(dataset, spacing, (38, 34, 10))
    assert plans.transpose_forward == (2, 0, 1)
    conf = plans.configuration("3d_fullres")
    plans = _plans(dataset, spacing, (38, 34, 10), {"3d_fullres": {"spacing": [2.4, 1.0, 0.7]}})
    assert conf.spacing != plans.configuration("3d_fullres").spacing
    result = _round_trip(
        tmp_path, image, label, spacing, ORIGIN_3D, DIRECTION_3D, plans, "3d_fullres", dataset
    )
    props = result["props"]
    assert props["transpose_forward"] == [2, 0, 1]
    assert props["shape_after_cropping"] == [10, 38, 34]  # transposed order
    assert result["predicted"].shape == (40, 36, 12)
    assert result["header"] == result["input_header"]
    assert result["agreement"] >= MIN_AGREEMENT
    assert result["changed_off_boundary"] == 0


def test_round_trip_2d_configuration_on_a_volume(tmp_path):
    spacing = (3.0, 0.7, 0.75)
    image, label = _blobs((8, 44, 40), spacing)
    dataset = _dataset()
    plans = _plans(dataset, spacing, (6, 42, 38), {"2d": {"spacing": [0.9, 0.6]}})
    result = _round_trip(
        tmp_path, image, label, spacing, ORIGIN_3D, DIRECTION_3D, plans, "2d", dataset
    )
    props = result["props"]
    assert props["target_spacing"] == pytest.approx([3.0, 0.9, 0.6])
    assert result["header"] == result["input_header"]
    assert result["agreement"] >= MIN_AGREEMENT
    assert result["changed_off_boundary"] == 0


def test_round_trip_2d_image(tmp_path):
    spacing = (0.5, 0.6)  # (y, x) of a 2D NIfTI image
    image, label = _blobs((100, 90), spacing)
    origin = (3.0, -2.0)
    direction = (0.0, 1.0, 1.0, 0.0)
    dataset = _dataset()
    plans = _plans(dataset, (999.0, *spacing), (1, 98, 88), {"2d": {"spacing": [0.8, 0.7]}})
    result = _round_trip(tmp_path, image, label, spacing, origin, direction, plans, "2d", dataset)
    props = result["props"]
    assert props["is_2d"]
    assert props["shape_after_resampling"] != props["shape_after_cropping"]
    header = result["header"]
    assert len(header[0]) == 2  # a 2D file again
    assert header == result["input_header"]
    assert result["agreement"] >= MIN_AGREEMENT
    assert result["changed_off_boundary"] == 0


def test_round_trip_png(tmp_path):
    image, label = _blobs((40, 36), (1.0, 1.0))
    dataset = _dataset()
    plans = _plans(dataset, (999.0, 1.0, 1.0), (1, 38, 34))
    result = _round_trip(
        tmp_path,
        image.astype(np.uint8),
        label,
        (1.0, 1.0),
        None,
        None,
        plans,
        "2d",
        dataset,
        ending=".png",
    )
    assert result["header"] == result["input_header"]
    assert result["agreement"] == 1.0  # nothing is resampled


def test_regions_are_thresholded_in_regions_class_order(tmp_path):
    spacing = (1.0, 1.0, 1.0)
    image, label = _blobs((20, 34, 30), spacing)
    dataset = _dataset(whole=[1, 2], core=2)
    plans = _plans(dataset, spacing, (18, 32, 28), {"3d_fullres": {"spacing": [1.3, 1.2, 0.9]}})
    image_file = _write(tmp_path / "c_0000.nii.gz", image, spacing, ORIGIN_3D, DIRECTION_3D)
    label_file = _write(tmp_path / "c.nii.gz", label, spacing, ORIGIN_3D, DIRECTION_3D)
    _, seg, props = preprocess_case([image_file], label_file, plans, "3d_fullres", dataset, 0)
    seg = torch.from_numpy(seg[0].astype(np.int64))
    # Region logits: +4 inside the region, -4 outside.
    logits = torch.stack([(seg >= 1).float(), (seg == 2).float()]) * 8 - 4
    segmentation, probabilities = logits_to_segmentation(
        logits, props, plans, "3d_fullres", dataset, return_probabilities=True
    )
    assert np.mean(segmentation == label) >= MIN_AGREEMENT
    assert _changed_off_boundary(segmentation, label) == 0
    assert probabilities.shape == (2, *label.shape)
    # Outside the crop box no region is on.
    np.testing.assert_array_equal(probabilities[:, 0], 0.0)
    assert set(np.unique(segmentation)) == {0, 1, 2}


def test_region_segmentation_from_probabilities_by_hand():
    dataset = _dataset(whole=[1, 2], core=2)
    probabilities = np.array([[0.2, 0.6, 0.9, 0.4], [0.1, 0.4, 0.7, 0.8]])
    # Later regions overwrite earlier ones: voxel 3 has core without whole.
    np.testing.assert_array_equal(
        probabilities_to_segmentation(probabilities, dataset), [0, 1, 2, 2]
    )


def test_probabilities_are_saved_in_the_original_geometry(tmp_path):
    spacing = (0.8, 0.9, 3.2)
    image, label = _blobs((20, 18, 8), spacing)
    dataset = _dataset()
    plans = _plans(dataset, spacing, (18, 16, 6), {"3d_fullres": {"spacing": [2.4, 1.0, 0.7]}})
    image_file = _write(tmp_path / "c_0000.nii.gz", image, spacing, ORIGIN_3D, DIRECTION_3D)
    label_file = _write(tmp_path / "c.nii.gz", label, spacing, ORIGIN_3D, DIRECTION_3D)
    _, seg, props = preprocess_case([image_file], label_file, plans, "3d_fullres", dataset, 0)
    logits = _one_hot_logits(seg, 3) * 6
    out = tmp_path / "pred" / "c.nii.gz"
    written = export_prediction(
        logits, props, plans, "3d_fullres", dataset, out, save_probabilities=True
    )
    assert written["probabilities"] == probabilities_path(out) == tmp_path / "pred" / "c.npz"
    probabilities, stored_props = load_probabilities(written["probabilities"])
    assert stored_props == props
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (3, 20, 18, 8)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-6)
    # The frame outside the crop box (x = 0 here, in the original axis order) is background.
    np.testing.assert_array_equal(probabilities[0, :, :, 0], 1.0)
    np.testing.assert_array_equal(probabilities[1:, :, :, 0], 0.0)
    # The written segmentation is the argmax of the saved probabilities.
    written_seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    np.testing.assert_array_equal(written_seg, probabilities.argmax(axis=0))
    # No temporary files are left behind.
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["c.nii.gz", "c.npz"]


def test_uncrop_and_untranspose_by_hand():
    props = {
        "bbox_used_for_cropping": [[1, 3], [0, 2], [2, 3]],
        "shape_before_cropping": [4, 2, 3],
        "transpose_forward": [2, 0, 1],
    }
    cropped = np.arange(1, 5).reshape(2, 2, 1)
    full = uncrop_and_untranspose(cropped, props)
    # Transposed shape (4, 2, 3) is (x, z, y): back to (z, y, x) = (2, 3, 4).
    assert full.shape == (2, 3, 4)
    expected = np.zeros((4, 2, 3), dtype=int)
    expected[1:3, 0:2, 2:3] = cropped
    np.testing.assert_array_equal(full, expected.transpose(1, 2, 0))
    channels = uncrop_and_untranspose(cropped[None].astype(float), props, fill=[7.0])
    assert channels.shape == (1, 2, 3, 4)
    assert channels[0, 0, 0, 0] == 7.0


def test_logits_of_the_wrong_shape_are_refused(tmp_path):
    spacing = (1.0, 1.0, 1.0)
    image, _ = _blobs((10, 12, 14), spacing)
    dataset = _dataset()
    plans = _plans(dataset, spacing, (8, 10, 12))
    image_file = _write(tmp_path / "c_0000.nii.gz", image, spacing, ORIGIN_3D, DIRECTION_3D)
    _, _, props = preprocess_case([image_file], None, plans, "3d_fullres", dataset, 0)
    with pytest.raises(ValueError, match="do not fit the preprocessed case"):
        logits_to_segmentation(torch.zeros(3, 5, 5, 5), props, plans, "3d_fullres", dataset)
