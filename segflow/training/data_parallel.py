"""Data-parallel training of one fold: ``num_processes`` processes, one slice of each batch each.

With ``num_processes`` N > 1, :func:`launch` spawns N processes (ranks) that train the fold
together with :class:`torch.nn.parallel.DistributedDataParallel`: backend ``nccl`` on CUDA, one
GPU per rank (``cuda:<rank>``), ``gloo`` on the CPU, rendezvous on a free port of 127.0.0.1.
The job's CPU threads are shared among the ranks (``threads // N`` each, at least 1), and the
background augmentation workers of each rank are chosen from its share.

What stays as in one process, so that the loss curve is the single-process one up to float
rounding:

* The batch. Every rank makes the whole global batch ``k`` (a function of ``(seed, fold,
  stream, k)``, :mod:`segflow.training.dataloading`) and keeps its slice: rank ``r`` the
  samples ``r * B/N`` to ``(r + 1) * B/N - 1``. The plans' batch size must be divisible by N.
  The price is that each rank augments the whole batch (N times the CPU work of the batches).
* The loss. Terms over the whole batch (batch Dice, means over the annotated voxels, label
  frequencies) sum over the ranks (:mod:`segflow.training.losses.ranks`); DDP averages the
  gradients. The logged loss is the mean of the ranks' losses, which is the batch's loss.
* BatchNorm (network variant ``norm: batch``): on CUDA converted to
  :class:`torch.nn.SyncBatchNorm`, so the statistics are the whole batch's; refused on the CPU,
  where PyTorch cannot synchronize them.
* Validation. Each rank runs its slice of every validation batch; the true/false positive and
  negative counts are summed and the loss averaged over the ranks, so every rank holds the
  same pseudo Dice and EMA, the single-process ones.

Who writes what: rank 0 alone writes checkpoints, ``progress.csv``/``.png``, ``training.log``
and shows the progress bar; every rank reads ``checkpoint_latest.pt`` when resuming, and
restores the random states rank 0 recorded (the batches do not depend on them). A stop signal
(SIGTERM, SIGUSR1) reaching the launching process is passed to every rank; the ranks agree
after each iteration whether any of them got one (one all-reduce), so all stop after the same
iteration, rank 0 writes ``checkpoint_latest.pt`` and every rank ends; the launcher then raises
:class:`~segflow.training.signals.TrainingInterrupted` as one process would.

The trainer's steps reduce over the ranks with :func:`all_reduce` and wait for each other
with :func:`barrier` (both do nothing in one process). This module knows the trainer only by
what :func:`launch` uses of it (:class:`RankTrainer`): it imports nothing of
:mod:`segflow.training.trainer`, which imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import logging.handlers
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from segflow.errors import Problem, SegflowError
from segflow.training.signals import STOP_SIGNALS, TrainingInterrupted, handling

__all__ = [
    "RankTrainer",
    "Ranks",
    "all_reduce",
    "barrier",
    "batch_size_problems",
    "data_parallel",
    "free_port",
    "launch",
    "synchronized_batch_norm",
    "threads_per_process",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel processes of a fold."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the fold's files (rank 0)."""
        return self.rank == 0

    def batch_slice(self, batch_size: int) -> slice:
        """This rank's samples of a batch of ``batch_size`` (divisible by :attr:`size`)."""
        per_rank = batch_size // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


class RankTrainer(Protocol):
    """What :func:`launch` needs of a trainer (:class:`~segflow.training.trainer.FoldTrainer`):
    its settings and fold, its place among the ranks, and training to the end."""

    settings: Any
    fold: int
    ranks: Ranks

    def run(self) -> Path: ...


def all_reduce(
    values: Sequence[float], ranks: Ranks, device: torch.device, op: str = "sum"
) -> list[float]:
    """``values`` summed (or their maximum, ``op="max"``) over the ranks; themselves in one
    process."""
    if ranks.size == 1:
        return [float(v) for v in values]
    import torch.distributed as dist

    # nccl reduces tensors on the rank's GPU, gloo on the CPU.
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def barrier(ranks: Ranks) -> None:
    """Wait until every rank got here (nothing to wait for in one process)."""
    if ranks.size > 1:
        import torch.distributed as dist

        dist.barrier()


class _LossOutputs(nn.Module):
    """The network, with the deep-supervision outputs the loss weights 0 detached.

    No gradient reaches their heads (in one process neither); detached, DDP's search for
    unused parameters finds them from the forward pass instead of expecting gradients for
    them, and their gradients stay None as in one process (their weights are not updated).
    """

    def __init__(self, network: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.weights = tuple(weights)

    def forward(self, x: Tensor) -> Any:
        outputs = self.network(x)
        if not isinstance(outputs, list | tuple):
            return outputs
        return [o if w != 0 else o.detach() for o, w in zip(outputs, self.weights, strict=True)]


def synchronized_batch_norm(network: nn.Module, device: torch.device) -> nn.Module:
    """``network`` with its BatchNorm layers computing the statistics of the whole batch
    (:class:`torch.nn.SyncBatchNorm`, as in one process); unchanged without BatchNorm.

    Raises:
        SegflowError: BatchNorm on the CPU, where PyTorch has no synchronized BatchNorm
            (each process would normalize its own slice: another training than one process's).
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules()):
        return network
    if device.type != "cuda":
        raise SegflowError(
            "cannot train this network with data-parallel processes on the CPU",
            [
                Problem(
                    "num_processes",
                    "the network uses BatchNorm, whose statistics must cover the whole batch; "
                    "PyTorch synchronizes them only on GPUs (SyncBatchNorm). Use num_processes: "
                    "1 on the CPU, or instance or group normalization",
                )
            ],
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(network)


def data_parallel(network: nn.Module, device: torch.device, loss: nn.Module) -> nn.Module:
    """``network`` wrapped for DDP (in an initialized process group); its gradients are the
    mean of the ranks'."""
    from torch.nn.parallel import DistributedDataParallel

    weights = getattr(loss, "weights", None)
    module = _LossOutputs(network, weights) if weights is not None else network
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        # The heads of outputs weighted 0 are unused (see _LossOutputs).
        find_unused_parameters=weights is not None and 0 in weights,
    )


def batch_size_problems(batch_size: int, num_processes: int, configuration: str) -> list[Problem]:
    """Whether a configuration's batch can be split evenly over ``num_processes`` ranks."""
    if batch_size % num_processes == 0:
        return []
    return [
        Problem(
            f"plans: configuration {configuration}",
            f"batch_size {batch_size} cannot be split evenly over num_processes "
            f"{num_processes} (each rank trains an equal slice of the same batch); use a "
            f"num_processes that divides {batch_size}",
        )
    ]


def threads_per_process(threads: int, num_processes: int) -> int:
    """Each rank's share of the job's CPU threads (at least 1)."""
    return max(1, int(threads) // int(num_processes))


def free_port() -> int:
    """A TCP port of 127.0.0.1 free at the time of asking, for the ranks' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _backend(device: torch.device, num_processes: int) -> str:
    if device.type == "cuda":
        available = torch.cuda.device_count()
        if available < num_processes:
            raise SegflowError(
                "not enough GPUs for the data-parallel processes",
                [
                    Problem(
                        "num_processes",
                        f"{num_processes} processes need {num_processes} GPUs, this machine "
                        f"shows {available}",
                    )
                ],
            )
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    raise SegflowError(
        "data-parallel training needs CUDA or the CPU",
        [Problem("device", f"got {device}; use num_processes: 1 there")],
    )


@contextlib.contextmanager
def _forwarding_signals(processes: list[Any], signals: tuple[int, ...]) -> Iterator[None]:
    """While waiting for the ranks, pass a stop signal on to each of them."""

    def forward(signum: int, frame: Any) -> None:
        logger.warning(
            "%s received: passing it to the %d training processes",
            signal.Signals(signum).name,
            len(processes),
        )
        for process in processes:
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    with handling(signals, forward):
        yield


def launch(trainer: RankTrainer) -> Path:
    """Train ``trainer``'s fold with ``settings.num_processes`` ranks; what
    :meth:`~segflow.training.trainer.FoldTrainer.run` returns and raises."""
    import torch.multiprocessing as mp

    from segflow.compute import choose_device

    settings = trainer.settings
    size = settings.num_processes
    backend = _backend(choose_device(settings.device), size)
    threads = threads_per_process(settings.threads or torch.get_num_threads(), size)
    rank_settings = dataclasses.replace(settings, threads=threads)
    port = free_port()
    logger.info(
        "training fold %d with %d data-parallel processes (%s, port %d, %d threads each)",
        trainer.fold,
        size,
        backend,
        port,
        threads,
    )
    spawn = mp.get_context("spawn")
    results = spawn.SimpleQueue()
    # The ranks log through this process's handlers (its log file and stderr).
    records = spawn.Queue()
    listener = logging.handlers.QueueListener(
        records, *logging.getLogger().handlers, respect_handler_level=True
    )
    level = logging.getLogger("segflow").getEffectiveLevel()
    listener.start()
    try:
        context = mp.start_processes(
            _rank_main,
            args=(trainer, rank_settings, size, backend, port, results, (records, level)),
            nprocs=size,
            join=False,
            start_method="spawn",
        )
        with _forwarding_signals(context.processes, STOP_SIGNALS):
            while not context.join(timeout=0.5):
                pass
    finally:
        listener.stop()
    outcomes = []
    while not results.empty():
        outcomes.append(results.get())
    outcomes.sort(key=lambda o: o[1])
    for kind, _rank, *rest in outcomes:
        if kind == "error":
            summary, problems = rest
            raise SegflowError(summary, [Problem(w, m) for w, m in problems])
    for kind, _rank, *rest in outcomes:
        if kind == "interrupted":
            signum, checkpoint = rest
            raise TrainingInterrupted(signum, Path(checkpoint))
    done = [rest[0] for kind, _rank, *rest in outcomes if kind == "done"]
    if len(done) != size:
        raise RuntimeError(f"{size - len(done)} of {size} training processes reported nothing")
    return Path(done[0])


def _set_up_logging(rank: int, records: Any, level: int) -> None:
    """Send this rank's log records to the launcher: rank 0's at the launcher's level, the
    others' warnings and errors only, marked with their rank."""
    handler = logging.handlers.QueueHandler(records)
    if rank:

        def mark(record: logging.LogRecord) -> bool:
            record.msg = f"[rank {rank}] {record.msg}"
            return True

        handler.addFilter(mark)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level if rank == 0 else logging.WARNING)


def _rank_main(
    rank: int,
    trainer: RankTrainer,
    settings: Any,
    size: int,
    backend: str,
    port: int,
    results: Any,
    logging_setup: tuple[Any, int],
) -> None:
    """One rank: join the process group, train, report how it ended to the launcher."""
    import torch.distributed as dist

    _set_up_logging(rank, *logging_setup)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=size)
    trainer.settings = settings
    trainer.ranks = Ranks(rank, size)
    try:
        final = trainer.run()
        results.put(("done", rank, str(final)))
    except TrainingInterrupted as err:
        results.put(("interrupted", rank, err.signum, str(err.checkpoint)))
    except SegflowError as err:
        results.put(("error", rank, err.summary, [(p.where, p.message) for p in err.problems]))
    finally:
        dist.destroy_process_group()
