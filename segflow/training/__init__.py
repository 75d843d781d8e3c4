"""Training: the losses of the nnU-Net v2 method (more of the trainer to come)."""

from __future__ import annotations

from segflow.training.loss import (
    DICE_SMOOTH,
    DeepSupervisionLoss,
    DiceCELoss,
    RegionDiceBCELoss,
    build_loss,
    deep_supervision_scales,
    deep_supervision_weights,
    downsample_for_deep_supervision,
    foreground_regions,
    label_map_to_regions,
    soft_dice,
)

__all__ = [
    "DICE_SMOOTH",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "RegionDiceBCELoss",
    "build_loss",
    "deep_supervision_scales",
    "deep_supervision_weights",
    "downsample_for_deep_supervision",
    "foreground_regions",
    "label_map_to_regions",
    "soft_dice",
]
