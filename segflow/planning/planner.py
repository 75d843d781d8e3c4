"""Plan the experiment: which configurations exist and everything each one needs.

``plan_experiment`` turns a dataset fingerprint into the content of ``plans.json``, making
the same decisions as nnU-Net v2 (2.8.1) makes with the same fingerprint:

- ``3d_fullres`` at the target spacing (:func:`~segflow.planning.spacing.fullres_target_spacing`),
  unless the data is 2D (the median resampled shape has a single slice).
- ``3d_lowres`` + ``3d_cascade_fullres`` when the fullres patch covers less than a quarter of
  the median image and a coarser spacing that lets it cover a quarter shrinks the image at
  least twofold.
- ``2d`` always, on the in-plane axes of the fullres spacing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segflow import __version__
from segflow.errors import Problem, SegflowError
from segflow.io.dataset import DatasetJson
from segflow.planning.configuration import ConfigurationDecision, plan_configuration
from segflow.planning.normalization import normalization_schemes, use_mask_for_norm
from segflow.planning.presets import (
    FEATUREMAP_MIN_EDGE_LENGTH,
    MIN_BATCH_SIZE,
    PLAIN_UNET,
    REFERENCE_BATCH_SIZE_2D,
    REFERENCE_BATCH_SIZE_3D,
    PlannerPreset,
    get_preset,
)
from segflow.planning.spacing import (
    ANISOTROPY_THRESHOLD,
    fullres_target_spacing,
    median_resampled_shape,
    transpose_axes,
)

__all__ = ["LOWRES_CREATION_THRESHOLD", "LOWRES_SPACING_INCREASE_FACTOR", "plan_experiment"]

logger = logging.getLogger(__name__)

NNUNET_REFERENCE_VERSION = "2.8.1"
# A lowres stage is needed when the fullres patch holds less than this fraction of the
# median image's voxels: the network would never see enough context in one patch.
LOWRES_CREATION_THRESHOLD = 0.25
# Each step of the lowres search makes the spacing this much coarser (a small factor finds
# the finest spacing that works, at the price of more planning steps).
LOWRES_SPACING_INCREASE_FACTOR = 1.03
# The lowres image must be at least this many times smaller (in voxels) than the fullres one;
# otherwise the cascade would barely differ from 3d_fullres and it is dropped.
LOWRES_MIN_SHRINK = 2
_MAX_LOWRES_STEPS = 10_000  # the search always ends long before; this only guards bad input

# nnU-Net's resampling: third-order spline for images, linear for segmentations (one-hot)
# and probabilities; along a separately treated (anisotropic) z axis, nearest neighbour.
# force_separate_z None lets preprocessing decide per case from the anisotropy threshold.
_RESAMPLING = {
    "data": {"order": 3, "order_z": 0, "force_separate_z": None},
    "seg": {"order": 1, "order_z": 0, "force_separate_z": None},
    "probabilities": {"order": 1, "order_z": 0, "force_separate_z": None},
}

_REQUIRED_FINGERPRINT_KEYS = (
    "spacings",
    "shapes_after_crop",
    "median_relative_size_after_cropping",
    "foreground_intensity_properties_per_channel",
)


def _check_fingerprint(fingerprint: Mapping[str, Any]) -> None:
    where = "fingerprint"
    problems = [
        Problem(where, f"missing required key '{key}'")
        for key in _REQUIRED_FINGERPRINT_KEYS
        if key not in fingerprint
    ]
    if problems:
        raise SegflowError("the fingerprint cannot be planned from", problems)
    spacings, shapes = fingerprint["spacings"], fingerprint["shapes_after_crop"]
    if not isinstance(spacings, list | tuple) or not isinstance(shapes, list | tuple):
        raise SegflowError(
            "the fingerprint cannot be planned from",
            [Problem(where, "'spacings' and 'shapes_after_crop' must be lists of [z, y, x]")],
        )
    if not spacings or len(spacings) != len(shapes):
        problems.append(
            Problem(
                where,
                f"'spacings' ({len(spacings)}) and 'shapes_after_crop' ({len(shapes)}) must "
                "list the same, non-zero number of cases",
            )
        )

    def numbers(values: Any, kind: type | tuple[type, ...]) -> bool:
        return (
            isinstance(values, list | tuple)
            and len(values) == 3
            and all(isinstance(v, kind) and not isinstance(v, bool) and v > 0 for v in values)
        )

    for i, (sp, sh) in enumerate(zip(spacings, shapes, strict=False)):
        if not numbers(sp, (int, float)):
            problems.append(
                Problem(f"{where}:spacings/{i}", f"expected 3 positive numbers, got {sp}")
            )
        if not numbers(sh, int):
            problems.append(
                Problem(f"{where}:shapes_after_crop/{i}", f"expected 3 positive integers, got {sh}")
            )
    if problems:
        raise SegflowError("the fingerprint cannot be planned from", problems)


def _network_section(decision: ConfigurationDecision, preset: PlannerPreset) -> dict[str, Any]:
    ndim = len(decision.spacing)
    n_stages = decision.topology.n_stages
    blocks_key = "n_conv_per_stage" if preset.architecture == PLAIN_UNET else "n_blocks_per_stage"
    return {
        "architecture": preset.architecture,
        "n_stages": n_stages,
        "features_per_stage": list(decision.features_per_stage),
        "kernel_sizes": [list(k) for k in decision.topology.kernel_sizes],
        "strides": [list(s) for s in decision.topology.strides],
        blocks_key: list(decision.blocks_per_stage_encoder),
        "n_conv_per_stage_decoder": list(decision.blocks_per_stage_decoder),
        "conv_op": f"Conv{ndim}d",
        "conv_bias": True,
        "norm_op": f"InstanceNorm{ndim}d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "nonlin": "LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def _configuration_section(
    name: str,
    decision: ConfigurationDecision,
    preset: PlannerPreset,
    schemes: list[str],
    mask_for_norm: list[bool],
    batch_dice: bool,
) -> dict[str, Any]:
    return {
        "data_identifier": preset.data_identifier(name),
        "spacing": [float(s) for s in decision.spacing],
        "patch_size": [int(p) for p in decision.patch_size],
        "batch_size": decision.batch_size,
        "median_image_size_in_voxels": [float(m) for m in decision.median_shape],
        "normalization_schemes": list(schemes),
        "use_mask_for_norm": list(mask_for_norm),
        "resampling": {k: dict(v) for k, v in _RESAMPLING.items()},
        "batch_dice": batch_dice,
        "network": _network_section(decision, preset),
        "estimated_feature_map_voxels": decision.estimate,
    }


def _plan_lowres(
    fullres: ConfigurationDecision,
    preset: PlannerPreset,
    gpu_memory_gb: float,
    num_classes: int,
    num_training: int,
) -> ConfigurationDecision | None:
    """Search the finest coarser spacing at which the patch covers a quarter of the image."""
    fullres_spacing = np.asarray(fullres.spacing, dtype=np.float64)
    fullres_median = np.asarray(fullres.median_shape, dtype=np.float64)
    lowres_spacing = fullres_spacing.copy()
    median_voxels = np.prod(fullres_median, dtype=np.float64)
    patch_voxels = np.prod(fullres.patch_size, dtype=np.float64)
    lowres = None
    steps = 0
    while patch_voxels / median_voxels < LOWRES_CREATION_THRESHOLD:
        steps += 1
        if steps > _MAX_LOWRES_STEPS:
            raise SegflowError("the 3d_lowres spacing search did not converge")
        # Coarsen the anisotropic (finer by more than 2x) axes first until every axis is
        # within a factor 2 of the coarsest; then coarsen all axes together.
        ratio = max(lowres_spacing) / lowres_spacing
        if np.any(ratio > 2):
            lowres_spacing[ratio > 2] *= LOWRES_SPACING_INCREASE_FACTOR
        else:
            lowres_spacing *= LOWRES_SPACING_INCREASE_FACTOR
        median_at_lowres = fullres_spacing / lowres_spacing * fullres_median
        median_voxels = np.prod(median_at_lowres, dtype=np.float64)
        lowres = plan_configuration(
            lowres_spacing.copy(),
            tuple(round(m) for m in median_at_lowres),
            preset,
            gpu_memory_gb,
            num_classes,
            float(median_voxels * num_training),
        )
        patch_voxels = np.prod(lowres.patch_size, dtype=np.int64)
    if np.prod(fullres_median, dtype=np.float64) / median_voxels < LOWRES_MIN_SHRINK:
        if lowres is not None:
            logger.info(
                "no 3d_lowres: at spacing %s the median image is less than %dx smaller than at "
                "3d_fullres",
                [round(float(s), 4) for s in lowres.spacing],
                LOWRES_MIN_SHRINK,
            )
        return None
    return lowres


def _planner_section(preset: PlannerPreset, gpu_memory_gb: float) -> dict[str, Any]:
    return {
        "name": preset.nnunet_planner,
        "plans_name": preset.plans_name,
        "nnunet_reference_version": NNUNET_REFERENCE_VERSION,
        "architecture": preset.architecture,
        "reference_gpu_memory_gb": preset.reference_gpu_memory_gb,
        "reference_value_2d": preset.reference_value_2d,
        "reference_value_3d": preset.reference_value_3d,
        "budget_2d": preset.reference_value(2, gpu_memory_gb),
        "budget_3d": preset.reference_value(3, gpu_memory_gb),
        "reference_batch_size_2d": REFERENCE_BATCH_SIZE_2D,
        "reference_batch_size_3d": REFERENCE_BATCH_SIZE_3D,
        "min_batch_size": MIN_BATCH_SIZE,
        "max_dataset_covered": preset.max_dataset_covered,
        "base_num_features": preset.base_num_features,
        "max_features_2d": preset.max_features_2d,
        "max_features_3d": preset.max_features_3d,
        "featuremap_min_edge_length": FEATUREMAP_MIN_EDGE_LENGTH,
        "anisotropy_threshold": ANISOTROPY_THRESHOLD,
        "lowres_creation_threshold": LOWRES_CREATION_THRESHOLD,
        "lowres_spacing_increase_factor": LOWRES_SPACING_INCREASE_FACTOR,
    }


def _with_features(
    preset: PlannerPreset, base_features: int | None, max_features: int | None
) -> PlannerPreset:
    """``preset`` with other network widths, after checking them."""
    problems = [
        f"{name} must be a positive integer, got {value!r}"
        for name, value in (("base_features", base_features), ("max_features", max_features))
        if value is not None and (type(value) is not int or value < 1)
    ]
    if not problems and None not in (base_features, max_features) and max_features < base_features:
        problems.append(f"max_features ({max_features}) is below base_features ({base_features})")
    if problems:
        raise SegflowError("invalid network widths: " + "; ".join(problems))
    changes: dict[str, int] = {}
    if base_features is not None:
        changes["base_num_features"] = base_features
    if max_features is not None:
        changes["max_features_2d"] = changes["max_features_3d"] = max_features
    return dataclasses.replace(preset, **changes) if changes else preset


def plan_experiment(
    fingerprint: Mapping[str, Any],
    dataset: DatasetJson,
    preset: str = "default",
    gpu_memory_target_gb: float | None = None,
    seed: int = 0,
    base_features: int | None = None,
    max_features: int | None = None,
) -> dict[str, Any]:
    """Plan every configuration of an experiment from the dataset fingerprint.

    Args:
        fingerprint: the content of ``fingerprint.json`` (spacings, shapes after cropping,
            median relative size after cropping, foreground intensities per channel).
        dataset: the parsed ``dataset.json``.
        preset: ``default``, ``resenc_m``, ``resenc_l`` or ``resenc_xl``.
        gpu_memory_target_gb: GPU memory to plan for; ``None`` takes the preset's.
        seed: recorded in the plans (planning itself draws no random numbers).
        base_features: channels of the first stage; ``None`` keeps nnU-Net's 32.
        max_features: cap on the channels of every stage, 2D and 3D; ``None`` keeps
            nnU-Net's 512 (2D) and 320 (3D).

    Returns:
        The content of ``plans.json``.

    Raises:
        SegflowError: unknown preset, a non-positive memory target or feature count, or a
            fingerprint that lacks what planning needs.
    """
    planner = _with_features(get_preset(preset), base_features, max_features)
    if gpu_memory_target_gb is None:
        gpu_memory_gb = float(planner.default_gpu_memory_gb)
    elif (
        isinstance(gpu_memory_target_gb, bool)
        or not isinstance(gpu_memory_target_gb, int | float)
        or not gpu_memory_target_gb > 0
    ):
        raise SegflowError(
            f"the GPU memory target must be a positive number of GB, got {gpu_memory_target_gb!r}"
        )
    else:
        gpu_memory_gb = float(gpu_memory_target_gb)
    _check_fingerprint(fingerprint)

    spacings: Sequence[Sequence[float]] = fingerprint["spacings"]
    shapes: Sequence[Sequence[int]] = fingerprint["shapes_after_crop"]
    # nnU-Net counts every key of "labels" (an ignore label included) as an output channel
    # in the memory estimate; we do the same so that the estimates agree.
    num_classes = len(dataset.labels)
    # Like nnU-Net, the dataset size behind the batch cap is numTraining from dataset.json
    # (validation checks that it matches the cases on disk).
    num_training = dataset.num_training

    target = fullres_target_spacing(spacings, shapes)
    forward, backward = transpose_axes(target)
    fullres_spacing = target[forward]
    median_shape = median_resampled_shape(spacings, shapes, target)[forward]
    # The dataset size the batch cap refers to: training cases times the median volume.
    dataset_voxels = float(np.prod(median_shape, dtype=np.float64) * num_training)

    schemes = normalization_schemes(dataset.channel_names)
    mask_for_norm = use_mask_for_norm(schemes, fingerprint["median_relative_size_after_cropping"])

    def section(name: str, decision: ConfigurationDecision, batch_dice: bool) -> dict[str, Any]:
        return _configuration_section(name, decision, planner, schemes, mask_for_norm, batch_dice)

    configurations: dict[str, dict[str, Any]] = {}
    fullres = lowres = None
    # 2D datasets are read as volumes with one slice at spacing 999: that axis is the
    # coarsest, stays first, and the median shape has a single slice there. No 3D
    # configuration makes sense, so they get only 2d (ISBI 2012: just "2d" in nnU-Net too).
    if median_shape[0] != 1:
        fullres = plan_configuration(
            fullres_spacing, median_shape, planner, gpu_memory_gb, num_classes, dataset_voxels
        )
        lowres = _plan_lowres(fullres, planner, gpu_memory_gb, num_classes, num_training)

    # The 2d configuration slices the transposed volume along its first (coarsest) axis; its
    # batch cap still refers to the 3D dataset volume.
    plan_2d = plan_configuration(
        fullres_spacing[1:], median_shape[1:], planner, gpu_memory_gb, num_classes, dataset_voxels
    )
    # Batch dice (dice over the whole batch as one volume) suits configurations whose patches
    # are small parts of an image; the lowres stage sees nearly whole images and uses per-
    # sample dice, and so does 3d_fullres when it is the only 3D configuration.
    configurations["2d"] = section("2d", plan_2d, batch_dice=True)
    if fullres is not None:
        configurations["3d_fullres"] = section("3d_fullres", fullres, batch_dice=lowres is not None)
    if lowres is not None:
        configurations["3d_lowres"] = section("3d_lowres", lowres, batch_dice=False)
        configurations["3d_lowres"]["next_stage"] = "3d_cascade_fullres"
        cascade = section("3d_fullres", fullres, batch_dice=True)
        cascade["previous_stage"] = "3d_lowres"
        configurations["3d_cascade_fullres"] = cascade

    original_spacing = np.median(np.asarray(spacings, dtype=np.float64), 0)[forward]
    original_shape = np.median(np.asarray(shapes, dtype=np.float64), 0)[forward]
    plans = {
        "segflow_version": __version__,
        "dataset_name": str(fingerprint.get("dataset_name") or dataset.name),
        "preset": planner.name,
        "gpu_memory_target_gb": gpu_memory_gb,
        "seed": int(seed),
        "planner": _planner_section(planner, gpu_memory_gb),
        "transpose_forward": [int(i) for i in forward],
        "transpose_backward": [int(i) for i in backward],
        "original_median_spacing_after_transp": [float(s) for s in original_spacing],
        "original_median_shape_after_transp": [round(s) for s in original_shape],
        "foreground_intensity_properties_per_channel": {
            str(k): dict(v)
            for k, v in fingerprint["foreground_intensity_properties_per_channel"].items()
        },
        "configurations": configurations,
    }
    logger.info(
        "planned %s with preset %s (%s GB): %s",
        plans["dataset_name"],
        planner.name,
        gpu_memory_gb,
        ", ".join(configurations),
    )
    return plans
