"""The fingerprint of one training case (the scatter step of the fingerprint stage).

A case fingerprint records what experiment planning needs from one case: its spacing, its
shape before and after cropping to the nonzero region, and a seeded sample of the intensities
of its foreground voxels in every channel. The gather step
(:func:`segflow.fingerprint.gather.gather_fingerprint`) pools these into ``fingerprint.json``.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow import __version__
from segflow.errors import Problem, SegflowError
from segflow.fingerprint.cropping import (
    bounding_box_shape,
    crop_to_bounding_box,
    nonzero_bounding_box,
)
from segflow.io.atomic import write_text
from segflow.io.case import read_case
from segflow.io.dataset import DatasetJson

__all__ = [
    "PERCENTILES",
    "case_rng",
    "fingerprint_case",
    "foreground_mask",
    "intensity_statistics",
    "sample_foreground",
    "to_json",
    "write_case_fingerprint",
]

logger = logging.getLogger(__name__)

#: The percentiles of the foreground intensities nnU-Net records (and CT normalization clips to).
PERCENTILES = {"percentile_00_5": 0.5, "median": 50.0, "percentile_99_5": 99.5}

# Written case fingerprints: lists this short stay on one line; longer number lists wrap.
_INLINE_WIDTH = 60
_SAMPLES_PER_LINE = 10


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """The random generator of one case: fixed by the run's seed and the case id alone.

    The case id enters through CRC-32 of its UTF-8 bytes, which (unlike ``hash()``) is the same
    in every process and on every machine, so a case draws the same sample whichever job,
    worker or order it is fingerprinted in.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(case_id.encode())]))


def foreground_mask(label: np.ndarray, ignore_label: int | None = None) -> np.ndarray:
    """Voxels of any foreground class: ``label > 0``, without the ignore label."""
    mask = label > 0
    if ignore_label is not None:
        mask &= label != ignore_label
    return mask


def sample_foreground(
    data: np.ndarray, mask: np.ndarray, num_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """Intensities of up to ``num_samples`` foreground voxels, the same voxels in every channel.

    Voxels are drawn without replacement when the foreground is larger than ``num_samples``;
    otherwise every foreground voxel is kept. Drawn voxels keep their raster order.

    Args:
        data: ``(c, *spatial)`` image.
        mask: foreground mask of shape ``data.shape[1:]``.
        num_samples: the most voxels to keep.
        rng: the case's generator (:func:`case_rng`).

    Returns:
        ``(c, n)`` array of intensities, ``n = min(num_samples, mask.sum())``.
    """
    voxels = np.flatnonzero(mask)
    if voxels.size > num_samples:
        voxels = np.sort(voxels[rng.choice(voxels.size, size=num_samples, replace=False)])
    return data.reshape(data.shape[0], -1)[:, voxels]


def intensity_statistics(values: np.ndarray) -> dict[str, float]:
    """Mean, std, min, max, median and the 0.5 and 99.5 percentiles of ``values``.

    Percentiles use numpy's default linear interpolation; std is the population std.
    """
    values = np.asarray(values, dtype=np.float64)
    low, median, high = np.percentile(values, list(PERCENTILES.values()))
    return {
        "mean": float(values.mean()),
        "median": float(median),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "percentile_00_5": float(low),
        "percentile_99_5": float(high),
    }


def _as_float32_numbers(values: np.ndarray) -> list[float]:
    # The shortest text that reads back as the same float32: 0.1 rather than 0.10000000149.
    return [float(str(v)) for v in values.astype(np.float32)]


def _check_arguments(case_id: str, images: Sequence[Path], seed: int, num_samples: int) -> None:
    problems = []
    if not case_id:
        problems.append(Problem("case_id", "must not be empty"))
    if not images:
        problems.append(Problem("images", "at least one channel file is needed"))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(Problem("seed", f"must be a non-negative integer, got {seed!r}"))
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        problems.append(Problem("num_samples", f"must be a positive integer, got {num_samples!r}"))
    if problems:
        raise SegflowError(f"cannot fingerprint case '{case_id}'", problems)


def fingerprint_case(
    case_id: str,
    images: Sequence[Path],
    label: Path,
    dataset: DatasetJson,
    seed: int,
    num_samples: int,
) -> dict[str, Any]:
    """Fingerprint one training case.

    The channel files are stacked in the order given and cropped to the box where any channel
    is nonzero (the label with them). Foreground is every voxel of the cropped label above 0,
    except the ignore label: those voxels are not annotated, so their intensities do not
    describe any class. (nnU-Net 2.8.1 counts ignore-labelled voxels as foreground here.)

    Args:
        case_id: the case identifier (file names without ``_XXXX`` and ending).
        images: the case's channel files, channel 0 first; an RGB image counts as 3 channels.
        label: the case's label file.
        dataset: the dataset description (channel count, ignore label).
        seed: the run's seed; with ``case_id`` it fixes which voxels are sampled.
        num_samples: the most foreground voxels sampled per channel.

    Returns:
        The content of ``fingerprint/cases/<case>.json`` (schema ``case_fingerprint``).

    Raises:
        SegflowError: a file cannot be read, the channels or the label do not match each other
            or the dataset, the image holds NaN or infinite values, or an argument is invalid.
    """
    _check_arguments(case_id, images, seed, num_samples)
    images = [Path(p) for p in images]
    case = read_case(images, label, dataset)
    data, first = case.data, case.reference
    where = f"case '{case_id}'"
    if not np.isfinite(data).all():
        bad = [str(c.path) for c in case.channels if not np.isfinite(c.array).all()]
        raise SegflowError(
            f"{where} has NaN or infinite intensities",
            [Problem(p, "NaN or infinite voxel values") for p in bad],
        )

    bbox = nonzero_bounding_box(data)
    cropped = crop_to_bounding_box(data, bbox)
    fg = foreground_mask(crop_to_bounding_box(case.seg, bbox), dataset.ignore_label)
    samples = sample_foreground(cropped, fg, num_samples, case_rng(seed, case_id))
    num_fg = int(fg.sum())
    per_channel = []
    for c in range(cropped.shape[0]):
        stats = intensity_statistics(cropped[c][fg]) if num_fg else None
        per_channel.append(
            {
                "num_foreground_voxels": num_fg,
                "statistics": stats,
                "samples": _as_float32_numbers(samples[c]),
            }
        )
    if num_fg == 0:
        logger.warning("%s has no foreground voxels inside its nonzero region", where)

    shape_before = list(first.shape)
    shape_after = bounding_box_shape(bbox)
    logger.debug(
        "%s: shape %s cropped to %s, %d foreground voxels", where, shape_before, shape_after, num_fg
    )
    return {
        "segflow_version": __version__,
        "case_id": case_id,
        "seed": seed,
        "num_samples": num_samples,
        "image_files": [p.name for p in images],
        "label_file": Path(label).name,
        "is_2d": bool(first.is_2d),
        "spacing": [float(s) for s in first.spacing],
        "shape_before_crop": shape_before,
        "bbox": bbox,
        "shape_after_crop": shape_after,
        "relative_size_after_cropping": float(np.prod(shape_after) / np.prod(shape_before)),
        "channels": per_channel,
    }


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def to_json(value: Any, level: int = 0) -> str:
    """Indented JSON whose short lists stay on one line and long number lists wrap."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {to_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple):
        flat = json.dumps(value, allow_nan=False, separators=(", ", ": "))
        if len(flat) <= _INLINE_WIDTH:
            return flat
        if all(_is_scalar(v) for v in value):
            rows = [
                ", ".join(json.dumps(v, allow_nan=False) for v in value[i : i + _SAMPLES_PER_LINE])
                for i in range(0, len(value), _SAMPLES_PER_LINE)
            ]
        else:
            rows = [to_json(v, level + 1) for v in value]
        return "[\n" + ",\n".join(inner + r for r in rows) + f"\n{pad}]"
    return json.dumps(value, allow_nan=False)


def write_case_fingerprint(path: str | Path, fingerprint: dict[str, Any]) -> Path:
    """Write a case fingerprint atomically as indented JSON with short lists on one line.

    Plain indented JSON would give every sampled intensity a line of its own (10,000 lines per
    channel); here sample lists wrap at ten values per line.
    """
    return write_text(path, to_json(fingerprint) + "\n")
