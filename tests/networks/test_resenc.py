"""The residual-encoder U-Net: stem, ResNet-D blocks, nnU-Net's initialization, outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from segflow.networks import ResidualEncoderUNet, build_network
from segflow.networks.blocks import ResidualBlock


@pytest.fixture
def make_net(network_section, make_configuration):
    """``make_net(ndim=3, deep_supervision=True, **section)``: a small ResidualEncoderUNet."""

    def make(ndim=3, deep_supervision=True, **kwargs):
        section = network_section("ResidualEncoderUNet", ndim=ndim, **kwargs)
        return build_network(make_configuration(section), 1, 2, deep_supervision)

    return make


def test_structure_follows_nnunet(make_net):
    net = make_net(3, features=(4, 8, 16, 16), blocks=(1, 2, 3, 2))
    assert isinstance(net, ResidualEncoderUNet)
    stem = net.encoder.stem
    assert (stem.conv.in_channels, stem.conv.out_channels) == (1, 4)
    assert [len(s) for s in net.encoder.stages] == [1, 2, 3, 2]
    assert all(isinstance(b, ResidualBlock) for s in net.encoder.stages for b in s)
    # Stage 0 keeps size and width: identity shortcut.
    assert isinstance(net.encoder.stages[0][0].shortcut, nn.Identity)
    # Downsampling and widening: average pooling, then a 1x1 convolution without bias + norm.
    pool, projection = net.encoder.stages[1][0].shortcut
    assert isinstance(pool, nn.AvgPool3d) and pool.kernel_size == pool.stride == (2, 2, 2)
    assert projection.conv.kernel_size == (1, 1, 1) and projection.conv.bias is None
    assert isinstance(projection.norm, nn.InstanceNorm3d)
    assert isinstance(projection.nonlin, nn.Identity)
    # Downsampling at the same width (16 -> 16): pooling alone.
    (pool,) = net.encoder.stages[3][0].shortcut
    assert isinstance(pool, nn.AvgPool3d)
    first, second = net.encoder.stages[1]
    assert first.conv1.conv.stride == (2, 2, 2) and first.conv2.conv.stride == (1, 1, 1)
    assert second.conv1.conv.stride == (1, 1, 1) and isinstance(second.shortcut, nn.Identity)
    assert isinstance(first.conv2.nonlin, nn.Identity)  # the nonlinearity follows the sum
    assert [len(s) for s in net.decoder.stages] == [1, 1, 1]


def test_residual_blocks_start_as_their_shortcut(make_net):
    net = make_net(2, features=(4, 8, 16))
    for block in (b for b in net.modules() if isinstance(b, ResidualBlock)):
        norm = block.conv2.norm
        assert torch.count_nonzero(norm.weight) == 0 and torch.count_nonzero(norm.bias) == 0
        assert torch.all(block.conv1.norm.weight == 1)
    block = net.encoder.stages[0][0]
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.leaky_relu(x, 0.01))


@pytest.mark.parametrize(
    ("ndim", "size", "expected"),
    [
        (2, (16, 8), [(16, 8), (8, 4), (4, 2)]),
        (3, (8, 8, 16), [(8, 8, 16), (4, 4, 8), (2, 2, 4)]),
    ],
)
def test_outputs_with_and_without_deep_supervision(ndim, size, expected, make_net):
    net = make_net(ndim, features=(4, 8, 16, 16))
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        outputs = net(x)
        assert [tuple(o.shape) for o in outputs] == [(1, 2, *s) for s in expected]
        torch.testing.assert_close(net.set_deep_supervision(False)(x), outputs[0])


def test_anisotropic_stride_pools_the_shortcut_per_axis(make_net):
    strides = ((1, 1, 1), (1, 2, 2), (2, 2, 1))
    net = make_net(3, strides=strides, kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3)))
    pool = net.encoder.stages[2][0].shortcut[0]
    assert pool.kernel_size == pool.stride == (2, 2, 1)
    outputs = net(torch.randn(1, 1, 4, 8, 6))
    assert [tuple(o.shape[2:]) for o in outputs] == [(4, 8, 6), (4, 4, 3)]


def test_gradients_reach_every_parameter(make_net):
    net = make_net(3)
    # At nnU-Net's initialization the zeroed norms block the gradient of the convolutions
    # before them; with nonzero norms every parameter learns.
    for block in (b for b in net.modules() if isinstance(b, ResidualBlock)):
        nn.init.ones_(block.conv2.norm.weight)
    outputs = net(torch.randn(2, 1, 8, 8, 8))
    sum(o.square().mean() for o in outputs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_bfloat16_autocast_and_channels_last(make_net):
    net = make_net(3)
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = net(x)
        net = net.to(memory_format=torch.channels_last_3d)
        channels_last = net(x.contiguous(memory_format=torch.channels_last_3d))
    for o, c, r in zip(outputs, channels_last, reference, strict=True):
        assert o.dtype == torch.bfloat16 and torch.isfinite(o).all()
        assert (o.float() - r).abs().max() < 0.1 * r.abs().max()
        torch.testing.assert_close(c, r, rtol=1e-4, atol=1e-4)
