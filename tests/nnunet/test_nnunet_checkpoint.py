"""Reading nnU-Net v2 checkpoints without running pickled code."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from segflow.errors import SegflowError
from segflow.nnunet.checkpoint import ALLOWED_GLOBALS, load_nnunet_checkpoint, unsafe_globals


def _plans() -> dict:
    return {"dataset_name": "Dataset901_Interop", "configurations": {}}


def nnunet_like_state(**overrides) -> dict:
    """What nnU-Net's trainer saves: plain data, numpy scalars in the log, a torch.device."""
    state = {
        "network_weights": {"encoder.stages.0.0.convs.0.conv.weight": torch.ones(2, 1, 3, 3)},
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99}]},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.25)], "train_losses": [np.float32(-0.1)]},
        "_best_ema": np.float64(0.25),
        "current_epoch": 3,
        "init_args": {
            "plans": _plans(),
            "configuration": "2d",
            "fold": 0,
            "dataset_json": {"labels": {"background": 0, "a": 1}},
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1),
    }
    state.update(overrides)
    return state


class _Payload:
    """Creates a file when unpickled: what a malicious checkpoint would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_reads_what_nnunet_saves(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save(nnunet_like_state(), path)
    checkpoint = load_nnunet_checkpoint(path)
    assert checkpoint.trainer_name == "nnUNetTrainer"
    assert checkpoint.configuration == "2d"
    assert checkpoint.fold == 0
    assert checkpoint.epoch == 3
    assert checkpoint.mirror_axes == (0, 1)
    assert checkpoint.plans == _plans()
    weight = checkpoint.network_weights["encoder.stages.0.0.convs.0.conv.weight"]
    assert weight.shape == (2, 1, 3, 3) and float(weight.sum()) == 18.0


def test_a_compiled_networks_prefix_is_removed(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    weights = {"_orig_mod.decoder.seg_layers.0.bias": torch.zeros(2)}
    torch.save(nnunet_like_state(network_weights=weights), path)
    assert list(load_nnunet_checkpoint(path).network_weights) == ["decoder.seg_layers.0.bias"]


def test_a_crafted_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "checkpoint_final.pth"
    torch.save(nnunet_like_state(logging={"x": _Payload(marker)}), path)
    assert unsafe_globals(path) == ["io.open"]
    with pytest.raises(SegflowError) as err:
        load_nnunet_checkpoint(path)
    assert not marker.exists()
    message = err.value.render()
    assert "io.open" in message and "not loaded" in message
    # The payload is live: an ordinary unpickling of the same file runs it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_legacy_pickle_with_a_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "checkpoint_final.pth"
    torch.save(nnunet_like_state(x=_Payload(marker)), path, _use_new_zipfile_serialization=False)
    with pytest.raises(SegflowError, match="cannot read the nnU-Net checkpoint as plain data"):
        load_nnunet_checkpoint(path)
    assert not marker.exists()


def test_a_bare_pickle_is_not_run(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "checkpoint_final.pth"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(SegflowError):
        load_nnunet_checkpoint(path)
    assert not marker.exists()


def test_missing_entries_are_all_named(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    state = nnunet_like_state()
    del state["trainer_name"]
    del state["init_args"]["plans"]
    torch.save(state, path)
    with pytest.raises(SegflowError) as err:
        load_nnunet_checkpoint(path)
    wheres = [p.message for p in err.value.problems]
    assert any("'trainer_name'" in m for m in wheres)
    assert any("'init_args' lacks 'plans'" in m for m in wheres)


def test_missing_file(tmp_path):
    with pytest.raises(SegflowError, match="not found"):
        load_nnunet_checkpoint(tmp_path / "nope.pth")


def test_the_allow_list_holds_no_callable_that_runs_code():
    # Only numpy's scalar constructor, dtypes and torch.device: nothing that opens files,
    # imports modules or evaluates text.
    for name in ALLOWED_GLOBALS:
        assert name.startswith(("numpy.", "torch.device")), name
    assert not any(n.split(".")[0] in ("builtins", "io", "os") for n in ALLOWED_GLOBALS)
