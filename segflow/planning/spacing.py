"""Target spacing, the anisotropy rule, and the axis transposition.

All arrays are in the fingerprint's axis order ``(z, y, x)`` unless they are called
"transposed", in which case the axis of lowest resolution comes first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "fullres_target_spacing",
    "median_resampled_shape",
    "resampled_shape",
    "transpose_axes",
]

# An axis counts as anisotropic when its spacing is more than this many times the coarsest
# of the other axes (and it also has this many times fewer voxels, see below).
ANISOTROPY_THRESHOLD = 3.0
# For anisotropic data the slice axis takes this percentile of the dataset's slice spacings
# instead of the median.
ANISOTROPIC_AXIS_PERCENTILE = 10
# Nudge that keeps the slice axis strictly coarser than the in-plane axes, so that the
# transposition (which picks the coarsest axis) stays well defined.
_KEEP_COARSEST = 1e-5


def fullres_target_spacing(
    spacings: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD,
) -> np.ndarray:
    """The spacing every case is resampled to for ``3d_fullres`` (and, sliced, ``2d``).

    The median spacing per axis, except for strongly anisotropic datasets: resampling a
    dataset of mostly 1 mm slices with a few 5 mm cases to a median of, say, 3 mm would
    interpolate heavily in the thin-slice cases and throw away their resolution. When one axis
    is both much coarser and much shorter (in voxels) than the others, its target is the 10th
    percentile of its spacings instead, but never finer than the in-plane spacing.

    Args:
        spacings: per case spacing ``(z, y, x)`` in mm.
        shapes: per case shape after cropping to the nonzero region.
        anisotropy_threshold: ratio above which an axis counts as anisotropic.

    Returns:
        The target spacing as a float array.
    """
    spacing_array = np.vstack(spacings).astype(np.float64)
    target = np.percentile(spacing_array, 50, 0)
    target_size = np.percentile(np.vstack(shapes), 50, 0)

    worst_axis = int(np.argmax(target))
    other_axes = [i for i in range(len(target)) if i != worst_axis]
    other_spacings = [target[i] for i in other_axes]
    other_sizes = [target_size[i] for i in other_axes]

    coarse = target[worst_axis] > anisotropy_threshold * max(other_spacings)
    few_voxels = target_size[worst_axis] * anisotropy_threshold < min(other_sizes)
    if coarse and few_voxels:
        axis_target = np.percentile(spacing_array[:, worst_axis], ANISOTROPIC_AXIS_PERCENTILE)
        if axis_target < max(other_spacings):
            axis_target = max(max(other_spacings), axis_target) + _KEEP_COARSEST
        target[worst_axis] = axis_target
    return target


def transpose_axes(target_spacing: Sequence[float]) -> tuple[list[int], list[int]]:
    """Axis orders that move the coarsest axis first and back again.

    Putting the lowest-resolution axis first lets the ``2d`` configuration always slice along
    axis 0, and makes 2D datasets (whose dummy z axis has spacing 999) come out unchanged.
    Ties go to the first axis.

    Returns:
        ``(transpose_forward, transpose_backward)``.
    """
    coarsest = int(np.argmax(np.asarray(target_spacing)))
    forward = [coarsest] + [i for i in range(3) if i != coarsest]
    backward = [forward.index(i) for i in range(3)]
    return forward, backward


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]
) -> list[int]:
    """The shape of an image of ``shape`` at ``spacing`` after resampling to ``new_spacing``."""
    # Same operation order as nnU-Net (old / new * size) so that halves round alike.
    return [round(s / n * k) for s, n, k in zip(spacing, new_spacing, shape, strict=True)]


def median_resampled_shape(
    spacings: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    new_spacing: Sequence[float],
) -> np.ndarray:
    """Median over cases of the shape after resampling; may hold halves (e.g. 35.5)."""
    new_shapes = [resampled_shape(k, s, new_spacing) for s, k in zip(spacings, shapes, strict=True)]
    return np.median(np.asarray(new_shapes, dtype=np.float64), 0)
