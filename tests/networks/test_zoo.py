"""The model zoo: MONAI's networks sized from three different plans in 2D and 3D, their
padding to the sizes they take, and the constraints they refuse with a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segflow.errors import SegflowError
from segflow.networks import ZOO, NetworkVariant, ZooNetwork, build_network
from segflow.networks.catalog import ZOO_NAMES
from segflow.networks.zoo import fitted_size
from tests.networks.conftest import _configuration, _network_section

pytest.importorskip("monai")


def _plan(ndim, features, strides, patch, name):
    network = _network_section(ndim=ndim, features=features, strides=strides)
    return _configuration(network, patch_size=patch, name=name)


# Three plans of other depths, widths, strides and patches (not all divisible), in 2D and 3D,
# with (input channels, outputs).
PLANS = {
    "3d_iso_3stages": (_plan(3, (8, 16, 32), None, [16, 16, 16], "a"), 1, 3),
    "3d_aniso_4stages": (
        _plan(3, (8, 16, 32, 64), ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)), [12, 40, 36], "b"),
        2,
        2,
    ),
    "3d_hippocampus_5stages": (
        _plan(3, (16, 32, 64, 128, 160), None, [40, 56, 40], "c"),
        1,
        3,
    ),
    "2d_3stages": (_plan(2, (8, 16, 32), None, [16, 16], "d"), 1, 3),
    "2d_aniso_4stages": (
        _plan(2, (8, 16, 32, 64), ((1, 1), (1, 2), (2, 2), (2, 2)), [40, 36], "e"),
        2,
        2,
    ),
    "2d_6stages": (_plan(2, (16, 32, 64, 128, 256, 256), None, [56, 40], "f"), 3, 4),
}


def _build(name, conf, channels, outputs, deep_supervision=True, **variant):
    variant = NetworkVariant(architecture=name, **variant)
    if name == "SwinUNETR":  # its constructor calls .item(): not on the meta device
        return build_network(conf, channels, outputs, deep_supervision, variant).to("meta")
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        return build_network(conf, channels, outputs, deep_supervision, variant)


def test_the_light_name_list_matches_the_zoo():
    assert tuple(ZOO) == ZOO_NAMES


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_each_network_gives_the_planned_output_shape(name, plan):
    conf, channels, outputs = PLANS[plan]
    net = _build(name, conf, channels, outputs)
    assert isinstance(net, ZooNetwork) and net.num_deep_supervision_outputs == 1
    device = next(net.parameters()).device
    x = torch.zeros(2, channels, *conf.patch_size, device=device)
    with torch.no_grad():
        training = net(x)
        inference = net.set_deep_supervision(False)(x)
    assert isinstance(training, list) and len(training) == 1
    assert tuple(training[0].shape) == (2, outputs, *conf.patch_size)
    assert tuple(inference.shape) == (2, outputs, *conf.patch_size)
    assert sum(p.numel() for p in net.parameters()) > 0


def _monai_count(cls_name, **arguments):
    from monai.networks import nets

    with torch.device("meta"):
        return sum(p.numel() for p in getattr(nets, cls_name)(**arguments).parameters())


def test_the_networks_take_the_plans_widths_strides_and_patch():
    conf, channels, outputs = PLANS["3d_aniso_4stages"]
    common = {"spatial_dims": 3, "in_channels": channels, "out_channels": outputs}
    counts = {name: sum(p.numel() for p in _build(name, *PLANS["3d_aniso_4stages"]).parameters())
              for name in ("AttentionUNet", "UNetPlusPlus", "SegResNet", "UNETR")}  # fmt: skip
    # Attention U-Net: one level per stage, the plans' widths and (anisotropic) strides.
    assert counts["AttentionUNet"] == _monai_count(
        "AttentionUnet", channels=(8, 16, 32, 64),
        strides=((1, 2, 2), (2, 2, 2), (2, 2, 2)), **common,
    )  # fmt: skip
    # Another width gives another count: the sizing is what decides it.
    assert counts["AttentionUNet"] != _monai_count(
        "AttentionUnet", channels=(8, 16, 32, 128), strides=(2, 2, 2), **common
    )
    attention = _build("AttentionUNet", conf, channels, outputs)
    strides = [m.stride for m in attention.modules() if isinstance(m, nn.Conv3d)]
    assert (1, 2, 2) in strides
    assert counts["UNetPlusPlus"] == _monai_count(
        "BasicUNetPlusPlus", features=(8, 8, 16, 32, 64, 8), **common
    )
    assert counts["SegResNet"] == _monai_count("SegResNet", init_filters=8, **common)
    # UNETR: the patch 12x40x36 padded to multiples of its 16-voxel ViT patches.
    unetr = _build("UNETR", conf, channels, outputs)
    assert unetr.fixed_size == (16, 48, 48)
    assert counts["UNETR"] == _monai_count("UNETR", img_size=(16, 48, 48), feature_size=4, **common)
    swin = _build("SwinUNETR", conf, channels, outputs)
    assert swin.arguments["feature_size"] == 12
    assert swin.input_size((12, 40, 36)) == (32, 64, 64)


def test_padding_is_cropped_back_where_it_was_added():
    # A network that returns its input: any misplaced crop changes values.
    conv = nn.Conv3d(1, 1, 1, bias=False)
    nn.init.ones_(conv.weight)
    net = ZooNetwork("echo", conv, (8, 8, 8), None, 1, "x.", {}, deep_supervision=False)
    x = torch.randn(1, 1, 5, 12, 17)
    assert net.input_size((5, 12, 17)) == (8, 16, 24)
    assert torch.equal(net(x), x)
    assert torch.equal(net.set_deep_supervision(True)(x)[0], x)


def test_fitted_size():
    assert fitted_size((40, 56, 40), (16, 16, 16)) == (48, 64, 48)
    assert fitted_size((32, 32), (32, 32), min_voxels_at_bottom=2) == (64, 32)
    assert fitted_size((20, 30, 20), (32, 32, 32), min_voxels_at_bottom=2) == (32, 64, 32)


def test_a_fixed_size_network_refuses_a_larger_input():
    conf, channels, outputs = PLANS["3d_iso_3stages"]
    unetr = _build("UNETR", conf, channels, outputs)
    with pytest.raises(SegflowError, match=r"17x16x16 is larger than the 16x16x16"):
        unetr.input_size((17, 16, 16))


def test_segresnet_names_its_group_constraint():
    conf = _plan(3, (4, 8, 16), None, [16, 16, 16], "narrow")
    with pytest.raises(SegflowError) as err:
        _build("SegResNet", conf, 1, 2)
    assert "8 groups" in str(err.value) and "divisible by 8; got 4" in str(err.value)


def test_unet_settings_do_not_apply_to_the_zoo():
    with pytest.raises(SegflowError) as err:
        NetworkVariant(architecture="SegResNet", encoder_scale=2, norm="group")
    text = str(err.value)
    assert "encoder_scale: changes the U-Nets of the plans only" in text
    assert "norm: changes the U-Nets" in text
    with pytest.raises(SegflowError, match=r"did you mean 'SegResNet'"):
        NetworkVariant.from_dict({"architecture": "SegResNt"})
    assert NetworkVariant(architecture="UNETR").is_zoo


def test_heads_are_named_for_fine_tuning():
    conf, channels, outputs = PLANS["2d_3stages"]
    for name in ZOO_NAMES:
        net = _build(name, conf, channels, outputs)
        heads = [k for k in net.state_dict() if k.startswith(net.head_prefixes)]
        assert heads, name
        # Every head tensor has one slice per output (the layer fine-tuning keeps fresh).
        weights = [net.state_dict()[k] for k in heads if k.endswith("weight")]
        assert weights and all(w.shape[0] == outputs for w in weights), name


# Deepest encoder widths: Attention U-Net's last planned width; UNet++'s f3 (the plans' fourth
# width, or the third doubled); SegResNet's init_filters x 8; UNETR's ViT-B 768; SwinUNETR's
# 16 x feature_size (12 for f0 = 8).
ENCODER_WIDTHS = {"UNetPlusPlus": 64, "SegResNet": 64, "UNETR": 768, "SwinUNETR": 192}


@pytest.mark.parametrize("plan", ["3d_iso_3stages", "2d_aniso_4stages"])
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_the_encoder_is_the_networks_own_down_path(name, plan):
    conf, channels, outputs = PLANS[plan]
    torch.manual_seed(0)
    network = build_network(conf, channels, outputs, False, NetworkVariant(architecture=name))
    encoder = network.encoder()
    own = {id(p) for p in network.parameters()}
    mine = {id(p) for p in encoder.parameters()}
    heads = {id(p) for n, p in network.named_parameters() if n.startswith(network.head_prefixes)}
    assert mine and mine < own and not mine & heads  # shared layers, no decoder, no head
    x = torch.randn(2, channels, *conf.patch_size)
    features = encoder(x)
    width = ENCODER_WIDTHS.get(name, conf.network.features_per_stage[-1])
    assert features.shape[:2] == (2, width) and features.ndim == x.ndim
    padded = network.input_size(conf.patch_size)
    assert all(f < p for f, p in zip(features.shape[2:], padded, strict=True))
    # Training the encoder trains the network: a step on its output moves the shared layers.
    before = {n: p.detach().clone() for n, p in network.named_parameters()}
    features.square().mean().backward()
    with torch.no_grad():
        for p in encoder.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    moved = [n for n, p in network.named_parameters() if not torch.equal(p, before[n])]
    assert moved and not any(n.startswith(network.head_prefixes) for n in moved)
