"""The spatial transformer: the identity at initialization, the resampling convention of its
affine, and a network behind it trained end to end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segflow.networks import NetworkVariant, SpatialTransformer, build_network
from segflow.networks.spatial_transformer import LOCALIZATION_LR_SCALE, identity_affine
from tests.networks.conftest import _configuration, _network_section


@pytest.mark.parametrize("ndim", [2, 3])
def test_at_initialization_the_transform_is_the_identity(ndim):
    stn = SpatialTransformer(nn.Identity(), ndim, in_channels=2)
    x = torch.randn(3, 2, *([12, 10, 9][:ndim]))
    theta = stn.affine(x)
    assert torch.equal(theta, identity_affine(ndim).expand(3, -1, -1))
    assert torch.allclose(stn.transform(x), x, atol=1e-5)
    assert torch.allclose(stn(x), x, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_at_initialization_the_whole_is_the_wrapped_network(ndim):
    conf = _configuration(_network_section(ndim=ndim), patch_size=[16] * ndim)
    torch.manual_seed(0)
    plain = build_network(conf, 1, 3)
    torch.manual_seed(0)
    wrapped = build_network(conf, 1, 3, variant=NetworkVariant(spatial_transformer=True))
    assert isinstance(wrapped, SpatialTransformer)
    assert wrapped.num_deep_supervision_outputs == plain.num_deep_supervision_outputs == 2
    wrapped.network.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, *[16] * ndim)
    with torch.no_grad():
        expected, got = plain(x), wrapped(x)
    assert len(got) == len(expected) == 2
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape
        assert torch.allclose(g, e, atol=1e-4)
    wrapped.set_deep_supervision(False)
    assert not wrapped.deep_supervision and wrapped.network.deep_supervision is False


def test_a_translation_moves_the_image_by_whole_voxels():
    stn = SpatialTransformer(nn.Identity(), 2, in_channels=1)
    x = torch.arange(48.0).reshape(1, 1, 6, 8)
    # Normalized coordinates span 2 over 8 columns: a shift of 2/8 is one column. The output
    # at column j samples the input at column j + 1.
    theta = torch.tensor([[[1.0, 0.0, 2 / 8], [0.0, 1.0, 0.0]]])
    moved = stn.transform(x, theta)
    assert torch.allclose(moved[..., :-1], x[..., 1:], atol=1e-4)
    assert torch.allclose(moved[..., -1], torch.zeros(6), atol=1e-4)  # zeros from outside


def test_the_outputs_go_back_through_the_inverse():
    # A network that returns its input: output = inverse(transform(x)), x where both are
    # defined (away from the border the shift pushed out).
    stn = SpatialTransformer(nn.Identity(), 2, in_channels=1)
    with torch.no_grad():
        stn.localization[-1].bias.copy_(torch.tensor([1.0, 0.0, 2 / 8, 0.0, 1.0, 0.0]))
    x = torch.arange(48.0).reshape(1, 1, 6, 8)
    out = stn(x)
    assert torch.allclose(out[..., 1:], x[..., 1:], atol=1e-4)
    assert not torch.allclose(stn.transform(x), x)


def test_the_localization_network_learns():
    stn = SpatialTransformer(nn.Conv2d(1, 2, 3, padding=1), 2, in_channels=1)
    x = torch.randn(2, 1, 16, 16)
    stn(x).square().mean().backward()
    last = stn.localization[-1]
    assert last.bias.grad is not None and last.bias.grad.abs().sum() > 0


def test_the_localization_network_asks_for_a_lower_learning_rate():
    stn = SpatialTransformer(nn.Conv2d(1, 2, 3, padding=1), 2, in_channels=1)
    assert stn.learning_rate_scales == {"localization.": LOCALIZATION_LR_SCALE}
    assert LOCALIZATION_LR_SCALE == 0.01
    inner = nn.Conv2d(1, 2, 3, padding=1)
    inner.learning_rate_scales = {"weight": 0.5}  # a wrapped network's own factors are kept
    stn = SpatialTransformer(inner, 2, in_channels=1, lr_scale=0.1)
    assert stn.learning_rate_scales == {"network.weight": 0.5, "localization.": 0.1}
    conf = _configuration(_network_section(ndim=2), patch_size=[16, 16], name="2d")
    variant = NetworkVariant(spatial_transformer=True, spatial_transformer_lr_scale=0.001)
    built = build_network(conf, 1, 2, variant=variant)
    assert built.learning_rate_scales == {"localization.": 0.001}
