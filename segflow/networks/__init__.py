"""The U-Nets of nnU-Net v2, built from a configuration of the plans, and their variants.

:func:`build_network` reads ``configuration.network`` and builds the network its
``architecture`` names in :data:`NETWORKS` (a :class:`~segflow.networks.unet.PlainConvUNet` or
a :class:`~segflow.networks.resenc.ResidualEncoderUNet`) with the structure, parameter count
and initialization of nnU-Net's ``dynamic_network_architectures`` networks. Parameters are
registered in the reference's order, so ``zip(ours.parameters(), theirs.parameters())`` pairs
equal tensors.

A :class:`~segflow.networks.variants.NetworkVariant` changes the planned network without
changing the plans: another architecture, a wider encoder, group or batch normalization, axial
attention in the decoder (the extensions of the BraTS 2021 winner, :data:`BRATS2021_VARIANTS`),
a network of the model zoo (:data:`ZOO`: MONAI's Attention U-Net, UNet++, SegResNet, UNETR,
SwinUNETR, MedNeXt and SegResNetDS, sized from the plans) and a spatial transformer in front
of any of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.networks.attention import AxialAttention
    from segflow.networks.blocks import LayerOps
    from segflow.networks.build import build_network, memory_format_for
    from segflow.networks.registry import NETWORKS
    from segflow.networks.resenc import ResidualEncoderUNet
    from segflow.networks.spatial_transformer import SpatialTransformer
    from segflow.networks.unet import PlainConvUNet, UNet
    from segflow.networks.variants import BRATS2021_VARIANTS, NetworkVariant
    from segflow.networks.zoo import ZOO, ZooNetwork

__all__ = [
    "BRATS2021_VARIANTS",
    "NETWORKS",
    "ZOO",
    "AxialAttention",
    "LayerOps",
    "NetworkVariant",
    "PlainConvUNet",
    "ResidualEncoderUNet",
    "SpatialTransformer",
    "UNet",
    "ZooNetwork",
    "build_network",
    "memory_format_for",
]

# Imported when first used (segflow.lazy): the variant settings are read by the training
# settings, which the workflow's rules import at every Snakemake start, without torch.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "attention": ("AxialAttention",),
        "blocks": ("LayerOps",),
        "build": ("build_network", "memory_format_for"),
        "registry": ("NETWORKS",),
        "resenc": ("ResidualEncoderUNet",),
        "spatial_transformer": ("SpatialTransformer",),
        "unet": ("PlainConvUNet", "UNet"),
        "variants": ("BRATS2021_VARIANTS", "NetworkVariant"),
        "zoo": ("ZOO", "ZooNetwork"),
    },
)
