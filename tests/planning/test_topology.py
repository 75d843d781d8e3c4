"""Pooling per axis, kernel sizes, strides and patch divisibility on hand-worked cases."""

from __future__ import annotations

from segflow.planning.topology import network_topology, pad_to_multiple, shrink_patch_axis


def test_isotropic_cube_pools_every_axis_down_to_4():
    t = network_topology([1.0, 1.0, 1.0], [128, 128, 128])
    # 128 -> 64 -> 32 -> 16 -> 8 -> 4: five poolings, six stages.
    assert t.pools_per_axis == (5, 5, 5)
    assert t.n_stages == 6
    assert t.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert t.kernel_sizes == ((3, 3, 3),) * 6
    assert t.patch_size == (128, 128, 128)
    assert t.divisible_by == (32, 32, 32)


def test_an_axis_stops_pooling_before_its_edge_falls_under_4():
    t = network_topology([1.0, 1.0, 1.0], [40, 56, 40])
    # 40 -> 20 -> 10 -> 5 (a fourth halving would give 2.5 < 4); same for 56 -> 7.
    assert t.pools_per_axis == (3, 3, 3)
    assert t.patch_size == (40, 56, 40)


def test_thick_slices_wait_with_kernel_1_until_the_spacing_is_comparable():
    t = network_topology([3.0, 0.7, 0.7], [28, 256, 256])
    # In-plane spacing 0.7 -> 1.4 -> 2.8: from then on z (3.0) is within 2x and joins.
    assert t.strides[:4] == ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2))
    assert t.kernel_sizes[:3] == ((1, 3, 3), (1, 3, 3), (3, 3, 3))
    assert t.kernel_sizes[-1] == (3, 3, 3)  # the bottleneck always uses 3
    assert t.pools_per_axis == (2, 6, 6)
    assert t.patch_size == (28, 256, 256)


def test_a_single_remaining_axis_needs_three_times_the_minimum_edge():
    # y and x can be halved once (10 -> 5); then only z (still 40) qualifies, and a lone
    # axis needs >= 12 voxels to be pooled: 40 -> 20 -> 10, stop.
    t = network_topology([1.0, 1.0, 1.0], [80, 10, 10])
    assert t.pools_per_axis == (3, 1, 1)
    assert t.strides == ((1, 1, 1), (2, 2, 2), (2, 1, 1), (2, 1, 1))


def test_a_patch_too_small_to_pool_is_a_single_stage():
    t = network_topology([1.0, 1.0], [7, 6])
    assert t.n_stages == 1
    assert t.strides == ((1, 1),)
    assert t.kernel_sizes == ((3, 3),)


def test_patch_is_padded_up_to_the_divisor_even_from_halves():
    t = network_topology([1.0, 1.0, 1.0], [36.5, 50.5, 35.5])
    assert t.patch_size == (40, 56, 40)
    assert pad_to_multiple([35.5, 32, 33], [8, 8, 1]) == (40, 32, 33)


def test_shrinking_steps_by_the_divisor_after_the_step_not_before():
    t = network_topology([1.0, 1.0], [256, 256])
    assert t.divisible_by == (64, 64)
    smaller = shrink_patch_axis([1.0, 1.0], t, axis=0)
    # 256 - 64 = 192 would skip 224 (= 7 * 32, one pooling fewer), which is valid.
    assert smaller.patch_size == (224, 256)
    # x (256 -> 8 after five halvings) would be the only axis left, and a lone axis of 8 is
    # not pooled: both axes end with five poolings.
    assert smaller.pools_per_axis == (5, 5)
