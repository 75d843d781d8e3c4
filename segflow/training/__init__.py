"""Training: the losses of the nnU-Net v2 method (more of the trainer to come).

The names are imported on first use: ``segflow split`` imports :mod:`segflow.training.splits`,
which runs this file, and must not load torch with the losses.
"""

from __future__ import annotations

import importlib
from typing import Any

_LOSS_NAMES = (
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
)

__all__ = list(_LOSS_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _LOSS_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.loss"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LOSS_NAMES])
