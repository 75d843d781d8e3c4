"""``validate {configuration}/fold_{k}``: each fold predicts the cases it held out and scores
them.

:func:`validate_fold` predicts the fold's validation cases from their preprocessed data with
the fold's final checkpoint (sliding window, Gaussian weighting, test-time mirroring over the
axes the training mirrored), writes the segmentations in the original geometry and, for
ensembling, the probabilities, and scores them against the raw labels (``metrics.csv``,
``summary.json``). A cascade stage's cases get the previous stage's cross-validation
segmentations (``previous_stage``, see :mod:`segflow.crossval.previous_stage`) as one-hot
input channels, as in its training.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from segflow.compute import set_up_compute
from segflow.errors import Problem, SegflowError
from segflow.evaluation.evaluate import evaluate_files, summarize
from segflow.evaluation.tables import write_metrics
from segflow.inference.backends import prepare_runtime
from segflow.inference.model import load_trained_fold
from segflow.inference.options import PredictionOptions
from segflow.inference.predictor import predict_case
from segflow.io.atomic import read_json, write_json
from segflow.layout import METRICS_FILE, PREDICTIONS_FOLDER, PROBABILITIES_FOLDER, SUMMARY_FILE
from segflow.preprocessing.previous_stage import (
    load_previous_stage,
    previous_stage_labels,
    with_previous_stage,
)
from segflow.preprocessing.storage import open_case
from segflow.training.fold import read_fold

__all__ = ["validate_fold"]

logger = logging.getLogger(__name__)


def validate_fold(
    *,
    plans_path: str | os.PathLike[str],
    configuration: str,
    fold: int,
    dataset_json: str | os.PathLike[str],
    dataset_report: str | os.PathLike[str],
    splits_path: str | os.PathLike[str],
    preprocessed_folder: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    output_folder: str | os.PathLike[str],
    mirroring: bool = True,
    save_probabilities: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    backend: str = "torch",
    precision: str = "float32",
    previous_stage: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Predict and score the fold's held-out cases; returns the fold's summary.

    ``previous_stage``: a cascade stage's input, the folder of the previous stage's
    segmentations on its grid (required for a cascade stage, refused for any other).

    Writes ``<output_folder>/predictions/<case><ending>``, with ``save_probabilities`` the
    class probabilities ``<output_folder>/probabilities/<case>.npz`` (for ensembles),
    ``metrics.csv`` and, last, ``summary.json``. ``backend`` and ``precision``: what runs the
    network (:mod:`segflow.inference.backends`); the summary records the backend and precision
    that did (``"backend"``, ``"precision"``), after ``auto``, fallbacks and the CPU's bf16.
    """
    torch_device = set_up_compute(device, threads)
    output_folder = Path(output_folder)
    predictions = output_folder / PREDICTIONS_FOLDER
    predictions.mkdir(parents=True, exist_ok=True)
    probabilities = output_folder / PROBABILITIES_FOLDER
    probabilities.mkdir(exist_ok=True)  # empty without save_probabilities
    files = read_fold(plans_path=plans_path, configuration=configuration, dataset_json=dataset_json,
                      splits_path=splits_path, fold=fold)  # fmt: skip
    plans, dataset, cases = files.plans, files.dataset, files.val_cases
    report = read_json(dataset_report)
    root = Path(report["dataset"])
    labels = {c["case_id"]: c["label"] for c in report["training_cases"]}
    unknown = [Problem(str(splits_path), f"case '{c}' is not a training case") for c in cases
               if c not in labels]  # fmt: skip
    if unknown:
        raise SegflowError(f"fold {fold} holds cases the dataset does not have", unknown)
    cascade = files.plan.previous_stage is not None
    if cascade != (previous_stage is not None):
        need = "needs" if cascade else "takes no"
        raise SegflowError(
            f"configuration '{configuration}' {need} previous-stage segmentations",
            [Problem(str(previous_stage or plans_path), "the cascade's second stage alone takes "
                     "the previous stage's segmentations (--previous-stage)")],
        )  # fmt: skip
    encoded = previous_stage_labels(dataset) if cascade else ()
    trained = load_trained_fold(checkpoint, plans, torch_device)
    if trained.configuration != configuration or trained.fold != fold:
        raise SegflowError(
            "checkpoint of another fold",
            [Problem(str(checkpoint), f"holds {trained.configuration} fold {trained.fold}")],
        )
    options = PredictionOptions(
        mirror_axes=trained.mirror_axes if mirroring else None,
        device=torch_device,
        backend=backend,
        precision=precision,
        threads=threads,
    )
    # Converted (and its ONNX file checked) once, before the first case.
    runtime = prepare_runtime(
        trained.network, backend=backend, precision=precision, device=torch_device,
        channels=trained.input_channels, patch=files.plan.patch_size,
        threads=threads,
    )  # fmt: skip
    logger.info("fold %d predicts with %s", fold, runtime.describe())
    start = time.perf_counter()
    for i, case_id in enumerate(cases, 1):
        case = open_case(preprocessed_folder, case_id)
        output_file = predictions / f"{case_id}{dataset.file_ending}"
        data = case.data
        if previous_stage is not None:
            segmentation = load_previous_stage(previous_stage, case_id, case.shape)
            data = with_previous_stage(case.data[...], segmentation, encoded)
        with torch.inference_mode():
            predict_case(
                trained.network, data, case.properties, plans, configuration, dataset, options,
                output_file=output_file, save_probabilities=save_probabilities,
                probabilities_file=probabilities / f"{case_id}.npz",
            )  # fmt: skip
        logger.info("fold %d: predicted %s (%d/%d)", fold, case_id, i, len(cases))
    seconds = time.perf_counter() - start
    rows = evaluate_files(
        [(c, root / labels[c], predictions / f"{c}{dataset.file_ending}") for c in cases], dataset
    )
    for row in rows:
        row["fold"] = fold
    write_metrics(output_folder / METRICS_FILE, rows)
    summary = summarize(rows) | {
        "configuration": configuration,
        "fold": fold,
        "checkpoint": str(checkpoint),
        "mirroring": mirroring,
        "backend": runtime.backend,
        "precision": runtime.precision,
        "seconds_per_case": seconds / max(len(cases), 1),
    }
    write_json(output_folder / SUMMARY_FILE, summary)
    logger.info(
        "%s fold %d: mean foreground Dice %.4f over %d cases",
        configuration, fold, summary["mean_foreground_dice"] or float("nan"), len(cases),
    )  # fmt: skip
    return summary
