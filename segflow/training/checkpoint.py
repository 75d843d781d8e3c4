"""Training checkpoints: state dicts and plain data, written atomically, loaded safely.

A checkpoint holds everything a resumed run needs to continue as if it had never stopped: the
network, optimizer and grad-scaler state dicts, the position in training (epoch and iteration
within it, with the partial epoch's losses), the history of every finished epoch, the best EMA
pseudo Dice, and every random-number state (torch CPU and CUDA, numpy's global generator,
Python's ``random``). It also records what it was trained for (configuration, fold, settings
signature, network inputs and outputs) so that inference can rebuild the network from the
checkpoint and the plans, and a resume never continues a run made with other settings.

Only tensors, numbers, strings, lists, tuples and dicts go in, so :func:`load_checkpoint`
reads with ``torch.load(weights_only=True)``: a checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segflow.errors import Problem, SegflowError
from segflow.io.atomic import atomic_path
from segflow.io.torch_files import checkpoint_file_reason

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

#: Bumped when the checkpoint layout changes incompatibly.
CHECKPOINT_FORMAT = 1


def capture_rng_state() -> dict[str, Any]:
    """Every global random-number state, as tensors and plain data."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first entry ``torch.load(weights_only=True)`` refuses."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint entry {where}: key {key!r} is not a str or int")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN) or isinstance(value, np.generic):
        raise TypeError(
            f"checkpoint entry {where} is a {type(value).__name__}; checkpoints hold tensors "
            "and plain data only"
        )


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (a killed job leaves the old file or none).

    Raises:
        TypeError: ``state`` holds something other than tensors and plain data (which
            :func:`load_checkpoint` could not read back).
    """
    _check_plain(state, "state")
    # Through a file object, the zip archive's inner folder is always "archive"; given the
    # (random) temporary name, torch.save would name it after that, and the same state would
    # give other bytes at every save (the exported model's hashes with it).
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, stream)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, without running pickled code.

    Raises:
        SegflowError: the file is unreadable, not a segflow checkpoint, or of another format.
    """
    path = Path(path)
    reason = checkpoint_file_reason(path) if path.is_file() else None
    if reason is not None:  # PyTorch's unpickler would say "pop from empty list" or the like
        raise SegflowError("cannot read a checkpoint", [Problem(str(path), reason)])
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise SegflowError(
            "cannot read a checkpoint",
            [Problem(str(path), f"{type(err).__name__}: {err}".splitlines()[0])],
        ) from None
    if not isinstance(state, dict) or "format" not in state:
        raise SegflowError(
            "not a segflow checkpoint", [Problem(str(path), "no 'format' entry in the file")]
        )
    if state["format"] != CHECKPOINT_FORMAT:
        raise SegflowError(
            "checkpoint of another format",
            [
                Problem(
                    str(path), f"format {state['format']}, this segflow reads {CHECKPOINT_FORMAT}"
                )
            ],
        )
    return state
