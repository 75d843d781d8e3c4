from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.io.case import read_case
from segflow.io.dataset import DatasetJson
from segflow.io.image import write_image


def _dataset(channels: int) -> DatasetJson:
    return DatasetJson(
        channel_names={i: f"MR{i}" for i in range(channels)},
        labels={"background": 0, "a": 1},
        num_training=1,
        file_ending=".nii.gz",
    )


def _write(path, array, spacing=(2.0, 1.0, 1.0)):
    write_image(path, array, spacing)
    return path


def test_channels_are_stacked_in_file_order_and_the_label_is_integer(tmp_path):
    t1 = _write(tmp_path / "c_0000.nii.gz", np.full((3, 4, 5), 1.5, np.float32))
    t2 = _write(tmp_path / "c_0001.nii.gz", np.full((3, 4, 5), 7, np.int16))
    seg = np.zeros((3, 4, 5), np.float32)
    seg[1, 2, 3] = 1.0  # a float label file with whole values is accepted
    label = _write(tmp_path / "c.nii.gz", seg)
    case = read_case([t1, t2], label, _dataset(2))
    assert case.data.shape == (2, 3, 4, 5) and case.data.dtype == np.float32
    assert case.data[0, 0, 0, 0] == 1.5 and case.data[1, 0, 0, 0] == 7
    assert case.seg.shape == (3, 4, 5) and np.issubdtype(case.seg.dtype, np.integer)
    assert case.seg.sum() == 1 and case.seg[1, 2, 3] == 1
    assert case.reference.spacing == pytest.approx((2.0, 1.0, 1.0))
    assert read_case([t1, t2], None, _dataset(2)).seg is None


def test_every_channel_problem_is_listed(tmp_path):
    t1 = _write(tmp_path / "c_0000.nii.gz", np.ones((3, 4, 5), np.float32))
    t2 = _write(tmp_path / "c_0001.nii.gz", np.ones((3, 4, 6), np.float32))
    with pytest.raises(SegflowError) as err:
        read_case([t1, t2], None, _dataset(3))
    text = err.value.render()
    assert "c_0001.nii.gz: shape (3, 4, 6) differs from (3, 4, 5)" in text
    assert "2 file(s) hold 2 channel(s); dataset.json names 3" in text


def test_label_of_another_shape_or_with_fractions_is_refused(tmp_path):
    image = _write(tmp_path / "c_0000.nii.gz", np.ones((3, 4, 5), np.float32))
    small = _write(tmp_path / "small.nii.gz", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(SegflowError, match="label does not match the image"):
        read_case([image], small, _dataset(1))
    fractions = _write(tmp_path / "frac.nii.gz", np.full((3, 4, 5), 0.5, np.float32))
    with pytest.raises(SegflowError, match="non-integer label values"):
        read_case([image], fractions, _dataset(1))
