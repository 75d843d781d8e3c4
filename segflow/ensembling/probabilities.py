"""Averaging class probabilities of several predictions of the same case (nnU-Net ensembles
configurations, and folds, by the mean of their softmax or sigmoid outputs)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.inference.export import load_probabilities

__all__ = ["average_probabilities", "mean_probabilities"]


def mean_probabilities(
    probabilities: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
) -> np.ndarray:
    """The float32 mean of predictions of one case, keyed by where each comes from.

    ``probabilities`` is a mapping or an iterable of ``(source, array)`` pairs, consumed one at a
    time: a generator that loads each array when asked holds only the sum and one array.

    Raises:
        SegflowError: none given, or shapes that differ (not the same case), naming each source.
    """
    pairs = probabilities.items() if isinstance(probabilities, Mapping) else probabilities
    total: np.ndarray | None = None
    first, count, problems = "", 0, []
    for name, array in pairs:
        count += 1
        if total is None:
            total, first = array.astype(np.float32), name  # a copy: the inputs stay as they are
        elif array.shape != total.shape:
            problems.append(
                Problem(name, f"shape {list(array.shape)}; {first} has {list(total.shape)}")
            )
        else:
            total += array
        del array  # a generator's next array is read without this one held here
    if total is None:
        raise SegflowError("no probabilities to average")
    if problems:
        raise SegflowError("probabilities of different cases", problems)
    if count > 1:
        total /= count
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
    properties: list[dict[str, Any]] = []

    def one_at_a_time() -> Iterator[tuple[str, np.ndarray]]:
        for path in files:
            array, props = load_probabilities(path)
            if not properties:
                properties.append(props)
            yield str(path), array
            del array  # before the next file is read

    return mean_probabilities(one_at_a_time()), properties[0]
