"""The feature-map estimate: exact counts on small networks, and monotonicity."""

from __future__ import annotations

import pytest

from segflow.planning.configuration import features_per_stage
from segflow.planning.memory import feature_map_voxels, stage_shapes
from segflow.planning.topology import network_topology

STRIDES_2 = ((1, 1), (2, 2))


def test_stage_shapes_floor_divide():
    assert stage_shapes((9, 8), ((1, 1), (2, 2), (2, 1))) == [(9, 8), (4, 4), (2, 4)]


def test_plain_unet_count_by_hand():
    # Encoder: 2 convs x 32 ch x 64 vox + 2 x 64 x 16 = 6144. Decoder (at 8x8): transposed
    # conv + 2 convs, 3 x 32 x 64 = 6144, and the 3-class output 3 x 64 = 192.
    count = feature_map_voxels("PlainConvUNet", (8, 8), STRIDES_2, (32, 64), (2, 2), (2,), 3)
    assert count == 6144 + 6144 + 192


def test_residual_encoder_count_by_hand():
    # Stem 32 x 64 = 2048; stage 0: one block of 2 convs, 2 x 32 x 64 = 4096 (no shortcut
    # projection: same width and size); stage 1: three blocks, 3 x 2 x 64 x 16 = 6144, plus a
    # projected shortcut 64 x 16 = 1024. Decoder: 2 x 32 x 64 = 4096 and the output 192.
    count = feature_map_voxels("ResidualEncoderUNet", (8, 8), STRIDES_2, (32, 64), (1, 3), (1,), 3)
    assert count == 2048 + 4096 + 6144 + 1024 + 4096 + 192


def test_a_single_stage_network_counts_only_its_encoder():
    assert feature_map_voxels("PlainConvUNet", (6, 6), ((1, 1),), (32,), (2,), (), 3) == 2 * 32 * 36


def _plain(patch, spacing=(1.0, 1.0, 1.0), num_classes=3):
    t = network_topology(spacing, patch)
    n = t.n_stages
    return feature_map_voxels(
        "PlainConvUNet",
        t.patch_size,
        t.strides,
        features_per_stage(n, len(patch)),
        (2,) * n,
        (2,) * (n - 1),
        num_classes,
    )


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_estimate_grows_with_the_patch_along_any_axis(axis):
    sizes = [32, 64, 96, 128, 160, 192]
    estimates = []
    for s in sizes:
        patch = [128, 128, 128]
        patch[axis] = s
        estimates.append(_plain(patch))
    assert estimates == sorted(estimates) and len(set(estimates)) == len(estimates)


def test_estimate_grows_with_the_number_of_classes():
    assert _plain([64, 64, 64], num_classes=2) < _plain([64, 64, 64], num_classes=10)


def test_residual_encoder_needs_more_than_the_plain_unet_on_the_same_topology():
    t = network_topology([1.0, 1.0, 1.0], [128, 128, 128])
    f = features_per_stage(t.n_stages, 3)
    plain = feature_map_voxels("PlainConvUNet", t.patch_size, t.strides, f, (2,) * 6, (2,) * 5, 3)
    resenc = feature_map_voxels(
        "ResidualEncoderUNet", t.patch_size, t.strides, f, (1, 3, 4, 6, 6, 6), (1,) * 5, 3
    )
    assert resenc > plain


def test_unknown_architecture_and_bad_lengths_are_rejected():
    with pytest.raises(ValueError, match="unknown architecture 'UNETR'"):
        feature_map_voxels("UNETR", (8, 8), STRIDES_2, (32, 64), (2, 2), (2,), 3)
    with pytest.raises(ValueError, match="decoder blocks need 1 entries"):
        feature_map_voxels("PlainConvUNet", (8, 8), STRIDES_2, (32, 64), (2, 2), (2, 2), 3)
