"""The nnU-Net v2 training losses: Dice + CE, regions, ignore label, deep supervision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segflow.io.dataset import DatasetJson
from segflow.training.losses import (
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

# Fixed inputs without a random generator, so that the reference numbers below (obtained by
# running nnU-Net v2's own loss classes once on exactly these tensors, see each test) hold on
# any machine and torch version.


def _logits(shape: tuple[int, ...], k: float = 0.37) -> torch.Tensor:
    n = math.prod(shape)
    return (3 * torch.sin(torch.arange(n, dtype=torch.float64) * k)).float().reshape(shape)


def _labels(shape: tuple[int, ...], num: int, k: int = 7) -> torch.Tensor:
    n = math.prod(shape)
    i = torch.arange(n)
    return ((i * k + i // 5) % num).reshape(shape)


def _dataset(labels: dict) -> DatasetJson:
    return DatasetJson(
        channel_names={0: "CT"}, labels=labels, num_training=1, file_ending=".nii.gz"
    )


# --- soft Dice ------------------------------------------------------------------------------


def test_soft_dice_by_hand():
    # One sample, one channel, four voxels: p = [1, .5, 0, 0], t = [1, 1, 0, 0].
    p = torch.tensor([1.0, 0.5, 0.0, 0.0]).reshape(1, 1, 4)
    t = torch.tensor([1, 1, 0, 0]).reshape(1, 1, 4)
    dice = soft_dice(p, t, batch_dice=False, smooth=0.0)
    assert dice.shape == (1, 1)
    assert dice.item() == pytest.approx(2 * 1.5 / (1.5 + 2))
    # The smoothing goes into numerator and denominator.
    dice = soft_dice(p, t, batch_dice=False, smooth=1.0)
    assert dice.item() == pytest.approx((3 + 1) / (3.5 + 1))


def test_empty_channel_has_dice_one_thanks_to_smoothing():
    p = torch.zeros(1, 1, 4)
    assert soft_dice(p, p, batch_dice=False).item() == pytest.approx(1.0)


def test_batch_dice_differs_from_per_sample_dice():
    # Sample 0: perfect (Dice 1). Sample 1: predicts 1 voxel of 3 foreground voxels.
    p = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]).reshape(2, 1, 4)
    t = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]]).reshape(2, 1, 4)
    per_sample = soft_dice(p, t, batch_dice=False, smooth=0.0)
    batch = soft_dice(p, t, batch_dice=True, smooth=0.0)
    assert per_sample.flatten().tolist() == pytest.approx([1.0, 2 / 4])
    assert per_sample.mean().item() == pytest.approx(0.75)
    # Summed over the batch first: 2 * 2 / (2 + 4).
    assert batch.shape == (1,)
    assert batch.item() == pytest.approx(4 / 6)


def test_perfect_prediction_gives_minus_one_dice_and_near_zero_ce():
    labels = _labels((2, 1, 4, 5), 3)
    logits = 50.0 * F.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).float()
    loss = DiceCELoss(batch_dice=False, weight_ce=0.0)(logits, labels)
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    ce_only = DiceCELoss(batch_dice=False, weight_dice=0.0)(logits, labels)
    assert ce_only.item() == pytest.approx(0.0, abs=1e-6)


def test_background_is_left_out_of_the_dice():
    # Background predicted perfectly, the one foreground class entirely missed.
    labels = torch.tensor([0, 0, 0, 1]).reshape(1, 1, 4)
    logits = torch.tensor([[9.0, 9.0, 9.0, 9.0], [-9.0, -9.0, -9.0, -9.0]]).reshape(1, 2, 4)
    dice_term = DiceCELoss(batch_dice=False, weight_ce=0.0)(logits, labels)
    probs = logits.softmax(1)[0, 1]
    expected = (2 * probs[3] + 1e-5) / (probs.sum() + 1 + 1e-5)
    assert dice_term.item() == pytest.approx(-expected.item(), rel=1e-5)


# --- Dice + CE against nnU-Net --------------------------------------------------------------


def test_cross_entropy_term_is_torchs():
    logits, labels = _logits((2, 3, 4, 5)), _labels((2, 1, 4, 5), 3)
    ce_only = DiceCELoss(batch_dice=False, weight_dice=0.0)(logits, labels)
    assert ce_only.item() == pytest.approx(F.cross_entropy(logits, labels[:, 0]).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("batch_dice", "expected", "expected_dice"),
    [
        # nnunetv2 2.x: DC_and_CE_loss({'batch_dice': bd, 'smooth': 1e-5, 'do_bg': False,
        # 'ddp': False}, {}, weight_ce=1, weight_dice=1, ignore_label=None,
        # dice_class=MemoryEfficientSoftDiceLoss)(x, y), as nnUNetTrainer._build_loss makes it;
        # its .ce(x, y[:, 0]) gave 2.0348496437072754 in both cases.
        (False, 1.7584357261657715, -0.2764139175415039),
        (True, 1.7571520805358887, -0.2776975631713867),
    ],
)
def test_dice_ce_matches_nnunet(batch_dice, expected, expected_dice):
    logits, labels = _logits((2, 3, 4, 5)), _labels((2, 1, 4, 5), 3)
    loss = DiceCELoss(batch_dice=batch_dice)(logits, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    dice_term = DiceCELoss(batch_dice=batch_dice, weight_ce=0.0)(logits, labels)
    assert dice_term.item() == pytest.approx(expected_dice, rel=1e-5)
    # A (B, *spatial) label map is accepted as well.
    assert DiceCELoss(batch_dice=batch_dice)(logits, labels[:, 0]).item() == loss.item()


@pytest.mark.parametrize(
    ("batch_dice", "expected"),
    # nnunetv2: the same DC_and_CE_loss with ignore_label=3 on _labels((2, 1, 4, 5), 4, k=5).
    [(False, 1.5758616924285889), (True, 1.574005126953125)],
)
def test_ignore_label_matches_nnunet(batch_dice, expected):
    logits, labels = _logits((2, 3, 4, 5)), _labels((2, 1, 4, 5), 4, k=5)
    assert (labels == 3).any()  # the ignore value is outside the 3 classes
    loss = DiceCELoss(batch_dice=batch_dice, ignore_label=3)(logits, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch_dice", [False, True])
def test_predictions_at_ignored_voxels_change_nothing(batch_dice):
    logits, labels = _logits((2, 3, 4, 5)), _labels((2, 1, 4, 5), 4, k=5)
    ignored = (labels == 3).expand_as(logits)
    changed = torch.where(ignored, -7.0 * logits + 4.0, logits)
    loss = DiceCELoss(batch_dice=batch_dice, ignore_label=3)
    assert loss(changed, labels).item() == loss(logits, labels).item()
    changed.requires_grad_(True)
    loss(changed, labels).backward()
    assert torch.all(changed.grad[ignored] == 0)
    assert torch.any(changed.grad[~ignored] != 0)


def test_all_ignored_batch_gives_a_finite_loss():
    logits = _logits((1, 3, 2, 2))
    labels = torch.full((1, 1, 2, 2), 3)
    loss = DiceCELoss(batch_dice=True, ignore_label=3)(logits, labels)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(-1.0)  # empty Dice is 1 by smoothing; CE is 0


# --- regions --------------------------------------------------------------------------------


def test_label_map_to_regions():
    label_map = torch.tensor([0, 1, 2, 3, 4]).reshape(1, 1, 5)
    regions = label_map_to_regions(label_map, [(1, 2, 3), (2, 3), 3], ignore_label=4)
    assert regions.dtype == torch.bool
    assert regions.shape == (1, 4, 5)
    assert regions[0].int().tolist() == [
        [0, 1, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],  # the ignore channel, last
    ]


def test_foreground_regions_follow_dataset_json():
    dataset = _dataset(
        {
            "background": 0,
            "whole tumor": (1, 2, 3),
            "tumor core": (2, 3),
            "enhancing": 3,
            "ignore": 4,
        }
    )
    assert foreground_regions(dataset) == [(1, 2, 3), (2, 3), (3,)]


@pytest.mark.parametrize(
    ("batch_dice", "ignore", "expected"),
    [
        # nnunetv2: DC_and_BCE_loss({}, {'batch_dice': bd, 'do_bg': True, 'smooth': 1e-5,
        # 'ddp': False}, use_ignore_label=ignore, dice_class=MemoryEfficientSoftDiceLoss),
        # the target made per case by batchgeneratorsv2's ConvertSegmentationToRegionsTransform
        # with regions [(1, 2, 3), (2, 3), (3,)] (+ [4] with the ignore label).
        (False, False, 0.6526026725769043),
        (True, False, 0.6525216102600098),
        (False, True, 2.7755374908447266),
        (True, True, 2.769760847091675),
    ],
)
def test_region_dice_bce_matches_nnunet(batch_dice, ignore, expected):
    logits = _logits((2, 3, 4, 5), k=0.53)
    if ignore:
        label_map = _labels((2, 1, 4, 5), 5, k=3)
        target = label_map_to_regions(label_map, [(1, 2, 3), (2, 3), (3,)], ignore_label=4)
    else:
        label_map = _labels((2, 1, 4, 5), 4, k=3)
        target = label_map_to_regions(label_map, [(1, 2, 3), (2, 3), (3,)])
    loss = RegionDiceBCELoss(batch_dice=batch_dice, ignore_channel=ignore)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_region_loss_is_bce_plus_dice_over_every_region():
    logits = _logits((2, 3, 4, 5), k=0.53)
    target = label_map_to_regions(_labels((2, 1, 4, 5), 4, k=3), [(1, 2, 3), (2, 3), (3,)])
    loss = RegionDiceBCELoss(batch_dice=False)(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits, target.float())
    dice = soft_dice(torch.sigmoid(logits), target, batch_dice=False)
    assert dice.shape == (2, 3)  # no region is left out
    assert loss.item() == pytest.approx((bce - dice.mean()).item(), rel=1e-6)


def test_region_predictions_at_ignored_voxels_change_nothing():
    logits = _logits((2, 3, 4, 5), k=0.53)
    target = label_map_to_regions(
        _labels((2, 1, 4, 5), 5, k=3), [(1, 2, 3), (2, 3), (3,)], ignore_label=4
    )
    ignored = target[:, -1:].expand_as(logits)
    changed = torch.where(ignored, logits + 5.0, logits)
    loss = RegionDiceBCELoss(batch_dice=True, ignore_channel=True)
    assert loss(changed, target).item() == loss(logits, target).item()


# --- deep supervision -----------------------------------------------------------------------


def test_deep_supervision_weights_for_four_outputs():
    # 1, 1/2, 1/4, 1/8 -> last set to 0 -> divided by 1.75; nnunetv2's _build_loss gives
    # [0.5714285714285714, 0.2857142857142857, 0.14285714285714285, 0.0].
    weights = deep_supervision_weights(4)
    assert weights == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0], rel=1e-15, abs=0)
    assert weights == pytest.approx(
        [0.5714285714285714, 0.2857142857142857, 0.14285714285714285, 0]
    )
    assert sum(weights) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        deep_supervision_weights(1)


def test_deep_supervision_scales_are_cumulative_inverse_strides():
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1], [1, 2, 2]]
    # As nnUNetTrainer._get_deep_supervision_scales computes them for these strides.
    assert deep_supervision_scales(strides) == [
        (1.0, 1.0, 1.0),
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
        (0.125, 0.125, 0.25),
    ]


def test_downsampled_targets_shapes_and_values():
    scales = deep_supervision_scales([[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1], [1, 2, 2]])
    seg = _labels((1, 8, 8, 4), 4).to(torch.uint8)
    out = downsample_for_deep_supervision(seg, scales)
    # The shapes nnunetv2's DownsampleSegForDSTransform gives for this case and these scales.
    assert [tuple(t.shape) for t in out] == [(1, 8, 8, 4), (1, 4, 4, 2), (1, 2, 2, 1), (1, 1, 1, 1)]
    assert out[0] is seg
    for t, scale in zip(out, scales, strict=True):
        assert t.dtype == torch.uint8
        # The same voxels as torch's "nearest-exact" interpolation (what nnU-Net v2 uses).
        size = [round(n * s) for n, s in zip(seg.shape[1:], scale, strict=True)]
        ref = F.interpolate(seg[None].float(), size, mode="nearest-exact")[0].to(torch.uint8)
        assert torch.equal(t, ref)


def test_downsampling_a_batch_and_regions_commute():
    label_map = _labels((2, 1, 8, 6), 4)
    regions = [(1, 2, 3), (2, 3)]
    scales = [(1.0, 1.0), (0.5, 0.5), (0.25, 0.5)]
    small_maps = downsample_for_deep_supervision(label_map, scales)
    small_regions = downsample_for_deep_supervision(
        label_map_to_regions(label_map, regions), scales
    )
    assert [tuple(t.shape) for t in small_maps] == [(2, 1, 8, 6), (2, 1, 4, 3), (2, 1, 2, 3)]
    for m, r in zip(small_maps, small_regions, strict=True):
        assert torch.equal(label_map_to_regions(m, regions), r)


def test_deep_supervision_loss_matches_nnunet():
    outputs = [
        _logits((2, 3, 8, 8)),
        _logits((2, 3, 4, 4), k=0.11),
        _logits((2, 3, 2, 2), k=0.7),
    ]
    targets = [
        t[:, None]
        for t in downsample_for_deep_supervision(
            _labels((2, 8, 8), 3), [(1, 1), (0.5, 0.5), (0.25, 0.25)]
        )
    ]
    loss = build_loss(_dataset({"background": 0, "a": 1, "b": 2}), batch_dice=True, num_outputs=3)
    assert isinstance(loss, DeepSupervisionLoss)
    # nnunetv2: DeepSupervisionWrapper(DC_and_CE_loss(batch_dice=True, as above), weights
    # [2/3, 1/3, 0] as _build_loss makes them for 3 outputs), the targets made by
    # batchgeneratorsv2's DownsampleSegForDSTransform.
    assert loss(outputs, targets).item() == pytest.approx(2.016418218612671, rel=1e-5)
    # The coarsest output has weight 0: changing it changes nothing.
    outputs[2] = outputs[2] * 3
    assert loss(outputs, targets).item() == pytest.approx(2.016418218612671, rel=1e-5)


# --- build_loss, gradients, devices ---------------------------------------------------------


def test_build_loss_picks_the_loss_from_the_labels():
    plain = build_loss(_dataset({"background": 0, "a": 1, "ignore": 2}), batch_dice=False)
    assert isinstance(plain, DiceCELoss)
    assert plain.ignore_label == 2
    regions = build_loss(
        _dataset({"background": 0, "a": (1, 2), "b": 2, "ignore": 3}), batch_dice=True
    )
    assert isinstance(regions, RegionDiceBCELoss)
    assert regions.ignore_channel and regions.batch_dice


@pytest.mark.parametrize("regions", [False, True])
def test_loss_backpropagates_through_deep_supervision(regions):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    image = torch.randn(2, 1, 8, 8)
    label_map = _labels((2, 1, 8, 8), 4)
    scales = [(1.0, 1.0), (0.5, 0.5), (0.25, 0.25)]
    if regions:
        target = label_map_to_regions(label_map, [(1, 2, 3), (2, 3), (3,)])
        labels = {"background": 0, "a": (1, 2, 3), "b": (2, 3), "c": 3}
    else:
        target = label_map % 3
        labels = {"background": 0, "a": 1, "b": 2}
    loss = build_loss(_dataset(labels), batch_dice=False, num_outputs=3)
    full = conv(image)
    outputs = [full, F.avg_pool2d(full, 2), F.avg_pool2d(full, 4)]
    value = loss(outputs, downsample_for_deep_supervision(target, scales))
    value.backward()
    assert conv.weight.grad is not None
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    logits = _logits((1, 3, 2, 3)).double().requires_grad_(True)
    labels = _labels((1, 1, 2, 3), 4, k=5)

    def f(x: torch.Tensor) -> torch.Tensor:
        # float32 inside the loss; compare loosely.
        return DiceCELoss(batch_dice=True, ignore_label=3)(x, labels)

    value = f(logits)
    value.backward()
    eps = 1e-2
    direction = torch.from_numpy(np.linspace(-1, 1, logits.numel())).reshape(logits.shape)
    numeric = (f(logits + eps * direction) - f(logits - eps * direction)) / (2 * eps)
    analytic = (logits.grad * direction).sum()
    assert analytic.item() == pytest.approx(numeric.item(), rel=1e-2, abs=1e-4)


def test_loss_is_float32_under_cpu_autocast():
    logits, labels = _logits((2, 3, 4, 5)), _labels((2, 1, 4, 5), 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DiceCELoss(batch_dice=True)(logits.bfloat16(), labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.7571520805358887, rel=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loss_on_cuda_under_autocast():
    logits = _logits((2, 3, 4, 5)).cuda().requires_grad_(True)
    labels = _labels((2, 1, 4, 5), 3).cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        loss = DiceCELoss(batch_dice=True)(logits.half(), labels)
    loss.backward()
    assert loss.device.type == "cuda" and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.7571520805358887, rel=1e-2)
