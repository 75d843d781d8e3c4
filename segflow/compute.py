"""Where a stage computes: the device, torch's threads and, on the CPU, the C allocator.

Training, cross-validation and ``segflow predict`` start with :func:`set_up_compute`, which
chooses the device (:func:`choose_device`), sets torch's thread count and, when the device is
the CPU, calls :func:`reuse_freed_memory`. :func:`use_cpu_bf16` decides whether they compute in
bfloat16 autocast on the CPU (asked for with ``cpu_bf16``), and warns where the CPU only
emulates bf16 (:func:`cpu_has_native_bf16`).

Why the allocator matters on the CPU: PyTorch allocates every CPU tensor with ``malloc``. glibc
serves blocks above its mmap threshold (32 MiB at most) with a fresh ``mmap`` and unmaps them
on ``free``, so every large activation of every training iteration is new memory, whose pages
the kernel faults in and zeroes one by one when the first operation writes them. With the
Hippocampus plans an activation of the 3d_fullres network (batch 5, 32 channels of 40x56x40)
is 57 MB, one of the 2d network (batch 219, 32 channels of 56x40) 63 MB.
:func:`reuse_freed_memory` turns glibc's mmap off for large blocks and raises its trim
threshold, so freed blocks stay in the process's heap and the next iteration reuses them,
already mapped: the networks' forward and backward passes took 11-20 % (3d_fullres) and 14-26 %
(2d) less time on a 2-vCPU AVX2 machine (``benchmarks/network_speed.py`` with and without
``--reuse-freed-memory``, docs/results/training.md). The price is that a process keeps its peak
heap until it ends, and the heap fragments: the peak resident memory of those passes grew by
0.24-0.42 GB, that of a whole Hippocampus 3d_fullres training job (trainer, augmentation worker,
Snakemake) from 2.7 to 3.6 GB. Prediction of three large volumes (100x400x400 voxels, resampled,
140 windows each) in one process took 13-14 % less time at the same peak memory
(``benchmarks/predict_large_volumes.py``).

It is a process-wide setting of the C library, applied only on Linux with glibc (elsewhere the
allocator is left alone) and only for stages that compute on the CPU; the environment variable
``SEGFLOW_REUSE_FREED_MEMORY=0`` turns it off.

The kept heap must not be shared with a forked child: the augmentation workers of every
epoch's training and validation batches are forked from the training process, and a fork
shares the parent's pages copy-on-write; when the parent's next iteration writes into its
kept heap, each page it touches is copied while the child keeps the original, so the two
together hold the heap twice. SwinUNETR on Hippocampus (batch 7, padded to 64^3) peaked at
16.8 GB in the trainer and 12.4 GB in its augmentation worker and was killed for memory on
a 24 GB machine. :func:`release_freed_memory` (glibc's ``malloc_trim``) gives the free part
of the heap back to the system; :func:`segflow.training.dataloading.batch_loader` calls it
before its workers fork, so a fork shares only the live tensors (weights, optimizer state),
at the price of faulting the heap in again in the first iteration after it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

import torch

from segflow.devices import device_problem
from segflow.errors import SegflowError

__all__ = [
    "GLIBC_TUNABLES_REUSE_FREED_MEMORY",
    "REUSE_FREED_MEMORY_ENV",
    "choose_device",
    "cpu_has_native_bf16",
    "release_freed_memory",
    "reuse_freed_memory",
    "reusing_freed_memory",
    "set_up_compute",
    "use_cpu_bf16",
]

logger = logging.getLogger(__name__)

#: Set to ``0`` to leave the C allocator alone.
REUSE_FREED_MEMORY_ENV = "SEGFLOW_REUSE_FREED_MEMORY"

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# The largest trim threshold mallopt takes (an int): freed memory at the top of the heap is
# returned to the system only beyond 2 GiB.
_TRIM_THRESHOLD = 2**31 - 1
#: The same setting for a process started with it (``GLIBC_TUNABLES=...``), e.g. another tool's
#: process that a benchmark compares with.
GLIBC_TUNABLES_REUSE_FREED_MEMORY = (
    f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={_TRIM_THRESHOLD}"
)

_applied = False


def choose_device(requested: str = "auto") -> torch.device:
    """The device to compute on: ``auto`` picks CUDA, then MPS, then CPU.

    Raises:
        SegflowError: a device was requested that this machine does not have.
    """
    requested = requested.lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    problem = device_problem(requested)
    if problem:
        raise SegflowError(problem)
    kind = requested.split(":")[0]
    if not available[kind]:
        raise SegflowError(
            f"device '{requested}' was requested but this machine has none; use device: auto or cpu"
        )
    return torch.device(requested)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def _warn_emulated_bf16(what: str) -> None:
    logger.warning(
        "cpu_bf16 is on but this CPU has no native bfloat16 instructions (AVX-512 BF16 or "
        "AMX): bf16 is emulated and %s",
        what,
    )


def use_cpu_bf16(device: torch.device, requested: bool, what: str) -> bool:
    """Whether to compute in bfloat16 autocast: ``requested`` and ``device`` is the CPU.

    Warns once per process (and per ``what``, the consequence to name, e.g. "trains several
    times slower than float32") when this CPU only emulates bfloat16.
    """
    if not requested or device.type != "cpu":
        return False
    if not cpu_has_native_bf16():
        _warn_emulated_bf16(what)
    return True


def _glibc() -> ctypes.CDLL | None:
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    if not version or not version.startswith("glibc"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def reuse_freed_memory() -> bool:
    """Keep freed memory in this process's heap for reuse (see the module's docstring).

    Idempotent. Returns whether the setting is in effect: False where the C library is not
    glibc, where glibc refused it, or where ``SEGFLOW_REUSE_FREED_MEMORY=0``.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(REUSE_FREED_MEMORY_ENV, "1").strip() == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success, 0 on error.
    if not libc.mallopt(_M_MMAP_MAX, 0):
        return False
    if not libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD):
        return False
    _applied = True
    logger.debug("glibc malloc: large blocks from the heap, freed memory kept for reuse")
    return True


def release_freed_memory() -> bool:
    """Give the free memory of this process's heap back to the system (glibc's
    ``malloc_trim(0)``), so that a process forked next shares only live memory; see the
    module's docstring. Returns whether anything was released (False without glibc, or when
    :func:`reuse_freed_memory` is not in effect: then glibc returns freed memory itself)."""
    if not _applied:
        return False
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


def reusing_freed_memory() -> bool:
    """Whether :func:`reuse_freed_memory` is in effect in this process."""
    return _applied


def set_up_compute(device: str = "auto", threads: int | None = None) -> torch.device:
    """Choose the device, set torch's CPU threads (when given) and, on the CPU, let the process
    reuse freed memory. Returns the device.

    Raises:
        SegflowError: as :func:`choose_device`.
    """
    torch_device = choose_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    if torch_device.type == "cpu":
        reuse_freed_memory()
    return torch_device
