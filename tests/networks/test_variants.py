"""The BraTS 2021 network variants (arXiv 2112.04653), the network registry, variant settings.

Parameter counts are worked out by hand from the layer shapes of a 3-stage U-Net (features 4, 8,
16; two 3x3(x3) convolutions with bias and an affine normalization per stage; strides 1, 2, 2;
one input channel, three outputs): a convolution has ``in * out * kernel + out`` parameters, an
affine normalization ``2 * channels``.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from segflow.errors import SegflowError
from segflow.networks import (
    BRATS2021_VARIANTS,
    NETWORKS,
    AxialAttention,
    NetworkVariant,
    PlainConvUNet,
    ResidualEncoderUNet,
    build_network,
)
from segflow.networks.blocks import GroupNorm, InstanceNorm2d, InstanceNorm3d
from segflow.planning import ConfigurationPlan

K = {2: 9, 3: 27}  # weights of a 3x3 (3x3x3) kernel
T = {2: 4, 3: 8}  # weights of a 2x2 (2x2x2) transposed-convolution kernel
# Small attention for the hand counts: 2 heads of 2 at the finest attended stage.
SMALL_ATTENTION = {"axial_attention": True, "attention_heads": 2, "attention_head_size": 2}


@pytest.fixture
def build(network_section, make_configuration):
    """``build(ndim, variant=None, ..., layers=None, **section)``: a small U-Net.

    ``layers`` replaces keys of the network section (``norm_op``, ...).
    """

    def make(
        ndim, variant=None, deep_supervision=True, architecture="PlainConvUNet", layers=None, **kw
    ):
        conf = make_configuration(
            {**network_section(architecture, ndim=ndim, **kw), **(layers or {})}
        )
        return build_network(conf, 1, 3, deep_supervision, variant)

    return make


def count(net):
    return sum(p.numel() for p in net.parameters())


def baseline_count(k, t):
    encoder = (
        (1 * 4 * k + 4) + 2 * 4 + (4 * 4 * k + 4) + 2 * 4  # stage 0: conv 1->4, norm, 4->4, norm
        + (4 * 8 * k + 8) + 2 * 8 + (8 * 8 * k + 8) + 2 * 8  # stage 1: 4->8, 8->8
        + (8 * 16 * k + 16) + 2 * 16 + (16 * 16 * k + 16) + 2 * 16  # stage 2: 8->16, 16->16
    )  # fmt: skip
    decoder = (
        (16 * 8 * t + 8)  # transposed conv 16->8
        + (16 * 8 * k + 8) + 2 * 8 + (8 * 8 * k + 8) + 2 * 8  # merge (8 up + 8 skip)->8, 8->8
        + (8 * 3 + 3)  # head 8->3
        + (8 * 4 * t + 4)  # transposed conv 8->4
        + (8 * 4 * k + 4) + 2 * 4 + (4 * 4 * k + 4) + 2 * 4  # merge (4 + 4)->4, 4->4
        + (4 * 3 + 3)  # head 4->3
    )  # fmt: skip
    return encoder + decoder


def larger_encoder_count(k, t):
    # Encoder features doubled (8, 16, 32); the decoder keeps 4 and 8.
    encoder = (
        (1 * 8 * k + 8) + 2 * 8 + (8 * 8 * k + 8) + 2 * 8
        + (8 * 16 * k + 16) + 2 * 16 + (16 * 16 * k + 16) + 2 * 16
        + (16 * 32 * k + 32) + 2 * 32 + (32 * 32 * k + 32) + 2 * 32
    )  # fmt: skip
    decoder = (
        (32 * 8 * t + 8)  # transposed conv from the wider bottleneck: 32->8
        + (24 * 8 * k + 8) + 2 * 8 + (8 * 8 * k + 8) + 2 * 8  # merge (8 up + 16 skip)->8
        + (8 * 3 + 3)
        + (8 * 4 * t + 4)  # 8->4 (the decoder's own width)
        + (12 * 4 * k + 4) + 2 * 4 + (4 * 4 * k + 4) + 2 * 4  # merge (4 up + 8 skip)->4
        + (4 * 3 + 3)
    )  # fmt: skip
    return encoder + decoder


def attention_count(ndim):
    # Finest attended stage (4 channels): 2 heads of 2 = 4 channels, no projection; per axis
    # a multi-head attention: in-projection 3 * 4 * 4 + 3 * 4, out-projection 4 * 4 + 4.
    finest = ndim * ((3 * 4 * 4 + 3 * 4) + (4 * 4 + 4))
    # The coarser one (8 channels): 4 heads of 4 = 16 channels; 1x1 convolutions 8->16, 16->8.
    coarser = (8 * 16 + 16) + (16 * 8 + 8) + ndim * ((3 * 16 * 16 + 3 * 16) + (16 * 16 + 16))
    return finest + coarser


def test_hand_counts_by_number():
    assert baseline_count(K[2], T[2]) == 7_594
    assert baseline_count(K[3], T[3]) == 21_554
    assert larger_encoder_count(K[2], T[2]) == 18_264 + 4_158  # encoder + decoder
    assert larger_encoder_count(K[3], T[3]) == 54_120 + 11_070
    assert attention_count(2) == 160 + 280 + 2_176
    assert attention_count(3) == 240 + 280 + 3_264


@pytest.mark.parametrize("ndim", [2, 3])
def test_parameter_count_of_every_variant(ndim, build):
    k, t = K[ndim], T[ndim]
    assert count(build(ndim)) == baseline_count(k, t)
    assert count(build(ndim, NetworkVariant(encoder_scale=2))) == larger_encoder_count(k, t)
    # Group and batch normalization have one scale and shift per channel, as instance norm.
    assert count(build(ndim, NetworkVariant(norm="group", groups=4))) == baseline_count(k, t)
    assert count(build(ndim, NetworkVariant(norm="batch"))) == baseline_count(k, t)
    with_attention = build(ndim, NetworkVariant(**SMALL_ATTENTION))
    assert count(with_attention) == baseline_count(k, t) + attention_count(ndim)
    both = NetworkVariant(encoder_scale=2, norm="group", groups=4)
    assert count(build(ndim, both)) == larger_encoder_count(k, t)


def test_hippocampus_3d_fullres_parameter_counts():
    # Hippocampus 3d_fullres as nnU-Net plans it (features 32, 64, 128, 256; 1 channel, 3
    # classes), from the recorded reference networks; BL is nnU-Net's count.
    recorded = json.loads((Path(__file__).parent / "data" / "nnunet_networks.json").read_text())
    entry = next(n for n in recorded["networks"] if n["name"] == "hippocampus/default/3d_fullres")
    conf = ConfigurationPlan(
        "3d_fullres", {"patch_size": entry["patch_size"], "network": entry["network"]}
    )
    counts = {}
    for name, variant in BRATS2021_VARIANTS.items():
        with torch.device("meta"):
            net = build_network(conf, 1, 3, True, variant)
        counts[name] = count(net)
    # BL+L: encoder 64, 128, 256, 512. BL+AA: attention at all 3 decoder stages, 4 heads of
    # 16 (32 channels, projected to 64), 8 of 32 (64 -> 256), 16 of 64 (128 -> 1024).
    assert counts == {
        "BL": 5_603_177,
        "BL+L": 16_983_561,
        "BL+GN": 5_603_177,
        "BL+AA": 19_338_377,
        "BL+L+GN": 16_983_561,
    }


@pytest.mark.parametrize(("ndim", "size"), [(2, (16, 12)), (3, (8, 16, 12))], ids=["2d", "3d"])
@pytest.mark.parametrize("name", list(BRATS2021_VARIANTS))
@pytest.mark.parametrize("architecture", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_output_shapes_of_every_variant(ndim, size, name, architecture, build):
    # Features 16, 32, 64: the paper's defaults fit (16 groups; 4 heads of 16 = 16 channels).
    variant = BRATS2021_VARIANTS[name]
    net = build(ndim, variant, architecture=architecture, features=(16, 32, 64))
    assert type(net) is NETWORKS[architecture]
    x = torch.randn(2, 1, *size)
    outputs = net(x)
    half = tuple(s // 2 for s in size)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, *size), (2, 3, *half)]
    net.set_deep_supervision(False)
    with torch.no_grad():
        assert tuple(net(x).shape) == (2, 3, *size)
    sum(o.sum() for o in outputs).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_larger_encoder_doubles_up_to_the_cap_and_keeps_the_decoder(build):
    assert NetworkVariant(encoder_scale=2).encoder_features((32, 64, 128, 256, 320, 320)) == (
        64, 128, 256, 512, 512, 512,
    )  # fmt: skip
    # nnU-Net's 2D widths reach 512 already: never narrower than planned.
    assert NetworkVariant(encoder_scale=2, encoder_max_features=320).encoder_features(
        (32, 256, 512)
    ) == (64, 320, 512)
    net = build(3, NetworkVariant(encoder_scale=2, encoder_max_features=16))
    assert [stage[0].conv.out_channels for stage in net.encoder.stages] == [8, 16, 16]
    assert [up.out_channels for up in net.decoder.upsamplers] == [8, 4]
    assert [up.in_channels for up in net.decoder.upsamplers] == [16, 8]
    assert [stage[0].conv.in_channels for stage in net.decoder.stages] == [8 + 16, 4 + 8]
    resenc = build(2, NetworkVariant(encoder_scale=2), architecture="ResidualEncoderUNet")
    assert resenc.encoder.stem.conv.out_channels == 8


def _norms(net):
    kinds = (nn.modules.instancenorm._InstanceNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
    return [m for m in net.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("ndim", [2, 3])
def test_group_and_batch_normalization_everywhere(ndim, build):
    baseline = _norms(build(ndim))
    grouped = _norms(build(ndim, NetworkVariant(norm="group", groups=4)))
    assert len(grouped) == len(baseline) == 10  # 2 in each of 3 encoder, 2 decoder stages
    assert all(type(m) is GroupNorm and m.num_groups == 4 for m in grouped)
    assert all(m.eps == 1e-5 and m.affine for m in grouped)  # the plan's eps and affine
    batch = _norms(build(ndim, NetworkVariant(norm="batch")))
    assert all(type(m) is {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[ndim] for m in batch)
    assert len(batch) == 10
    # Instance norm in place of a planned batch norm is segflow's (the CPU fast path).
    planned_batch = build(
        ndim, NetworkVariant(norm="instance"), layers={"norm_op": f"BatchNorm{ndim}d"}
    )
    instance = {2: InstanceNorm2d, 3: InstanceNorm3d}[ndim]
    assert all(type(m) is instance for m in _norms(planned_batch))


def test_group_normalization_equals_torch_group_norm():
    ours = GroupNorm(8, groups=4, eps=1e-5, affine=True)
    theirs = nn.GroupNorm(4, 8, eps=1e-5, affine=True)
    x = torch.randn(2, 8, 3, 4, 5)
    torch.testing.assert_close(ours(x), theirs(x))


def test_groups_that_do_not_divide_a_width_are_an_error(build):
    with pytest.raises(SegflowError) as info:
        build(2, NetworkVariant(norm="group"))
    assert (
        "network variant.groups: 16 groups do not divide the network's width(s) 4, 8 "
        "(widths: 4, 8, 16); the largest count up to 16 that fits is 4"
    ) in str(info.value)
    # The larger encoder's widths count too: 8, 16, 32 in the encoder, 4 and 8 in the decoder.
    with pytest.raises(SegflowError, match="width\\(s\\) 4, 8 \\(widths: 4, 8, 16, 32\\)"):
        build(2, NetworkVariant(norm="group", groups=16, encoder_scale=2))


def test_attention_at_the_coarsest_four_stages_heads_doubling():
    variant = NetworkVariant(axial_attention=True)
    assert variant.attention_per_stage(5) == [(32, 128), (16, 64), (8, 32), (4, 16), None]
    assert variant.attention_per_stage(3) == [(16, 64), (8, 32), (4, 16)]
    assert NetworkVariant(axial_attention=True, attention_stages=1).attention_per_stage(3) == [
        (4, 16),
        None,
        None,
    ]
    assert NetworkVariant().attention_per_stage(3) == [None, None, None]


@pytest.mark.parametrize("ndim", [2, 3])
def test_attention_modules_sit_on_the_upsampled_features(ndim, build):
    net = build(ndim, NetworkVariant(**SMALL_ATTENTION), features=(4, 8, 16, 32, 64, 128))
    attention = list(net.decoder.attention)
    # 5 upsampling steps from the bottleneck up: the coarsest four attended, the finest not.
    assert [type(a) for a in attention] == [AxialAttention] * 4 + [nn.Identity]
    specs = [(a.heads, a.head_size) for a in attention[:4]]
    assert specs == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert [len(a.axes) for a in attention[:4]] == [ndim] * 4
    channels = [up.out_channels for up in net.decoder.upsamplers]
    assert channels == [64, 32, 16, 8, 4]
    # Projected where heads x head size differs from the channels: 256 vs 64, 64 vs 32, 4 vs 8;
    # 4 heads of 4 fit the 16 channels as they are.
    conv = {2: nn.Conv2d, 3: nn.Conv3d}[ndim]
    assert [type(a.project_in) for a in attention[:4]] == [conv, conv, nn.Identity, conv]


def _naive_axial_attention(x, weights, heads, head_size):
    """Per-axis multi-head self-attention with explicit loops, as written in the paper's terms."""
    embed = heads * head_size

    def conv1x1(h, w, b):
        return torch.einsum("oc,bc...->bo...", w, h) + b.reshape(1, -1, *[1] * (h.ndim - 2))

    h = conv1x1(x, *weights["in"]) if "in" in weights else x
    spatial = h.shape[2:]
    for axis in range(len(spatial)):
        w_qkv, b_qkv, w_out, b_out = weights["axes"][axis]
        out = torch.empty_like(h)
        others = [range(n) if a != axis else [slice(None)] for a, n in enumerate(spatial)]
        for b in range(h.shape[0]):
            for index in itertools.product(*others):
                seq = h[(b, slice(None), *index)].T  # (length, embed)
                q, k, v = (seq @ w.T + bias for w, bias in zip(w_qkv, b_qkv, strict=True))
                mixed = []
                for head in range(heads):
                    part = slice(head * head_size, (head + 1) * head_size)
                    scores = torch.einsum("id,jd->ij", q[:, part], k[:, part])
                    mixed.append(torch.softmax(scores / math.sqrt(head_size), dim=1) @ v[:, part])
                result = torch.cat(mixed, dim=1) @ w_out.T + b_out
                assert result.shape == (spatial[axis], embed)
                out[(b, slice(None), *index)] = result.T
        h = out
    return x + (conv1x1(h, *weights["out"]) if "out" in weights else h)


@pytest.mark.parametrize(
    ("shape", "heads", "head_size"),
    [((2, 3, 3, 4, 5), 2, 4), ((2, 3, 4, 5), 2, 4), ((1, 6, 5, 3), 3, 2)],
    ids=["3d-projected", "2d-projected", "2d-no-projection"],
)
def test_axial_attention_equals_naive_per_axis_attention(shape, heads, head_size):
    ndim, channels, embed = len(shape) - 2, shape[1], heads * head_size
    module = AxialAttention(ndim, channels, heads, head_size).double()

    def rand(*s):
        return torch.randn(*s, dtype=torch.float64) * 0.5

    weights = {
        "axes": [
            (
                [rand(embed, embed) for _ in range(3)],  # query, key, value
                [rand(embed) for _ in range(3)],
                rand(embed, embed),  # output
                rand(embed),
            )
            for _ in range(ndim)
        ]
    }
    if embed != channels:
        weights["in"] = (rand(embed, channels), rand(embed))
        weights["out"] = (rand(channels, embed), rand(channels))
    with torch.no_grad():  # copy the weights over
        ones = (1,) * ndim
        if "in" in weights:
            module.project_in.weight.copy_(weights["in"][0].reshape(embed, channels, *ones))
            module.project_in.bias.copy_(weights["in"][1])
            module.project_out.weight.copy_(weights["out"][0].reshape(channels, embed, *ones))
            module.project_out.bias.copy_(weights["out"][1])
        else:
            assert isinstance(module.project_in, nn.Identity)
        for attention, (w_qkv, b_qkv, w_out, b_out) in zip(
            module.axes, weights["axes"], strict=True
        ):
            attention.in_proj_weight.copy_(torch.cat(w_qkv))
            attention.in_proj_bias.copy_(torch.cat(b_qkv))
            attention.out_proj.weight.copy_(w_out)
            attention.out_proj.bias.copy_(b_out)
    x = torch.randn(*shape, dtype=torch.float64)
    expected = _naive_axial_attention(x, weights, heads, head_size)
    with torch.no_grad():
        got = module(x)
        # The same in channels-last memory (the CPU's layout for 3D networks).
        fmt = torch.channels_last_3d if ndim == 3 else torch.channels_last
        got_channels_last = module(x.contiguous(memory_format=fmt))
        got_eval = module.eval()(x)  # inference may take PyTorch's fused attention
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_channels_last, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_eval, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("architecture", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize(
    "variant",
    [
        NetworkVariant(),
        NetworkVariant(norm="instance"),
        NetworkVariant(encoder_scale=1, encoder_max_features=8),  # never narrower than planned
    ],
    ids=["default", "planned-norm", "cap-below-planned"],
)
def test_variants_that_change_nothing_build_the_planned_network(architecture, variant, build):
    torch.manual_seed(3)
    planned = build(3, None, architecture=architecture)
    torch.manual_seed(3)
    same = build(3, variant, architecture=architecture)
    ours, theirs = planned.state_dict(), same.state_dict()
    assert list(ours) == list(theirs)
    assert not any("attention" in key for key in ours)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_registry_names_the_networks(build):
    assert dict(NETWORKS) == {
        "PlainConvUNet": PlainConvUNet,
        "ResidualEncoderUNet": ResidualEncoderUNet,
    }
    # An experiment may name another network than the plan's.
    net = build(2, NetworkVariant(architecture="ResidualEncoderUNet"))
    assert type(net) is ResidualEncoderUNet


def test_variant_round_trips_through_plain_data():
    for variant in BRATS2021_VARIANTS.values():
        data = json.loads(json.dumps(variant.to_dict()))
        assert NetworkVariant.from_dict(data) == variant
    assert NetworkVariant.from_dict({}) == NetworkVariant()
    assert NetworkVariant().is_default and not BRATS2021_VARIANTS["BL+AA"].is_default
    assert NetworkVariant(encoder_scale=2, norm="group").to_dict() == {
        "architecture": None,
        "encoder_scale": 2,
        "encoder_max_features": 512,
        "norm": "group",
        "groups": 16,
        "axial_attention": False,
        "attention_stages": 4,
        "attention_heads": 4,
        "attention_head_size": 16,
        "spatial_transformer": False,
        "spatial_transformer_lr_scale": None,
        "size": None,
        "kernel_size": None,
    }


@pytest.mark.parametrize("scale", [0, -0.1, 1.5, True, "0.1"])
def test_the_localization_learning_rate_scale_is_a_factor_in_0_1(scale):
    with pytest.raises(SegflowError, match=r"spatial_transformer_lr_scale: must be a number in"):
        NetworkVariant(spatial_transformer=True, spatial_transformer_lr_scale=scale)
    assert NetworkVariant(spatial_transformer_lr_scale=1).spatial_transformer_lr_scale == 1


def test_variant_validation_names_every_key_and_the_closest_valid_one():
    data = {
        "encoder_scal": 2,
        "norm": "gruop",
        "groups": 0,
        "axial_attention": "yes",
        "architecture": "PlainConvUnet",
        "attention_heads": True,
    }
    with pytest.raises(SegflowError) as info:
        NetworkVariant.from_dict(data, where="experiments.bl_l.network")
    message = str(info.value)
    where = "experiments.bl_l.network"
    assert message.startswith("the network variant is not valid")
    assert f"{where}.encoder_scal: unknown key 'encoder_scal'; did you mean 'encoder_scale'?" in (
        message
    )
    assert f"{where}.norm: unknown norm 'gruop'; did you mean 'group'?" in message
    assert f"{where}.groups: must be a positive integer, got 0" in message
    assert f"{where}.attention_heads: must be a positive integer, got True" in message
    assert f"{where}.axial_attention: must be true or false, got 'yes'" in message
    assert (
        f"{where}.architecture: architecture 'PlainConvUnet' is not supported; "
        "did you mean 'PlainConvUNet'?"
    ) in message
    with pytest.raises(SegflowError, match=r"\.architecture: architecture '\['a'\]' is not"):
        NetworkVariant.from_dict({"architecture": ["a"]})
    with pytest.raises(SegflowError, match="network variant: must be a mapping"):
        NetworkVariant.from_dict(["group"])
    with pytest.raises(SegflowError, match=r"network variant\.encoder_scale: must be a positive"):
        NetworkVariant(encoder_scale=0)


def test_build_network_rejects_a_variant_of_the_wrong_type(network_section, make_configuration):
    with pytest.raises(SegflowError, match="variant: must be a NetworkVariant, got dict"):
        build_network(make_configuration(network_section()), 1, 3, True, {"norm": "group"})
