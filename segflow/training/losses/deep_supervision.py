"""Deep supervision: one loss per decoder resolution, weights halving per resolution.

The network returns one output per decoder resolution; :class:`DeepSupervisionLoss` sums the
per-resolution losses with weights halving per resolution, the coarsest output weighted 0,
normalized to sum 1 (:func:`deep_supervision_weights`). The targets for the coarser outputs
come from :func:`downsample_for_deep_supervision`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "DeepSupervisionLoss",
    "deep_supervision_scales",
    "deep_supervision_weights",
    "downsample_for_deep_supervision",
]


def deep_supervision_scales(strides: Sequence[Sequence[int]]) -> list[tuple[float, ...]]:
    """Size of each deep-supervision output relative to the patch, finest first.

    The scale of output ``i`` is ``1 / prod(strides[:i + 1])`` per axis; the bottleneck (the
    last cumulative product) has no output.

    Args:
        strides: the configuration's per-stage strides (the first is usually all ones).

    Returns:
        One scale tuple per network output.
    """
    cumulative = np.cumprod(np.asarray(strides, dtype=np.int64), axis=0)
    return [tuple(float(1 / s) for s in row) for row in cumulative[:-1]]


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """Loss weight of each output, finest first: ``1 / 2**i``, the last 0, normalized to sum 1.

    Args:
        num_outputs: how many resolutions the network returns (at least 2).
    """
    if num_outputs < 2:
        raise ValueError(f"deep supervision needs at least 2 outputs, got {num_outputs}")
    weights = np.array([1 / 2**i for i in range(num_outputs)])
    # The coarsest output gets no weight: nnU-Net v2 does not train it.
    weights[-1] = 0
    return (weights / weights.sum()).tolist()


def _nearest_indices(size_in: int, size_out: int, device: torch.device) -> Tensor:
    # The source voxel whose cell holds the output voxel's centre; for an integer factor f this
    # is f * i + f // 2, the same choice as torch's "nearest-exact" interpolation.
    scale = size_in / size_out
    idx = torch.floor((torch.arange(size_out, device=device, dtype=torch.float64) + 0.5) * scale)
    return idx.long().clamp_max(size_in - 1)


def downsample_for_deep_supervision(
    target: Tensor, scales: Sequence[Sequence[float] | float]
) -> list[Tensor]:
    """Targets for every deep-supervision output, by nearest-neighbour voxel selection.

    Selection keeps dtype and values (labels, booleans), so it commutes with
    :func:`label_map_to_regions`.

    Args:
        target: tensor whose trailing axes are spatial, e.g. ``(B, 1, x, y, z)`` or
            ``(1, x, y, z)``.
        scales: per output, the scale per spatial axis (or one number for all), as from
            :func:`deep_supervision_scales`. The output size is ``round(size * scale)``.

    Returns:
        One tensor per scale; a scale of all ones returns ``target`` itself.
    """
    results = []
    for scale in scales:
        # A single number applies to every axis but the first (nnU-Net's per-case layout).
        per_axis = (
            [float(s) for s in scale]
            if isinstance(scale, Sequence)
            else ([float(scale)] * (target.ndim - 1))
        )
        n = len(per_axis)
        if n > target.ndim:
            raise ValueError(f"scale {scale} has more axes than target {tuple(target.shape)}")
        if all(s == 1 for s in per_axis):
            results.append(target)
            continue
        out = target
        first = target.ndim - n
        for axis, s in enumerate(per_axis, start=first):
            size_in = target.shape[axis]
            size_out = max(round(size_in * s), 1)
            if size_out != size_in:
                out = out.index_select(axis, _nearest_indices(size_in, size_out, target.device))
        results.append(out)
    return results


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over the outputs of every resolution.

    Args:
        loss: the loss for one resolution, called as ``loss(output, target)``.
        weights: one per output, finest first; outputs weighted 0 are not evaluated.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        if not any(w != 0 for w in weights):
            raise ValueError("at least one deep-supervision weight must be non-zero")
        self.loss = loss
        self.weights = tuple(float(w) for w in weights)

    def forward(self, outputs: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        """Loss over ``outputs`` and ``targets``, one of each per resolution."""
        if not len(outputs) == len(targets) == len(self.weights):
            raise ValueError(
                f"got {len(outputs)} outputs and {len(targets)} targets for "
                f"{len(self.weights)} deep-supervision weights"
            )
        terms = [
            w * self.loss(o, t)
            for w, o, t in zip(self.weights, outputs, targets, strict=True)
            if w != 0
        ]
        return torch.stack(terms).sum()
