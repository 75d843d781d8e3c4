"""Averaging class probabilities of several predictions of the same case (nnU-Net ensembles
configurations, and folds, by the mean of their softmax or sigmoid outputs)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.inference.export import load_probabilities

__all__ = ["average_probabilities", "mean_probabilities"]


def mean_probabilities(probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
    """The float32 mean of predictions of one case, keyed by where each comes from.

    Raises:
        SegflowError: none given, or shapes that differ (not the same case), naming each source.
    """
    if not probabilities:
        raise SegflowError("no probabilities to average")
    shapes = {name: list(array.shape) for name, array in probabilities.items()}
    first, *others = probabilities
    differing = [name for name in others if shapes[name] != shapes[first]]
    if differing:
        raise SegflowError(
            "probabilities of different cases",
            [Problem(name, f"shape {shapes[name]}; {first} has {shapes[first]}")
             for name in differing],
        )  # fmt: skip
    total = probabilities[first].astype(np.float32)  # a copy: the inputs stay as they are
    for name in others:
        total += probabilities[name]
    if others:
        total /= len(probabilities)
    return total


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
    loaded = {str(path): load_probabilities(path) for path in files}
    properties = loaded[str(files[0])][1]
    return mean_probabilities({name: array for name, (array, _) in loaded.items()}), properties
