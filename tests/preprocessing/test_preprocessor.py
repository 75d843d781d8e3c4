"""Preprocessing a case: order of the steps, properties, class locations."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.preprocessing.preprocessor import (
    ANNOTATED_KEY,
    CaseSpec,
    class_keys,
    preprocess_case,
    preprocess_cases,
    sample_class_locations,
)
from segflow.preprocessing.resampling import compute_new_shape
from segflow.preprocessing.storage import is_case_complete, open_case

SPACING = (3.0, 0.8, 0.8)
ORIGIN = (10.0, -20.0, 5.0)
DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(10, 30, 26): a body of values 50..150 inside a zero frame, with two classes."""
    rng = np.random.default_rng(seed)
    image = np.zeros((10, 30, 26), dtype=np.int16)
    image[1:9, 4:27, 3:22] = rng.integers(50, 150, size=(8, 23, 19))
    image[4, 10, 10] = 0  # a hole inside the body: filled, so not outside
    label = np.zeros(image.shape, dtype=np.uint8)
    label[3:7, 10:20, 8:16] = 1
    label[4:6, 13:16, 10:13] = 2
    return image, label


@pytest.fixture
def case(tmp_path, write_case):
    image, label = _volume()
    return write_case(tmp_path / "raw", "case_0", [image], SPACING, label, ORIGIN, DIRECTION)


def test_properties_describe_every_step(case, dataset, make_plans):
    images, label = case
    plans = make_plans(dataset, SPACING, (8, 23, 19))
    data, seg, props = preprocess_case(images, label, plans, "3d_fullres", dataset, seed=3)
    target = list(plans.configuration("3d_fullres").spacing)
    assert props["original_shape"] == [10, 30, 26]
    assert props["original_spacing"] == pytest.approx(SPACING)
    assert props["origin"] == pytest.approx(ORIGIN)
    assert props["direction"] == pytest.approx(DIRECTION)
    assert props["transpose_forward"] == [0, 1, 2]
    assert props["shape_before_cropping"] == [10, 30, 26]
    assert props["bbox_used_for_cropping"] == [[1, 9], [4, 27], [3, 22]]
    assert props["shape_after_cropping"] == [8, 23, 19]
    assert props["target_spacing"] == pytest.approx(target)
    expected = list(compute_new_shape((8, 23, 19), SPACING, target))
    assert props["shape_after_resampling"] == expected
    assert list(data.shape) == [1, *expected]
    assert list(seg.shape) == [1, *expected]
    assert props["seed"] == 3
    assert props["image_files"] == ["case_0_0000.nii.gz"]
    assert props["label_file"] == "case_0.nii.gz"
    assert set(props["class_locations"]) == {"1", "2"}


def test_outside_the_nonzero_region_is_minus_one_and_normalization_uses_the_mask(
    tmp_path, write_case, dataset, make_plans
):
    image, label = _volume()
    image[1:9, 4:7, 3:8] = 0  # a zero corner inside the box, open to its edge
    images, label_path = write_case(tmp_path, "c", [image], (1.0, 1.0, 1.0), label)
    plans = make_plans(
        dataset, configurations={"*": {"use_mask_for_norm": [True], "spacing": [1.0] * 3}}
    )
    data, seg, _ = preprocess_case(images, label_path, plans, "3d_fullres", dataset, seed=0)
    outside = seg[0] == -1
    assert outside[:, :3, :5].all()  # the zero corner (box starts at 1, 4, 3)
    assert outside.sum() == 8 * 3 * 5
    assert not outside[3, 6, 5]  # the filled hole is inside
    inside = ~outside
    assert abs(float(data[0][inside].mean())) < 1e-5
    assert float(data[0][inside].std()) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(data[0][outside], 0)  # untouched outside the mask


def test_labels_survive_where_the_image_is_zero(tmp_path, write_case, dataset, make_plans):
    image, label = _volume()
    label[1, 4, 3] = 1
    image[1, 4, 3] = 0  # a labelled voxel in the frame corner, at the box's edge
    image[1, 5, 3] = 7  # keep the box the same
    images, label_path = write_case(tmp_path, "c", [image], (1.0, 1.0, 1.0), label)
    plans = make_plans(dataset, configurations={"*": {"spacing": [1.0] * 3}})
    _, seg, _ = preprocess_case(images, label_path, plans, "3d_fullres", dataset, seed=0)
    assert seg[0, 0, 0, 0] == 1  # only background outside the mask becomes -1


def test_2d_configuration_keeps_each_case_s_slice_spacing(case, dataset, make_plans):
    images, label = case
    plans = make_plans(dataset, SPACING, (8, 23, 19))
    _, _, props = preprocess_case(images, label, plans, "2d", dataset, seed=0)
    in_plane = list(plans.configuration("2d").spacing)
    assert props["target_spacing"] == pytest.approx([SPACING[0], *in_plane])
    assert props["shape_after_resampling"][0] == 8


def test_anisotropic_cases_are_resampled_separately_along_z(
    tmp_path, write_case, dataset, make_plans
):
    image, label = _volume()
    images, label_path = write_case(tmp_path, "c", [image], (4.0, 1.0, 1.0), label)
    plans = make_plans(dataset, configurations={"*": {"spacing": [2.0, 1.0, 1.0]}})
    data, seg, props = preprocess_case(images, label_path, plans, "3d_fullres", dataset, 0)
    assert props["separate_z_axis"] == 0
    assert props["shape_after_resampling"] == [16, 23, 19]
    assert seg.shape == (1, 16, 23, 19)
    # Nearest neighbour along z: 8 slices become 16, each input slice twice, none blended.
    for k in range(0, 16, 2):
        np.testing.assert_array_equal(data[0, k], data[0, k + 1])
        np.testing.assert_array_equal(seg[0, k], seg[0, k + 1])


def test_transpose_forward_reorders_axes_and_spacing(tmp_path, write_case, dataset, make_plans):
    image, label = _volume()
    images, label_path = write_case(tmp_path, "c", [image], (1.0, 2.0, 3.0), label)
    plans = make_plans(
        dataset,
        transpose_forward=[2, 0, 1],
        transpose_backward=[1, 2, 0],
        configurations={"*": {"spacing": [3.0, 1.0, 2.0]}},
    )
    _, _, props = preprocess_case(images, label_path, plans, "3d_fullres", dataset, 0)
    assert props["spacing"] == [3.0, 1.0, 2.0]
    assert props["shape_before_cropping"] == [26, 10, 30]
    assert props["bbox_used_for_cropping"] == [[3, 22], [1, 9], [4, 27]]
    assert props["original_shape"] == [10, 30, 26]


def test_a_case_without_label(case, dataset, make_plans):
    images, _ = case
    plans = make_plans(dataset, SPACING, (8, 23, 19))
    data, seg, props = preprocess_case(images, None, plans, "3d_fullres", dataset, 0)
    assert seg is None
    assert props["class_locations"] is None
    assert props["label_file"] is None
    assert data.dtype == np.float32


def test_ct_channels_use_the_plans_statistics(tmp_path, write_case, make_dataset, make_plans):
    dataset = make_dataset(channels=("CT", "MRI"))
    image, label = _volume()
    image[2, 5, 5], image[2, 5, 6] = 1000, 10  # beyond both clipping percentiles
    images, label_path = write_case(tmp_path, "c", [image, image], (1.0, 1.0, 1.0), label)
    plans = make_plans(dataset, configurations={"*": {"spacing": [1.0] * 3}})
    data, _, _ = preprocess_case(images, label_path, plans, "3d_fullres", dataset, 0)
    stats = plans.foreground_intensity_properties_per_channel["0"]
    low = (stats["percentile_00_5"] - stats["mean"]) / stats["std"]
    high = (stats["percentile_99_5"] - stats["mean"]) / stats["std"]
    assert data[0].min() == pytest.approx(low)
    assert data[0].max() == pytest.approx(high)
    assert abs(float(data[1].mean())) < 1e-5  # the MRI channel is z-scored


def test_files_that_do_not_fit_together_are_reported(tmp_path, write_case, dataset, make_plans):
    image, label = _volume()
    images, _ = write_case(tmp_path, "c", [image], (1.0, 1.0, 1.0))
    _, bad_label = write_case(tmp_path, "d", [image[:5]], (1.0, 1.0, 1.0), label[:5])
    plans = make_plans(dataset)
    with pytest.raises(SegflowError, match="label does not match the image"):
        preprocess_case(images, bad_label, plans, "3d_fullres", dataset, 0)
    with pytest.raises(SegflowError, match="valid: 2d, 3d_fullres"):
        preprocess_case(images, None, plans, "3d_lowres", dataset, 0)


def test_class_locations_keep_all_small_classes_and_sample_large_ones():
    seg = np.zeros((60, 200, 200), dtype=np.int8)  # 2.4 M voxels
    seg[:5, :40, :50] = 1  # 10 000 voxels: all kept
    seg[10:50, :, :] = 2  # 1.6 M voxels: 1 % = 16 000 (more than 10 000)
    seg[55:58, :50, :100] = 3  # 15 000 voxels: 10 000
    classes = {"1": (1,), "2": (2,), "3": (3,), "4": (4,)}
    locations = sample_class_locations(seg, classes, np.random.default_rng(0))
    assert len(locations["1"]) == 10_000
    assert len(locations["2"]) == 16_000
    assert len(locations["3"]) == 10_000
    assert locations["4"] == []
    for key in ("1", "2", "3"):
        flat = np.asarray(locations[key])
        assert (seg.reshape(-1)[flat] == int(key)).all()
        assert (np.diff(flat) > 0).all()  # sorted, no repeats


def test_class_locations_are_deterministic_per_seed():
    seg = np.zeros((30, 40, 50), dtype=np.int8)
    seg[5:25, 10:30, 10:40] = 1  # 12 000 voxels: sampled
    classes = {"1": (1,)}
    first = sample_class_locations(seg, classes, np.random.default_rng(7))
    again = sample_class_locations(seg, classes, np.random.default_rng(7))
    other = sample_class_locations(seg, classes, np.random.default_rng(8))
    assert first == again
    assert first != other


def test_same_case_same_seed_same_properties(case, dataset, make_plans):
    images, label = case
    plans = make_plans(dataset, SPACING, (8, 23, 19))
    a = preprocess_case(images, label, plans, "3d_fullres", dataset, seed=5)
    b = preprocess_case(images, label, plans, "3d_fullres", dataset, seed=5)
    assert a[2] == b[2]
    np.testing.assert_array_equal(a[0], b[0])


def test_regions_and_ignore_label_keys(make_dataset):
    regions = make_dataset(whole=[1, 2, 3], core=[2, 3], enhancing=3)
    assert class_keys(regions) == {"1,2,3": (1, 2, 3), "2,3": (2, 3), "3": (3,)}
    ignoring = make_dataset(organ=1, ignore=4)
    assert class_keys(ignoring) == {"1": (1,), ANNOTATED_KEY: (-1, 0, 1)}
    seg = np.array([[[-1, 0, 1, 4, 4]]], dtype=np.int8)
    locations = sample_class_locations(seg, class_keys(ignoring), np.random.default_rng(0))
    assert locations == {"1": [2], ANNOTATED_KEY: [0, 1, 2]}


def test_preprocess_cases_stores_every_case(tmp_path, write_case, dataset, make_plans):
    specs = []
    for i in range(3):
        image, label = _volume(seed=i)
        images, label_path = write_case(tmp_path / "raw", f"c{i}", [image], SPACING, label)
        specs.append(CaseSpec(f"c{i}", tuple(images), label_path))
    plans = make_plans(dataset, SPACING, (8, 23, 19))
    out = tmp_path / "out"
    assert preprocess_cases(specs, plans, "3d_fullres", dataset, 0, out, workers=2) == [
        "c0",
        "c1",
        "c2",
    ]
    for i in range(3):
        assert is_case_complete(out, f"c{i}")
        stored = open_case(out, f"c{i}")
        assert stored.properties["case_id"] == f"c{i}"
        data, seg, _ = preprocess_case(
            specs[i].images, specs[i].label, plans, "3d_fullres", dataset, 0
        )
        np.testing.assert_array_equal(stored.data[...], data)
        np.testing.assert_array_equal(stored.seg[...], seg)


@pytest.mark.parametrize(
    "spacing,bound",
    [((1e-6, 1e-6, 1e-6), "less than one voxel along an axis"),
     ((1e6, 1e6, 1e6), "beyond the bound of 1,073,741,824 voxels")],
)  # fmt: skip
def test_a_spacing_far_off_the_plans_is_refused_before_resampling(
    tmp_path, write_case, dataset, make_plans, spacing, bound
):
    """Moved plans (plans_from) are not checked by validation: preprocessing refuses the
    case instead of dying in resampling (division by zero, array is too big)."""
    image, label = _volume()
    images, label_file = write_case(tmp_path / "raw", "case_0", [image], spacing, label)
    plans = make_plans(dataset, SPACING, (8, 23, 19))
    with pytest.raises(SegflowError) as info:
        preprocess_case(images, label_file, plans, "3d_fullres", dataset, seed=0)
    [problem] = info.value.problems
    assert problem.where == str(images[0])
    target = "(" + ", ".join(f"{s:.6g}" for s in plans.configuration("3d_fullres").spacing)
    assert problem.message.startswith(
        f"spacing (z, y, x) ({', '.join(f'{s:.6g}' for s in spacing)}) mm resampled to the "
        f"target spacing {target}) mm (the plans' 3d_fullres spacing) gives shape ("
    )
    assert bound in problem.message
