"""The optimizer and the learning-rate schedule of a fold's training.

nnU-Net's SGD with Nesterov momentum (or AdamW), gradients clipped by the trainer, and the
polynomial decay of the learning rate per epoch: ``lr = initial_lr * (1 - epoch / epochs) **
exponent``. A network may ask for a factor on the learning rate of some of its parameters
(``learning_rate_scales``: the spatial transformer's localization network); those form
parameter groups of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from segflow.training.settings import TrainingSettings

__all__ = ["build_optimizer", "parameter_groups", "poly_learning_rate", "set_learning_rate"]


def parameter_groups(network: nn.Module) -> list[dict[str, Any]]:
    """``network``'s parameters grouped by the factor on the learning rate its modules ask for
    (``learning_rate_scales``: state-dict prefix -> factor; the spatial transformer's
    localization network), each group ``{"params": [...], "lr_scale": factor}``; one group
    of factor 1 for a network that asks for none."""
    scales = dict(getattr(network, "learning_rate_scales", {}))
    groups: dict[float, list[nn.Parameter]] = {}
    for name, parameter in network.named_parameters():
        scale = next((f for prefix, f in scales.items() if name.startswith(prefix)), 1.0)
        groups.setdefault(float(scale), []).append(parameter)
    return [{"params": params, "lr_scale": scale} for scale, params in groups.items()]


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` for every parameter group, times the group's ``lr_scale`` (if any)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def build_optimizer(
    parameters: Iterable[nn.Parameter] | Iterable[dict[str, Any]], settings: TrainingSettings
) -> torch.optim.Optimizer:
    """The optimizer ``settings`` name: nnU-Net's SGD with Nesterov ``momentum``, or AdamW
    (PyTorch's betas; ``momentum`` is SGD's only). Either starts at ``initial_lr`` (times
    each group's ``lr_scale``, for groups of :func:`parameter_groups`) with
    ``weight_decay``; the poly schedule sets the rate of every epoch."""
    if settings.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            parameters, lr=settings.initial_lr, weight_decay=settings.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            parameters,
            lr=settings.initial_lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            nesterov=True,
        )
    set_learning_rate(optimizer, settings.initial_lr)
    return optimizer


def poly_learning_rate(initial_lr: float, epoch: int, epochs: int, exponent: float = 0.9) -> float:
    """nnU-Net's polynomial decay, evaluated at the start of ``epoch``."""
    return initial_lr * (1 - epoch / epochs) ** exponent
