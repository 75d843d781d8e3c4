"""Export: a prediction on the preprocessed grid turned into a segmentation of the input.

Preprocessing transposed, cropped and resampled the case (see
:mod:`segflow.preprocessing.preprocessor`); export undoes that in reverse order:

1. resample the logits from the configuration's spacing back to the cropped shape at the
   case's own spacing, with the plans' ``resampling["probabilities"]`` settings (linear by
   default; anisotropic cases in-plane first and along the out-of-plane axis apart, decided
   as preprocessing decides);
2. turn them into probabilities: softmax over the classes, or a sigmoid per region for
   region-based training (the segmentation alone needs no softmax: argmax of the logits is
   the argmax of the probabilities);
3. put them into the uncropped shape: outside the crop box is background (probability 1
   for class 0, 0 for every region);
4. undo the transposition;
5. take the argmax, or, for regions, write each region's value (``regions_class_order``)
   where its probability exceeds 0.5, later regions over earlier ones.

The segmentation is written with exactly the size, spacing, origin and direction of the
input image, atomically. Probabilities, when asked for, are saved in the original geometry
as a compressed ``.npz`` (with the case's properties), for ensembling.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segflow.fingerprint.cropping import bounding_box_to_slices
from segflow.io.atomic import atomic_path
from segflow.io.dataset import DatasetJson
from segflow.io.image import ending_of, write_image
from segflow.planning.plans import ConfigurationPlan, Plans
from segflow.preprocessing.resampling import resample_data, separate_z_axis

__all__ = [
    "PROBABILITIES_SUFFIX",
    "export_prediction",
    "load_probabilities",
    "logits_to_probabilities",
    "logits_to_segmentation",
    "probabilities_path",
    "probabilities_to_segmentation",
    "resample_logits_to_cropped_shape",
    "segmentation_dtype",
    "uncrop_and_untranspose",
    "write_probabilities",
    "write_segmentation",
]

logger = logging.getLogger(__name__)

#: Probabilities of a prediction ``<case><ending>`` are saved as ``<case>.npz``.
PROBABILITIES_SUFFIX = ".npz"

Properties = Mapping[str, Any]


def _as_numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float32).numpy()
    return np.asarray(array, dtype=np.float32)


def _configuration(plans: Plans, configuration: str | ConfigurationPlan) -> ConfigurationPlan:
    if isinstance(configuration, ConfigurationPlan):
        return configuration
    return plans.configuration(configuration)


def _region_values(dataset: DatasetJson) -> tuple[int, ...] | None:
    """The value each region writes, or None without regions."""
    if not dataset.has_regions:
        return None
    if dataset.regions_class_order is None:
        raise ValueError("region-based labels need 'regions_class_order' in dataset.json")
    return tuple(dataset.regions_class_order)


def segmentation_dtype(dataset: DatasetJson) -> np.dtype:
    """uint8 when every label value fits, else uint16."""
    return np.dtype(np.uint8 if max(dataset.label_values) <= 255 else np.uint16)


def resample_logits_to_cropped_shape(
    logits: torch.Tensor | np.ndarray, properties: Properties, configuration: ConfigurationPlan
) -> np.ndarray:
    """Resample logits from the preprocessed grid to the cropped shape at the case's spacing.

    Args:
        logits: ``(C, *shape_after_resampling)``, transposed axis order.
        properties: the case's preprocessing properties.
        configuration: the configuration whose ``resampling["probabilities"]`` is used.

    Returns:
        float32 ``(C, *shape_after_cropping)``.

    Raises:
        ValueError: the logits do not have the preprocessed shape.
    """
    logits = _as_numpy(logits)
    expected = tuple(properties["shape_after_resampling"])
    if tuple(logits.shape[1:]) != expected:
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} do not fit the preprocessed case "
            f"{expected} (channels first)"
        )
    settings = configuration.resampling["probabilities"]
    current = [float(s) for s in properties["target_spacing"]]
    original = [float(s) for s in properties["spacing"]]
    axis = separate_z_axis(current, original, settings["force_separate_z"])
    return resample_data(
        logits, properties["shape_after_cropping"], axis, settings["order"], settings["order_z"]
    )


def logits_to_probabilities(logits: torch.Tensor | np.ndarray, dataset: DatasetJson) -> np.ndarray:
    """Softmax over the classes (axis 0), or a sigmoid per region; float32."""
    tensor = torch.from_numpy(_as_numpy(logits))
    if dataset.has_regions:
        return torch.sigmoid(tensor).numpy()
    return torch.softmax(tensor, dim=0).numpy()


def probabilities_to_segmentation(
    probabilities: np.ndarray, dataset: DatasetJson, *, are_logits: bool = False
) -> np.ndarray:
    """The label map of class probabilities (argmax) or region probabilities (> 0.5).

    Args:
        probabilities: ``(C, *spatial)``: one channel per class, or per region in
            ``dataset.json`` order.
        dataset: the labels (and ``regions_class_order`` for regions).
        are_logits: ``probabilities`` are logits (a region is then on where its logit is
            positive, the same as its sigmoid exceeding 0.5).

    Returns:
        the label map ``spatial``, of :func:`segmentation_dtype`.
    """
    dtype = segmentation_dtype(dataset)
    values = _region_values(dataset)
    if values is None:
        return np.argmax(probabilities, axis=0).astype(dtype, copy=False)
    if len(values) != probabilities.shape[0]:
        raise ValueError(
            f"{probabilities.shape[0]} region channels, but regions_class_order names {len(values)}"
        )
    threshold = 0.0 if are_logits else 0.5
    segmentation = np.zeros(probabilities.shape[1:], dtype=dtype)
    for channel, value in zip(probabilities, values, strict=True):
        segmentation[channel > threshold] = value
    return segmentation


def _axes_back(properties: Properties) -> list[int]:
    forward = [int(a) for a in properties["transpose_forward"]]
    return [int(a) for a in np.argsort(forward)]


def uncrop_and_untranspose(
    array: np.ndarray, properties: Properties, *, fill: Sequence[float] | float = 0
) -> np.ndarray:
    """Put a cropped ``(C, *spatial)`` or ``spatial`` array into the uncropped image and undo
    the transposition.

    Args:
        array: the array in the cropped shape, transposed axis order.
        properties: the case's preprocessing properties.
        fill: the value outside the crop box; one per channel for a channel-first array.

    Returns:
        the array in the shape and axis order of the input image.
    """
    bbox = properties["bbox_used_for_cropping"]
    shape = [int(s) for s in properties["shape_before_cropping"]]
    leading = array.shape[: array.ndim - len(shape)]
    full = np.empty((*leading, *shape), dtype=array.dtype)
    if leading and np.ndim(fill):
        full[...] = np.asarray(fill, dtype=array.dtype).reshape(-1, *([1] * len(shape)))
    else:
        full[...] = fill
    full[(Ellipsis, *bounding_box_to_slices(bbox))] = array
    lead_axes = list(range(len(leading)))
    return full.transpose(*lead_axes, *(a + len(leading) for a in _axes_back(properties)))


def logits_to_segmentation(
    logits: torch.Tensor | np.ndarray,
    properties: Properties,
    plans: Plans,
    configuration: str | ConfigurationPlan,
    dataset: DatasetJson,
    *,
    return_probabilities: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The segmentation (and probabilities) in the geometry of the input image.

    Args:
        logits: ``(C, *shape_after_resampling)`` from :func:`~.sliding_window.predict_logits`.
        properties: the case's preprocessing properties.
        plans: the plans.
        configuration: the configuration (name or plan) the logits were predicted with.
        dataset: the labels (classes or regions).
        return_probabilities: also return the probabilities.

    Returns:
        the label map ``original_shape`` (``(z, y, x)``, z == 1 for 2D images), and with
        ``return_probabilities`` the float32 probabilities ``(C, *original_shape)``.
    """
    conf = _configuration(plans, configuration)
    resampled = resample_logits_to_cropped_shape(logits, properties, conf)
    regions = dataset.has_regions
    if return_probabilities:
        probabilities = logits_to_probabilities(resampled, dataset)
        del resampled
        segmentation = probabilities_to_segmentation(probabilities, dataset)
    else:
        segmentation = probabilities_to_segmentation(resampled, dataset, are_logits=True)
        del resampled
    segmentation = uncrop_and_untranspose(segmentation, properties)
    if list(segmentation.shape) != [int(s) for s in properties["original_shape"]]:
        raise ValueError(  # pragma: no cover - properties that contradict themselves
            f"exported shape {segmentation.shape} differs from the input's "
            f"{properties['original_shape']}"
        )
    if not return_probabilities:
        return segmentation
    # Outside the crop box: background for classes, nothing for regions.
    fill = np.zeros(probabilities.shape[0], dtype=np.float32)
    if not regions:
        fill[0] = 1.0
    return segmentation, uncrop_and_untranspose(probabilities, properties, fill=fill)


def write_segmentation(
    segmentation: np.ndarray, properties: Properties, output_file: str | os.PathLike[str]
) -> Path:
    """Write a label map ``original_shape`` with the input image's geometry, atomically.

    The format follows ``output_file``'s ending; a 2D input gets a 2D file.

    Raises:
        ValueError: the array does not have the input's shape, or the ending is unknown.
    """
    output_file = Path(output_file)
    if ending_of(output_file) is None:
        raise ValueError(f"{output_file}: unsupported file ending for a segmentation")
    shape = [int(s) for s in properties["original_shape"]]
    if list(segmentation.shape) != shape:
        raise ValueError(f"segmentation of shape {segmentation.shape}; the input has {shape}")
    spacing = tuple(float(s) for s in properties["original_spacing"])
    array = segmentation
    if properties["is_2d"]:
        array, spacing = segmentation[0], spacing[1:]
    origin, direction = tuple(properties["origin"]), tuple(properties["direction"])
    with atomic_path(output_file) as tmp:
        write_image(tmp, np.ascontiguousarray(array), spacing, origin, direction)
    return output_file


def write_probabilities(
    probabilities: np.ndarray, properties: Properties, output_file: str | os.PathLike[str]
) -> Path:
    """Save probabilities ``(C, *original_shape)`` and the case's properties to a compressed
    ``.npz`` (keys ``probabilities``, ``properties`` as JSON text), atomically."""
    output_file = Path(output_file)
    with atomic_path(output_file) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            probabilities=np.asarray(probabilities, dtype=np.float32),
            properties=np.asarray(json.dumps(dict(properties))),
        )
    return output_file


def load_probabilities(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read what :func:`write_probabilities` wrote: ``(probabilities, properties)``."""
    with np.load(path, allow_pickle=False) as stored:
        return stored["probabilities"], json.loads(str(stored["properties"]))


def probabilities_path(output_file: str | os.PathLike[str]) -> Path:
    """Where the probabilities of the segmentation ``output_file`` go: ``<case>.npz``."""
    output_file = Path(output_file)
    ending = ending_of(output_file) or output_file.suffix
    return output_file.with_name(output_file.name[: -len(ending)] + PROBABILITIES_SUFFIX)


def export_prediction(
    logits: torch.Tensor | np.ndarray,
    properties: Properties,
    plans: Plans,
    configuration: str | ConfigurationPlan,
    dataset: DatasetJson,
    output_file: str | os.PathLike[str],
    *,
    save_probabilities: bool = False,
) -> dict[str, Path]:
    """Write the segmentation of ``logits`` in the input's geometry (and its probabilities).

    Args:
        logits: ``(C, *shape_after_resampling)``.
        properties: the case's preprocessing properties.
        plans: the plans.
        configuration: the configuration the logits were predicted with.
        dataset: the labels.
        output_file: the segmentation file, e.g. ``case_001.nii.gz``.
        save_probabilities: also save ``case_001.npz`` beside it
            (:func:`write_probabilities`).

    Returns:
        ``{"segmentation": path}``, plus ``"probabilities"`` when saved.
    """
    output_file = Path(output_file)
    result = logits_to_segmentation(
        logits, properties, plans, configuration, dataset,
        return_probabilities=save_probabilities,
    )  # fmt: skip
    written: dict[str, Path] = {}
    if save_probabilities:
        segmentation, probabilities = result
        written["probabilities"] = write_probabilities(
            probabilities, properties, probabilities_path(output_file)
        )
        del probabilities
    else:
        segmentation = result
    written["segmentation"] = write_segmentation(segmentation, properties, output_file)
    return written
