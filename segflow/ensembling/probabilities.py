"""Averaging class probabilities of several predictions of the same case (nnU-Net ensembles
configurations, and folds, by the mean of their softmax or sigmoid outputs)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.inference.export import load_probabilities

__all__ = ["average_probabilities"]


def average_probabilities(
    files: Sequence[str | os.PathLike[str]],
) -> tuple[np.ndarray, dict[str, Any]]:
    """The mean of the probabilities saved in ``files`` (``.npz`` of
    :func:`~segflow.inference.export.write_probabilities`), and the first file's properties.

    Raises:
        SegflowError: no file, or files of different shapes (not the same case).
    """
    if not files:
        raise SegflowError("no probabilities to average")
    total, properties = load_probabilities(files[0])
    total = total.astype(np.float32, copy=False)
    for path in files[1:]:
        probabilities, _ = load_probabilities(path)
        if probabilities.shape != total.shape:
            raise SegflowError(
                "probabilities of different cases",
                [Problem(str(path), f"shape {list(probabilities.shape)}; {files[0]} has "
                                    f"{list(total.shape)}")],
            )  # fmt: skip
        total += probabilities
        del probabilities
    if len(files) > 1:
        total /= len(files)
    return total, properties
