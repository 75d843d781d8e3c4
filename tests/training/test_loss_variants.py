"""The other losses (exp-log, focal, soft IoU, Dice+focal) against values computed by hand.

Each expected number is a literal, checked as well against a plain-``math`` evaluation of the
paper's formula on the same four voxels (``_ref_*`` below, no torch), so a reader can follow
where it comes from.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segflow.training.losses import (
    DeepSupervisionLoss,
    DiceFocalLoss,
    ExpLogLoss,
    FocalLoss,
    SoftIoULoss,
    downsample_for_deep_supervision,
    label_map_to_regions,
)
from segflow.training.losses.variants import LOG_FLOOR

# --- the tiny example: one sample, two classes, 2x2 voxels ----------------------------------

Z = [[[0.5, -1.0], [2.0, 0.0]], [[1.5, 0.5], [-1.0, 0.0]]]  # logits, (C=2, 2, 2)
Y = [[1, 0], [0, 0]]  # labels: one foreground voxel of four
VOXELS = [(0, 0), (0, 1), (1, 0), (1, 1)]


def _logits() -> torch.Tensor:
    return torch.tensor(Z)[None]  # (1, 2, 2, 2)


def _labels(values=Y) -> torch.Tensor:
    return torch.tensor(values)[None, None]  # (1, 1, 2, 2)


def _softmax(v) -> list[float]:
    e = [math.exp(z) for z in v]
    return [x / sum(e) for x in e]


def _probs(voxel) -> list[float]:
    return _softmax([Z[c][voxel[0]][voxel[1]] for c in range(2)])


def _ref_dice(voxels, labels, smooth, channel=1) -> float:
    inter = sum(_probs(v)[channel] * (labels[v[0]][v[1]] == channel) for v in voxels)
    pred = sum(_probs(v)[channel] for v in voxels)
    true = sum(labels[v[0]][v[1]] == channel for v in voxels)
    return (2 * inter + smooth) / (pred + true + smooth)


def _ref_exp_log(voxels, labels, wd=0.8, wc=0.2, gd=0.3, gc=0.3, smooth=1.0) -> float:
    dice_term = (-math.log(_ref_dice(voxels, labels, smooth))) ** gd
    counts = [sum(labels[v[0]][v[1]] == k for v in voxels) for k in range(2)]
    weights = [(sum(counts) / f) ** 0.5 for f in counts]
    ce = [
        weights[labels[v[0]][v[1]]] * (-math.log(_probs(v)[labels[v[0]][v[1]]])) ** gc
        for v in voxels
    ]
    return wd * dice_term + wc * sum(ce) / len(ce)


def _ref_focal(voxels, labels, gamma=2.0, alpha=None) -> float:
    terms = []
    for v in voxels:
        label = labels[v[0]][v[1]]
        pt = _probs(v)[label]
        a = 1.0 if alpha is None else (alpha if label != 0 else 1 - alpha)
        terms.append(-a * (1 - pt) ** gamma * math.log(pt))
    return sum(terms) / len(terms)


def _ref_soft_iou(voxels, labels, smooth=1e-5) -> float:
    inter = sum(_probs(v)[1] * (labels[v[0]][v[1]] == 1) for v in voxels)
    pred = sum(_probs(v)[1] for v in voxels)
    true = sum(labels[v[0]][v[1]] == 1 for v in voxels)
    return 1 - (inter + smooth) / (pred + true - inter + smooth)


# The softmax foreground probabilities of the four voxels are sigmoid(z1 - z0):
# sigmoid(1) = 0.7311, sigmoid(1.5) = 0.8176, sigmoid(-3) = 0.0474, sigmoid(0) = 0.5.
EXP_LOG = 0.8666252503481329
FOCAL = 0.3333316128980318
FOCAL_ALPHA = 0.24716645248496544  # alpha = 0.25
SOFT_IOU = 0.6908814463224757
DICE_FOCAL = -0.13892116675953914
BY_HAND = [
    ("exp_log", ExpLogLoss, {}, EXP_LOG),
    ("focal", FocalLoss, {}, FOCAL),
    ("focal_alpha", FocalLoss, {"alpha": 0.25}, FOCAL_ALPHA),
    ("soft_iou", SoftIoULoss, {}, SOFT_IOU),
    ("dice_focal", DiceFocalLoss, {}, DICE_FOCAL),
]


def test_reference_formulas_give_the_literals():
    assert _ref_exp_log(VOXELS, Y) == pytest.approx(EXP_LOG, rel=1e-12)
    assert _ref_focal(VOXELS, Y) == pytest.approx(FOCAL, rel=1e-12)
    assert _ref_focal(VOXELS, Y, alpha=0.25) == pytest.approx(FOCAL_ALPHA, rel=1e-12)
    assert _ref_soft_iou(VOXELS, Y) == pytest.approx(SOFT_IOU, rel=1e-12)
    dice_focal = _ref_focal(VOXELS, Y) - _ref_dice(VOXELS, Y, 1e-5)
    assert dice_focal == pytest.approx(DICE_FOCAL, rel=1e-12)


@pytest.mark.parametrize(
    ("case", "cls", "params", "expected"), BY_HAND, ids=[c[0] for c in BY_HAND]
)
@pytest.mark.parametrize("batch_dice", [False, True])
def test_loss_matches_the_hand_value(case, cls, params, expected, batch_dice):
    # One sample: batch Dice and per-sample Dice agree.
    loss = cls(batch_dice=batch_dice, regions=False, ignore_label=None, **params)
    value = loss(_logits(), _labels())
    assert value.dtype == torch.float32 and value.shape == ()
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # A (B, *spatial) label map works the same.
    assert loss(_logits(), _labels()[:, 0]).item() == value.item()


def test_exp_log_terms_by_hand():
    # Dice of class 1 with the pseudocount 1: (2 * 0.7311 + 1) / (2.0961 + 1 + 1).
    dice = (2 * 0.7310585786300049 + 1) / (
        0.7310585786300049 + 0.8175744761936437 + 0.04742587317756678 + 0.5 + 1 + 1
    )
    assert _ref_dice(VOXELS, Y, 1.0) == pytest.approx(dice, rel=1e-12)
    dice_only = ExpLogLoss(batch_dice=True, regions=False, ignore_label=None, weight_ce=0.0)
    assert dice_only(_logits(), _labels()).item() == pytest.approx(
        0.8 * (-math.log(dice)) ** 0.3, rel=1e-5
    )
    # Label weights: 3 background voxels and 1 foreground: sqrt(4/3) and sqrt(4/1).
    ce_only = ExpLogLoss(batch_dice=True, regions=False, ignore_label=None, weight_dice=0.0)
    nll = [
        -math.log(p)
        for p in (0.7310585786300049, 1 - 0.8175744761936437, 1 - 0.04742587317756678, 0.5)
    ]
    weights = [2.0, math.sqrt(4 / 3), math.sqrt(4 / 3), math.sqrt(4 / 3)]
    expected = 0.2 * sum(w * n**0.3 for w, n in zip(weights, nll, strict=True)) / 4
    assert ce_only(_logits(), _labels()).item() == pytest.approx(expected, rel=1e-5)


def test_exp_log_with_gamma_one_and_unit_weights_is_log_dice_plus_weighted_ce():
    loss = ExpLogLoss(
        batch_dice=True,
        regions=False,
        ignore_label=None,
        gamma_dice=1.0,
        gamma_ce=1.0,
        weight_dice=1.0,
        weight_ce=1.0,
    )
    expected = _ref_exp_log(VOXELS, Y, wd=1.0, wc=1.0, gd=1.0, gc=1.0)
    assert expected == pytest.approx(1.370910528187725, rel=1e-12)
    assert loss(_logits(), _labels()).item() == pytest.approx(expected, rel=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy():
    loss = FocalLoss(batch_dice=False, regions=False, ignore_label=None, gamma=0.0)
    ce = torch.nn.functional.cross_entropy(_logits(), _labels()[:, 0])
    assert loss(_logits(), _labels()).item() == pytest.approx(ce.item(), rel=1e-6)


def test_absent_label_weights_nothing_and_stays_finite():
    # Three outputs, label 2 absent: its count is clamped to 1 and weights no voxel.
    logits = torch.cat([_logits(), torch.zeros(1, 1, 2, 2)], dim=1).requires_grad_(True)
    loss = ExpLogLoss(batch_dice=False, regions=False, ignore_label=None)
    value = loss(logits, _labels())
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(logits.grad).all()


# --- ignore label ---------------------------------------------------------------------------

IGNORED = [[1, 2], [0, 0]]  # voxel (0, 1) carries the ignore label 2 (beyond the 2 classes)
COUNTED = [(0, 0), (1, 0), (1, 1)]
IGNORE_CASES = [
    ("exp_log", ExpLogLoss, _ref_exp_log(COUNTED, IGNORED), 0.7373657622954255),
    ("focal", FocalLoss, _ref_focal(COUNTED, IGNORED), 0.06535137865765021),
    ("soft_iou", SoftIoULoss, _ref_soft_iou(COUNTED, IGNORED), 0.5275613088064197),
    (
        "dice_focal",
        DiceFocalLoss,
        _ref_focal(COUNTED, IGNORED) - _ref_dice(COUNTED, IGNORED, 1e-5),
        -0.5763561998269398,
    ),
]


@pytest.mark.parametrize(
    ("case", "cls", "reference", "expected"), IGNORE_CASES, ids=[c[0] for c in IGNORE_CASES]
)
def test_ignored_voxels_count_in_no_term(case, cls, reference, expected):
    assert reference == pytest.approx(expected, rel=1e-12)
    loss = cls(batch_dice=True, regions=False, ignore_label=2)
    logits = _logits().requires_grad_(True)
    value = loss(logits, _labels(IGNORED))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # Other logits at the ignored voxel: the same loss, bit for bit, and no gradient there.
    changed = _logits()
    changed[0, :, 0, 1] = torch.tensor([-40.0, 25.0])
    assert loss(changed, _labels(IGNORED)).item() == value.item()
    value.backward()
    assert torch.all(logits.grad[0, :, 0, 1] == 0)
    assert torch.any(logits.grad != 0)


@pytest.mark.parametrize("cls", [ExpLogLoss, FocalLoss, SoftIoULoss, DiceFocalLoss])
def test_all_ignored_batch_is_finite(cls):
    logits = _logits().requires_grad_(True)
    value = cls(batch_dice=True, regions=False, ignore_label=2)(logits, torch.full((1, 1, 2, 2), 2))
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(logits.grad).all()


# --- regions: one sigmoid per region --------------------------------------------------------

RZ = [[[0.5, -1.0], [2.0, 0.0]], [[1.5, 0.5], [-1.0, -2.0]]]  # logits of 2 regions
RT = [[[1, 1], [0, 0]], [[1, 0], [0, 0]]]  # region 1 inside region 0


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _region_elements(voxels):
    # (region, voxel, inside, p_inside) for every counted voxel
    return [
        (r, v, RT[r][v[0]][v[1]], _sigmoid(RZ[r][v[0]][v[1]])) for r in range(2) for v in voxels
    ]


def _ref_region_dice(r, smooth, voxels=VOXELS):
    el = [e for e in _region_elements(voxels) if e[0] == r]
    inter = sum(p * t for _, _, t, p in el)
    return (2 * inter + smooth) / (sum(p for *_, p in el) + sum(t for _, _, t, _ in el) + smooth)


def _ref_region_exp_log(voxels=VOXELS):
    dice_term = sum((-math.log(_ref_region_dice(r, 1.0, voxels))) ** 0.3 for r in range(2)) / 2
    ce = []
    for r, _, t, p in _region_elements(voxels):
        inside = sum(RT[r][v[0]][v[1]] for v in voxels)
        weight = (len(voxels) / (inside if t else len(voxels) - inside)) ** 0.5
        ce.append(weight * (-math.log(p if t else 1 - p)) ** 0.3)
    return 0.8 * dice_term + 0.2 * sum(ce) / len(ce)


def _ref_region_focal(voxels=VOXELS):
    # The mean is over voxels times regions.
    terms = [
        -((1 - pt) ** 2) * math.log(pt)
        for pt in (p if t else 1 - p for _, _, t, p in _region_elements(voxels))
    ]
    return sum(terms) / len(terms)


def _ref_region_soft_iou(voxels=VOXELS):
    ious = []
    for r in range(2):
        el = [e for e in _region_elements(voxels) if e[0] == r]
        inter = sum(p * t for _, _, t, p in el)
        union = sum(p for *_, p in el) + sum(t for _, _, t, _ in el) - inter
        ious.append((inter + 1e-5) / (union + 1e-5))
    return 1 - sum(ious) / 2


def _ref_region_dice_focal(voxels=VOXELS):
    dice = (_ref_region_dice(0, 1e-5, voxels) + _ref_region_dice(1, 1e-5, voxels)) / 2
    return _ref_region_focal(voxels) - dice


R_COUNTED = [(0, 0), (0, 1), (1, 0)]  # with voxel (1, 1) marked in the ignore channel
REGION_CASES = [
    ("exp_log", ExpLogLoss, _ref_region_exp_log(), 0.8854960328579288),
    ("focal", FocalLoss, _ref_region_focal(), 0.37517285457749694),
    ("soft_iou", SoftIoULoss, _ref_region_soft_iou(), 0.6648488354212756),
    ("dice_focal", DiceFocalLoss, _ref_region_dice_focal(), -0.12256181034251934),
]
REGION_IGNORE_CASES = [
    ("exp_log", ExpLogLoss, _ref_region_exp_log(R_COUNTED), 0.8766017086721627),
    ("focal", FocalLoss, _ref_region_focal(R_COUNTED), 0.4710487464407915),
    ("soft_iou", SoftIoULoss, _ref_region_soft_iou(R_COUNTED), 0.6291536826144069),
    ("dice_focal", DiceFocalLoss, _ref_region_dice_focal(R_COUNTED), -0.06706286794193145),
]


@pytest.mark.parametrize(
    ("case", "cls", "reference", "expected"),
    REGION_IGNORE_CASES,
    ids=[c[0] for c in REGION_IGNORE_CASES],
)
def test_region_ignore_channel_hand_value(case, cls, reference, expected):
    assert reference == pytest.approx(expected, rel=1e-12)
    ignore = torch.tensor([[0, 0], [0, 1]], dtype=torch.bool)[None]
    target = torch.cat([torch.tensor(RT, dtype=torch.bool), ignore])[None]
    loss = cls(batch_dice=True, regions=True, ignore_label=5)
    assert loss(torch.tensor(RZ)[None], target).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("case", "cls", "reference", "expected"), REGION_CASES, ids=[c[0] for c in REGION_CASES]
)
def test_region_form_matches_the_hand_value(case, cls, reference, expected):
    assert reference == pytest.approx(expected, rel=1e-12)
    target = torch.tensor(RT, dtype=torch.bool)[None]
    loss = cls(batch_dice=True, regions=True, ignore_label=None)
    assert loss(torch.tensor(RZ)[None], target).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("cls", [ExpLogLoss, FocalLoss, SoftIoULoss, DiceFocalLoss])
def test_region_ignore_channel_masks_every_term(cls):
    label_map = torch.tensor([[0, 1, 2], [3, 1, 0]])[None, None]
    target = label_map_to_regions(label_map, [(1, 2), (2,)], ignore_label=3)
    logits = torch.tensor(np.linspace(-2, 2, 12), dtype=torch.float32).reshape(1, 2, 2, 3)
    logits.requires_grad_(True)
    loss = cls(batch_dice=False, regions=True, ignore_label=3)
    value = loss(logits, target)
    changed = logits.detach().clone()
    changed[0, :, 1, 0] = torch.tensor([30.0, -30.0])
    assert loss(changed, target).item() == value.item()
    value.backward()
    assert torch.all(logits.grad[0, :, 1, 0] == 0) and torch.any(logits.grad != 0)


def test_region_form_rejects_include_background():
    with pytest.raises(ValueError, match="include_background"):
        SoftIoULoss(batch_dice=True, regions=True, ignore_label=None, include_background=True)


# --- batch Dice, deep supervision, gradients, autocast --------------------------------------


@pytest.mark.parametrize("cls", [ExpLogLoss, SoftIoULoss, DiceFocalLoss])
def test_batch_dice_pools_the_samples(cls):
    # Two copies of the tiny sample, the second with its labels flipped: per-sample Dice and
    # batch Dice differ, and the per-sample loss equals the mean of the single-sample losses
    # for the overlap-only loss.
    logits = torch.cat([_logits(), _logits()])
    labels = torch.cat([_labels(), _labels([[0, 1], [1, 1]])])
    per_sample = cls(batch_dice=False, regions=False, ignore_label=None)(logits, labels)
    batch = cls(batch_dice=True, regions=False, ignore_label=None)(logits, labels)
    assert per_sample.item() != pytest.approx(batch.item(), rel=1e-4)
    if cls is SoftIoULoss:
        one = [
            cls(batch_dice=False, regions=False, ignore_label=None)(
                logits[i : i + 1], labels[i : i + 1]
            )
            for i in range(2)
        ]
        assert per_sample.item() == pytest.approx((one[0] + one[1]).item() / 2, rel=1e-6)


@pytest.mark.parametrize("cls", [ExpLogLoss, FocalLoss, SoftIoULoss, DiceFocalLoss])
@pytest.mark.parametrize("regions", [False, True])
def test_deep_supervision_composes_and_gradients_are_finite(cls, regions):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    label_map = torch.from_numpy(np.random.default_rng(1).integers(0, 4, (2, 1, 8, 8)))
    if regions:
        target = label_map_to_regions(label_map, [(1, 2, 3), (2, 3), (3,)], ignore_label=4)
    else:
        target = label_map  # label 3 is the ignore label beyond the 3 classes
    inner = cls(batch_dice=False, regions=regions, ignore_label=4 if regions else 3)
    loss = DeepSupervisionLoss(inner, [4 / 7, 2 / 7, 1 / 7])
    full = conv(torch.randn(2, 1, 8, 8))
    outputs = [
        full,
        torch.nn.functional.avg_pool2d(full, 2),
        torch.nn.functional.avg_pool2d(full, 4),
    ]
    targets = downsample_for_deep_supervision(target, [(1.0, 1.0), (0.5, 0.5), (0.25, 0.25)])
    value = loss(outputs, targets)
    expected = sum(
        w * inner(o, t).item()
        for w, o, t in zip([4 / 7, 2 / 7, 1 / 7], outputs, targets, strict=True)
    )
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", [ExpLogLoss, FocalLoss, DiceFocalLoss])
def test_confident_correct_prediction_has_finite_gradients(cls):
    # -ln p_t is 0 in float32 here; a power below 1 would have an infinite slope without the
    # floor.
    labels = _labels()
    logits = 60.0 * torch.nn.functional.one_hot(labels[:, 0], 2).permute(0, 3, 1, 2).float()
    logits.requires_grad_(True)
    params = {"gamma_ce": 0.3, "gamma_dice": 0.3} if cls is ExpLogLoss else {"gamma": 0.5}
    value = cls(batch_dice=True, regions=False, ignore_label=None, **params)(logits, labels)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    assert LOG_FLOOR > 0


def test_exp_log_gradient_matches_finite_differences():
    logits = _logits().double().requires_grad_(True)

    def f(x: torch.Tensor) -> torch.Tensor:
        return ExpLogLoss(batch_dice=True, regions=False, ignore_label=2)(x, _labels(IGNORED))

    f(logits).backward()
    eps = 1e-2
    direction = torch.from_numpy(np.linspace(-1, 1, logits.numel())).reshape(logits.shape)
    numeric = (f(logits + eps * direction) - f(logits - eps * direction)) / (2 * eps)
    assert (logits.grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-2)


@pytest.mark.parametrize("cls", [ExpLogLoss, FocalLoss, SoftIoULoss, DiceFocalLoss])
def test_float32_under_cpu_autocast(cls):
    loss = cls(batch_dice=True, regions=False, ignore_label=None)
    expected = loss(_logits(), _labels()).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(_logits().bfloat16(), _labels())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=2e-2, abs=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", [ExpLogLoss, FocalLoss, SoftIoULoss, DiceFocalLoss])
@pytest.mark.parametrize("regions", [False, True])
def test_on_cuda_under_autocast(cls, regions):
    if regions:
        logits, target = torch.tensor(RZ)[None], torch.tensor(RT, dtype=torch.bool)[None]
    else:
        logits, target = _logits(), _labels()
    loss = cls(batch_dice=True, regions=regions, ignore_label=None)
    expected = loss(logits, target).item()
    logits = logits.cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16):
        value = loss(logits.half(), target.cuda())
    value.backward()
    assert value.device.type == "cuda" and value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-2, abs=1e-3)
