"""How much GPU memory a U-Net needs, as the number of feature-map voxels it produces.

Training memory is dominated by the activations kept for the backward pass, and those scale
with the number of output voxels of every convolution (times channels). nnU-Net sizes
patches by exactly this count, summed over one forward pass of one sample, and compares it
with a preset's reference value; this module computes the same count analytically from the
topology, without building a network.

Counted per convolution: ``output channels x output voxels``. Not counted: the input, norms
and nonlinearities (in place), pooling in residual shortcuts, and the deep-supervision heads
(nnU-Net estimates the network as built without deep supervision, so only the final
full-resolution segmentation layer counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from segflow.planning.presets import PLAIN_UNET, RESIDUAL_ENCODER_UNET

__all__ = ["feature_map_voxels", "stage_shapes"]


def stage_shapes(
    patch_size: Sequence[int], strides: Sequence[Sequence[int]]
) -> list[tuple[int, ...]]:
    """Feature-map shape of every encoder stage (after its stride; floor division)."""
    shapes = []
    size = tuple(int(s) for s in patch_size)
    for stride in strides:
        size = tuple(s // st for s, st in zip(size, stride, strict=True))
        shapes.append(size)
    return shapes


def _plain_encoder(shapes, features, n_conv):
    # Each stage: its first convolution applies the stride, all run at the stage's shape.
    return sum(n * f * math.prod(s) for s, f, n in zip(shapes, features, n_conv, strict=True))


def _residual_encoder(patch_size, shapes, features, n_blocks):
    # The stem: one convolution to features[0] at full resolution.
    total = features[0] * math.prod(patch_size)
    in_shape = tuple(patch_size)
    in_features = features[0]
    for s, f, n in zip(shapes, features, n_blocks, strict=True):
        voxels = math.prod(s)
        # Every block has two convolutions; the first block of a stage also projects its
        # shortcut with a 1x1 convolution when the stride or the width changes.
        total += n * 2 * f * voxels
        if in_features != f or in_shape != s:
            total += f * voxels
        in_shape, in_features = s, f
    return total


def _decoder(shapes, features, n_conv_decoder, num_classes):
    # Decoder stage k (from the bottleneck up) works at the shape of the encoder stage it
    # is joined to: a transposed convolution, then its convolutions.
    total = 0
    n_dec = len(shapes) - 1
    for k in range(n_dec):
        level = n_dec - 1 - k  # encoder stage the k-th decoder stage joins
        voxels = math.prod(shapes[level])
        total += (n_conv_decoder[k] + 1) * features[level] * voxels
    if n_dec == 0:
        return total  # a single-stage network has no decoder and nnU-Net counts no output
    return total + num_classes * math.prod(shapes[0])


def feature_map_voxels(
    architecture: str,
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    features_per_stage: Sequence[int],
    blocks_per_stage_encoder: Sequence[int],
    blocks_per_stage_decoder: Sequence[int],
    num_classes: int,
) -> int:
    """Feature-map voxels of one forward pass of one sample.

    Args:
        architecture: ``PlainConvUNet`` or ``ResidualEncoderUNet``.
        patch_size: input patch.
        strides: per stage stride (first is all ones).
        features_per_stage: channels per stage.
        blocks_per_stage_encoder: convolutions (plain) or residual blocks (ResEnc) per stage.
        blocks_per_stage_decoder: convolutions per decoder stage, from the bottleneck up.
        num_classes: channels of the segmentation output.

    Returns:
        The count, an exact integer.

    Raises:
        ValueError: an unknown architecture or inconsistent lengths.
    """
    n = len(strides)
    if not (len(features_per_stage) == len(blocks_per_stage_encoder) == n):
        raise ValueError(
            f"strides, features_per_stage and encoder blocks need one entry per stage ({n}), got "
            f"{len(features_per_stage)} features and {len(blocks_per_stage_encoder)} blocks"
        )
    if len(blocks_per_stage_decoder) != n - 1:
        raise ValueError(
            f"decoder blocks need {n - 1} entries, got {len(blocks_per_stage_decoder)}"
        )
    shapes = stage_shapes(patch_size, strides)
    if architecture == PLAIN_UNET:
        encoder = _plain_encoder(shapes, features_per_stage, blocks_per_stage_encoder)
    elif architecture == RESIDUAL_ENCODER_UNET:
        encoder = _residual_encoder(
            tuple(int(p) for p in patch_size), shapes, features_per_stage, blocks_per_stage_encoder
        )
    else:
        raise ValueError(
            f"unknown architecture '{architecture}'; valid: {PLAIN_UNET}, {RESIDUAL_ENCODER_UNET}"
        )
    return encoder + _decoder(shapes, features_per_stage, blocks_per_stage_decoder, num_classes)
