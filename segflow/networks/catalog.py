"""Every network a plan or an experiment may name, in one table per kind.

Standard library only: the settings (:class:`~segflow.networks.variants.NetworkVariant`) and the
config check read the names at every Snakemake start, without torch. The modules that build the
networks read the same tables: :data:`segflow.networks.registry.NETWORKS` (the U-Nets) and
:data:`segflow.networks.zoo.ZOO` (the model zoo) are made from them, so a name is spelled here
only.

How to add a network of the model zoo: write its sizing function (a plan -> the MONAI class,
its arguments and the input sizes it takes) and its encoder (for self-supervised pretraining)
in :mod:`segflow.networks.zoo`, then add one entry to :data:`ZOO_FAMILIES`. Nothing else
changes: the settings, the config's error messages, ``build_network`` and the zoo's tests follow
from the entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from segflow.planning.presets import PLAIN_UNET, RESIDUAL_ENCODER_UNET

__all__ = [
    "ARCHITECTURE_NAMES",
    "NETWORK_NAMES",
    "UNETS",
    "ZOO_FAMILIES",
    "ZOO_NAMES",
    "ZooEntry",
]

#: The U-Nets of the plans (nnU-Net's names) -> their class, ``module:attribute``.
UNETS = {
    PLAIN_UNET: "segflow.networks.unet:PlainConvUNet",
    RESIDUAL_ENCODER_UNET: "segflow.networks.resenc:ResidualEncoderUNet",
}


@dataclass(frozen=True)
class ZooEntry:
    """One network of the model zoo.

    Attributes:
        source: the MONAI class and its paper.
        head: the state-dict prefix (inside the MONAI network) of the output layer, which
            fine-tuning leaves freshly initialized: it has one channel per class.
        size: the name of its sizing function in :mod:`segflow.networks.zoo`.
        encoder: the name of its encoder (a function or class) there.
    """

    source: str
    head: str
    size: str
    encoder: str


#: The model zoo's networks by the name an experiment's ``network.architecture`` gives them.
ZOO_FAMILIES = {
    "AttentionUNet": ZooEntry("MONAI AttentionUnet (Oktay et al. 2018)", "model.2.",
                              "_attention_unet", "_attention_unet_encoder"),
    "UNetPlusPlus": ZooEntry("MONAI BasicUNetPlusPlus (Zhou et al. 2018)", "final_conv_0_",
                             "_unet_plus_plus", "_unet_plus_plus_encoder"),
    "SegResNet": ZooEntry("MONAI SegResNet (Myronenko 2018)", "conv_final.2.", "_segresnet",
                          "_SegResNetEncoder"),
    "UNETR": ZooEntry("MONAI UNETR (Hatamizadeh et al. 2022)", "out.", "_unetr", "_ViTEncoder"),
    "SwinUNETR": ZooEntry("MONAI SwinUNETR (Hatamizadeh et al. 2022)", "out.", "_swin_unetr",
                          "_SwinEncoder"),
    "MedNeXt": ZooEntry("MONAI MedNeXt (Roy et al. 2023)", "out_", "_mednext",
                        "_MedNeXtEncoder"),
    "SegResNetDS": ZooEntry("MONAI SegResNetDS (Auto3DSeg; Myronenko 2018)",
                            "up_layers.0.head.", "_segresnet_ds", "_SegResNetDSEncoder"),
}  # fmt: skip

#: The architectures a plan (or a variant, in its place) may name.
ARCHITECTURE_NAMES = tuple(UNETS)
#: The networks of the model zoo.
ZOO_NAMES = tuple(ZOO_FAMILIES)
#: Every network name.
NETWORK_NAMES = ARCHITECTURE_NAMES + ZOO_NAMES
