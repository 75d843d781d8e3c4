"""Resampling images and segmentations to a configuration's target spacing.

Images are interpolated with splines (third order by default). Segmentations are resampled
class by class: every label's indicator is interpolated linearly and each output voxel takes
the label with the highest score, so a structure one voxel thin survives where interpolating
label values (or nearest neighbour) would drop or shift it.

Strongly anisotropic data (the coarsest spacing more than :data:`ANISOTROPY_THRESHOLD` times
the finest) is resampled in two steps: each slice in-plane with the full order, then along
the out-of-plane axis with ``order_z`` (nearest neighbour by default), because interpolating
across thick slices invents structure that is not there.

All arrays are channel-first: ``(c, z, y, x)``. Sample positions follow the "align corners
= False" convention: voxel centres of the output are spread over the same physical extent
as those of the input, and positions beyond the edge take the edge value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "compute_new_shape",
    "is_anisotropic",
    "out_of_plane_axis",
    "resample_data",
    "resample_seg",
    "separate_z_axis",
]

logger = logging.getLogger(__name__)

#: Spacing ratio (coarsest / finest) above which an image counts as anisotropic.
ANISOTROPY_THRESHOLD = 3.0


def compute_new_shape(
    shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
    """The voxel count per axis that covers the same extent at ``new_spacing``.

    Args:
        shape: current spatial shape.
        spacing: current spacing, same axis order.
        new_spacing: target spacing, same axis order.

    Raises:
        ValueError: the three sequences differ in length.
    """
    if not len(shape) == len(spacing) == len(new_spacing):
        raise ValueError(
            f"shape {tuple(shape)}, spacing {tuple(spacing)} and new spacing "
            f"{tuple(new_spacing)} must have the same number of axes"
        )
    # old / new * size, in this order, so that values landing on .5 round like the planner's.
    return tuple(round(s / n * k) for s, n, k in zip(spacing, new_spacing, shape, strict=True))


def is_anisotropic(spacing: Sequence[float], threshold: float = ANISOTROPY_THRESHOLD) -> bool:
    """Whether the coarsest spacing exceeds ``threshold`` times the finest."""
    return max(spacing) / min(spacing) > threshold


def out_of_plane_axis(spacing: Sequence[float]) -> int | None:
    """The single axis with the coarsest spacing, or None when several axes share it.

    Two axes sharing the coarsest spacing (e.g. ``(0.25, 1.25, 1.25)``) describe fine slices
    stacked along one axis, not thick slices: there is no out-of-plane axis to treat apart.
    """
    largest = max(spacing)
    axes = [i for i, s in enumerate(spacing) if s == largest]
    return axes[0] if len(axes) == 1 else None


def separate_z_axis(
    spacing: Sequence[float],
    new_spacing: Sequence[float],
    force_separate_z: bool | None = None,
    threshold: float = ANISOTROPY_THRESHOLD,
) -> int | None:
    """The axis to resample on its own, or None to resample all axes together.

    With ``force_separate_z`` None the data decides: the current spacing if it is
    anisotropic, else the target spacing if that is. ``True`` always separates the coarsest
    axis of the current spacing; ``False`` never separates.

    Args:
        spacing: current spacing.
        new_spacing: target spacing.
        force_separate_z: the plans' override (None: decide from the spacings).
        threshold: the anisotropy ratio.
    """
    if force_separate_z is not None:
        return out_of_plane_axis(spacing) if force_separate_z else None
    if is_anisotropic(spacing, threshold):
        return out_of_plane_axis(spacing)
    if is_anisotropic(new_spacing, threshold):
        return out_of_plane_axis(new_spacing)
    return None


def _zoom(volume: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """Spline-resize ``volume`` (float64) to ``new_shape``, edge values beyond the border."""
    factors = [n / o for n, o in zip(new_shape, volume.shape, strict=True)]
    out = ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True)
    if out.shape != tuple(new_shape):  # pragma: no cover - guards a rounding surprise in scipy
        raise RuntimeError(f"resampling produced {out.shape}, expected {tuple(new_shape)}")
    return out


def _resize_clipped(volume: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """Resize and clip to the input's value range (higher orders overshoot at edges)."""
    out = _zoom(volume, new_shape, order)
    if order > 1:
        np.clip(out, volume.min(), volume.max(), out=out)
    return out


def _along_axis(volume: np.ndarray, axis: int, new_length: int, order: int) -> np.ndarray:
    """Resample one axis of ``volume`` to ``new_length``, the other axes untouched."""
    if volume.shape[axis] == new_length:
        return volume
    new_shape = list(volume.shape)
    new_shape[axis] = new_length
    if order == 0:
        # Nearest neighbour along one axis is an index lookup; no need for a spline pass.
        scale = volume.shape[axis] / new_length
        centres = (np.arange(new_length) + 0.5) * scale - 0.5
        index = np.clip(_round_half_up(centres), 0, volume.shape[axis] - 1)
        return np.take(volume, index, axis=axis)
    return _zoom(volume, new_shape, order)


def _round_half_up(values: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, halves upwards (as spline order 0 picks its sample)."""
    return np.floor(values + 0.5).astype(np.intp)


def _in_plane(volume: np.ndarray, axis: int, plane_shape: Sequence[int], resize) -> np.ndarray:
    """Apply ``resize(plane, plane_shape)`` to every slice across ``axis``."""
    out = None
    for index, plane in enumerate(np.moveaxis(volume, axis, 0)):
        resized = resize(plane, plane_shape)
        if out is None:
            out = np.empty((volume.shape[axis], *resized.shape), dtype=resized.dtype)
        out[index] = resized
    return np.moveaxis(out, 0, axis)


def _without(shape: Sequence[int], axis: int) -> list[int]:
    return [n for i, n in enumerate(shape) if i != axis]


def resample_data(
    data: np.ndarray,
    new_shape: Sequence[int],
    axis: int | None = None,
    order: int = 3,
    order_z: int = 0,
) -> np.ndarray:
    """Resample an image ``(c, *spatial)`` to ``new_shape``, channel by channel.

    Args:
        data: the image, channel first.
        new_shape: the spatial shape wanted.
        axis: the out-of-plane axis (spatial index) to resample separately, or None.
        order: spline order (in-plane order when ``axis`` is given).
        order_z: order along ``axis``.

    Returns:
        float32 array ``(c, *new_shape)``; ``data`` itself when the shape does not change.
    """
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    for c in range(data.shape[0]):
        volume = data[c].astype(np.float64)
        if axis is None:
            out[c] = _resize_clipped(volume, new_shape, order)
        else:
            stack = _in_plane(
                volume,
                axis,
                _without(new_shape, axis),
                lambda plane, shape: _resize_clipped(plane, shape, order),
            )
            out[c] = _along_axis(stack, axis, new_shape[axis], order_z)
    return out


def _resize_labels(labels: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """Resize one label map: per-class interpolation and argmax (nearest for order 0)."""
    if labels.size == 0:
        return np.zeros(new_shape, dtype=labels.dtype)
    nearest = _zoom(labels.astype(np.float64), new_shape, 0).astype(labels.dtype)
    if order == 0:
        return nearest
    values = np.unique(labels)
    if values.size == 1:
        return np.full(new_shape, values[0], dtype=labels.dtype)
    # Running argmax over classes, so that only a few output-sized buffers exist at a time.
    # Exact ties (an output voxel halfway between two labels, common with even factors) go
    # to the nearest-neighbour label when it is among the tied, else to the smaller label.
    best = winner = nearest_score = None
    for index, value in enumerate(values):
        score = _resize_clipped((labels == value).astype(np.float64), new_shape, order)
        is_nearest = nearest == value
        if best is None:
            best = score
            winner = np.zeros(new_shape, dtype=np.min_scalar_type(values.size))
            nearest_score = np.where(is_nearest, score, 0.0)
            continue
        np.copyto(nearest_score, score, where=is_nearest)
        better = score > best
        winner[better] = index
        np.maximum(best, score, out=best)
    result = values[winner]
    keep_nearest = (nearest_score == best) & (best > 0)
    result[keep_nearest] = nearest[keep_nearest]
    return result.astype(labels.dtype, copy=False)


def resample_seg(
    seg: np.ndarray,
    new_shape: Sequence[int],
    axis: int | None = None,
    order: int = 1,
    order_z: int = 0,
) -> np.ndarray:
    """Resample a segmentation ``(c, *spatial)`` to ``new_shape``.

    Each channel is resampled class by class (``order`` > 0: the indicator of every label is
    interpolated and the best-scoring label wins). Along a separate out-of-plane ``axis``,
    ``order_z`` 0 takes the nearest slice's labels; a higher ``order_z`` runs the same
    per-class vote along that axis.

    Args:
        seg: label map(s), channel first, any integer dtype (negative values are labels too).
        new_shape: the spatial shape wanted.
        axis: the out-of-plane axis to resample separately, or None.
        order: interpolation order of the per-class indicators (in-plane when ``axis`` given).
        order_z: order along ``axis``.

    Returns:
        an array of ``seg``'s dtype, ``(c, *new_shape)``; ``seg`` itself when the shape does
        not change.
    """
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(seg.shape[1:]) == new_shape:
        return seg
    out = np.empty((seg.shape[0], *new_shape), dtype=seg.dtype)
    for c in range(seg.shape[0]):
        if axis is None:
            out[c] = _resize_labels(seg[c], new_shape, order)
            continue
        stack = _in_plane(
            seg[c],
            axis,
            _without(new_shape, axis),
            lambda plane, shape: _resize_labels(plane, shape, order),
        )
        if order_z == 0:
            out[c] = _along_axis(stack, axis, new_shape[axis], 0)
        else:
            out[c] = _resize_labels_along(stack, axis, new_shape[axis], order_z)
    return out


def _resize_labels_along(labels: np.ndarray, axis: int, new_length: int, order: int) -> np.ndarray:
    """Per-class vote along one axis only (for ``order_z`` > 0)."""
    if labels.shape[axis] == new_length:
        return labels
    new_shape = list(labels.shape)
    new_shape[axis] = new_length
    factors = [1.0] * labels.ndim
    factors[axis] = new_length / labels.shape[axis]
    values = np.unique(labels)
    result = np.empty(new_shape, dtype=labels.dtype)
    best = None
    for value in values:
        score = ndimage.zoom(
            (labels == value).astype(np.float64),
            factors,
            order=order,
            mode="nearest",
            grid_mode=True,
        )
        if best is None:
            best = score
            result[...] = value
            continue
        better = score > best
        result[better] = value
        np.maximum(best, score, out=best)
    return result
