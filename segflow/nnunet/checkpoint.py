"""Reading nnU-Net v2's checkpoints (``checkpoint_final.pth``, ``checkpoint_best.pth``) safely.

nnU-Net saves its checkpoints with ``torch.save`` of a plain dictionary: the network's state
dict, the optimizer's and grad scaler's, the training log, the trainer's ``__init__``
arguments (plans, configuration, fold, dataset.json, device), the trainer's class name and the
mirroring axes inference may use. They are pickles, and a pickle can run any code when it is
loaded. This module never unpickles anything but plain data: it first lists every global the
pickle names (``torch.serialization.get_unsafe_globals_in_checkpoint``, which reads the pickle's
opcodes without running them) and refuses the file if one is outside :data:`ALLOWED_GLOBALS`;
then it loads with ``torch.load(weights_only=True)`` under exactly that allow-list, so that even
a file the first check could not read cannot call anything else.

:data:`ALLOWED_GLOBALS` holds only what nnU-Net's own checkpoints contain besides tensors,
numbers, strings, lists, tuples and dicts: numpy scalars (the training log's Dice values and
losses) with their dtypes, and ``torch.device``. Nothing here reads ``postprocessing.pkl``:
nnU-Net writes the same decision as ``postprocessing.json``.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segflow.errors import Problem, SegflowError

__all__ = [
    "ALLOWED_GLOBALS",
    "NnUNetCheckpoint",
    "is_nnunet_checkpoint",
    "load_nnunet_checkpoint",
    "unsafe_globals",
]

logger = logging.getLogger(__name__)


def _numpy_dtype_classes() -> list[type]:
    """The dtype classes (``numpy.dtypes.Float64DType``, ...) of the plain numeric types."""
    names = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
             "uint16", "uint32", "uint64", "bool")  # fmt: skip
    return [type(np.dtype(name)) for name in names]


def _allowed() -> dict[str, Any]:
    """Pickle global name -> the object it may load as."""
    scalar = np._core.multiarray.scalar  # numpy >= 2 (numpy 1 wrote numpy.core.multiarray)
    allowed: dict[str, Any] = {
        "numpy._core.multiarray.scalar": scalar,
        "numpy.core.multiarray.scalar": scalar,
        "numpy.dtype": np.dtype,
        "torch.device": torch.device,
    }
    for cls in _numpy_dtype_classes():
        allowed[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return allowed


#: The globals an nnU-Net v2 checkpoint may name besides what ``weights_only`` loading allows
#: anyway (tensors, storages, ordered dicts and plain Python data).
ALLOWED_GLOBALS: dict[str, Any] = _allowed()

#: Entries segflow reads; nnU-Net 2.x writes all of them.
REQUIRED_KEYS = ("network_weights", "init_args", "trainer_name", "current_epoch")
#: The trainer's ``__init__`` arguments segflow reads.
REQUIRED_INIT_ARGS = ("plans", "configuration", "fold", "dataset_json")


@dataclass(frozen=True)
class NnUNetCheckpoint:
    """What segflow takes from an nnU-Net v2 checkpoint.

    Attributes:
        path: the file.
        network_weights: nnU-Net's state dict of the network (names as nnU-Net has them).
        trainer_name: the trainer class that wrote it.
        configuration: the trained configuration (``3d_fullres``, ...).
        fold: the fold (``"all"`` stays a string).
        plans: nnU-Net's plans the network was built from.
        dataset_json: the dataset.json it was trained with.
        mirror_axes: the axes inference may mirror (nnU-Net's
            ``inference_allowed_mirroring_axes``; empty: none).
        epoch: epochs trained.
    """

    path: Path
    network_weights: dict[str, torch.Tensor]
    trainer_name: str
    configuration: str
    fold: int | str
    plans: dict[str, Any]
    dataset_json: dict[str, Any]
    mirror_axes: tuple[int, ...]
    epoch: int


def unsafe_globals(path: str | os.PathLike[str]) -> list[str]:
    """The globals the pickle in ``path`` names that :data:`ALLOWED_GLOBALS` does not allow,
    found without running the pickle."""
    named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    return sorted(name for name in named if name not in ALLOWED_GLOBALS)


def is_nnunet_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like an nnU-Net checkpoint (a ``.pth`` torch zip) rather than
    a segflow one (``.pt``); decided by the name, nothing is loaded."""
    return Path(path).suffix == ".pth"


def _load_plain(path: Path) -> Any:
    """Unpickle ``path`` with nothing but plain data and :data:`ALLOWED_GLOBALS`."""
    where = str(path)
    if not path.is_file():
        raise SegflowError("nnU-Net checkpoint not found", [Problem(where, "file does not exist")])
    if zipfile.is_zipfile(path):
        refused = unsafe_globals(path)
        if refused:
            raise SegflowError(
                "refused to load an nnU-Net checkpoint that holds more than plain data",
                [
                    Problem(
                        where,
                        f"names {', '.join(refused)}: not a type nnU-Net stores in its "
                        "checkpoints (tensors, numbers, strings, lists, dicts, numpy scalars, "
                        "torch.device); loading it could run code, so it is not loaded",
                    )
                ],
            )
    allowed = [(obj, name) for name, obj in ALLOWED_GLOBALS.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an UnpicklingError names the global weights_only refused
        first = f"{type(err).__name__}: {err}".splitlines()[0]
        raise SegflowError(
            "cannot read the nnU-Net checkpoint as plain data (nothing in it was run)",
            [Problem(where, first)],
        ) from None


def _structure_problems(state: Any, where: str) -> list[Problem]:
    if not isinstance(state, Mapping):
        return [Problem(where, f"holds a {type(state).__name__}, not nnU-Net's checkpoint dict")]
    problems = [
        Problem(where, f"lacks '{key}': not a checkpoint nnU-Net v2's trainer wrote")
        for key in REQUIRED_KEYS
        if key not in state
    ]
    init_args = state.get("init_args")
    if "init_args" in state and not isinstance(init_args, Mapping):
        problems.append(Problem(where, "'init_args' is not a dict"))
    elif isinstance(init_args, Mapping):
        problems += [
            Problem(where, f"'init_args' lacks '{key}'")
            for key in REQUIRED_INIT_ARGS
            if key not in init_args
        ]
    weights = state.get("network_weights")
    if "network_weights" in state and not (
        isinstance(weights, Mapping)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items())
    ):
        problems.append(Problem(where, "'network_weights' is not a state dict of tensors"))
    return problems


def _state_dict(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """nnU-Net's weights without the prefixes of a distributed or compiled network (nnU-Net
    strips them when it loads, too)."""
    out = {}
    for name, tensor in weights.items():
        for prefix in ("module.", "_orig_mod."):
            name = name.removeprefix(prefix)
        out[name] = tensor
    return out


def load_nnunet_checkpoint(path: str | os.PathLike[str]) -> NnUNetCheckpoint:
    """Read an nnU-Net v2 checkpoint without running any code in it.

    Raises:
        SegflowError: the file is missing, names a global outside :data:`ALLOWED_GLOBALS`
            (listed; nothing is loaded), is not a torch file, or lacks what nnU-Net's
            trainer writes (every missing entry listed).
    """
    path = Path(path)
    state = _load_plain(path)
    problems = _structure_problems(state, str(path))
    if problems:
        raise SegflowError("not an nnU-Net v2 checkpoint", problems)
    init_args = state["init_args"]
    mirror = state.get("inference_allowed_mirroring_axes")
    fold = init_args["fold"]
    return NnUNetCheckpoint(
        path=path,
        network_weights=_state_dict(state["network_weights"]),
        trainer_name=str(state["trainer_name"]),
        configuration=str(init_args["configuration"]),
        fold=int(fold) if isinstance(fold, int) or str(fold).isdigit() else str(fold),
        plans=dict(init_args["plans"]),
        dataset_json=dict(init_args["dataset_json"]),
        mirror_axes=tuple(int(a) for a in mirror) if mirror is not None else (),
        epoch=int(state["current_epoch"]),
    )
