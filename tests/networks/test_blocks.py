"""Instance normalization as group normalization, and the memory format networks run in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segflow.networks import memory_format_for
from segflow.networks.blocks import InstanceNorm2d, InstanceNorm3d

CASES = [
    (InstanceNorm2d, nn.InstanceNorm2d, (3, 5, 7, 6), torch.channels_last),
    (InstanceNorm3d, nn.InstanceNorm3d, (2, 5, 4, 7, 6), torch.channels_last_3d),
]


def _pair(ours_type, theirs_type, channels, **kwargs):
    ours = ours_type(channels, **kwargs).double()
    theirs = theirs_type(channels, **kwargs).double()
    if ours.weight is not None:
        with torch.no_grad():
            ours.weight.copy_(torch.linspace(0.5, 2.0, channels))
            ours.bias.copy_(torch.linspace(-1.0, 1.0, channels))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize(("ours_type", "theirs_type", "shape", "fmt"), CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_same_values_and_gradients_as_instance_norm(
    ours_type, theirs_type, shape, fmt, channels_last
):
    ours, theirs = _pair(ours_type, theirs_type, shape[1], eps=1e-5, affine=True)
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 2
    if channels_last:
        x = x.contiguous(memory_format=fmt)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-12)
    # Each (sample, channel) is normalized over its spatial axes, then scaled and shifted.
    dims = tuple(range(2, x.dim()))
    normalized = (y1.detach() - ours.bias.detach().view(1, -1, *[1] * len(dims))) / (
        ours.weight.detach().view(1, -1, *[1] * len(dims))
    )
    torch.testing.assert_close(normalized.mean(dims), torch.zeros(shape[:2], dtype=x.dtype))
    torch.testing.assert_close(
        normalized.var(dims, unbiased=False),
        torch.ones(shape[:2], dtype=x.dtype),
        rtol=1e-4,
        atol=0,
    )
    upstream = torch.randn_like(y1)
    y1.backward(upstream)
    y2.backward(upstream)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, rtol=0, atol=1e-10)
    if channels_last:
        # The layout survives (PyTorch's instance norm would return channels-first).
        assert y1.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize(("ours_type", "theirs_type", "shape", "fmt"), CASES)
def test_state_dict_and_type_are_those_of_instance_norm(ours_type, theirs_type, shape, fmt):
    ours, theirs = _pair(ours_type, theirs_type, shape[1], affine=True)
    assert isinstance(ours, theirs_type)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize(("ours_type", "theirs_type", "shape", "fmt"), CASES)
@pytest.mark.parametrize(
    "kwargs", [{"affine": False}, {"affine": True, "track_running_stats": True}]
)
def test_other_options_behave_as_instance_norm(ours_type, theirs_type, shape, fmt, kwargs):
    ours, theirs = _pair(ours_type, theirs_type, shape[1], **kwargs)
    x = torch.randn(*shape, dtype=torch.float64)
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-12)
    # Unbatched input (channels first, no batch axis) falls back to PyTorch's layer.
    torch.testing.assert_close(ours(x[0]), theirs(x[0]), rtol=0, atol=1e-12)


def test_bfloat16_autocast_gives_bfloat16_as_instance_norm():
    ours, theirs = _pair(InstanceNorm3d, nn.InstanceNorm3d, 4, affine=True)
    ours.float()
    theirs.float()
    x = torch.randn(2, 4, 5, 6, 7).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours(x).dtype == theirs(x).dtype == torch.bfloat16
        torch.testing.assert_close(ours(x).float(), theirs(x).float(), rtol=0.02, atol=0.05)


@pytest.mark.parametrize(
    ("ndim", "device", "setting", "expected"),
    [
        (3, "cpu", "auto", torch.channels_last_3d),
        (2, "cpu", "auto", torch.contiguous_format),
        (3, "cuda", "auto", torch.contiguous_format),
        (3, "mps", "auto", torch.contiguous_format),
        (3, "cpu", False, torch.contiguous_format),
        (2, "cpu", True, torch.channels_last),
        (3, "cuda", True, torch.channels_last_3d),
    ],
)
def test_memory_format_for(ndim, device, setting, expected):
    assert memory_format_for(ndim, device, setting) == expected
