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
==================  =====================================  ====================================

Every family exists in 2D and 3D. None has nnU-Net's deep supervision (UNet++'s own is of
another kind: full-resolution outputs of its nested decoders): a zoo network returns one
output, and with deep supervision switched on that output alone in a list, so the trainer's
loss takes it as a deep-supervision loss with one weight.

Patch size. The planned patch is kept (sampling, the sliding window and its Gaussian weights
stay those of the plans, so that a comparison with nnU-Net's network differs in the network
only); a family whose input must be divisible (by the product of its strides, 8, 16 or 32
per axis) or of one fixed size (UNETR's position embedding) gets each patch padded
symmetrically with zeros to the nearest size it takes, and its output cropped back. The
padding is computed for the planned patch when the network is built and logged; a patch
larger than a fixed-size network takes is refused with an error naming the constraint.
Constraints no padding can meet (SegResNet's group normalization needs f0 divisible by 8)
raise :class:`~segflow.errors.SegflowError` naming the constraint.

Self-supervised pretraining (:mod:`segflow.training.contrastive`) trains a zoo network's
encoder: each family names its down path (:attr:`ZooFamily.encoder`), and
:class:`ZooEncoder` runs it on the input padded as the network pads it, sharing the
network's layers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from segflow.errors import Problem, SegflowError
from segflow.networks.catalog import ZOO_FAMILIES

__all__ = ["ZOO", "ZooEncoder", "ZooFamily", "ZooNetwork", "ZooPlan", "build_zoo_network"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooPlan:
    """What sizes a zoo network: from the configuration and the dataset."""

    patch_size: tuple[int, ...]
    in_channels: int
    num_outputs: int
    features_per_stage: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]

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


@dataclass(frozen=True)
class ZooFamily:
    """One network of the zoo.

    Attributes:
        name: the name an experiment gives it (``network.architecture``).
        source: the MONAI class and its paper.
        head: the state-dict prefix (inside the MONAI network) of the output layer, which
            fine-tuning leaves freshly initialized: it has one channel per class.
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
        """``x`` padded symmetrically with zeros to :meth:`of` its size, and the voxels added
        per axis."""
        size = tuple(x.shape[2:])
        extra = [t - s for t, s in zip(self.of(size), size, strict=True)]
        if any(extra):
            pads: list[int] = []
            for e in reversed(extra):  # F.pad takes the last axis first
                pads += [e // 2, e - e // 2]
            x = F.pad(x, pads)
        return x, extra


class ZooNetwork(nn.Module):
    """A MONAI network behind segflow's network interface.

    It pads each input symmetrically with zeros to a size the network takes and crops the
    output back, returns ``[output]`` with deep supervision on (one output: the trainer's
    loss then has one weight) and the output alone otherwise.

    Args:
        family: the zoo name.
        network: the MONAI network (state-dict keys ``network.<its keys>``).
        multiple: per axis, what every input size must be a multiple of.
        fixed_size: the one input size the network takes (UNETR), or ``None``.
        min_voxels_at_bottom: see :func:`fitted_size`.
        head: state-dict prefix of the network's output layer (inside ``network``).
        arguments: the MONAI class and arguments, recorded for the report and checkpoints.
        deep_supervision: see above.
    """

    def __init__(
        self,
        family: str,
        network: nn.Module,
        multiple: Sequence[int],
        fixed_size: Sequence[int] | None,
        min_voxels_at_bottom: int,
        head: str,
        arguments: dict[str, Any],
        deep_supervision: bool = True,
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
        )
        self.head_prefixes = (f"network.{head}",)
        self.arguments = arguments
        self.deep_supervision = bool(deep_supervision)

    def set_deep_supervision(self, enabled: bool) -> ZooNetwork:
        """Return ``[output]`` (``True``) or the output alone; returns ``self``."""
        self.deep_supervision = bool(enabled)
        return self

    @property
    def num_deep_supervision_outputs(self) -> int:
        """One: no zoo network has nnU-Net's deep supervision."""
        return 1

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
        x, extra = self.sizes.pad(x)
        y = self.network(x)
        if isinstance(y, (list, tuple)):  # BasicUNetPlusPlus returns a list
            y = y[0]
        if any(extra):
            y = y[(..., *(slice(e // 2, e // 2 + s) for e, s in zip(extra, size, strict=True)))]
        return [y] if self.deep_supervision else y


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
    return ZooNetwork(
        name,
        network,
        sized.multiple,
        fitted if sized.fixed else None,
        sized.min_voxels_at_bottom,
        family.head,
        {"class": f"monai.networks.nets.{sized.cls}", **_plain(sized.arguments)},
        deep_supervision,
    )


def _plain(arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` as JSON-able data (tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in arguments.items()}
