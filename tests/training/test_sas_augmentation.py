"""JMedSeg SAS's colour and intensity augmentation: what each transform does to real numbers,
and the switch that adds them to nnU-Net's."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.training.augmentation import training_transforms
from segflow.training.dataloading import TrainingBatches
from segflow.training.sas_augmentation import ColourJitter, RandomResizedCrop, sas_transforms
from segflow.training.settings import TrainingSettings


def test_colour_jitter_scales_brightness_and_contrast_as_documented():
    np.random.seed(0)
    data = np.random.default_rng(1).normal(size=(4, 1, 8, 8)).astype(np.float64)
    original = data.copy()
    out = ColourJitter(strength=0.4, p_per_sample=1.0)(data=data)["data"]
    for b in range(4):
        x, y = original[b, 0], out[b, 0]
        assert not np.allclose(x, y)
        # Brightness (around the minimum) and contrast (around the mean) are both affine maps
        # with a positive slope in [0.6, 1.4]^2: y = a x + c with a in [0.36, 1.96].
        a, _ = np.polyfit(x.ravel(), y.ravel(), 1)
        assert 0.36 <= a <= 1.96
        assert np.allclose(y, np.polyval(np.polyfit(x.ravel(), y.ravel(), 1), x))
        assert np.argsort(y.ravel()).tolist() == np.argsort(x.ravel()).tolist()


def test_colour_jitter_changes_saturation_of_rgb_only():
    np.random.seed(3)
    grey = np.tile(np.random.default_rng(0).normal(size=(1, 1, 6, 6)), (1, 3, 1, 1))
    out = ColourJitter(p_per_sample=1.0)(data=grey.copy())["data"]
    # Equal channels (grey) stay equal whatever the saturation factor.
    assert np.allclose(out[0, 0], out[0, 1]) and np.allclose(out[0, 1], out[0, 2])


def test_random_resized_crop_moves_image_and_labels_together():
    seg = np.zeros((3, 1, 32, 32), dtype=np.float32)
    seg[:, :, 8:24, 8:24] = 1
    data = seg * 10.0 + 1.0  # the image is the label map, scaled
    crop = RandomResizedCrop(p_per_sample=1.0)
    np.random.seed(5)
    out = crop(data=data.copy(), seg=seg.copy())
    np.random.seed(5)  # the same draws again: the boxes it took
    for b in range(3):
        np.random.uniform()
        origin, size = crop.box((32, 32))
        overlap = np.prod(np.clip(np.minimum(origin + size, 24) - np.maximum(origin, 8), 0, None))
        assert set(np.unique(out["seg"][b])) <= {0.0, 1.0}
        inside = out["seg"][b] == 1
        # The labelled share of the output is the label's share of the box.
        assert inside.mean() == pytest.approx(overlap / np.prod(size), abs=0.08)
        # Linear image interpolation agrees with nearest labels wherever the image is flat.
        edges = (out["data"][b] != 1.0) & (out["data"][b] != 11.0)
        agree = (out["data"][b] > 6.0) == inside
        assert agree[~edges].all()


def test_random_resized_crop_boxes_stay_inside_and_keep_their_share():
    np.random.seed(7)
    crop = RandomResizedCrop()
    for _ in range(200):
        origin, size = crop.box((20, 30, 40))
        assert (origin >= 0).all() and (origin + size <= np.array([20, 30, 40]) + 1e-9).all()
        share = np.prod(size) / (20 * 30 * 40)
        assert 0.5 * (3 / 4) ** 3 <= share <= 1.0


def test_the_switch_adds_the_sas_transforms():
    names = [type(t).__name__ for t in training_transforms((16, 16, 16)).transforms]
    sas = [type(t).__name__ for t in training_transforms((16, 16, 16), sas=True).transforms]
    added = [type(t).__name__ for t in sas_transforms()]
    assert len(sas) == len(names) + len(added)
    mirror = sas.index("MirrorTransform")
    assert sas[mirror - len(added) : mirror] == added
    assert TrainingSettings(sas_augmentation=True).sas_augmentation


@pytest.mark.usefixtures("tiny_experiment")
def test_batches_with_sas_augmentation_differ_and_are_reproducible(tiny_experiment):
    fold = tiny_experiment.fold(0)
    folder = tiny_experiment.preprocessed["3d_fullres"]

    def batch(sas):
        batches = TrainingBatches(folder, fold["train"], (16, 16, 16), 2, seed=1, fold=0,
                                  sas_augmentation=sas)  # fmt: skip
        return batches[3]

    plain, first, again = batch(False), batch(True), batch(True)
    assert first["data"].shape == plain["data"].shape == (2, 1, 16, 16, 16)
    assert not np.allclose(first["data"].numpy(), plain["data"].numpy())
    assert np.array_equal(first["data"].numpy(), again["data"].numpy())
    assert np.array_equal(first["target"].numpy(), again["target"].numpy())
