"""The size of an image once resampled to a target spacing, and its bounds."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.io.image import read_image, read_image_header, write_image
from segflow.io.resampled_size import MAX_RESAMPLED_VOXELS, header_grid, resampled_size_problem


def test_an_image_within_the_bounds_passes():
    assert resampled_size_problem((8, 12, 10), (2.0, 1.0, 1.0), (2.0, 1.0, 1.0), 1, "x") is None
    # 1024**3 voxels is the bound itself.
    assert resampled_size_problem((1024,) * 3, (1.0,) * 3, (1.0,) * 3, 1, "x") is None
    assert MAX_RESAMPLED_VOXELS == 1024**3


def test_one_voxel_more_than_the_bound_is_refused_with_its_memory():
    problem = resampled_size_problem((1024, 1024, 1025), (1.0,) * 3, (1.0,) * 3, 2, "x")
    assert problem == (
        "spacing (z, y, x) (1, 1, 1) mm resampled to the target spacing (1, 1, 1) mm (x) gives "
        "shape (1024, 1024, 1025): 1.07e+09 voxels, 8.01 GiB for its 2 channel(s) in float32, "
        "beyond the bound of 1,073,741,824 voxels; is the spacing in its header in mm?"
    )


def test_half_a_voxel_rounds_to_none_and_overflow_is_caught():
    # 0.5 rounds to 0 (as the resampling rounds): an empty axis.
    assert "less than one voxel" in resampled_size_problem(
        (1, 4, 4), (1.0,) * 3, (2.0, 1, 1), 1, "x"
    )
    huge = resampled_size_problem((4, 4, 4), (1e300,) * 3, (1e-300, 1.0, 1.0), 1, "x")
    assert "gives shape (inf, 4e+300, 4e+300): inf voxels" in huge


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 5, 7)])
def test_the_header_grid_is_what_read_image_gives(tmp_path, shape):
    path = tmp_path / "a.nii.gz"
    array = np.zeros(shape, np.float32)
    spacing = (3.0, 0.5, 0.25)
    write_image(path, array if shape[0] > 1 else array[0], spacing if shape[0] > 1 else spacing[1:])
    image = read_image(path)
    assert header_grid(read_image_header(path), path) == (image.shape, image.spacing)
