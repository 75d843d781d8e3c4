"""nnU-Net's network weights as segflow's and back, checked name by name and shape by shape.

The reference is recorded by nnU-Net itself (``benchmarks/make_nnunet_fixture.py``): the
state dicts of its PlainConvUNet and ResidualEncoderUNet (3 stages, 4..16 features) and their
outputs for weights from a formula, which segflow's networks must reproduce through the
mapping.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from segflow.errors import SegflowError
from segflow.networks import build_network
from segflow.nnunet.weights import (
    nnunet_name,
    nnunet_to_segflow,
    segflow_name,
    segflow_to_nnunet,
)
from segflow.planning.plans import ConfigurationPlan

REPO = Path(__file__).resolve().parents[2]
RECORD = REPO / "tests" / "interop" / "data" / "nnunet_fixture" / "nnunet_networks.json"
sys.path.insert(0, str(REPO / "benchmarks"))
from make_nnunet_fixture import deterministic_weights  # noqa: E402

ARCHITECTURES = {"PlainConvUNet": ("n_conv_per_stage", [2, 2, 2]),
                 "ResidualEncoderUNet": ("n_blocks_per_stage", [1, 3, 4])}  # fmt: skip


def segflow_network(architecture: str) -> torch.nn.Module:
    key, blocks = ARCHITECTURES[architecture]
    network = {
        "architecture": architecture, "n_stages": 3, "features_per_stage": [4, 8, 16],
        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        key: blocks, "n_conv_per_stage_decoder": [2, 2], "conv_op": "Conv3d",
        "conv_bias": True, "norm_op": "InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
        "nonlin": "LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }  # fmt: skip
    plan = {"patch_size": [16, 16, 16], "network": network}
    configuration = ConfigurationPlan("3d_fullres", plan)
    return build_network(configuration, 1, 3, False)


def nnunet_state(architecture: str) -> dict[str, torch.Tensor]:
    record = json.loads(RECORD.read_text())[architecture]
    return deterministic_weights({name: shape for name, shape in record["state_dict"]})


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_nnunets_weights_give_nnunets_outputs_in_segflow(architecture):
    record = json.loads(RECORD.read_text())[architecture]
    network = segflow_network(architecture)
    weights = nnunet_to_segflow(nnunet_state(architecture), network.state_dict())
    assert sorted(weights) == sorted(network.state_dict())
    network.load_state_dict(weights)
    network.eval()
    with torch.no_grad():
        out = network(torch.linspace(-1, 1, 16**3).reshape(1, 1, 16, 16, 16))
    assert float(out.sum()) == pytest.approx(record["output_sum"], rel=1e-4)
    assert float(out.abs().sum()) == pytest.approx(record["output_abs_sum"], rel=1e-4)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_written_back_as_nnunets_state_dict_with_every_alias(architecture):
    theirs = nnunet_state(architecture)
    ours = nnunet_to_segflow(theirs, segflow_network(architecture).state_dict())
    back = segflow_to_nnunet(ours)
    assert list(back) == list(back) and sorted(back) == sorted(theirs)
    assert all(torch.equal(back[name], theirs[name]) for name in theirs)


def test_names_both_ways():
    assert segflow_name("encoder.stages.2.0.convs.1.norm.bias") == "encoder.stages.2.1.norm.bias"
    assert segflow_name("encoder.stages.1.blocks.0.skip.1.conv.weight") == (
        "encoder.stages.1.0.shortcut.1.conv.weight"
    )
    assert segflow_name("decoder.seg_layers.1.weight") == "decoder.heads.1.weight"
    assert nnunet_name("decoder.upsamplers.0.bias") == "decoder.transpconvs.0.bias"
    assert nnunet_name("encoder.stem.norm.weight") == "encoder.stem.convs.0.norm.weight"
    assert segflow_name("decoder.attention.0.qkv.weight") is None
    assert nnunet_name("decoder.attention.0.qkv.weight") is None


def test_every_mismatch_is_named():
    network = segflow_network("PlainConvUNet")
    theirs = nnunet_state("PlainConvUNet")
    wider = torch.zeros(4, 2, 3, 3, 3)  # every copy of the first convolution, as nnU-Net has
    for prefix in ("", "decoder."):
        for layer in ("conv", "all_modules.0"):
            theirs[f"{prefix}encoder.stages.0.0.convs.0.{layer}.weight"] = wider
    theirs["decoder.extra_layer.weight"] = torch.zeros(1)
    del theirs["decoder.seg_layers.1.bias"]
    theirs["decoder.encoder.stages.1.0.convs.0.conv.bias"] = torch.full((8,), 7.0)
    with pytest.raises(SegflowError) as err:
        nnunet_to_segflow(theirs, network.state_dict(), "ckpt.pth")
    text = err.value.render()
    assert "encoder.stages.0.0.convs.0.conv.weight: shape (4, 2, 3, 3, 3)" in text
    assert "(4, 1, 3, 3, 3)" in text
    assert "decoder.extra_layer.weight: has no counterpart" in text
    assert "decoder.heads.1.bias: the network's tensor has no weights" in text
    assert "decoder.encoder.stages.1.0.convs.0.conv.bias: differs from" in text
    assert len(err.value.problems) == 4


def test_a_network_nnunet_cannot_build_is_refused_on_the_way_out():
    with pytest.raises(SegflowError, match=r"decoder\.attention\.0\.qkv\.weight"):
        segflow_to_nnunet({"decoder.attention.0.qkv.weight": torch.zeros(3)})
