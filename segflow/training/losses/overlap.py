"""Soft overlap measures of probabilities and targets: Dice and Jaccard (IoU).

Both sum over the spatial axes (and over the batch with ``batch_dice``) before dividing, so an
absent class is measured over the whole batch rather than per sample. Voxels outside ``mask``
count in no sum.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DICE_SMOOTH", "overlap_sums", "soft_dice", "soft_jaccard"]

DICE_SMOOTH = 1e-5
"""Added to numerator and denominator of the soft Dice (nnU-Net v2's training value)."""


def overlap_sums(
    probabilities: Tensor, target: Tensor, *, batch_dice: bool, mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft intersection, prediction size and target size per channel, in float32.

    Args:
        probabilities: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot (or region) target, any dtype; no gradient.
        batch_dice: sum over the batch as well (shape ``(C,)``), else per sample (``(B, C)``).
        mask: ``(B, 1, *spatial)``, true or 1 where voxels count; ``None`` counts all.

    Returns:
        ``(intersection, prediction sum, target sum)``.
    """
    if probabilities.shape != target.shape:
        raise ValueError(
            f"probabilities {tuple(probabilities.shape)} and target {tuple(target.shape)} "
            "must have the same shape"
        )
    axes = tuple(range(2, probabilities.ndim))
    probabilities = probabilities.float()
    with torch.no_grad():
        target = target.float()
        if mask is not None:
            mask = mask.float()
            target = target * mask
    if mask is not None:
        probabilities = probabilities * mask
    intersection = (probabilities * target).sum(axes)
    pred_sum = probabilities.sum(axes)
    target_sum = target.sum(axes)
    if batch_dice:
        intersection, pred_sum, target_sum = (
            t.sum(0) for t in (intersection, pred_sum, target_sum)
        )
    return intersection, pred_sum, target_sum


def soft_dice(
    probabilities: Tensor,
    target: Tensor,
    *,
    batch_dice: bool,
    mask: Tensor | None = None,
    smooth: float = DICE_SMOOTH,
) -> Tensor:
    """Soft Dice per channel, ``(2 * intersection + smooth) / (|pred| + |target| + smooth)``.

    Args:
        probabilities: ``(B, C, *spatial)`` probabilities.
        target: ``(B, C, *spatial)`` one-hot (or region) target, any dtype.
        batch_dice: sum over the batch and the spatial axes (one Dice per channel); otherwise
            over the spatial axes only (one Dice per sample and channel).
        mask: ``(B, 1, *spatial)``, true or 1 where voxels count; ``None`` counts all.
        smooth: added to numerator and denominator; keeps empty channels at Dice 1.

    Returns:
        float32 Dice of shape ``(C,)`` with ``batch_dice``, else ``(B, C)``.
    """
    intersection, pred_sum, target_sum = overlap_sums(
        probabilities, target, batch_dice=batch_dice, mask=mask
    )
    denominator = (pred_sum + target_sum + smooth).clamp_min(1e-8)
    return (2 * intersection + smooth) / denominator


def soft_jaccard(
    probabilities: Tensor,
    target: Tensor,
    *,
    batch_dice: bool,
    mask: Tensor | None = None,
    smooth: float = DICE_SMOOTH,
) -> Tensor:
    """Soft Jaccard index (IoU) per channel, ``(I + smooth) / (|pred| + |target| - I + smooth)``.

    The soft intersection ``I`` is the sum of products, the union the sum of both sizes less
    ``I`` (Rahman & Wang 2016's relaxation). Arguments and result as :func:`soft_dice`.
    """
    intersection, pred_sum, target_sum = overlap_sums(
        probabilities, target, batch_dice=batch_dice, mask=mask
    )
    denominator = (pred_sum + target_sum - intersection + smooth).clamp_min(1e-8)
    return (intersection + smooth) / denominator
