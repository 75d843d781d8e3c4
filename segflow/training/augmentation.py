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
:class:`MaskOutsideNonzero` are ours. Region targets are not built here: targets stay label
maps, turned into regions and deep-supervision scales by :mod:`segflow.training.losses`.

The cascade's second stage (a configuration with a ``previous_stage``) draws the previous
stage's segmentation as a second segmentation channel, so the spatial transform and mirroring
move it with the label. After everything above, three transforms of our own follow, as in
nnU-Net's cascade trainer (values of nnU-Net's cascade defaults, v1 and v2 alike):

======================  ================================================================
one-hot                 :class:`PreviousStageToOneHot`: that channel leaves the
                        segmentation and joins the image as one channel per foreground
                        label (:func:`segflow.preprocessing.previous_stage.one_hot`); the
                        intensity transforms above never touch it
binary operators        :class:`RandomBinaryOperator`, probability 0.4 per sample: every
                        one-hot channel (probability 1 each, in random order) gets one of
                        dilation, erosion, opening or closing, drawn uniformly, with a ball
                        of radius drawn from [1, 8] voxels; voxels a channel gains are
                        taken from the others, so the channels stay one-hot
connected components    :class:`RemoveRandomComponent`, probability 0.2 per sample: in
                        every one-hot channel, one connected component (drawn uniformly
                        among those smaller than 15% of the patch) is removed, left
                        as background
======================  ================================================================

These teach the second stage to correct the first stage's errors instead of copying them.
Binary operators use Euclidean distance transforms: dilation by a ball of radius ``r`` keeps
voxels within ``r`` of the channel, erosion those farther than ``r`` from its complement,
which is what morphology with the ball ``|offset| <= r`` computes, at a cost that does not
grow with ``r``; the patch border is not treated as background (a structure leaving the patch
is not eroded from the border).

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

from segflow.preprocessing.previous_stage import one_hot
from segflow.training.sampling import augmentation_rotation

__all__ = [
    "BINARY_OPERATOR_P",
    "BINARY_OPERATOR_RADIUS",
    "ORDER_DATA",
    "ORDER_SEG",
    "OUTSIDE_LABEL",
    "REMOVE_COMPONENT_MAX_FRACTION",
    "REMOVE_COMPONENT_P",
    "ChannelsToSlices",
    "MaskOutsideNonzero",
    "PreviousStageToOneHot",
    "RandomBinaryOperator",
    "RemoveRandomComponent",
    "SlicesToChannels",
    "apply_transforms",
    "configured_mirror_axes",
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
#: Cascade: probability per sample of the random binary operators, and their ball radii.
BINARY_OPERATOR_P = 0.4
BINARY_OPERATOR_RADIUS = (1.0, 8.0)
#: Cascade: probability per sample of removing connected components, and the largest share of
#: the patch a removed component may cover.
REMOVE_COMPONENT_P = 0.2
REMOVE_COMPONENT_MAX_FRACTION = 0.15


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


class PreviousStageToOneHot(AbstractTransform):
    """Move segmentation channel 1 (the previous stage's label map) to the image as one-hot
    channels, one per value of ``labels``; the segmentation keeps channel 0 (the target)."""

    def __init__(self, labels: Sequence[int]) -> None:
        self.labels = tuple(int(v) for v in labels)

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        data, seg = data_dict["data"], data_dict["seg"]
        if seg.shape[1] != 2:
            raise ValueError(
                f"a cascade batch holds the target and the previous stage's segmentation, "
                f"got {seg.shape[1]} segmentation channel(s)"
            )
        encoded = np.stack([one_hot(s, self.labels, data.dtype) for s in seg[:, 1]])
        data_dict["data"] = np.concatenate([data, encoded], axis=1)
        data_dict["seg"] = seg[:, :1]
        return data_dict


def _ball_operation(mask: np.ndarray, operation: str, radius: float) -> np.ndarray:
    """Binary morphology of ``mask`` with the ball ``|offset| <= radius`` (see the module
    docstring)."""
    from scipy.ndimage import distance_transform_edt

    def dilate(m: np.ndarray) -> np.ndarray:
        return m if m.all() else distance_transform_edt(~m) <= radius

    def erode(m: np.ndarray) -> np.ndarray:
        return m if not m.any() or m.all() else distance_transform_edt(m) > radius

    if operation == "dilation":
        return dilate(mask)
    if operation == "erosion":
        return erode(mask)
    if operation == "opening":
        return dilate(erode(mask))
    if operation == "closing":
        return erode(dilate(mask))
    raise ValueError(f"unknown binary operation '{operation}'")


class RandomBinaryOperator(AbstractTransform):
    """Dilate, erode, open or close the one-hot ``channels`` of the image at random.

    Args:
        channels: the image channels holding the one-hot maps (negative: from the end).
        p_per_sample: probability that a sample is changed at all.
        p_per_channel: probability of each channel, once the sample is.
        radius: the ball's radius in voxels, drawn uniformly from this range.
    """

    OPERATIONS = ("dilation", "erosion", "opening", "closing")

    def __init__(
        self,
        channels: Sequence[int],
        p_per_sample: float = BINARY_OPERATOR_P,
        p_per_channel: float = 1.0,
        radius: tuple[float, float] = BINARY_OPERATOR_RADIUS,
    ) -> None:
        self.channels = [int(c) for c in channels]
        self.p_per_sample, self.p_per_channel = float(p_per_sample), float(p_per_channel)
        self.radius = (float(radius[0]), float(radius[1]))

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        data = data_dict["data"]
        for b in range(data.shape[0]):
            if np.random.uniform() >= self.p_per_sample:
                continue
            for c in np.random.permutation(self.channels):
                if np.random.uniform() >= self.p_per_channel:
                    continue
                operation = self.OPERATIONS[np.random.randint(len(self.OPERATIONS))]
                radius = np.random.uniform(*self.radius)
                before = data[b, c] > 0.5
                after = _ball_operation(before, operation, radius)
                data[b, c] = after
                gained = after & ~before
                if gained.any():
                    for other in self.channels:
                        if other != c:
                            data[b, other][gained] = 0
        return data_dict


class RemoveRandomComponent(AbstractTransform):
    """Remove one connected component of each one-hot channel at random.

    Args:
        channels: the image channels holding the one-hot maps (negative: from the end).
        p_per_sample: probability that a sample is changed.
        max_fraction: only components smaller than this share of the patch are removed.
    """

    def __init__(
        self,
        channels: Sequence[int],
        p_per_sample: float = REMOVE_COMPONENT_P,
        max_fraction: float = REMOVE_COMPONENT_MAX_FRACTION,
    ) -> None:
        self.channels = [int(c) for c in channels]
        self.p_per_sample, self.max_fraction = float(p_per_sample), float(max_fraction)

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        from scipy.ndimage import label

        data = data_dict["data"]
        for b in range(data.shape[0]):
            if np.random.uniform() >= self.p_per_sample:
                continue
            for c in self.channels:
                mask = data[b, c] > 0.5
                if not mask.any():
                    continue
                components, _ = label(mask)
                sizes = np.bincount(components.ravel())[1:]
                small = np.flatnonzero(sizes < self.max_fraction * mask.size) + 1
                if small.size:
                    chosen = small[np.random.randint(small.size)]
                    data[b, c][components == chosen] = 0
        return data_dict


def _previous_stage_transforms(
    labels: Sequence[int] | None, augment: bool
) -> list[AbstractTransform]:
    if labels is None:
        return []
    transforms: list[AbstractTransform] = [PreviousStageToOneHot(labels)]
    if augment and labels:
        channels = list(range(-len(labels), 0))
        transforms += [RandomBinaryOperator(channels), RemoveRandomComponent(channels)]
    return transforms


def default_mirror_axes(patch_size: Sequence[int]) -> tuple[int, ...]:
    """nnU-Net's mirror axes: every spatial axis, (0, 1) in 2D and (0, 1, 2) in 3D.

    Dummy 2D configurations mirror along all three axes too; inference mirrors along the same
    axes.
    """
    if len(patch_size) not in (2, 3):
        raise ValueError(f"a patch has 2 or 3 axes, not {len(patch_size)}: {tuple(patch_size)}")
    return tuple(range(len(patch_size)))


def configured_mirror_axes(
    image_axes: Sequence[int] | None, transpose_forward: Sequence[int], ndim: int
) -> tuple[int, ...]:
    """The patch axes to mirror for the image axes a run chose (``training.mirror_axes``).

    ``image_axes`` are axes of the image arrays as segflow reads them (0, 1, 2: z, y, x; a 2D
    image is one z slice); preprocessing transposes them by the plans' ``transpose_forward``,
    and a 2D configuration's patch is a slice across the first transposed axis, which it
    cannot mirror. None: every axis of the patch (:func:`default_mirror_axes`).
    """
    if image_axes is None:
        return tuple(range(ndim))
    order = list(transpose_forward)
    axes = []
    for axis in image_axes:
        position = order.index(axis)
        if ndim == 2:
            if position == 0:
                continue
            position -= 1
        axes.append(position)
    return tuple(sorted(axes))


def training_transforms(
    patch_size: Sequence[int],
    mirror_axes: Sequence[int] | None = None,
    use_mask_for_norm: Sequence[bool] | None = None,
    sas: bool = False,
    previous_stage_labels: Sequence[int] | None = None,
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
        previous_stage_labels: for a cascade stage, the label values one-hot encoded from
            the second segmentation channel (the previous stage's), which is then augmented
            (see the module docstring); None for any other configuration.

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
    transforms += _previous_stage_transforms(previous_stage_labels, augment=True)
    return Compose(transforms)


def validation_transforms(previous_stage_labels: Sequence[int] | None = None) -> Compose:
    """Validation batches are not augmented: only -1 becomes background (and a cascade
    stage's previous-stage channel becomes one-hot image channels)."""
    return Compose(
        [
            RemoveLabelTransform(OUTSIDE_LABEL, 0),
            *_previous_stage_transforms(previous_stage_labels, augment=False),
        ]
    )


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
