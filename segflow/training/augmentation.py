"""nnU-Net v2's training augmentation, built from batchgenerators transforms.

:func:`training_transforms` composes, in nnU-Net's order, for a batch drawn at the initial
patch size (:func:`segflow.training.sampling.training_patch_size`):

======================  ================================================================
spatial                 rotation with probability 0.2 per sample, every axis then turned
                        by an angle from ``[-a, a]`` (``a`` from
                        :func:`~segflow.training.sampling.augmentation_rotation`: 30 degrees
                        in 3D, 180 or 15 in 2D and for dummy 2D); scaling with probability
                        0.2 by one factor for all axes, from 0.7 to 1.4; no elastic
                        deformation; centre crop to the final patch; images cubic (order
                        3), padded with 0; segmentations label by label linear (order 1),
                        padded with -1
Gaussian noise          probability 0.1, variance from [0, 0.1], one for all channels
Gaussian blur           probability 0.2, each channel with probability 0.5, sigma from
                        [0.5, 1] drawn per channel
brightness              probability 0.15, multiplied by a factor from [0.75, 1.25] drawn
                        per channel
contrast                probability 0.15, factor from [0.75, 1.25] per channel, range kept
low resolution          probability 0.25, each channel with probability 0.5, zoomed by a
                        factor from [0.5, 1] (nearest) and back (cubic); dummy 2D keeps the
                        slice axis
gamma, inverted         probability 0.1, gamma from [0.7, 1.5] per channel, mean and
                        standard deviation kept
gamma                   probability 0.3, likewise without inversion
mirroring               each of the configuration's mirror axes with probability 0.5
mask                    with ``use_mask_for_norm``: those channels set to 0 where the
                        segmentation is -1 (outside the nonzero region)
-1 to 0                 the segmentation's -1 (outside the nonzero region or the image)
                        becomes background
======================  ================================================================

Anisotropic 3D patches ("dummy 2D", see :func:`~segflow.training.sampling.augmentation_rotation`)
are turned and scaled slice by slice: their slices become channels for the spatial transform,
so every slice of a sample gets the same in-plane transform. They are still mirrored along all
three axes, as nnU-Net does (its ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``
returns mirror axes (0, 1, 2) for every 3D configuration, dummy 2D or not); a configuration
passes other axes through ``mirror_axes``.

Reference and differences. The values are those of nnU-Net v2's
``nnUNetTrainer.get_training_transforms`` as written for batchgenerators (the library pinned
here, 0.25.5); they were checked against nnU-Net v2.8.1, whose pipeline uses
batchgeneratorsv2 on torch tensors with the same probabilities and ranges but differs in:

- interpolation: v2.8.1 resamples images linearly and simulated low resolution upsamples
  linearly; batchgenerators-era nnU-Net, and segflow, use cubic splines (order 3) for both;
- scaling: v2.8.1 draws the factor uniformly from [0.7, 1.4]; batchgenerators, and segflow,
  draw it below or above 1 with equal probability, uniformly within [0.7, 1] or [1, 1.4];
- blur: v2.8.1 draws sigma per axis; batchgenerators-era nnU-Net, and segflow, one sigma per
  channel for all axes.

Segmentations are interpolated label by label (order 1, each voxel taking the label of the
largest interpolated indicator) as in both nnU-Net versions; the order 0 of batchgenerators'
own default is not what nnU-Net uses. batchgenerators lacks nnU-Net's slice/channel reshaping
for dummy 2D and its mask transform; :class:`SlicesToChannels`, :class:`ChannelsToSlices` and
:class:`MaskOutsideNonzero` are ours. Cascade inputs (the previous stage's segmentation as
extra channels) and region targets are not built here: targets stay label maps, turned into
regions and deep-supervision scales by :mod:`segflow.training.loss`.

Cost: the spatial transform dominates (scipy's ``map_coordinates``: one cubic pass for the
image, one linear pass per label value, -1 included, for the segmentation). On one CPU of a
shared 2-core machine a Hippocampus 3d_fullres batch (7 patches of 40x56x40) took 0.21 to
0.30 s (median), nnU-Net v2.8.1's torch pipeline 0.13 to 0.14 s; linear images
(:data:`ORDER_DATA` 1) took 40% off, nearest-neighbour segmentations (:data:`ORDER_SEG` 0) 38%,
both together 53%. A 2d batch (281 patches of 56x40) took 0.40 to 0.51 s, nnU-Net's 0.74 to
0.84 s (``benchmarks/dataloading_speed.py``).

batchgenerators draws from numpy's global generator and Python's ``random``; callers seed both
(see :mod:`segflow.training.dataloading`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
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

from segflow.training.sampling import augmentation_rotation

__all__ = [
    "ORDER_DATA",
    "ORDER_SEG",
    "OUTSIDE_LABEL",
    "ChannelsToSlices",
    "MaskOutsideNonzero",
    "SlicesToChannels",
    "apply_transforms",
    "default_mirror_axes",
    "training_transforms",
    "validation_transforms",
]

#: Spline order of image resampling in the spatial transform (cubic, see the module docstring).
ORDER_DATA = 3
#: Order of the label-by-label segmentation resampling (linear indicators, as nnU-Net).
ORDER_SEG = 1
#: Segmentation value outside the nonzero region and outside the image.
OUTSIDE_LABEL = -1


class SlicesToChannels(AbstractTransform):
    """``(b, c, z, y, x)`` to ``(b, c * z, y, x)`` for slice-by-slice spatial augmentation."""

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        for key in ("data", "seg"):
            array = data_dict.get(key)
            if array is None:
                continue
            data_dict[f"_slices_{key}"] = array.shape[1:3]
            data_dict[key] = array.reshape(array.shape[0], -1, *array.shape[3:])
        return data_dict


class ChannelsToSlices(AbstractTransform):
    """Undo :class:`SlicesToChannels` after the in-plane shape changed."""

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        for key in ("data", "seg"):
            shape = data_dict.pop(f"_slices_{key}", None)
            if shape is None:
                continue
            array = data_dict[key]
            data_dict[key] = array.reshape(array.shape[0], *shape, *array.shape[2:])
        return data_dict


class MaskOutsideNonzero(AbstractTransform):
    """Set ``channels`` of the image to 0 where the segmentation is -1 (nnU-Net's mask transform).

    Channels normalized within the nonzero region only (``use_mask_for_norm``) hold no
    meaningful value outside it; augmentation moved intensities there, this puts 0 back.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        self.channels = [int(c) for c in channels]

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        data, seg = data_dict["data"], data_dict["seg"]
        outside = seg[:, 0] < 0
        for c in self.channels:
            data[:, c][outside] = 0
        return data_dict


def default_mirror_axes(patch_size: Sequence[int]) -> tuple[int, ...]:
    """nnU-Net's mirror axes: every spatial axis, (0, 1) in 2D and (0, 1, 2) in 3D.

    Dummy 2D configurations mirror along all three axes too; inference mirrors along the same
    axes.
    """
    if len(patch_size) not in (2, 3):
        raise ValueError(f"a patch has 2 or 3 axes, not {len(patch_size)}: {tuple(patch_size)}")
    return tuple(range(len(patch_size)))


def training_transforms(
    patch_size: Sequence[int],
    mirror_axes: Sequence[int] | None = None,
    use_mask_for_norm: Sequence[bool] | None = None,
    sas: bool = False,
) -> Compose:
    """nnU-Net's training augmentation for a configuration's (final) patch.

    Args:
        patch_size: the network's patch, 2 or 3 axes; batches enter at the initial patch
            size and leave at this one.
        mirror_axes: spatial axes to mirror along; :func:`default_mirror_axes` when None, none
            when empty.
        use_mask_for_norm: per channel, whether it was normalized within the nonzero region
            (the plans' ``use_mask_for_norm``); those channels are masked after augmentation.
        sas: add JMedSeg SAS's colour and intensity transforms before mirroring
            (:mod:`segflow.training.sas_augmentation`).

    Returns:
        a batchgenerators ``Compose`` called as ``transforms(data=..., seg=...)`` on numpy
        arrays ``(b, c, *spatial)``; see :func:`apply_transforms`.
    """
    patch = tuple(int(p) for p in patch_size)
    max_angle, dummy_2d = augmentation_rotation(patch)
    angle = (-max_angle, max_angle)
    mirror = default_mirror_axes(patch) if mirror_axes is None else tuple(mirror_axes)
    spatial_patch, ignore_axes = (patch[1:], (0,)) if dummy_2d else (patch, None)

    transforms: list[AbstractTransform] = []
    if dummy_2d:
        transforms.append(SlicesToChannels())
    transforms.append(
        SpatialTransform(
            spatial_patch,
            patch_center_dist_from_border=None,
            do_elastic_deform=False,
            alpha=(0, 0),
            sigma=(0, 0),
            do_rotation=True,
            angle_x=angle,
            angle_y=angle,
            angle_z=angle,
            p_rot_per_axis=1,
            do_scale=True,
            scale=(0.7, 1.4),
            border_mode_data="constant",
            border_cval_data=0,
            order_data=ORDER_DATA,
            border_mode_seg="constant",
            border_cval_seg=OUTSIDE_LABEL,
            order_seg=ORDER_SEG,
            random_crop=False,
            p_el_per_sample=0,
            p_scale_per_sample=0.2,
            p_rot_per_sample=0.2,
            independent_scale_for_each_axis=False,
        )
    )
    if dummy_2d:
        transforms.append(ChannelsToSlices())
    transforms += [
        GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_sample=0.1),
        GaussianBlurTransform(
            (0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5
        ),
        BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
        ContrastAugmentationTransform(
            contrast_range=(0.75, 1.25), preserve_range=True, per_channel=True, p_per_sample=0.15
        ),
        SimulateLowResolutionTransform(
            zoom_range=(0.5, 1),
            per_channel=True,
            p_per_channel=0.5,
            order_downsample=0,
            order_upsample=3,
            p_per_sample=0.25,
            ignore_axes=ignore_axes,
        ),
        GammaTransform(
            (0.7, 1.5), invert_image=True, per_channel=True, retain_stats=True, p_per_sample=0.1
        ),
        GammaTransform(
            (0.7, 1.5), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.3
        ),
    ]
    if sas:
        from segflow.training.sas_augmentation import sas_transforms

        transforms += sas_transforms()
    if mirror:
        transforms.append(MirrorTransform(mirror))
    if use_mask_for_norm is not None and any(use_mask_for_norm):
        transforms.append(MaskOutsideNonzero([i for i, m in enumerate(use_mask_for_norm) if m]))
    transforms.append(RemoveLabelTransform(OUTSIDE_LABEL, 0))
    return Compose(transforms)


def validation_transforms() -> Compose:
    """Validation batches are not augmented: only -1 becomes background."""
    return Compose([RemoveLabelTransform(OUTSIDE_LABEL, 0)])


def apply_transforms(
    transforms: Compose, data: np.ndarray, seg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``transforms`` on one batch.

    Args:
        transforms: from :func:`training_transforms` or :func:`validation_transforms`.
        data: float32 ``(b, c, *spatial)``; may be modified in place.
        seg: integer label map ``(b, 1, *spatial)``, -1 outside the nonzero region.

    Returns:
        ``(data, seg)``: C-contiguous float32 and int16 arrays at the transforms' output patch
        size; seg holds the label values (no -1).
    """
    out = transforms(data=data, seg=seg)
    data_out = np.ascontiguousarray(out["data"], dtype=np.float32)
    seg_out = out["seg"]
    if seg_out.dtype.kind == "f":
        # The spatial transform returns float labels; they are whole numbers.
        seg_out = np.rint(seg_out)
    return data_out, np.ascontiguousarray(seg_out, dtype=np.int16)
