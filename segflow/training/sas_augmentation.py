"""The colour and intensity augmentation of JMedSeg's SAS framework, on top of nnU-Net's.

JMedSeg's SAS training framework adds the augmentations of contrastive learning (colour
jitter, blur, random resized crops; MoCo v2, Chen et al. 2020, arXiv 2003.04297) to the
segmentation training. With ``sas_augmentation`` these run after nnU-Net's intensity
transforms and before mirroring (:func:`sas_transforms`), each on its own per sample:

=====================  ===============================================================
colour jitter          probability 0.8; brightness, contrast and (3 channels only:
                       RGB) saturation, each by a factor from [0.6, 1.4] (MoCo v2's
                       strength 0.4), in random order. On z-scored intensities
                       brightness scales around the channel's minimum (its black),
                       contrast around its mean, saturation towards the mean over the
                       channels. No hue: grey-scale and z-scored images have none.
gamma                  probability 0.3, gamma from [0.7, 1.5] per channel, mean and
                       standard deviation kept (batchgenerators' GammaTransform)
Gaussian blur          probability 0.5, sigma from [0.1, 2] (MoCo v2's), one per channel
random resized crop    probability 0.5: a box of [0.5, 1] of the patch's volume (MoCo
                       v2: [0.2, 1] for pretraining; segmentation keeps more context)
                       with per-axis aspect ratios within [3/4, 4/3], resized back to
                       the patch: images linearly, segmentations by nearest neighbour
=====================  ===============================================================

The values of JMedSeg itself could not be checked when this was written; those above are
MoCo v2's where it has them. Random numbers come from numpy's global generator, which the
batch loader seeds per batch (:mod:`segflow.training.dataloading`), so batches stay
reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform
from batchgenerators.transforms.color_transforms import GammaTransform
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform
from scipy.ndimage import map_coordinates

__all__ = ["ColourJitter", "RandomResizedCrop", "sas_transforms"]

JITTER_STRENGTH = 0.4
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


class ColourJitter(AbstractTransform):
    """Brightness, contrast and (with 3 channels) saturation, in random order per sample.

    Args:
        strength: each factor is drawn from ``[1 - strength, 1 + strength]``.
        p_per_sample: probability that a sample is jittered.
    """

    def __init__(self, strength: float = JITTER_STRENGTH, p_per_sample: float = 0.8) -> None:
        self.strength = strength
        self.p_per_sample = p_per_sample

    def _factor(self) -> float:
        return float(np.random.uniform(1 - self.strength, 1 + self.strength))

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        data = data_dict["data"]
        spatial = tuple(range(1, data.ndim - 1))
        for b in range(data.shape[0]):
            if np.random.uniform() >= self.p_per_sample:
                continue
            sample = data[b]
            ops = ["brightness", "contrast"] + (["saturation"] if sample.shape[0] == 3 else [])
            for op in np.random.permutation(ops):
                factor = self._factor()
                if op == "brightness":
                    low = sample.min(axis=spatial, keepdims=True)
                    sample = low + (sample - low) * factor
                elif op == "contrast":
                    mean = sample.mean(axis=spatial, keepdims=True)
                    sample = mean + (sample - mean) * factor
                else:
                    grey = sample.mean(axis=0, keepdims=True)
                    sample = grey + (sample - grey) * factor
            data[b] = sample
        data_dict["data"] = data
        return data_dict


class RandomResizedCrop(AbstractTransform):
    """A random box of the patch, resized back to the whole patch (images linear, labels
    nearest).

    Args:
        scale: range of the box's share of the patch's volume.
        ratio: range of each axis's aspect ratio against a box of the same volume and the
            patch's proportions.
        p_per_sample: probability that a sample is cropped.
    """

    def __init__(
        self,
        scale: tuple[float, float] = CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        p_per_sample: float = 0.5,
    ) -> None:
        self.scale = scale
        self.ratio = ratio
        self.p_per_sample = p_per_sample

    def box(self, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """A random box ``(origin, size)`` in voxels inside ``shape``."""
        n = len(shape)
        volume = np.random.uniform(*self.scale)
        log_ratios = np.random.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), n)
        log_ratios -= log_ratios.mean()  # keep the volume
        share = np.minimum(volume ** (1 / n) * np.exp(log_ratios), 1.0)
        size = np.asarray(shape, dtype=np.float64) * share
        origin = np.random.uniform(0, 1, n) * (np.asarray(shape) - size)
        return origin, size

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        data, seg = data_dict["data"], data_dict.get("seg")
        shape = data.shape[2:]
        for b in range(data.shape[0]):
            if np.random.uniform() >= self.p_per_sample:
                continue
            origin, size = self.box(shape)
            # Output voxel centre i maps to origin + (i + 0.5) * size / shape - 0.5.
            axes = [
                o + (np.arange(s) + 0.5) * (z / s) - 0.5
                for o, z, s in zip(origin, size, shape, strict=True)
            ]
            coords = np.stack(np.meshgrid(*axes, indexing="ij"))
            for c in range(data.shape[1]):
                data[b, c] = map_coordinates(data[b, c], coords, order=1, mode="nearest")
            if seg is not None:
                for c in range(seg.shape[1]):
                    seg[b, c] = map_coordinates(seg[b, c], coords, order=0, mode="nearest")
        data_dict["data"] = data
        if seg is not None:
            data_dict["seg"] = seg
        return data_dict


def sas_transforms() -> list[AbstractTransform]:
    """The SAS colour and intensity transforms, in their order (see the module docstring)."""
    return [
        ColourJitter(),
        GammaTransform((0.7, 1.5), per_channel=True, retain_stats=True, p_per_sample=0.3),
        GaussianBlurTransform(
            (0.1, 2.0), different_sigma_per_channel=True, p_per_sample=0.5, p_per_channel=1.0
        ),
        RandomResizedCrop(),
    ]
