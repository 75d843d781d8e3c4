"""Target spacing, the anisotropy rule and the transposition."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.planning.spacing import (
    fullres_target_spacing,
    median_resampled_shape,
    resampled_shape,
    transpose_axes,
)


def test_isotropic_data_takes_the_median_spacing():
    spacings = [[1.0, 0.8, 0.8], [1.2, 0.9, 0.9], [1.1, 0.7, 0.7]]
    shapes = [[100, 120, 120]] * 3
    assert fullres_target_spacing(spacings, shapes).tolist() == [1.1, 0.8, 0.8]


def test_thick_few_slices_take_the_10th_percentile_of_the_slice_spacing():
    spacings = [[5.0, 0.7, 0.7]] * 9 + [[2.0, 0.7, 0.7]]
    shapes = [[20, 320, 320]] * 10
    target = fullres_target_spacing(spacings, shapes)
    # 10th percentile of nine 5.0 and one 2.0 (linear interpolation): 2.0 + 0.9 * 3.0.
    assert target.tolist() == pytest.approx([4.7, 0.7, 0.7])


def test_thick_slices_with_many_voxels_keep_the_median():
    # 5 mm slices but 200 of them: the slice axis is not short, so no special treatment.
    spacings = [[5.0, 0.7, 0.7]] * 9 + [[2.0, 0.7, 0.7]]
    shapes = [[200, 320, 320]] * 10
    assert fullres_target_spacing(spacings, shapes).tolist() == [5.0, 0.7, 0.7]


def test_the_anisotropic_axis_never_gets_finer_than_the_others():
    spacings = [[5.0, 1.0, 1.0]] * 8 + [[0.5, 1.0, 1.0]] * 2
    shapes = [[20, 300, 300]] * 10
    target = fullres_target_spacing(spacings, shapes)
    assert target[0] == pytest.approx(1.0 + 1e-5)
    assert transpose_axes(target)[0] == [0, 1, 2]


def test_2d_images_keep_their_999_spacing_and_axis_order():
    spacings = [[999.0, 0.5, 0.5]] * 4
    shapes = [[1, 512, 512]] * 4
    target = fullres_target_spacing(spacings, shapes)
    assert target.tolist() == [999.0, 0.5, 0.5]
    assert transpose_axes(target) == ([0, 1, 2], [0, 1, 2])


@pytest.mark.parametrize(
    ("spacing", "forward", "backward"),
    [
        ([3.0, 1.0, 1.0], [0, 1, 2], [0, 1, 2]),
        ([1.0, 3.0, 1.0], [1, 0, 2], [1, 0, 2]),
        ([1.0, 1.0, 3.0], [2, 0, 1], [1, 2, 0]),
        ([1.0, 1.0, 1.0], [0, 1, 2], [0, 1, 2]),
    ],
)
def test_transposition_puts_the_coarsest_axis_first(spacing, forward, backward):
    assert transpose_axes(spacing) == (forward, backward)
    assert [forward[i] for i in backward] == [0, 1, 2]


def test_resampled_shape_rounds_half_to_even():
    assert resampled_shape([10, 11, 13], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == [5, 6, 6]


def test_median_resampled_shape_can_hold_halves():
    spacings = [[1.0, 1.0, 1.0]] * 2
    shapes = [[35, 50, 34], [36, 51, 34]]
    assert median_resampled_shape(spacings, shapes, np.array([1.0, 1.0, 1.0])).tolist() == [
        35.5,
        50.5,
        34.0,
    ]
