"""Other losses than the method's default: exponential logarithmic, focal, soft IoU, Dice+focal.

Every loss here reads its target the same way, in one of two forms, chosen by ``regions``:

* Classes: ``target`` is an integer label map ``(B[, 1], *spatial)``; the logits go through a
  softmax. The overlap terms (Dice, IoU) average over the foreground classes (background left
  out, as in the default loss) unless ``include_background``; the voxel terms (cross-entropy,
  focal) see, per voxel, the log-probability of its label.
* Regions: ``target`` is the output of :func:`~segflow.training.losses.targets.label_map_to_regions`
  ``(B, R[+1], *spatial)``; one sigmoid per region. The overlap terms average over every
  region; the voxel terms treat each (voxel, region) as a two-label problem (inside/outside).

Voxels carrying the ignore label (classes) or marked in the ignore channel (regions) count in no
term: they are left out of every sum, of the label counts and of the number a mean divides by,
so the loss and its gradient do not depend on the logits there. Voxel terms are means over the
counted elements (voxels; voxels times regions for regions) and 0 when none is counted.

All compute in float32 whatever the autocast state and never move tensors between devices.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segflow.training.losses.dice_ce import as_label_map
from segflow.training.losses.overlap import DICE_SMOOTH, soft_dice, soft_jaccard

__all__ = ["DiceFocalLoss", "ExpLogLoss", "FocalLoss", "SoftIoULoss"]

LOG_FLOOR = 1e-6
"""Smallest value of ``-ln x`` (and of ``1 - p_t``) raised to a power below 1.

``d/dx x**g`` is infinite at 0 for ``g < 1`` (and ``0 * inf`` is NaN in the backward pass);
below this floor the term is flat instead. ``1e-6`` is about the resolution of a float32
log-probability near 0, so nothing a float32 network can express is lost.
"""

DICE_FLOOR = 1e-6
"""Dice values are clamped to at least this before the logarithm (``-ln`` of 0 is infinite)."""


class _Outcomes(NamedTuple):
    """A batch read for the losses: probabilities, targets, per-element outcomes, mask."""

    probabilities: Tensor  # (B, C, *spatial) softmax or sigmoid, float32
    target: Tensor  # (B, C, *spatial) float32 one-hot (classes) or regions
    first: int  # first channel of the overlap terms (1 leaves out the background)
    log_p: Tensor  # (B, K, *spatial) log-probability of each element's true outcome
    outcome: Tensor  # (B, K, *spatial) long: the voxel's label, or 1/0 inside/outside a region
    mask: Tensor | None  # (B, 1, *spatial) bool, true where voxels count


def _read_classes(
    logits: Tensor, target: Tensor, ignore_label: int | None, include_background: bool
) -> _Outcomes:
    labels = as_label_map(target, logits)
    if ignore_label is None:
        mask = None
    else:
        mask = labels != ignore_label
        # Any valid class will do at ignored voxels: the mask removes them from every term.
        labels = torch.where(mask, labels, 0)
    with torch.no_grad():
        one_hot = torch.zeros_like(logits).scatter_(1, labels, 1.0)
    log_p = logits.log_softmax(1).gather(1, labels)
    first = 0 if include_background else 1
    return _Outcomes(logits.softmax(1), one_hot, first, log_p, labels, mask)


def _read_regions(logits: Tensor, target: Tensor, ignore_channel: bool) -> _Outcomes:
    if ignore_channel:
        mask = ~target[:, -1:].bool()
        regions = target[:, :-1]
    else:
        mask = None
        regions = target
    if regions.shape != logits.shape:
        extra = " plus the ignore channel" if ignore_channel else ""
        raise ValueError(
            f"region target {tuple(target.shape)} does not match logits "
            f"{tuple(logits.shape)}{extra}"
        )
    inside = regions.bool()
    # log sigma(z) inside a region, log(1 - sigma(z)) = log sigma(-z) outside.
    log_p = F.logsigmoid(torch.where(inside, logits, -logits))
    return _Outcomes(torch.sigmoid(logits), regions.float(), 0, log_p, inside.long(), mask)


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` ``(B, K, *spatial)`` over the counted elements; 0 when none is."""
    if mask is None:
        return values.mean()
    counted = mask.sum() * values.shape[1]
    return torch.where(mask, values, 0.0).sum() / counted.clamp_min(1)


class _SegmentationLoss(nn.Module):
    """Reads the target as classes or regions; subclasses combine the terms.

    Args:
        batch_dice: overlap terms over the whole batch (the plans' ``batch_dice``) or per
            sample.
        regions: sigmoid per region with region targets, instead of a softmax over classes.
        ignore_label: classes: the label value of unannotated voxels. Regions: not ``None``
            means the target's last channel marks them (as
            :func:`~segflow.training.losses.targets.label_map_to_regions` makes it).
        include_background: classes only: the background channel in the overlap terms.
    """

    def __init__(
        self,
        *,
        batch_dice: bool,
        regions: bool,
        ignore_label: int | None,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        if regions and include_background:
            raise ValueError("include_background has no meaning for regions (no background)")
        self.batch_dice = batch_dice
        self.regions = regions
        self.ignore_label = ignore_label
        self.include_background = include_background

    def read(self, logits: Tensor, target: Tensor) -> _Outcomes:
        """The batch in the form every term uses, in float32."""
        logits = logits.float()
        if self.regions:
            return _read_regions(logits, target, self.ignore_label is not None)
        return _read_classes(logits, target, self.ignore_label, self.include_background)

    def dice(self, o: _Outcomes, smooth: float) -> Tensor:
        """Soft Dice per overlap channel (and sample, without ``batch_dice``)."""
        return soft_dice(
            o.probabilities[:, o.first :],
            o.target[:, o.first :],
            batch_dice=self.batch_dice,
            mask=o.mask,
            smooth=smooth,
        )


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def focal_term(o: _Outcomes, gamma: float, alpha: float | None) -> Tensor:
    """Mean focal loss ``-alpha_t (1 - p_t)**gamma ln p_t`` over the counted elements.

    ``alpha_t`` is ``alpha`` for foreground outcomes (a non-background label, inside a region)
    and ``1 - alpha`` otherwise; 1 throughout when ``alpha`` is ``None``.
    """
    # 1 - p_t from the log-probability without cancellation.
    modulator = (-torch.expm1(o.log_p)).clamp_min(LOG_FLOOR).pow(gamma)
    values = -modulator * o.log_p
    if alpha is not None:
        values = values * torch.where(o.outcome != 0, alpha, 1.0 - alpha)
    return _masked_mean(values, o.mask)


class ExpLogLoss(_SegmentationLoss):
    """Exponential logarithmic loss (Wong et al., MICCAI 2018).

    ``L = w_dice * E_i[(-ln Dice_i)**gamma_dice] + w_ce * E_x[w_l * (-ln p_l(x))**gamma_ce]``
    with ``Dice_i = (2 sum(p_i t_i) + smooth) / (sum(p_i) + sum(t_i) + smooth)`` and label
    weights ``w_l = (sum_k f_k / f_l)**0.5``.

    Defaults and their sources: ``weight_dice=0.8``, ``weight_ce=0.2``: Wong et al.'s
    weights, kept by the KiTS19 seed (Zhao et al. 2019, MSS U-Net), which this project follows;
    ``gamma_dice=gamma_ce=0.3``: the KiTS19 seed's exponents (the paper's exponents are free
    parameters; 1 for both gives ``-ln Dice`` plus weighted cross-entropy); ``smooth=1``: the
    paper's pseudocount for labels missing from a sample (with the default loss's 1e-5, a
    label absent from the target but given a summed probability of 1 has ``-ln Dice`` = 11.5).

    Choices of this implementation:

    * Label frequencies ``f_k`` are counted per batch from the target, over the counted voxels
      (self-contained; no fingerprint needed). A label absent from the batch gets a count of 1
      instead of 0; it weights no voxel then, so this only avoids a division by zero. Regions:
      each region is a two-label problem, inside and outside weighted by their own counts.
    * ``E_i`` is over the foreground classes (background left out unless
      ``include_background``, as in the default loss; the paper's mean over labels does not
      single out the background) or every region, and over the samples without
      ``batch_dice``.
    * ``Dice_i`` is clamped to at least :data:`DICE_FLOOR` before the logarithm, and both
      ``-ln`` terms to at least :data:`LOG_FLOOR` before the power (whose slope at 0 is
      infinite for an exponent below 1).
    """

    def __init__(
        self,
        *,
        batch_dice: bool,
        regions: bool,
        ignore_label: int | None,
        weight_dice: float = 0.8,
        weight_ce: float = 0.2,
        gamma_dice: float = 0.3,
        gamma_ce: float = 0.3,
        smooth: float = 1.0,
        include_background: bool = False,
    ) -> None:
        super().__init__(
            batch_dice=batch_dice,
            regions=regions,
            ignore_label=ignore_label,
            include_background=include_background,
        )
        _check_non_negative(
            weight_dice=weight_dice,
            weight_ce=weight_ce,
            gamma_dice=gamma_dice,
            gamma_ce=gamma_ce,
            smooth=smooth,
        )
        self.weight_dice = weight_dice
        self.weight_ce = weight_ce
        self.gamma_dice = gamma_dice
        self.gamma_ce = gamma_ce
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss for ``logits`` ``(B, C, *spatial)`` and a label map or region target."""
        o = self.read(logits, target)
        dice = self.dice(o, self.smooth).clamp(DICE_FLOOR, 1.0)
        dice_term = (-torch.log(dice)).clamp_min(LOG_FLOOR).pow(self.gamma_dice).mean()
        ce = (-o.log_p).clamp_min(LOG_FLOOR).pow(self.gamma_ce)
        ce_term = _masked_mean(self._label_weights(o) * ce, o.mask)
        return self.weight_dice * dice_term + self.weight_ce * ce_term

    def _label_weights(self, o: _Outcomes) -> Tensor:
        """``(sum_k f_k / f_l)**0.5`` of each element's label, from the batch's counts."""
        with torch.no_grad():
            mask = o.mask.float() if o.mask is not None else torch.ones_like(o.target[:, :1])
            axes = (0, *range(2, o.target.ndim))
            counted = mask.sum()
            if not self.regions:
                counts = (o.target * mask).sum(axes)  # per label
                per_label = (counts.sum() / counts.clamp_min(1)).sqrt()
                return per_label[o.outcome]
            inside = (o.target * mask).sum(axes)  # per region
            outside = counted - inside
            shape = (1, -1) + (1,) * (o.target.ndim - 2)
            weight_in = (counted / inside.clamp_min(1)).sqrt().reshape(shape)
            weight_out = (counted / outside.clamp_min(1)).sqrt().reshape(shape)
            return torch.where(o.outcome.bool(), weight_in, weight_out)


class FocalLoss(_SegmentationLoss):
    """Focal loss (Lin et al., ICCV 2017): ``-alpha_t (1 - p_t)**gamma ln p_t``, as a mean.

    ``p_t`` is the probability of the voxel's label (softmax) or, for regions, of its side of
    each region (sigmoid, the paper's own form). ``gamma=2`` is the paper's default; with
    ``gamma=0`` and no ``alpha`` this is plain cross-entropy. ``alpha`` weights foreground
    outcomes (a non-background label; inside a region) and ``1 - alpha`` the others; ``None``
    (the default) weights all alike. The paper pairs ``gamma=2`` with ``alpha=0.25``.
    """

    def __init__(
        self,
        *,
        batch_dice: bool,
        regions: bool,
        ignore_label: int | None,
        gamma: float = 2.0,
        alpha: float | None = None,
    ) -> None:
        super().__init__(batch_dice=batch_dice, regions=regions, ignore_label=ignore_label)
        _check_non_negative(gamma=gamma)
        if alpha is not None and not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss for ``logits`` ``(B, C, *spatial)`` and a label map or region target."""
        return focal_term(self.read(logits, target), self.gamma, self.alpha)


class SoftIoULoss(_SegmentationLoss):
    """Soft Jaccard (IoU) loss: ``1 - mean soft IoU`` over the foreground classes or regions.

    The relaxation of Rahman & Wang (ISVC 2016): intersection ``sum(p t)``, union
    ``sum(p) + sum(t) - sum(p t)``. 0 for a perfect prediction. ``smooth`` as for the Dice.
    """

    def __init__(
        self,
        *,
        batch_dice: bool,
        regions: bool,
        ignore_label: int | None,
        smooth: float = DICE_SMOOTH,
        include_background: bool = False,
    ) -> None:
        super().__init__(
            batch_dice=batch_dice,
            regions=regions,
            ignore_label=ignore_label,
            include_background=include_background,
        )
        _check_non_negative(smooth=smooth)
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss for ``logits`` ``(B, C, *spatial)`` and a label map or region target."""
        o = self.read(logits, target)
        iou = soft_jaccard(
            o.probabilities[:, o.first :],
            o.target[:, o.first :],
            batch_dice=self.batch_dice,
            mask=o.mask,
            smooth=self.smooth,
        )
        return 1.0 - iou.mean()


class DiceFocalLoss(_SegmentationLoss):
    """Soft Dice plus focal loss: ``-weight_dice * mean Dice + weight_focal * focal``.

    The Dice term is the default loss's (negative mean soft Dice, same smoothing); the focal
    term is :class:`FocalLoss`'s, in place of the cross-entropy.
    """

    def __init__(
        self,
        *,
        batch_dice: bool,
        regions: bool,
        ignore_label: int | None,
        weight_dice: float = 1.0,
        weight_focal: float = 1.0,
        gamma: float = 2.0,
        alpha: float | None = None,
        smooth: float = DICE_SMOOTH,
        include_background: bool = False,
    ) -> None:
        super().__init__(
            batch_dice=batch_dice,
            regions=regions,
            ignore_label=ignore_label,
            include_background=include_background,
        )
        _check_non_negative(
            weight_dice=weight_dice, weight_focal=weight_focal, gamma=gamma, smooth=smooth
        )
        if alpha is not None and not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        self.weight_dice = weight_dice
        self.weight_focal = weight_focal
        self.gamma = gamma
        self.alpha = alpha
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss for ``logits`` ``(B, C, *spatial)`` and a label map or region target."""
        o = self.read(logits, target)
        dice = self.dice(o, self.smooth)
        focal = focal_term(o, self.gamma, self.alpha)
        return self.weight_focal * focal - self.weight_dice * dice.mean()
