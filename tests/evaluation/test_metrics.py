"""Metrics against hand-computed values and a brute-force surface distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from segflow.evaluation import METRICS, case_metrics, class_metrics, surface_distances


def test_overlap_counts_and_ratios_by_hand():
    reference = np.zeros((4, 5), bool)
    prediction = np.zeros((4, 5), bool)
    reference[0, :4] = True  # 4 voxels
    prediction[0, 2:] = True  # 3 voxels, 2 of them in the reference
    m = class_metrics(reference, prediction, (1.0, 2.0))
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 2)
    assert m["dice"] == pytest.approx(4 / 7)
    assert m["iou"] == pytest.approx(2 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["reference_volume"] == 8.0 and m["predicted_volume"] == 6.0  # 2 mm² pixels
    assert list(m) == list(METRICS)


def _planes(shape, spacing, *zs):
    mask = np.zeros(shape, bool)
    for z in zs:
        mask[z] = True
    return mask


def test_surface_distances_of_parallel_planes_are_their_gap_in_mm():
    spacing = (0.5, 1.0, 1.0)
    reference = _planes((6, 3, 3), spacing, 0)
    prediction = _planes((6, 3, 3), spacing, 4)
    m = class_metrics(reference, prediction, spacing)
    assert m["hd95"] == pytest.approx(2.0) and m["assd"] == pytest.approx(2.0)
    assert m["dice"] == 0.0


def test_hd95_pools_both_directions_and_assd_averages_them():
    spacing = (0.5, 1.0, 1.0)
    reference = _planes((6, 3, 3), spacing, 0)
    prediction = _planes((6, 3, 3), spacing, 0, 4)
    pred_to_ref, ref_to_pred = surface_distances(reference, prediction, spacing)
    assert sorted(pred_to_ref) == [0.0] * 9 + [2.0] * 9
    assert list(ref_to_pred) == [0.0] * 9
    m = class_metrics(reference, prediction, spacing)
    # 27 pooled distances, 9 of them 2 mm: the 95th percentile is 2 mm.
    assert m["hd95"] == pytest.approx(2.0)
    assert m["assd"] == pytest.approx((1.0 + 0.0) / 2)


def test_identical_masks_are_perfect():
    mask = np.zeros((5, 6, 7), bool)
    mask[1:4, 2:5, 1:6] = True
    m = class_metrics(mask, mask, (2.0, 1.0, 0.7))
    assert m["dice"] == m["iou"] == m["precision"] == m["recall"] == 1.0
    assert m["hd95"] == 0.0 and m["assd"] == 0.0
    assert m["reference_volume"] == pytest.approx(45 * 1.4)


def _brute_force(reference, prediction, spacing):
    def surface(mask):
        padded = np.pad(mask, 1)
        points = []
        for index in np.argwhere(mask):
            neighbours = []
            for axis in range(mask.ndim):
                for step in (-1, 1):
                    q = index + 1
                    q[axis] += step
                    neighbours.append(padded[tuple(q)])
            if not all(neighbours):
                points.append(index)
        return np.array(points, float) * np.asarray(spacing)

    a, b = surface(prediction), surface(reference)
    d = cdist(a, b)
    return d.min(axis=1), d.min(axis=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_match_a_brute_force_computation(seed):
    rng = np.random.default_rng(seed)
    spacing = (2.5, 0.8, 1.1)
    reference = np.zeros((10, 12, 11), bool)
    reference[2:8, 3:9, 2:9] = True
    prediction = reference.copy()
    prediction[rng.random(reference.shape) < 0.15] ^= True  # flipped voxels, some far away
    pred_to_ref, ref_to_pred = surface_distances(reference, prediction, spacing)
    expected_pred, expected_ref = _brute_force(reference, prediction, spacing)
    assert np.allclose(np.sort(pred_to_ref), np.sort(expected_pred))
    assert np.allclose(np.sort(ref_to_pred), np.sort(expected_ref))
    m = class_metrics(reference, prediction, spacing)
    pooled = np.concatenate([expected_pred, expected_ref])
    assert m["hd95"] == pytest.approx(np.percentile(pooled, 95))
    assert m["assd"] == pytest.approx((expected_pred.mean() + expected_ref.mean()) / 2)


def test_masks_touching_the_border_have_their_border_voxels_as_surface():
    reference = np.ones((3, 3), bool)  # every voxel touches the border
    prediction = np.zeros((3, 3), bool)
    prediction[0, 0] = True
    pred_to_ref, ref_to_pred = surface_distances(reference, prediction, (1.0, 1.0))
    assert list(pred_to_ref) == [0.0]
    # The centre voxel is inside, not surface: 8 surface voxels of the reference.
    assert len(ref_to_pred) == 8
    assert max(ref_to_pred) == pytest.approx(math.hypot(2, 2))


def test_empty_reference_and_prediction_count_as_perfect():
    empty = np.zeros((4, 4, 4), bool)
    m = class_metrics(empty, empty, (1.0, 1.0, 1.0))
    assert m["dice"] == m["iou"] == m["precision"] == m["recall"] == 1.0
    assert m["hd95"] == 0.0 and m["assd"] == 0.0
    assert m["reference_volume"] == m["predicted_volume"] == 0.0


def test_one_empty_side_gives_zero_overlap_and_undefined_distances():
    empty = np.zeros((4, 4, 4), bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    missed = class_metrics(full, empty, (1.0, 1.0, 1.0))  # nothing predicted
    assert missed["dice"] == 0.0 and missed["iou"] == 0.0 and missed["recall"] == 0.0
    assert math.isnan(missed["precision"])
    assert math.isnan(missed["hd95"]) and math.isnan(missed["assd"])
    hallucinated = class_metrics(empty, full, (1.0, 1.0, 1.0))  # nothing to find
    assert hallucinated["dice"] == 0.0 and hallucinated["precision"] == 0.0
    assert math.isnan(hallucinated["recall"])
    assert hallucinated["predicted_volume"] == 8.0


def test_case_metrics_per_label_and_per_region():
    reference = np.array([[0, 1, 1, 2, 2, 0]])
    prediction = np.array([[0, 1, 2, 2, 2, 1]])
    m = case_metrics(reference, prediction, (1.0, 1.0), {"a": 1, "b": 2, "ab": (1, 2)})
    assert m["a"]["dice"] == pytest.approx(2 * 1 / (2 + 2))  # tp 1, fp 1, fn 1
    assert m["b"]["dice"] == pytest.approx(2 * 2 / (4 + 1))  # tp 2, fp 1, fn 0
    assert m["ab"]["dice"] == pytest.approx(2 * 4 / (8 + 1))  # the region 1|2: tp 4, fp 1


def test_shape_and_spacing_mismatches_are_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        class_metrics(np.zeros((2, 3), bool), np.zeros((3, 2), bool), (1.0, 1.0))
    with pytest.raises(ValueError, match="does not fit a 2D image"):
        class_metrics(np.zeros((2, 3), bool), np.zeros((2, 3), bool), (1.0, 1.0, 1.0))
