"""Reading one case: its channel files stacked, and its label, checked against each other.

Fingerprinting, preprocessing and (later) prediction all read cases the same way; the checks
here are the ones that make the arrays usable together. ``validate_dataset`` has already
reported every problem of a dataset at once, so these fail on the first file that breaks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.io.dataset import DatasetJson
from segflow.io.image import ImageData, read_image

__all__ = ["RawCase", "read_case"]

logger = logging.getLogger(__name__)


@dataclass
class RawCase:
    """A case as read from disk.

    Attributes:
        data: ``(channels, z, y, x)`` float32, channels in file order.
        seg: ``(z, y, x)`` integer label map, or None when no label was given.
        reference: the first channel's image (geometry: spacing, origin, direction).
        channels: every channel file's image, in order (their arrays are in ``data``).
    """

    data: np.ndarray
    seg: np.ndarray | None
    reference: ImageData
    channels: list[ImageData]


def _dimension(image: ImageData) -> str:
    return "2D" if image.is_2d else "3D"


def _channel_problems(channels: list[ImageData], dataset: DatasetJson) -> list[Problem]:
    first = channels[0]
    problems = [
        Problem(str(c.path), f"shape {c.shape} differs from {first.shape} of {first.path}")
        for c in channels[1:]
        if c.shape != first.shape
    ]
    problems += [
        Problem(
            str(c.path),
            f"{_dimension(c)} image in a case whose first channel is {_dimension(first)}",
        )
        for c in channels[1:]
        if c.is_2d != first.is_2d
    ]
    total = sum(c.num_channels for c in channels)
    if total != dataset.num_channels:
        problems.append(
            Problem(
                str(first.path),
                f"{len(channels)} file(s) hold {total} channel(s); "
                f"dataset.json names {dataset.num_channels}",
            )
        )
    return problems


def _read_label(label: Path, first: ImageData) -> np.ndarray:
    image = read_image(label)
    if image.num_channels != 1 or image.shape != first.shape:
        raise SegflowError(
            "the label does not match the image",
            [
                Problem(
                    str(label),
                    f"label of {image.num_channels} channel(s) and shape {image.shape}; "
                    f"expected 1 channel of shape {first.shape} like {first.path}",
                )
            ],
        )
    seg = image.array[0]
    if not np.issubdtype(seg.dtype, np.integer):
        rounded = np.rint(seg)
        if not np.array_equal(rounded, seg):
            raise SegflowError(
                "the label is not integer",
                [Problem(str(label), "non-integer label values; expected class values")],
            )
        seg = rounded
    return seg.astype(np.int16 if seg.max(initial=0) <= np.iinfo(np.int16).max else np.int32)


def read_case(
    images: Sequence[str | Path], label: str | Path | None, dataset: DatasetJson
) -> RawCase:
    """Read a case's channel files (in order) and its label.

    Raises:
        SegflowError: a file cannot be read, the channels disagree in shape or dimension, their
            channel count differs from dataset.json, or the label does not fit the image or is
            not integer.
    """
    if not images:
        raise SegflowError("a case needs at least one image file")
    channels = [read_image(p) for p in images]
    problems = _channel_problems(channels, dataset)
    if problems:
        raise SegflowError("the channel files of the case do not fit together", problems)
    first = channels[0]
    for c in channels[1:]:
        if not np.allclose(c.spacing, first.spacing, rtol=1e-5, atol=0):
            logger.warning(
                "%s: spacing %s differs from %s of %s; using the first",
                c.path, c.spacing, first.spacing, first.path,
            )  # fmt: skip
    data = np.concatenate([c.array for c in channels]).astype(np.float32, copy=False)
    seg = _read_label(Path(label), first) if label is not None else None
    return RawCase(data=data, seg=seg, reference=first, channels=channels)
