"""Counter-seeded batches: the same batch k whatever the workers, order or interruption."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from segflow.planning.plans import ConfigurationPlan
from segflow.preprocessing.preprocessor import sample_class_locations
from segflow.preprocessing.storage import save_case
from segflow.training.dataloading import (
    MAX_WORKERS,
    TrainingBatches,
    batch_loader,
    batch_seed_sequence,
    workers_for,
)
from segflow.training.sampling import PatchSampler


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four labelled cases of two channels, 12 x 20 x 18, -1 in a border slab."""
    root = tmp_path_factory.mktemp("preprocessed")
    rng = np.random.default_rng(0)
    shape = (12, 20, 18)
    for i in range(4):
        data = rng.normal(size=(2, *shape)).astype(np.float32)
        seg = np.zeros((1, *shape), np.int8)
        seg[0, 3 + i : 7 + i, 5:9, 4 + i : 8 + i] = 1
        seg[0, 6, 10:13, 10:12] = 2
        seg[0, :, :, :2] = -1
        locations = sample_class_locations(seg[0], {"1": (1,), "2": (2,)}, rng)
        save_case(root, f"case{i}", data, seg, {"class_locations": locations}, (8, 8, 8))
    return root


IDS = ["case0", "case1", "case2", "case3"]


def _equal(a, b):
    return (
        a["keys"] == b["keys"]
        and torch.equal(a["data"], b["data"])
        and torch.equal(a["target"], b["target"])
    )


@pytest.mark.parametrize("patch", [(8, 12, 10), (12, 10), (2, 12, 10)])
def test_item_shapes_and_dtypes(folder, patch):
    # 3D, 2D, and dummy 2D (12 / 2 > 3: augmented slice by slice).
    batches = TrainingBatches(folder, IDS, patch, 3, seed=1, fold=0)
    item = batches[0]
    assert item["data"].shape == (3, 2, *patch) and item["data"].dtype == torch.float32
    assert item["target"].shape == (3, 1, *patch) and item["target"].dtype == torch.int16
    assert len(item["keys"]) == 3 and set(item["keys"]) <= set(IDS)
    assert set(item["target"].unique().tolist()) <= {0, 1, 2}
    assert (item["target"][2] > 0).any()  # the last of 3 is forced to hold foreground


def test_same_batch_whatever_the_workers_and_order(folder):
    batches = TrainingBatches(folder, IDS, (8, 12, 10), 2, seed=7, fold=1)
    in_process = list(batch_loader(batches, 3, 9, num_workers=0))
    in_workers = list(batch_loader(batches, 3, 9, num_workers=2, prefetch=1))
    backwards = [batches[k] for k in reversed(range(3, 9))][::-1]
    assert len(in_process) == len(in_workers) == 6
    for a, b, c in zip(in_process, in_workers, backwards, strict=True):
        assert _equal(a, b) and _equal(a, c)
    # A fresh dataset (a restarted job) makes the same batches.
    again = TrainingBatches(folder, IDS, (8, 12, 10), 2, seed=7, fold=1)
    assert _equal(again[5], in_process[2])


def test_interrupted_run_sees_the_same_batches(folder):
    batches = TrainingBatches(folder, IDS, (12, 10), 4, seed=3, fold=0)
    whole = list(batch_loader(batches, 0, 6, num_workers=0))
    resumed = list(batch_loader(batches, 0, 2, 0)) + list(batch_loader(batches, 2, 6, 0))
    assert all(_equal(a, b) for a, b in zip(whole, resumed, strict=True))


def test_batches_differ_by_index_seed_fold_and_stream(folder):
    def item(seed=0, fold=0, stream="train", k=0):
        return TrainingBatches(folder, IDS, (8, 12, 10), 3, seed=seed, fold=fold, stream=stream)[k]

    reference = item()
    for other in (item(k=1), item(seed=1), item(fold=1), item(stream="val")):
        assert not torch.equal(reference["data"], other["data"])


def test_global_generators_are_left_as_they_were(folder):
    batches = TrainingBatches(folder, IDS, (8, 12, 10), 2, seed=0, fold=0)
    np.random.seed(123)
    random.seed(456)
    expected = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(456)
    batches[0]
    assert (np.random.random(), random.random()) == expected


def test_validation_batches_are_not_augmented(folder):
    patch = (8, 12, 10)
    val = TrainingBatches(folder, IDS, patch, 3, seed=5, fold=2, stream="val")
    item = val[4]
    # The same draw without transforms: patches cut at the final size, -1 turned into 0.
    sampling, _ = batch_seed_sequence(5, 2, "val", 4).spawn(2)
    sampler = PatchSampler(folder, IDS, patch, 3, final_patch_size=patch)
    data, seg, keys = sampler.next_batch(np.random.default_rng(sampling))
    assert keys == item["keys"]
    assert np.array_equal(item["data"].numpy(), data)
    assert np.array_equal(item["target"].numpy(), np.where(seg < 0, 0, seg))
    assert (item["target"][2] > 0).any()  # 33% forced foreground, as in training


def test_from_configuration(folder):
    configuration = ConfigurationPlan(
        "3d_fullres",
        {"patch_size": [8, 12, 10], "batch_size": 2, "use_mask_for_norm": [True, False]},
    )
    batches = TrainingBatches.from_configuration(folder, configuration, IDS, seed=0, fold=0)
    item = batches[0]
    assert item["data"].shape == (2, 2, 8, 12, 10)
    assert batches.sampler.patch_size == (15, 18, 14)  # the initial patch
    val = TrainingBatches.from_configuration(
        folder, configuration, IDS, seed=0, fold=0, stream="val"
    )
    assert val.sampler.patch_size == (8, 12, 10)


class _ThreadCount(torch.utils.data.Dataset):
    def __getitem__(self, index):
        return torch.get_num_threads()


def test_workers_compute_single_threaded():
    counts = list(batch_loader(_ThreadCount(), 0, 2, num_workers=1))
    assert counts == [1, 1]


def test_workers_for():
    assert [workers_for(c) for c in (0, 1, 2, 3, 8)] == [0, 0, 1, 2, 7]
    assert workers_for(64) == MAX_WORKERS == 12


def test_errors(folder):
    with pytest.raises(ValueError, match="unknown stream 'test'; valid: train, val"):
        TrainingBatches(folder, IDS, (8, 8, 8), 2, seed=0, fold=0, stream="test")
    with pytest.raises(ValueError, match="fold=-1"):
        batch_seed_sequence(0, -1, "train", 0)
    batches = TrainingBatches(folder, IDS, (8, 8, 8), 2, seed=0, fold=0)
    with pytest.raises(ValueError, match="start <= stop"):
        batch_loader(batches, 5, 2, 0)
