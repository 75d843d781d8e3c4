"""average_probabilities: the exact mean of saved probabilities, and the first file's
properties."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.ensembling import average_probabilities, mean_probabilities
from segflow.errors import SegflowError
from segflow.inference.export import write_probabilities

from .conftest import PROPERTIES


def _save(path, array, properties=PROPERTIES):
    return write_probabilities(np.asarray(array, dtype=np.float32), properties, path)


def test_the_mean_of_two_files(tmp_path):
    # Multiples of 1/8: every sum and half is exact in float32.
    a = np.array([[[[0.25, 0.5]]], [[[0.75, 0.5]]]])
    b = np.array([[[[0.125, 1.0]]], [[[0.875, 0.0]]]])
    first = _save(tmp_path / "a.npz", a)
    second = _save(tmp_path / "b.npz", b, {**PROPERTIES, "origin": [9.0, 9.0, 9.0]})
    mean, properties = average_probabilities([first, second])
    assert mean.dtype == np.float32
    np.testing.assert_array_equal(mean, [[[[0.1875, 0.75]]], [[[0.8125, 0.25]]]])
    assert properties == PROPERTIES  # the first file's


def test_the_mean_of_three_files(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.random((3, 2, 3, 4)).astype(np.float32) for _ in range(3)]
    files = [_save(tmp_path / f"{i}.npz", a) for i, a in enumerate(arrays)]
    mean, _ = average_probabilities(files)
    np.testing.assert_allclose(mean, (arrays[0] + arrays[1] + arrays[2]) / 3, rtol=1e-6)
    assert not np.allclose(mean, arrays[0])


def test_one_file_is_returned_as_saved(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 1, 3, 4) / 24
    mean, properties = average_probabilities([_save(tmp_path / "a.npz", a)])
    np.testing.assert_array_equal(mean, a)
    assert properties == PROPERTIES


def test_files_of_different_shapes_are_refused(tmp_path):
    first = _save(tmp_path / "a.npz", np.zeros((3, 2, 5, 4)))
    second = _save(tmp_path / "b.npz", np.zeros((3, 2, 4, 5)))
    with pytest.raises(SegflowError, match="probabilities of different cases") as err:
        average_probabilities([first, second])
    [problem] = err.value.problems
    assert problem.where == str(second)
    assert problem.message == f"shape [3, 2, 4, 5]; {first} has [3, 2, 5, 4]"


def test_no_file_is_refused():
    with pytest.raises(SegflowError, match="no probabilities to average"):
        average_probabilities([])


def test_the_mean_of_arrays_leaves_them_as_they_are():
    a = np.full((2, 1, 2, 2), 0.25, dtype=np.float32)
    b = np.full((2, 1, 2, 2), 0.75, dtype=np.float32)
    mean = mean_probabilities({"a": a, "b": b})
    np.testing.assert_array_equal(mean, np.full_like(a, 0.5))
    assert a[0, 0, 0, 0] == 0.25 and b[0, 0, 0, 0] == 0.75
    with pytest.raises(SegflowError, match="probabilities of different cases") as err:
        mean_probabilities({"a": a, "b": b, "c": np.zeros((2, 1, 2, 3))})
    assert [p.where for p in err.value.problems] == ["c"]


def test_the_mean_of_pairs_from_a_generator():
    arrays = [np.full((2, 1, 2, 2), v, dtype=np.float32) for v in (0.1, 0.2, 0.6)]
    mean = mean_probabilities((f"s{i}", a) for i, a in enumerate(arrays))
    np.testing.assert_allclose(mean, np.full((2, 1, 2, 2), 0.3), rtol=1e-6)
    with pytest.raises(SegflowError, match="no probabilities to average"):
        mean_probabilities(iter(()))
