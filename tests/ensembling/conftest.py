"""A fake results layout for model selection, written by hand: no training needed.

Three cases of a 2x5x4 volume with known geometry. Every reference has the same organ (label
1: rows 0-1, 16 voxels) and a lesion (label 2) in row 2 of a size that differs per case
(``LESION_VOXELS``); rows 3-4 are background. Cases c0 and c1 are held out by fold 0, c2 by
fold 1.

A configuration's cross-validation is made from a *profile*: the class probabilities it
predicts for a voxel whose true class is 0, 1 or 2. Its fold predictions are the argmax of
those probabilities; its ``metrics.csv`` and ``summary.json`` are what segflow's evaluation
makes of them, so their Dice values are known exactly:

* ``ORGAN_ONLY`` calls the lesion organ: organ Dice 2*16 / (2*16 + lesion voxels),
  lesion Dice 0.
* ``LESION_ONLY`` calls the organ background, less confidently: organ Dice 0, lesion Dice 1.
  Averaged with ``ORGAN_ONLY`` every voxel is right.
* ``PERFECT`` (confident) and ``PERFECT_UNSURE`` are right everywhere.
* ``BACKGROUND`` calls everything background, confidently; averaged with ``PERFECT_UNSURE``
  everything is still background.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.evaluation.evaluate import evaluate_files, summarize
from segflow.evaluation.tables import write_metrics
from segflow.inference.export import write_probabilities, write_segmentation
from segflow.io.atomic import atomic_path, write_json
from segflow.io.dataset import load_dataset_json
from segflow.io.image import write_image

LABELS = {"background": 0, "organ": 1, "lesion": 2}
SHAPE = (2, 5, 4)
SPACING = (2.0, 0.5, 0.75)  # z, y, x
ORIGIN = (1.0, -2.0, 3.0)  # SimpleITK order
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
PROPERTIES = {
    "original_shape": list(SHAPE),
    "original_spacing": list(SPACING),
    "origin": list(ORIGIN),
    "direction": list(DIRECTION),
    "is_2d": False,
}
CASE_FOLDS = {"c0": 0, "c1": 0, "c2": 1}
LESIONS = {
    "c0": (slice(None), 2, slice(0, 2)),
    "c1": (0, 2, slice(0, 1)),
    "c2": (slice(None), 2, slice(None)),
}
ORGAN_VOXELS = 16
LESION_VOXELS = {"c0": 4, "c1": 1, "c2": 8}

Profile = dict[int, tuple[float, float, float]]
ORGAN_ONLY: Profile = {0: (0.8, 0.1, 0.1), 1: (0.1, 0.8, 0.1), 2: (0.1, 0.6, 0.3)}
LESION_ONLY: Profile = {0: (0.8, 0.1, 0.1), 1: (0.5, 0.4, 0.1), 2: (0.1, 0.2, 0.7)}
PERFECT: Profile = {0: (0.9, 0.05, 0.05), 1: (0.05, 0.9, 0.05), 2: (0.05, 0.05, 0.9)}
PERFECT_UNSURE: Profile = {0: (0.6, 0.2, 0.2), 1: (0.2, 0.6, 0.2), 2: (0.2, 0.2, 0.6)}
BACKGROUND: Profile = {0: (0.9, 0.05, 0.05), 1: (0.9, 0.05, 0.05), 2: (0.9, 0.05, 0.05)}


def organ_only_dice() -> float:
    """ORGAN_ONLY's mean organ Dice over the cases (its lesion Dice is 0)."""
    per_case = [2 * ORGAN_VOXELS / (2 * ORGAN_VOXELS + n) for n in LESION_VOXELS.values()]
    return sum(per_case) / len(per_case)


def reference(case_id: str) -> np.ndarray:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[:, :2, :] = 1
    label[LESIONS[case_id]] = 2
    return label


def probabilities(label: np.ndarray, profile: Profile) -> np.ndarray:
    """(3, *SHAPE) float32: each voxel gets its true class's probability vector."""
    out = np.empty((3, *label.shape), dtype=np.float32)
    for value, vector in profile.items():
        out[:, label == value] = np.asarray(vector, dtype=np.float32)[:, None]
    return out


def write_label(path: Path, label: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        write_image(tmp, label, SPACING, ORIGIN, DIRECTION)
    return path


@dataclass
class Results:
    root: Path
    dataset_folder: Path
    dataset_json: Path
    dataset_report: Path
    crossval: dict[str, Path]

    def folders(self, *names: str) -> dict[str, Path]:
        """configuration -> crossval folder, in the given order (the tie-break order)."""
        return {name: self.crossval[name] for name in names or self.crossval}

    def fold_file(self, configuration: str, case_id: str, kind: str) -> Path:
        fold = CASE_FOLDS[case_id]
        ending = ".nii.gz" if kind == "predictions" else ".npz"
        return self.crossval[configuration] / f"fold_{fold}" / kind / f"{case_id}{ending}"

    def select_arguments(self, *names: str, **overrides: Any) -> dict[str, Any]:
        return {
            "crossval_folders": self.folders(*names),
            "dataset_json": self.dataset_json,
            "dataset_report": self.dataset_report,
            "output_json": self.root / "selection.json",
            "predictions_folder": self.root / "selected_predictions",
            **overrides,
        }


def make_results(
    root: Path,
    profiles: dict[str, Profile],
    case_folds: dict[str, dict[str, int]] | None = None,
) -> Results:
    """The raw labels, dataset.json, dataset_report.json and ``crossval/<configuration>/``
    of every configuration in ``profiles`` (optionally over other cases: ``case_folds``)."""
    dataset_folder = root / "raw"
    dataset_json = write_json(
        dataset_folder / "dataset.json",
        {
            "name": "SelectionToy",
            "channel_names": {"0": "MRI"},
            "labels": LABELS,
            "numTraining": len(CASE_FOLDS),
            "file_ending": ".nii.gz",
        },
    )
    for case_id in CASE_FOLDS:
        write_label(dataset_folder / "labelsTr" / f"{case_id}.nii.gz", reference(case_id))
    report = {
        "dataset": str(dataset_folder.resolve()),
        "file_ending": ".nii.gz",
        "training_cases": [
            {
                "case_id": c,
                "images": [f"imagesTr/{c}_0000.nii.gz"],
                "label": f"labelsTr/{c}.nii.gz",
            }
            for c in CASE_FOLDS
        ],
        "test_cases": [],
    }
    dataset_report = write_json(root / "dataset_report.json", report)
    dataset = load_dataset_json(dataset_json)
    crossval = {}
    for name, profile in profiles.items():
        folder = root / "crossval" / name
        rows = []
        for case_id, fold in (case_folds or {}).get(name, CASE_FOLDS).items():
            label = reference(case_id)
            probs = probabilities(label, profile)
            fold_folder = folder / f"fold_{fold}"
            prediction = fold_folder / "predictions" / f"{case_id}.nii.gz"
            segmentation = np.argmax(probs, axis=0).astype(np.uint8)
            write_segmentation(segmentation, PROPERTIES, prediction)
            write_probabilities(probs, PROPERTIES, fold_folder / "probabilities" / f"{case_id}.npz")
            label_file = dataset_folder / "labelsTr" / f"{case_id}.nii.gz"
            for row in evaluate_files([(case_id, label_file, prediction)], dataset):
                rows.append({**row, "fold": fold})
        write_metrics(folder / "metrics.csv", rows)
        write_json(folder / "summary.json", summarize(rows))
        crossval[name] = folder
    return Results(root, dataset_folder, dataset_json, dataset_report, crossval)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
