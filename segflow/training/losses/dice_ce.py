"""The default loss of the nnU-Net v2 method: soft Dice plus cross-entropy.

Chosen by the labels in ``dataset.json``:

* Classes (every label one integer): softmax over all outputs, soft Dice over the foreground
  classes plus cross-entropy, weighted 1:1 (:class:`DiceCELoss`).
* Regions (some label a list of values): one sigmoid per region, soft Dice over every region
  plus binary cross-entropy on the logits (:class:`RegionDiceBCELoss`).

The Dice term is the *negative* mean soft Dice, so a perfect prediction contributes close to
-1 and the combined loss can be negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segflow.training.losses.overlap import DICE_SMOOTH, soft_dice
from segflow.training.losses.ranks import batch_count, batch_sum

__all__ = ["DiceCELoss", "RegionDiceBCELoss", "as_label_map", "dice_ce_loss"]


def as_label_map(target: Tensor, logits: Tensor) -> Tensor:
    """Bring an integer label map to ``(B, 1, *spatial)``."""
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if target.ndim != logits.ndim or target.shape[1] != 1:
        raise ValueError(
            f"target must be a label map (B, 1, *spatial) or (B, *spatial) for logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if target.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"target spatial shape {tuple(target.shape[2:])} differs from the logits' "
            f"{tuple(logits.shape[2:])}"
        )
    return target.long()


class DiceCELoss(nn.Module):
    """Soft Dice over the foreground classes plus cross-entropy, for integer label maps.

    The Dice term is ``-mean(dice)`` over the foreground channels (background, channel 0, is in
    the softmax but not in the Dice mean). Cross-entropy is the mean over the counted voxels.
    Voxels carrying ``ignore_label`` count in neither term, whatever the network predicts there.

    Args:
        batch_dice: Dice over the whole batch (the plans' ``batch_dice``) or per sample.
        ignore_label: label value marking unannotated voxels, or ``None``.
        weight_dice: weight of the Dice term.
        weight_ce: weight of the cross-entropy term.
        smooth: Dice smoothing.
    """

    def __init__(
        self,
        *,
        batch_dice: bool,
        ignore_label: int | None = None,
        weight_dice: float = 1.0,
        weight_ce: float = 1.0,
        smooth: float = DICE_SMOOTH,
    ) -> None:
        super().__init__()
        self.batch_dice = batch_dice
        self.ignore_label = ignore_label
        self.weight_dice = weight_dice
        self.weight_ce = weight_ce
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss for ``logits`` ``(B, C, *spatial)`` and a label map ``(B[, 1], *spatial)``."""
        logits = logits.float()
        labels = as_label_map(target, logits)
        if self.ignore_label is None:
            mask = None
            dice_labels = labels
        else:
            mask = labels != self.ignore_label
            # The ignore value may exceed the class count; any valid class will do there
            # because the mask removes those voxels from both terms.
            dice_labels = torch.where(mask, labels, 0)
        loss = logits.new_zeros(())
        if self.weight_dice != 0:
            with torch.no_grad():
                one_hot = torch.zeros_like(logits).scatter_(1, dice_labels, 1.0)
            dice = soft_dice(
                logits.softmax(1)[:, 1:],
                one_hot[:, 1:],
                batch_dice=self.batch_dice,
                mask=mask,
                smooth=self.smooth,
            )
            loss = loss - self.weight_dice * dice.mean()
        if self.weight_ce != 0:
            loss = loss + self.weight_ce * self._cross_entropy(logits, labels[:, 0], mask)
        return loss

    def _cross_entropy(self, logits: Tensor, labels: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return F.cross_entropy(logits, labels)
        per_voxel = F.cross_entropy(
            logits, labels, ignore_index=self.ignore_label, reduction="none"
        )
        # Mean over the annotated voxels (of the whole batch, across data-parallel ranks);
        # 0 (not NaN) when a batch has none.
        return batch_sum(per_voxel.sum()) / batch_count(mask.sum()).clamp_min(1)


class RegionDiceBCELoss(nn.Module):
    """Soft Dice over every region plus binary cross-entropy, for region-based training.

    The network has one output per region, read through a sigmoid; regions may overlap. The
    target is the output of :func:`label_map_to_regions`.

    Args:
        batch_dice: Dice over the whole batch or per sample.
        ignore_channel: the target's last channel marks voxels to leave out of both terms
            (:func:`label_map_to_regions` with an ``ignore_label``).
        weight_dice: weight of the Dice term.
        weight_bce: weight of the binary cross-entropy term.
        smooth: Dice smoothing.
    """

    def __init__(
        self,
        *,
        batch_dice: bool,
        ignore_channel: bool = False,
        weight_dice: float = 1.0,
        weight_bce: float = 1.0,
        smooth: float = DICE_SMOOTH,
    ) -> None:
        super().__init__()
        self.batch_dice = batch_dice
        self.ignore_channel = ignore_channel
        self.weight_dice = weight_dice
        self.weight_bce = weight_bce
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss for ``logits`` ``(B, R, *spatial)`` and region targets ``(B, R[+1], *spatial)``."""
        logits = logits.float()
        if self.ignore_channel:
            mask = ~target[:, -1:].bool()
            regions = target[:, :-1].float()
        else:
            mask = None
            regions = target.float()
        if regions.shape != logits.shape:
            extra = " plus the ignore channel" if self.ignore_channel else ""
            raise ValueError(
                f"region target {tuple(target.shape)} does not match logits "
                f"{tuple(logits.shape)}{extra}"
            )
        dice = soft_dice(
            torch.sigmoid(logits),
            regions,
            batch_dice=self.batch_dice,
            mask=mask,
            smooth=self.smooth,
        )
        if mask is None:
            bce = F.binary_cross_entropy_with_logits(logits, regions)
        else:
            per_element = F.binary_cross_entropy_with_logits(logits, regions, reduction="none")
            # nnU-Net v2 divides the masked sum by the number of counted voxels, not voxels
            # times regions; kept so that the BCE:Dice balance matches the method.
            bce = batch_sum((per_element * mask).sum()) / batch_count(mask.sum()).clamp_min(1)
        return self.weight_bce * bce - self.weight_dice * dice.mean()


def dice_ce_loss(
    *,
    batch_dice: bool,
    regions: bool,
    ignore_label: int | None,
    weight_dice: float = 1.0,
    weight_ce: float = 1.0,
    smooth: float = DICE_SMOOTH,
) -> nn.Module:
    """nnU-Net v2's loss: Dice + CE 1:1 for classes, Dice + BCE for regions (the ``make`` of
    ``dice_ce`` in :data:`~segflow.training.loss_catalog.LOSS_CATALOG`).

    ``weight_ce`` weights the binary cross-entropy for regions (one name for both forms).
    """
    if regions:
        return RegionDiceBCELoss(
            batch_dice=batch_dice,
            ignore_channel=ignore_label is not None,
            weight_dice=weight_dice,
            weight_bce=weight_ce,
            smooth=smooth,
        )
    return DiceCELoss(
        batch_dice=batch_dice,
        ignore_label=ignore_label,
        weight_dice=weight_dice,
        weight_ce=weight_ce,
        smooth=smooth,
    )
