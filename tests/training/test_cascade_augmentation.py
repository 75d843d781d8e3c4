"""The cascade's augmentation of the previous stage's one-hot channels."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.training.augmentation import (
    PreviousStageToOneHot,
    RandomBinaryOperator,
    RemoveRandomComponent,
    _ball_operation,
    apply_transforms,
    training_transforms,
    validation_transforms,
)


def _batch(previous: np.ndarray, image_channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    b = previous.shape[0]
    data = np.random.default_rng(0).normal(size=(b, image_channels, *previous.shape[1:]))
    target = np.zeros_like(previous)
    return data.astype(np.float32), np.stack([target, previous], axis=1).astype(np.int16)


def test_the_previous_stage_channel_becomes_one_hot_image_channels():
    previous = np.zeros((2, 4, 5, 6), dtype=np.int16)
    previous[0, 1, 1, 1] = 1
    previous[1, 2:4, 2, 3] = 2
    data, seg = _batch(previous, image_channels=2)
    out = PreviousStageToOneHot((1, 2))(data=data.copy(), seg=seg)
    assert out["data"].shape == (2, 4, 4, 5, 6) and out["seg"].shape == (2, 1, 4, 5, 6)
    assert np.array_equal(out["data"][:, :2], data)  # the image channels untouched
    assert out["data"][0, 2].sum() == 1 and out["data"][0, 2, 1, 1, 1] == 1
    assert out["data"][1, 3].sum() == 2 and out["data"][0, 3].sum() == 0
    with pytest.raises(ValueError, match="got 1 segmentation channel"):
        PreviousStageToOneHot((1, 2))(data=data, seg=seg[:, :1])


def test_ball_morphology_has_the_ball_of_the_radius():
    point = np.zeros((9, 9, 9), dtype=bool)
    point[4, 4, 4] = True
    # Offsets of {-1, 0, 1}^3 within 1.5 voxels: the centre, 6 faces and 12 edges.
    assert _ball_operation(point, "dilation", 1.5).sum() == 19
    assert _ball_operation(point, "dilation", 1.0).sum() == 7
    cube = np.zeros((9, 9, 9), dtype=bool)
    cube[2:7, 2:7, 2:7] = True
    assert _ball_operation(cube, "erosion", 1.0).sum() == 27  # 5^3 loses its shell


@pytest.mark.parametrize("radius", [1.0, 1.5, 2.5])
@pytest.mark.parametrize("operation", ["dilation", "erosion", "opening", "closing"])
def test_ball_morphology_equals_morphology_with_the_ball_element(operation, radius):
    from scipy import ndimage

    rng = np.random.default_rng(int(radius * 10))
    blob = ndimage.gaussian_filter(rng.normal(size=(20, 22, 24)), 2) > 0.05
    blob[:6], blob[-6:], blob[:, :6], blob[:, -6:], blob[:, :, :6], blob[:, :, -6:] = (0,) * 6
    n = int(radius)
    offsets = np.mgrid[-n : n + 1, -n : n + 1, -n : n + 1]
    ball = (offsets**2).sum(0) <= radius**2
    reference = getattr(ndimage, f"binary_{operation}")(blob, structure=ball)
    assert np.array_equal(_ball_operation(blob, operation, radius), reference)


def test_binary_operators_keep_the_channels_one_hot_and_change_p_of_the_samples():
    previous = np.zeros((200, 8, 12, 12), dtype=np.int16)
    previous[:, 2:6, 3:9, 3:9] = 1
    previous[:, 3:5, 5:7, 5:7] = 2
    data, seg = _batch(previous)
    out = PreviousStageToOneHot((1, 2))(data=data, seg=seg)
    before = out["data"].copy()
    np.random.seed(3)
    after = RandomBinaryOperator([-2, -1])(**out)["data"]
    assert ((after[:, -2:].sum(1)) <= 1).all()
    assert set(np.unique(after[:, -2:])) <= {0.0, 1.0}
    assert np.array_equal(after[:, :1], before[:, :1])  # image channels never touched
    changed = [not np.array_equal(after[b, -2:], before[b, -2:]) for b in range(200)]
    # p_per_sample 0.4 (a drawn operation may leave a channel as it was: at most 0.4).
    assert 0.25 <= np.mean(changed) <= 0.45


def test_remove_random_component_takes_one_small_component_per_channel():
    data = np.zeros((1, 2, 10, 20, 20), dtype=np.float32)
    data[0, 1, 1:3, 1:3, 1:3] = 1  # 8 voxels
    data[0, 1, 6:8, 10:13, 10:13] = 1  # 18 voxels
    big = np.zeros((10, 20, 20), dtype=bool)
    big[:, :, :10] = True  # half the patch: never removed
    data[0, 0][big] = 1
    np.random.seed(0)
    out = RemoveRandomComponent([0, 1], p_per_sample=1.0)(data=data.copy())["data"]
    assert out[0, 0].sum() == big.sum()
    assert out[0, 1].sum() in (8, 18)


def test_cascade_batches_augment_and_validate_with_one_hot_channels():
    rng = np.random.default_rng(5)
    previous = np.zeros((2, 16, 24, 24), dtype=np.int16)
    previous[:, 4:12, 6:18, 6:18] = 1
    previous[:, 6:10, 10:14, 10:14] = 2
    data, seg = _batch(previous)
    seg[:, 0] = previous  # the target looks like the previous stage
    np.random.seed(1)
    transforms = training_transforms((16, 24, 24), previous_stage_labels=(1, 2))
    out_data, out_seg = apply_transforms(transforms, data.copy(), seg.copy())
    assert out_data.shape == (2, 3, 16, 24, 24) and out_seg.shape == (2, 1, 16, 24, 24)
    assert (out_data[:, 1:].sum(1) <= 1).all()
    val_data, val_seg = apply_transforms(validation_transforms((1, 2)), data.copy(), seg.copy())
    assert np.array_equal(val_data[:, 1], (previous == 1).astype(np.float32))
    assert np.array_equal(val_data[:, 2], (previous == 2).astype(np.float32))
    assert np.array_equal(val_seg[:, 0], previous)
    del rng
