"""The networks a plan or an experiment may name, by name.

Every entry builds a :class:`~segflow.networks.unet.UNet` from the same arguments (see
:class:`NetworkBuilder`), so :func:`~segflow.networks.build_network` builds any of them from a
configuration of the plans. A new network is a class with that constructor and one line here.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Protocol

from segflow.networks.blocks import LayerOps
from segflow.networks.resenc import ResidualEncoderUNet
from segflow.networks.unet import PlainConvUNet, UNet
from segflow.planning.presets import PLAIN_UNET, RESIDUAL_ENCODER_UNET

__all__ = ["ARCHITECTURES", "NETWORKS", "NetworkBuilder", "unknown_network"]


class NetworkBuilder(Protocol):
    """What builds a network: the constructor of :class:`~segflow.networks.PlainConvUNet`."""

    def __call__(
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
    ) -> UNet: ...


NETWORKS: dict[str, NetworkBuilder] = {
    PLAIN_UNET: PlainConvUNet,
    RESIDUAL_ENCODER_UNET: ResidualEncoderUNet,
}
"""Network builders by the name a plan's ``architecture`` (or an experiment) gives them;
the names are nnU-Net's."""

ARCHITECTURES = NETWORKS
"""Another name of :data:`NETWORKS` (the architectures a plan may name)."""


def unknown_network(name: object) -> str:
    """The message for a network name that is not in :data:`NETWORKS`, with the closest one."""
    close = difflib.get_close_matches(str(name), list(NETWORKS), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"architecture '{name}' is not supported{hint} (valid: {', '.join(NETWORKS)})"
