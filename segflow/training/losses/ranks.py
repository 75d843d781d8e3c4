"""Batch sums over the data-parallel ranks, so that a loss of a split batch is the loss of the
whole batch.

With ``num_processes`` N > 1 every rank computes the loss of its slice of the global batch and
DDP averages the ranks' gradients. A term that is a mean over samples or voxels (cross-entropy
without an ignore label, per-sample Dice) needs nothing more: the mean over the ranks of the
slices' means is the batch's mean. A term built from sums over the whole batch (batch Dice:
intersection, prediction and target sums over every sample) or divided by a count of the whole
batch (a mean over the annotated voxels) is not a mean of the slices' terms; for those the
losses call :func:`batch_sum` and :func:`batch_count`, which return the sums of the whole
batch while :func:`summing_over_ranks` is active:

* :func:`batch_count`: the sum over the ranks, without gradient (voxel and label counts).
* :func:`batch_sum`: the sum over the ranks; its gradient with respect to this rank's own part is
  N instead of 1, so that DDP's average over the ranks of ``N * dL/d(own part)`` is the
  gradient of the whole batch's loss. The other ranks' parts are constants here, their
  gradients flow on their own ranks. Every rank then holds the same value of such a term,
  the value of the single-process loss; no collective runs in the backward pass.

Outside :func:`summing_over_ranks` (one process, or a rank that computes for itself) both
return their argument unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor

__all__ = ["batch_count", "batch_sum", "summing_over_ranks", "world_size"]

_world_size = 1


@contextlib.contextmanager
def summing_over_ranks(size: int) -> Iterator[None]:
    """Within this block, :func:`batch_sum` and :func:`batch_count` sum over ``size`` ranks of
    the default process group (every rank must compute the same loss terms in the same order).
    A ``size`` of 1 changes nothing."""
    global _world_size
    previous, _world_size = _world_size, int(size)
    try:
        yield
    finally:
        _world_size = previous


def world_size() -> int:
    """How many ranks the active :func:`summing_over_ranks` sums over (1 outside it)."""
    return _world_size


def _all_reduced(value: Tensor) -> Tensor:
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def batch_count(value: Tensor) -> Tensor:
    """``value`` summed over the ranks, without gradient (a count of the whole batch)."""
    if _world_size == 1:
        return value
    return _all_reduced(value)


def batch_sum(value: Tensor) -> Tensor:
    """``value`` summed over the ranks; the gradient of this rank's part scaled by the number of
    ranks (see the module's docstring)."""
    if _world_size == 1:
        return value
    own = value - value.detach()  # zero, with the gradient of ``value``
    return _all_reduced(value) + _world_size * own
