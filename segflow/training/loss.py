"""The training losses, under the import path the trainer and older code use.

Everything lives in :mod:`segflow.training.losses`; this module re-exports it unchanged.
"""

from __future__ import annotations

from segflow.training.losses import (
    DEFAULT_LOSS,
    DICE_SMOOTH,
    LOSSES,
    DeepSupervisionLoss,
    DiceCELoss,
    DiceFocalLoss,
    ExpLogLoss,
    FocalLoss,
    LossSpec,
    RegionDiceBCELoss,
    SoftIoULoss,
    build_loss,
    deep_supervision_scales,
    deep_supervision_weights,
    downsample_for_deep_supervision,
    foreground_regions,
    label_map_to_regions,
    loss_parameters,
    loss_problems,
    soft_dice,
    soft_jaccard,
)

__all__ = [
    "DEFAULT_LOSS",
    "DICE_SMOOTH",
    "LOSSES",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "ExpLogLoss",
    "FocalLoss",
    "LossSpec",
    "RegionDiceBCELoss",
    "SoftIoULoss",
    "build_loss",
    "deep_supervision_scales",
    "deep_supervision_weights",
    "downsample_for_deep_supervision",
    "foreground_regions",
    "label_map_to_regions",
    "loss_parameters",
    "loss_problems",
    "soft_dice",
    "soft_jaccard",
]
