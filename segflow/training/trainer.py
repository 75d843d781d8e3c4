"""nnU-Net's trainer: one cross-validation fold of one configuration, resumable and reproducible.

Per epoch the trainer runs ``iterations_per_epoch`` steps of SGD (Nesterov momentum 0.99,
weight decay 3e-5, gradients clipped to norm 12) on augmented patches, with the learning rate
decayed polynomially per epoch (``lr = 0.01 * (1 - epoch / epochs) ** 0.9``), then
``val_iterations_per_epoch`` forward passes on unaugmented patches of the fold's held-out
cases, from which it reports the validation loss and a pseudo Dice (true and false positives
and negatives summed over all those patches, per class). The EMA of the mean pseudo Dice picks
the best checkpoint.

What makes a run reproducible and resumable:

* Batch ``k`` of training (``k = epoch * iterations_per_epoch + i``) is drawn from random
  numbers seeded by ``(seed, fold, stream, k)`` (:mod:`segflow.training.dataloading`), so it
  is the same whichever worker made it and whether or not the run was interrupted.
* The network's initial weights come from ``torch.manual_seed(seed + fold)``.
* A checkpoint holds every state that changes during training (see
  :mod:`segflow.training.checkpoint`), including the position inside an epoch and that
  epoch's losses so far. ``checkpoint_latest.pt`` is written every ``checkpoint_every``
  epochs and when SIGTERM or SIGUSR1 arrives (after the current iteration); a rerun continues
  from it. It is removed once ``checkpoint_final.pt`` exists, so a forced rerun starts over.
  ``checkpoint_best.pt`` (the weights at the best EMA pseudo Dice) is never resumed from and
  holds the weights and metadata only, without the optimizer's state.
* With ``deterministic``, PyTorch uses deterministic algorithms only (and cuDNN no autotuning),
  so two runs on the same machine give bit-identical weights, and so does a run killed and
  resumed. Without it cuDNN may autotune on CUDA, which is faster but not bit-reproducible.

Fine-tuning: with ``pretrained_weights`` (a segflow or nnU-Net v2 checkpoint) a new run starts
from that network's weights, all but the segmentation heads (:mod:`segflow.training.pretrained`); a
resumed run continues from its own checkpoint instead. The file's SHA-256 is part of the run's
signature and is recorded in its checkpoints (``pretrained``).

With ``num_processes`` above 1 the fold trains with that many data-parallel processes, each on
its slice of the same batches, with the loss of the whole batch (DDP;
:mod:`segflow.training.data_parallel`): the same loss curve as one process up to float
rounding.

The parts around the loop live beside it: the optimizer and the schedule in
:mod:`segflow.training.optimization`, the stop signals and :class:`TrainingInterrupted` in
:mod:`segflow.training.signals`, the ranks' reductions in :mod:`segflow.training.data_parallel`,
the checkpoint file names in :mod:`segflow.layout`, and :func:`~segflow.training.fold.train_fold`,
which trains a fold from the workflow's files, in :mod:`segflow.training.fold`.

Mixed precision (float16 autocast with a gradient scaler) is used on CUDA only. On CPU,
``cpu_bf16`` enables bfloat16 autocast, which is faster on CPUs with bf16 instructions.
``channels_last`` (default ``"auto"``: 3D networks on the CPU) runs the network and its
batches in the channels-last memory format (see :func:`segflow.networks.memory_format_for`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segflow import __version__
from segflow.compute import set_up_compute, use_cpu_bf16
from segflow.errors import Problem, SegflowError
from segflow.io.dataset import IGNORE_LABEL_NAME, DatasetJson
from segflow.layout import (
    CHECKPOINT_BEST,
    CHECKPOINT_FINAL,
    CHECKPOINT_LATEST,
    TRAINING_LOG,
    model_name,
)
from segflow.planning.plans import ConfigurationPlan, Plans
from segflow.preprocessing.previous_stage import previous_stage_labels, previous_stage_path
from segflow.progress_bar import ProgressBar
from segflow.training.augmentation import configured_mirror_axes
from segflow.training.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from segflow.training.data_parallel import Ranks, all_reduce, barrier, batch_size_problems
from segflow.training.log_file import logging_to_file
from segflow.training.losses import (
    DeepSupervisionLoss,
    build_loss,
    deep_supervision_scales,
    downsample_for_deep_supervision,
    foreground_regions,
    label_map_to_regions,
)
from segflow.training.losses.ranks import summing_over_ranks
from segflow.training.optimization import (
    build_optimizer,
    parameter_groups,
    poly_learning_rate,
    set_learning_rate,
)
from segflow.training.pretrained import file_sha256, load_pretrained_weights
from segflow.training.progress import TrainingHistory, pseudo_dice
from segflow.training.settings import TrainingSettings
from segflow.training.signals import STOP_SIGNALS, TrainingInterrupted, handling

__all__ = ["FoldTrainer"]

logger = logging.getLogger(__name__)

#: Marks a log record for the console even when a log file takes the rest
#: (:data:`segflow.cli.CONSOLE`): the epochs of a training job in the workflow's output.
_ON_CONSOLE = {"console": True}
#: The entries only a resumed run reads; ``checkpoint_best.pt`` leaves them out.
RESUME_ONLY_KEYS = ("optimizer", "grad_scaler", "history", "rng")


def _signature(data: Mapping[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FoldTrainer:
    """Trains one fold of one configuration.

    Args:
        plans: the experiment's plans.
        configuration: which configuration to train (e.g. ``3d_fullres``).
        dataset: the parsed ``dataset.json``.
        preprocessed_folder: the configuration's preprocessed cases.
        train_cases: the fold's training cases.
        val_cases: the fold's held-out cases (pseudo Dice and validation loss).
        fold: the fold number (seeds the network and the batches).
        output_folder: where checkpoints, ``progress.csv``, ``progress.png`` and
            ``training.log`` go.
        settings: the training settings.
        previous_stage: for a cascade stage (a configuration with a ``previous_stage``), the
            folder of the previous stage's cross-validation segmentations on this
            configuration's grid (:mod:`segflow.preprocessing.previous_stage`); they are
            one-hot input channels after the image's. Required there, refused elsewhere.
    """

    def __init__(
        self,
        plans: Plans,
        configuration: str,
        dataset: DatasetJson,
        preprocessed_folder: str | os.PathLike[str],
        train_cases: Sequence[str],
        val_cases: Sequence[str],
        fold: int,
        output_folder: str | os.PathLike[str],
        settings: TrainingSettings | None = None,
        previous_stage: str | os.PathLike[str] | None = None,
    ) -> None:
        self.plans = plans
        self.configuration: ConfigurationPlan = plans.configuration(configuration)
        self.dataset = dataset
        self.preprocessed_folder = Path(preprocessed_folder)
        self.train_cases = list(train_cases)
        self.val_cases = list(val_cases)
        self.fold = int(fold)
        self.output_folder = Path(output_folder)
        self.settings = settings or TrainingSettings()
        problems = []
        if not self.train_cases:
            problems.append(Problem(f"fold {fold}", "has no training cases"))
        if not self.val_cases:
            problems.append(Problem(f"fold {fold}", "has no validation cases"))
        pretrained = self.settings.pretrained_weights
        if pretrained is not None and not Path(pretrained).is_file():
            what = "is not a file" if Path(pretrained).exists() else "does not exist"
            problems.append(Problem(pretrained, f"pretrained_weights: {what}"))
        problems += batch_size_problems(
            self.configuration.batch_size, self.settings.num_processes, configuration
        )
        self.previous_stage = None if previous_stage is None else Path(previous_stage)
        problems += _previous_stage_problems(
            self.configuration, self.previous_stage, self.train_cases + self.val_cases
        )
        if problems:
            raise SegflowError("cannot train this fold", problems)

        self.regions = foreground_regions(dataset) if dataset.has_regions else None
        self.class_names = self._class_names()
        self.num_outputs = dataset.num_segmentation_heads
        #: Cascade: the label values one-hot encoded as extra input channels; None otherwise.
        self.previous_stage_labels = (
            previous_stage_labels(dataset) if self.previous_stage is not None else None
        )
        self.num_input_channels = dataset.num_channels + len(self.previous_stage_labels or ())
        self.scales = deep_supervision_scales(self.configuration.network.strides)
        # The pretrained weights decide the result: their content is part of the signature,
        # so a checkpoint_latest.pt of a run from other weights is not resumed.
        self.pretrained_sha256 = (
            file_sha256(self.settings.pretrained_weights)
            if self.settings.pretrained_weights is not None
            else None
        )
        #: What the run started from (path, sha256, layers copied); None: its own init.
        self.pretrained: dict[str, Any] | None = None
        #: Patch axes mirrored in training (all of them, as nnU-Net, unless the settings
        #: choose image axes); inference mirrors the same.
        self.mirror_axes = configured_mirror_axes(
            self.settings.mirror_axes, plans.transpose_forward, self.configuration.ndim
        )
        self.signature = _signature(
            {
                "configuration": self.configuration.to_dict(),
                "labels": {
                    k: list(v) if isinstance(v, tuple) else v for k, v in dataset.labels.items()
                },
                "channels": {str(k): v for k, v in dataset.channel_names.items()},
                "train": self.train_cases,
                "val": self.val_cases,
                "fold": self.fold,
                "settings": self.settings.result_fields(),
                "pretrained_sha256": self.pretrained_sha256,
            }
        )
        self._stop_signal: int | None = None
        #: This process's rank among the fold's data-parallel processes (set by the launcher).
        self.ranks = Ranks()

    # ------------------------------------------------------------------ set-up

    def _class_names(self) -> list[str]:
        if self.dataset.has_regions:
            return [
                name
                for name, value in self.dataset.labels.items()
                if name != IGNORE_LABEL_NAME and set(_values(value)) != {0}
            ]
        by_value = {
            value: name
            for name, value in self.dataset.labels.items()
            if name != IGNORE_LABEL_NAME and isinstance(value, int) and value != 0
        }
        return [by_value[v] for v in sorted(by_value)]

    def _set_up_torch(self) -> None:
        self.device = set_up_compute(self.settings.device, self.settings.threads)
        if self.ranks.size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.ranks.rank)  # one GPU per rank
        deterministic = self.settings.deterministic
        torch.use_deterministic_algorithms(deterministic)
        if self.device.type == "cuda":
            if deterministic:
                # cuBLAS needs a fixed workspace to be deterministic.
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = deterministic
            torch.backends.cudnn.benchmark = not deterministic
        self.use_amp = self.device.type == "cuda"
        self.use_cpu_bf16 = use_cpu_bf16(
            self.device, self.settings.cpu_bf16, "trains several times slower than float32"
        )
        from segflow.networks import memory_format_for

        self.memory_format = memory_format_for(
            self.configuration.ndim, self.device, self.settings.channels_last
        )

    def _build(self) -> None:
        from segflow.networks import build_network

        torch.manual_seed(self.settings.seed + self.fold)
        self.network: nn.Module = build_network(
            self.configuration,
            self.num_input_channels,
            self.num_outputs,
            deep_supervision=True,
            variant=self.settings.network,
        ).to(self.device, memory_format=self.memory_format)
        if self.ranks.size > 1:
            from segflow.training.data_parallel import synchronized_batch_norm

            self.network = synchronized_batch_norm(self.network, self.device)
        self.optimizer = build_optimizer(parameter_groups(self.network), self.settings)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        # A network without nnU-Net's deep supervision (most of the model zoo's) returns one
        # output; a zoo network with its own (MedNeXt, SegResNetDS) names its scales.
        outputs = getattr(self.network, "num_deep_supervision_outputs", len(self.scales))
        own_scales = getattr(self.network, "deep_supervision_scales", None)
        self.scales = list(own_scales) if own_scales is not None else self.scales[:outputs]
        self.loss = build_loss(
            self.dataset,
            name=self.settings.loss,
            batch_dice=self.configuration.batch_dice,
            num_outputs=len(self.scales),
            **(self.settings.loss_parameters or {}),
        )
        if len(self.scales) == 1:
            self.loss = DeepSupervisionLoss(self.loss, [1.0])  # takes the lists of one
        #: What the training steps call: the network, or its DDP wrapper (which averages the
        #: ranks' gradients); checkpoints hold the network's own state dict either way.
        self.model: nn.Module = self.network
        if self.ranks.size > 1:
            from segflow.training.data_parallel import data_parallel

            self.model = data_parallel(self.network, self.device, self.loss)
        self.history = TrainingHistory(self.class_names)
        self.best_ema: float | None = None
        self.epoch = 0
        self.iteration = 0  # within the epoch
        self.epoch_losses: list[float] = []

    def prepare(self) -> None:
        """Choose the device and thread settings and build the network, optimizer and loss
        (what :meth:`run` does before it resumes and trains)."""
        self._set_up_torch()
        self._build()

    def batches(self, stream: str, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Batches ``start`` to ``stop`` of the ``"train"`` (augmented) or ``"val"`` stream,
        made by background workers as in training."""
        from segflow.training.dataloading import TrainingBatches, batch_loader, workers_for

        cases = self.train_cases if stream == "train" else self.val_cases
        batches = TrainingBatches(
            self.preprocessed_folder,
            cases,
            self.configuration.patch_size,
            self.configuration.batch_size,
            seed=self.settings.seed,
            fold=self.fold,
            stream=stream,
            mirror_axes=self.mirror_axes,
            use_mask_for_norm=self.configuration.use_mask_for_norm,
            oversample_foreground_percent=self.settings.oversample_foreground_percent,
            sas_augmentation=self.settings.sas_augmentation,
            previous_stage=self.previous_stage,
            previous_stage_labels=self.previous_stage_labels,
        )
        workers = self.settings.num_workers
        if workers is None:
            workers = workers_for(self.settings.threads or torch.get_num_threads())
        loader = batch_loader(
            batches,
            start,
            stop,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
        )
        if self.ranks.size == 1:
            return iter(loader)
        part = self.ranks.batch_slice(self.configuration.batch_size)
        return ({**b, **{k: b[k][part] for k in ("data", "target", "keys")}} for b in loader)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "segflow_version": __version__,
            "signature": self.signature,
            "configuration": self.configuration.name,
            "fold": self.fold,
            "num_input_channels": self.num_input_channels,
            "num_outputs": self.num_outputs,
            "previous_stage_labels": (
                list(self.previous_stage_labels) if self.previous_stage_labels else None
            ),
            "class_names": list(self.class_names),
            "regions": [list(r) for r in self.regions] if self.regions is not None else None,
            "mirror_axes": list(self.mirror_axes),
            # What prediction needs besides the weights: the checkpoint alone is a model.
            "plans": self.plans.to_dict(),
            "dataset_json": json.loads(json.dumps(self.dataset.raw)),
            "settings": dataclasses.asdict(self.settings),
            "pretrained": dict(self.pretrained) if self.pretrained is not None else None,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "epoch_losses": list(self.epoch_losses),
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler else None,
            "history": self.history.state_dict(),
            "best_ema": self.best_ema,
            "rng": capture_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.grad_scaler is not None and state["grad_scaler"] is not None:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.history.load_state_dict(state["history"])
        self.best_ema = state["best_ema"]
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.epoch_losses = [float(x) for x in state["epoch_losses"]]
        self.pretrained = state.get("pretrained")
        restore_rng_state(state["rng"])

    def _save(self, name: str, *, weights_only: bool = False) -> Path:
        """Write a checkpoint (rank 0 only; every rank holds the same state). ``weights_only``
        leaves out what only resuming reads (optimizer, grad scaler, random states, history):
        half the size of a checkpoint that resumes."""
        if not self.ranks.is_main:
            return self.output_folder / name
        state = self.state_dict()
        if weights_only:
            state = {k: v for k, v in state.items() if k not in RESUME_ONLY_KEYS}
            state["weights_only"] = True
        return save_checkpoint(self.output_folder / name, state)

    def load_pretrained(self) -> None:
        """Start from ``settings.pretrained_weights`` (all but the heads), if set; a run does
        this once, at its start (a resumed run continues from its own checkpoint)."""
        if self.settings.pretrained_weights is None:
            return
        self.pretrained = load_pretrained_weights(
            self.network,
            self.settings.pretrained_weights,
            self.num_input_channels,
            self.settings.pretrained_resample_kernels,
        )
        if self.pretrained["sha256"] != self.pretrained_sha256:
            raise SegflowError(
                "the pretrained weights changed while training started",
                [Problem(self.settings.pretrained_weights, "its content is not what it was")],
            )

    def _resume(self) -> bool:
        """Continue from ``checkpoint_latest.pt`` when it belongs to this run; whether it did."""
        latest = self.output_folder / CHECKPOINT_LATEST
        if not latest.exists():
            return False
        state = load_checkpoint(latest, map_location=self.device)
        barrier(self.ranks)  # every rank has read it before rank 0 may remove it
        if state.get("signature") != self.signature:
            logger.warning(
                "%s was written with other settings, plans or folds; starting over", latest
            )
            for name in (CHECKPOINT_LATEST, CHECKPOINT_BEST):
                with contextlib.suppress(FileNotFoundError):
                    if self.ranks.is_main:
                        (self.output_folder / name).unlink()
            return False
        self.load_state_dict(state)
        logger.info(
            "resuming from %s at epoch %d, iteration %d", latest, self.epoch, self.iteration
        )
        return True

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.warning(
            "%s received: writing a checkpoint after this iteration", signal.Signals(signum).name
        )
        self._stop_signal = signum

    def _check_stop(self) -> None:
        signum = self._stop_signal
        if self.ranks.size > 1:
            # All ranks stop after the same iteration if any of them got a signal.
            signum = int(all_reduce([signum or 0], self.ranks, self.device, "max")[0]) or None
        if signum is not None:
            path = self._save(CHECKPOINT_LATEST)
            barrier(self.ranks)
            raise TrainingInterrupted(signum, path)

    # ------------------------------------------------------------------ steps

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.use_amp:
            return torch.autocast(self.device.type, dtype=torch.float16)
        if self.use_cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_device(self, batch: Mapping[str, Any]) -> tuple[Tensor, list[Tensor]]:
        data = batch["data"].to(self.device, non_blocking=True)
        data = data.contiguous(memory_format=self.memory_format)
        target = batch["target"].to(self.device, non_blocking=True)
        if self.regions is not None:
            target = label_map_to_regions(
                target, self.regions, ignore_label=self.dataset.ignore_label
            )
        return data, downsample_for_deep_supervision(target, self.scales)

    def train_step(self, batch: Mapping[str, Any]) -> float:
        data, targets = self._to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast(), summing_over_ranks(self.ranks.size):
            outputs = self.model(data)
            loss = self.loss(outputs, targets)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.network.parameters(), self.settings.grad_clip_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(self.network.parameters(), self.settings.grad_clip_norm)
            self.optimizer.step()
        return float(loss.detach().cpu())

    @torch.no_grad()
    def validation_step(self, batch: Mapping[str, Any]) -> tuple[float, np.ndarray]:
        """Loss and per-class ``(tp, fp, fn)`` counts (shape ``(3, classes)``) of one batch."""
        data, targets = self._to_device(batch)
        with self._autocast(), summing_over_ranks(self.ranks.size):
            outputs = self.network(data)
            loss = self.loss(outputs, targets)
        logits, target = outputs[0].float(), targets[0]
        mask: Tensor | None = None
        if self.regions is not None:
            if self.dataset.ignore_label is not None:
                mask = ~target[:, -1:].bool()
                target = target[:, :-1]
            predicted = logits.sigmoid() > 0.5
            reference = target.bool()
        else:
            labels = target.long()
            if self.dataset.ignore_label is not None:
                mask = labels != self.dataset.ignore_label
                labels = torch.where(mask, labels, 0)
            classes = torch.arange(1, self.num_outputs, device=labels.device)
            shape = (1, -1) + (1,) * (labels.ndim - 2)
            predicted = logits.argmax(1, keepdim=True) == classes.view(shape)
            reference = labels == classes.view(shape)
        if mask is not None:
            predicted = predicted & mask
            reference = reference & mask
        axes = [0, *range(2, predicted.ndim)]
        tp = (predicted & reference).sum(axes)
        fp = (predicted & ~reference).sum(axes)
        fn = (~predicted & reference).sum(axes)
        counts = torch.stack([tp, fp, fn]).cpu().numpy().astype(np.float64)
        return float(loss.cpu()), counts

    # ------------------------------------------------------------------ loop

    def run(self) -> Path:
        """Train to the end (or resume and finish); returns ``checkpoint_final.pt``.

        With ``num_processes`` above 1 this spawns the data-parallel processes and waits for
        them (:mod:`segflow.training.data_parallel`).

        Raises:
            TrainingInterrupted: a stop signal arrived; ``checkpoint_latest.pt`` was written.
        """
        if self.settings.num_processes > 1 and self.ranks.size == 1:
            from segflow.training.data_parallel import launch

            return launch(self)
        self.output_folder.mkdir(parents=True, exist_ok=True)
        final = self.output_folder / CHECKPOINT_FINAL
        if self.ranks.is_main:
            for leftover in self.output_folder.glob(".tmp-*"):
                leftover.unlink()  # from a job killed while writing
            return self._run_logged(final)
        self.prepare()
        # Every rank loads the same pretrained weights: DDP broadcasts the parameters only
        # when it wraps the network, which happened in prepare().
        if not self._resume():
            self.load_pretrained()
        self._train(final)
        return final

    def _run_logged(self, final: Path) -> Path:
        """Train (or resume and finish) with the log also written to ``training.log``."""
        with logging_to_file(self.output_folder / TRAINING_LOG):
            self.prepare()
            if not self._resume():
                self.load_pretrained()
            logger.info(
                "training %s fold %d on %s: %d epochs x %d iterations, %d training and %d "
                "validation cases, patch %s, batch %d%s; log: %s",
                self._model_name(),
                self.fold,
                self.device if self.ranks.size == 1 else f"{self.ranks.size} {self.device.type}",
                self.settings.epochs,
                self.settings.iterations_per_epoch,
                len(self.train_cases),
                len(self.val_cases),
                "x".join(map(str, self.configuration.patch_size)),
                self.configuration.batch_size,
                f" ({self.configuration.batch_size // self.ranks.size} per process)"
                if self.ranks.size > 1
                else "",
                self.output_folder / "training.log",
                extra=_ON_CONSOLE,
            )
            self._train(final)
            logger.info("finished: %s", final)
            return final

    def _train(self, final: Path) -> None:
        with handling(STOP_SIGNALS, self._on_signal):
            while self.epoch < self.settings.epochs:
                self._run_epoch()
        self._save(CHECKPOINT_FINAL)
        if self.ranks.is_main:
            with contextlib.suppress(FileNotFoundError):
                (self.output_folder / CHECKPOINT_LATEST).unlink()
        barrier(self.ranks)

    def _model_name(self) -> str:
        """The configuration, with the experiment's name too (``2d__BL``): in a workflow's
        console, the jobs' lines interleave."""
        return model_name(self.configuration.name, self.settings.experiment)

    def _progress_title(self) -> str:
        """The title of ``progress.png``: the model, the fold and the loss it trains with (its
        summary, and the parameters the run sets)."""
        from segflow.training.loss_catalog import LOSS_CATALOG

        given = self.settings.loss_parameters or {}
        parameters = ", ".join(f"{k} {v}" for k, v in sorted(given.items()))
        summary = LOSS_CATALOG[self.settings.loss].summary
        title = f"{self._model_name()} fold {self.fold}; loss: {self.settings.loss}, {summary}"
        return title + (f" ({parameters})" if parameters else "")

    def _learning_rate(self) -> float:
        return poly_learning_rate(
            self.settings.initial_lr, self.epoch, self.settings.epochs, self.settings.lr_exponent
        )

    def _run_epoch(self) -> None:
        settings = self.settings
        started = time.perf_counter()
        lr = self._learning_rate()
        set_learning_rate(self.optimizer, lr)
        self.network.train()
        first = self.epoch * settings.iterations_per_epoch
        batches = self.batches(
            "train", first + self.iteration, first + settings.iterations_per_epoch
        )
        bar = ProgressBar(
            total=settings.iterations_per_epoch,
            initial=self.iteration,
            desc=f"epoch {self.epoch}",
            disable=None if self.ranks.is_main else True,
            leave=False,
        )
        with bar:
            for batch in batches:
                loss = self.train_step(batch)
                # The batch's loss: the mean over the ranks' slices (see data_parallel).
                self.epoch_losses.append(
                    all_reduce([loss], self.ranks, self.device)[0] / self.ranks.size
                )
                self.iteration += 1
                bar.update()
                bar.set_postfix(loss=f"{self.epoch_losses[-1]:.4f}")
                if self.iteration < settings.iterations_per_epoch:
                    self._check_stop()
        train_loss = float(np.mean(self.epoch_losses))

        self.network.eval()
        first = self.epoch * settings.val_iterations_per_epoch
        val_losses, counts = [], np.zeros((3, len(self.class_names)))
        for batch in self.batches("val", first, first + settings.val_iterations_per_epoch):
            loss, batch_counts = self.validation_step(batch)
            val_losses.append(loss)
            counts += batch_counts
        if self.ranks.size > 1:  # every rank validated its slice of each batch
            val_losses = [
                v / self.ranks.size for v in all_reduce(val_losses, self.ranks, self.device)
            ]
            counts = np.asarray(
                all_reduce(counts.ravel().tolist(), self.ranks, self.device)
            ).reshape(counts.shape)
        dice = pseudo_dice(*counts)
        row = self.history.end_epoch(
            epoch=self.epoch,
            train_loss=train_loss,
            val_loss=float(np.mean(val_losses)),
            dice_per_class=dice,
            learning_rate=lr,
            epoch_seconds=time.perf_counter() - started,
        )
        self.epoch += 1
        self.iteration = 0
        self.epoch_losses = []
        ema = row["ema_pseudo_dice"]
        logger.info(
            "%s fold %d, epoch %d: train loss %.4f, val loss %.4f, pseudo Dice %s, EMA %.4f, "
            "lr %.2e, %.1f s; %d of %d epochs done",
            self._model_name(),
            self.fold,
            self.epoch - 1,
            row["train_loss"],
            row["val_loss"],
            "[" + ", ".join(f"{d:.4f}" for d in dice) + "]",
            ema,
            lr,
            row["epoch_seconds"],
            self.epoch,
            settings.epochs,
            extra=_ON_CONSOLE,
        )
        if not math.isnan(ema) and (self.best_ema is None or ema > self.best_ema):
            self.best_ema = ema
            # Never resumed from (checkpoint_latest.pt is): the weights suffice.
            self._save(CHECKPOINT_BEST, weights_only=True)
            logger.info("new best EMA pseudo Dice %.4f", ema)
        if self.epoch % settings.checkpoint_every == 0 and self.epoch < settings.epochs:
            self._save(CHECKPOINT_LATEST)
        if self.ranks.is_main:
            self.history.write(self.output_folder, self._progress_title())
        self._check_stop()


def _previous_stage_problems(
    configuration: ConfigurationPlan, folder: Path | None, cases: Sequence[str]
) -> list[Problem]:
    """A cascade stage needs the previous stage's segmentation of every case; any other
    configuration takes none."""
    if configuration.previous_stage is None:
        if folder is None:
            return []
        return [Problem(str(folder), f"{configuration.name} is not a cascade stage: it takes "
                        "no previous-stage segmentations")]  # fmt: skip
    if folder is None:
        return [Problem(configuration.name, f"is the cascade's stage after "
                        f"{configuration.previous_stage}: it needs that stage's "
                        "segmentations (previous_stage)")]  # fmt: skip
    missing = [c for c in cases if not previous_stage_path(folder, c).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        return [Problem(str(folder), f"has no previous-stage segmentation of {shown}")]
    return []


def _values(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,)
