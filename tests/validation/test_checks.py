"""Content checks: each problem names its file, says what is wrong and what was expected."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segflow.io.dataset import parse_dataset_json
from segflow.io.image import read_image
from segflow.validation import geometry_differences, validate_dataset
from segflow.validation.checks import check_label_declarations
from segflow.validation.nifti import scan_nifti

FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _dataset_json(**changes):
    raw = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "a": 1, "b": 2},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    } | changes
    dataset, problems = parse_dataset_json(raw)
    assert problems == []
    return dataset


# --- geometry: label against image ------------------------------------------------------


def test_label_shape_differs_from_image(tiny, problems_of, helpers):
    helpers.volume(tiny.label("case_001"), helpers.label((3, 6, 4)))
    assert problems_of(tiny) == [
        "labelsTr/case_001.nii.gz: shape (z, y, x) (3, 6, 4) differs from (3, 6, 5) of its "
        "image imagesTr/case_001_0000.nii.gz"
    ]


def test_label_spacing_differs_from_image(tiny, problems_of, helpers):
    helpers.volume(tiny.label("case_001"), helpers.label((3, 6, 5)), spacing=(2.0, 1.0, 1.01))
    assert problems_of(tiny) == [
        "labelsTr/case_001.nii.gz: spacing (z, y, x) (2, 1, 1.01) mm differs from (2, 1, 1) mm "
        "of its image imagesTr/case_001_0000.nii.gz (tolerance: relative 0.001)"
    ]


def test_label_origin_differs_from_image(tiny, problems_of, helpers):
    helpers.volume(tiny.label("case_001"), helpers.label((3, 6, 5)), origin=(0.0, 0.0, 0.5))
    assert problems_of(tiny) == [
        "labelsTr/case_001.nii.gz: origin (0, 0, 0.5) mm differs from (0, 0, 0) mm of its "
        "image imagesTr/case_001_0000.nii.gz (tolerance: 0.01 mm, 1% of the smallest voxel "
        "spacing)"
    ]


def test_label_direction_differs_from_image(tiny, problems_of, helpers):
    helpers.volume(tiny.label("case_001"), helpers.label((3, 6, 5)), direction=FLIPPED)
    assert problems_of(tiny) == [
        "labelsTr/case_001.nii.gz: direction (-1, 0, 0, 0, 1, 0, 0, 0, 1) differs from "
        "(1, 0, 0, 0, 1, 0, 0, 0, 1) of its image imagesTr/case_001_0000.nii.gz "
        "(tolerance: 0.001 per cosine)"
    ]


def test_differences_within_tolerance_are_accepted(tiny, helpers):
    helpers.volume(
        tiny.label("case_001"),
        helpers.label((3, 6, 5)),
        spacing=(2.0, 1.0, 1.0005),  # relative 5e-4 < 1e-3
        origin=(0.005, 0.0, 0.0),  # 0.005 mm < 1% of 1 mm
    )
    assert len(validate_dataset(tiny.root)["training_cases"]) == 3


def test_geometry_tolerances_scale_with_the_voxel_size(tmp_path, helpers):
    def image(name, spacing, origin):
        return read_image(helpers.volume(tmp_path / name, np.zeros((2, 3, 4), np.float32),
                                         spacing, origin))

    # 4 um voxels: 0.001 mm of origin shift is a quarter voxel and must be caught.
    ref = image("ref.nii.gz", (0.004, 0.004, 0.004), (0.0, 0.0, 0.0))
    shifted = image("shifted.nii.gz", (0.004, 0.004, 0.004), (0.001, 0.0, 0.0))
    [diff] = geometry_differences(shifted, ref, "ref")
    assert diff.startswith("origin (0.001, 0, 0) mm differs from (0, 0, 0) mm of ref")
    assert geometry_differences(ref, ref, "ref") == []


# --- geometry: channels of one case -----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"shape": (3, 6, 4)}, "shape (z, y, x) (3, 6, 4) differs from (3, 6, 5)"),
        ({"spacing": (3.0, 1.0, 1.0)}, "spacing (z, y, x) (3, 1, 1) mm differs from (2, 1, 1) mm"),
        ({"origin": (5.0, 0.0, 0.0)}, "origin (5, 0, 0) mm differs from (0, 0, 0) mm"),
        ({"direction": FLIPPED}, "direction (-1, 0, 0, 0, 1, 0, 0, 0, 1) differs from"),
    ],
)
def test_channels_of_a_case_disagreeing_in_geometry(
    make_dataset, problems_of, helpers, change, expected
):
    dataset = make_dataset(channels=("T1", "T2"))
    shape = change.pop("shape", (3, 6, 5))
    helpers.volume(dataset.image("case_002", 1), np.ones(shape, np.float32), **change)
    [problem] = problems_of(dataset)
    assert problem.startswith(f"imagesTr/case_002_0001.nii.gz: {expected}")
    assert "of channel file imagesTr/case_002_0000.nii.gz" in problem
    assert problem.endswith("; the channels of a case must share one voxel grid")


# --- values -----------------------------------------------------------------------------


def test_undeclared_label_values_are_listed(tiny, problems_of, helpers):
    tiny.add_case("case_003")
    tiny.write_json()
    helpers.volume(tiny.label("case_003"), helpers.label((3, 6, 5), (0, 1, 3, 7)))
    assert problems_of(tiny) == [
        "labelsTr/case_003.nii.gz: label values [3, 7] are not declared in dataset.json "
        "labels (declared: 0, 1, 2)"
    ]


def test_non_integer_label_values(tiny, problems_of, helpers):
    label = helpers.label((3, 6, 5)).astype(np.float32)
    label[0, 0, :2] = [0.5, 1.25]
    helpers.volume(tiny.label("case_000"), label)
    assert problems_of(tiny) == [
        "labelsTr/case_000.nii.gz: label values must be whole numbers, found [0.5, 1.25]"
    ]


def test_float_labels_with_whole_values_are_fine(tiny, helpers):
    helpers.volume(tiny.label("case_000"), helpers.label((3, 6, 5)).astype(np.float64))
    assert len(validate_dataset(tiny.root)["training_cases"]) == 3


def test_nan_and_infinite_intensities(tiny, problems_of, helpers):
    image = np.ones((3, 6, 5), np.float32)
    image[0, 0, :2] = np.nan
    image[1, 1, 1] = -np.inf
    helpers.volume(tiny.image("case_001"), image)
    assert problems_of(tiny) == [
        "imagesTr/case_001_0000.nii.gz: image contains 2 NaN and 1 infinite voxel value(s); "
        "replace them with finite values"
    ]


def test_nan_in_a_label(tiny, problems_of, helpers):
    label = helpers.label((3, 6, 5)).astype(np.float32)
    label[2, 2, 2] = np.nan
    helpers.volume(tiny.label("case_001"), label)
    assert problems_of(tiny) == [
        "labelsTr/case_001.nii.gz: label contains 1 NaN and 0 infinite voxel value(s)"
    ]


# --- unreadable files -------------------------------------------------------------------


def test_4d_image(tiny, problems_of):
    volume = sitk.ReadImage(str(tiny.image("case_001")))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(tiny.image("case_001")))
    assert problems_of(tiny) == [
        "imagesTr/case_001_0000.nii.gz: 4D image with shape (5, 6, 3, 2); expected 2D or 3D "
        "(put each channel in its own _XXXX file)"
    ]


def test_file_that_is_not_an_image(tiny, problems_of):
    tiny.image("case_002").write_bytes(b"not an image at all")
    [problem] = problems_of(tiny)
    assert problem == (
        "imagesTr/case_002_0000.nii.gz: cannot be read as an image: the file is not "
        "recognized as a NIFTI file"
    )


def test_nii_gz_cut_in_half(tiny, problems_of):
    # SimpleITK reads such a file without complaint (the rest of the voxels become 0).
    data = tiny.image("case_001").read_bytes()
    tiny.image("case_001").write_bytes(data[: len(data) // 2])
    [problem] = problems_of(tiny)
    assert problem.startswith("imagesTr/case_001_0000.nii.gz: truncated file: holds ")
    assert problem.endswith(" of the 712 bytes its header announces (was it cut off while "
                            "copying?)")


def test_uncompressed_nii_cut_short(make_dataset, problems_of):
    dataset = make_dataset(ending=".nii")
    data = dataset.label("case_000").read_bytes()
    dataset.label("case_000").write_bytes(data[:-40])
    assert problems_of(dataset) == [
        "labelsTr/case_000.nii: truncated file: holds 402 of the 442 bytes its header "
        "announces (was it cut off while copying?)"
    ]


def test_nan_in_nifti_is_found_although_simpleitk_reads_it_as_zero(tmp_path, helpers):
    array = np.ones((3, 4, 5), np.float64)
    array[0, 0, :3] = np.nan
    array[1, 1, 1] = np.inf
    path = helpers.volume(tmp_path / "a.nii.gz", array)
    assert np.isfinite(read_image(path).array).all()
    scan = scan_nifti(path)
    assert (scan.nan, scan.inf, scan.truncated) == (3, 1, False)


def test_raw_scan_of_multi_member_gzip(tmp_path, helpers):
    path = helpers.volume(tmp_path / "a.nii", np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    raw = path.read_bytes()
    assert scan_nifti(path) is not None and not scan_nifti(path).truncated
    # Two gzip members, as parallel compressors write them: complete, though the gzip
    # trailer only gives the size of the last member.
    joined = tmp_path / "b.nii.gz"
    joined.write_bytes(gzip.compress(raw[:200]) + gzip.compress(raw[200:]))
    assert read_image(joined).shape == (3, 4, 5)
    assert scan_nifti(joined).truncated is False
    joined.write_bytes(gzip.compress(raw[:200]) + gzip.compress(raw[200:450]))
    scan = scan_nifti(joined)
    assert (scan.found_bytes, scan.expected_bytes) == (450, 472)
    assert scan_nifti(tmp_path / "c.png") is None


def test_every_unreadable_file_is_reported_and_the_rest_still_checked(tiny, problems_of):
    for case in ("case_000", "case_002"):
        tiny.label(case).write_bytes(b"garbage")
    (tiny.root / "imagesTr" / "case_001_0000.nii.gz").write_bytes(b"")
    problems = problems_of(tiny, workers=2)
    assert [p.split(":")[0] for p in problems] == [
        "labelsTr/case_000.nii.gz",
        "imagesTr/case_001_0000.nii.gz",
        "labelsTr/case_002.nii.gz",
    ]


# --- 2D and natural images --------------------------------------------------------------


def _png_dataset(make_dataset, helpers, channels=("EM",), rgb=False):
    dataset = make_dataset(cases=0, ending=".png", channels=channels)
    rng = np.random.default_rng(1)
    for i in range(2):
        shape = (6, 5, 3) if rgb else (6, 5)
        helpers.plain(dataset.image(f"em_{i}"), rng.integers(0, 255, shape, dtype=np.uint8), rgb)
        helpers.plain(dataset.label(f"em_{i}"), helpers.label((6, 5), (0, 1)))
    dataset.write_json(labels={"background": 0, "membrane": 1})
    return dataset


def test_grayscale_png_dataset_is_2d(make_dataset, helpers):
    report = validate_dataset(_png_dataset(make_dataset, helpers).root)
    assert report["is_2d"] is True
    assert report["num_channels"] == 1
    assert report["training_cases"][0] == {
        "case_id": "em_0", "images": ["imagesTr/em_0_0000.png"], "label": "labelsTr/em_0.png"
    }


def test_rgb_png_is_three_channels_in_one_file(make_dataset, helpers):
    dataset = _png_dataset(make_dataset, helpers, channels=("R", "G", "B"), rgb=True)
    report = validate_dataset(dataset.root)
    assert report["num_channels"] == 3
    assert report["training_cases"][1]["images"] == ["imagesTr/em_1_0000.png"]


def test_rgb_png_where_one_channel_is_declared(make_dataset, helpers, problems_of):
    dataset = _png_dataset(make_dataset, helpers, channels=("EM",), rgb=True)
    problems = problems_of(dataset)
    assert problems[0] == (
        "imagesTr/em_0_0000.png: case 'em_0' has 3 channel(s) (imagesTr/em_0_0000.png: 3) but "
        "dataset.json declares 1 (0: EM); an RGB image counts as three channels, a grayscale "
        "one as one"
    )
    assert len(problems) == 2


def test_rgb_label(make_dataset, helpers, problems_of):
    dataset = _png_dataset(make_dataset, helpers)
    helpers.plain(dataset.label("em_1"), np.zeros((6, 5, 3), np.uint8), is_vector=True)
    assert problems_of(dataset) == [
        "labelsTr/em_1.png: a label must have one channel, found 3 (save labels as "
        "single-component, grayscale images)"
    ]


def test_2d_and_3d_cases_mixed(tiny, problems_of, helpers):
    tiny.add_case("flat", shape=(6, 5), spacing=(1.0, 1.0))
    tiny.write_json()
    assert problems_of(tiny) == [
        "imagesTr/flat_0000.nii.gz: cases mix 2D and 3D images (1 2D, 3 3D); the 2D ones are "
        "imagesTr/flat_0000.nii.gz; a dataset must be all 2D or all 3D"
    ]


def test_2d_label_for_a_3d_image(tiny, problems_of, helpers):
    helpers.volume(tiny.label("case_000"), helpers.label((6, 5)), spacing=(1.0, 1.0))
    tiny.add_case("one_slice", shape=(1, 6, 5))
    helpers.volume(tiny.label("one_slice"), helpers.label((6, 5)), spacing=(1.0, 1.0))
    tiny.write_json()
    problems = problems_of(tiny)
    assert "labelsTr/one_slice.nii.gz: the file is 2D but its image " \
           "imagesTr/one_slice_0000.nii.gz is 3D" in problems
    assert problems[0].startswith("labelsTr/case_000.nii.gz: the file is 2D but its image")


# --- test cases -------------------------------------------------------------------------


def test_test_images_and_labels_are_checked_too(make_dataset, problems_of, helpers):
    dataset = make_dataset(channels=("T1", "T2"), test_cases=2)
    image = np.ones((3, 6, 5), np.float32)
    image[0, 0, 0] = np.nan
    helpers.volume(dataset.image("test_000", 1, "Ts"), image)
    dataset.image("test_001", 1, "Ts").unlink()
    helpers.volume(dataset.label("test_000", "Ts"), helpers.label((3, 6, 5), (0, 4)))
    assert problems_of(dataset) == [
        "imagesTs/test_001_0001.nii.gz: channel file missing: dataset.json declares 2 "
        "channel(s) (0: T1, 1: T2); case 'test_001' has _0000",
        "imagesTs/test_000_0001.nii.gz: image contains 1 NaN and 0 infinite voxel value(s); "
        "replace them with finite values",
        "labelsTs/test_000.nii.gz: label values [4] are not declared in dataset.json labels "
        "(declared: 0, 1, 2)",
    ]


# --- label declarations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "extra", "expected"),
    [
        (
            {"background": 0, "a": 1, "b": 2, "ignore": 4},
            {},
            "the 'ignore' label must be the highest label value, one above the others (3); "
            "found 4",
        ),
        (
            {"background": 0, "a": 1, "b": 3},
            {},
            "label values must be consecutive integers 0, 1, 2, ...; declared: 0, 1, 3; "
            "missing: 2",
        ),
        (
            {"background": 0, "whole": [1, 2], "core": 2},
            {},
            "labels define regions (whole, core) but 'regions_class_order' is missing; give the "
            "label value each region writes into predictions, one per region in the order of "
            "'labels'",
        ),
        (
            {"background": 0, "whole": [1, 2], "core": 2},
            {"regions_class_order": [1]},
            "'regions_class_order' has 1 entries but 'labels' defines 2 region(s) (whole, core)",
        ),
        (
            {"background": 0, "a": 1, "a2": [1, 2], "ignore": [2, 3]},
            {"regions_class_order": [1, 2]},
            "the 'ignore' label must be a single integer, not a region [2, 3]",
        ),
        (
            {"background": 0, "a": 1, "b": 1},
            {},
            "labels 'a', 'b' share the value 1; each class needs its own value",
        ),
    ],
)
def test_label_declarations(labels, extra, expected):
    problems, _ = check_label_declarations(_dataset_json(labels=labels, **extra))
    assert [str(p) for p in problems] == [f"dataset.json: {expected}"]


def test_ignore_label_one_above_the_others_is_fine(tiny, helpers):
    tiny.write_json(labels={"background": 0, "anterior": 1, "posterior": 2, "ignore": 3})
    helpers.volume(tiny.label("case_000"), helpers.label((3, 6, 5), (0, 1, 2, 3)))
    report = validate_dataset(tiny.root)
    assert report["labels"]["ignore"] == 3
    assert report["warnings"] == []


def test_region_dataset_is_valid(tiny):
    tiny.write_json(
        labels={"background": 0, "whole": [1, 2], "core": 2}, regions_class_order=[1, 2]
    )
    report = validate_dataset(tiny.root)
    assert report["labels"] == {"background": 0, "whole": [1, 2], "core": 2}


def test_label_warnings(tiny, helpers):
    tiny.write_json(labels={"background": 0, "anterior": 1, "posterior": 2, "tail": 3})
    helpers.volume(tiny.label("case_001"), np.zeros((3, 6, 5), np.uint8))
    report = validate_dataset(tiny.root)
    assert report["warnings"] == [
        "1 training label(s) hold only background: labelsTr/case_001.nii.gz",
        "label 'tail' (3) occurs in no training label",
    ]


def test_label_values_of_wide_integer_types(tiny, problems_of, helpers):
    label = helpers.label((3, 6, 5)).astype(np.int32)
    label[0, 0, 0] = -1
    label[0, 0, 1] = 100_000  # wider than the bincount range
    helpers.volume(tiny.label("case_002"), label)
    assert problems_of(tiny) == [
        "labelsTr/case_002.nii.gz: label values [-1, 100000] are not declared in dataset.json "
        "labels (declared: 0, 1, 2)"
    ]


def test_a_copied_case_is_only_as_valid_as_its_files(tiny, problems_of):
    # Guard against a check that only looks at names: same names, one bad file.
    shutil.copy(tiny.image("case_000"), tiny.image("case_001"))
    assert validate_dataset(tiny.root)["training_cases"][1]["case_id"] == "case_001"
    Path(tiny.image("case_001")).write_bytes(b"\x1f\x8b broken gzip")
    assert problems_of(tiny)[0].startswith("imagesTr/case_001_0000.nii.gz: cannot be read as")
