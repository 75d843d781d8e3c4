"""How the ``pretrain`` stage pretrains an encoder: :class:`PretrainingSettings`, declared
once (``segflow pretrain``'s options and the workflow's ``pretraining`` section). Light on
purpose (no torch): the rules import it at every Snakemake start."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from segflow.errors import Problem, SegflowError
from segflow.settings import runtime_only, setting
from segflow.training.settings import MAX_BUDGET

__all__ = ["PretrainingSettings"]


@dataclasses.dataclass(frozen=True)
class PretrainingSettings:
    """Contrastive self-supervised pretraining (MoCo v2; JMedSeg's SAS defaults)."""

    epochs: int = setting(50, "pretraining epochs")
    iterations_per_epoch: int = setting(50, "batches per epoch")
    queue_size: int = setting(1024, "negative keys in the queue (JMedSeg SAS: K = 1024)")
    queue_warm_start: float = setting(
        0.25,
        "keys of the untrained encoder put into the queue before the first step, in batches, "
        "as a fraction of epochs x iterations_per_epoch (at most what fills the queue); "
        "0: the queue starts empty and fills as training goes, as MoCo's",
    )
    temperature: float = setting(0.07, "softmax temperature of InfoNCE (MoCo: 0.07)")
    projection_dim: int = setting(128, "output width of the projection head (MoCo: 128)")
    key_momentum: float = setting(0.999, "momentum of the key encoder's update (MoCo: 0.999)")
    initial_lr: float = setting(0.01, "SGD learning rate, cosine-decayed to 0")
    weight_decay: float = setting(1e-4, "SGD weight decay (MoCo: 1e-4)")
    test_images: bool = setting(
        False, "also draw patches from the test images (imagesTs); their labels are never read"
    )
    seed: int = setting(12345, "seed of the initial weights and of every batch")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps", runtime_only=True)
    threads: int | None = setting(None, "CPU threads (default: torch's)", runtime_only=True)
    num_workers: int | None = setting(
        None, "augmentation processes (default: from the threads)", runtime_only=True
    )

    RUNTIME_ONLY: ClassVar[tuple[str, ...]]

    def __post_init__(self) -> None:
        problems = []
        for name in ("epochs", "iterations_per_epoch", "queue_size", "projection_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(Problem(name, f"must be a positive integer, got {value!r}"))
            elif name in ("epochs", "iterations_per_epoch") and value > MAX_BUDGET:
                problems.append(Problem(name, f"must be at most {MAX_BUDGET:,}, got {value}"))
        for name in ("temperature", "initial_lr"):
            if not getattr(self, name) > 0:
                problems.append(Problem(name, f"must be positive, got {getattr(self, name)}"))
        if not 0 <= self.key_momentum < 1:
            problems.append(Problem("key_momentum", f"must lie in [0, 1), got {self.key_momentum}"))
        if isinstance(self.queue_warm_start, bool) or not 0 <= self.queue_warm_start <= 1:
            problems.append(
                Problem("queue_warm_start", f"must lie in [0, 1], got {self.queue_warm_start!r}")
            )
        if not self.weight_decay >= 0:
            problems.append(Problem("weight_decay", f"must be 0 or more, got {self.weight_decay}"))
        if problems:
            raise SegflowError("invalid pretraining settings", problems)

    def result_fields(self) -> dict[str, Any]:
        """The settings that decide the pretrained weights."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUNTIME_ONLY}


PretrainingSettings.RUNTIME_ONLY = runtime_only(PretrainingSettings)
