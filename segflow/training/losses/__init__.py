"""Training losses: nnU-Net v2's Dice + CE and the variants experiments can name.

* :mod:`~segflow.training.losses.dice_ce`: the method's default loss (Dice + CE for classes,
  Dice + BCE for regions), exactly as before the registry.
* :mod:`~segflow.training.losses.variants`: exponential logarithmic (Wong et al. 2018), focal
  (Lin et al. 2017), soft IoU and Dice + focal, each for classes and regions.
* :mod:`~segflow.training.losses.overlap`: soft Dice and soft Jaccard.
* :mod:`~segflow.training.losses.targets` and :mod:`~segflow.training.losses.deep_supervision`:
  region targets, the coarser targets and the weighted sum over decoder resolutions, which
  wrap any loss.
* :mod:`~segflow.training.losses.registry`: :data:`LOSSES` by name (made from the torch-free
  :data:`segflow.training.loss_catalog.LOSS_CATALOG`) and :func:`build_loss`.
* :mod:`~segflow.training.losses.ranks`: sums over the whole batch when data-parallel
  processes each hold a slice of it (batch Dice, counts of annotated voxels and labels); a
  new loss that sums or counts over the batch uses :func:`~.ranks.batch_sum` and
  :func:`~.ranks.batch_count` for those sums.

Every loss honours ``batch_dice``, the ignore label (masked voxels count in no term) and
regions, composes with deep supervision, computes in float32 whatever the autocast state, and
never moves tensors between devices.

How to add a loss: write its ``nn.Module`` (in :mod:`~segflow.training.losses.variants`, or a
module of its own in this package), whose constructor takes the keyword arguments
``batch_dice``, ``regions`` and ``ignore_label`` plus its parameters, each with a default whose
source the docstring states; the base class of the variants reads both target forms and the
ignore mask for it. Then add one entry to :data:`~segflow.training.loss_catalog.LOSS_CATALOG`:
the name, where the class is (``module:Class``), a check per parameter, a summary line, and
``no_regions="why"`` if it has no region form. The settings' choices, validation, error messages
with the closest name, ``build_loss`` and deep supervision follow from the entry; the config
schema's ``training.loss`` enum lists the name too (``tests/test_settings.py`` keeps it equal).
Add its hand-computed test to ``tests/training/test_loss_variants.py``.
"""

from __future__ import annotations

from segflow.training.losses.deep_supervision import (
    DeepSupervisionLoss,
    deep_supervision_scales,
    deep_supervision_weights,
    downsample_for_deep_supervision,
)
from segflow.training.losses.dice_ce import DiceCELoss, RegionDiceBCELoss
from segflow.training.losses.overlap import DICE_SMOOTH, soft_dice, soft_jaccard
from segflow.training.losses.registry import (
    DEFAULT_LOSS,
    LOSSES,
    LossSpec,
    build_loss,
    loss_parameters,
    loss_problems,
)
from segflow.training.losses.targets import foreground_regions, label_map_to_regions
from segflow.training.losses.variants import DiceFocalLoss, ExpLogLoss, FocalLoss, SoftIoULoss

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
