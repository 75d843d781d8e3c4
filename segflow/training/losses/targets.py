"""Targets of the losses: the regions a network predicts and their boolean maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from segflow.io.dataset import DatasetJson

__all__ = ["foreground_regions", "label_map_to_regions"]


def foreground_regions(dataset: DatasetJson) -> list[tuple[int, ...]]:
    """The regions the network predicts, in ``dataset.json`` order.

    Every label except the ignore label and those whose values are all background (0).
    An integer label becomes a one-value region.
    """
    return [v if isinstance(v, tuple) else (v,) for v in dataset.foreground_classes.values()]


def label_map_to_regions(
    label_map: Tensor,
    regions: Sequence[Sequence[int] | int],
    *,
    ignore_label: int | None = None,
) -> Tensor:
    """Turn an integer label map into boolean region targets.

    Args:
        label_map: ``(B, 1, *spatial)`` integer labels (a ``(1, *spatial)`` single case works
            the same way).
        regions: per region, the label values that belong to it.
        ignore_label: if given, one more channel, last, true where the label is this value.

    Returns:
        Boolean ``(B, R[+1], *spatial)``: channel ``r`` is true where the voxel's value is in
        ``regions[r]``.
    """
    if label_map.ndim < 2 or label_map.shape[1] != 1:
        raise ValueError(f"label_map must have one channel at axis 1, got {tuple(label_map.shape)}")
    groups = [[r] if isinstance(r, int) else list(r) for r in regions]
    if ignore_label is not None:
        groups.append([ignore_label])
    labels = label_map[:, 0]
    channels = [
        torch.isin(labels, torch.tensor(values, dtype=labels.dtype, device=labels.device))
        for values in groups
    ]
    return torch.stack(channels, dim=1)
