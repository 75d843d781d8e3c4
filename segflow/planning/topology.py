"""U-Net topology from spacing and patch size: pooling per axis, strides, kernel sizes.

The network pools (with stride-2 convolutions) along every axis that is still large enough
and whose current spacing is within a factor 2 of the finest current spacing. Coarse axes
of anisotropic data therefore wait, unpooled and with kernel size 1, until the pooling of the
fine axes has made the spacing similar; from then on they are pooled and convolved like the
others. The patch size must be divisible by ``2 ** pools`` along each axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from segflow.planning.presets import FEATUREMAP_MIN_EDGE_LENGTH

__all__ = ["Topology", "network_topology", "pad_to_multiple", "shrink_patch_axis"]


@dataclass(frozen=True)
class Topology:
    """The pooling structure of a U-Net for one patch size.

    Attributes:
        pools_per_axis: how often each axis is halved.
        strides: per stage, the stride along each axis; the first stage has stride 1.
        kernel_sizes: per stage, the convolution kernel size along each axis (3 or 1).
        patch_size: the patch size rounded up to a multiple of ``divisible_by``.
        divisible_by: ``2 ** pools_per_axis``.
    """

    pools_per_axis: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]
    divisible_by: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def pad_to_multiple(shape: Sequence[float], multiple: Sequence[int]) -> tuple[int, ...]:
    """Round each entry of ``shape`` up to the next multiple (entries already on one stay).

    ``shape`` may hold non-integers (the median image shape can be e.g. 35.5); the result is
    truncated to int after rounding up, as nnU-Net does.
    """
    out = []
    for size, m in zip(shape, multiple, strict=True):
        remainder = size % m
        padded = size if remainder == 0 else size + m - remainder
        out.append(int(padded))
    return tuple(out)


def network_topology(
    spacing: Sequence[float],
    patch_size: Sequence[float],
    min_edge_length: int = FEATUREMAP_MIN_EDGE_LENGTH,
) -> Topology:
    """Pooling, strides and kernel sizes for ``patch_size`` at ``spacing``.

    At each new stage, an axis is pooled when (a) its current feature-map edge is at least
    ``2 * min_edge_length`` (a halving leaves at least ``min_edge_length``), and (b) its
    current spacing is less than twice the finest current spacing among such axes. If only a
    single axis qualifies it needs ``3 * min_edge_length`` voxels, which stops a lone axis from
    being pooled down to a sliver. Stages stop when no axis qualifies. An axis gets kernel
    size 3 from the first stage at which its spacing is within a factor 2 of the finest
    spacing, and keeps it; before that it gets 1 (no mixing across thick slices). The
    bottleneck always uses 3. The returned patch size is padded to be divisible by
    ``2 ** pools`` per axis.

    Args:
        spacing: voxel spacing of the configuration, one entry per axis.
        patch_size: the candidate patch size (may be non-integer before padding).
        min_edge_length: smallest allowed feature-map edge in the bottleneck.
    """
    dim = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = list(patch_size)
    pools = [0] * dim
    kernel = [1] * dim
    strides: list[tuple[int, ...]] = [(1,) * dim]
    kernels: list[tuple[int, ...]] = []

    while True:
        large_enough = [i for i in range(dim) if current_size[i] >= 2 * min_edge_length]
        if not large_enough:
            break
        finest = min(current_spacing[i] for i in large_enough)
        poolable = [i for i in large_enough if current_spacing[i] / finest < 2]
        if len(poolable) == 1 and current_size[poolable[0]] < 3 * min_edge_length:
            break
        if not poolable:
            break

        # Kernel sizes compare against the finest spacing of all axes, not just the poolable.
        overall_finest = min(current_spacing)
        for d in range(dim):
            if kernel[d] == 1 and current_spacing[d] / overall_finest < 2:
                kernel[d] = 3

        stride = [1] * dim
        for i in poolable:
            stride[i] = 2
            pools[i] += 1
            current_spacing[i] *= 2
            current_size[i] = math.ceil(current_size[i] / 2)
        strides.append(tuple(stride))
        kernels.append(tuple(kernel))

    kernels.append((3,) * dim)
    divisible_by = tuple(2**p for p in pools)
    return Topology(
        pools_per_axis=tuple(pools),
        strides=tuple(strides),
        kernel_sizes=tuple(kernels),
        patch_size=pad_to_multiple(patch_size, divisible_by),
        divisible_by=divisible_by,
    )


def shrink_patch_axis(
    spacing: Sequence[float],
    topology: Topology,
    axis: int,
    min_edge_length: int = FEATUREMAP_MIN_EDGE_LENGTH,
) -> Topology:
    """The topology after making ``axis`` of the patch one step smaller.

    One step is the divisor that axis would need *after* shrinking, not the current one:
    e.g. an axis of 256 that is pooled 6 times must be a multiple of 64, but 224 (pooled 5
    times, a multiple of 32) is a valid smaller patch that subtracting 64 would skip.
    """
    probe = list(topology.patch_size)
    probe[axis] -= topology.divisible_by[axis]
    step = network_topology(spacing, probe, min_edge_length).divisible_by[axis]
    smaller = list(topology.patch_size)
    smaller[axis] -= step
    return network_topology(spacing, smaller, min_edge_length)
