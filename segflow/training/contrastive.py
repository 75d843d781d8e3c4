"""Self-supervised pretraining of a network's encoder: momentum contrast (MoCo v2), the first
part of JMedSeg's SAS framework.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning" (CVPR 2020),
and Chen et al., "Improved Baselines with Momentum Contrastive Learning" (arXiv 2003.04297):
two augmented views of each patch go through a query encoder and a key encoder (a copy
updated as an exponential moving average of the query encoder, ``key_momentum``); each
encoder is the network's encoder, its deepest features averaged over 2 parts per axis (not
over the whole patch: see :class:`ProjectedEncoder`), and a projection head (two linear
layers, ``projection_dim`` outputs, L2-normalized). The InfoNCE loss is the
cross entropy of telling a query's own key among the keys of a queue of ``queue_size`` earlier
batches, with similarities divided by ``temperature``; each batch's keys then replace the
oldest in the queue. JMedSeg's SAS: K = 1024, temperature 0.07, 128-d projection. As in MoCo
the queue fills as training goes, but its empty slots are left out of the loss rather than
filled with random vectors (which start the loss near zero and hide the learning in a short
run); a warm start of at most ``queue_warm_start`` times the training iterations' batches of
the untrained key encoder (of batches not used for training, forward passes only, never
more than fill the queue) puts keys in before the first step, so its cost stays in
proportion to the budget.

The pretraining budget is therefore: ``epochs x iterations_per_epoch`` training batches
(a query forward and backward pass and a key forward pass each), the warm start's key
batches, 4 batches of held-out view pairs measured before and after, and with
``test_images`` the preprocessing of the test images.

The views are those of segmentation training: nnU-Net's spatial and intensity augmentation of
a patch drawn from the configuration's preprocessed data, then the SAS colour and intensity
set with random resized crops (:mod:`segflow.training.sas_augmentation`), each view with its
own random numbers. Pretraining is per fold: patches are drawn from the fold's training cases
only (labels unused), never from the cases it validates on, so that a fold's cross-validation
is measured on images its encoder has not seen; and, with
``test_images`` (JMedSeg's SAS pretrains on unlabelled images too), from the test images
(``imagesTs``), which the job preprocesses as the configuration's training images into a
temporary folder beside its checkpoint (their labels, if any, are never read). Each batch
comes from one of the two sets, chosen with a probability proportional to its number of
cases, so that every image is equally likely. Instance normalization (nnU-Net's) has no
statistics across the batch, so MoCo's shuffled batch normalization is not needed.

The checkpoint holds the state dict of the whole network the configuration and variant build
(the encoder pretrained, the rest freshly initialized), so that the folds start from it with
``pretrained_weights`` (:mod:`segflow.training.pretrained`, which leaves the heads fresh),
and the loss per epoch, plotted in ``ssl_progress.png``. Pretraining works on networks with
the U-Net's encoder (PlainConvUNet, ResidualEncoderUNet) and on the model zoo's, each
family's encoder path (:attr:`segflow.networks.zoo.ZooFamily.encoder`: Attention U-Net's and
UNet++'s strided blocks, SegResNet's down layers, UNETR's ViT, SwinUNETR's Swin
transformer, MedNeXt's stem, encoder stages and bottleneck, SegResNetDS's encoder), with or
without a spatial transformer in front (which pretraining leaves out).
A killed run starts over.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from segflow import __version__
from segflow.errors import Problem, SegflowError
from segflow.layout import SSL_CHECKPOINT, SSL_PROGRESS_PLOT, SSL_PROGRESS_TABLE
from segflow.networks.variants import NetworkVariant
from segflow.planning.plans import ConfigurationPlan
from segflow.training.pretraining_settings import PretrainingSettings

__all__ = [
    "ContrastiveViews",
    "MomentumContrast",
    "ProjectedEncoder",
    "deepest_width",
    "encoder_of",
    "pretrain_encoder",
    "warm_start_batches",
]

logger = logging.getLogger(__name__)

# Instance normalization leaves each channel's mean over the whole patch the same for every
# sample (before the nonlinearity: zero), so a global average says little about the sample and
# the loss stays at chance; the means over 2 parts per axis keep where the features are.
_POOLED = 2
#: Batches of views held out to measure the encoder before and after pretraining.
_EVALUATION_BATCHES = 4
#: The temporary folder of the preprocessed test images, in the output folder.
_TEST_IMAGES_PREFIX = ".test_images."


class ContrastiveViews(Dataset):
    """Batch ``k``: two independently augmented views of the same patches.

    Args:
        folder: the configuration's preprocessed folder.
        case_ids: the cases to draw patches from.
        configuration: the configuration (patch, batch size, masking).
        seed: the run's seed.
        unlabelled: more images, preprocessed without labels: ``(folder, case_ids)``
            (the test images); each batch is drawn from one set, chosen with a probability
            proportional to its number of cases.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        case_ids: list[str],
        configuration: ConfigurationPlan,
        seed: int,
        unlabelled: tuple[str | os.PathLike[str], list[str]] | None = None,
    ) -> None:
        from segflow.training.augmentation import default_mirror_axes, training_transforms
        from segflow.training.sampling import PatchSampler, training_patch_size

        patch = tuple(int(p) for p in configuration.patch_size)
        self.seed = int(seed)
        sources = [(folder, case_ids)] + ([] if unlabelled is None else [unlabelled])
        self.samplers = [
            PatchSampler(
                source,
                cases,
                training_patch_size(patch),
                configuration.batch_size,
                oversample_foreground_percent=0.0,
                final_patch_size=patch,
                unlabelled=True,
            )
            for source, cases in sources
        ]
        sizes = np.array([len(cases) for _, cases in sources], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.transforms = training_transforms(
            patch, default_mirror_axes(patch), configuration.use_mask_for_norm, sas=True
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        from segflow.training.augmentation import apply_transforms
        from segflow.training.dataloading import _global_generators_seeded, batch_seed_sequence

        sampling, first, second = batch_seed_sequence(self.seed, 0, "ssl", int(index)).spawn(3)
        rng = np.random.default_rng(sampling)
        sampler = self.samplers[0]
        if len(self.samplers) > 1:
            sampler = self.samplers[int(rng.choice(len(self.samplers), p=self.weights))]
        data, seg, _ = sampler.next_batch(rng)
        views = []
        for sequence in (first, second):
            with _global_generators_seeded(sequence):
                view, _ = apply_transforms(self.transforms, data.copy(), seg.copy())
            views.append(torch.from_numpy(view))
        return {"query": views[0], "key": views[1]}


class ProjectedEncoder(nn.Module):
    """An encoder, its deepest features averaged over 2 parts per axis, and a projection
    head.

    Args:
        encoder: returns a tensor, or a list of features whose last is the deepest.
        width: channels of the deepest features.
        projection_dim: outputs of the head.
        ndim: spatial axes.
    """

    def __init__(self, encoder: nn.Module, width: int, projection_dim: int, ndim: int) -> None:
        super().__init__()
        self.encoder = encoder
        pool = nn.AdaptiveAvgPool2d if ndim == 2 else nn.AdaptiveAvgPool3d
        self.pool = pool(_POOLED)
        pooled = width * _POOLED**ndim
        # Batch normalization in the head (as SimCLR's): the pooled features of a fresh
        # encoder differ little between samples, and it scales up what differs.
        self.projection = nn.Sequential(
            nn.Linear(pooled, width),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, projection_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.encoder(x)
        if isinstance(features, (list, tuple)):
            features = features[-1]
        pooled = self.pool(features).flatten(1)
        return F.normalize(self.projection(pooled).float(), dim=1)


class MomentumContrast(nn.Module):
    """MoCo: the InfoNCE loss of a query encoder against a momentum key encoder and a queue.

    Args:
        query: the query encoder (trained).
        queue_size: negative keys kept.
        temperature: divides the similarities.
        key_momentum: the key encoder's weights become ``m * key + (1 - m) * query`` before
            each batch.
    """

    def __init__(
        self, query: ProjectedEncoder, queue_size: int, temperature: float, key_momentum: float
    ) -> None:
        super().__init__()
        self.query = query
        self.key = copy.deepcopy(query)
        for parameter in self.key.parameters():
            parameter.requires_grad_(False)
        self.temperature = float(temperature)
        self.key_momentum = float(key_momentum)
        dim = query.projection[-1].out_features
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        # Keys in the queue so far: the empty slots are left out of the loss.
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _update_key_encoder(self) -> None:
        m = self.key_momentum
        for key, query in zip(self.key.parameters(), self.query.parameters(), strict=True):
            key.mul_(m).add_(query.detach(), alpha=1 - m)
        for key, query in zip(self.key.buffers(), self.query.buffers(), strict=True):
            key.copy_(query)

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        size = self.queue.shape[0]
        keys = keys[-size:]  # a batch larger than the queue: its last keys
        start = int(self.queue_pointer)
        rows = (torch.arange(keys.shape[0], device=keys.device) + start) % size
        self.queue[rows] = keys
        self.queue_pointer.fill_((start + keys.shape[0]) % size)
        self.queue_filled.fill_(min(size, int(self.queue_filled) + keys.shape[0]))

    @torch.no_grad()
    def fill_queue(self, key_views: Iterable[Tensor]) -> int:
        """Put the keys of ``key_views`` into the queue, stopping once it is full; returns the
        batches used."""
        used = 0
        for view in key_views:
            self._enqueue(self.key(view))
            used += 1
            if int(self.queue_filled) >= self.queue.shape[0]:
                break
        return used

    @torch.no_grad()
    def evaluate(self, pairs: list[tuple[Tensor, Tensor]]) -> float:
        """The InfoNCE loss of the query encoder on fixed view pairs, each pair's other views
        its negatives (no queue, no key encoder: it compares two states of one encoder)."""
        training = self.query.training
        self.query.eval()
        q = torch.cat([self.query(a) for a, _ in pairs])
        k = torch.cat([self.query(b) for _, b in pairs])
        self.query.train(training)
        logits = q @ k.t() / self.temperature
        return float(F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device)))

    def logits(self, query_view: Tensor, key_view: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits, keys)``: per sample, its positive then the queue's similarities, divided
        by the temperature; and the batch's keys."""
        q = self.query(query_view)
        with torch.no_grad():
            self._update_key_encoder()
            k = self.key(key_view)
        positive = (q * k).sum(1, keepdim=True)
        # Slots fill in order from the first, so the filled ones are the first rows.
        negative = q @ self.queue[: int(self.queue_filled)].clone().t()
        return torch.cat((positive, negative), dim=1) / self.temperature, k

    def forward(self, query_view: Tensor, key_view: Tensor) -> Tensor:
        """The InfoNCE loss of the batch; its keys join the queue."""
        logits, keys = self.logits(query_view, key_view)
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, target)
        self._enqueue(keys)
        return loss


def encoder_of(network: nn.Module) -> nn.Module:
    """The encoder of ``network`` (inside a spatial transformer too): the U-Net's encoder, or
    a zoo network's (:class:`~segflow.networks.zoo.ZooEncoder`), sharing its layers.

    Raises:
        SegflowError: ``network`` has neither.
    """
    from segflow.networks.spatial_transformer import SpatialTransformer
    from segflow.networks.unet import UNet
    from segflow.networks.zoo import ZooNetwork

    inner = network.network if isinstance(network, SpatialTransformer) else network
    if isinstance(inner, UNet):
        return inner.encoder
    if isinstance(inner, ZooNetwork):
        return inner.encoder()
    raise SegflowError(
        "cannot pretrain this network's encoder",
        [
            Problem(
                "network.architecture",
                f"{type(inner).__name__} is neither a U-Net of the plans nor a network of the "
                "model zoo",
            )
        ],
    )


@torch.no_grad()
def deepest_width(encoder: nn.Module, in_channels: int, patch_size: tuple[int, ...]) -> int:
    """Channels of the deepest features ``encoder`` gives for one patch (one evaluation-mode
    pass on zeros: the families differ in how wide their deepest stage is)."""
    training = encoder.training
    encoder.eval()
    features = encoder(torch.zeros(1, in_channels, *patch_size))
    encoder.train(training)
    if isinstance(features, (list, tuple)):
        features = features[-1]
    return int(features.shape[1])


def _cosine_lr(initial: float, step: int, steps: int) -> float:
    return initial * 0.5 * (1 + math.cos(math.pi * step / steps))


def pretrain_encoder(
    *,
    plans_path: str | os.PathLike[str],
    configuration: str,
    dataset_json: str | os.PathLike[str],
    splits_path: str | os.PathLike[str],
    preprocessed_folder: str | os.PathLike[str],
    output_folder: str | os.PathLike[str],
    settings: PretrainingSettings,
    fold: int,
    variant: NetworkVariant | None = None,
    dataset_report: str | os.PathLike[str] | None = None,
) -> Path:
    """Pretrain the encoder of the configuration's network on ``fold``'s training cases
    (never its validation cases); returns ``checkpoint_ssl.pt``.

    Args:
        fold: the fold of the splits whose training cases are drawn from.
        dataset_report: ``validate_dataset``'s report, whose test cases are the images
            ``settings.test_images`` adds (needed only then).

    Raises:
        SegflowError: an unknown configuration, cases missing from the preprocessed folder,
            a network without an encoder to pretrain, or ``test_images`` without test
            images; each named.
    """
    from segflow.compute import set_up_compute
    from segflow.networks import build_network
    from segflow.training.checkpoint import save_checkpoint
    from segflow.training.fold import read_fold, unpreprocessed

    files = read_fold(plans_path=plans_path, configuration=configuration, dataset_json=dataset_json,
                      splits_path=splits_path, fold=fold)  # fmt: skip
    plans, dataset, plan = files.plans, files.dataset, files.plan
    cases, validation = sorted(files.train_cases), files.val_cases
    missing = unpreprocessed(preprocessed_folder, cases)
    if missing:
        raise SegflowError(f"{len(missing)} cases are missing from the preprocessed data", missing)
    test_cases = _test_cases(dataset_report) if settings.test_images else []
    variant = variant or NetworkVariant()
    device = set_up_compute(settings.device, settings.threads)
    torch.manual_seed(settings.seed)
    network = build_network(
        plan, dataset.num_channels, dataset.num_segmentation_heads, variant=variant
    )
    encoder = encoder_of(network)
    width = deepest_width(encoder, dataset.num_channels, tuple(plan.patch_size))
    model = MomentumContrast(
        ProjectedEncoder(encoder, width, settings.projection_dim, plan.ndim),
        settings.queue_size,
        settings.temperature,
        settings.key_momentum,
    ).to(device)
    optimizer = torch.optim.SGD(
        model.query.parameters(),
        lr=settings.initial_lr,
        momentum=0.9,
        weight_decay=settings.weight_decay,
    )
    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    for leftover in output.glob(f"{_TEST_IMAGES_PREFIX}*"):  # of a killed run
        shutil.rmtree(leftover, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=_TEST_IMAGES_PREFIX, dir=output) as unlabelled:
        if test_cases:
            _preprocess_unlabelled(test_cases, plans, configuration, dataset, settings, unlabelled)
        views = ContrastiveViews(
            preprocessed_folder,
            cases,
            plan,
            settings.seed,
            unlabelled=(unlabelled, [c.case_id for c in test_cases]) if test_cases else None,
        )
        history, evaluation, budget = _pretrain(model, optimizer, views, plan, settings, device)
    write_ssl_progress(output, history)
    state = {
        "segflow_version": __version__,
        "kind": "ssl_pretraining",
        "configuration": configuration,
        "num_input_channels": dataset.num_channels,
        "num_outputs": dataset.num_segmentation_heads,
        "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "network_variant": variant.to_dict(),
        "settings": settings.result_fields(),
        # What the encoder saw: the fold's training cases, not the ones it validates on.
        "cases": {
            "fold": int(fold),
            "training": len(cases),
            "validation_excluded": len(validation),
            "test": len(test_cases),
        },
        "budget": budget,
        "history": history,
        "evaluation": evaluation,
    }
    return save_checkpoint(output / SSL_CHECKPOINT, state)


def _test_cases(dataset_report: str | os.PathLike[str] | None) -> list[Any]:
    """The test cases of the dataset report, without their labels."""
    from segflow.io.atomic import read_json

    where = "pretraining.test_images"
    if dataset_report is None:
        raise SegflowError(
            "cannot pretrain on the test images",
            [Problem(where, "needs the dataset report (--dataset-report) listing them")],
        )
    from segflow.preprocessing.preprocessor import CaseSpec

    report = read_json(dataset_report)
    root = Path(report["dataset"])
    cases = [
        dataclasses.replace(CaseSpec.from_dict(entry, root), label=None)
        for entry in report.get("test_cases") or []
    ]
    if not cases:
        raise SegflowError(
            "cannot pretrain on the test images",
            [Problem(where, f"{root / 'imagesTs'} has none ({dataset_report})")],
        )
    return cases


def _preprocess_unlabelled(
    cases: list[Any],
    plans: Any,
    configuration: str,
    dataset: Any,
    settings: PretrainingSettings,
    folder: str,
) -> None:
    """The test images preprocessed as the configuration's training images, into ``folder``."""
    from segflow.preprocessing.preprocessor import preprocess_cases

    started = time.perf_counter()
    workers = max(1, settings.threads or 1)
    preprocess_cases(cases, plans, configuration, dataset, settings.seed, folder, workers)
    logger.info(
        "preprocessed %d test images to pretrain on (labels not read) in %.1f s",
        len(cases), time.perf_counter() - started,
    )  # fmt: skip


def _pretrain(
    model: MomentumContrast,
    optimizer: torch.optim.Optimizer,
    views: ContrastiveViews,
    plan: ConfigurationPlan,
    settings: PretrainingSettings,
    device: torch.device,
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """The pretraining loop: the loss per epoch, of the held-out pairs before and after, and
    the batches the budget spent."""
    from segflow.training.dataloading import batch_loader, workers_for

    workers = settings.num_workers
    if workers is None:
        workers = workers_for(settings.threads or torch.get_num_threads())
    steps = settings.epochs * settings.iterations_per_epoch
    warm = warm_start_batches(settings, plan.batch_size)
    history: list[dict[str, float]] = []
    logger.info(
        "pretraining the encoder on %s: %d epochs x %d iterations, queue %d, "
        "temperature %g, projection %d; before the first epoch %d batches warm-start the "
        "queue and %d batches of view pairs are held out to measure the encoder",
        " and ".join(f"{len(s.case_ids)} cases" for s in views.samplers),
        settings.epochs, settings.iterations_per_epoch,
        settings.queue_size, settings.temperature, settings.projection_dim,
        warm, _EVALUATION_BATCHES,
    )  # fmt: skip
    # Fixed pairs of views, never trained on: the loss of the encoder before and after.
    held = [
        (b["query"].to(device), b["key"].to(device))
        for b in batch_loader(views, steps, steps + _EVALUATION_BATCHES, workers)
    ]
    model.train()
    evaluation = {"before": model.evaluate(held)}
    started = time.perf_counter()
    first_warm = steps + _EVALUATION_BATCHES
    loader = batch_loader(views, first_warm, first_warm + warm, workers)
    used = model.fill_queue(b["key"].to(device) for b in loader) if warm else 0
    logger.info(
        "queue warm start: %d batches of the untrained key encoder put %d of %d keys in the "
        "queue in %.1f s; the rest fill as training goes",
        used, int(model.queue_filled), settings.queue_size, time.perf_counter() - started,
        extra={"console": True},
    )  # fmt: skip
    budget = {
        "training_batches": steps,
        "warm_start_batches": used,
        "held_out_batches": _EVALUATION_BATCHES,
        "warm_start_seconds": time.perf_counter() - started,
    }
    for epoch in range(settings.epochs):
        started, losses = time.perf_counter(), []
        first = epoch * settings.iterations_per_epoch
        loader = batch_loader(views, first, first + settings.iterations_per_epoch, workers)
        for step, batch in enumerate(loader, start=first):
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(settings.initial_lr, step, steps)
            loss = model(batch["query"].to(device), batch["key"].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.query.parameters(), 12.0)
            optimizer.step()
            losses.append(float(loss.detach().cpu()))
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "first_loss": losses[0],
                "last_loss": losses[-1],
                "seconds": time.perf_counter() - started,
            }
        )
        spent = sum(h["seconds"] for h in history)
        logger.info(
            "pretraining epoch %d of %d: InfoNCE %.4f, %.1f s (about %.0f s left)",
            epoch + 1, settings.epochs, history[-1]["loss"], history[-1]["seconds"],
            spent / len(history) * (settings.epochs - len(history)),
            extra={"console": True},  # segflow.cli.CONSOLE: shown in the workflow's output
        )  # fmt: skip
    evaluation["after"] = model.evaluate(held)
    logger.info(
        "InfoNCE of %d held-out view pairs against each other: %.4f before, %.4f after",
        sum(len(a) for a, _ in held), evaluation["before"], evaluation["after"],
    )  # fmt: skip
    return history, evaluation, budget


def warm_start_batches(settings: PretrainingSettings, batch_size: int) -> int:
    """Key batches put into the queue before the first step: ``queue_warm_start`` times the
    training iterations (rounded up), never more than fill the queue."""
    steps = settings.epochs * settings.iterations_per_epoch
    fill = -(-settings.queue_size // int(batch_size))
    return min(fill, math.ceil(settings.queue_warm_start * steps))


def write_ssl_progress(folder: Path, history: list[dict[str, float]]) -> None:
    """``ssl_progress.csv`` and ``ssl_progress.png`` (the InfoNCE loss per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from segflow.io.atomic import atomic_path

    with (
        atomic_path(folder / SSL_PROGRESS_TABLE) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as fh,
    ):
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    axes.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    axes.set_xlabel("epoch")
    axes.set_ylabel("InfoNCE loss (mean over the epoch)")
    axes.set_title("Self-supervised pretraining (MoCo)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(folder / SSL_PROGRESS_PLOT) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
