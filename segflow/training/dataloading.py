"""Training and validation batches, generated in the background and reproducible by counter.

nnU-Net's workers each draw batches from their own randomly seeded generators, so which batch a
run sees depends on the worker count and timing, and an interrupted run never sees the batches
it would have seen. Here batch ``k`` of a stream (the global iteration
``epoch * iterations_per_epoch + i``) is a pure function of ``(seed, fold, stream, k)`` and the
stored cases: :class:`TrainingBatches` is a map-style dataset whose item ``k`` is that whole
batch, drawn and augmented with generators seeded from
``np.random.SeedSequence([seed, fold, stream, k])``. Any worker may make it, in any order, and
a run resumed at iteration ``k`` continues with exactly the batches it would have had.

batchgenerators' transforms draw from numpy's global generator and Python's ``random``; both
are seeded from the same sequence while a batch is made, and restored afterwards, so making a
batch in the training process (``num_workers=0``) leaves the caller's global generators as they
were.

:func:`batch_loader` runs the dataset through :class:`torch.utils.data.DataLoader` for a range
of iterations (one epoch, or the rest of one after resuming); :func:`workers_for` chooses how
many background processes a job's CPUs allow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset

from segflow.planning.plans import ConfigurationPlan
from segflow.training.augmentation import (
    apply_transforms,
    default_mirror_axes,
    training_transforms,
    validation_transforms,
)
from segflow.training.sampling import (
    OVERSAMPLE_FOREGROUND_PERCENT,
    PatchSampler,
    training_patch_size,
)

__all__ = [
    "MAX_WORKERS",
    "STREAMS",
    "TrainingBatches",
    "batch_loader",
    "batch_seed_sequence",
    "workers_for",
]

logger = logging.getLogger(__name__)

#: Stream identifiers: part of every batch's seed, so training and validation batches differ
#: (``ssl``: the views of self-supervised pretraining, :mod:`segflow.training.contrastive`).
STREAMS = {"train": 0, "val": 1, "ssl": 2}
#: The most background workers :func:`workers_for` chooses (nnU-Net's default is 12).
MAX_WORKERS = 12


def batch_seed_sequence(seed: int, fold: int, stream: str, index: int) -> np.random.SeedSequence:
    """The seed sequence of batch ``index`` of ``stream`` (``"train"`` or ``"val"``).

    Raises:
        ValueError: an unknown stream or a negative number.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown stream '{stream}'; valid: {', '.join(STREAMS)}")
    numbers = {"seed": seed, "fold": fold, "index": index}
    negative = [f"{name}={value}" for name, value in numbers.items() if int(value) < 0]
    if negative:
        raise ValueError(
            f"batch seeds are built from non-negative numbers, got {', '.join(negative)}"
        )
    return np.random.SeedSequence([int(seed), int(fold), STREAMS[stream], int(index)])


@contextlib.contextmanager
def _global_generators_seeded(sequence: np.random.SeedSequence) -> Iterator[None]:
    """Seed numpy's global generator and Python's ``random``; restore both on exit."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    state = sequence.generate_state(4)
    np.random.seed(state)
    random.seed(int.from_bytes(state.tobytes(), "little"))
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class TrainingBatches(Dataset):
    """Batch ``k`` of one stream of one fold, as item ``k``.

    Training batches (``stream="train"``) are drawn at the initial patch size and augmented
    (:mod:`segflow.training.augmentation`); validation batches (``stream="val"``) are drawn at
    the final patch size and not augmented. Both force the last third of each batch to hold
    foreground, as nnU-Net's loaders do.

    Args:
        folder: the configuration's preprocessed folder.
        case_ids: the cases of this stream (the fold's training or validation cases).
        patch_size: the network's patch, 2 or 3 axes.
        batch_size: patches per batch.
        seed: the run's seed.
        fold: the fold (part of the seed).
        stream: ``"train"`` or ``"val"``.
        mirror_axes: axes mirrored in training; every axis when None.
        use_mask_for_norm: the plans' per-channel ``use_mask_for_norm``.
        oversample_foreground_percent: the share of each batch forced to hold foreground.
        sas_augmentation: add JMedSeg SAS's colour and intensity augmentation in training.
        previous_stage: for a cascade stage, the folder of the previous stage's
            segmentations on this configuration's grid; they become one-hot image channels
            (augmented in training), one per value of ``previous_stage_labels``.
        previous_stage_labels: the label values encoded (with ``previous_stage``).

    Items are ``{"data": float32 tensor (b, c, *patch_size), "target": int16 tensor
    (b, 1, *patch_size), "keys": [case id per patch]}``; targets are label maps with the
    dataset's label values (-1 turned into 0).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        case_ids: Sequence[str],
        patch_size: Sequence[int],
        batch_size: int,
        *,
        seed: int,
        fold: int,
        stream: str = "train",
        mirror_axes: Sequence[int] | None = None,
        use_mask_for_norm: Sequence[bool] | None = None,
        oversample_foreground_percent: float = OVERSAMPLE_FOREGROUND_PERCENT,
        sas_augmentation: bool = False,
        previous_stage: str | os.PathLike[str] | None = None,
        previous_stage_labels: Sequence[int] | None = None,
    ) -> None:
        batch_seed_sequence(seed, fold, stream, 0)  # checks the arguments
        if (previous_stage is None) != (previous_stage_labels is None):
            raise ValueError("previous_stage and previous_stage_labels go together")
        self.seed, self.fold, self.stream = int(seed), int(fold), stream
        self.patch_size = tuple(int(p) for p in patch_size)
        augment = stream == "train"
        self.sampler = PatchSampler(
            folder,
            case_ids,
            training_patch_size(self.patch_size) if augment else self.patch_size,
            batch_size,
            oversample_foreground_percent=oversample_foreground_percent,
            final_patch_size=self.patch_size,
            previous_stage=previous_stage,
        )
        labels = previous_stage_labels
        if augment:
            mirror = default_mirror_axes(self.patch_size) if mirror_axes is None else mirror_axes
            self.transforms = training_transforms(
                self.patch_size,
                mirror,
                use_mask_for_norm,
                sas=sas_augmentation,
                previous_stage_labels=labels,
            )
        else:
            self.transforms = validation_transforms(previous_stage_labels=labels)

    @classmethod
    def from_configuration(
        cls,
        folder: str | os.PathLike[str],
        configuration: ConfigurationPlan,
        case_ids: Sequence[str],
        *,
        seed: int,
        fold: int,
        stream: str = "train",
    ) -> TrainingBatches:
        """The batches of a planned configuration: its patch, batch size and masking."""
        return cls(
            folder,
            case_ids,
            configuration.patch_size,
            configuration.batch_size,
            seed=seed,
            fold=fold,
            stream=stream,
            use_mask_for_norm=configuration.use_mask_for_norm,
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        sequence = batch_seed_sequence(self.seed, self.fold, self.stream, int(index))
        sampling, transforms = sequence.spawn(2)
        with _global_generators_seeded(transforms):
            data, seg, keys = self.sampler.next_batch(np.random.default_rng(sampling))
            data, seg = apply_transforms(self.transforms, data, seg)
        return {"data": torch.from_numpy(data), "target": torch.from_numpy(seg), "keys": keys}


# Held for the worker's lifetime: threadpoolctl restores the limits when it is released.
_WORKER_LIMITS: list[Any] = []


def _single_threaded_worker(worker_id: int) -> None:
    """Each background worker computes with one thread: the workers are the parallelism."""
    torch.set_num_threads(1)
    _WORKER_LIMITS.append(threadpool_limits(limits=1))


def batch_loader(
    batches: TrainingBatches,
    start: int,
    stop: int,
    num_workers: int,
    pin_memory: bool = False,
    prefetch: int = 2,
) -> Iterable[dict[str, Any]]:
    """Batches ``start`` to ``stop - 1`` in order, made by ``num_workers`` background processes.

    Args:
        batches: the dataset of batches.
        start: the first global iteration.
        stop: one past the last.
        num_workers: background processes; 0 makes each batch in this process when it is asked
            for.
        pin_memory: pin the tensors (for faster copies to a CUDA device).
        prefetch: batches each worker makes ahead.

    Returns:
        a :class:`torch.utils.data.DataLoader` yielding the items of ``batches``; its workers
        start when iteration starts and end with it. With workers, the free part of this
        process's kept heap is given back first (:func:`segflow.compute.release_freed_memory`),
        so that the workers, forked when iteration starts, do not hold a copy of it: iterate
        it right away.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be at least 0, got {num_workers}")
    if prefetch < 1:
        raise ValueError(f"prefetch must be at least 1, got {prefetch}")
    if num_workers > 0:
        from segflow.compute import release_freed_memory

        release_freed_memory()
    return DataLoader(
        batches,
        batch_size=None,
        sampler=range(start, stop),
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch if num_workers > 0 else None,
        persistent_workers=False,
        worker_init_fn=_single_threaded_worker if num_workers > 0 else None,
    )


def workers_for(cpus: int) -> int:
    """How many background workers make batches for a job given ``cpus`` CPUs.

    One CPU stays with the training process (it drives the accelerator, or computes the network
    on a CPU-only machine); the rest make batches, up to :data:`MAX_WORKERS`; a single CPU makes
    them in the training process. Measured on 2 shared CPUs (``benchmarks/dataloading_speed.py
    --overlap``, Hippocampus 3d_fullres, batch 7): a batch takes 0.3 to 0.4 s to make, a CPU
    training iteration 34 to 38 s, no slower with one worker than with batches made in-process
    (34.2 s against 38.0 s, within the noise of a shared machine); so even 2 CPUs get one
    worker, which hides the batch time entirely where an accelerator computes the network.
    """
    return max(0, min(MAX_WORKERS, int(cpus) - 1))
