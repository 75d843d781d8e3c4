"""Training: the trainer (:mod:`~segflow.training.trainer`), its losses
(:mod:`~segflow.training.loss`, exported here) and the cross-validation splits
(:mod:`~segflow.training.splits`).

The losses are imported when first asked for: the workflow's rules read manual splits through
:mod:`segflow.training.splits` at every Snakemake start, which must not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
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


# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(__name__, {"loss": tuple(__all__)})
