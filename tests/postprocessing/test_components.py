"""largest_component_only and apply_postprocessing on hand-made label maps."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.postprocessing import apply_postprocessing, largest_component_only


def _two_blobs() -> np.ndarray:
    """A 12-voxel block of label 1 and, apart from it, a 2-voxel blob of label 1."""
    seg = np.zeros((4, 6, 6), np.uint8)
    seg[0:3, 0:2, 0:2] = 1
    seg[3, 4:6, 5] = 1
    return seg


def test_the_smaller_component_becomes_background():
    seg = _two_blobs()
    seg[3, 0, 5] = 3  # a label outside the structure stays
    result = largest_component_only(seg, [1])
    assert np.count_nonzero(result == 1) == 12
    assert result[3, 4:6, 5].tolist() == [0, 0]
    assert result[3, 0, 5] == 3
    assert np.count_nonzero(seg == 1) == 14  # the input is not changed


def test_labels_together_form_one_structure():
    seg = np.zeros((1, 3, 8), np.uint8)
    seg[0, 1, 0:3] = 1
    seg[0, 1, 3:5] = 2  # touches label 1: one component of 5 voxels
    seg[0, 1, 6:8] = 2  # apart: 2 voxels
    together = largest_component_only(seg, [1, 2])
    assert together[0, 1].tolist() == [1, 1, 1, 2, 2, 0, 0, 0]
    # Label 2 alone: two components of 2 voxels; the first in raster order is kept.
    alone = largest_component_only(seg, [2])
    assert alone[0, 1].tolist() == [1, 1, 1, 2, 2, 0, 0, 0]
    seg[0, 1, 6:8], seg[0, 0, 7] = 2, 2  # now the second one is larger (3 voxels)
    assert largest_component_only(seg, [2])[0, 1].tolist() == [1, 1, 1, 0, 0, 0, 2, 2]


def test_2d_images_stored_as_one_slice_behave_as_2d():
    plane = np.zeros((5, 5), np.int16)
    plane[0, 0:3] = 2
    plane[1, 0] = 2
    plane[3:5, 3:5] = 2
    plane[4, 0] = 2
    expected = np.zeros_like(plane)
    expected[0, 0:3] = 2
    expected[1, 0] = 2
    assert np.array_equal(largest_component_only(plane, [2]), expected)
    assert np.array_equal(largest_component_only(plane[None], [2]), expected[None])


def test_voxels_touching_only_diagonally_are_separate_components():
    plane = np.zeros((4, 4), np.uint8)
    plane[0, 0:2] = 1  # 2 voxels
    plane[1, 2] = 1  # touches (0, 1) at a corner only
    plane[2, 2:4] = 1  # with (1, 2): 3 voxels
    result = largest_component_only(plane, [1])
    assert result[0].tolist() == [0, 0, 0, 0]
    assert np.count_nonzero(result) == 3
    # In 3D, neither an edge nor a corner joins two voxels.
    volume = np.zeros((3, 3, 3), np.uint8)
    volume[0, 0, 0] = 1
    volume[1, 1, 0] = 1  # edge neighbour of (0, 0, 0)
    volume[2, 2, 1] = 1  # corner neighbour of (1, 1, 0)
    volume[2, 2, 2] = 1
    result = largest_component_only(volume, [1])
    assert np.argwhere(result).tolist() == [[2, 2, 1], [2, 2, 2]]


def test_full_connectivity_joins_edges_and_corners_as_nnunet_does():
    """nnU-Net v2's postprocessing (a model imported from it) joins voxels touching at an
    edge or a corner: the diagonal chain above is one component there."""
    plane = np.zeros((4, 4), np.uint8)
    plane[0, 0:2] = 1
    plane[1, 2] = 1
    plane[2, 2:4] = 1
    plane[3, 0] = 1  # alone: removed
    result = largest_component_only(plane, [1], connectivity="full")
    assert np.count_nonzero(result) == 5 and result[3, 0] == 0
    volume = np.zeros((3, 3, 3), np.uint8)
    volume[0, 0, 0] = 1
    volume[1, 1, 0] = 1
    volume[2, 2, 1] = 1
    volume[2, 2, 2] = 1
    volume[0, 2, 2] = 1  # alone: removed
    result = largest_component_only(volume, [1], connectivity="full")
    assert np.argwhere(result).tolist() == [[0, 0, 0], [1, 1, 0], [2, 2, 1], [2, 2, 2]]
    # A 2D image stored as one slice has no neighbours along the singleton axis.
    flat = largest_component_only(plane, [1], "full")
    assert np.array_equal(largest_component_only(plane[None], [1], "full")[0], flat)
    ruled = apply_postprocessing(volume, [{"labels": [1]}], connectivity="full")
    assert np.array_equal(ruled, result)
    with pytest.raises(ValueError, match="connectivity must be one of"):
        largest_component_only(volume, [1], connectivity="corner")


def test_an_empty_structure_gives_an_unchanged_copy():
    seg = np.zeros((2, 3, 3), np.uint8)
    seg[0, 0, 0] = 2
    result = largest_component_only(seg, [1])
    assert np.array_equal(result, seg)
    assert result is not seg
    assert not np.shares_memory(result, seg)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32])
def test_the_dtype_is_kept(dtype):
    seg = _two_blobs().astype(dtype)
    result = largest_component_only(seg, [1])
    assert result.dtype == dtype
    assert float(result.sum()) == 12.0


def test_rules_apply_in_order():
    seg = np.zeros((1, 4, 9), np.uint8)
    seg[0, 0, 0:4] = 1
    seg[0, 1, 0:2] = 2  # touches label 1: the foreground is one component of 6 voxels
    seg[0, 3, 6:9] = 2  # a second foreground component, 3 voxels of label 2
    rules = [{"labels": [1, 2]}, {"labels": [2]}]
    result = apply_postprocessing(seg, rules)
    expected = np.zeros_like(seg)
    expected[0, 0, 0:4] = 1
    expected[0, 1, 0:2] = 2
    assert np.array_equal(result, expected)
    # The other order: label 2 alone keeps its 3-voxel component, then the foreground its
    # 4-voxel one (label 1), so everything of label 2 goes.
    swapped = apply_postprocessing(seg, rules[::-1])
    assert np.count_nonzero(swapped == 2) == 0
    assert np.count_nonzero(swapped == 1) == 4
    assert np.array_equal(apply_postprocessing(seg, []), seg)
