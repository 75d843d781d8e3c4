"""Planner presets: the numbers that turn a GPU memory budget into patch and batch sizes.

Each preset reproduces one nnU-Net v2 (2.8.1) planner: ``default`` is ``ExperimentPlanner``
(plans ``nnUNetPlans``, plain convolutional U-Net) and ``resenc_m``/``resenc_l``/``resenc_xl``
are ``nnUNetPlannerResEncM/L/XL`` (residual-encoder U-Net). The reference values are not
bytes: they are feature-map voxel counts (see :mod:`segflow.planning.memory`) that nnU-Net's
authors tuned so that a network of that size trains at the reference batch size within the
reference amount of GPU memory.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from segflow.errors import SegflowError

__all__ = [
    "BASE_NUM_FEATURES",
    "FEATUREMAP_MIN_EDGE_LENGTH",
    "MAX_FEATURES_2D",
    "MAX_FEATURES_3D",
    "MIN_BATCH_SIZE",
    "PLAIN_UNET",
    "PRESETS",
    "REFERENCE_BATCH_SIZE_2D",
    "REFERENCE_BATCH_SIZE_3D",
    "RESIDUAL_ENCODER_UNET",
    "PlannerPreset",
    "get_preset",
]

PLAIN_UNET = "PlainConvUNet"
RESIDUAL_ENCODER_UNET = "ResidualEncoderUNet"

# Shared by every preset.
BASE_NUM_FEATURES = 32  # features of the first stage; doubled at each stage below it ...
MAX_FEATURES_2D = 512  # ... until this cap (2D networks are cheap per voxel, so wider) ...
MAX_FEATURES_3D = 320  # ... or this one in 3D.
# Pooling stops along an axis once another halving would leave a feature map edge of fewer
# than this many voxels.
FEATUREMAP_MIN_EDGE_LENGTH = 4
MIN_BATCH_SIZE = 2  # instance norm and batch statistics need at least two samples
# The batch size each reference value was calibrated for.
REFERENCE_BATCH_SIZE_2D = 12
REFERENCE_BATCH_SIZE_3D = 2

# The plain U-Net has two convolutions per stage on both paths; nnU-Net's tuple has 14
# encoder entries, which also bounds the number of stages.
_PLAIN_ENCODER = (2,) * 14
_PLAIN_DECODER = (2,) * 13
# The residual encoder deepens towards the bottleneck (ResNet-like 1, 3, 4, 6, ... blocks of two
# convolutions each) while the decoder keeps a single convolution per stage.
_RESENC_ENCODER = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
_RESENC_DECODER = (1,) * 12


@dataclass(frozen=True)
class PlannerPreset:
    """One planner: network family, memory calibration and batch rules.

    Attributes:
        name: segflow's name (``default``, ``resenc_m``, ...).
        nnunet_planner: the nnU-Net v2 planner class it reproduces.
        plans_name: the nnU-Net plans identifier, which prefixes data identifiers.
        architecture: ``PlainConvUNet`` or ``ResidualEncoderUNet``.
        blocks_per_stage_encoder: convolutions (plain) or residual blocks per encoder stage.
        blocks_per_stage_decoder: convolutions per decoder stage.
        reference_value_2d: feature-map voxels that fit the reference memory in 2D.
        reference_value_3d: the same in 3D.
        reference_gpu_memory_gb: memory the reference values correspond to.
        default_gpu_memory_gb: memory target when the user gives none.
        max_dataset_covered: largest fraction of the dataset's voxels one batch may hold.
        fit_patch_at_min_batch_size: how the patch is shrunk. True (default planner): until the
            patch fits into the budget at the minimum batch size. False (ResEnc planners):
            until it fits at the reference batch size itself.
        shares_default_preprocessing: the 2d and 3d_fullres data do not depend on the
            planner, so the ResEnc planners point at the default planner's data for them.
        base_num_features: channels of the first stage, doubled at each stage below it ...
        max_features_2d: ... up to this cap in 2D ...
        max_features_3d: ... and this one in 3D. (nnU-Net: 32, 512, 320. Narrower networks
            are an option for small CPU budgets; the memory estimate follows the widths.)
    """

    name: str
    nnunet_planner: str
    plans_name: str
    architecture: str
    blocks_per_stage_encoder: tuple[int, ...]
    blocks_per_stage_decoder: tuple[int, ...]
    reference_value_2d: int
    reference_value_3d: int
    reference_gpu_memory_gb: float
    default_gpu_memory_gb: float
    max_dataset_covered: float
    fit_patch_at_min_batch_size: bool
    shares_default_preprocessing: bool
    base_num_features: int = BASE_NUM_FEATURES
    max_features_2d: int = MAX_FEATURES_2D
    max_features_3d: int = MAX_FEATURES_3D

    def features_per_stage(self, n_stages: int, ndim: int) -> tuple[int, ...]:
        """Channels per stage: the base doubled per stage, capped (2D and 3D caps differ)."""
        cap = self.max_features_2d if ndim == 2 else self.max_features_3d
        return tuple(min(cap, self.base_num_features * 2**i) for i in range(n_stages))

    def reference_value(self, ndim: int, gpu_memory_gb: float) -> float:
        """Feature-map voxels allowed for a ``ndim``-D network under ``gpu_memory_gb``."""
        base = self.reference_value_2d if ndim == 2 else self.reference_value_3d
        # Linear in the memory target; the division is done first like nnU-Net so that the
        # floating-point result (and every decision compared against it) is identical.
        return base * (gpu_memory_gb / self.reference_gpu_memory_gb)

    def data_identifier(self, configuration: str) -> str:
        """Name of the preprocessed data of ``configuration`` (as nnU-Net names it)."""
        if self.shares_default_preprocessing and configuration in ("2d", "3d_fullres"):
            return f"nnUNetPlans_{configuration}"
        return f"{self.plans_name}_{configuration}"


PRESETS: dict[str, PlannerPreset] = {
    "default": PlannerPreset(
        name="default",
        nnunet_planner="ExperimentPlanner",
        plans_name="nnUNetPlans",
        architecture=PLAIN_UNET,
        blocks_per_stage_encoder=_PLAIN_ENCODER,
        blocks_per_stage_decoder=_PLAIN_DECODER,
        # Tuned by nnU-Net's authors to reproduce nnU-Net v1's configurations on 8 GB.
        reference_value_2d=85_000_000,
        reference_value_3d=560_000_000,
        reference_gpu_memory_gb=8,
        default_gpu_memory_gb=8,
        # No batch may hold more than 5% of the dataset's voxels: an overfitting precaution
        # for small datasets of small images.
        max_dataset_covered=0.05,
        fit_patch_at_min_batch_size=True,
        shares_default_preprocessing=False,
    ),
    # nnU-Net describes M as "~9-11 GB" but plans it with an 8 GB target and reference; the
    # ResEnc presets drop the 5% cap (max_dataset_covered 1: a batch may hold the dataset).
    "resenc_m": PlannerPreset(
        name="resenc_m",
        nnunet_planner="nnUNetPlannerResEncM",
        plans_name="nnUNetResEncUNetMPlans",
        architecture=RESIDUAL_ENCODER_UNET,
        blocks_per_stage_encoder=_RESENC_ENCODER,
        blocks_per_stage_decoder=_RESENC_DECODER,
        reference_value_2d=135_000_000,
        reference_value_3d=680_000_000,
        reference_gpu_memory_gb=8,
        default_gpu_memory_gb=8,
        max_dataset_covered=1.0,
        fit_patch_at_min_batch_size=False,
        shares_default_preprocessing=True,
    ),
    "resenc_l": PlannerPreset(
        name="resenc_l",
        nnunet_planner="nnUNetPlannerResEncL",
        plans_name="nnUNetResEncUNetLPlans",
        architecture=RESIDUAL_ENCODER_UNET,
        blocks_per_stage_encoder=_RESENC_ENCODER,
        blocks_per_stage_decoder=_RESENC_DECODER,
        reference_value_2d=380_000_000,
        reference_value_3d=2_100_000_000,
        reference_gpu_memory_gb=24,
        default_gpu_memory_gb=24,
        max_dataset_covered=1.0,
        fit_patch_at_min_batch_size=False,
        shares_default_preprocessing=True,
    ),
    "resenc_xl": PlannerPreset(
        name="resenc_xl",
        nnunet_planner="nnUNetPlannerResEncXL",
        plans_name="nnUNetResEncUNetXLPlans",
        architecture=RESIDUAL_ENCODER_UNET,
        blocks_per_stage_encoder=_RESENC_ENCODER,
        blocks_per_stage_decoder=_RESENC_DECODER,
        reference_value_2d=560_000_000,
        reference_value_3d=3_600_000_000,
        reference_gpu_memory_gb=40,
        default_gpu_memory_gb=40,
        max_dataset_covered=1.0,
        fit_patch_at_min_batch_size=False,
        shares_default_preprocessing=True,
    ),
}


def get_preset(name: str) -> PlannerPreset:
    """The preset called ``name``.

    Raises:
        SegflowError: no such preset; the message lists the valid ones and the closest match.
    """
    preset = PRESETS.get(name)
    if preset is not None:
        return preset
    valid = ", ".join(PRESETS)
    close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise SegflowError(f"unknown planner preset '{name}'{hint} (valid: {valid})")
