"""The plain convolutional U-Net of nnU-Net v2 (``PlainConvUNet``) and the shared decoder.

Encoder: per stage, a stack of conv-norm-nonlin blocks whose first convolution carries the
stage's stride (strided convolutions downsample; there is no pooling). Decoder, from the
bottleneck up: a transposed convolution (kernel = stride) upsamples, the encoder's skip of that
resolution is concatenated, a stack of conv blocks merges the two, and a 1x1 convolution maps to
the outputs. Every decoder stage has its head so that a network trained with deep supervision
loads into one without, and back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from segflow.networks.attention import AxialAttention
from segflow.networks.blocks import LayerOps, conv_stack, initialize_he

__all__ = ["PlainConvEncoder", "PlainConvUNet", "UNet", "UNetDecoder"]


class PlainConvEncoder(nn.Module):
    """Stages of plain conv blocks; returns every stage's output (the skips), finest first.

    Args:
        ops: the network's layer types.
        in_channels: input channels of the network.
        features_per_stage: output channels per stage.
        kernel_sizes: per stage, the kernel size per axis.
        strides: per stage, the stride per axis of its first convolution.
        convs_per_stage: conv blocks per stage.
    """

    def __init__(
        self,
        ops: LayerOps,
        in_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        convs_per_stage: Sequence[int],
    ) -> None:
        super().__init__()
        stages = []
        channels = in_channels
        for features, kernel, stride, n in zip(
            features_per_stage, kernel_sizes, strides, convs_per_stage, strict=True
        ):
            stages.append(conv_stack(ops, n, channels, features, kernel, stride))
            channels = features
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Upsample, concatenate the skip, merge with conv blocks, predict; bottleneck first.

    Args:
        ops: the network's layer types.
        encoder_features: the encoder's output channels per stage, finest first.
        kernel_sizes: the encoder's kernel sizes per stage (a decoder stage uses those of the
            resolution it works at).
        strides: the encoder's strides per stage (a decoder stage undoes the stride of the
            encoder stage below it).
        convs_per_stage: conv blocks per decoder stage, from the bottleneck up.
        num_outputs: output channels of every head (classes or regions).
        decoder_features: output channels per resolution, finest first (the last, the
            bottleneck's, is unused); ``None``: those of the encoder. A wider encoder (BraTS
            2021's "larger encoder") keeps the decoder's widths: its transposed convolutions
            and merging convolutions then take the wider skips and bottleneck as input.
        attention: per decoder stage from the bottleneck up, ``(heads, head_size)`` of an
            :class:`~segflow.networks.attention.AxialAttention` added to the upsampled
            features before the skip is concatenated, or ``None`` for none; ``None``: none.
    """

    def __init__(
        self,
        ops: LayerOps,
        encoder_features: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        convs_per_stage: Sequence[int],
        num_outputs: int,
        decoder_features: Sequence[int] | None = None,
        attention: Sequence[tuple[int, int] | None] | None = None,
    ) -> None:
        super().__init__()
        widths = list(encoder_features if decoder_features is None else decoder_features)
        steps = len(encoder_features) - 1
        attention = list(attention) if attention is not None else [None] * steps
        upsamplers, stages, heads, attentions = [], [], [], []
        ones = (1,) * ops.ndim
        for i, level in enumerate(reversed(range(steps))):
            below = encoder_features[level + 1] if i == 0 else widths[level + 1]
            features, skip = widths[level], encoder_features[level]
            upsamplers.append(ops.transposed_conv(below, features, strides[level + 1]))
            stages.append(
                conv_stack(ops, convs_per_stage[i], features + skip, features, kernel_sizes[level])
            )
            heads.append(ops.conv(features, num_outputs, ones, bias=True))
            spec = attention[i]
            attentions.append(
                nn.Identity() if spec is None else AxialAttention(ops.ndim, features, *spec)
            )
        # Registered in the reference's order (merging convolutions, upsampling, heads) so that
        # parameters line up with nnU-Net's by position; the attention (no parameters when
        # absent) comes last.
        self.stages = nn.ModuleList(stages)
        self.upsamplers = nn.ModuleList(upsamplers)
        self.heads = nn.ModuleList(heads)
        self.attention = nn.ModuleList(attentions)

    def forward(self, skips: Sequence[Tensor], deep_supervision: bool) -> Tensor | list[Tensor]:
        """Outputs from the encoder's ``skips`` (finest first, the bottleneck last).

        Returns:
            With ``deep_supervision``, one output per decoder stage, the finest first;
            otherwise the finest output alone.
        """
        x = skips[-1]
        outputs = []
        last = len(self.stages) - 1
        for i, (upsample, attend, stage, head) in enumerate(
            zip(self.upsamplers, self.attention, self.stages, self.heads, strict=True)
        ):
            x = stage(torch.cat((attend(upsample(x)), skips[-(i + 2)]), dim=1))
            if deep_supervision or i == last:
                outputs.append(head(x))
        if not deep_supervision:
            return outputs[0]
        return outputs[::-1]


class UNet(nn.Module):
    """An encoder returning skips and a :class:`UNetDecoder`, with switchable deep supervision.

    The constructor every U-Net of the plans shares (the registry builds each from the same
    arguments, :mod:`segflow.networks.registry`); a subclass names its encoder
    (:attr:`encoder_class`) and may add to :meth:`initialize`.

    Args:
        ops: the network's layer types.
        in_channels: input channels (image channels, plus classes for a cascade stage).
        num_outputs: output channels (classes or regions).
        features_per_stage: channels per encoder stage.
        kernel_sizes: per stage, the kernel size per axis.
        strides: per stage, the downsampling stride per axis (the first usually all ones).
        blocks_per_stage_encoder: conv blocks (plain) or residual blocks per encoder stage.
        convs_per_stage_decoder: conv blocks per decoder stage, from the bottleneck up.
        deep_supervision: return every decoder resolution (training) or only the finest
            (inference); switch later with :meth:`set_deep_supervision`.
        decoder_features: see :class:`UNetDecoder` (``None``: as the encoder).
        attention: see :class:`UNetDecoder` (``None``: no attention).
    """

    #: The encoder: built from ``(ops, in_channels, features_per_stage, kernel_sizes, strides,
    #: blocks_per_stage_encoder)``, it returns every stage's output, finest first.
    encoder_class: type[nn.Module]

    def __init__(
        self,
        ops: LayerOps,
        in_channels: int,
        num_outputs: int,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        blocks_per_stage_encoder: Sequence[int],
        convs_per_stage_decoder: Sequence[int],
        deep_supervision: bool = True,
        *,
        decoder_features: Sequence[int] | None = None,
        attention: Sequence[tuple[int, int] | None] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = self.encoder_class(
            ops, in_channels, features_per_stage, kernel_sizes, strides, blocks_per_stage_encoder
        )
        self.decoder = UNetDecoder(
            ops,
            features_per_stage,
            kernel_sizes,
            strides,
            convs_per_stage_decoder,
            num_outputs,
            decoder_features,
            attention,
        )
        self.deep_supervision = bool(deep_supervision)
        self.initialize()

    def initialize(self) -> None:
        """He initialization of every convolution."""
        initialize_he(self)

    def set_deep_supervision(self, enabled: bool) -> UNet:
        """Return all resolutions (``True``) or only the finest output; returns ``self``."""
        self.deep_supervision = bool(enabled)
        return self

    @property
    def num_deep_supervision_outputs(self) -> int:
        """Outputs with deep supervision on: one per decoder stage (``n_stages - 1``)."""
        return len(self.decoder.heads)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Logits for ``x`` of shape ``(B, C, *spatial)``.

        Returns:
            With deep supervision, a list of ``(B, num_outputs, *spatial_i)``, finest first
            (``spatial_0`` is the input's size); otherwise the finest alone.
        """
        return self.decoder(self.encoder(x), self.deep_supervision)


class PlainConvUNet(UNet):
    """nnU-Net's plain convolutional U-Net, He-initialized (arguments: :class:`UNet`)."""

    encoder_class = PlainConvEncoder
