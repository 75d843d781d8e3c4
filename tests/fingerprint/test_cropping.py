"""Cropping to the nonzero region: masks, bounding boxes and crops."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.fingerprint.cropping import (
    OUTSIDE_NONZERO_LABEL,
    bounding_box,
    bounding_box_shape,
    bounding_box_to_slices,
    crop_to_bounding_box,
    crop_to_nonzero,
    label_outside_nonzero,
    nonzero_bounding_box,
    nonzero_mask,
)


def test_bounding_box_is_half_open_per_axis():
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[1, 2, 3] = True
    mask[3, 4, 3] = True
    assert bounding_box(mask) == [[1, 4], [2, 5], [3, 4]]
    assert bounding_box_shape(bounding_box(mask)) == [3, 3, 1]
    assert bounding_box_to_slices([[1, 4], [2, 5]]) == (slice(1, 4), slice(2, 5))


def test_bounding_box_works_for_any_number_of_axes():
    assert bounding_box(np.array([0, 0, 1, 1, 0], dtype=bool)) == [[2, 4]]
    plane = np.zeros((4, 4), dtype=bool)
    plane[3, 0] = True
    assert bounding_box(plane) == [[3, 4], [0, 1]]


def test_an_empty_mask_keeps_the_whole_image():
    assert bounding_box(np.zeros((3, 4, 5), dtype=bool)) == [[0, 3], [0, 4], [0, 5]]
    assert nonzero_bounding_box(np.zeros((2, 3, 4, 5))) == [[0, 3], [0, 4], [0, 5]]


def test_holes_inside_the_nonzero_region_are_filled():
    data = np.zeros((1, 7, 7, 7), dtype=np.float32)
    data[0, 1:6, 1:6, 1:6] = 3.0
    data[0, 2:5, 2:5, 2:5] = 0.0  # a closed cavity of 27 zeros
    filled = nonzero_mask(data)
    assert filled[1:6, 1:6, 1:6].all()
    assert filled.sum() == 125
    unfilled = nonzero_mask(data, fill_holes=False)
    assert unfilled.sum() == 125 - 27
    # A hole never changes the box, so the box is computed without filling.
    assert nonzero_bounding_box(data) == bounding_box(filled) == [[1, 6], [1, 6], [1, 6]]


def test_an_open_dent_is_not_a_hole():
    data = np.zeros((1, 5, 5, 5))
    data[0, 1:4, 1:4, 1:4] = 1
    data[0, 2, 2, 2:] = 0  # tunnel from the centre to the border
    assert not nonzero_mask(data)[2, 2, 2]


def test_a_single_slice_gets_no_holes_filled_like_nnunet():
    # A 2D image is stored as one slice; in 3D every voxel of it touches the border.
    data = np.ones((1, 1, 5, 5))
    data[0, 0, 2, 2] = 0
    assert not nonzero_mask(data)[0, 2, 2]


def test_the_mask_is_the_union_of_channels_and_counts_negative_values():
    data = np.zeros((2, 4, 5, 6))
    data[0, 0, 0, 0] = 1.0
    data[1, 2, 3, 4] = -7.0
    mask = nonzero_mask(data)
    assert mask[0, 0, 0] and mask[2, 3, 4] and mask.sum() == 2
    assert nonzero_bounding_box(data) == [[0, 3], [0, 4], [0, 5]]
    assert nonzero_bounding_box(data[1:]) == [[2, 3], [3, 4], [4, 5]]


def test_crop_to_bounding_box_crops_the_trailing_axes():
    image = np.arange(2 * 4 * 5 * 6).reshape(2, 4, 5, 6)
    bbox = [[1, 3], [0, 2], [4, 6]]
    cropped = crop_to_bounding_box(image, bbox)
    assert cropped.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(cropped, image[:, 1:3, 0:2, 4:6])
    np.testing.assert_array_equal(crop_to_bounding_box(image[0], bbox), image[0, 1:3, 0:2, 4:6])


@pytest.mark.parametrize("bbox", [[[0, 5], [0, 5], [0, 6]], [[2, 1], [0, 1], [0, 1]]])
def test_crop_to_bounding_box_rejects_boxes_that_do_not_fit(bbox):
    with pytest.raises(ValueError, match="does not fit"):
        crop_to_bounding_box(np.zeros((4, 5, 6)), bbox)


def test_crop_to_bounding_box_rejects_too_many_axes():
    with pytest.raises(ValueError, match="more axes"):
        crop_to_bounding_box(np.zeros((4, 5)), [[0, 1]] * 3)


def test_crop_to_nonzero_crops_image_segmentation_and_mask_alike():
    data = np.zeros((1, 5, 6, 7), dtype=np.float32)
    data[0, 1:4, 2:5, 3:6] = 1.0
    data[0, 2, 3, 4] = 0.0  # a hole: inside the filled mask
    seg = np.zeros((1, 5, 6, 7), dtype=np.uint8)
    seg[0, 1, 2, 3] = 2
    seg[0, 0, 0, 0] = 1  # outside the box, dropped
    crop = crop_to_nonzero(data, seg)
    assert crop.bbox == [[1, 4], [2, 5], [3, 6]]
    assert crop.data.shape == (1, 3, 3, 3) and crop.seg.shape == (1, 3, 3, 3)
    assert crop.mask.shape == (3, 3, 3) and crop.mask.all()
    assert crop.seg[0, 0, 0, 0] == 2 and crop.seg.sum() == 2
    assert crop_to_nonzero(data).seg is None


def test_crop_to_nonzero_rejects_a_segmentation_of_another_shape():
    with pytest.raises(ValueError, match="does not match"):
        crop_to_nonzero(np.ones((1, 4, 4, 4)), np.zeros((1, 4, 4, 5)))


def test_label_outside_nonzero_marks_background_outside_the_mask_only():
    seg = np.array([[[0, 1, 0, 0]]], dtype=np.uint8)
    mask = np.array([[True, False, False, True]])
    out = label_outside_nonzero(seg, mask)
    assert out.dtype == np.int16  # uint8 widened so that -1 fits
    np.testing.assert_array_equal(out, [[[0, 1, OUTSIDE_NONZERO_LABEL, 0]]])
    assert seg[0, 0, 2] == 0  # the input is untouched
