"""Training: the trainer (:mod:`~segflow.training.trainer`), its losses
(:mod:`~segflow.training.loss`, exported here) and the cross-validation splits
(:mod:`~segflow.training.splits`).

The losses are imported when first asked for: the workflow's rules read manual splits through
:mod:`segflow.training.splits` at every Snakemake start, which must not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("segflow.training.loss"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
