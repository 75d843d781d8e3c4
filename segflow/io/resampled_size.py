"""How large an image becomes once resampled to a target spacing, told from its header.

Preprocessing and prediction resample every image to the plans' target spacing. The size
that gives is known before any voxel is read (shape times spacing over target spacing), so a
header whose spacing cannot be right (1e-6 mm or 1e6 mm next to cases of 1 mm) is refused
up front, naming the case, instead of dying in resampling with ``division by zero``, ``array
is too big`` or an empty array. The bounds:

- at least one voxel along every axis;
- at most :data:`MAX_RESAMPLED_VOXELS` voxels (1024**3: 4 GiB a channel in float32, several
  times that while resampling), far beyond any scan segflow is meant for (a whole-body CT
  at 1 mm is about 500 x 500 x 2000 = 5e8 voxels).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from segflow.io.image import (
    NATURAL_2D_ENDINGS,
    SPACING_2D_OUT_OF_PLANE,
    ImageHeader,
    ending_of,
)

__all__ = ["MAX_RESAMPLED_VOXELS", "header_grid", "resampled_size_problem"]

#: The most voxels an image may have once resampled to the target spacing.
MAX_RESAMPLED_VOXELS = 1 << 30
_FLOAT32_BYTES = 4


def header_grid(
    header: ImageHeader, path: str | os.PathLike[str]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The ``(z, y, x)`` shape and spacing that :func:`~segflow.io.image.read_image` gives the
    file at ``path``, from its header: a 2D image is one slice at spacing
    :data:`~segflow.io.image.SPACING_2D_OUT_OF_PLANE`, a png/bmp/tif one of 1 mm pixels."""
    size = header.size[:2] if ending_of(path) in NATURAL_2D_ENDINGS else header.size
    if ending_of(path) in NATURAL_2D_ENDINGS:
        return (1, size[1], size[0]), (SPACING_2D_OUT_OF_PLANE, 1.0, 1.0)
    if len(size) == 2:
        sx, sy = header.spacing[:2]
        return (1, size[1], size[0]), (SPACING_2D_OUT_OF_PLANE, sy, sx)
    (nx, ny, nz), (sx, sy, sz) = size, header.spacing
    return (nz, ny, nx), (sz, sy, sx)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def resampled_size_problem(
    shape: Sequence[int],
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    channels: int,
    target_source: str,
) -> str | None:
    """Why an image of ``shape`` at ``spacing`` cannot be resampled to ``target_spacing``
    (None when it can).

    Args:
        shape: voxels per axis, ``(z, y, x)``.
        spacing: mm per axis, same order.
        target_spacing: the spacing it is resampled to, same order.
        channels: the case's channels (for the memory the result takes).
        target_source: where the target spacing comes from, for the message (e.g. "the
            median of the 4 training cases' spacings").

    Returns:
        One sentence naming the spacing, the target spacing, the resulting shape and the
        bound it breaks.
    """
    sizes = [s / t * n for s, t, n in zip(spacing, target_spacing, shape, strict=True)]
    shown = "(" + ", ".join(_fmt_size(v) for v in sizes) + ")"
    start = (
        f"spacing (z, y, x) {_fmt(spacing)} mm resampled to the target spacing "
        f"{_fmt(target_spacing)} mm ({target_source}) gives shape {shown}"
    )
    hint = "; is the spacing in its header in mm?"
    if any(math.isfinite(v) and round(v) < 1 for v in sizes):
        return f"{start}: less than one voxel along an axis{hint}"
    voxels = math.prod(sizes)
    if not math.isfinite(voxels) or voxels > MAX_RESAMPLED_VOXELS:
        gib = voxels * channels * _FLOAT32_BYTES / 2**30
        return (
            f"{start}: {voxels:.3g} voxels, {gib:.3g} GiB for its {channels} channel(s) in "
            f"float32, beyond the bound of {MAX_RESAMPLED_VOXELS:,} voxels{hint}"
        )
    return None


def _fmt_size(value: float) -> str:
    if not math.isfinite(value):
        return "inf"
    return str(round(value)) if value < 1e6 else f"{value:.3g}"
