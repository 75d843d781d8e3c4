"""How trained folds predict: :class:`InferenceSettings`, declared once.

``segflow predict``'s and ``segflow validate-fold``'s prediction options and the flags the
workflow's rules pass from the config's ``inference`` section are derived from these fields
(:mod:`segflow.settings`). Light on purpose (no torch): the rules import it at every
Snakemake start. ``backend`` and ``precision`` decide the predictions' bytes (a change reruns
the predictions in the workflow); ``threads`` and ``device`` only their speed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from segflow.errors import Problem, SegflowError
from segflow.inference.options import BACKENDS, PRECISIONS, PredictionOptions, unknown_choice
from segflow.settings import setting

__all__ = ["InferenceSettings"]


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How to predict; nnU-Net v2's defaults."""

    mirroring: bool = setting(True, "test-time mirroring")
    save_probabilities: bool = setting(False, "also write <case>.npz probabilities")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps", runtime_only=True)
    threads: int | None = setting(None, "CPU threads (default: torch's)", runtime_only=True)
    backend: str = setting(
        "auto",
        "what runs the networks: torch, openvino, onnxruntime (both on the CPU), or auto "
        "(torch on CUDA and MPS and for 3D networks on the CPU; for 2D networks on the CPU "
        "onnxruntime in float32, openvino in bfloat16)",
        choices=BACKENDS,
    )
    precision: str = setting(
        "float32",
        "float32, or bfloat16 on a CPU with native bf16 (AVX-512 BF16, AMX; elsewhere float32 "
        "with a warning); CUDA always uses float16 autocast",
        choices=PRECISIONS,
    )

    def __post_init__(self) -> None:
        problems = []
        if self.threads is not None and self.threads < 1:
            problems.append(Problem("threads", f"must be at least 1, got {self.threads}"))
        for name, valid in (("backend", BACKENDS), ("precision", PRECISIONS)):
            message = unknown_choice(name, getattr(self, name), valid)
            if message:
                problems.append(Problem(name, message))
        if problems:
            raise SegflowError("invalid inference settings", problems)

    def prediction_options(self, device: Any) -> PredictionOptions:
        """The :class:`~segflow.inference.options.PredictionOptions` these settings give on
        ``device`` (mirror axes are each model's own, set where the model is known)."""
        return PredictionOptions(
            mirror_axes=None,
            device=device,
            backend=self.backend,
            precision=self.precision,
            threads=self.threads,
        )
