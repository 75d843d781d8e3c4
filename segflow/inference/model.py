"""A trained fold as a network ready to predict: built from the plans, weights from the
fold's checkpoint.

The checkpoint (written by :class:`~segflow.training.trainer.FoldTrainer`) records the
configuration, the network's input channels and outputs and the axes mirrored in training;
the plans give the topology. Loading never runs pickled code (``weights_only``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from segflow.errors import Problem, SegflowError
from segflow.planning.plans import Plans
from segflow.training.checkpoint import load_checkpoint

__all__ = ["TrainedFold", "load_trained_fold"]


@dataclass(frozen=True)
class TrainedFold:
    """One fold's network in evaluation mode, without deep-supervision heads."""

    network: nn.Module
    configuration: str
    fold: int
    mirror_axes: tuple[int, ...]
    checkpoint: Path
    epoch: int


def load_trained_fold(
    checkpoint: str | os.PathLike[str],
    plans: Plans,
    device: str | torch.device = "cpu",
) -> TrainedFold:
    """Build the fold's network from ``plans`` and load the checkpoint's weights.

    Raises:
        SegflowError: the checkpoint is unreadable, names a configuration the plans do not
            have, or its weights do not fit the network the plans describe (plans of another
            experiment).
    """
    from segflow.networks import build_network

    path = Path(checkpoint)
    state = load_checkpoint(path)
    name = state["configuration"]
    if name not in plans:
        raise SegflowError(
            "checkpoint does not match the plans",
            [
                Problem(
                    str(path),
                    f"trained configuration '{name}' is not in the plans "
                    f"({', '.join(plans.configuration_names)})",
                )
            ],
        )
    network = build_network(
        plans.configuration(name),
        state["num_input_channels"],
        state["num_outputs"],
        deep_supervision=False,
    )
    try:
        network.load_state_dict(state["network"])
    except RuntimeError as err:
        raise SegflowError(
            "checkpoint does not match the plans",
            [Problem(str(path), f"its weights do not fit the planned network: {err}")],
        ) from None
    network.to(device).eval()
    return TrainedFold(
        network=network,
        configuration=name,
        fold=int(state["fold"]),
        mirror_axes=tuple(int(a) for a in state["mirror_axes"]),
        checkpoint=path,
        epoch=int(state["epoch"]),
    )
