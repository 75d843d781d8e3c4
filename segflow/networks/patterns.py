"""Deterministic weights, inputs and checksums for comparing two implementations of a network.

Instead of a random generator (whose streams differ between libraries and versions), every
tensor comes from a formula of its shape and an index, so two builds of the same architecture,
even in different interpreters, hold the same float64 weights position by position and can be
compared by their outputs' checksums. ``benchmarks/compare_networks_nnunet.py`` runs this
module's text in nnU-Net's interpreter too, and ``tests/networks/test_build.py`` checks
segflow's networks against the checksums it recorded: the module imports only ``math`` and
``torch``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "grad_loss",
    "grad_summaries",
    "init_summary",
    "output_checksums",
    "pattern",
    "pattern_input",
    "set_pattern_weights",
]


def pattern(shape: tuple[int, ...], index: int) -> torch.Tensor:
    """Float64 values in (-1, 1) of ``shape``, irregular enough to stand in for random
    numbers; ``index`` gives another tensor of the same shape."""
    n = math.prod(shape)
    k = torch.arange(n, dtype=torch.float64)
    return torch.frac(torch.sin(k * 12.9898 + index * 78.233) * 43758.5453).reshape(shape)


def set_pattern_weights(net: torch.nn.Module) -> None:
    """Float64 weights by position: a He-like spread for kernels, around 1 for vectors."""
    net.double()
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            u = pattern(tuple(p.shape), i)
            if p.ndim > 1:
                p.copy_(u * math.sqrt(6.0 / (p.numel() / p.shape[0])))
            else:
                p.copy_(1.0 + 0.5 * u)


def pattern_input(shape: tuple[int, ...] | list[int]) -> torch.Tensor:
    """The input of a comparison: values in (-2, 2)."""
    return 2.0 * pattern(tuple(shape), -1)


def output_checksums(outputs: list[torch.Tensor]) -> list[dict[str, float]]:
    """Sum, absolute sum and a position-weighted sum of each output."""
    return [
        {
            "sum": float(o.sum()),
            "abs_sum": float(o.abs().sum()),
            "weighted_sum": float((o * pattern(tuple(o.shape), -7)).sum()),
        }
        for o in outputs
    ]


def grad_loss(outputs: list[torch.Tensor]) -> torch.Tensor:
    """A scalar of every output whose gradients reach every parameter."""
    return sum((o * pattern(tuple(o.shape), -2 - i)).sum() for i, o in enumerate(outputs))


def grad_summaries(net: torch.nn.Module) -> list[list[float]]:
    """Per parameter: the absolute sum and a position-weighted sum of its gradient."""
    return [
        [float(p.grad.abs().sum()), float((p.grad * pattern(tuple(p.shape), 7)).sum())]
        for p in net.parameters()
    ]


def init_summary(net: torch.nn.Module) -> list[dict[str, Any]]:
    """Per parameter after initialization: its size, whether it is all zeros or ones, its
    standard deviation."""
    out = []
    for p in net.parameters():
        d = p.detach().double()
        const = "zeros" if bool((d == 0).all()) else "ones" if bool((d == 1).all()) else None
        std = float(d.std()) if d.numel() > 1 else 0.0
        out.append({"numel": d.numel(), "const": const, "std": std})
    return out
