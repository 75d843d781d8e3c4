"""Plan one configuration: patch size, network topology and batch size for a spacing.

The patch starts as large as sensible (the aspect ratio of the voxel spacing, scaled to a
fixed volume, clipped to the median image) and shrinks one axis at a time until the
network's feature maps fit the memory budget; whatever budget is left raises the batch size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segflow.errors import SegflowError
from segflow.planning.memory import feature_map_voxels
from segflow.planning.presets import (
    BASE_NUM_FEATURES,
    FEATUREMAP_MIN_EDGE_LENGTH,
    MAX_FEATURES_2D,
    MAX_FEATURES_3D,
    MIN_BATCH_SIZE,
    REFERENCE_BATCH_SIZE_2D,
    REFERENCE_BATCH_SIZE_3D,
    PlannerPreset,
)
from segflow.planning.topology import Topology, network_topology, shrink_patch_axis

__all__ = [
    "ConfigurationDecision",
    "features_per_stage",
    "initial_patch_size",
    "plan_configuration",
]

logger = logging.getLogger(__name__)

# The starting patch has the volume of a 256^3 cube (3D) or a 2048^2 square (2D), certainly
# larger than any memory target allows, before clipping to the median image.
INITIAL_PATCH_EDGE_3D = 256
INITIAL_PATCH_EDGE_2D = 2048


@dataclass(frozen=True)
class ConfigurationDecision:
    """What the planner decided for one configuration.

    Attributes:
        spacing: target spacing (transposed axis order).
        median_shape: median image shape at that spacing (may hold halves).
        topology: pooling, strides, kernels and the final patch size.
        features_per_stage: channels per stage.
        blocks_per_stage_encoder: convolutions or residual blocks per encoder stage.
        blocks_per_stage_decoder: convolutions per decoder stage.
        batch_size: samples per iteration.
        estimate: feature-map voxels of one sample (see :mod:`segflow.planning.memory`).
        reference: the budget the estimate was compared against.
    """

    spacing: tuple[float, ...]
    median_shape: tuple[float, ...]
    topology: Topology
    features_per_stage: tuple[int, ...]
    blocks_per_stage_encoder: tuple[int, ...]
    blocks_per_stage_decoder: tuple[int, ...]
    batch_size: int
    estimate: int
    reference: float

    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.topology.patch_size


def initial_patch_size(spacing: Sequence[float], median_shape: Sequence[float]) -> list[float]:
    """The starting patch: proportional to ``1 / spacing`` (isotropic in mm), clipped.

    Clipping to the median image shape keeps the patch from exceeding what most images hold;
    the clipped entries may be non-integer when the median shape is (e.g. 35.5).
    """
    inverse = 1 / np.asarray(spacing, dtype=np.float64)
    if len(spacing) == 3:
        volume = float(INITIAL_PATCH_EDGE_3D**3)
    elif len(spacing) == 2:
        volume = float(INITIAL_PATCH_EDGE_2D**2)
    else:
        raise ValueError(f"spacing must have 2 or 3 entries, got {list(spacing)}")
    # Written as nnU-Net computes it so that the rounding (half to even) lands alike.
    scaled = inverse * (volume / np.prod(inverse)) ** (1 / len(spacing))
    return [min(round(v), m) for v, m in zip(scaled, median_shape, strict=True)]


def features_per_stage(
    n_stages: int,
    ndim: int,
    base: int = BASE_NUM_FEATURES,
    max_features: int | None = None,
) -> tuple[int, ...]:
    """Channels per stage: ``base`` doubled per stage (nnU-Net: 32, 64, 128, ...), capped at
    ``max_features`` (nnU-Net: 320 in 3D, 512 in 2D)."""
    if max_features is None:
        max_features = MAX_FEATURES_2D if ndim == 2 else MAX_FEATURES_3D
    return tuple(min(max_features, base * 2**i) for i in range(n_stages))


def _blocks(preset: PlannerPreset, n_stages: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    encoder = preset.blocks_per_stage_encoder[:n_stages]
    decoder = preset.blocks_per_stage_decoder[: n_stages - 1]
    if len(encoder) != n_stages or len(decoder) != n_stages - 1:
        raise SegflowError(
            f"the planned network needs {n_stages} stages but preset '{preset.name}' defines "
            f"blocks for at most {len(preset.blocks_per_stage_encoder)}"
        )
    return encoder, decoder


def _axis_to_shrink(patch_size: Sequence[int], median_shape: Sequence[float]) -> int:
    """The axis whose patch is largest relative to the median image.

    Ties go to the last such axis, which is what nnU-Net's (stable for these tiny arrays)
    argsort yields.
    """
    ratios = [p / m for p, m in zip(patch_size, median_shape, strict=True)]
    largest = max(ratios)
    return max(i for i, r in enumerate(ratios) if r == largest)


def plan_configuration(
    spacing: Sequence[float],
    median_shape: Sequence[float],
    preset: PlannerPreset,
    gpu_memory_gb: float,
    num_classes: int,
    approximate_dataset_voxels: float,
) -> ConfigurationDecision:
    """Decide patch size, topology and batch size for one configuration.

    Args:
        spacing: target spacing, transposed (2 entries for ``2d``, 3 otherwise).
        median_shape: median image shape at ``spacing``.
        preset: the planner preset.
        gpu_memory_gb: memory target.
        num_classes: output channels counted by the memory estimate.
        approximate_dataset_voxels: voxels of the whole training set at the (3D) spacing;
            bounds the batch so that it never holds more than the preset's fraction of it.
    """
    ndim = len(spacing)
    spacing = tuple(float(s) for s in spacing)
    median_shape = tuple(median_shape)
    reference = preset.reference_value(ndim, gpu_memory_gb)
    reference_batch = REFERENCE_BATCH_SIZE_2D if ndim == 2 else REFERENCE_BATCH_SIZE_3D

    def estimate_of(topology: Topology) -> int:
        encoder, decoder = _blocks(preset, topology.n_stages)
        return feature_map_voxels(
            preset.architecture,
            topology.patch_size,
            topology.strides,
            preset.features_per_stage(topology.n_stages, ndim),
            encoder,
            decoder,
            num_classes,
        )

    def too_large(estimate: int) -> bool:
        if preset.fit_patch_at_min_batch_size:
            # The reference describes a batch of `reference_batch`; scale to the minimum.
            return estimate / reference_batch * MIN_BATCH_SIZE > reference
        return estimate > reference

    topology = network_topology(spacing, initial_patch_size(spacing, median_shape))
    estimate = estimate_of(topology)
    while too_large(estimate):
        axis = _axis_to_shrink(topology.patch_size, median_shape)
        topology = shrink_patch_axis(spacing, topology, axis, FEATUREMAP_MIN_EDGE_LENGTH)
        estimate = estimate_of(topology)

    # Leftover budget goes into the batch: the reference batch scaled by how much smaller
    # than the reference this network is, rounded half to even.
    batch_size = round((reference / estimate) * reference_batch)
    # Cap: one batch holds at most `max_dataset_covered` of the dataset's voxels (an
    # overfitting precaution), but never fewer than the minimum batch size.
    patch_voxels = np.prod(topology.patch_size, dtype=np.float64)
    dataset_cap = round(approximate_dataset_voxels * preset.max_dataset_covered / patch_voxels)
    batch_size = max(min(batch_size, dataset_cap), MIN_BATCH_SIZE)

    encoder, decoder = _blocks(preset, topology.n_stages)
    logger.debug(
        "%dD at spacing %s: patch %s, %d stages, estimate %d (budget %.0f), batch %d",
        ndim,
        spacing,
        topology.patch_size,
        topology.n_stages,
        estimate,
        reference,
        batch_size,
    )
    return ConfigurationDecision(
        spacing=spacing,
        median_shape=median_shape,
        topology=topology,
        features_per_stage=preset.features_per_stage(topology.n_stages, ndim),
        blocks_per_stage_encoder=encoder,
        blocks_per_stage_decoder=decoder,
        batch_size=int(batch_size),
        estimate=int(estimate),
        reference=float(reference),
    )
