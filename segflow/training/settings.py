"""How a fold is trained: :class:`TrainingSettings`, declared once.

``segflow train``'s options and the flags the workflow's ``train`` rule passes from the config's
``training`` section are derived from these fields (:mod:`segflow.settings`). Light on purpose
(no torch): the rules import it at every Snakemake start.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from segflow.errors import Problem, SegflowError
from segflow.settings import runtime_only, setting

__all__ = ["TrainingSettings"]


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How to train; nnU-Net v2's defaults.

    The fields marked ``runtime_only`` (:attr:`RUNTIME_ONLY`) change how fast a run goes,
    never its result, and may differ between a run and its resumption.
    """

    epochs: int = setting(1000, "epochs per fold (nnU-Net 1000)")
    iterations_per_epoch: int = setting(250, "training batches per epoch (nnU-Net 250)")
    val_iterations_per_epoch: int = setting(
        50, "validation batches per epoch, for the validation loss and pseudo Dice"
    )
    initial_lr: float = setting(1e-2, "learning rate of the first epoch")
    lr_exponent: float = setting(0.9, "the poly schedule's exponent: (1 - epoch/epochs)^exponent")
    weight_decay: float = setting(3e-5, "SGD weight decay")
    momentum: float = setting(0.99, "SGD Nesterov momentum")
    grad_clip_norm: float = setting(12.0, "gradients are clipped to this norm")
    oversample_foreground_percent: float = setting(
        0.33, "share of each batch centred on a foreground voxel"
    )
    seed: int = setting(12345, "seed of the initial weights and of every batch")
    deterministic: bool = setting(False, "deterministic algorithms only: bit-reproducible")
    cpu_bf16: bool = setting(False, "bfloat16 autocast on the CPU")
    channels_last: bool | str = setting(
        "auto",
        "channels-last memory format (auto: 3D networks on the CPU)",
        choices=("auto", True, False),
    )
    checkpoint_every: int = setting(
        50, "epochs between checkpoint_latest.pt writes", runtime_only=True
    )
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps", runtime_only=True)
    threads: int | None = setting(None, "CPU threads (default: torch's)", runtime_only=True)
    num_workers: int | None = setting(
        None, "augmentation processes (default: from the threads)", runtime_only=True
    )

    RUNTIME_ONLY: ClassVar[tuple[str, ...]]

    def __post_init__(self) -> None:
        problems = []
        for name in ("epochs", "iterations_per_epoch", "val_iterations_per_epoch",
                     "checkpoint_every"):  # fmt: skip
            if getattr(self, name) < 1:
                problems.append(Problem(name, f"must be at least 1, got {getattr(self, name)}"))
        for name in ("initial_lr", "grad_clip_norm", "lr_exponent"):
            if not getattr(self, name) > 0:
                problems.append(Problem(name, f"must be positive, got {getattr(self, name)}"))
        for name in ("weight_decay", "momentum"):
            if not getattr(self, name) >= 0:
                problems.append(Problem(name, f"must be 0 or more, got {getattr(self, name)}"))
        if not 0 <= self.oversample_foreground_percent <= 1:
            problems.append(Problem("oversample_foreground_percent", "must lie in [0, 1]"))
        if self.threads is not None and self.threads < 1:
            problems.append(Problem("threads", f"must be at least 1, got {self.threads}"))
        if self.channels_last not in (True, False, "auto"):
            problems.append(
                Problem("channels_last", f"must be true, false or auto, got {self.channels_last!r}")
            )
        if self.num_workers is not None and self.num_workers < 0:
            problems.append(Problem("num_workers", f"must be 0 or more, got {self.num_workers}"))
        if problems:
            raise SegflowError("invalid training settings", problems)

    def result_fields(self) -> dict[str, Any]:
        """The settings that decide the trained weights."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUNTIME_ONLY}


TrainingSettings.RUNTIME_ONLY = runtime_only(TrainingSettings)
