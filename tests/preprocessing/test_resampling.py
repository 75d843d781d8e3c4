"""Resampling: shapes, the separate-z decision, values on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.preprocessing.resampling import (
    ANISOTROPY_THRESHOLD,
    compute_new_shape,
    is_anisotropic,
    out_of_plane_axis,
    resample_data,
    resample_seg,
    separate_z_axis,
)


def test_new_shape_covers_the_same_extent():
    assert compute_new_shape((10, 20, 30), (3.0, 1.0, 1.0), (1.5, 0.5, 2.0)) == (20, 40, 15)
    # 7 * 1.5 / 1 = 10.5 rounds to even, as Python's round (and the planner) do.
    assert compute_new_shape((7,), (1.5,), (1.0,)) == (10,)
    assert compute_new_shape((9,), (1.5,), (1.0,)) == (14,)


def test_new_shape_rejects_mismatched_axes():
    with pytest.raises(ValueError, match="same number of axes"):
        compute_new_shape((10, 20), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))


def test_anisotropy_threshold_is_three():
    assert ANISOTROPY_THRESHOLD == 3
    assert not is_anisotropic((3.0, 1.0, 1.0))
    assert is_anisotropic((3.01, 1.0, 1.0))


@pytest.mark.parametrize(
    ("spacing", "axis"),
    [((5.0, 1.0, 1.0), 0), ((1.0, 1.0, 4.0), 2), ((0.25, 1.25, 1.25), None), ((1, 1, 1), None)],
)
def test_out_of_plane_axis_is_the_single_coarsest(spacing, axis):
    assert out_of_plane_axis(spacing) == axis


@pytest.mark.parametrize(
    ("spacing", "new_spacing", "force", "expected"),
    [
        ((3.3, 1.0, 1.0), (3.0, 0.8, 0.8), None, 0),  # anisotropic input
        ((1.0, 1.0, 1.0), (1.0, 4.0, 1.0), None, 1),  # anisotropic target
        ((2.0, 1.0, 1.0), (1.0, 1.0, 1.0), None, None),  # neither
        ((999.0, 1.0, 1.0), (999.0, 0.7, 0.7), None, 0),  # a 2D image
        ((0.25, 1.25, 1.25), (0.5, 1.0, 1.0), None, None),  # two coarse axes: no single z
        ((2.0, 1.0, 1.0), (1.0, 1.0, 1.0), True, 0),  # forced on: coarsest input axis
        ((5.0, 1.0, 1.0), (1.0, 1.0, 1.0), False, None),  # forced off
    ],
)
def test_separate_z_decision(spacing, new_spacing, force, expected):
    assert separate_z_axis(spacing, new_spacing, force) == expected


@pytest.mark.parametrize("axis", [None, 0, 2])
@pytest.mark.parametrize("order", [0, 1, 3])
def test_a_constant_stays_constant(axis, order):
    data = np.full((2, 6, 7, 8), 3.25, dtype=np.float32)
    data[1] = -1.5
    out = resample_data(data, (9, 5, 13), axis=axis, order=order)
    assert out.shape == (2, 9, 5, 13)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], 3.25, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[1], -1.5, rtol=0, atol=1e-6)


def test_same_shape_returns_the_input_untouched():
    data = np.random.default_rng(0).normal(size=(1, 4, 5, 6)).astype(np.float32)
    assert resample_data(data, (4, 5, 6)) is data
    seg = np.zeros((1, 4, 5, 6), dtype=np.int8)
    assert resample_seg(seg, (4, 5, 6)) is seg


def test_cubic_spline_stays_within_the_input_range():
    # A step overshoots with third-order splines unless clipped to the input's range.
    data = np.zeros((1, 4, 4, 12), dtype=np.float32)
    data[..., 6:] = 1.0
    out = resample_data(data, (4, 4, 29), order=3)
    assert out.min() >= 0.0
    assert out.max() <= 1.0
    assert 0.0 < out[0, 0, 0, 14] < 1.0  # the edge itself is interpolated


def test_linear_ramp_is_reproduced_inside_the_image():
    x = np.arange(48, dtype=np.float32)
    data = np.broadcast_to(x, (1, 3, 3, 48)).copy()
    out = resample_data(data, (3, 3, 96), order=3)
    # Output voxel i samples input position (i + 0.5) / 2 - 0.5; away from the edges (whose
    # edge-value padding bends the spline) a cubic spline reproduces a ramp.
    expected = (np.arange(96) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(out[0, 1, 1, 30:-30], expected[30:-30], atol=1e-3)


def test_separate_z_takes_the_nearest_slice_out_of_plane():
    # Every slice holds its own constant; with nearest neighbour along z no value is blended.
    data = np.stack([np.full((5, 6), float(k)) for k in range(4)])[None].astype(np.float32)
    out = resample_data(data, (10, 9, 8), axis=0, order=3, order_z=0)
    assert out.shape == (1, 10, 9, 8)
    values_per_slice = [np.unique(out[0, k]) for k in range(10)]
    assert all(v.size == 1 for v in values_per_slice)
    # Output slice k samples input position (k + 0.5) * 0.4 - 0.5, rounded half up.
    expected = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert [float(v[0]) for v in values_per_slice] == expected


def test_separate_z_with_linear_order_z_blends_slices():
    data = np.stack([np.full((3, 3), float(k)) for k in range(3)])[None].astype(np.float32)
    out = resample_data(data, (6, 3, 3), axis=0, order=3, order_z=1)
    np.testing.assert_allclose(out[0, :, 1, 1], [0, 0.25, 0.75, 1.25, 1.75, 2], atol=1e-6)


def test_2d_images_are_resampled_in_plane_only():
    data = np.random.default_rng(1).normal(size=(1, 1, 20, 20)).astype(np.float32)
    axis = separate_z_axis((999.0, 1.0, 1.0), (999.0, 0.8, 0.8))
    out = resample_data(data, compute_new_shape((1, 20, 20), (999, 1, 1), (999, 0.8, 0.8)), axis)
    assert out.shape == (1, 1, 25, 25)


def test_seg_values_stay_labels_of_the_input():
    rng = np.random.default_rng(2)
    seg = rng.choice(np.array([-1, 0, 1, 3], dtype=np.int8), size=(1, 8, 9, 10))
    for axis in (None, 0):
        out = resample_seg(seg, (11, 7, 13), axis=axis)
        assert out.dtype == np.int8
        assert set(np.unique(out)) <= {-1, 0, 1, 3}


def test_a_one_voxel_thin_plate_survives_seg_resampling():
    seg = np.zeros((1, 20, 20, 20), dtype=np.int16)
    seg[0, 4:16, 4:16, 9] = 1  # a plate one voxel thin along x
    # Upsampling, and downsampling as long as an output voxel centre lies within half an input
    # voxel of the plate (here 8.875: the plate's indicator scores 0.875 there).
    for new_shape in ((25, 25, 25), (30, 30, 30), (16, 16, 16)):
        out = resample_seg(seg, new_shape, order=1)
        plate = out[0] == 1
        # Still there, and still covering its whole extent in z and y.
        assert plate.any(axis=2)[6:-6, 6:-6].all(), new_shape


def test_per_class_vote_never_invents_a_label():
    # Interpolating label values would put a 1 between the 0 and 2 regions.
    seg = np.zeros((1, 1, 6, 6), dtype=np.int8)
    seg[0, 0, :, 3:] = 2
    out = resample_seg(seg, (1, 9, 9), order=1)
    assert set(np.unique(out)) == {0, 2}


def test_ties_go_to_the_nearest_neighbour():
    # [0, 1] -> 3 voxels: the middle output voxel sits exactly between both labels. The label
    # nearest to it (rounding half up) decides, whichever value it has.
    up = resample_seg(np.array([0, 1], dtype=np.int8).reshape(1, 1, 1, 2), (1, 1, 3))
    down = resample_seg(np.array([1, 0], dtype=np.int8).reshape(1, 1, 1, 2), (1, 1, 3))
    assert up.ravel().tolist() == [0, 1, 1]
    assert down.ravel().tolist() == [1, 0, 0]


def test_seg_separate_z_copies_slices():
    seg = np.stack([np.full((4, 4), k % 3, dtype=np.int8) for k in range(4)])[None]
    out = resample_seg(seg, (8, 6, 6), axis=0, order=1, order_z=0)
    assert [int(out[0, k, 0, 0]) for k in range(8)] == [0, 0, 1, 1, 2, 2, 0, 0]
    assert all(np.unique(out[0, k]).size == 1 for k in range(8))


def test_seg_separate_z_with_linear_order_z_votes_per_class():
    seg = np.zeros((1, 2, 3, 3), dtype=np.int8)
    seg[0, 1] = 2
    out = resample_seg(seg, (4, 3, 3), axis=0, order=1, order_z=1)
    assert out[0, :, 1, 1].tolist() == [0, 0, 2, 2]


def test_empty_and_single_label_segs():
    seg = np.full((1, 3, 3, 3), 2, dtype=np.int8)
    np.testing.assert_array_equal(resample_seg(seg, (5, 5, 5)), 2)
    empty = np.zeros((1, 0, 3, 3), dtype=np.int8)
    assert resample_seg(empty, (0, 5, 5), order=1).shape == (1, 0, 5, 5)
