"""The residual-encoder U-Net of nnU-Net v2 (``ResidualEncoderUNet``, the ResEnc M/L/XL presets).

Encoder: a stem (one conv block at full resolution, as wide as the first stage), then per
stage a stack of ResNet-D basic blocks; the first block of a stage downsamples with a strided
first convolution while its shortcut average-pools. Decoder: the plain U-Net decoder
(:class:`~segflow.networks.unet.UNetDecoder`), usually one conv block per stage.

Initialization as nnU-Net: He normal for every (transposed) convolution and zero biases, then
the last normalization of every residual block is zeroed (scale and shift), so each block
starts as its shortcut followed by the nonlinearity.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from segflow.networks.blocks import (
    ConvNormAct,
    LayerOps,
    ResidualBlock,
    zero_last_norm_of_residual_blocks,
)
from segflow.networks.unet import UNet

__all__ = ["ResidualEncoder", "ResidualEncoderUNet"]


class ResidualEncoder(nn.Module):
    """Stem plus stages of residual blocks; returns every stage's output, finest first.

    Args:
        ops: the network's layer types.
        in_channels: input channels of the network.
        features_per_stage: output channels per stage (the stem has the first stage's).
        kernel_sizes: per stage, the kernel size per axis (the stem uses the first).
        strides: per stage, the stride per axis of its first block.
        blocks_per_stage: residual blocks per stage.
    """

    def __init__(
        self,
        ops: LayerOps,
        in_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        blocks_per_stage: Sequence[int],
    ) -> None:
        super().__init__()
        self.stem = ConvNormAct(ops, in_channels, features_per_stage[0], kernel_sizes[0])
        stages = []
        channels = features_per_stage[0]
        for features, kernel, stride, n in zip(
            features_per_stage, kernel_sizes, strides, blocks_per_stage, strict=True
        ):
            stages.append(
                nn.Sequential(
                    *(
                        ResidualBlock(
                            ops,
                            channels if i == 0 else features,
                            features,
                            kernel,
                            stride if i == 0 else 1,
                        )
                        for i in range(n)
                    )
                )
            )
            channels = features
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class ResidualEncoderUNet(UNet):
    """nnU-Net's residual-encoder U-Net, initialized as nnU-Net does (arguments:
    :class:`~segflow.networks.unet.UNet`; ``blocks_per_stage_encoder`` counts residual
    blocks)."""

    encoder_class = ResidualEncoder

    def initialize(self) -> None:
        """He initialization, then the last normalization of each residual block zeroed."""
        super().initialize()
        zero_last_norm_of_residual_blocks(self)
