"""run_apply: files in, postprocessed files out with exactly their geometry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.io.image import read_image, write_image
from segflow.postprocessing import run_apply

SPACING = (2.5, 0.8, 0.6)  # (z, y, x)
ORIGIN = (10.0, -5.0, 3.25)
C, S = math.cos(math.radians(30)), math.sin(math.radians(30))
DIRECTION = (C, -S, 0.0, S, C, 0.0, 0.0, 0.0, 1.0)


def _dataset_json(folder, ending=".nii.gz", labels=None):
    path = folder / "dataset.json"
    path.write_text(json.dumps({"channel_names": {"0": "CT"}, "numTraining": 1,
        "labels": labels or {"background": 0, "organ": 1, "lesion": 2},
        "file_ending": ending}))  # fmt: skip
    return path


def _write(path, array, *geometry):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, array, *geometry)


def _rules(folder, rules):
    path = folder / "postprocessing.json"
    path.write_text(json.dumps({"format": 1, "rules": rules}))
    return path


def _segmentation(dtype=np.uint8) -> np.ndarray:
    """Organ block (18 voxels), a lesion touching it and a stray lesion voxel apart."""
    seg = np.zeros((4, 6, 7), dtype)
    seg[1:3, 1:4, 1:4] = 1
    seg[1, 1, 4] = 2
    seg[3, 5, 6] = 2
    return seg


def test_round_trip_keeps_the_geometry_of_a_3d_file(tmp_path):
    _write(tmp_path / "in" / "a.nii.gz", _segmentation(np.int16), SPACING, ORIGIN,
                DIRECTION)  # fmt: skip
    written = run_apply(
        _rules(tmp_path, [{"labels": [1, 2]}]),
        [tmp_path / "in" / "a.nii.gz"],
        tmp_path / "out",
        _dataset_json(tmp_path),
    )
    assert written == [tmp_path / "out" / "a.nii.gz"]
    result = read_image(written[0])
    expected = _segmentation(np.int16)
    expected[3, 5, 6] = 0
    assert np.array_equal(result.array[0], expected)
    assert result.array.dtype == np.int16
    assert not result.is_2d
    assert result.spacing == pytest.approx(SPACING)
    assert result.origin == pytest.approx(ORIGIN)
    assert result.direction == pytest.approx(DIRECTION)
    # The input is untouched.
    assert np.array_equal(read_image(tmp_path / "in" / "a.nii.gz").array[0], _segmentation())


def test_a_2d_nifti_stays_2d(tmp_path):
    plane = np.zeros((5, 6), np.uint8)
    plane[0:2, 0:3] = 1
    plane[4, 5] = 1
    _write(tmp_path / "in" / "b.nii.gz", plane, (0.7, 0.3), (1.5, -2.0), (C, -S, S, C))
    written = run_apply(_rules(tmp_path, [{"labels": [1]}]), [tmp_path / "in"],
                        tmp_path / "out", _dataset_json(tmp_path))  # fmt: skip
    result = read_image(written[0])
    assert result.is_2d
    assert result.shape == (1, 5, 6)
    assert np.count_nonzero(result.array) == 6
    assert result.spacing[1:] == pytest.approx((0.7, 0.3))
    assert result.origin == pytest.approx((1.5, -2.0))
    assert result.direction == pytest.approx((C, -S, S, C))


def test_png_folders_are_postprocessed_file_by_file(tmp_path):
    for name, row in (("x", 0), ("y", 3)):
        plane = np.zeros((6, 6), np.uint8)
        plane[row, 0:4] = 1
        plane[5, 5] = 1
        _write(tmp_path / "in" / f"{name}.png", plane, (1.0, 1.0))
    (tmp_path / "in" / "notes.txt").write_text("not a segmentation")
    written = run_apply(
        _rules(tmp_path, [{"labels": [1]}]),
        [tmp_path / "in"],
        tmp_path / "out",
        _dataset_json(tmp_path, ".png", {"background": 0, "a": 1}),
    )
    assert [p.name for p in written] == ["x.png", "y.png"]
    for path, row in zip(written, (0, 3), strict=True):
        result = read_image(path)
        assert result.is_2d
        assert np.argwhere(result.array[0, 0]).tolist() == [[row, c] for c in range(4)]


def test_no_rules_copies_the_segmentation(tmp_path):
    _write(tmp_path / "in" / "a.nii.gz", _segmentation(), SPACING, ORIGIN, DIRECTION)
    written = run_apply(_rules(tmp_path, []), [tmp_path / "in" / "a.nii.gz"], tmp_path / "out",
                        _dataset_json(tmp_path))  # fmt: skip
    assert np.array_equal(read_image(written[0]).array[0], _segmentation())


def test_every_input_problem_is_reported_before_any_work(tmp_path):
    _write(tmp_path / "in" / "a.nii.gz", _segmentation(), SPACING)
    _write(tmp_path / "other" / "a.nii.gz", _segmentation(), SPACING)
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"not an image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegflowError) as err:
        run_apply(
            _rules(tmp_path, [{"labels": [1]}]),
            [tmp_path / "in", tmp_path / "other", tmp_path / "missing.nii.gz", tmp_path / "empty"],
            tmp_path / "out",
            _dataset_json(tmp_path),
        )
    message = str(err.value)
    assert f"{tmp_path / 'missing.nii.gz'}: input does not exist" in message
    assert f"{tmp_path / 'empty'}: folder holds no *.nii.gz segmentation" in message
    assert f"{tmp_path / 'in' / 'broken.nii.gz'}: cannot be read as an image" in message
    assert f"{tmp_path / 'other' / 'a.nii.gz'}: has the same name as" in message
    assert len(err.value.problems) == 4
    assert not (tmp_path / "out").exists()


def test_writing_onto_an_input_is_refused(tmp_path):
    _write(tmp_path / "in" / "a.nii.gz", _segmentation(), SPACING)
    with pytest.raises(SegflowError, match="the output would overwrite this input"):
        run_apply(_rules(tmp_path, [{"labels": [1]}]), [tmp_path / "in"], tmp_path / "in",
                  _dataset_json(tmp_path))  # fmt: skip
    assert np.array_equal(read_image(tmp_path / "in" / "a.nii.gz").array[0], _segmentation())


def test_rules_of_another_dataset_are_refused(tmp_path):
    _write(tmp_path / "in" / "a.nii.gz", _segmentation(), SPACING)
    with pytest.raises(SegflowError) as err:
        run_apply(_rules(tmp_path, [{"labels": [1, 5]}]), [tmp_path / "in"], tmp_path / "out",
                  _dataset_json(tmp_path))  # fmt: skip
    assert "rule 0 names label(s) [5] that are not foreground labels" in str(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1, "rules": [{"labels": "1"}]}')
    with pytest.raises(SegflowError, match=r"bad\.json is not a valid postprocessing\.json"):
        run_apply(bad, [tmp_path / "in"], tmp_path / "out", _dataset_json(tmp_path))


def test_no_input_is_an_error(tmp_path):
    with pytest.raises(SegflowError, match="no segmentation file or folder given"):
        run_apply(_rules(tmp_path, []), [], tmp_path / "out", _dataset_json(tmp_path))
