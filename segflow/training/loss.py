"""Training losses of the nnU-Net v2 method.

Two losses, chosen by the labels in ``dataset.json``:

* Classes (every label one integer): softmax over all outputs, soft Dice over the foreground
  classes plus cross-entropy, weighted 1:1 (:class:`DiceCELoss`).
* Regions (some label a list of values): one sigmoid per region, soft Dice over every region
  plus binary cross-entropy on the logits (:class:`RegionDiceBCELoss`).

The Dice term is the *negative* mean soft Dice, so a perfect prediction contributes close to
-1 and the combined loss can be negative. With deep supervision the network returns one output
per decoder resolution; :class:`DeepSupervisionLoss` sums the per-resolution losses with weights
halving per resolution, the coarsest output weighted 0, normalized to sum 1. The targets for the
coarser outputs come from :func:`downsample_for_deep_supervision`.

All losses compute in float32 whatever the autocast state, and never move tensors between
devices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segflow.io.dataset import DatasetJson

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

DICE_SMOOTH = 1e-5
"""Added to numerator and denominator of the soft Dice (nnU-Net v2's training value)."""


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
    denominator = (pred_sum + target_sum + smooth).clamp_min(1e-8)
    return (2 * intersection + smooth) / denominator


def _as_label_map(target: Tensor, logits: Tensor) -> Tensor:
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
        labels = _as_label_map(target, logits)
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
        # Mean over the annotated voxels; 0 (not NaN) when a batch has none.
        return per_voxel.sum() / mask.sum().clamp_min(1)


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
            bce = (per_element * mask).sum() / mask.sum().clamp_min(1)
        return self.weight_bce * bce - self.weight_dice * dice.mean()


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


def deep_supervision_scales(strides: Sequence[Sequence[int]]) -> list[tuple[float, ...]]:
    """Size of each deep-supervision output relative to the patch, finest first.

    The scale of output ``i`` is ``1 / prod(strides[:i + 1])`` per axis; the bottleneck (the
    last cumulative product) has no output.

    Args:
        strides: the configuration's per-stage strides (the first is usually all ones).

    Returns:
        One scale tuple per network output.
    """
    cumulative = np.cumprod(np.asarray(strides, dtype=np.int64), axis=0)
    return [tuple(float(1 / s) for s in row) for row in cumulative[:-1]]


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """Loss weight of each output, finest first: ``1 / 2**i``, the last 0, normalized to sum 1.

    Args:
        num_outputs: how many resolutions the network returns (at least 2).
    """
    if num_outputs < 2:
        raise ValueError(f"deep supervision needs at least 2 outputs, got {num_outputs}")
    weights = np.array([1 / 2**i for i in range(num_outputs)])
    # The coarsest output gets no weight: nnU-Net v2 does not train it.
    weights[-1] = 0
    return (weights / weights.sum()).tolist()


def _nearest_indices(size_in: int, size_out: int, device: torch.device) -> Tensor:
    # The source voxel whose cell holds the output voxel's centre; for an integer factor f this
    # is f * i + f // 2, the same choice as torch's "nearest-exact" interpolation.
    scale = size_in / size_out
    idx = torch.floor((torch.arange(size_out, device=device, dtype=torch.float64) + 0.5) * scale)
    return idx.long().clamp_max(size_in - 1)


def downsample_for_deep_supervision(
    target: Tensor, scales: Sequence[Sequence[float] | float]
) -> list[Tensor]:
    """Targets for every deep-supervision output, by nearest-neighbour voxel selection.

    Selection keeps dtype and values (labels, booleans), so it commutes with
    :func:`label_map_to_regions`.

    Args:
        target: tensor whose trailing axes are spatial, e.g. ``(B, 1, x, y, z)`` or
            ``(1, x, y, z)``.
        scales: per output, the scale per spatial axis (or one number for all), as from
            :func:`deep_supervision_scales`. The output size is ``round(size * scale)``.

    Returns:
        One tensor per scale; a scale of all ones returns ``target`` itself.
    """
    results = []
    for scale in scales:
        # A single number applies to every axis but the first (nnU-Net's per-case layout).
        per_axis = (
            [float(s) for s in scale]
            if isinstance(scale, Sequence)
            else ([float(scale)] * (target.ndim - 1))
        )
        n = len(per_axis)
        if n > target.ndim:
            raise ValueError(f"scale {scale} has more axes than target {tuple(target.shape)}")
        if all(s == 1 for s in per_axis):
            results.append(target)
            continue
        out = target
        first = target.ndim - n
        for axis, s in enumerate(per_axis, start=first):
            size_in = target.shape[axis]
            size_out = max(round(size_in * s), 1)
            if size_out != size_in:
                out = out.index_select(axis, _nearest_indices(size_in, size_out, target.device))
        results.append(out)
    return results


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a loss over the outputs of every resolution.

    Args:
        loss: the loss for one resolution, called as ``loss(output, target)``.
        weights: one per output, finest first; outputs weighted 0 are not evaluated.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        if not any(w != 0 for w in weights):
            raise ValueError("at least one deep-supervision weight must be non-zero")
        self.loss = loss
        self.weights = tuple(float(w) for w in weights)

    def forward(self, outputs: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        """Loss over ``outputs`` and ``targets``, one of each per resolution."""
        if not len(outputs) == len(targets) == len(self.weights):
            raise ValueError(
                f"got {len(outputs)} outputs and {len(targets)} targets for "
                f"{len(self.weights)} deep-supervision weights"
            )
        terms = [
            w * self.loss(o, t)
            for w, o, t in zip(self.weights, outputs, targets, strict=True)
            if w != 0
        ]
        return torch.stack(terms).sum()


def build_loss(dataset: DatasetJson, *, batch_dice: bool, num_outputs: int = 1) -> nn.Module:
    """The training loss nnU-Net v2 uses for this dataset.

    Args:
        dataset: the dataset description; regions pick :class:`RegionDiceBCELoss`, otherwise
            :class:`DiceCELoss`, each honouring the ignore label.
        batch_dice: the configuration's ``batch_dice``.
        num_outputs: network outputs; above 1, the loss is wrapped in
            :class:`DeepSupervisionLoss` with :func:`deep_supervision_weights`.

    Returns:
        The loss module; with deep supervision it takes lists of outputs and targets.
    """
    loss: nn.Module
    if dataset.has_regions:
        loss = RegionDiceBCELoss(
            batch_dice=batch_dice, ignore_channel=dataset.ignore_label is not None
        )
    else:
        loss = DiceCELoss(batch_dice=batch_dice, ignore_label=dataset.ignore_label)
    if num_outputs > 1:
        loss = DeepSupervisionLoss(loss, deep_supervision_weights(num_outputs))
    return loss
