"""The model zoo: MONAI's networks sized from three different plans in 2D and 3D, their
padding to the sizes they take, the deep supervision of MedNeXt and SegResNetDS, and the
constraints they refuse with a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segflow.errors import SegflowError
from segflow.networks import ZOO, NetworkVariant, ZooNetwork, build_network
from segflow.networks.catalog import ZOO_NAMES
from segflow.networks.variants import MEDNEXT_KERNELS, MEDNEXT_SIZE_NAMES
from segflow.networks.zoo import (
    MEDNEXT_KERNEL_SIZES,
    MEDNEXT_SIZES,
    ZooPlan,
    build_zoo_network,
    fitted_size,
)
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


#: The families with nnU-Net's kind of deep supervision.
DEEPLY_SUPERVISED = ("MedNeXt", "SegResNetDS")
SINGLE_OUTPUT = tuple(n for n in ZOO_NAMES if n not in DEEPLY_SUPERVISED)


def test_the_light_name_list_matches_the_zoo():
    assert tuple(ZOO) == ZOO_NAMES
    assert tuple(MEDNEXT_SIZES) == MEDNEXT_SIZE_NAMES
    assert MEDNEXT_KERNEL_SIZES == MEDNEXT_KERNELS


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("name", SINGLE_OUTPUT)
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
        # Every head layer has one channel per output (the layers fine-tuning keeps fresh;
        # MedNeXt's are transposed convolutions, whose weights hold the outputs second).
        layers = [m for n, m in net.named_modules() if f"{n}.".startswith(net.head_prefixes)
                  and hasattr(m, "out_channels")]  # fmt: skip
        assert layers and all(m.out_channels == outputs for m in layers), name


# Deepest encoder widths: Attention U-Net's last planned width; UNet++'s f3 (the plans' fourth
# width, or the third doubled); SegResNet's init_filters x 8; UNETR's ViT-B 768; SwinUNETR's
# 16 x feature_size (12 for f0 = 8).
# MedNeXt's and SegResNetDS's f0 x 2**downsamplings (8 x 4 for three planned stages, 8 x 8
# for four).
ENCODER_WIDTHS = {"UNetPlusPlus": 64, "SegResNet": 64, "UNETR": 768, "SwinUNETR": 192}
DEEPEST = {"3d_iso_3stages": 32, "2d_aniso_4stages": 64}


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
    if name in DEEPLY_SUPERVISED:
        width = DEEPEST[plan]
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


# Deep supervision: (plan, the deep-supervision outputs). One downsampling by 2 per planned
# one (at most four); outputs at the decoder's resolutions, the bottleneck's not (as the
# U-Net), those whose patch size is whole: 12x40x36 has no whole 1/8.
DEEP_SUPERVISION = {
    "3d_iso_3stages": 2,  # 16^3: 1, 1/2 (bottleneck 1/4)
    "3d_aniso_4stages": 3,  # 12x40x36: 1, 1/2, 1/4 (padded to 16x40x40 for its 1/8)
    "3d_hippocampus_5stages": 4,  # 40x56x40, four downsamplings: 1 .. 1/8 (bottleneck 1/16)
    "2d_3stages": 2,
    "2d_aniso_4stages": 3,  # 40x36: 1, 1/2, 1/4
    "2d_6stages": 4,  # five planned downsamplings, four taken: 1 .. 1/8 of 56x40
}


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("name", [("MedNeXt", "S", 3), ("MedNeXt", "B", 5), ("SegResNetDS",)])
def test_deeply_supervised_networks_give_the_planned_outputs(name, plan):
    name, *mednext = name
    conf, channels, outputs = PLANS[plan]
    size = dict(zip(("size", "kernel_size"), mednext, strict=False))
    net = _build(name, conf, channels, outputs, **size)
    count = DEEP_SUPERVISION[plan]
    assert net.num_deep_supervision_outputs == count
    assert net.deep_supervision_scales == [(1 / 2**k,) * conf.ndim for k in range(count)]
    device = next(net.parameters()).device
    x = torch.zeros(2, channels, *conf.patch_size, device=device)
    with torch.no_grad():
        training = net.train()(x)
        validation = net.eval()(x)  # the trainer validates in evaluation mode
        inference = net.set_deep_supervision(False)(x)
    for result in (training, validation):
        assert [tuple(o.shape) for o in result] == [
            (2, outputs, *(p // 2**k for p in conf.patch_size)) for k in range(count)
        ]
    assert tuple(inference.shape) == (2, outputs, *conf.patch_size)
    assert not net.network.training  # only the top flag was switched, and back


def test_mednext_takes_the_papers_sizes_and_the_plans_depth():
    conf, channels, outputs = PLANS["3d_hippocampus_5stages"]
    common = {"spatial_dims": 3, "in_channels": channels, "out_channels": outputs,
              "init_filters": 16, "deep_supervision": True}  # fmt: skip
    # Five planned stages: the paper's five, as MONAI's own MedNeXtS/B/M/L (f0 = 16 here).
    for size in MEDNEXT_SIZE_NAMES:
        for kernel in MEDNEXT_KERNELS:
            net = _build("MedNeXt", conf, channels, outputs, size=size, kernel_size=kernel)
            count = sum(p.numel() for p in net.parameters())
            assert count == _monai_count(
                "MedNeXt", kernel_size=kernel, **_paper_mednext(size), **common
            ), (size, kernel)
    small = sum(p.numel() for p in _build("MedNeXt", conf, 1, 3, size="S").parameters())
    large = sum(p.numel() for p in _build("MedNeXt", conf, 1, 3, size="L").parameters())
    assert large > 4 * small
    # Three planned stages: two downsamplings, the outermost stages of the paper's size.
    net = _build("MedNeXt", *PLANS["3d_iso_3stages"], size="L")
    assert net.arguments["blocks_down"] == [3, 4] and net.arguments["blocks_up"] == [4, 3]
    assert net.arguments["blocks_bottleneck"] == 8 and net.arguments["init_filters"] == 8
    assert net.arguments["kernel_size"] == 3  # the default
    kernels = {m.kernel_size for m in net.modules() if isinstance(m, nn.Conv3d) and m.groups > 1}
    assert kernels == {(3, 3, 3)}
    net5 = _build("MedNeXt", *PLANS["3d_iso_3stages"], kernel_size=5)
    kernels = {m.kernel_size for m in net5.modules() if isinstance(m, nn.Conv3d) and m.groups > 1}
    assert kernels == {(5, 5, 5)} and net5.arguments["encoder_expansion_ratio"] == [2, 3]


def _paper_mednext(size):
    """MONAI's create_mednext arguments of ``size`` (the paper's Table 1)."""
    two = ((2,) * 4, 2, (2,) * 4)
    expansion = {
        "S": two,
        "B": ((2, 3, 4, 4), 4, (4, 4, 3, 2)),
        "M": ((2, 3, 4, 4), 4, (4, 4, 3, 2)),
        "L": ((3, 4, 8, 8), 8, (8, 8, 4, 3)),
    }
    blocks = {
        "S": two,
        "B": two,
        "M": ((3, 4, 4, 4), 4, (4, 4, 4, 3)),
        "L": ((3, 4, 8, 8), 8, (8, 8, 4, 3)),
    }
    (down, middle, up), (bd, bm, bu) = expansion[size], blocks[size]
    return {
        "encoder_expansion_ratio": down,
        "bottleneck_expansion_ratio": middle,
        "decoder_expansion_ratio": up,
        "blocks_down": bd,
        "blocks_bottleneck": bm,
        "blocks_up": bu,
        "use_residual_connection": True,
    }


def test_segresnet_ds_takes_auto3dsegs_blocks_to_the_plans_depth():
    conf, channels, outputs = PLANS["3d_aniso_4stages"]
    net = _build("SegResNetDS", conf, channels, outputs)
    assert net.arguments["blocks_down"] == [1, 2, 2, 4] and net.arguments["dsdepth"] == 3
    assert net.input_size((12, 40, 36)) == (16, 40, 40)
    assert sum(p.numel() for p in net.parameters()) == _monai_count(
        "SegResNetDS", spatial_dims=3, in_channels=2, out_channels=2, init_filters=8,
        norm="instance", blocks_down=(1, 2, 2, 4), dsdepth=3,
    )  # fmt: skip


def test_deep_supervision_padding_keeps_each_outputs_grid():
    # A patch of 10 along an axis, padded to 12 after it (two downsamplings): output k's
    # first 10 / 2**k voxels are the patch's own, whatever the padding holds.
    conf = _plan(3, (8, 16, 32), ((1, 1, 1), (1, 2, 2), (2, 2, 2)), [10, 16, 16], "pad")
    torch.manual_seed(0)
    net = build_network(conf, 1, 2, True, NetworkVariant(architecture="MedNeXt", size="S"))
    net.eval()
    x = torch.randn(1, 1, 10, 16, 16)
    padded, before = net.sizes.pad(x)
    assert tuple(padded.shape[2:]) == (12, 16, 16) and before == [0, 0, 0]
    assert torch.equal(padded[:, :, :10], x) and not padded[:, :, 10:].any()
    with torch.no_grad():
        outputs = net(x)
        net.network.training = True  # MONAI's own outputs for the padded input
        full = net.network(padded)
        net.network.training = False
    assert len(outputs) == 2
    for k, o in enumerate(outputs):
        assert torch.equal(o, full[k][..., : 10 // 2**k, : 16 // 2**k, : 16 // 2**k])


def test_mednext_settings_name_their_constraints():
    with pytest.raises(SegflowError) as err:
        NetworkVariant(architecture="MedNeXt", size="XL", kernel_size=7)
    text = str(err.value)
    assert "unknown MedNeXt size 'XL'" in text and "(valid: S, B, M, L)" in text
    assert "kernel_size: must be 3 or 5, got 7" in text
    with pytest.raises(SegflowError, match=r"size: sets MedNeXt's size only, not 'SegResNetDS'"):
        NetworkVariant(architecture="SegResNetDS", size="S")
    with pytest.raises(SegflowError, match=r"sets MedNeXt's kernel size only, not the plan"):
        NetworkVariant(kernel_size=5)
    assert NetworkVariant(architecture="MedNeXt", size="L", kernel_size=5).is_zoo


def test_a_plan_of_one_stage_is_refused_naming_it():
    flat = ZooPlan((8, 8, 8), 1, 2, (8,), ((1, 1, 1),))
    for name in DEEPLY_SUPERVISED:
        with pytest.raises(SegflowError, match=rf"{name} needs at least 2 planned stages, got 1"):
            build_zoo_network(name, flat)
