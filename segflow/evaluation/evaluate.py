"""Evaluate predicted segmentation files against reference files: one row per case and class,
and their summary.

Voxels the reference marks with the dataset's ``ignore`` label are left out of every metric
(neither counted nor used as surface), as nnU-Net does. 2D images are measured in 2D.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import Problem, SegflowError
from segflow.evaluation.metrics import METRICS, class_metrics, region_mask
from segflow.io.dataset import DatasetJson
from segflow.io.image import ImageData, read_image

__all__ = [
    "evaluate_case",
    "evaluate_files",
    "evaluate_folders",
    "evaluate_labels",
    "evaluated_classes",
    "summarize",
]

#: Spacing and origin may differ this much (relative to the voxel size) between a prediction
#: and its reference, for rounding in file headers.
GEOMETRY_TOLERANCE = 1e-3


def evaluated_classes(dataset: DatasetJson) -> dict[str, int | tuple[int, ...]]:
    """The classes (or regions) metrics are computed for: every label but the background and
    the ignore label, by name."""
    return dataset.foreground_classes


def _geometry_problems(reference: Any, prediction: Any, where: str) -> list[Problem]:
    if reference.shape != prediction.shape:
        return [
            Problem(
                where,
                f"shape {list(prediction.shape)} differs from the reference's "
                f"{list(reference.shape)} ({reference.path})",
            )
        ]
    problems = []
    scale = np.asarray(reference.spacing, dtype=float)
    if not np.allclose(reference.spacing, prediction.spacing, rtol=GEOMETRY_TOLERANCE, atol=0):
        problems.append(
            Problem(
                where,
                f"spacing {list(prediction.spacing)} differs from the reference's "
                f"{list(reference.spacing)}",
            )
        )
    origin_shift = np.abs(np.subtract(reference.origin, prediction.origin))
    if np.any(origin_shift > GEOMETRY_TOLERANCE * scale.min()):
        problems.append(
            Problem(
                where,
                f"origin {list(prediction.origin)} differs from the reference's "
                f"{list(reference.origin)}",
            )
        )
    return problems


def evaluate_case(
    reference_file: str | os.PathLike[str],
    prediction_file: str | os.PathLike[str],
    classes: Mapping[str, int | Sequence[int]],
    ignore_label: int | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of every class of one case, read from its files.

    Raises:
        SegflowError: a file is unreadable, or the two differ in shape, spacing or origin.
    """
    reference = read_image(reference_file)
    prediction = read_image(prediction_file)
    problems = _geometry_problems(reference, prediction, str(prediction_file))
    if problems:
        raise SegflowError("prediction does not match its reference", problems)
    return evaluate_labels(reference, prediction.array[0], classes, ignore_label)


def evaluate_labels(
    reference: ImageData,
    prediction: np.ndarray,
    classes: Mapping[str, int | Sequence[int]],
    ignore_label: int | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of every class of a predicted label map ``(z, y, x)`` (``z == 1`` for 2D)
    against a reference image read with :func:`~segflow.io.image.read_image`."""
    ref, pred = reference.array[0], prediction
    if ref.shape != pred.shape:
        raise ValueError(f"prediction of shape {pred.shape}; the reference has {ref.shape}")
    spacing: tuple[float, ...] = reference.spacing
    if reference.is_2d:
        ref, pred, spacing = ref[0], pred[0], spacing[1:]
    valid = None if ignore_label is None else ref != ignore_label
    metrics = {}
    for name, values in classes.items():
        ref_mask, pred_mask = region_mask(ref, values), region_mask(pred, values)
        if valid is not None:
            ref_mask &= valid
            pred_mask &= valid
        metrics[name] = class_metrics(ref_mask, pred_mask, spacing)
    return metrics


def evaluate_files(
    pairs: Iterable[tuple[str, str | os.PathLike[str], str | os.PathLike[str]]],
    dataset: DatasetJson,
) -> list[dict[str, Any]]:
    """Rows ``{case_id, class, <metric>...}`` for ``(case_id, reference, prediction)`` triples,
    classes in dataset.json's order. Every missing file is reported at once, before any work."""
    pairs = list(pairs)
    missing = [
        Problem(str(path), f"{kind} of case '{case_id}' does not exist")
        for case_id, reference, prediction in pairs
        for kind, path in (("reference", reference), ("prediction", prediction))
        if not Path(path).is_file()
    ]
    if missing:
        raise SegflowError("cannot evaluate", missing)
    classes = evaluated_classes(dataset)
    rows = []
    for case_id, reference, prediction in pairs:
        per_class = evaluate_case(reference, prediction, classes, dataset.ignore_label)
        for name, values in per_class.items():
            rows.append({"case_id": case_id, "class": name, **values})
    return rows


def evaluate_folders(
    references: str | os.PathLike[str],
    predictions: Sequence[str | os.PathLike[str]],
    dataset: DatasetJson,
) -> list[dict[str, Any]]:
    """Rows of :func:`evaluate_files` for every ``<case><ending>`` prediction (files, or
    folders of them) against ``references/<case><ending>``, cases sorted.

    Raises:
        SegflowError: no prediction, or missing files (all listed at once).
    """
    ending = dataset.file_ending
    files: list[Path] = []
    for path in map(Path, predictions):
        if path.is_dir():
            files += [p for p in path.iterdir() if p.name.endswith(ending) and p.name[0] != "."]
        else:
            files.append(path)
    if not files:
        raise SegflowError("cannot evaluate", [Problem(", ".join(map(str, predictions)),
                                                       f"no *{ending} prediction")])  # fmt: skip
    cases = sorted((p.name[: -len(ending)], p) for p in files)
    return evaluate_files(
        [(case_id, Path(references) / f"{case_id}{ending}", p) for case_id, p in cases], dataset
    )


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means per class of every metric over the cases (NaN left out; ``None`` when every case
    is NaN), the number of cases with a defined value, and the mean foreground Dice: the mean
    over the classes of their mean Dice."""
    classes = list(dict.fromkeys(row["class"] for row in rows))
    mean: dict[str, dict[str, float | None]] = {}
    defined: dict[str, dict[str, int]] = {}
    for name in classes:
        of_class = [row for row in rows if row["class"] == name]
        mean[name] = {m: _mean([float(r[m]) for r in of_class]) for m in METRICS}
        defined[name] = {m: sum(not math.isnan(float(r[m])) for r in of_class) for m in METRICS}
    dice = [mean[name]["dice"] for name in classes if mean[name]["dice"] is not None]
    return {
        "num_cases": len({row["case_id"] for row in rows}),
        "classes": classes,
        "mean": mean,
        "defined_cases": defined,
        "mean_foreground_dice": float(np.mean(dice)) if dice else None,
    }
