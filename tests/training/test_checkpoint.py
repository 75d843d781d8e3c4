"""Checkpoints: safe loading, atomic writing, every random-number state restored."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from segflow.errors import SegflowError
from segflow.training.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def test_rng_states_come_back():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's legacy state
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    torch.rand(5)
    np.random.rand(7)
    random.random()
    restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_round_trip_with_weights_only(tmp_path):
    net = torch.nn.Conv3d(1, 2, 3)
    state = {"network": net.state_dict(), "epoch": 3, "rng": capture_rng_state(), "x": [1.5]}
    path = save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["network"]["weight"], net.weight)
    restore_rng_state(loaded["rng"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "obj": pickle.loads(pickle.dumps(SegflowError("x")))}, path)
    with pytest.raises(SegflowError, match="cannot read a checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [({"network": {}}, "not a segflow checkpoint"), ({"format": 99}, "format 99")],
)
def test_foreign_checkpoints_are_named(tmp_path, content, message):
    path = tmp_path / "c.pt"
    torch.save(content, path)
    with pytest.raises(SegflowError, match=message):
        load_checkpoint(path)


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"network": torch.nn.Linear(50, 50).state_dict()})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SegflowError, match="cannot read a checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"history": {"rows": [{"dice": np.float64(0.5)}]}}, "state.history.rows[0].dice"),
        ({"array": np.zeros(3)}, "state.array"),
        ({"obj": object()}, "state.obj"),
    ],
)
def test_only_plain_data_is_saved(tmp_path, state, where):
    with pytest.raises(TypeError, match=where.replace("[", r"\[").replace("]", r"\]")):
        save_checkpoint(tmp_path / "c.pt", state)
    assert not list(tmp_path.iterdir())


def test_a_text_file_is_said_not_to_be_a_pytorch_checkpoint(tmp_path):
    """Not PyTorch's unpickler's ``IndexError: pop from empty list``."""
    path = tmp_path / "weights.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(SegflowError) as info:
        load_checkpoint(path)
    assert info.value.render() == (
        "cannot read a checkpoint\n"
        f"  - {path}: is not a PyTorch checkpoint: it begins with b'thes', where a file "
        "written by torch.save begins with a zip archive's b'PK\\x03\\x04'"
    )


def test_the_same_state_gives_the_same_bytes_wherever_it_is_saved(tmp_path):
    # The exported model's manifest hashes its checkpoints: a save must not depend on the
    # file's (temporary) name.
    state = {"network": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3}
    a = save_checkpoint(tmp_path / "checkpoint_final.pt", state)
    b = save_checkpoint(tmp_path / "other" / "model_weights.pt", state)
    assert a.read_bytes() == b.read_bytes()
    assert load_checkpoint(b)["epoch"] == 3
