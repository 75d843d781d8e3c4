"""Predict one case: sliding-window logits of one or more networks, exported to the input's
geometry.

:func:`predict_case` works on a case preprocessed for the configuration (the arrays of
:func:`~segflow.preprocessing.preprocess_case` or a stored case from
:func:`~segflow.preprocessing.open_case`); :func:`preprocess_for_prediction` preprocesses
raw image files that are not part of the workflow's data, and :func:`predict_files` does
both. Several networks (the folds of a configuration) are ensembled by averaging their
logits, as nnU-Net v2 does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segflow.inference.export import (
    logits_to_segmentation,
    probabilities_path,
    write_probabilities,
    write_segmentation,
)
from segflow.inference.options import PredictionOptions
from segflow.inference.sliding_window import predict_logits
from segflow.io.dataset import DatasetJson
from segflow.planning.plans import Plans
from segflow.preprocessing.preprocessor import preprocess_case

__all__ = [
    "default_mirror_axes",
    "predict_case",
    "predict_case_logits",
    "predict_files",
    "preprocess_for_prediction",
]

logger = logging.getLogger(__name__)


def default_mirror_axes(patch_size: Sequence[int]) -> tuple[int, ...]:
    """Every axis of the patch: what nnU-Net's training mirrors, and so what test-time
    mirroring averages over unless the trainer recorded otherwise."""
    return tuple(range(len(patch_size)))


def _networks(network: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    networks = [network] if isinstance(network, nn.Module) else list(network)
    if not networks:
        raise ValueError("no network given")
    return networks


def predict_case_logits(
    network: nn.Module | Sequence[nn.Module],
    data: Any,
    plans: Plans,
    configuration: str,
    options: PredictionOptions,
) -> torch.Tensor:
    """The logits of a preprocessed case, averaged over ``network`` (one or several).

    Args:
        network: a network, or several (e.g. the folds) whose logits are averaged.
        data: the preprocessed image ``(C, z, y, x)``: an array, a tensor, or anything whose
            ``[...]`` gives an array (a stored case's ``data``).
        plans: the plans.
        configuration: the configuration's name (its patch size is the window).
        options: how to predict (:class:`~segflow.inference.options.PredictionOptions`).

    Returns:
        float32 logits ``(C_out, z, y, x)`` on the CPU.
    """
    patch = plans.configuration(configuration).patch_size
    if not isinstance(data, (np.ndarray, torch.Tensor)):
        data = data[...]
    total = None
    networks = _networks(network)
    for net in networks:
        logits = predict_logits(net, data, patch, options)
        total = logits if total is None else total.add_(logits)
    if len(networks) > 1:
        total /= len(networks)
    return total


def predict_case(
    network: nn.Module | Sequence[nn.Module],
    data: Any,
    properties: dict[str, Any],
    plans: Plans,
    configuration: str,
    dataset: DatasetJson,
    options: PredictionOptions,
    *,
    output_file: str | os.PathLike[str] | None = None,
    save_probabilities: bool = False,
    probabilities_file: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Predict a preprocessed case and return its segmentation in the input's geometry.

    Args:
        network: a network, or several whose logits are averaged (deep supervision off).
        data: the preprocessed image ``(C, z, y, x)`` (see :func:`predict_case_logits`).
            A cascade's full-resolution stage needs the previous stage's one-hot
            segmentation stacked onto it by the caller.
        properties: the case's preprocessing properties.
        plans: the plans.
        configuration: the configuration's name.
        dataset: the labels (classes or regions).
        options: how to predict (:class:`~segflow.inference.options.PredictionOptions`): its
            ``mirror_axes`` are axes of the patch to mirror (e.g.
            :func:`default_mirror_axes`), None for no test-time mirroring.
        output_file: also write the segmentation here (the ending picks the format).
        save_probabilities: with ``output_file``, also save the probabilities beside it
            (``<case>.npz``).
        probabilities_file: where to save them instead.

    Returns:
        the label map ``original_shape`` (``(z, y, x)``; ``z == 1`` for a 2D input).
    """
    started = time.perf_counter()
    logits = predict_case_logits(
        network,
        data,
        plans,
        configuration,
        options,
    )
    predicted = time.perf_counter()
    want_probabilities = output_file is not None and save_probabilities
    result = logits_to_segmentation(
        logits, properties, plans, configuration, dataset,
        return_probabilities=want_probabilities,
    )  # fmt: skip
    del logits
    segmentation = result[0] if want_probabilities else result
    if output_file is not None:
        # The segmentation last: once it exists, the case is done.
        if want_probabilities:
            write_probabilities(
                result[1], properties, probabilities_file or probabilities_path(output_file)
            )
        write_segmentation(segmentation, properties, output_file)
    logger.debug(
        "%s: predicted in %.2f s, exported in %.2f s",
        properties.get("case_id", "case"),
        predicted - started,
        time.perf_counter() - predicted,
    )
    return segmentation


def preprocess_for_prediction(
    images: Sequence[str | os.PathLike[str]],
    plans: Plans,
    configuration: str,
    dataset: DatasetJson,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Preprocess raw channel files (channel 0 first) as the configuration's training data
    was preprocessed.

    Returns:
        ``(data, properties)`` for :func:`predict_case`.

    Raises:
        SegflowError: a file cannot be read, or the files do not fit together or with the
            dataset.
    """
    data, _, properties = preprocess_case(
        [Path(p) for p in images], None, plans, configuration, dataset, seed=plans.seed
    )
    return data, properties


def predict_files(
    network: nn.Module | Sequence[nn.Module],
    images: Sequence[str | os.PathLike[str]],
    output_file: str | os.PathLike[str],
    plans: Plans,
    configuration: str,
    dataset: DatasetJson,
    options: PredictionOptions,
    *,
    save_probabilities: bool = False,
) -> np.ndarray:
    """Preprocess raw channel files, predict them and write the segmentation.

    The arguments are those of :func:`preprocess_for_prediction` and :func:`predict_case`.

    Returns:
        the label map, as written to ``output_file``.

    Raises:
        ValueError: ``output_file`` is one of the inputs (an input is never overwritten).
    """
    target = Path(output_file).resolve()
    if any(Path(p).resolve() == target for p in images):
        raise ValueError(f"{output_file}: the output would overwrite an input image")
    data, properties = preprocess_for_prediction(images, plans, configuration, dataset)
    return predict_case(
        network,
        data,
        properties,
        plans,
        configuration,
        dataset,
        options,
        output_file=output_file,
        save_probabilities=save_probabilities,
    )
