"""Drawing training patches: nnU-Net's data loader (oversampling, boxes, padding, 2D slices)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.preprocessing.preprocessor import ANNOTATED_KEY, sample_class_locations
from segflow.preprocessing.storage import save_case
from segflow.training.sampling import (
    PAD_VALUE_SEG,
    PatchSampler,
    augmentation_rotation,
    forced_foreground,
    initial_patch_size,
    patch_corner_range,
    training_patch_size,
)


def _save(folder, case_id, data, seg, classes=None, patch=(8, 8, 8)):
    """Store a synthetic case as preprocessing would, class locations included."""
    classes = classes or {"1": (1,), "2": (2,)}
    locations = sample_class_locations(seg[0], classes, np.random.default_rng(0))
    save_case(folder, case_id, data, seg, {"class_locations": locations}, patch)


def _blob_case(shape=(20, 30, 30), corner=(2, 3, 4), size=3):
    """Data = a ramp; label 1 in one small cube near a corner, background elsewhere."""
    data = np.arange(math.prod(shape), dtype=np.float32).reshape(1, *shape)
    seg = np.zeros((1, *shape), dtype=np.int8)
    z, y, x = corner
    seg[0, z : z + size, y : y + size, x : x + size] = 1
    return data, seg


# --- nnU-Net's numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        # nnU-Net v2.8.1: nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size
        # (get_patch_size with the rotation it picks, scale range (0.85, 1.25), dummy 2D keeping
        # the first axis), run once in /tmp/nnunet-venv on these patches.
        ((40, 56, 40), (73, 80, 64)),
        ((56, 40), (65, 65)),
        ((128, 128, 128), (205, 205, 205)),
        ((64, 160, 128), (159, 238, 168)),
        ((20, 192, 160), (20, 225, 225)),
        ((16, 256, 256), (16, 301, 301)),
        ((512, 512), (602, 602)),
        ((96, 256), (187, 301)),
        ((48, 224, 192), (48, 263, 263)),
        ((80, 96, 64), (137, 135, 112)),
        ((28, 256, 224), (28, 301, 301)),
        ((160, 160), (188, 188)),
    ],
)
def test_initial_patch_size_equals_nnunet(patch, expected):
    assert training_patch_size(patch) == expected


def test_rotation_ranges_as_nnunet():
    deg = math.pi / 180
    assert augmentation_rotation((56, 40)) == pytest.approx((180 * deg, False))
    assert augmentation_rotation((96, 256)) == pytest.approx((15 * deg, False))  # 256/96 > 1.5
    assert augmentation_rotation((40, 56, 40)) == pytest.approx((30 * deg, False))
    assert augmentation_rotation((20, 192, 160)) == pytest.approx((180 * deg, True))  # 9.6 > 3
    assert augmentation_rotation((20, 60, 60)) == pytest.approx((30 * deg, False))  # exactly 3


def test_initial_patch_size_without_rotation_only_scales():
    # Divided by the smallest scale, 0.85, and truncated.
    assert initial_patch_size((40, 56, 40), 0.0) == (47, 65, 47)
    with pytest.raises(ValueError, match="2 or 3 axes"):
        initial_patch_size((4,), 0.0)


@pytest.mark.parametrize(
    ("batch_size", "forced"),
    # nnU-Net: sample j is forced unless j < round(batch_size * (1 - 0.33)).
    [(1, []), (2, [1]), (3, [2]), (7, [5, 6]), (9, [6, 7, 8]), (12, [8, 9, 10, 11])],
)
def test_last_third_of_a_batch_is_forced(batch_size, forced):
    assert [j for j in range(batch_size) if forced_foreground(j, batch_size, 0.33)] == forced


def test_corner_range_equals_nnunet_get_bbox():
    # nnU-Net v2.8.1's nnUNetDataLoader.get_bbox, 20000 random (unforced) draws for these
    # shapes, patches and paddings: the smallest and largest lower corners seen.
    low, high = patch_corner_range((36, 50, 35), (73, 80, 64), (33, 24, 24))
    assert (low, high) == ([-19, -15, -15], [-18, -15, -14])
    # A 2D patch is a one-slice 3D patch without margin along the slices.
    low, high = patch_corner_range((36, 50, 35), (1, 56, 40), (0, 9, 9))
    assert (low, high) == ([0, -5, -5], [35, -1, 0])
    # An image larger than patch plus margin: the margin splits evenly.
    assert patch_corner_range((100,), (40,), (10,)) == ([-5], [65])


# --- batches --------------------------------------------------------------------------------


def test_batch_shapes_dtypes_and_corners(tmp_path):
    data, seg = _blob_case()
    _save(tmp_path, "a", data, seg)
    sampler = PatchSampler(
        tmp_path, ["a"], (12, 16, 14), 2, rng=np.random.default_rng(0), final_patch_size=(8, 10, 9)
    )
    d, s, keys = sampler.next_batch()
    assert d.shape == (2, 1, 12, 16, 14) and d.dtype == np.float32
    assert s.shape == (2, 1, 12, 16, 14) and s.dtype == np.int16
    assert keys == ["a", "a"]
    # Free patches cover exactly the corner range (margin 4, 6, 5 split in halves rounded up).
    case_corners = np.array(
        [sampler.patch_box(sampler._open("a"), False) for _ in range(3000)], dtype=int
    )
    assert case_corners.min(0).tolist() == [-2, -3, -3]
    assert case_corners.max(0).tolist() == [20 + 2 - 12, 30 + 3 - 16, 30 + 3 - 14]


def test_forced_patches_hold_foreground(tmp_path):
    data, seg = _blob_case()
    _save(tmp_path, "a", data, seg)
    sampler = PatchSampler(tmp_path, ["a"], (6, 6, 6), 3, rng=np.random.default_rng(1))
    free_with_foreground = 0
    for _ in range(200):
        _, s, _ = sampler.next_batch()
        assert (s[2] == 1).any()  # the last of 3 is forced
        free_with_foreground += int((s[:2] == 1).any(axis=(1, 2, 3, 4)).sum())
    # The blob covers 27 of 12000 voxels: free patches seldom find it.
    assert free_with_foreground < 100


def test_forced_patch_is_centred_on_a_foreground_voxel(tmp_path):
    # One foreground voxel: the forced patch's corner is that voxel minus half the patch.
    shape = (10, 12, 14)
    data = np.zeros((1, *shape), np.float32)
    seg = np.zeros((1, *shape), np.int8)
    seg[0, 7, 5, 9] = 2
    _save(tmp_path, "a", data, seg)
    sampler = PatchSampler(tmp_path, ["a"], (4, 6, 5), 1, oversample_foreground_percent=1.0)
    case = sampler._open("a")
    assert sampler.patch_box(case, True, np.random.default_rng(0)) == [7 - 2, 5 - 3, 9 - 2]


def test_probabilistic_oversampling_forces_about_the_share(tmp_path):
    data, seg = _blob_case(size=1)
    _save(tmp_path, "a", data, seg)
    sampler = PatchSampler(
        tmp_path,
        ["a"],
        (2, 2, 2),
        10,
        rng=np.random.default_rng(3),
        probabilistic_oversampling=True,
    )
    forced = np.concatenate(
        [(sampler.next_batch()[1] == 1).any(axis=(1, 2, 3, 4)) for _ in range(100)]
    )
    assert 0.25 < forced.mean() < 0.42


def test_case_without_foreground_falls_back_to_a_random_patch(tmp_path):
    shape = (6, 7, 8)
    _save(tmp_path, "a", np.ones((1, *shape), np.float32), np.zeros((1, *shape), np.int8))
    sampler = PatchSampler(tmp_path, ["a"], (4, 4, 4), 2, rng=np.random.default_rng(0))
    _, s, _ = sampler.next_batch()
    assert (s == 0).all()


def test_two_d_patches_are_slices_of_3d_cases(tmp_path):
    shape = (9, 20, 16)
    data = np.broadcast_to(np.arange(9, dtype=np.float32)[:, None, None] + 1, shape)[None].copy()
    seg = np.zeros((1, *shape), np.int8)
    seg[0, 6, 10, 8] = 1  # foreground in slice 6 only
    _save(tmp_path, "a", data, seg, patch=(12, 10))
    sampler = PatchSampler(tmp_path, ["a"], (12, 10), 3, rng=np.random.default_rng(5))
    slices = set()
    for _ in range(60):
        d, s, _ = sampler.next_batch()
        assert d.shape == (3, 1, 12, 10) and s.shape == (3, 1, 12, 10)
        for j in range(3):
            values = np.unique(d[j][d[j] > 0])
            assert len(values) == 1  # one slice per patch
            slices.add(int(values[0]) - 1)
        # The forced sample is the foreground slice, its voxel inside the patch.
        assert np.unique(d[2][d[2] > 0]).tolist() == [7.0]
        assert (s[2] == 1).sum() == 1
    assert slices == set(range(9))  # free patches reach every slice


def test_padding_values_where_the_patch_leaves_the_image(tmp_path):
    shape = (3, 4, 5)
    data = np.full((2, *shape), 7.0, np.float32)
    seg = np.ones((1, *shape), np.int8)
    seg[0, 0, 0, 0] = -1  # outside the nonzero region, as preprocessing marks it
    _save(tmp_path, "a", data, seg)
    sampler = PatchSampler(tmp_path, ["a"], (6, 8, 10), 1, rng=np.random.default_rng(0))
    d, s, _ = sampler.next_batch()
    assert d.shape == (1, 2, 6, 8, 10)
    inside = d[0, 0] == 7.0
    assert inside.sum() == 3 * 4 * 5 and (d[0][:, ~inside] == 0.0).all()
    assert (s[0, 0][~inside] == PAD_VALUE_SEG).all() and PAD_VALUE_SEG == -1
    assert sorted(np.unique(s[0, 0][inside]).tolist()) == [-1, 1]
    # The image lies near the patch's centre: the padding (3, 4, 5) splits in halves, an odd
    # one with the extra voxel on either side.
    z, y, x = np.nonzero(inside)
    assert (z.min(), y.min(), x.min()) in {(a, b, c) for a in (1, 2) for b in (2,) for c in (2, 3)}


def test_unlabelled_cases_are_background_inside_the_image(tmp_path):
    # A case stored without a segmentation (a test image to pretrain on): refused for
    # training; with unlabelled=True its patches' segmentation is 0 inside, -1 outside.
    shape = (3, 4, 5)
    save_case(tmp_path, "t", np.full((1, *shape), 7.0, np.float32), None, {}, (6, 8, 10))
    with pytest.raises(SegflowError, match="'t' has no segmentation"):
        PatchSampler(tmp_path, ["t"], (6, 8, 10), 1).next_batch()
    sampler = PatchSampler(
        tmp_path, ["t"], (6, 8, 10), 2, rng=np.random.default_rng(0), unlabelled=True
    )
    d, s, _ = sampler.next_batch()
    inside = d == 7.0
    assert inside[0, 0].sum() == 3 * 4 * 5
    assert (s[inside] == 0).all() and (s[~inside] == PAD_VALUE_SEG).all()


def test_reproducible_from_a_seed(tmp_path):
    for i in range(3):
        data, seg = _blob_case(corner=(i, 2 * i, 3 * i))
        _save(tmp_path, f"c{i}", data, seg)
    ids = ["c0", "c1", "c2"]

    def batches(seed):
        sampler = PatchSampler(
            tmp_path,
            ids,
            (8, 9, 10),
            4,
            rng=np.random.default_rng(seed),
            final_patch_size=(6, 7, 8),
        )
        return [sampler.next_batch() for _ in range(5)]

    first, again, other = batches(11), batches(11), batches(12)
    for (d1, s1, k1), (d2, s2, k2) in zip(first, again, strict=True):
        assert k1 == k2 and np.array_equal(d1, d2) and np.array_equal(s1, s2)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # A generator passed to next_batch takes the place of the sampler's own.
    sampler = PatchSampler(tmp_path, ids, (8, 9, 10), 4, final_patch_size=(6, 7, 8))
    d, s, k = sampler.next_batch(np.random.default_rng(11))
    assert k == first[0][2] and np.array_equal(d, first[0][0]) and np.array_equal(s, first[0][1])


def test_ignore_label_patches_hold_annotated_voxels(tmp_path):
    # Label 3 is the ignore label: only a small region is annotated (0 or 1); free patches are
    # centred on annotated voxels, forced ones on class 1.
    shape = (12, 24, 24)
    seg = np.full((1, *shape), 3, np.int8)
    seg[0, 8:10, 18:21, 18:21] = 0
    seg[0, 9, 20, 20] = 1
    classes = {"1": (1,), ANNOTATED_KEY: (-1, 0, 1)}
    _save(tmp_path, "a", np.zeros((1, *shape), np.float32), seg, classes)
    sampler = PatchSampler(tmp_path, ["a"], (4, 4, 4), 3, rng=np.random.default_rng(2))
    for _ in range(50):
        _, s, _ = sampler.next_batch()
        assert all(np.isin(s[j], [0, 1]).any() for j in range(3))
        assert (s[2] == 1).any()


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="at least one case"):
        PatchSampler(tmp_path, [], (4, 4), 2)
    with pytest.raises(ValueError, match="within patch_size"):
        PatchSampler(tmp_path, ["a"], (4, 4), 2, final_patch_size=(5, 4))
    with pytest.raises(ValueError, match="oversample"):
        PatchSampler(tmp_path, ["a"], (4, 4), 2, oversample_foreground_percent=1.5)


def test_opened_cases_are_kept_up_to_a_bound(tmp_path):
    for i in range(3):
        data, seg = _blob_case(shape=(6, 8, 8), corner=(1, 1, 1), size=2)
        _save(tmp_path, f"c{i}", data, seg)
    sampler = PatchSampler(tmp_path, ["c0", "c1", "c2"], (4, 4, 4), 2, open_cases=2)
    first = sampler._open("c0")
    assert sampler._open("c0") is first  # kept, not read again
    sampler._open("c1")
    sampler._open("c2")
    assert list(sampler._open_cases) == ["c1", "c2"]  # the least recently used went first
    assert first.properties["class_locations"]["1"].dtype == np.int64
    # Reading through the kept case gives the same batch as reading afresh.
    fresh = PatchSampler(tmp_path, ["c0", "c1", "c2"], (4, 4, 4), 2, open_cases=1)
    for a, b in zip(
        sampler.next_batch(np.random.default_rng(4)),
        fresh.next_batch(np.random.default_rng(4)),
        strict=True,
    ):
        assert np.array_equal(np.asarray(a), np.asarray(b))
