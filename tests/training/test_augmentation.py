"""nnU-Net's training augmentation: parameters, shapes, labels, mirroring, dummy 2D."""

from __future__ import annotations

import math

import numpy as np
import pytest
from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import (
    GaussianBlurTransform,
    GaussianNoiseTransform,
)
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from batchgenerators.transforms.utility_transforms import RemoveLabelTransform

from segflow.training.augmentation import (
    ChannelsToSlices,
    MaskOutsideNonzero,
    SlicesToChannels,
    apply_transforms,
    configured_mirror_axes,
    default_mirror_axes,
    training_transforms,
    validation_transforms,
)
from segflow.training.sampling import training_patch_size

DEG = math.pi / 180

# nnU-Net v2's nnUNetTrainer.get_training_transforms as written for batchgenerators (its
# SpatialTransform, GaussianNoise, ... arguments), cross-checked with v2.8.1's version: the
# same probabilities and ranges (see segflow.training.augmentation for where 2.8.1 differs).
NNUNET_PARAMETERS = {
    SpatialTransform: {
        "do_elastic_deform": False,
        "p_el_per_sample": 0,
        "do_rotation": True,
        "p_rot_per_sample": 0.2,
        "p_rot_per_axis": 1,
        "do_scale": True,
        "scale": (0.7, 1.4),
        "p_scale_per_sample": 0.2,
        "independent_scale_for_each_axis": False,
        "border_mode_data": "constant",
        "border_cval_data": 0,
        "order_data": 3,
        "border_mode_seg": "constant",
        "border_cval_seg": -1,
        "order_seg": 1,
        "random_crop": False,
    },
    GaussianNoiseTransform: {
        "noise_variance": (0, 0.1),
        "p_per_sample": 0.1,
        "p_per_channel": 1,
        "per_channel": False,
    },
    GaussianBlurTransform: {
        "blur_sigma": (0.5, 1.0),
        "different_sigma_per_channel": True,
        "different_sigma_per_axis": False,
        "p_per_channel": 0.5,
        "p_per_sample": 0.2,
    },
    BrightnessMultiplicativeTransform: {
        "multiplier_range": (0.75, 1.25),
        "per_channel": True,
        "p_per_sample": 0.15,
    },
    ContrastAugmentationTransform: {
        "contrast_range": (0.75, 1.25),
        "preserve_range": True,
        "per_channel": True,
        "p_per_channel": 1,
        "p_per_sample": 0.15,
    },
    SimulateLowResolutionTransform: {
        "zoom_range": (0.5, 1),
        "per_channel": True,
        "p_per_channel": 0.5,
        "order_downsample": 0,
        "order_upsample": 3,
        "p_per_sample": 0.25,
    },
    RemoveLabelTransform: {"remove_label": -1, "replace_with": 0},
}
NNUNET_GAMMA = [  # inverted first, then plain
    {"gamma_range": (0.7, 1.5), "invert_image": True, "per_channel": True, "retain_stats": True,
     "p_per_sample": 0.1},
    {"gamma_range": (0.7, 1.5), "invert_image": False, "per_channel": True, "retain_stats": True,
     "p_per_sample": 0.3},
]  # fmt: skip
NNUNET_ORDER = [
    SpatialTransform,
    GaussianNoiseTransform,
    GaussianBlurTransform,
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    SimulateLowResolutionTransform,
    GammaTransform,
    GammaTransform,
    MirrorTransform,
    RemoveLabelTransform,
]


def _find(compose: Compose, kind: type) -> list:
    return [t for t in compose.transforms if isinstance(t, kind)]


@pytest.mark.parametrize(
    ("patch", "angle", "mirror"),
    [((40, 56, 40), 30, (0, 1, 2)), ((56, 40), 180, (0, 1)), ((96, 256), 15, (0, 1))],
)
def test_parameters_equal_nnunet(patch, angle, mirror):
    transforms = training_transforms(patch)
    assert [type(t) for t in transforms.transforms] == NNUNET_ORDER
    for kind, expected in NNUNET_PARAMETERS.items():
        (transform,) = _find(transforms, kind)
        assert {k: getattr(transform, k) for k in expected} == expected, kind
    gammas = _find(transforms, GammaTransform)
    assert [{k: getattr(g, k) for k in NNUNET_GAMMA[0]} for g in gammas] == NNUNET_GAMMA
    (spatial,) = _find(transforms, SpatialTransform)
    assert tuple(spatial.patch_size) == patch
    for axis in ("angle_x", "angle_y", "angle_z"):
        assert getattr(spatial, axis) == pytest.approx((-angle * DEG, angle * DEG))
    assert _find(transforms, MirrorTransform)[0].axes == mirror
    assert _find(transforms, SimulateLowResolutionTransform)[0].ignore_axes is None


def test_dummy_2d_parameters():
    # 20 x 192 x 160 is anisotropic (192 / 20 > 3): slice by slice, 180 degrees in-plane, the
    # slice axis spared by low-resolution simulation, mirrored along all three axes (nnU-Net).
    transforms = training_transforms((20, 192, 160))
    kinds = [type(t) for t in transforms.transforms]
    assert kinds == [SlicesToChannels, SpatialTransform, ChannelsToSlices, *NNUNET_ORDER[1:]]
    (spatial,) = _find(transforms, SpatialTransform)
    assert tuple(spatial.patch_size) == (192, 160)
    assert spatial.angle_x == pytest.approx((-math.pi, math.pi))
    assert _find(transforms, SimulateLowResolutionTransform)[0].ignore_axes == (0,)
    assert _find(transforms, MirrorTransform)[0].axes == (0, 1, 2)


def test_mirror_axes_and_mask_options():
    assert default_mirror_axes((8, 8)) == (0, 1) and default_mirror_axes((4, 8, 8)) == (0, 1, 2)
    assert not _find(training_transforms((8, 8, 8), mirror_axes=()), MirrorTransform)
    assert _find(training_transforms((8, 8, 8), mirror_axes=(1, 2)), MirrorTransform)[0].axes == (
        1,
        2,
    )
    transforms = training_transforms((8, 8, 8), use_mask_for_norm=[True, False, True])
    (mask,) = _find(transforms, MaskOutsideNonzero)
    assert mask.channels == [0, 2]
    # The mask acts before -1 becomes 0, as in nnU-Net.
    kinds = [type(t) for t in transforms.transforms]
    assert kinds.index(MaskOutsideNonzero) == kinds.index(RemoveLabelTransform) - 1
    assert not _find(training_transforms((8, 8, 8), use_mask_for_norm=[False]), MaskOutsideNonzero)
    with pytest.raises(ValueError, match="2 or 3 axes"):
        default_mirror_axes((8,))


def _labels(shape, rng):
    seg = rng.integers(0, 3, size=shape).astype(np.int16)
    seg[..., :2] = -1  # outside the nonzero region
    return seg


@pytest.mark.parametrize("patch", [(12, 16, 10), (16, 12), (4, 20, 16)])
def test_shapes_dtypes_and_label_values(patch):
    np.random.seed(0)
    rng = np.random.default_rng(0)
    transforms = training_transforms(patch)
    _find(transforms, SpatialTransform)[0].p_rot_per_sample = 1.0  # rotate every sample
    initial = training_patch_size(patch)
    for _ in range(3):
        data = rng.normal(size=(3, 2, *initial)).astype(np.float32)
        data_out, seg_out = apply_transforms(transforms, data, _labels((3, 1, *initial), rng))
        assert data_out.shape == (3, 2, *patch) and data_out.dtype == np.float32
        assert seg_out.shape == (3, 1, *patch) and seg_out.dtype == np.int16
        assert data_out.flags.c_contiguous and seg_out.flags.c_contiguous
        assert set(np.unique(seg_out).tolist()) <= {0, 1, 2}


def test_outside_label_becomes_background_in_validation():
    seg = np.array([[[[-1, 0], [1, 2]]]], dtype=np.int16)
    data = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    data_out, seg_out = apply_transforms(validation_transforms(), data.copy(), seg)
    assert seg_out.tolist() == [[[[0, 0], [1, 2]]]]
    assert np.array_equal(data_out, data)  # no augmentation


def test_mask_outside_nonzero():
    data = np.ones((1, 2, 2, 2), np.float32)
    seg = np.array([[[[-1, 0], [1, -1]]]], dtype=np.int16)
    out = MaskOutsideNonzero([1])(data=data, seg=seg)
    assert out["data"][0, 0].tolist() == [[1, 1], [1, 1]]
    assert out["data"][0, 1].tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("patch", [(10, 14, 12), (18, 14), (4, 24, 20)])
def test_data_and_seg_stay_aligned(patch):
    # A bright block off the centre, labelled 1: however a sample is turned, scaled, mirrored
    # and its intensities changed, the voxels labelled 1 stay the bright ones.
    np.random.seed(1)
    initial = training_patch_size(patch)
    transforms = training_transforms(patch)
    _find(transforms, SpatialTransform)[0].p_rot_per_sample = 0.5
    seg = np.zeros((8, 1, *initial), np.int16)
    block = tuple(slice(s // 2, s // 2 + 4) if s > 8 else slice(None) for s in initial)
    seg[(slice(None), 0, *block)] = 1
    data = (seg == 1).astype(np.float32) * 10
    data_out, seg_out = apply_transforms(transforms, data, seg)
    for j in range(8):
        inside, outside = data_out[j, 0][seg_out[j, 0] == 1], data_out[j, 0][seg_out[j, 0] == 0]
        assert inside.size > 0
        assert inside.mean() > outside.mean() + 3


def test_mirroring_flips_data_and_seg_together():
    np.random.seed(3)
    (mirror,) = _find(training_transforms((6, 7, 8)), MirrorTransform)
    data = np.random.default_rng(0).normal(size=(16, 1, 6, 7, 8)).astype(np.float32)
    seg = (data > 0).astype(np.int16)
    original = data.copy()
    out = mirror(data=data, seg=seg)
    assert np.array_equal(out["seg"], (out["data"] > 0).astype(np.int16))
    flips = 0
    for j in range(16):
        found = [
            axes
            for axes in ((), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3))
            if np.array_equal(out["data"][j], np.flip(original[j], axes) if axes else original[j])
        ]
        assert len(found) == 1
        flips += len(found[0])
    assert 12 <= flips <= 36  # 16 samples x 3 axes x 1/2 = 24 expected


def test_dummy_2d_turns_every_slice_alike():
    # Slice z holds the value z + 1: in-plane rotation and scaling keep each slice's value.
    np.random.seed(5)
    patch = (5, 30, 24)
    initial = training_patch_size(patch)
    assert initial[0] == 5
    transforms = training_transforms(patch)
    steps = transforms.transforms[:3]
    assert isinstance(steps[1], SpatialTransform)
    steps[1].p_rot_per_sample = 1.0
    data = np.broadcast_to(np.arange(1, 6, dtype=np.float32)[:, None, None], initial)
    data = np.ascontiguousarray(np.broadcast_to(data, (2, 1, *initial)))
    seg = np.ones((2, 1, *initial), np.int16)
    out = Compose(steps)(data=data, seg=seg)
    assert out["data"].shape == (2, 1, *patch) and out["seg"].shape == (2, 1, *patch)
    for z in range(5):
        values = out["data"][:, 0, z][out["seg"][:, 0, z] == 1]
        assert np.median(values) == pytest.approx(z + 1, abs=1e-3)
    assert "_slices_data" not in out


def test_slices_to_channels_round_trip():
    data = np.arange(2 * 3 * 4 * 5 * 6, dtype=np.float32).reshape(2, 3, 4, 5, 6)
    seg = np.zeros((2, 1, 4, 5, 6), np.int16)
    flat = SlicesToChannels()(data=data.copy(), seg=seg)
    assert flat["data"].shape == (2, 12, 5, 6) and flat["seg"].shape == (2, 4, 5, 6)
    assert np.array_equal(flat["data"][1, 1 * 4 + 2], data[1, 1, 2])  # channel c, slice z
    back = ChannelsToSlices()(**flat)
    assert np.array_equal(back["data"], data) and back["seg"].shape == seg.shape


def test_configured_mirror_axes_follow_the_plans_axis_order():
    # Unset: every patch axis, as nnU-Net.
    assert configured_mirror_axes(None, (0, 1, 2), 3) == (0, 1, 2)
    assert configured_mirror_axes(None, (2, 0, 1), 2) == (0, 1)
    # Image x (axis 2) left out; the plans keep the axis order.
    assert configured_mirror_axes((0, 1), (0, 1, 2), 3) == (0, 1)
    # The plans move image x to the front: patch axis 0 is x, so z and y are patch axes 1, 2.
    assert configured_mirror_axes((0, 1), (2, 0, 1), 3) == (1, 2)
    assert configured_mirror_axes((2,), (2, 0, 1), 3) == (0,)
    # A 2D configuration slices across the first transposed axis and cannot mirror it.
    assert configured_mirror_axes((0, 1, 2), (0, 1, 2), 2) == (0, 1)
    assert configured_mirror_axes((1,), (0, 1, 2), 2) == (0,)
    assert configured_mirror_axes((0,), (0, 1, 2), 2) == ()
    assert configured_mirror_axes((0, 2), (2, 0, 1), 2) == (0,)
    # None mirrored.
    assert configured_mirror_axes((), (0, 1, 2), 3) == ()
