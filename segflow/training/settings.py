"""How a fold is trained: :class:`TrainingSettings`, declared once.

``segflow train``'s options and the flags the workflow's ``train`` rule passes from the config's
``training`` section are derived from these fields (:mod:`segflow.settings`). Light on purpose
(no torch): the rules import it at every Snakemake start.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from segflow.errors import Problem, SegflowError
from segflow.networks.variants import NetworkVariant
from segflow.settings import runtime_only, setting
from segflow.training.loss_catalog import DEFAULT_LOSS, LOSS_NAMES

__all__ = ["LOSS_NAMES", "MAX_BUDGET", "OPTIMIZERS", "TrainingSettings"]

#: No change to the network a configuration plans.
PLANNED_NETWORK = NetworkVariant()
#: The optimizers: nnU-Net's SGD with Nesterov momentum, or AdamW.
OPTIMIZERS = ("sgd", "adamw")
#: The largest epoch and iteration counts (the config schema's ``maximum``, a test keeps them
#: equal): a thousand times nnU-Net's budget. The checkpoint keeps a record of every epoch, and
#: a mistyped 1e20 would train until killed.
MAX_BUDGET = 1_000_000


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
    # A frozen dataclass: one shared default instance is safe.
    network: NetworkVariant = setting(  # noqa: RUF009
        PLANNED_NETWORK, "changes to the planned network (the defaults change nothing)"
    )
    pretrained_weights: str | None = setting(
        None,
        "a segflow checkpoint (checkpoint_final.pt) or an nnU-Net v2 one (checkpoint_final.pth) "
        "whose weights, but the segmentation heads, start the run (fine-tuning; ignored on "
        "resume)",
    )
    pretrained_resample_kernels: bool = setting(
        False,
        "UpKern (MedNeXt): a pretrained convolution kernel whose spatial size alone differs from "
        "this network's (kernel 3 into kernel 5) is resized by (tri)linear interpolation instead "
        "of refused; needs pretrained_weights",
    )
    loss: str = setting(DEFAULT_LOSS, "the training loss, by name", choices=LOSS_NAMES)
    # The default is None: no mutable default is shared.
    loss_parameters: dict[str, Any] | None = setting(  # noqa: RUF009
        None,
        "the loss's parameters by name, each loss's declared with it in "
        "segflow/training/loss_catalog.py (exp_log: weight_dice, weight_ce, gamma_dice, "
        "gamma_ce, ...; focal: gamma, alpha); those not given keep their defaults",
    )
    optimizer: str = setting("sgd", "sgd (Nesterov momentum) or adamw", choices=OPTIMIZERS)
    initial_lr: float = setting(1e-2, "learning rate of the first epoch")
    lr_exponent: float = setting(0.9, "the poly schedule's exponent: (1 - epoch/epochs)^exponent")
    weight_decay: float = setting(3e-5, "weight decay of the optimizer")
    momentum: float = setting(0.99, "SGD's Nesterov momentum (not used by AdamW)")
    grad_clip_norm: float = setting(12.0, "gradients are clipped to this norm")
    oversample_foreground_percent: float = setting(
        0.33, "share of each batch centred on a foreground voxel"
    )
    mirror_axes: tuple[int, ...] | None = setting(
        None,
        "image axes mirrored in training and at test time (0, 1, 2: z, y, x of the image "
        "arrays; 1, 2 for 2D images); every axis when unset, none when empty",
    )
    sas_augmentation: bool = setting(
        False, "add JMedSeg SAS's colour jitter, gamma, blur and random resized crops"
    )
    seed: int = setting(12345, "seed of the initial weights and of every batch")
    experiment: str | None = setting(
        None, "the config's experiment this run trains (recorded in the checkpoint)"
    )
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
    # Runtime only: the global batch k and its loss are the same for any number of processes,
    # only float rounding of the reductions differs (as between devices or thread counts), and
    # a checkpoint is independent of it, so a run may resume with another number.
    num_processes: int = setting(
        1,
        "data-parallel processes training this fold (DDP; one GPU each on CUDA), splitting "
        "each batch between them",
        runtime_only=True,
    )

    RUNTIME_ONLY: ClassVar[tuple[str, ...]]

    def __post_init__(self) -> None:
        if isinstance(self.mirror_axes, list):  # a config's list: the declared (hashable) tuple
            object.__setattr__(self, "mirror_axes", tuple(self.mirror_axes))
        problems = []
        for name in ("epochs", "iterations_per_epoch", "val_iterations_per_epoch",
                     "checkpoint_every"):  # fmt: skip
            if not 1 <= getattr(self, name) <= MAX_BUDGET:
                problems.append(Problem(name, f"must lie in [1, {MAX_BUDGET:,}], got "
                                        f"{getattr(self, name)}"))  # fmt: skip
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
        if self.loss not in LOSS_NAMES:
            problems.append(Problem("loss", f"must be one of {', '.join(LOSS_NAMES)}"))
        if self.loss_parameters is not None and (
            not isinstance(self.loss_parameters, dict)
            or not all(isinstance(k, str) for k in self.loss_parameters)
        ):
            problems.append(
                Problem("loss_parameters", "must map parameter names to values, or be null")
            )
        if self.optimizer not in OPTIMIZERS:
            problems.append(Problem("optimizer", f"must be one of {', '.join(OPTIMIZERS)}"))
        if not isinstance(self.network, NetworkVariant):
            problems.append(Problem("network", "must be a NetworkVariant"))
        if self.pretrained_weights is not None and (
            not isinstance(self.pretrained_weights, str) or not self.pretrained_weights
        ):
            problems.append(Problem("pretrained_weights", "must be a checkpoint's path"))
        if self.pretrained_resample_kernels and self.pretrained_weights is None:
            problems.append(
                Problem("pretrained_resample_kernels", "resizes pretrained_weights: set them too")
            )
        if self.experiment is not None and (
            not isinstance(self.experiment, str) or not self.experiment or "__" in self.experiment
        ):
            problems.append(Problem("experiment", "must be a name without '__'"))
        if self.num_workers is not None and self.num_workers < 0:
            problems.append(Problem("num_workers", f"must be 0 or more, got {self.num_workers}"))
        problems += self._mirror_axes_problems()
        problems += self._num_processes_problems()
        if problems:
            raise SegflowError("invalid training settings", problems)

    def _mirror_axes_problems(self) -> list[Problem]:
        if self.mirror_axes is None:
            return []
        axes = self.mirror_axes
        if (
            isinstance(axes, tuple)
            and all(isinstance(a, int) and not isinstance(a, bool) for a in axes)
            and all(a in (0, 1, 2) for a in axes)
            and len(set(axes)) == len(axes)
        ):
            return []
        return [
            Problem(
                "mirror_axes",
                f"must be distinct image axes among 0, 1, 2 (z, y, x), got {axes!r}",
            )
        ]

    def _num_processes_problems(self) -> list[Problem]:
        if self.num_processes < 1:
            return [Problem("num_processes", f"must be at least 1, got {self.num_processes}")]
        device = str(self.device).lower()
        if self.num_processes > 1 and device.startswith("cuda:"):
            return [
                Problem(
                    "num_processes",
                    f"{self.num_processes} processes use cuda:0 to cuda:{self.num_processes - 1}; "
                    f"device '{self.device}' names one GPU (use device: cuda, and "
                    "CUDA_VISIBLE_DEVICES to choose the GPUs)",
                )
            ]
        if self.num_processes > 1 and device == "mps":
            return [
                Problem("num_processes", "data-parallel training needs CUDA or the CPU, not mps")
            ]
        return []

    def result_fields(self) -> dict[str, Any]:
        """The settings that decide the trained weights."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUNTIME_ONLY}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSettings:
        """The settings :func:`dataclasses.asdict` wrote (as a checkpoint records them)."""
        values = dict(data)
        if isinstance(values.get("network"), dict):
            values["network"] = NetworkVariant.from_dict(values["network"], "settings.network")
        return cls(**values)


TrainingSettings.RUNTIME_ONLY = runtime_only(TrainingSettings)
