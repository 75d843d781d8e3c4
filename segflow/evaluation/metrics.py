"""Segmentation metrics of one case: overlap, surface distances and volumes per class.

For each foreground class (or region) of a reference and a predicted label map:

* ``dice`` = 2 TP / (2 TP + FP + FN), ``iou`` = TP / (TP + FP + FN);
* ``precision`` = TP / (TP + FP), ``recall`` = TP / (TP + FN);
* ``hd95``: the 95th percentile of the distances from every surface voxel of either mask to the
  nearest surface voxel of the other (both directions pooled), in mm;
* ``assd``: the average symmetric surface distance, the mean of the two directed mean surface
  distances, in mm;
* ``reference_volume`` and ``predicted_volume`` in mm³ (voxel count times the voxel volume),
  and the voxel counts ``tp``, ``fp``, ``fn``.

Distances use the voxel spacing, so anisotropic images are measured in mm. A surface voxel is
a voxel of the mask with a face neighbour outside it (the image border counts as outside).

Edge cases (also in the user documentation):

* reference and prediction both empty: ``dice``, ``iou``, ``precision`` and ``recall`` are
  1 and both distances 0 (the prediction is right);
* exactly one of them empty: ``dice`` and ``iou`` are 0; ``precision`` (no prediction) or
  ``recall`` (no reference) is undefined and NaN, the other 0; the surface distances are
  undefined and NaN. Means over cases skip NaN (``numpy.nanmean``), so report the counts too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["METRICS", "case_metrics", "class_metrics", "region_mask", "surface_distances"]

#: Every metric :func:`case_metrics` reports per class, in order.
METRICS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "hd95",
    "assd",
    "reference_volume",
    "predicted_volume",
    "tp",
    "fp",
    "fn",
)


def region_mask(labels: np.ndarray, values: int | Sequence[int]) -> np.ndarray:
    """Voxels whose label is ``values`` (one label) or any of them (a region)."""
    if isinstance(values, (int, np.integer)):
        return labels == values
    return np.isin(labels, list(values))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the border counts as outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def surface_distances(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each surface voxel of ``prediction`` to the nearest surface voxel
    of ``reference``, and the other way round. Both masks must be non-empty."""
    if not reference.any() or not prediction.any():
        raise ValueError("surface distances need two non-empty masks")
    # Work in the bounding box of both masks, one voxel larger on each side so that the
    # distance transform sees the background around them.
    both = np.argwhere(reference | prediction)
    low = np.maximum(both.min(axis=0) - 1, 0)
    high = np.minimum(both.max(axis=0) + 2, reference.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    ref_surface = _surface(reference[box])
    pred_surface = _surface(prediction[box])
    sampling = [float(s) for s in spacing]
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
    return to_ref[pred_surface], to_pred[ref_surface]


def _ratio(numerator: int, denominator: int, both_empty: bool) -> float:
    if denominator:
        return numerator / denominator
    return 1.0 if both_empty else float("nan")


def class_metrics(
    reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one pair of boolean masks."""
    if reference.shape != prediction.shape:
        raise ValueError(
            f"reference and prediction differ in shape: {reference.shape} vs {prediction.shape}"
        )
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {list(spacing)} does not fit a {reference.ndim}D image")
    tp = int(np.count_nonzero(reference & prediction))
    fp = int(np.count_nonzero(prediction)) - tp
    fn = int(np.count_nonzero(reference)) - tp
    empty = tp + fp + fn == 0
    voxel = float(np.prod([float(s) for s in spacing]))
    if tp + fn and tp + fp:
        pred_to_ref, ref_to_pred = surface_distances(reference, prediction, spacing)
        hd95 = float(np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95))
        assd = float((pred_to_ref.mean() + ref_to_pred.mean()) / 2)
    else:
        hd95 = assd = 0.0 if empty else float("nan")
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "iou": _ratio(tp, tp + fp + fn, empty),
        "precision": _ratio(tp, tp + fp, empty),
        "recall": _ratio(tp, tp + fn, empty),
        "hd95": hd95,
        "assd": assd,
        "reference_volume": (tp + fn) * voxel,
        "predicted_volume": (tp + fp) * voxel,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def case_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    spacing: Sequence[float],
    classes: Mapping[str, int | Sequence[int]],
) -> dict[str, dict[str, Any]]:
    """Metrics of every class of one case.

    Args:
        reference: the reference label map.
        prediction: the predicted label map, same shape.
        spacing: voxel size in mm along the array's axes (as ``reference.shape``).
        classes: name -> label value, or a region's label values (region-based datasets).

    Returns:
        ``{class name: {metric: value}}`` with the metrics of :data:`METRICS`.
    """
    return {
        name: class_metrics(
            region_mask(reference, values), region_mask(prediction, values), spacing
        )
        for name, values in classes.items()
    }
