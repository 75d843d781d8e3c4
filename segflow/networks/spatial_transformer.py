"""A spatial transformer network (Jaderberg et al., NeurIPS 2015) in front of any network.

The SAS training framework of JMedSeg puts a spatial transformer before the segmentation
network: a small localization network looks at the image and predicts an affine transform,
the image is resampled through it, and the segmentation network sees the resampled image.
For segmentation the labels stay in the image's own frame, so here the network's output (each
deep-supervision output too) is resampled back through the inverse transform: the transformer
learns the view of the image the network segments best, and the loss, the sliding window and
the predictions keep the frame of the data.

The localization network's last layer starts with zero weights and the identity as its bias,
so at initialization the transform is the identity and the whole is the wrapped network
(output equal to input up to float rounding of the resampling grid).

The localization network learns at a hundredth of the segmentation network's learning rate
(:data:`LOCALIZATION_LR_SCALE`; ``network.spatial_transformer_lr_scale`` sets another): at
nnU-Net's rate (SGD, 0.01, momentum 0.99) the predicted affine left the image within 20
iterations on ISBI 2012 (its translations reached -2 and -3, in units of half the image) and
the Dice fell from 0.38 to 0.01; the trainer puts the localization network's parameters in
a group of their own (:func:`segflow.training.optimization.parameter_groups`).

Coordinates are normalized to [-1, 1] per axis (``align_corners=False``), so one transform
applies to every resolution of deep supervision. The input is padded with zeros outside the
image, the outputs with their border values. On CUDA with ``deterministic``, PyTorch has no
deterministic backward pass for ``grid_sample``: such a run fails with PyTorch's error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LOCALIZATION_LR_SCALE", "SpatialTransformer", "identity_affine"]

#: The factor on the learning rate of the localization network (see the module's text).
LOCALIZATION_LR_SCALE = 0.01
_WIDTH = 16
_HIDDEN = 32


def identity_affine(ndim: int) -> Tensor:
    """The identity as the ``(ndim, ndim + 1)`` matrix ``affine_grid`` takes."""
    return torch.cat((torch.eye(ndim), torch.zeros(ndim, 1)), dim=1)


class SpatialTransformer(nn.Module):
    """``network`` behind a learned affine resampling of its input (and the inverse one of
    its outputs).

    Args:
        network: the segmentation network (a U-Net of the plans or a zoo network).
        ndim: spatial axes (2 or 3).
        in_channels: the input's channels.
        width: channels of the localization network's first convolution (then doubled).
        lr_scale: the factor on the localization network's learning rate (``None``:
            :data:`LOCALIZATION_LR_SCALE`), which the trainer reads from
            ``learning_rate_scales``.
    """

    def __init__(
        self,
        network: nn.Module,
        ndim: int,
        in_channels: int,
        width: int = _WIDTH,
        lr_scale: float | None = None,
    ):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"a spatial transformer needs 2 or 3 spatial axes, got {ndim}")
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        pool = nn.AdaptiveAvgPool2d if ndim == 2 else nn.AdaptiveAvgPool3d
        self.ndim = ndim
        self.localization = nn.Sequential(
            conv(in_channels, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.01, inplace=True),
            conv(width, 2 * width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.01, inplace=True),
            conv(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.01, inplace=True),
            pool(1),
            nn.Flatten(),
            nn.Linear(2 * width, _HIDDEN),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Linear(_HIDDEN, ndim * (ndim + 1)),
        )
        last = self.localization[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(identity_affine(ndim).flatten())
        self.network = network
        inner = getattr(network, "head_prefixes", ("decoder.heads.",))
        self.head_prefixes = tuple(f"network.{p}" for p in inner)
        #: State-dict prefix -> factor on the learning rate (the trainer's parameter groups).
        self.learning_rate_scales = {
            **{f"network.{k}": v for k, v in getattr(network, "learning_rate_scales", {}).items()},
            "localization.": LOCALIZATION_LR_SCALE if lr_scale is None else float(lr_scale),
        }

    def set_deep_supervision(self, enabled: bool) -> SpatialTransformer:
        """Switch the wrapped network's deep supervision; returns ``self``."""
        self.network.set_deep_supervision(enabled)
        return self

    @property
    def deep_supervision(self) -> bool:
        return bool(self.network.deep_supervision)

    @property
    def num_deep_supervision_outputs(self) -> int:
        return int(self.network.num_deep_supervision_outputs)

    @property
    def deep_supervision_scales(self) -> list[tuple[float, ...]] | None:
        """The wrapped network's own scales (a zoo network's), or ``None`` (the plans')."""
        return getattr(self.network, "deep_supervision_scales", None)

    def affine(self, x: Tensor) -> Tensor:
        """The predicted transforms, ``(B, ndim, ndim + 1)``, in float32."""
        return self.localization(x).float().view(-1, self.ndim, self.ndim + 1)

    def transform(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        """``x`` resampled through ``theta`` (default: the predicted transform)."""
        if theta is None:
            theta = self.affine(x)
        return _warp(x, theta, "zeros")

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        theta = self.affine(x)
        outputs = self.network(_warp(x, theta, "zeros"))
        inverse = _inverse(theta)
        if isinstance(outputs, (list, tuple)):
            return [_warp(o, inverse, "border") for o in outputs]
        return _warp(outputs, inverse, "border")


def _inverse(theta: Tensor) -> Tensor:
    """The inverse affine transforms of ``theta`` ``(B, n, n + 1)``."""
    matrix, shift = theta[..., :-1], theta[..., -1:]
    inverted = torch.linalg.inv(matrix)
    return torch.cat((inverted, -inverted @ shift), dim=-1)


def _warp(x: Tensor, theta: Tensor, padding: str) -> Tensor:
    grid = F.affine_grid(theta.to(torch.float32), list(x.shape), align_corners=False)
    return F.grid_sample(
        x.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False
    ).to(x.dtype)
