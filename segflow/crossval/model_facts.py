"""What a trained model costs, for the ablation table: parameters and seconds per iteration,
read from its folds' final checkpoints."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.training.checkpoint import load_checkpoint

__all__ = ["model_facts"]

#: State-dict entries that are buffers, not trained parameters (batch normalization's).
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def model_facts(checkpoints: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """``parameters`` (of the first fold's network: the folds share their architecture),
    ``seconds_per_iteration`` (median over every fold's epochs of the epoch's seconds, its
    validation batches included, over its training iterations; None without a recorded
    epoch; a measurement of the machine, not a result), the ``experiment`` and the planner
    ``preset`` of its plans (an experiment may plan with its own).

    Raises:
        SegflowError: no checkpoint, or one that cannot be read.
    """
    if not checkpoints:
        raise SegflowError("no checkpoint to describe the model with")
    states = [load_checkpoint(path) for path in checkpoints]
    network = states[0]["network"]
    # Integer tensors are index buffers (SwinUNETR's relative position indices), never weights.
    parameters = sum(
        int(tensor.numel())
        for key, tensor in network.items()
        if not key.endswith(_BUFFER_SUFFIXES) and tensor.is_floating_point()
    )
    per_iteration = []
    problems = []
    for path, state in zip(checkpoints, states, strict=True):
        settings = state.get("settings") or {}
        iterations = settings.get("iterations_per_epoch")
        rows = (state.get("history") or {}).get("rows", [])
        if not iterations:
            problems.append(Problem(str(path), "records no iterations_per_epoch"))
            continue
        per_iteration += [row["epoch_seconds"] / iterations for row in rows]
    if problems:
        raise SegflowError("checkpoints without their training settings", problems)
    experiments = {(state.get("settings") or {}).get("experiment") for state in states}
    presets = {(state.get("plans") or {}).get("preset") for state in states}
    return {
        "parameters": parameters,
        "seconds_per_iteration": statistics.median(per_iteration) if per_iteration else None,
        "experiment": experiments.pop() if len(experiments) == 1 else None,
        "preset": presets.pop() if len(presets) == 1 else None,
    }
