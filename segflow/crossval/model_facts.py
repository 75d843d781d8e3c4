"""What a trained model is and costs, for the ablation table: the settings that decide its
result, parameters and seconds per iteration, read from its folds' final checkpoints."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.training.checkpoint import load_checkpoint

__all__ = ["model_facts", "result_settings"]

#: Settings that never change a result, or that every model of a run differs in by design.
_NOT_COMPARED = ("experiment", "seed", "device", "threads", "num_workers", "checkpoint_every",
                 "num_processes")  # fmt: skip
#: The checkpoint a fold of an ``ssl_pretrain`` experiment starts from (per fold).
_SSL_CHECKPOINT = "checkpoint_ssl.pt"


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The training settings that decide a model's result, flat (``network.norm``), as the
    ablation table compares them; the pretrained weights by what they are, not their path
    (each fold of a self-supervised experiment starts from its own)."""
    flat: dict[str, Any] = {}
    for key, value in sorted(settings.items()):
        if key in _NOT_COMPARED:
            continue
        if isinstance(value, dict) and key != "loss_parameters":
            flat.update({f"{key}.{k}": v for k, v in sorted(value.items())})
        elif key == "pretrained_weights" and value:
            name = os.path.basename(str(value))
            flat[key] = "self-supervised, per fold" if name == _SSL_CHECKPOINT else name
        else:
            flat[key] = value
    return flat


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
        "settings": result_settings(states[0].get("settings") or {}),
    }
