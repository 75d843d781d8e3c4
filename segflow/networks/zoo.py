"""A model zoo: segmentation networks of MONAI, sized from a configuration of the plans.

An experiment names one by ``network: {architecture: SegResNet}`` (a
:class:`~segflow.networks.variants.NetworkVariant`); :func:`build_zoo_network` builds it for
the configuration's patch, the dataset's input channels and outputs, and, where the family
has widths to set, the plans' ``features_per_stage``:

==================  =====================================  ====================================
name                MONAI class (paper)                    sized from the plans
==================  =====================================  ====================================
``AttentionUNet``   ``AttentionUnet`` (Oktay et al. 2018)  one level per planned stage, with
                                                           its width and stride (anisotropic
                                                           strides kept)
``UNetPlusPlus``    ``BasicUNetPlusPlus`` (Zhou et al.     its five levels take the plans'
                    2018)                                  first four widths (f0, f0, f1, f2,
                                                           f3; f0 upsampling), as MONAI's
                                                           default (32, 32, 64, 128, 256, 32)
                                                           for nnU-Net's f0 = 32
``SegResNet``       ``SegResNet`` (Myronenko 2018)         ``init_filters`` = f0; the paper's
                                                           four levels (1, 2, 2, 4 blocks)
``UNETR``           ``UNETR`` (Hatamizadeh et al. 2022)    ``feature_size`` = f0 / 2 (the
                                                           paper's 16 for nnU-Net's 32); the
                                                           paper's ViT-B (768 wide, 12 layers,
                                                           12 heads, patches of 16)
``SwinUNETR``       ``SwinUNETR`` (Hatamizadeh et al.      ``feature_size`` = f0 rounded down
                    2022)                                  to a multiple of 12 (its heads
                                                           need it), at least 12: 24 for 32
``MedNeXt``         ``MedNeXt`` (Roy et al. 2023)          ``init_filters`` = f0; one
                                                           downsampling per planned one, at
                                                           most the paper's four; the paper's
                                                           S, B, M or L blocks and expansion
                                                           ratios per stage; kernel 3 or 5
``SegResNetDS``     ``SegResNetDS`` (Myronenko 2018;       ``init_filters`` = f0; one
                    MONAI Auto3DSeg's deep-supervision     downsampling per planned one, at
                    SegResNet)                             most four; blocks (1, 2, 2, 4, 4)
                                                           down, one up; instance norm.
==================  =====================================  ====================================

Every family exists in 2D and 3D. Deep supervision: MedNeXt and SegResNetDS have
nnU-Net's kind (an output at every decoder resolution, each half the last per axis); with deep
supervision on, a zoo network of those returns the outputs at the resolutions segflow's U-Net
supervises for the same plans (every decoder resolution, finest first, the bottleneck not;
:attr:`ZooNetwork.deep_supervision_scales`), which the trainer weights as it weights the
U-Net's (:func:`~segflow.training.losses.deep_supervision_weights`: halving per resolution,
the coarsest 0). The other families have none (UNet++'s own is of another kind:
full-resolution outputs of its nested decoders): they return one output, and with deep
supervision switched on that output alone in a list, so the trainer's loss takes it as a
deep-supervision loss with one weight. MedNeXt and SegResNetDS downsample by 2 along every
axis (MONAI's MedNeXt has no anisotropic strides; SegResNetDS's come from image spacings, not
from the plans' strides, so segflow keeps it isotropic).

Patch size. The planned patch is kept (sampling, the sliding window and its Gaussian weights
stay those of the plans, so that a comparison with nnU-Net's network differs in the network
only); a family whose input must be divisible (by the product of its strides, 8, 16 or 32
per axis) or of one fixed size (UNETR's position embedding) gets each patch padded
symmetrically with zeros to the nearest size it takes, and its output cropped back. The
padding is computed for the planned patch when the network is built and logged; a patch
larger than a fixed-size network takes is refused with an error naming the constraint. A
family with deep supervision (MedNeXt, SegResNetDS) is padded after the patch instead, so that
every coarse output keeps the patch's voxel grid: an output at ``1 / 2**k`` is cropped to
``patch / 2**k`` and supervised only while every patch axis is divisible by ``2**k`` (always,
for plans of isotropic strides; an anisotropic plan's patch loses the coarsest outputs, which
is logged).
Constraints no padding can meet (SegResNet's group normalization needs f0 divisible by 8)
raise :class:`~segflow.errors.SegflowError` naming the constraint.

Self-supervised pretraining (:mod:`segflow.training.contrastive`) trains a zoo network's
encoder: each family names its down path (:attr:`ZooFamily.encoder`), and
:class:`ZooEncoder` runs it on the input padded as the network pads it, sharing the
network's layers.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from segflow.errors import Problem, SegflowError
from segflow.networks.catalog import ZOO_FAMILIES

__all__ = [
    "MEDNEXT_KERNEL_SIZES",
    "MEDNEXT_SIZES",
    "TRAINING_RECIPES",
    "ZOO",
    "ZooEncoder",
    "ZooFamily",
    "ZooNetwork",
    "ZooPlan",
    "build_zoo_network",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooPlan:
    """What sizes a zoo network: from the configuration and the dataset."""

    patch_size: tuple[int, ...]
    in_channels: int
    num_outputs: int
    features_per_stage: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    #: MedNeXt's size (``S``, ``B``, ``M``, ``L``) and kernel size (3, 5); ``None``: B and 3.
    size: str | None = None
    kernel_size: int | None = None

    @property
    def ndim(self) -> int:
        return len(self.patch_size)


@dataclass(frozen=True)
class _Sized:
    """A family's MONAI class and arguments for one plan, and the input sizes it takes."""

    cls: str
    arguments: dict[str, Any]
    multiple: tuple[int, ...]  # each input axis a multiple of these
    fixed: bool = False  # the input must be exactly the padded patch
    min_voxels_at_bottom: int = 1  # input voxels / prod(multiple) at least this
    #: Outputs of its deep supervision (the finest, then each half the last per axis).
    deep_supervision_outputs: int = 1
    #: State-dict prefixes of its output layers, where they depend on the plan.
    heads: tuple[str, ...] = ()


@dataclass(frozen=True)
class ZooFamily:
    """One network of the zoo.

    Attributes:
        name: the name an experiment gives it (``network.architecture``).
        source: the MONAI class and its paper.
        head: the state-dict prefix (inside the MONAI network) of the output layer, which
            fine-tuning leaves freshly initialized: it has one channel per class (those of
            the deep-supervision outputs too: MedNeXt's ``out_``; SegResNetDS's depend on its
            depth and come from ``size``).
        size: the MONAI arguments for a plan, and the input sizes they take; raises
            :class:`~segflow.errors.SegflowError` for a plan the family cannot be sized from.
        encoder: the network's encoder (what self-supervised pretraining trains): a module
            that shares the MONAI network's layers and maps an input of a size the network
            takes to its deepest encoder features ``(b, c, *spatial)``.
    """

    name: str
    source: str
    head: str
    size: Callable[[ZooPlan], _Sized]
    encoder: Callable[[nn.Module], nn.Module]


def _attention_unet_encoder(network: nn.Module) -> nn.Module:
    """MONAI's AttentionUnet nests each level in the one above (``model.1`` is the first
    attention layer; its ``submodule`` is the strided ConvBlock and the next layer, or the
    bottom ConvBlock): the head and the strided blocks down that path, in order."""
    blocks = [network.model[0]]
    layer = network.model[1]
    while isinstance(layer.submodule, nn.Sequential):
        blocks.append(layer.submodule[0])
        layer = layer.submodule[1]
    blocks.append(layer.submodule)
    return nn.Sequential(*blocks)


def _unet_plus_plus_encoder(network: nn.Module) -> nn.Module:
    """BasicUNetPlusPlus's backbone column, ``conv_0_0`` to ``conv_4_0``."""
    return nn.Sequential(*(getattr(network, f"conv_{level}_0") for level in range(5)))


class _SegResNetEncoder(nn.Module):
    """SegResNet's ``encode``: the first convolution (dropout, if any) and the down layers."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.convInit = network.convInit
        self.dropout = network.dropout if network.dropout_prob is not None else None
        self.down_layers = network.down_layers

    def forward(self, x: Tensor) -> Tensor:
        x = self.convInit(x)
        if self.dropout is not None:
            x = self.dropout(x)
        for down in self.down_layers:
            x = down(x)
        return x


class _ViTEncoder(nn.Module):
    """UNETR's ViT: its last tokens laid back on the grid of patches, ``(b, hidden, *grid)``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.vit = network.vit
        self.view_shape = list(network.proj_view_shape)
        self.axes = list(network.proj_axes)

    def forward(self, x: Tensor) -> Tensor:
        tokens, _ = self.vit(x)
        return tokens.view([tokens.shape[0], *self.view_shape]).permute(self.axes).contiguous()


class _SwinEncoder(nn.Module):
    """SwinUNETR's Swin transformer: its deepest stage."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.swinViT = network.swinViT
        self.normalize = bool(network.normalize)

    def forward(self, x: Tensor) -> Tensor:
        return self.swinViT(x, self.normalize)[-1]


class _MedNeXtEncoder(nn.Module):
    """MedNeXt's stem, its encoder stages with their downsampling blocks, and its bottleneck."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.stem = network.stem
        self.enc_stages = network.enc_stages
        self.down_blocks = network.down_blocks
        self.bottleneck = network.bottleneck

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage, down in zip(self.enc_stages, self.down_blocks, strict=True):
            x = down(stage(x))
        return self.bottleneck(x)


class _SegResNetDSEncoder(nn.Module):
    """SegResNetDS's encoder (``encoder``): its deepest level."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.encoder = network.encoder

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)[-1]


def _axis_products(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    return tuple(math.prod(s[axis] for s in strides) for axis in range(len(strides[0])))


def _widths(plan: ZooPlan, count: int) -> list[int]:
    """The plans' first ``count`` widths; missing ones double the last."""
    widths = list(plan.features_per_stage[:count])
    while len(widths) < count:
        widths.append(widths[-1] * 2)
    return widths


def _attention_unet(plan: ZooPlan) -> _Sized:
    strides = tuple(tuple(int(v) for v in s) for s in plan.strides[1:])
    return _Sized(
        "AttentionUnet",
        {
            "spatial_dims": plan.ndim,
            "in_channels": plan.in_channels,
            "out_channels": plan.num_outputs,
            "channels": tuple(plan.features_per_stage),
            "strides": strides,
        },
        _axis_products(plan.strides),
    )


def _unet_plus_plus(plan: ZooPlan) -> _Sized:
    f0, f1, f2, f3 = _widths(plan, 4)
    return _Sized(
        "BasicUNetPlusPlus",
        {
            "spatial_dims": plan.ndim,
            "in_channels": plan.in_channels,
            "out_channels": plan.num_outputs,
            "features": (f0, f0, f1, f2, f3, f0),
            "deep_supervision": False,
        },
        (16,) * plan.ndim,  # four max-poolings by 2 along every axis
        # The instance normalization at 1/16 of the input needs more than one voxel there.
        min_voxels_at_bottom=2,
    )


_SEGRESNET_GROUPS = 8


def _segresnet(plan: ZooPlan) -> _Sized:
    f0 = plan.features_per_stage[0]
    if f0 % _SEGRESNET_GROUPS:
        raise SegflowError(
            "SegResNet cannot be sized from these plans",
            [
                Problem(
                    "features_per_stage[0]",
                    f"SegResNet's group normalization has {_SEGRESNET_GROUPS} groups, so its "
                    f"first width (the plans' f0) must be divisible by {_SEGRESNET_GROUPS}; "
                    f"got {f0} (planning.base_features)",
                )
            ],
        )
    return _Sized(
        "SegResNet",
        {
            "spatial_dims": plan.ndim,
            "in_channels": plan.in_channels,
            "out_channels": plan.num_outputs,
            "init_filters": f0,
            "blocks_down": (1, 2, 2, 4),
            "blocks_up": (1, 1, 1),
        },
        (8,) * plan.ndim,  # three downsamplings by 2
    )


_VIT_PATCH = 16


def _unetr(plan: ZooPlan) -> _Sized:
    size = tuple(_round_up(p, _VIT_PATCH) for p in plan.patch_size)
    return _Sized(
        "UNETR",
        {
            "spatial_dims": plan.ndim,
            "in_channels": plan.in_channels,
            "out_channels": plan.num_outputs,
            "img_size": size,
            "feature_size": max(1, plan.features_per_stage[0] // 2),
            "hidden_size": 768,
            "mlp_dim": 3072,
            "num_heads": 12,
        },
        (_VIT_PATCH,) * plan.ndim,
        fixed=True,
    )


def _swin_unetr(plan: ZooPlan) -> _Sized:
    return _Sized(
        "SwinUNETR",
        {
            "spatial_dims": plan.ndim,
            "in_channels": plan.in_channels,
            "out_channels": plan.num_outputs,
            "feature_size": max(12, plan.features_per_stage[0] // 12 * 12),
        },
        (32,) * plan.ndim,  # a patch embedding of 2 and four merges by 2
        # The instance normalization at 1/32 of the input needs more than one voxel there.
        min_voxels_at_bottom=2,
    )


#: MedNeXt's sizes (Roy et al. 2023, Table 1, as MONAI's ``MedNeXtS/B/M/L``): per stage of
#: the paper's five (four encoder stages, the bottleneck, four decoder stages) the blocks and
#: the expansion ratio. A plan of fewer stages takes the outermost ones.
MEDNEXT_SIZES: dict[str, dict[str, tuple[int, ...]]] = {
    "S": {"blocks": (2,) * 9, "ratios": (2,) * 9},
    "B": {"blocks": (2,) * 9, "ratios": (2, 3, 4, 4, 4, 4, 4, 3, 2)},
    "M": {"blocks": (3, 4, 4, 4, 4, 4, 4, 4, 3), "ratios": (2, 3, 4, 4, 4, 4, 4, 3, 2)},
    "L": {"blocks": (3, 4, 8, 8, 8, 8, 8, 4, 3), "ratios": (3, 4, 8, 8, 8, 8, 8, 4, 3)},
}
#: The depthwise kernel sizes of the paper (k3, k5).
MEDNEXT_KERNEL_SIZES = (3, 5)
MEDNEXT_DEFAULT_SIZE = "B"
MEDNEXT_DEFAULT_KERNEL = 3
_MEDNEXT_MAX_DOWNSAMPLINGS = 4  # the paper's five stages
#: SegResNetDS's blocks per level (MONAI Auto3DSeg's segresnet: five levels).
_SEGRESNET_DS_BLOCKS = (1, 2, 2, 4, 4)


#: The training recipe each family is reported with, as training settings (an experiment's
#: keys) that change segflow's defaults (nnU-Net's: SGD, 0.01, poly decay, 1000 x 250
#: iterations, gradients clipped to 12). Sources, read in the authors' code:
#:
#: * MedNeXt: the authors' trainers (github.com/MIC-DKFZ/MedNeXt,
#:   ``nnunet_mednext/training/network_training/MedNeXt/nnUNetTrainerV2_MedNeXt.py``, class
#:   ``nnUNetTrainerV2_Optim_and_LR``): AdamW at 1e-3 with nnU-Net v1's weight decay 3e-5
#:   (``nnUNetTrainer.py``: ``weight_decay``), no scheduler of its own, so nnU-Net v1's poly
#:   decay over 1000 x 250 iterations (``nnUNetTrainerV2.py``), gradients clipped to 12, as
#:   segflow. Not offered: AdamW's ``eps`` of 1e-4 (segflow keeps PyTorch's 1e-8; the authors
#:   raised it against NaNs in fp16). Their kernel-5 trainers start from a trained kernel-3
#:   network (UpKern: ``pretrained_weights`` with ``pretrained_resample_kernels``). The
#:   configuration nnU-Net Revisited used for MedNeXt was not checked beyond its statement
#:   that the networks were trained as their authors recommend.
#: * SegResNetDS: MONAI Auto3DSeg's segresnet template
#:   (github.com/Project-MONAI/research-contributions,
#:   ``auto3dseg/algorithm_templates/segresnet/configs/hyper_parameters.yaml``): AdamW,
#:   ``learning_rate: 2.0e-4``, ``weight_decay: 1.e-5``. Not offered: its 3 warm-up epochs, its
#:   own schedule and 300-epoch budget, batch 1 at a 224x224x144 crop; segflow's poly decay,
#:   plans and budget are kept.
TRAINING_RECIPES: dict[str, dict[str, Any]] = {
    "MedNeXt": {"optimizer": "adamw", "initial_lr": 1e-3, "weight_decay": 3e-5},
    "SegResNetDS": {"optimizer": "adamw", "initial_lr": 2e-4, "weight_decay": 1e-5},
}


def _downsamplings(plan: ZooPlan, most: int, family: str) -> int:
    """One downsampling by 2 per planned stage after the first, at most ``most``."""
    planned = len(plan.strides) - 1
    if planned < 1:
        raise SegflowError(
            f"{family} cannot be sized from these plans",
            [Problem("n_stages", f"{family} needs at least 2 planned stages, got {planned + 1}")],
        )
    return min(planned, most)


def _mednext(plan: ZooPlan) -> _Sized:
    size = plan.size or MEDNEXT_DEFAULT_SIZE
    kernel = plan.kernel_size or MEDNEXT_DEFAULT_KERNEL
    d = _downsamplings(plan, _MEDNEXT_MAX_DOWNSAMPLINGS, "MedNeXt")
    blocks, ratios = MEDNEXT_SIZES[size]["blocks"], MEDNEXT_SIZES[size]["ratios"]
    middle = len(blocks) // 2  # the bottleneck
    return _Sized(
        "MedNeXt",
        {
            "spatial_dims": plan.ndim,
            "init_filters": plan.features_per_stage[0],
            "in_channels": plan.in_channels,
            "out_channels": plan.num_outputs,
            "encoder_expansion_ratio": ratios[:d],
            "decoder_expansion_ratio": ratios[len(ratios) - d :],
            "bottleneck_expansion_ratio": ratios[middle],
            "kernel_size": kernel,
            "deep_supervision": True,
            "use_residual_connection": True,  # the paper's residual up- and downsampling
            "blocks_down": blocks[:d],
            "blocks_bottleneck": blocks[middle],
            "blocks_up": blocks[len(blocks) - d :],
            "norm_type": "group",
            "global_resp_norm": False,
        },
        (2**d,) * plan.ndim,
        # Its group normalization (one group per channel) at the bottom needs several voxels.
        min_voxels_at_bottom=2,
        # It has an output at the bottleneck as well; the U-Net has none there.
        deep_supervision_outputs=d,
    )


def _segresnet_ds(plan: ZooPlan) -> _Sized:
    d = _downsamplings(plan, len(_SEGRESNET_DS_BLOCKS) - 1, "SegResNetDS")
    return _Sized(
        "SegResNetDS",
        {
            "spatial_dims": plan.ndim,
            "init_filters": plan.features_per_stage[0],
            "in_channels": plan.in_channels,
            "out_channels": plan.num_outputs,
            "norm": "instance",
            "blocks_down": _SEGRESNET_DS_BLOCKS[: d + 1],
            "dsdepth": d,
        },
        (2**d,) * plan.ndim,
        # The instance normalization at the bottom needs more than one voxel.
        min_voxels_at_bottom=2,
        deep_supervision_outputs=d,
        heads=tuple(f"up_layers.{i}.head." for i in range(d)),
    )


ZOO: dict[str, ZooFamily] = {
    name: ZooFamily(name, entry.source, entry.head, globals()[entry.size], globals()[entry.encoder])
    for name, entry in ZOO_FAMILIES.items()
}
"""The zoo's networks by name (the names an experiment's ``network.architecture`` takes)."""


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def fitted_size(
    size: Sequence[int], multiple: Sequence[int], min_voxels_at_bottom: int = 1
) -> tuple[int, ...]:
    """The smallest size at least ``size`` with every axis a multiple of ``multiple`` and at
    least ``min_voxels_at_bottom`` voxels after dividing by it (the longest axis of ``size``
    grown)."""
    fitted = [_round_up(s, m) for s, m in zip(size, multiple, strict=True)]
    while math.prod(f // m for f, m in zip(fitted, multiple, strict=True)) < min_voxels_at_bottom:
        axis = max(range(len(fitted)), key=lambda a: size[a])
        fitted[axis] += multiple[axis]
    return tuple(fitted)


@dataclass(frozen=True)
class _InputSizes:
    """The input sizes a zoo network takes (what its network and its encoder pad to)."""

    family: str
    multiple: tuple[int, ...]
    fixed_size: tuple[int, ...] | None
    min_voxels_at_bottom: int
    #: Pad after the input (the coarse outputs keep its grid) instead of on both sides.
    at_end: bool = False

    def of(self, size: Sequence[int]) -> tuple[int, ...]:
        if self.fixed_size is None:
            return fitted_size(size, self.multiple, self.min_voxels_at_bottom)
        if any(s > f for s, f in zip(size, self.fixed_size, strict=True)):
            raise SegflowError(
                f"{self.family} cannot take this input",
                [
                    Problem(
                        "input size",
                        f"{'x'.join(map(str, size))} is larger than the "
                        f"{'x'.join(map(str, self.fixed_size))} that {self.family}'s position "
                        "embedding was built for (the planned patch, padded to a multiple of "
                        f"{self.multiple[0]})",
                    )
                ],
            )
        return self.fixed_size

    def pad(self, x: Tensor) -> tuple[Tensor, list[int]]:
        """``x`` padded with zeros to :meth:`of` its size (symmetrically, or after it), and the
        voxels added per axis before it."""
        size = tuple(x.shape[2:])
        extra = [t - s for t, s in zip(self.of(size), size, strict=True)]
        before = [0 if self.at_end else e // 2 for e in extra]
        if any(extra):
            pads: list[int] = []
            for e, b in zip(reversed(extra), reversed(before), strict=True):
                pads += [b, e - b]  # F.pad takes the last axis first
            x = F.pad(x, pads)
        return x, before


class ZooNetwork(nn.Module):
    """A MONAI network behind segflow's network interface.

    It pads each input with zeros to a size the network takes and crops the output back,
    returns the deep-supervision outputs with deep supervision on (``[output]`` for a family
    without: the trainer's loss then has one weight) and the finest output alone otherwise.

    Args:
        family: the zoo name.
        network: the MONAI network (state-dict keys ``network.<its keys>``).
        multiple: per axis, what every input size must be a multiple of.
        fixed_size: the one input size the network takes (UNETR), or ``None``.
        min_voxels_at_bottom: see :func:`fitted_size`.
        head: state-dict prefix(es) of the network's output layers (inside ``network``).
        arguments: the MONAI class and arguments, recorded for the report and checkpoints.
        deep_supervision: see above.
        deep_supervision_outputs: the outputs the MONAI network returns in training (finest
            first, each half the last per axis; 1: one output); above 1, inputs are padded
            after the patch and the outputs kept are those whose patch size is whole.
        patch_size: the planned patch (decides :attr:`deep_supervision_scales`).
    """

    def __init__(
        self,
        family: str,
        network: nn.Module,
        multiple: Sequence[int],
        fixed_size: Sequence[int] | None,
        min_voxels_at_bottom: int,
        head: str | Sequence[str],
        arguments: dict[str, Any],
        deep_supervision: bool = True,
        *,
        deep_supervision_outputs: int = 1,
        patch_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.family = family
        self.network = network
        #: The input sizes it takes (its encoder pads to the same).
        self.sizes = _InputSizes(
            family,
            tuple(multiple),
            tuple(fixed_size) if fixed_size is not None else None,
            min_voxels_at_bottom,
            at_end=deep_supervision_outputs > 1,
        )
        heads = (head,) if isinstance(head, str) else tuple(head)
        self.head_prefixes = tuple(f"network.{h}" for h in heads)
        self.arguments = arguments
        self.deep_supervision = bool(deep_supervision)
        #: The MONAI network's deep-supervision outputs (those it returns in training).
        self.network_outputs = int(deep_supervision_outputs)
        #: The planned patch (what decides the deep-supervision outputs); ``None``: any.
        self._patch = tuple(patch_size) if patch_size is not None else ()

    def set_deep_supervision(self, enabled: bool) -> ZooNetwork:
        """Return ``[output]`` (``True``) or the output alone; returns ``self``."""
        self.deep_supervision = bool(enabled)
        return self

    @property
    def num_deep_supervision_outputs(self) -> int:
        """The outputs returned with deep supervision on: one per decoder resolution whose
        patch size is whole (MedNeXt, SegResNetDS), or one."""
        return len(self.deep_supervision_scales)

    @property
    def deep_supervision_scales(self) -> list[tuple[float, ...]]:
        """Per deep-supervision output, its size relative to the patch, finest first (as
        :func:`~segflow.training.losses.deep_supervision_scales` for the U-Net): ``1 / 2**k``
        for every ``k`` below the network's outputs with each patch axis divisible by
        ``2**k``; the patch is the network's ``multiple`` padded away."""
        return [(1.0 / 2**k,) * len(self.sizes.multiple) for k in range(self._whole_outputs())]

    def _whole_outputs(self, size: Sequence[int] | None = None) -> int:
        size = self._patch if size is None else size
        count = 1
        while count < self.network_outputs and all(s % 2**count == 0 for s in size):
            count += 1
        return count

    @property
    def fixed_size(self) -> tuple[int, ...] | None:
        """The one input size the network takes (UNETR), or ``None``."""
        return self.sizes.fixed_size

    def input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """The size an input of spatial ``size`` is padded to.

        Raises:
            SegflowError: ``size`` is larger than a fixed-size network takes.
        """
        return self.sizes.of(size)

    def encoder(self) -> ZooEncoder:
        """The encoder of this network (sharing its layers), for self-supervised pretraining."""
        return ZooEncoder(self)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        size = tuple(x.shape[2:])
        x, before = self.sizes.pad(x)
        supervised = self.deep_supervision and self.network_outputs > 1
        with _returning_all_outputs(self.network, supervised):
            y = self.network(x)
        outputs = list(y) if isinstance(y, (list, tuple)) else [y]  # UNet++ returns a list
        if not supervised:
            y = outputs[0]
            if size != tuple(y.shape[2:]):
                y = y[(..., *(slice(b, b + s) for b, s in zip(before, size, strict=True)))]
            return [y] if self.deep_supervision else y
        # Padded after the patch: output k's patch is its first size / 2**k voxels.
        return [
            o[(..., *(slice(0, s // 2**k) for s in size))]
            for k, o in enumerate(outputs[: self._whole_outputs(size)])
        ]


@contextlib.contextmanager
def _returning_all_outputs(network: nn.Module, enabled: bool) -> Iterator[None]:
    """MONAI's MedNeXt and SegResNetDS return their deep-supervision outputs only in training
    mode, which only their top module's flag decides: set that flag alone (normalization and
    dropout below keep theirs), so that validation in evaluation mode gets every output."""
    if not enabled or network.training:
        yield
        return
    network.training = True
    try:
        yield
    finally:
        network.training = False


class ZooEncoder(nn.Module):
    """A zoo network's encoder: the input padded as the network pads it, then the family's
    encoder (:attr:`ZooFamily.encoder`), whose layers are the network's own, so that training
    it trains them. Returns the deepest encoder features.

    Args:
        network: the zoo network.
    """

    def __init__(self, network: ZooNetwork) -> None:
        super().__init__()
        self.layers = ZOO[network.family].encoder(network.network)
        self.sizes = network.sizes

    def forward(self, x: Tensor) -> Tensor:
        x, _ = self.sizes.pad(x)
        return self.layers(x)


def build_zoo_network(name: str, plan: ZooPlan, deep_supervision: bool = True) -> ZooNetwork:
    """The zoo network ``name`` sized from ``plan`` (MONAI's initialization).

    Raises:
        SegflowError: an unknown name, or a constraint of the family the plan breaks.
    """
    from monai.networks import nets

    family = ZOO.get(name)
    if family is None:
        raise SegflowError(
            "unknown zoo network", [Problem("architecture", f"'{name}' (valid: {', '.join(ZOO)})")]
        )
    sized = family.size(plan)
    network = getattr(nets, sized.cls)(**sized.arguments)
    fitted = fitted_size(plan.patch_size, sized.multiple, sized.min_voxels_at_bottom)
    if fitted != tuple(plan.patch_size):
        logger.info(
            "%s takes inputs of a multiple of %s per axis: the patch %s is padded to %s inside "
            "the network and its output cropped back",
            name,
            "x".join(map(str, sized.multiple)),
            "x".join(map(str, plan.patch_size)),
            "x".join(map(str, fitted)),
        )
    zoo_network = ZooNetwork(
        name,
        network,
        sized.multiple,
        fitted if sized.fixed else None,
        sized.min_voxels_at_bottom,
        sized.heads or family.head,
        {"class": f"monai.networks.nets.{sized.cls}", **_plain(sized.arguments)},
        deep_supervision,
        deep_supervision_outputs=sized.deep_supervision_outputs,
        patch_size=plan.patch_size,
    )
    kept = zoo_network.num_deep_supervision_outputs
    if kept < sized.deep_supervision_outputs:
        logger.info(
            "%s: the patch %s is not divisible by %d along every axis, so deep supervision "
            "uses its %d finest of %d outputs",
            name,
            "x".join(map(str, plan.patch_size)),
            2**kept,
            kept,
            sized.deep_supervision_outputs,
        )
    return zoo_network


def _plain(arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` as JSON-able data (tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in arguments.items()}
