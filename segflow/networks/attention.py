"""Axial self-attention for the decoder of the BraTS 2021 winner (Luu & Park, arXiv 2112.04653).

Axial attention (Ho et al., arXiv 1912.12180) attends along one spatial axis at a time: the
positions of that axis are the sequence, every other axis is part of the batch. Attending
along each axis in turn lets every voxel reach every other in ``ndim`` steps at a cost linear
in each axis' length instead of quadratic in the number of voxels.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["AxialAttention", "attend_along_axis"]


def attend_along_axis(x: Tensor, axis: int, attention: nn.MultiheadAttention) -> Tensor:
    """Self-attention of ``x`` (``(B, C, *spatial)``) along spatial ``axis`` (0 = the first).

    The other spatial axes join the batch; the channels are the embedding.
    """
    dim = axis + 2
    # (B, C, ..., L, ...) -> (B, ..., ..., L, C): the sequence second to last, channels last.
    moved = x.movedim(1, -1).movedim(dim - 1, -2)
    shape = moved.shape
    tokens = moved.reshape(-1, shape[-2], shape[-1])
    out, _ = attention(tokens, tokens, tokens, need_weights=False)
    return out.reshape(shape).movedim(-2, dim - 1).movedim(-1, 1)


class AxialAttention(nn.Module):
    """Multi-head self-attention along each spatial axis in turn, added to the input.

    ``y = x + project_out(attend_last(... attend_first(project_in(x))))``: a 1x1 convolution
    maps the channels to ``heads * head_size`` (only when the two differ), one multi-head
    attention per spatial axis runs in order of the axes, and a 1x1 convolution maps back.
    No positional encoding is added: the convolutions' zero padding already tells positions
    near the border apart.

    Args:
        ndim: spatial dimensions, 2 or 3.
        channels: input (and output) channels.
        heads: attention heads.
        head_size: channels per head.
    """

    def __init__(self, ndim: int, channels: int, heads: int, head_size: int) -> None:
        super().__init__()
        embed = heads * head_size
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        self.heads = heads
        self.head_size = head_size
        self.project_in = conv(channels, embed, 1) if embed != channels else nn.Identity()
        self.axes = nn.ModuleList(
            nn.MultiheadAttention(embed, heads, batch_first=True) for _ in range(ndim)
        )
        self.project_out = conv(embed, channels, 1) if embed != channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.project_in(x)
        for axis, attention in enumerate(self.axes):
            h = attend_along_axis(h, axis, attention)
        return x + self.project_out(h)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_size={self.head_size}"
