"""The cascade's extra input: one-hot channels of the previous stage's segmentation, brought
onto the next stage's grid as preprocessing brings a label there."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.preprocessing.preprocessor import preprocess_case
from segflow.preprocessing.previous_stage import (
    load_previous_stage,
    one_hot,
    previous_stage_labels,
    save_previous_stage,
    to_next_stage_grid,
    with_previous_stage,
)

# Anisotropic along the second axis of the file: preprocessing transposes it first.
SPACING = (0.8, 3.0, 0.7)


def test_one_hot_has_a_channel_per_label_and_nothing_for_the_rest():
    seg = np.array([[0, 1, 2], [3, -1, 2]])
    encoded = one_hot(seg, (1, 2, 3))
    assert encoded.shape == (3, 2, 3) and encoded.dtype == np.float32
    assert encoded[0].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert encoded[1].tolist() == [[0, 0, 1], [0, 0, 1]]
    assert encoded[2].tolist() == [[0, 0, 0], [1, 0, 0]]
    # Background and -1 (outside the image) are 0 everywhere; every voxel at most one 1.
    assert encoded.sum(0).tolist() == [[0, 1, 1], [1, 0, 1]]


def test_labels_exclude_background_and_the_ignore_label(make_dataset):
    assert previous_stage_labels(make_dataset()) == (1, 2)
    assert previous_stage_labels(make_dataset(a=1, b=2, c=3, ignore=4)) == (1, 2, 3)


def test_regions_get_a_channel_per_value_the_segmentation_holds(make_dataset):
    from segflow.io.dataset import parse_dataset_json

    raw = {
        "name": "R",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3},
        "regions_class_order": [1, 2, 3],
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    dataset, problems = parse_dataset_json(raw)
    assert dataset is not None, problems
    assert previous_stage_labels(dataset) == (1, 2, 3)


def test_with_previous_stage_stacks_the_channels_after_the_image():
    data = np.full((2, 3, 4, 5), 7.0, dtype=np.float32)
    seg = np.zeros((3, 4, 5), dtype=np.int8)
    seg[1, 2, 3] = 2
    stacked = with_previous_stage(data, seg, (1, 2))
    assert stacked.shape == (4, 3, 4, 5)
    assert (stacked[:2] == 7).all()
    assert stacked[2].sum() == 0 and stacked[3].sum() == 1 and stacked[3, 1, 2, 3] == 1
    with pytest.raises(ValueError, match="does not fit the image"):
        with_previous_stage(data, seg[:2], (1, 2))


def _volume():
    """(24, 10, 30) with a zero frame (cropped away) and two nested structures."""
    rng = np.random.default_rng(1)
    image = np.zeros((24, 10, 30), dtype=np.float32)
    image[2:22, 1:9, 3:28] = rng.uniform(50, 150, (20, 8, 25))
    label = np.zeros(image.shape, dtype=np.uint8)
    label[6:18, 2:8, 8:22] = 1
    label[9:14, 3:6, 12:17] = 2
    return image, label


@pytest.mark.parametrize("target", [(3.0, 0.5, 0.5), (3.0, 1.6, 1.6)])
def test_a_segmentation_lands_on_the_grid_preprocessing_puts_the_label_on(
    tmp_path, write_case, make_dataset, make_plans, target
):
    # The segmentation of the input's own geometry (here: the label itself, as a perfect
    # previous stage would predict it) must equal the preprocessed label voxel for voxel,
    # on anisotropic data that is transposed, cropped and resampled up or down.
    dataset = make_dataset()
    image, label = _volume()
    images, label_path = write_case(tmp_path, "c", [image], SPACING, label)
    plans = make_plans(
        dataset, SPACING, (20, 8, 25), configurations={"3d_fullres": {"spacing": list(target)}}
    )
    _, seg, props = preprocess_case(images, label_path, plans, "3d_fullres", dataset, seed=0)
    assert props["transpose_forward"][0] == 1  # the coarse axis first
    assert props["separate_z_axis"] == 0
    on_grid = to_next_stage_grid(label, props, plans.configuration("3d_fullres"))
    assert on_grid.shape == tuple(props["shape_after_resampling"])
    expected = np.where(seg[0] < 0, 0, seg[0])
    assert np.array_equal(on_grid, expected)
    assert set(np.unique(on_grid)) == {0, 1, 2}


def test_a_segmentation_of_another_shape_is_refused(tmp_path, write_case, make_dataset, make_plans):
    dataset = make_dataset()
    image, label = _volume()
    images, _ = write_case(tmp_path, "c", [image], SPACING)
    plans = make_plans(dataset, SPACING, (20, 8, 25))
    _, _, props = preprocess_case(images, None, plans, "3d_fullres", dataset, seed=0)
    with pytest.raises(ValueError, match=r"does not fit the input image \(24, 10, 30\)"):
        to_next_stage_grid(label[:, :, :-1], props, plans.configuration("3d_fullres"))


def test_stored_segmentations_round_trip_and_are_checked(tmp_path):
    seg = np.zeros((3, 4, 5), dtype=np.uint8)
    seg[1, 1:3, 2] = 2
    path = save_previous_stage(tmp_path, "case", seg)
    assert path.name == "case.npy"
    loaded = load_previous_stage(tmp_path, "case", (3, 4, 5))
    assert loaded.dtype == np.int8 and np.array_equal(loaded, seg)
    with pytest.raises(SegflowError, match="does not fit the preprocessed case"):
        load_previous_stage(tmp_path, "case", (3, 4, 6))
    with pytest.raises(SegflowError, match="no previous-stage segmentation of case 'other'"):
        load_previous_stage(tmp_path, "other")
