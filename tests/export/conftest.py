"""A tiny finished experiment to export: real trainer checkpoints of two configurations.

The plans are the planner's for 20x24x24 single-channel MRI cases, shrunk to a three-stage
4-8-16 network (as in the training tests). Each fold's checkpoint is what
:class:`~segflow.training.trainer.FoldTrainer` saves after one optimizer step on random
data, so it holds optimizer momentum, random states and history like a real one; no
preprocessed data is needed for that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from segflow.io.dataset import DatasetJson, parse_dataset_json
from segflow.planning import Plans, plan_experiment
from segflow.training.checkpoint import save_checkpoint
from segflow.training.settings import TrainingSettings
from segflow.training.trainer import FoldTrainer

CONFIGURATIONS = ("2d", "3d_fullres")
FOLDS = (0, 1)
SHAPE = (20, 24, 24)


@dataclass
class FinishedExperiment:
    """What the workflow hands to export, as files."""

    root: Path
    dataset: DatasetJson
    files: dict[str, Path]  # dataset_json, plans, fingerprint, selection, postprocessing
    checkpoints: dict[str, dict[int, Path]]
    crossval_summaries: dict[str, Path]

    def export_arguments(self, **overrides: Any) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            **self.files,
            "checkpoints": self.checkpoints,
            "crossval_summaries": self.crossval_summaries,
        }
        return {**arguments, **overrides}


def _dataset() -> DatasetJson:
    raw = {
        "name": "TinyExport",
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": 6,
        "file_ending": ".nii.gz",
    }
    dataset, problems = parse_dataset_json(raw)
    assert dataset is not None and not problems, problems
    return dataset


def _fingerprint() -> dict[str, Any]:
    stats = {
        "mean": 100.0,
        "median": 100.0,
        "std": 20.0,
        "min": 0.0,
        "max": 200.0,
        "percentile_00_5": 50.0,
        "percentile_99_5": 150.0,
    }
    return {
        "dataset_name": "Dataset997_TinyExport",
        "spacings": [[1.0, 1.0, 1.0]] * 6,
        "shapes_after_crop": [list(SHAPE)] * 6,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": stats},
        "is_2d": False,
        "num_cases": 6,
        "seed": 0,
    }


def _plans(dataset: DatasetJson, fingerprint: dict[str, Any]) -> Plans:
    plans = plan_experiment(fingerprint, dataset)
    for name, conf in plans["configurations"].items():
        ndim = 2 if name == "2d" else 3
        conf["patch_size"] = [16] * ndim
        conf["batch_size"] = 2
        conf["network"].update(
            n_stages=3,
            features_per_stage=[4, 8, 16],
            kernel_sizes=[[3] * ndim] * 3,
            strides=[[1] * ndim, [2] * ndim, [2] * ndim],
            n_conv_per_stage=[2, 2, 2],
            n_conv_per_stage_decoder=[2, 2],
        )
    return Plans.from_dict(plans)


def _trained_checkpoint(
    plans: Plans, dataset: DatasetJson, configuration: str, fold: int, folder: Path
) -> Path:
    settings = TrainingSettings(
        epochs=1, iterations_per_epoch=1, val_iterations_per_epoch=1, device="cpu", num_workers=0
    )
    trainer = FoldTrainer(
        plans,
        configuration,
        dataset,
        folder / "preprocessed",
        ["a", "b"],
        ["c"],
        fold,
        folder,
        settings,
    )
    trainer.prepare()
    torch.manual_seed(fold)
    patch = plans.configuration(configuration).patch_size
    outputs = trainer.network(torch.randn(2, 1, *patch))
    sum(o.square().mean() for o in outputs).backward()
    trainer.optimizer.step()  # momentum buffers: the state a resumed run needs
    trainer.epoch = 1
    return save_checkpoint(folder / "checkpoint_final.pt", trainer.state_dict())


def _selection() -> dict[str, Any]:
    def candidate(name, configurations, mean, organ, lesion):
        return {
            "name": name,
            "configurations": configurations,
            "mean_foreground_dice": mean,
            "dice": {"organ": organ, "lesion": lesion},
            "num_cases": 6,
        }

    return {
        "metric": "mean_foreground_dice",
        "classes": ["organ", "lesion"],
        "candidates": [
            candidate("2d", ["2d"], 0.61, 0.9, 0.32),
            candidate("3d_fullres", ["3d_fullres"], 0.655, 0.91, 0.4),
            candidate("2d,3d_fullres", ["2d", "3d_fullres"], 0.6725, 0.925, 0.42),
        ],
        "selected": {
            "name": "2d,3d_fullres",
            "configurations": ["2d", "3d_fullres"],
            "folds": list(FOLDS),
            "mean_foreground_dice": 0.6725,
        },
    }


def _postprocessing() -> dict[str, Any]:
    return {
        "format": 1,
        "criterion": "mean_foreground_dice",
        "baseline": {"mean_foreground_dice": 0.6725, "dice": {"organ": 0.925, "lesion": 0.42}},
        "steps": [{"labels": [1, 2], "kept": True}, {"labels": [2], "kept": False}],
        "rules": [{"labels": [1, 2]}],
        "final": {"mean_foreground_dice": 0.6811, "dice": {"organ": 0.93, "lesion": 0.4322}},
    }


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture(scope="session")
def experiment(tmp_path_factory) -> FinishedExperiment:
    root = tmp_path_factory.mktemp("finished")
    dataset = _dataset()
    fingerprint = _fingerprint()
    plans = _plans(dataset, fingerprint)
    files = {
        "dataset_json": _write(root / "raw" / "dataset.json", dataset.raw),
        "plans": _write(root / "plans.json", plans.to_dict()),
        "fingerprint": _write(root / "fingerprint.json", fingerprint),
        "selection": _write(root / "selection.json", _selection()),
        "postprocessing": _write(root / "postprocessing.json", _postprocessing()),
    }
    checkpoints = {
        name: {
            k: _trained_checkpoint(plans, dataset, name, k, root / "models" / name / f"fold_{k}")
            for k in FOLDS
        }
        for name in CONFIGURATIONS
    }
    summaries = {
        name: _write(
            root / "crossval" / name / "summary.json",
            {
                "configuration": name,
                "folds": list(FOLDS),
                "num_cases": 6,
                "mean_foreground_dice": 0.6 + 0.05 * i,
            },
        )
        for i, name in enumerate(CONFIGURATIONS)
    }
    return FinishedExperiment(root, dataset, files, checkpoints, summaries)
