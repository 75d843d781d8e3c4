"""Memory requests of the workflow's data-sized jobs (fingerprint and preprocessing).

On a cluster every job asks its scheduler for memory up front (Snakemake's ``mem_mb``
resource, ``sbatch --mem`` under SLURM). For the jobs that load whole images, a constant is
either wasteful on small datasets or too small for large ones, so these functions size the
request from the images themselves: their voxel counts come from the file headers (read without
the voxel data) and, for preprocessing, from the plans' target spacing, which may make a case
several times larger than its file (anisotropic slices resampled to a finer spacing).

The per-voxel cost was measured with one channel and a label: `segflow preprocess` peaked at
15-27 bytes per voxel of the larger of the case before and after resampling (float32 data,
float64 resampling intermediates, the label), `segflow fingerprint-case` at about 17 bytes per
voxel. The estimates below (24 bytes per voxel and array, counting the case before and after
resampling) are about twice that. Every estimate grows with the job's attempt, so a job killed
for memory asks for more when Snakemake retries it (``--retries``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_MB",
    "BYTES_PER_VOXEL",
    "fingerprint_batch_mem_mb",
    "fingerprint_case_mem_mb",
    "fingerprint_mem_mb",
    "image_geometry",
    "input_size_mem_mb",
    "preprocess_mem_mb",
    "resampled_voxels",
]

#: What a `python -m segflow` process holds before it reads an image (interpreter, numpy,
#: SciPy, SimpleITK, torch's import), with room to spare.
BASE_MB = 1000
#: Bytes per voxel and per array (each channel, and the label) while a case is processed.
BYTES_PER_VOXEL = 24
#: The gather step parses every case fingerprint's JSON into Python floats and NumPy arrays.
JSON_EXPANSION = 8
#: Out-of-plane spacing of 2D images (as segflow.io.image reads them).
_SPACING_2D = 999.0
_MB = 1024 * 1024


Geometry = tuple[tuple[int, int, int], tuple[float, float, float], int]


def image_geometry(path: str | Path) -> Geometry:
    """Shape and spacing ``(z, y, x)`` and channel count of an image, from its header only.

    2D images get ``z == 1`` and an out-of-plane spacing of 999, as segflow reads them.
    Headers are read once per file version in a process: Snakemake sizes the fingerprint
    batches and every configuration's preprocessing batches from the same images, and reading
    a header (about 3 ms) is most of the time it spends between jobs.
    """
    stat = os.stat(path)
    return _image_geometry(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=65536)
def _image_geometry(path: str, mtime_ns: int, size: int) -> Geometry:
    import SimpleITK as sitk

    from segflow.io.image import sitk_path  # a name SimpleITK cannot take is an error, not an abort

    reader = sitk.ImageFileReader()
    reader.SetFileName(sitk_path(path))
    reader.ReadImageInformation()
    size = [int(s) for s in reader.GetSize()]
    spacing = [float(s) for s in reader.GetSpacing()]
    channels = int(reader.GetNumberOfComponents())
    natural_2d = str(path).lower().endswith((".png", ".bmp", ".tif", ".tiff"))
    if len(size) == 3 and size[2] == 1 and natural_2d:
        size, spacing = size[:2], spacing[:2]
    if len(size) == 2:
        return (1, size[1], size[0]), (_SPACING_2D, spacing[1], spacing[0]), channels
    if len(size) != 3:
        raise ValueError(f"{path}: expected a 2D or 3D image, found {len(size)}D")
    return (size[2], size[1], size[0]), (spacing[2], spacing[1], spacing[0]), channels


def resampled_voxels(
    shape: Sequence[int],
    spacing: Sequence[float],
    plans: Mapping[str, Any],
    configuration: str,
) -> int:
    """Voxels of a case of ``shape``/``spacing`` (``z, y, x``) after resampling to a configuration.

    The configuration's target spacing is in the plans' transposed axis order; a 2D
    configuration names only the in-plane spacing, the slices keep theirs (as preprocessing
    does). The case is not cropped here, so this is an upper bound.
    """
    axes = list(plans.get("transpose_forward", [0, 1, 2]))
    shape_t = [int(shape[a]) for a in axes]
    spacing_t = [float(spacing[a]) for a in axes]
    target = [float(s) for s in plans["configurations"][configuration]["spacing"]]
    if len(target) < len(spacing_t):
        target = [spacing_t[0], *target]
    return math.prod(
        max(1, round(n * s / t)) for n, s, t in zip(shape_t, spacing_t, target, strict=True)
    )


def _case_mb(voxels: int, arrays: int) -> float:
    return BYTES_PER_VOXEL * arrays * voxels / _MB


def _request(mb: float, attempt: int) -> int:
    """A request in MB: the estimate on top of the base, times the attempt, in steps of 100."""
    return int(math.ceil((BASE_MB + mb) * max(1, attempt) / 100.0) * 100)


def input_size_mem_mb(input_mb: float, attempt: int = 1) -> int:
    """Memory (MB) from the compressed size of a job's input files, when their headers cannot
    be read (a dry run before the files exist): images compress a few times, labels far more.
    """
    return _request(50 * input_mb, attempt)


def fingerprint_case_mem_mb(
    images: Iterable[str | Path], label: str | Path, attempt: int = 1
) -> int:
    """Memory (MB) of `segflow fingerprint-case` on one case: its channels and label in memory."""
    images = list(images)
    shape, _, _ = image_geometry(images[0])
    channels = sum(image_geometry(p)[2] for p in images)
    return _request(_case_mb(math.prod(shape), channels + 1), attempt)


def fingerprint_batch_mem_mb(
    cases: Iterable[tuple[Sequence[str | Path], str | Path]], workers: int = 1, attempt: int = 1
) -> int:
    """Memory (MB) of `segflow fingerprint-batch`: its ``workers`` largest cases at once.

    Args:
        cases: each case's channel files and label file.
        workers: cases fingerprinted side by side (worker processes).
        attempt: Snakemake's attempt number (1 on the first try).
    """
    sizes = []
    for images, _ in cases:
        images = list(images)
        shape, _, _ = image_geometry(images[0])
        channels = sum(image_geometry(p)[2] for p in images)
        sizes.append(_case_mb(math.prod(shape), channels + 1))
    largest = sorted(sizes, reverse=True)[: max(1, workers)]
    # Each worker process beyond the first adds its own interpreter (forked: a fraction).
    return _request(sum(largest) + 200 * (len(largest) - 1), attempt)


def fingerprint_mem_mb(case_fingerprints_mb: float, attempt: int = 1) -> int:
    """Memory (MB) of the gather step: every case fingerprint (their total file size) parsed."""
    return _request(JSON_EXPANSION * case_fingerprints_mb, attempt)


def preprocess_mem_mb(
    cases: Iterable[tuple[Sequence[str | Path], str | Path | None]],
    plans: Mapping[str, Any],
    configuration: str,
    workers: int = 1,
    attempt: int = 1,
) -> int:
    """Memory (MB) of a `segflow preprocess` job: its ``workers`` largest cases at once.

    Args:
        cases: each case's channel files and label file (or None).
        plans: the content of plans.json.
        configuration: the configuration the job preprocesses.
        workers: cases preprocessed side by side (worker processes).
        attempt: Snakemake's attempt number (1 on the first try).
    """
    sizes = []
    for images, label in cases:
        images = list(images)
        shape, spacing, _ = image_geometry(images[0])
        channels = sum(image_geometry(p)[2] for p in images)
        arrays = channels + (label is not None)
        voxels = math.prod(shape) + resampled_voxels(shape, spacing, plans, configuration)
        sizes.append(_case_mb(voxels, arrays))
    largest = sorted(sizes, reverse=True)[: max(1, workers)]
    # Each worker process beyond the first adds its own interpreter (forked: a fraction).
    return _request(sum(largest) + 200 * (len(largest) - 1), attempt)
