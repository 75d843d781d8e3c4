"""Storage: round trip, patch reads, chunking, and what a failed or killed write leaves."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import blosc2
import numpy as np
import pytest
from scipy import ndimage

from segflow.errors import SegflowError
from segflow.preprocessing import storage
from segflow.preprocessing.storage import (
    case_files,
    choose_filter,
    chunk_and_block_shape,
    is_case_complete,
    open_case,
    save_case,
)


def _case(shape=(1, 12, 30, 20), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=shape).astype(np.float32)
    seg = rng.integers(-1, 3, size=(1, *shape[1:])).astype(np.int8)
    props = {"case_id": "c1", "class_locations": {"1": [0, 5, 17], "2": []}}
    return data, seg, props


def test_round_trip(tmp_path):
    data, seg, props = _case()
    files = save_case(tmp_path, "c1", data, seg, props, (8, 16, 16))
    assert sorted(p.name for p in files.values()) == [
        "c1.data.b2nd",
        "c1.props.json",
        "c1.seg.b2nd",
    ]
    case = open_case(tmp_path, "c1")
    np.testing.assert_array_equal(case.data[...], data)
    np.testing.assert_array_equal(case.seg[...], seg)
    assert case.data.dtype == np.float32
    assert case.seg.dtype == np.int8
    assert case.shape == (12, 30, 20)
    assert case.properties["class_locations"] == props["class_locations"]
    assert case.properties["stored"] == {
        "data": {"shape": [1, 12, 30, 20], "dtype": "float32"},
        "seg": {"shape": [1, 12, 30, 20], "dtype": "int8"},
    }
    assert is_case_complete(tmp_path, "c1")


def test_partial_reads_return_exactly_the_patch(tmp_path):
    data, seg, props = _case(shape=(2, 40, 50, 45))
    save_case(tmp_path, "c1", data, seg, props, (16, 24, 24))
    case = open_case(tmp_path, "c1")
    rng = np.random.default_rng(1)
    for _ in range(20):
        start = [
            int(rng.integers(0, s - p)) for s, p in zip((40, 50, 45), (16, 24, 24), strict=True)
        ]
        where = (slice(None), *(slice(a, a + p) for a, p in zip(start, (16, 24, 24), strict=True)))
        patch = case.data[where]
        assert isinstance(patch, np.ndarray)
        np.testing.assert_array_equal(patch, data[where])
        np.testing.assert_array_equal(case.seg[where], seg[where])


def test_class_locations_as_coordinates(tmp_path):
    data, seg, props = _case()
    flat = np.flatnonzero(seg[0] == 2)[:7]
    props["class_locations"] = {"2": flat.tolist()}
    save_case(tmp_path, "c1", data, seg, props, (8, 16, 16))
    coords = open_case(tmp_path, "c1").class_locations()["2"]
    assert coords.shape == (7, 3)
    assert (seg[0][tuple(coords.T)] == 2).all()


def test_large_label_values_are_stored_as_int16(tmp_path):
    data, seg, props = _case()
    seg = seg.astype(np.int16)
    seg[0, 0, 0, 0] = 300
    save_case(tmp_path, "c1", data, seg, props, (8, 16, 16))
    stored = open_case(tmp_path, "c1").seg
    assert stored.dtype == np.int16
    assert stored[0, 0, 0, 0] == 300


def test_a_case_without_label_has_no_seg_file(tmp_path):
    data, seg, props = _case()
    save_case(tmp_path, "c1", data, seg, props, (8, 16, 16))
    files = save_case(tmp_path, "c1", data, None, props, (8, 16, 16))  # rewritten unlabelled
    assert "seg" not in files
    assert not case_files(tmp_path, "c1")["seg"].exists()
    assert open_case(tmp_path, "c1").seg is None


@pytest.mark.parametrize(
    ("shape", "patch", "itemsize"),
    [
        ((1, 35, 51, 35), (40, 56, 40), 4),
        ((1, 36, 50, 35), (56, 40), 4),
        ((1, 1, 512, 512), (512, 512), 4),
        ((1, 96, 256, 256), (80, 160, 160), 4),
        ((1, 96, 256, 256), (80, 160, 160), 1),
        ((1, 300, 512, 512), (64, 192, 160), 4),
        ((1, 300, 512, 512), (512, 512), 2),
        ((4, 150, 180, 150), (128, 128, 128), 4),
        ((1, 5, 5, 5), (8, 8, 8), 4),
    ],
)
def test_chunks_and_blocks_fit_the_image_and_the_size_targets(shape, patch, itemsize):
    chunks, blocks = chunk_and_block_shape(shape, patch, itemsize)
    assert chunks[0] == blocks[0] == 1
    assert all(1 <= b <= c <= s for b, c, s in zip(blocks[1:], chunks[1:], shape[1:], strict=True))
    assert math.prod(blocks) * itemsize <= 2 * storage.BLOCK_BYTES
    assert math.prod(chunks) * itemsize <= storage.CHUNK_BYTES
    # Equal parts: little padding per axis.
    for extent, part in zip(shape[1:], chunks[1:], strict=True):
        assert -(-extent // part) * part - extent < -(-extent // part)


def test_blocks_follow_the_patch_shape():
    # A 2D patch reads single slices: blocks stay one slice thick when a slice is big enough.
    _, blocks = chunk_and_block_shape((1, 300, 512, 512), (512, 512), 4)
    assert blocks[1] == 1
    # A small image's whole patch fits in one block.
    _, blocks = chunk_and_block_shape((1, 35, 51, 35), (40, 56, 40), 4)
    assert blocks == (1, 35, 51, 35)


def test_filter_choice_follows_the_data():
    rng = np.random.default_rng(0)
    # Few distinct values (an integer scan z-scored without resampling): no shuffle.
    quantized = ((rng.integers(0, 40, size=(1, 32, 32, 32)) - 20) / 7.3).astype(np.float32)
    assert choose_filter(quantized, (1, 32, 32, 32)) == blosc2.Filter.NOFILTER
    # Continuous values (resampled): byte shuffle.
    smooth = ndimage.gaussian_filter(rng.normal(size=(1, 32, 32, 32)), 2).astype(np.float32)
    assert choose_filter(smooth, (1, 32, 32, 32)) == blosc2.Filter.SHUFFLE
    assert choose_filter(np.zeros((1, 4, 4, 4), np.int8), (1, 4, 4, 4)) == blosc2.Filter.NOFILTER


def test_same_input_gives_the_same_bytes(tmp_path):
    data, seg, props = _case()
    save_case(tmp_path / "a", "c1", data, seg, props, (8, 16, 16))
    save_case(tmp_path / "b", "c1", data, seg, props, (8, 16, 16))
    for kind in ("data", "seg", "props"):
        a = case_files(tmp_path / "a", "c1")[kind].read_bytes()
        b = case_files(tmp_path / "b", "c1")[kind].read_bytes()
        assert a == b, kind


def test_a_failure_while_writing_leaves_no_file(tmp_path, monkeypatch):
    data, seg, props = _case()
    save_case(tmp_path, "c1", data, seg, props, (8, 16, 16))  # an older complete case
    real = blosc2.asarray

    def fail_on_seg(array, **kwargs):
        real(array, **kwargs)  # the temporary file is written ...
        if array.dtype == np.int8:
            raise OSError("disk full")  # ... and the write fails before the rename
        return None

    monkeypatch.setattr(storage.blosc2, "asarray", fail_on_seg)
    with pytest.raises(OSError, match="disk full"):
        save_case(tmp_path, "c1", data * 2, seg, props, (8, 16, 16))
    assert not case_files(tmp_path, "c1")["props"].exists()
    assert not is_case_complete(tmp_path, "c1")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    with pytest.raises(SegflowError, match="not found"):
        open_case(tmp_path, "c1")


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from segflow.preprocessing.storage import save_case
    data = np.ones((1, 6, 7, 8), np.float32)
    seg = np.zeros((1, 6, 7, 8), np.int8)
    save_case(sys.argv[1], "c1", data, seg, {"case_id": "c1"}, (4, 4, 4))
    """
)


@pytest.mark.parametrize("stage", ["data", "seg", "props"])
def test_a_killed_write_leaves_nothing_a_rerun_accepts(tmp_path, stage):
    env = {**os.environ, "SEGFLOW_TEST_KILL_DURING_WRITE": stage}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], env=env, capture_output=True
    )
    assert done.returncode == -9, done.stderr.decode()
    assert not case_files(tmp_path, "c1")["props"].exists()
    assert not is_case_complete(tmp_path, "c1")
    with pytest.raises(SegflowError):
        open_case(tmp_path, "c1")
    final_names = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".tmp-")}
    assert f"c1.{stage}.b2nd" not in final_names
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # the kill's leftover

    # The rerun writes the case completely and clears what the killed job left.
    env.pop("SEGFLOW_TEST_KILL_DURING_WRITE")
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], env=env, check=True)
    assert is_case_complete(tmp_path, "c1")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    np.testing.assert_array_equal(open_case(tmp_path, "c1").data[...], 1)


def test_arrays_that_disagree_with_the_properties_are_rejected(tmp_path):
    data, seg, props = _case()
    save_case(tmp_path, "c1", data, seg, props, (8, 16, 16))
    # A data file from another run (other shape) beside these properties.
    blosc2.asarray(
        np.zeros((1, 3, 3, 3), np.float32),
        urlpath=str(case_files(tmp_path, "c1")["data"]),
        mode="w",
    )
    with pytest.raises(SegflowError, match="preprocess the case again"):
        open_case(tmp_path, "c1")


def test_missing_array_makes_a_case_incomplete(tmp_path):
    data, seg, props = _case()
    save_case(tmp_path, "c1", data, seg, props, (8, 16, 16))
    case_files(tmp_path, "c1")["seg"].unlink()
    assert not is_case_complete(tmp_path, "c1")
    with pytest.raises(SegflowError, match="incomplete"):
        open_case(tmp_path, "c1")


def test_remove_leftovers_touches_only_the_given_cases(tmp_path):
    names = [
        ".tmp-c1.data-x1y2.data.b2nd",
        ".tmp-c1.props-abc.props.json",
        ".tmp-c10.data-x1y2.data.b2nd",  # another case whose id starts alike
        "c1.data.b2nd",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert storage.remove_leftovers(tmp_path, ["c1"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".tmp-c10.data-x1y2.data.b2nd",
        "c1.data.b2nd",
    ]
    assert storage.remove_leftovers(tmp_path / "missing", ["c1"]) == 0
