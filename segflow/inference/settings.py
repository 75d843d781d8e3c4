"""How trained folds predict: :class:`InferenceSettings`, declared once.

``segflow predict``'s and ``segflow validate-fold``'s prediction options and the flags the
workflow's rules pass from the config's ``inference`` section are derived from these fields
(:mod:`segflow.settings`). Light on purpose (no torch): the rules import it at every
Snakemake start.
"""

from __future__ import annotations

import dataclasses

from segflow.errors import Problem, SegflowError
from segflow.settings import setting

__all__ = ["InferenceSettings"]


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How to predict; nnU-Net v2's defaults."""

    mirroring: bool = setting(True, "test-time mirroring")
    save_probabilities: bool = setting(False, "also write <case>.npz probabilities")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps", runtime_only=True)
    threads: int | None = setting(None, "CPU threads (default: torch's)", runtime_only=True)
    cpu_bf16: bool = setting(
        False,
        "on the CPU, run the networks in bfloat16 autocast: fast on CPUs with native bf16 "
        "(AVX-512 BF16, AMX), emulated and very slow elsewhere (CUDA always uses float16)",
    )

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise SegflowError(
                "invalid inference settings",
                [Problem("threads", f"must be at least 1, got {self.threads}")],
            )
