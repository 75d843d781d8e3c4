"""The cascade's extra input: the previous stage's segmentation on the next stage's grid.

nnU-Net's cascade (Isensee et al. 2021) trains ``3d_cascade_fullres`` on the image channels
plus the segmentation ``3d_lowres`` predicted, one-hot encoded: one channel per foreground
label value of the label map (background and the ignore label get none; a region-based
dataset's segmentation is a label map of ``regions_class_order`` values, so it gets one
channel per value there).

The previous stage's segmentation enters in the input's original geometry, as a
segmentation file or array the lowres stage exported, and is brought onto the cascade's
preprocessed grid exactly as preprocessing brings a label there (transpose, crop to the
case's nonzero box, resample with the plans' ``resampling["seg"]``). Training (from the
lowres cross-validation predictions) and inference (from the lowres prediction of a new image)
use this one path, so the second stage sees the same kind of input in both. nnU-Net v2 itself
resamples the lowres logits to the next stage's grid for training and the exported
segmentation for inference; segflow uses the second for both.

:func:`save_previous_stage` and :func:`load_previous_stage` store one case's label map as
``<case>.npy`` (memory-mapped when read, so training reads only its patches).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.fingerprint.cropping import bounding_box_to_slices
from segflow.io.atomic import atomic_path
from segflow.io.dataset import DatasetJson
from segflow.planning.plans import ConfigurationPlan
from segflow.preprocessing.resampling import resample_seg, separate_z_axis

__all__ = [
    "PREVIOUS_STAGE_SUFFIX",
    "load_previous_stage",
    "one_hot",
    "previous_stage_labels",
    "previous_stage_path",
    "save_previous_stage",
    "to_next_stage_grid",
    "with_previous_stage",
]

#: A case's previous-stage segmentation on the next stage's grid: ``<case>.npy``.
PREVIOUS_STAGE_SUFFIX = ".npy"


def previous_stage_labels(dataset: DatasetJson) -> tuple[int, ...]:
    """The label values that get a one-hot channel: every foreground value of the label map
    (the ignore label excluded), ascending."""
    if dataset.has_regions and dataset.regions_class_order is not None:
        values = {int(v) for v in dataset.regions_class_order}
    else:
        values = set(dataset.foreground_labels)
    values.discard(0)
    if dataset.ignore_label is not None:
        values.discard(int(dataset.ignore_label))
    return tuple(sorted(values))


def one_hot(
    segmentation: np.ndarray, labels: Sequence[int], dtype: np.dtype | type = np.float32
) -> np.ndarray:
    """``(len(labels), *spatial)``: channel ``i`` is 1 where ``segmentation == labels[i]``.

    Values not in ``labels`` (background, -1 outside the image) are 0 in every channel.
    """
    segmentation = np.asarray(segmentation)
    out = np.empty((len(labels), *segmentation.shape), dtype=dtype)
    for i, value in enumerate(labels):
        np.equal(segmentation, value, out=out[i], casting="unsafe")
    return out


def to_next_stage_grid(
    segmentation: np.ndarray, properties: Mapping[str, Any], configuration: ConfigurationPlan
) -> np.ndarray:
    """A label map in the input's original geometry, on a case's preprocessed grid.

    Args:
        segmentation: the previous stage's label map, with the shape and axis order of the
            input image (``properties["original_shape"]``).
        properties: the case's preprocessing properties for ``configuration`` (the cascade's
            stage): transposition, crop box, spacings and the shape after resampling.
        configuration: the configuration whose ``resampling["seg"]`` settings are used.

    Returns:
        the label map ``shape_after_resampling`` (transposed axis order), ``segmentation``'s
        dtype.

    Raises:
        ValueError: the segmentation does not have the input's shape.
    """
    segmentation = np.asarray(segmentation)
    expected = tuple(int(s) for s in properties["original_shape"])
    if segmentation.shape != expected:
        raise ValueError(
            f"previous-stage segmentation of shape {segmentation.shape} does not fit the "
            f"input image {expected}"
        )
    forward = [int(a) for a in properties["transpose_forward"]]
    transposed = segmentation.transpose(forward)
    cropped = transposed[bounding_box_to_slices(properties["bbox_used_for_cropping"])]
    settings = configuration.resampling["seg"]
    axis = separate_z_axis(
        properties["spacing"], properties["target_spacing"], settings["force_separate_z"]
    )
    resampled = resample_seg(
        np.ascontiguousarray(cropped)[None],
        properties["shape_after_resampling"],
        axis,
        settings["order"],
        settings["order_z"],
    )
    return resampled[0]


def with_previous_stage(
    data: np.ndarray, segmentation: np.ndarray, labels: Sequence[int]
) -> np.ndarray:
    """The image channels ``(c, *spatial)`` followed by the one-hot segmentation channels."""
    if tuple(segmentation.shape) != tuple(data.shape[1:]):
        raise ValueError(
            f"previous-stage segmentation {tuple(segmentation.shape)} does not fit the image "
            f"{tuple(data.shape[1:])}"
        )
    return np.concatenate([np.asarray(data), one_hot(segmentation, labels, data.dtype)], axis=0)


def previous_stage_path(folder: str | os.PathLike[str], case_id: str) -> Path:
    return Path(folder) / f"{case_id}{PREVIOUS_STAGE_SUFFIX}"


def save_previous_stage(
    folder: str | os.PathLike[str], case_id: str, segmentation: np.ndarray
) -> Path:
    """Store a case's label map on the next stage's grid (int8, or int16 for large values)."""
    segmentation = np.asarray(segmentation)
    dtype = np.int8 if segmentation.size == 0 or segmentation.max() <= 127 else np.int16
    path = previous_stage_path(folder, case_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, segmentation.astype(dtype, copy=False))
    return path


def load_previous_stage(
    folder: str | os.PathLike[str], case_id: str, shape: Sequence[int] | None = None
) -> np.ndarray:
    """A case's stored previous-stage label map, memory-mapped.

    Raises:
        SegflowError: the file is missing, unreadable, or not of the preprocessed ``shape``.
    """
    path = previous_stage_path(folder, case_id)
    if not path.is_file():
        raise SegflowError(
            f"no previous-stage segmentation of case '{case_id}'",
            [Problem(str(path), "does not exist: the previous stage's cross-validation did "
                     "not predict this case")],
        )  # fmt: skip
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise SegflowError(
            "cannot read a previous-stage segmentation", [Problem(str(path), str(err))]
        ) from None
    if shape is not None and tuple(array.shape) != tuple(int(s) for s in shape):
        raise SegflowError(
            "previous-stage segmentation does not fit the preprocessed case",
            [Problem(str(path), f"shape {tuple(array.shape)}, the case's is {tuple(shape)}; "
                     "write the previous stage's segmentations again")],
        )  # fmt: skip
    return array
