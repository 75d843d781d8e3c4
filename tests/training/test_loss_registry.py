"""The loss registry: names, parameters, errors, and the default unchanged bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segflow.errors import SegflowError
from segflow.io.dataset import DatasetJson
from segflow.training.losses import (
    DEFAULT_LOSS,
    LOSSES,
    DeepSupervisionLoss,
    DiceCELoss,
    ExpLogLoss,
    FocalLoss,
    LossSpec,
    RegionDiceBCELoss,
    build_loss,
    downsample_for_deep_supervision,
    label_map_to_regions,
    loss_parameters,
    loss_problems,
)

CLASSES = {"background": 0, "a": 1, "b": 2, "c": 3}
REGIONS = {"background": 0, "wt": (1, 2, 3), "tc": (2, 3), "et": 3, "x": 1}
REGION_VALUES = [(1, 2, 3), (2, 3), (3,), (1,)]


def _dataset(labels: dict, ignore: bool = False) -> DatasetJson:
    labels = {**labels, "ignore": 4} if ignore else labels
    return DatasetJson(
        channel_names={0: "CT"}, labels=labels, num_training=1, file_ending=".nii.gz"
    )


def _batch(regions: bool, ignore: bool):
    """A random 3D batch with three deep-supervision outputs (numpy's PCG64, seed 16)."""
    rng = np.random.default_rng(16)
    shapes = [(2, 4, 8, 6, 4), (2, 4, 4, 3, 2), (2, 4, 2, 2, 1)]
    logits = [torch.from_numpy(rng.normal(0, 2, s).astype(np.float32)) for s in shapes]
    label_map = torch.from_numpy(rng.integers(0, 5, (2, 1, 8, 6, 4)))
    scales = [(1, 1, 1), (0.5, 0.5, 0.5), (0.25, 0.33, 0.25)]
    targets = downsample_for_deep_supervision(label_map, scales)
    if not ignore:
        targets = [t % 4 for t in targets]
    if regions:
        targets = [
            label_map_to_regions(t, REGION_VALUES, ignore_label=4 if ignore else None)
            for t in targets
        ]
    return logits, targets


# The loss before the registry existed (build_loss(dataset, batch_dice=..., num_outputs=...)
# at commit e2c6bf0), on _batch, as float.hex(): (deep supervision, one output).
BEFORE = {
    ("classes", False, False): ("0x1.2104640000000p+1", "0x1.22d7fc0000000p+1"),
    ("regions", False, False): ("0x1.326cf80000000p-1", "0x1.39a2640000000p-1"),
    ("classes", False, True): ("0x1.2309a40000000p+1", "0x1.1e3c4a0000000p+1"),
    ("regions", False, True): ("0x1.c2c0180000000p+1", "0x1.c405c20000000p+1"),
    ("classes", True, False): ("0x1.1ffca40000000p+1", "0x1.22bd0e0000000p+1"),
    ("regions", True, False): ("0x1.3135ec0000000p-1", "0x1.39c4b20000000p-1"),
    ("classes", True, True): ("0x1.21d4780000000p+1", "0x1.1e1f480000000p+1"),
    ("regions", True, True): ("0x1.c287f80000000p+1", "0x1.c40fbc0000000p+1"),
}


@pytest.mark.parametrize(("kind", "batch_dice", "ignore"), list(BEFORE))
@pytest.mark.parametrize("named", [False, True])
def test_default_is_bit_identical_to_the_loss_before_the_registry(kind, batch_dice, ignore, named):
    regions = kind == "regions"
    dataset = _dataset(REGIONS if regions else CLASSES, ignore)
    logits, targets = _batch(regions, ignore)
    name = {"name": "dice_ce"} if named else {}
    deep = build_loss(dataset, batch_dice=batch_dice, num_outputs=3, **name)
    single = build_loss(dataset, batch_dice=batch_dice, **name)
    assert isinstance(deep, DeepSupervisionLoss)
    assert isinstance(single, RegionDiceBCELoss if regions else DiceCELoss)
    got = (deep(logits, targets).item().hex(), single(logits[0], targets[0]).item().hex())
    assert got == BEFORE[(kind, batch_dice, ignore)]


def test_default_name_and_parameters():
    assert DEFAULT_LOSS == "dice_ce"
    assert list(LOSSES) == ["dice_ce", "exp_log", "focal", "soft_iou", "dice_focal"]
    assert loss_parameters("dice_ce") == {"weight_dice": 1.0, "weight_ce": 1.0, "smooth": 1e-5}
    assert loss_parameters("exp_log", {"gamma_ce": 1.0}) == {
        "weight_dice": 0.8,
        "weight_ce": 0.2,
        "gamma_dice": 0.3,
        "gamma_ce": 1.0,
        "smooth": 1.0,
        "include_background": False,
    }
    assert loss_parameters("focal") == {"gamma": 2.0, "alpha": None}


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize(("labels", "ignore"), [(CLASSES, False), (CLASSES, True), (REGIONS, True)])
def test_every_loss_builds_for_classes_and_regions_with_deep_supervision(name, labels, ignore):
    dataset = _dataset(labels, ignore)
    loss = build_loss(dataset, name=name, batch_dice=True, num_outputs=3)
    assert isinstance(loss, DeepSupervisionLoss)
    logits, targets = _batch(dataset.has_regions, ignore)
    logits = [x.requires_grad_(True) for x in logits]
    value = loss(logits, targets)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits[0].grad).all()
    assert logits[0].grad.abs().sum() > 0
    # The coarsest output has weight 0 whatever the loss.
    assert logits[2].grad is None


def test_parameters_reach_the_loss():
    dataset = _dataset(CLASSES)
    loss = build_loss(dataset, name="focal", batch_dice=False, gamma=0.0)
    assert isinstance(loss, FocalLoss) and loss.gamma == 0.0 and loss.alpha is None
    logits, targets = _batch(False, False)
    ce = F.cross_entropy(logits[0], targets[0][:, 0])
    assert loss(logits[0], targets[0]).item() == pytest.approx(ce.item(), rel=1e-6)
    exp_log = build_loss(_dataset(CLASSES, True), name="exp_log", batch_dice=True, gamma_ce=1.0)
    assert isinstance(exp_log, ExpLogLoss)
    assert (exp_log.gamma_ce, exp_log.gamma_dice, exp_log.ignore_label) == (1.0, 0.3, 4)
    dice_only = build_loss(dataset, batch_dice=True, weight_ce=0.0)
    assert isinstance(dice_only, DiceCELoss) and dice_only.weight_ce == 0.0
    regions = build_loss(_dataset(REGIONS), batch_dice=True, weight_ce=0.5)
    assert isinstance(regions, RegionDiceBCELoss) and regions.weight_bce == 0.5


# --- errors ---------------------------------------------------------------------------------


def test_unknown_name_names_the_closest():
    with pytest.raises(SegflowError) as err:
        build_loss(_dataset(CLASSES), name="explog", batch_dice=True)
    message = str(err.value)
    assert "loss 'explog' is not known; did you mean 'exp_log'?" in message
    assert "valid: dice_ce, exp_log, focal, soft_iou, dice_focal" in message


def test_every_parameter_problem_at_once():
    with pytest.raises(SegflowError) as err:
        build_loss(_dataset(CLASSES), name="focal", batch_dice=True, gama=1.0, alpha=2, smooth=1)
    problems = [str(p) for p in err.value.problems]
    assert problems == [
        "loss.gama: loss 'focal' has no parameter 'gama'; did you mean 'gamma'? "
        "(valid: gamma, alpha)",
        "loss.alpha: alpha must be a number in [0, 1] or null, got 2",
        "loss.smooth: loss 'focal' has no parameter 'smooth' (valid: gamma, alpha)",
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gamma_dice": -0.3}, "gamma_dice must be a number >= 0, got -0.3"),
        ({"weight_ce": "0.2"}, "weight_ce must be a number >= 0, got '0.2'"),
        ({"smooth": float("nan")}, "smooth must be a number >= 0, got nan"),
        ({"include_background": 1}, "include_background must be true or false, got 1"),
        ({"weight_dice": 0, "weight_ce": 0.0}, "weight_dice, weight_ce are all 0"),
    ],
)
def test_invalid_values(params, message):
    problems = loss_problems("exp_log", params, where="experiments.kits.loss")
    assert len(problems) == 1 and message in str(problems[0])
    assert str(problems[0]).startswith("experiments.kits.loss")


def test_include_background_is_refused_for_regions():
    assert loss_problems("soft_iou", {"include_background": True}) == []
    with pytest.raises(SegflowError, match="include_background must be false for a dataset"):
        build_loss(_dataset(REGIONS), name="soft_iou", batch_dice=True, include_background=True)


def test_a_loss_without_region_form_says_so(monkeypatch):
    spec = LossSpec(
        LOSSES["focal"].make,
        LOSSES["focal"].checks,
        "a test loss",
        no_regions="its term needs one label per voxel",
    )
    monkeypatch.setitem(LOSSES, "one_label", spec)
    assert isinstance(build_loss(_dataset(CLASSES), name="one_label", batch_dice=True), FocalLoss)
    with pytest.raises(SegflowError) as err:
        build_loss(_dataset(REGIONS), name="one_label", batch_dice=True)
    assert "loss 'one_label' has no region form: its term needs one label per voxel" in str(
        err.value
    )


def test_spec_checks_must_match_the_parameters():
    with pytest.raises(TypeError, match="must name exactly its parameters"):
        LossSpec(FocalLoss, {"gamma": lambda v: None}, "missing alpha")


@pytest.mark.parametrize("name", list(LOSSES))
def test_defaults_pass_their_own_checks(name):
    spec = LOSSES[name]
    assert loss_problems(name, spec.defaults, regions=True) == []
    assert spec.summary
