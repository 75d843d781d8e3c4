"""Cropping to the nonzero region: the first thing nnU-Net does to every case.

Many scans hold a frame of zeros around the anatomy (skull-stripped MRI, cut-out CT fields of
view). The method crops every case to the bounding box of the voxels where any channel is
nonzero, so that the fingerprint describes the content and preprocessing never trains on empty
frame. The functions here work on any number of spatial axes; arrays are channel-first
``(c, *spatial)`` wherever a ``data`` argument is taken.

Bounding boxes are lists of half-open ``[start, stop]`` pairs, one per spatial axis, so that
``slice(start, stop)`` selects the box and ``stop - start`` is its extent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "OUTSIDE_NONZERO_LABEL",
    "BoundingBox",
    "NonzeroCrop",
    "bounding_box",
    "bounding_box_shape",
    "bounding_box_to_slices",
    "crop_to_bounding_box",
    "crop_to_nonzero",
    "label_outside_nonzero",
    "nonzero_bounding_box",
    "nonzero_mask",
]

logger = logging.getLogger(__name__)

#: Label written into background voxels outside the nonzero mask (nnU-Net's convention), so
#: that normalization restricted to the mask can find the mask again after cropping.
OUTSIDE_NONZERO_LABEL = -1

BoundingBox = list[list[int]]


def _any_channel_nonzero(data: np.ndarray) -> np.ndarray:
    if data.ndim < 2:
        raise ValueError(f"expected channel-first data (c, *spatial), got shape {data.shape}")
    # OR-ing channel by channel keeps the peak memory at two spatial masks.
    mask = data[0] != 0
    for channel in data[1:]:
        mask |= channel != 0
    return mask


def nonzero_mask(data: np.ndarray, fill_holes: bool = True) -> np.ndarray:
    """Where any channel is nonzero, with enclosed holes filled.

    Holes are filled over all spatial axes at once (:func:`scipy.ndimage.binary_fill_holes`),
    as nnU-Net does. A 2D image stored as ``(c, 1, y, x)`` therefore gets no holes filled:
    every voxel of a one-slice volume touches the volume's border.

    Args:
        data: ``(c, *spatial)``.
        fill_holes: fill regions of zeros that the nonzero region encloses.

    Returns:
        A boolean array of shape ``data.shape[1:]``.
    """
    mask = _any_channel_nonzero(data)
    if not fill_holes:
        return mask
    # Imported here: scipy.ndimage costs a quarter second, and per-case jobs are short.
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> BoundingBox:
    """The smallest box holding every True voxel of ``mask``.

    An all-False mask gives the full extent of the array: nnU-Net keeps such an image whole
    rather than cropping it to nothing.

    Args:
        mask: a boolean array with any number of axes.

    Returns:
        ``[[start, stop], ...]`` per axis, half-open.
    """
    mask = np.asarray(mask, dtype=bool)
    box: BoundingBox = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(mask.any(axis=others) if others else mask)
        if occupied.size == 0:
            return [[0, int(size)] for size in mask.shape]
        box.append([int(occupied[0]), int(occupied[-1]) + 1])
    return box


def nonzero_bounding_box(data: np.ndarray) -> BoundingBox:
    """The bounding box of :func:`nonzero_mask` of ``data``.

    Filling holes never changes a bounding box (a hole lies inside the region around it), so
    this skips the fill, which is the expensive part on large volumes.

    Args:
        data: ``(c, *spatial)``.

    Returns:
        ``[[start, stop], ...]`` per spatial axis; the full extent when ``data`` is all zero.
    """
    return bounding_box(_any_channel_nonzero(data))


def bounding_box_to_slices(bbox: Sequence[Sequence[int]]) -> tuple[slice, ...]:
    """``[[start, stop], ...]`` -> ``(slice(start, stop), ...)``."""
    return tuple(slice(int(start), int(stop)) for start, stop in bbox)


def bounding_box_shape(bbox: Sequence[Sequence[int]]) -> list[int]:
    """The extent ``stop - start`` of each axis of ``bbox``."""
    return [int(stop) - int(start) for start, stop in bbox]


def crop_to_bounding_box(array: np.ndarray, bbox: Sequence[Sequence[int]]) -> np.ndarray:
    """Crop the last ``len(bbox)`` axes of ``array`` to ``bbox``; leading axes are kept.

    The same box crops a ``(c, z, y, x)`` image and its ``(z, y, x)`` mask alike. The result
    is a view of ``array``.

    Raises:
        ValueError: ``bbox`` has more axes than ``array`` or reaches outside it.
    """
    if len(bbox) > array.ndim:
        raise ValueError(f"bounding box {list(bbox)} has more axes than array {array.shape}")
    spatial = array.shape[array.ndim - len(bbox) :]
    for (start, stop), size in zip(bbox, spatial, strict=True):
        if not 0 <= start <= stop <= size:
            raise ValueError(f"bounding box {list(bbox)} does not fit in shape {spatial}")
    leading = (slice(None),) * (array.ndim - len(bbox))
    return array[leading + bounding_box_to_slices(bbox)]


@dataclass
class NonzeroCrop:
    """A case cropped to its nonzero region.

    Attributes:
        data: the cropped ``(c, *spatial)`` image.
        seg: the cropped segmentation (same leading axes as given), or None.
        bbox: the box that was cropped to, in the coordinates of the uncropped image.
        mask: the nonzero mask (holes filled) inside the box, shape ``data.shape[1:]``.
    """

    data: np.ndarray
    seg: np.ndarray | None
    bbox: BoundingBox
    mask: np.ndarray


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None) -> NonzeroCrop:
    """Crop an image (and its segmentation) to the bounding box of the nonzero mask.

    Args:
        data: ``(c, *spatial)``.
        seg: a segmentation whose last axes match ``data.shape[1:]`` (e.g. ``(1, z, y, x)``).

    Returns:
        The cropped views, the box and the cropped nonzero mask. Pass the result to
        :func:`label_outside_nonzero` to mark the background outside the mask as nnU-Net does.

    Raises:
        ValueError: ``seg`` does not have the spatial shape of ``data``.
    """
    spatial = data.shape[1:]
    if seg is not None and seg.shape[seg.ndim - len(spatial) :] != spatial:
        raise ValueError(f"segmentation shape {seg.shape} does not match image shape {data.shape}")
    mask = nonzero_mask(data)
    bbox = bounding_box(mask)
    return NonzeroCrop(
        data=crop_to_bounding_box(data, bbox),
        seg=None if seg is None else crop_to_bounding_box(seg, bbox),
        bbox=bbox,
        mask=crop_to_bounding_box(mask, bbox),
    )


def label_outside_nonzero(
    seg: np.ndarray, mask: np.ndarray, value: int = OUTSIDE_NONZERO_LABEL
) -> np.ndarray:
    """A copy of ``seg`` with background (0) outside ``mask`` set to ``value``.

    Args:
        seg: a segmentation whose last axes have the shape of ``mask``.
        mask: the nonzero mask, e.g. :attr:`NonzeroCrop.mask`.
        value: the label for background outside the mask.
    """
    # Unsigned labels are widened to the smallest signed type that holds them and -1.
    out = np.array(seg, dtype=np.promote_types(seg.dtype, np.int8), copy=True)
    out[(out == 0) & ~np.broadcast_to(mask, out.shape)] = value
    return out
