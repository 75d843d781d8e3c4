"""How a case is predicted: :class:`PredictionOptions`, one object that every prediction
function takes instead of a row of keyword arguments.

The options are what decides the sliding-window prediction of one case (mirroring, window
step and batching, device, where the sum lives) and what runs the network (backend and
precision, see :mod:`segflow.inference.backends`). Light on purpose: no torch import.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any

__all__ = ["BACKENDS", "PRECISIONS", "PredictionOptions", "closest_name", "unknown_choice"]

#: The inference backends: PyTorch, OpenVINO, ONNX Runtime, and ``auto`` (chosen per device
#: and network, see :func:`segflow.inference.backends.resolve_backend`).
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
#: The precisions a network may compute in on the CPU (CUDA always uses float16 autocast).
PRECISIONS = ("float32", "bfloat16")


def closest_name(value: object, valid: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``valid``, or ``""``."""
    close = difflib.get_close_matches(str(value), list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown_choice(what: str, value: object, valid: Sequence[str]) -> str | None:
    """The message for ``value`` not among ``valid`` (with the closest one), or None."""
    if value in valid:
        return None
    return f"unknown {what} '{value}'{closest_name(value, valid)} (valid: {', '.join(valid)})"


@dataclasses.dataclass(frozen=True)
class PredictionOptions:
    """Everything that decides how a case is predicted, besides the network and the data.

    Attributes:
        mirror_axes: spatial axes of the patch to mirror (test-time augmentation); None or
            ``()`` for none. Required: whether to mirror is always the caller's decision.
        step_size: distance between windows as a fraction of the patch, in ``(0, 1]``.
        batch_windows: windows per network call.
        device: where the network runs; None: where its parameters are (the CPU without any).
        accumulate_on: where the summed predictions live; ``"auto"``: on ``device``, in host
            memory when that runs out.
        backend: what runs the network: ``torch`` (the default here), ``openvino``,
            ``onnxruntime`` or ``auto``.
        precision: ``float32`` or ``bfloat16`` (on a CPU with native bf16 only; elsewhere
            float32 with one warning). CUDA always computes in float16 autocast.
        threads: CPU threads of the runtime (None: torch's thread count).
    """

    mirror_axes: tuple[int, ...] | None
    step_size: float = 0.5
    batch_windows: int = 1
    device: Any = None
    accumulate_on: Any = "auto"
    backend: str = "torch"
    precision: str = "float32"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.mirror_axes is not None:
            object.__setattr__(self, "mirror_axes", tuple(int(a) for a in self.mirror_axes))
        for what, valid in (("backend", BACKENDS), ("precision", PRECISIONS)):
            message = unknown_choice(what, getattr(self, what), valid)
            if message:
                raise ValueError(message)

    def replace(self, **changes: Any) -> PredictionOptions:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)
