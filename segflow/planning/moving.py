"""Moving plans from one dataset to another (nnU-Net v2's ``nnUNetv2_move_plans_between_datasets``).

A network pretrained on dataset A can only be fine-tuned on dataset B if B is trained with A's
topology. :func:`move_plans` keeps what decides the network and its input (per configuration:
network, patch size, batch size, target spacing, batch Dice, resampling; the axis order and the
planner's record) and re-derives from B's ``dataset.json`` and fingerprint what describes B's
data: its name, each channel's normalization scheme and mask use, the foreground intensity
properties (used by CT normalization), and the median spacing and shapes. The number of output
classes is not in the plans (the trainer takes it from ``dataset.json``; the heads are not
transferred), so A and B may have different labels.

What cannot move is refused: another number of input channels (the first convolution's
weights have one slice per channel), or 3D plans for 2D data and the reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from segflow import __version__
from segflow.errors import Problem, SegflowError
from segflow.io.dataset import DatasetJson
from segflow.planning.normalization import normalization_schemes, use_mask_for_norm
from segflow.planning.planner import _check_fingerprint
from segflow.planning.plans import Plans
from segflow.planning.spacing import (
    fullres_target_spacing,
    median_resampled_shape,
    transpose_axes,
)

__all__ = ["move_plans"]

logger = logging.getLogger(__name__)


def _is_2d(fingerprint: Mapping[str, Any]) -> bool:
    """Whether the planner would plan ``fingerprint``'s data as 2D (one slice at the median)."""
    spacings, shapes = fingerprint["spacings"], fingerprint["shapes_after_crop"]
    target = fullres_target_spacing(spacings, shapes)
    forward, _ = transpose_axes(target)
    return (
        bool(fingerprint.get("is_2d"))
        or median_resampled_shape(spacings, shapes, target)[forward][0] == 1
    )


def _problems(source: Plans, dataset: DatasetJson, fingerprint: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for name in source.configuration_names:
        channels = len(source.configuration(name).normalization_schemes)
        if channels != dataset.num_channels:
            problems.append(
                Problem(
                    f"configurations.{name}",
                    f"planned for {channels} input channels, the target dataset has "
                    f"{dataset.num_channels}: a pretrained network cannot take other channels",
                )
            )
            break
    properties = fingerprint["foreground_intensity_properties_per_channel"]
    if len(properties) != dataset.num_channels:
        problems.append(
            Problem(
                "fingerprint",
                f"intensity properties of {len(properties)} channels, dataset.json names "
                f"{dataset.num_channels}: the fingerprint is of another dataset",
            )
        )
    source_3d = any(source.configuration(n).ndim == 3 for n in source.configuration_names)
    target_2d = _is_2d(fingerprint)
    if source_3d and target_2d:
        problems.append(
            Problem("fingerprint", "the target data is 2D, the source plans are for 3D data")
        )
    elif not source_3d and not target_2d:
        problems.append(
            Problem("fingerprint", "the target data is 3D, the source plans are for 2D data")
        )
    return problems


def move_plans(
    source: Plans, dataset: DatasetJson, fingerprint: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``source`` plans made to fit the dataset of ``dataset`` and ``fingerprint``.

    Args:
        source: the plans of the dataset the network was (or will be) pretrained on.
        dataset: the target's parsed ``dataset.json``.
        fingerprint: the target's ``fingerprint.json``.

    Returns:
        The content of the target's ``plans.json``; ``moved_from`` names the source dataset.

    Raises:
        SegflowError: listing everything that cannot move (input channels, 2D against 3D)
            or that the fingerprint lacks.
    """
    _check_fingerprint(fingerprint)
    problems = _problems(source, dataset, fingerprint)
    if problems:
        raise SegflowError(
            f"the plans of {source.dataset_name} cannot move to {dataset.name}", problems
        )
    plans = source.to_dict()
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=np.float64)
    forward = list(source.transpose_forward)
    backward = list(source.transpose_backward)
    own_forward, _ = transpose_axes(fullres_target_spacing(spacings, shapes))
    if own_forward != forward:
        logger.warning(
            "the source plans put axis %d first, the target's own plans would put axis %d "
            "first (its coarsest); the source's order is kept so that the network fits",
            forward[0],
            own_forward[0],
        )
    schemes = normalization_schemes(dataset.channel_names)
    mask = use_mask_for_norm(schemes, fingerprint["median_relative_size_after_cropping"])
    original_spacing = np.median(spacings, 0)
    for conf in plans["configurations"].values():
        conf["normalization_schemes"] = list(schemes)
        conf["use_mask_for_norm"] = list(mask)
        spacing = [float(s) for s in conf["spacing"]]
        if len(spacing) == 2:  # 2d: the first (transposed) axis is not resampled
            spacing = [float(original_spacing[forward[0]]), *spacing]
        median = median_resampled_shape(spacings, shapes, np.asarray(spacing)[backward])[forward]
        conf["median_image_size_in_voxels"] = [float(m) for m in median[-len(conf["spacing"]) :]]
    plans.update(
        segflow_version=__version__,
        dataset_name=str(fingerprint.get("dataset_name") or dataset.name),
        original_median_spacing_after_transp=[float(s) for s in original_spacing[forward]],
        original_median_shape_after_transp=[round(s) for s in np.median(shapes, 0)[forward]],
        foreground_intensity_properties_per_channel={
            str(k): dict(v)
            for k, v in fingerprint["foreground_intensity_properties_per_channel"].items()
        },
        moved_from={"dataset_name": source.dataset_name},
    )
    logger.info(
        "moved the plans of %s (%s) to %s",
        source.dataset_name,
        ", ".join(source.configuration_names),
        plans["dataset_name"],
    )
    return plans
