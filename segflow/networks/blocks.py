"""Building blocks of nnU-Net's U-Nets: layer types from the plans, conv blocks, residual blocks.

The plans name the layers (``conv_op``, ``norm_op``, ``nonlin``, ...) as strings;
:func:`resolve_layer_ops` turns them into a :class:`LayerOps`, which every block uses to make
its layers. Blocks register their submodules in the same order as nnU-Net's
``dynamic_network_architectures`` does, so a network's parameters line up one to one with the
reference network's and weights can be transferred by position.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from segflow.errors import Problem
from segflow.planning.plans import NetworkPlan

__all__ = [
    "HE_NEGATIVE_SLOPE",
    "ConvNormAct",
    "GroupNorm",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerOps",
    "ResidualBlock",
    "conv_stack",
    "initialize_he",
    "resolve_layer_ops",
    "zero_last_norm_of_residual_blocks",
]

HE_NEGATIVE_SLOPE = 1e-2
"""Negative slope nnU-Net's He initialisation assumes (that of its LeakyReLU)."""


class _InstanceNormAsGroupNorm:
    """Instance normalization computed as a group normalization with one channel per group.

    The two are the same function (statistics over the spatial axes of each sample and
    channel, one affine pair per channel), but on the CPU PyTorch's group normalization is
    about twice as fast, forward and backward, and keeps a channels-last tensor channels-last,
    where instance normalization converts it to channels-first and back (two copies of every
    activation). Elsewhere (CUDA, MPS), with running statistics or an unbatched input, the
    layer is PyTorch's instance normalization unchanged. Parameters and state-dict keys are
    those of ``nn.InstanceNorm{2,3}d``.
    """

    _batched_dims: int
    num_features: int
    eps: float
    weight: Tensor | None
    bias: Tensor | None
    track_running_stats: bool

    def forward(self, input: Tensor) -> Tensor:
        if (
            input.device.type == "cpu"
            and not self.track_running_stats
            and input.dim() == self._batched_dims
        ):
            return F.group_norm(input, self.num_features, self.weight, self.bias, self.eps)
        return super().forward(input)  # type: ignore[misc]


class InstanceNorm2d(_InstanceNormAsGroupNorm, nn.InstanceNorm2d):
    """``nn.InstanceNorm2d``, faster on the CPU (see :class:`_InstanceNormAsGroupNorm`)."""

    _batched_dims = 4


class InstanceNorm3d(_InstanceNormAsGroupNorm, nn.InstanceNorm3d):
    """``nn.InstanceNorm3d``, faster on the CPU (see :class:`_InstanceNormAsGroupNorm`)."""

    _batched_dims = 5


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` made as the other normalizations are: channels first, groups by keyword.

    Args:
        num_channels: channels; ``groups`` must divide them.
        groups: groups of channels that share statistics.
        eps: added to the variance.
        affine: one learnable scale and shift per channel.
    """

    def __init__(
        self, num_channels: int, groups: int = 16, eps: float = 1e-5, affine: bool = True
    ) -> None:
        super().__init__(groups, num_channels, eps=eps, affine=affine)


_CONV_DIMS = {"Conv2d": 2, "Conv3d": 3}
_NORMS: dict[str, tuple[type[nn.Module], int]] = {
    "InstanceNorm2d": (InstanceNorm2d, 2),
    "InstanceNorm3d": (InstanceNorm3d, 3),
    "BatchNorm2d": (nn.BatchNorm2d, 2),
    "BatchNorm3d": (nn.BatchNorm3d, 3),
}
_NONLINS: dict[str, type[nn.Module]] = {
    "LeakyReLU": nn.LeakyReLU,
    "ReLU": nn.ReLU,
    "ELU": nn.ELU,
    "GELU": nn.GELU,
}
_CONVS = {2: nn.Conv2d, 3: nn.Conv3d}
_TRANSPOSED_CONVS = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_AVG_POOLS = {2: nn.AvgPool2d, 3: nn.AvgPool3d}
_HE_INITIALIZED = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class LayerOps:
    """The layer types of one network with their arguments; makes every layer of it.

    Attributes:
        ndim: spatial dimensions, 2 or 3.
        conv_bias: whether convolutions (and transposed convolutions) have a bias.
        norm_type: the normalization layer class.
        norm_kwargs: its keyword arguments besides the channel count.
        nonlin_type: the nonlinearity class.
        nonlin_kwargs: its keyword arguments.
    """

    ndim: int
    conv_bias: bool
    norm_type: type[nn.Module]
    norm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    nonlin_type: type[nn.Module] = nn.LeakyReLU
    nonlin_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int] | int = 1,
        bias: bool | None = None,
    ) -> nn.Module:
        """A "same"-padded convolution; ``bias`` defaults to the plans' ``conv_bias``."""
        padding = [(k - 1) // 2 for k in kernel_size]
        return _CONVS[self.ndim](
            in_channels,
            out_channels,
            tuple(kernel_size),
            _per_axis(stride, self.ndim),
            padding=tuple(padding),
            bias=self.conv_bias if bias is None else bias,
        )

    def transposed_conv(
        self, in_channels: int, out_channels: int, stride: Sequence[int]
    ) -> nn.Module:
        """Upsampling by ``stride`` with a transposed convolution whose kernel is the stride."""
        stride = tuple(stride)
        return _TRANSPOSED_CONVS[self.ndim](
            in_channels, out_channels, stride, stride, bias=self.conv_bias
        )

    def norm(self, channels: int) -> nn.Module:
        return self.norm_type(channels, **self.norm_kwargs)

    def nonlin(self) -> nn.Module:
        return self.nonlin_type(**self.nonlin_kwargs)

    def avg_pool(self, stride: Sequence[int]) -> nn.Module:
        stride = tuple(stride)
        return _AVG_POOLS[self.ndim](stride, stride)


def _per_axis(value: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
    return (value,) * ndim if isinstance(value, int) else tuple(value)


def _unknown(kind: str, name: Any, valid: Iterable[str]) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{kind} '{name}' is not supported{hint} (valid: {', '.join(valid)})"


def _kwargs_problem(kind: str, make: Any, kwargs: Mapping[str, Any]) -> str | None:
    try:
        make(**kwargs)
    except (TypeError, ValueError) as err:
        return f"{kind} does not accept {dict(kwargs)}: {err}"
    return None


def resolve_layer_ops(network: NetworkPlan, where: str) -> tuple[LayerOps | None, list[Problem]]:
    """The layer types a network plan names, or every problem with them.

    Args:
        network: the configuration's network plan.
        where: where the plan comes from, for the problems.

    Returns:
        ``(ops, [])``, or ``(None, problems)`` when a name is unknown, the normalization's
        dimensionality differs from the convolution's, or keyword arguments do not fit.
    """
    problems = []
    ndim = _CONV_DIMS.get(network.conv_op)
    if ndim is None:
        problems.append(
            Problem(f"{where}.conv_op", _unknown("conv_op", network.conv_op, _CONV_DIMS))
        )
    norm = _NORMS.get(network.norm_op)
    if norm is None:
        problems.append(Problem(f"{where}.norm_op", _unknown("norm_op", network.norm_op, _NORMS)))
    elif ndim is not None and norm[1] != ndim:
        problems.append(
            Problem(
                f"{where}.norm_op",
                f"'{network.norm_op}' is {norm[1]}D but conv_op '{network.conv_op}' is {ndim}D",
            )
        )
    else:
        message = _kwargs_problem(
            f"norm_op '{network.norm_op}'",
            lambda **kw: norm[0](1, **kw),
            network.norm_op_kwargs,
        )
        if message:
            problems.append(Problem(f"{where}.norm_op_kwargs", message))
    nonlin = _NONLINS.get(network.nonlin)
    if nonlin is None:
        problems.append(Problem(f"{where}.nonlin", _unknown("nonlin", network.nonlin, _NONLINS)))
    else:
        message = _kwargs_problem(f"nonlin '{network.nonlin}'", nonlin, network.nonlin_kwargs)
        if message:
            problems.append(Problem(f"{where}.nonlin_kwargs", message))
    if network.dropout_op is not None:
        problems.append(
            Problem(
                f"{where}.dropout_op",
                f"dropout_op '{network.dropout_op}' is not supported (valid: null; nnU-Net's "
                "U-Nets train without dropout)",
            )
        )
    if problems or ndim is None or norm is None or nonlin is None:
        return None, problems
    ops = LayerOps(
        ndim=ndim,
        conv_bias=network.conv_bias,
        norm_type=norm[0],
        norm_kwargs=network.norm_op_kwargs,
        nonlin_type=nonlin,
        nonlin_kwargs=network.nonlin_kwargs,
    )
    return ops, []


class ConvNormAct(nn.Module):
    """Convolution, normalization and (optionally) the nonlinearity.

    Args:
        ops: the network's layer types.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: per axis; the convolution is padded to keep the size (before the stride).
        stride: per axis (or one number); a stride above 1 downsamples.
        bias: the convolution's bias; ``None`` takes the plans' ``conv_bias``.
        nonlin: apply the nonlinearity last (a residual block's second convolution does not).
    """

    def __init__(
        self,
        ops: LayerOps,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int] | int = 1,
        *,
        bias: bool | None = None,
        nonlin: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ops.conv(in_channels, out_channels, kernel_size, stride, bias)
        self.norm = ops.norm(out_channels)
        self.nonlin = ops.nonlin() if nonlin else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlin(self.norm(self.conv(x)))


def conv_stack(
    ops: LayerOps,
    num_convs: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int],
    first_stride: Sequence[int] | int = 1,
) -> nn.Sequential:
    """``num_convs`` conv-norm-nonlin blocks; the first one carries the stride."""
    return nn.Sequential(
        *(
            ConvNormAct(
                ops,
                in_channels if i == 0 else out_channels,
                out_channels,
                kernel_size,
                first_stride if i == 0 else 1,
            )
            for i in range(num_convs)
        )
    )


class ResidualBlock(nn.Module):
    """ResNet-D basic block: two convolutions plus a shortcut, then the nonlinearity.

    When the block downsamples, the shortcut average-pools by the stride (a strided 1x1
    convolution would read only one voxel of each window); when the channel count changes, a
    1x1 convolution without bias and a normalization project it.

    Args:
        ops: the network's layer types.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: of both convolutions.
        stride: of the first convolution and the shortcut.
    """

    def __init__(
        self,
        ops: LayerOps,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int] | int = 1,
    ) -> None:
        super().__init__()
        stride = _per_axis(stride, ops.ndim)
        self.conv1 = ConvNormAct(ops, in_channels, out_channels, kernel_size, stride)
        self.conv2 = ConvNormAct(ops, out_channels, out_channels, kernel_size, nonlin=False)
        shortcut: list[nn.Module] = []
        if any(s != 1 for s in stride):
            shortcut.append(ops.avg_pool(stride))
        if in_channels != out_channels:
            ones = (1,) * ops.ndim
            shortcut.append(
                ConvNormAct(ops, in_channels, out_channels, ones, bias=False, nonlin=False)
            )
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()
        self.nonlin = ops.nonlin()

    def forward(self, x: Tensor) -> Tensor:
        # Out of place: under autocast the shortcut may be float32 (average pooling runs in
        # float32) while the main path is bfloat16; the sum then keeps float32.
        return self.nonlin(self.conv2(self.conv1(x)) + self.shortcut(x))

    def zero_last_norm(self) -> None:
        """Start as the identity on the main path (the block passes its shortcut through)."""
        norm = self.conv2.norm
        if getattr(norm, "weight", None) is not None:
            nn.init.zeros_(norm.weight)
        if getattr(norm, "bias", None) is not None:
            nn.init.zeros_(norm.bias)


def initialize_he(module: nn.Module, negative_slope: float = HE_NEGATIVE_SLOPE) -> None:
    """nnU-Net's initialisation: He normal weights for (transposed) convolutions, zero biases."""
    for m in module.modules():
        if isinstance(m, _HE_INITIALIZED):
            nn.init.kaiming_normal_(m.weight, a=negative_slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def zero_last_norm_of_residual_blocks(module: nn.Module) -> None:
    """Zero the affine parameters of every residual block's last normalization (as nnU-Net)."""
    for m in module.modules():
        if isinstance(m, ResidualBlock):
            m.zero_last_norm()
