"""The plain convolutional U-Net: structure, outputs, deep supervision, gradients, precision."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from segflow.networks import PlainConvUNet, build_network
from segflow.networks.blocks import ConvNormAct


@pytest.fixture
def make_net(network_section, make_configuration):
    """``make_net(ndim=3, deep_supervision=True, **section)``: a small PlainConvUNet."""

    def make(ndim=3, deep_supervision=True, **kwargs):
        section = network_section("PlainConvUNet", ndim=ndim, **kwargs)
        return build_network(make_configuration(section), 2, 3, deep_supervision)

    return make


@pytest.mark.parametrize(
    ("ndim", "size", "expected"),
    [
        (2, (16, 24), [(16, 24), (8, 12), (4, 6)]),
        (3, (8, 16, 24), [(8, 16, 24), (4, 8, 12), (2, 4, 6)]),
    ],
)
def test_deep_supervision_outputs_finest_first(ndim, size, expected, make_net):
    net = make_net(ndim, features=(4, 8, 16, 32))
    outputs = net(torch.randn(2, 2, *size))
    assert isinstance(outputs, list)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, *s) for s in expected]
    assert net.num_deep_supervision_outputs == 3


def test_anisotropic_strides_give_anisotropic_outputs(make_net):
    strides = ((1, 1, 1), (1, 2, 2), (2, 2, 1))
    kernels = ((1, 3, 3), (3, 3, 3), (3, 3, 3))
    net = make_net(3, strides=strides, kernel_sizes=kernels)
    outputs = net(torch.randn(1, 2, 4, 8, 6))
    assert [tuple(o.shape[2:]) for o in outputs] == [(4, 8, 6), (4, 4, 3)]
    first = net.encoder.stages[0][0].conv
    assert first.kernel_size == (1, 3, 3) and first.padding == (0, 1, 1)


def test_deep_supervision_switches_after_construction(make_net):
    net = make_net(2)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        finest = net(x)[0]
        assert net.set_deep_supervision(False) is net
        alone = net(x)
        assert isinstance(alone, torch.Tensor) and alone.shape == (1, 3, 16, 16)
        torch.testing.assert_close(alone, finest)
        net.deep_supervision = True
        assert len(net(x)) == 2


def test_structure_follows_nnunet(make_net):
    net = make_net(3, features=(4, 8, 16))
    assert isinstance(net, PlainConvUNet)
    for stage, stride in zip(net.encoder.stages, [(1, 1, 1), (2, 2, 2), (2, 2, 2)], strict=True):
        assert len(stage) == 2
        assert stage[0].conv.stride == stride  # the first conv downsamples ...
        assert stage[1].conv.stride == (1, 1, 1)  # ... the others keep the size
    block = net.encoder.stages[0][0]
    assert isinstance(block, ConvNormAct)
    assert isinstance(block.norm, nn.InstanceNorm3d) and block.norm.affine
    assert block.norm.eps == 1e-5
    assert isinstance(block.nonlin, nn.LeakyReLU)
    assert block.nonlin.negative_slope == 0.01 and block.nonlin.inplace
    up = net.decoder.upsamplers[0]
    assert isinstance(up, nn.ConvTranspose3d)
    assert up.kernel_size == up.stride == (2, 2, 2) and up.bias is not None
    assert (up.in_channels, up.out_channels) == (16, 8)
    assert net.decoder.stages[0][0].conv.in_channels == 16  # upsampled + skip
    head = net.decoder.heads[-1]
    assert head.kernel_size == (1, 1, 1) and head.out_channels == 3


def test_conv_bias_follows_the_plans(network_section, make_configuration):
    section = dict(network_section(ndim=2), conv_bias=False)
    net = build_network(make_configuration(section), 1, 2)
    assert net.encoder.stages[0][0].conv.bias is None
    assert net.decoder.upsamplers[0].bias is None
    assert net.decoder.heads[0].bias is not None  # the heads always have one


def test_he_initialization(make_net):
    net = make_net(3, features=(16, 32, 64))
    for m in net.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            assert torch.count_nonzero(m.bias) == 0
        if isinstance(m, nn.InstanceNorm3d):
            assert torch.all(m.weight == 1) and torch.count_nonzero(m.bias) == 0
    conv = net.encoder.stages[2][1].conv  # 64 -> 64, 3x3x3: 110592 weights
    expected = math.sqrt(2 / (1 + 0.01**2)) / math.sqrt(64 * 27)
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.02)


def test_gradients_reach_every_parameter(make_net):
    net = make_net(3)
    outputs = net(torch.randn(2, 2, 8, 8, 8))
    sum(o.square().mean() for o in outputs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_without_deep_supervision_only_the_finest_head_trains(make_net):
    net = make_net(2, deep_supervision=False)
    net(torch.randn(2, 2, 16, 16)).square().mean().backward()
    assert net.decoder.heads[-1].weight.grad is not None
    assert net.decoder.heads[0].weight.grad is None


def test_bfloat16_autocast_forward_on_cpu(make_net):
    net = make_net(3)
    x = torch.randn(2, 2, 8, 8, 8)
    with torch.no_grad():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = net(x)
    assert [o.dtype for o in outputs] == [torch.bfloat16] * 2
    for o, r in zip(outputs, reference, strict=True):
        assert torch.isfinite(o).all()
        assert (o.float() - r).abs().max() < 0.1 * r.abs().max()


@pytest.mark.parametrize(
    ("ndim", "memory_format"),
    [(2, torch.channels_last), (3, torch.channels_last_3d)],
)
def test_channels_last_gives_the_same_outputs(ndim, memory_format, make_net):
    net = make_net(ndim)
    x = torch.randn(2, 2, *(8,) * ndim)
    with torch.no_grad():
        reference = net(x)
        net = net.to(memory_format=memory_format)
        outputs = net(x.contiguous(memory_format=memory_format))
    for o, r in zip(outputs, reference, strict=True):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)


def test_float64_and_state_dict_round_trip(make_net):
    net = make_net(2).double()
    x = torch.randn(1, 2, 16, 16, dtype=torch.float64)
    other = make_net(2).double()
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        for a, b in zip(net(x), other(x), strict=True):
            assert a.dtype == torch.float64
            torch.testing.assert_close(a, b)
