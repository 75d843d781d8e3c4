"""Small fabricated report inputs, written to a temporary folder.

One class is called ``<b>`` so that every page can be checked for escaping. The metric values
are chosen so that the means and standard deviations are easy to check by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

NAN = math.nan
CLASSES = ["<b>", "lesion"]


def _rows(case_ids, dice, hd95, folds=None):
    rows = []
    for index, case_id in enumerate(case_ids):
        for name in CLASSES:
            d = dice[name][index]
            row: dict[str, Any] = {
                "case_id": case_id,
                "class": name,
                "dice": d,
                "iou": d / (2 - d),
                "precision": NAN if d == 0 else d,
                "recall": d,
                "hd95": hd95[name][index],
                "assd": hd95[name][index] / 2,
                "reference_volume": 100.0,
                "predicted_volume": 90.0,
                "tp": 80,
                "fp": 10,
                "fn": 20,
            }
            if folds is not None:
                row["fold"] = folds[index]
            rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, float_format="%.6g")
    return path


@pytest.fixture
def dataset_json() -> dict[str, Any]:
    return {
        "name": "Toy<script>",
        "description": "two channels & two classes",
        "channel_names": {"0": "CT", "1": "T2"},
        "labels": {"background": 0, "<b>": 1, "lesion": 2},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }


@pytest.fixture
def dataset_report() -> dict[str, Any]:
    return {
        "name": "Toy<script>",
        "is_2d": False,
        "training_cases": [{"case_id": f"toy_{i}"} for i in range(3)],
        "test_cases": [
            {"case_id": "toy_t0", "label": "labelsTs/toy_t0.nii.gz"},
            {"case_id": "toy_t1"},
        ],
        "warnings": ["label 'lesion' (2) occurs in no training label"],
    }


@pytest.fixture
def fingerprint() -> dict[str, Any]:
    return {
        "spacings": [[1.0, 0.5, 0.5], [2.0, 0.5, 0.5], [3.0, 1.0, 1.0]],
        "shapes_after_crop": [[10, 20, 30], [12, 22, 32], [14, 24, 34]],
        "shapes_before_crop": [[10, 40, 40], [12, 42, 42], [14, 44, 44]],
        "median_relative_size_after_cropping": 0.5,
        "foreground_intensity_properties_per_channel": {
            "0": {
                "mean": 40.0,
                "median": 35.0,
                "std": 12.5,
                "min": -100.0,
                "max": 300.0,
                "percentile_00_5": -50.0,
                "percentile_99_5": 250.0,
            },
            "1": {
                "mean": 0.25,
                "median": 0.5,
                "std": 1.0,
                "min": 0.0,
                "max": 9.0,
                "percentile_00_5": 0.125,
                "percentile_99_5": 8.0,
            },
        },
    }


def _configuration(spacing, patch, batch, median, features, **extra):
    ndim = len(patch)
    return {
        "spacing": spacing,
        "patch_size": patch,
        "batch_size": batch,
        "median_image_size_in_voxels": median,
        "normalization_schemes": ["CTNormalization", "ZScoreNormalization"],
        "use_mask_for_norm": [False, True],
        "batch_dice": True,
        "network": {
            "architecture": "PlainConvUNet",
            "n_stages": len(features),
            "features_per_stage": features,
            "kernel_sizes": [[3] * ndim for _ in features],
            "strides": [[1] * ndim] + [[2] * ndim for _ in features[1:]],
            "n_conv_per_stage": [2] * len(features),
        },
        **extra,
    }


@pytest.fixture
def plans() -> dict[str, Any]:
    return {
        "dataset_name": "Toy",
        "preset": "default",
        "gpu_memory_target_gb": 8,
        "transpose_forward": [0, 1, 2],
        "original_median_spacing_after_transp": [2.0, 0.5, 0.5],
        "original_median_shape_after_transp": [12, 22, 32],
        "configurations": {
            "2d": _configuration([0.5, 0.5], [32, 64], 12, [22.0, 32.0], [32, 64, 128]),
            "3d_lowres": _configuration(
                [4.0, 1.0, 1.0],
                [8, 16, 16],
                2,
                [6.5, 11.0, 16.0],
                [32, 64],
                next_stage="3d_cascade_fullres",
            ),
            "3d_cascade_fullres": _configuration(
                [2.0, 0.5, 0.5],
                [12, 24, 32],
                3,
                [12.0, 22.0, 32.0],
                [32, 64],
                previous_stage="3d_lowres",
            ),
        },
    }


@pytest.fixture
def crossval_csvs(tmp_path: Path) -> dict[str, Path]:
    """``2d``: Dice of <b> 0.9, 0.7, 0.8 (mean 0.8, sd 0.1), of lesion 1, 0, 0.5 (mean 0.5,
    sd 0.5); HD95 of <b> 2, 4, 6 (mean 4, sd 2), of lesion 0, NaN, 3 (mean 1.5, sd 2.12, two
    cases defined). Mean foreground Dice 0.65; fold 0 holds
    case a (0.95), fold 1 cases b and c (0.5). ``3d_fullres``: 0.9 and 0.8, no fold column."""
    cases = ["a", "b", "c"]
    rows_2d = _rows(
        cases,
        {"<b>": [0.9, 0.7, 0.8], "lesion": [1.0, 0.0, 0.5]},
        {"<b>": [2.0, 4.0, 6.0], "lesion": [0.0, NAN, 3.0]},
        folds=[0, 1, 1],
    )
    # The lesion of case a: both empty (distance 0); of case b: missed (no distance).
    rows_3d = _rows(
        cases,
        {"<b>": [0.95, 0.85, 0.9], "lesion": [1.0, 0.6, 0.8]},
        {"<b>": [1.0, 2.0, 3.0], "lesion": [0.0, 5.0, 7.0]},
    )
    return {
        "2d": write_csv(tmp_path / "crossval_2d.csv", rows_2d),
        "3d_fullres": write_csv(tmp_path / "crossval_3d.csv", rows_3d),
    }


@pytest.fixture
def test_csv(tmp_path: Path) -> Path:
    """Two test cases: Dice of <b> 0.6 and 0.8, of lesion 0 and 1 (HD95 NaN and 0)."""
    rows = _rows(
        ["t0", "t1"],
        {"<b>": [0.6, 0.8], "lesion": [0.0, 1.0]},
        {"<b>": [3.0, 5.0], "lesion": [NAN, 0.0]},
    )
    return write_csv(tmp_path / "test_metrics.csv", rows)


@pytest.fixture
def selection() -> dict[str, Any]:
    return {
        "metric": "mean_foreground_dice",
        "classes": CLASSES,
        "candidates": [
            {
                "name": "2d",
                "configurations": ["2d"],
                "mean_foreground_dice": 0.65,
                "dice": {"<b>": 0.8, "lesion": 0.5},
                "num_cases": 3,
            },
            {
                "name": "2d,3d_fullres",
                "configurations": ["2d", "3d_fullres"],
                "mean_foreground_dice": 0.875,
                "dice": {"<b>": 0.95, "lesion": 0.8},
                "num_cases": 3,
            },
            {
                "name": "3d_fullres",
                "configurations": ["3d_fullres"],
                "mean_foreground_dice": 0.85,
                "dice": {"<b>": 0.9, "lesion": 0.8},
                "num_cases": 3,
            },
        ],
        "selected": {
            "name": "2d,3d_fullres",
            "configurations": ["2d", "3d_fullres"],
            "folds": [0, 1, 2, 3, 4],
            "mean_foreground_dice": 0.875,
        },
    }


@pytest.fixture
def postprocessing() -> dict[str, Any]:
    def scores(total, first, second):
        return {"mean_foreground_dice": total, "dice": {"<b>": first, "lesion": second}}

    return {
        "format": 1,
        "criterion": "mean_foreground_dice",
        "connectivity": "face",
        "num_cases": 3,
        "classes": CLASSES,
        "baseline": scores(0.875, 0.95, 0.8),
        "steps": [
            {"target": "foreground", "labels": [1, 2], **scores(0.9, 0.96, 0.84), "kept": True},
            {"target": "<b>", "labels": [1], **scores(0.89, 0.94, 0.84), "kept": False},
            {"target": "lesion", "labels": [2], **scores(0.925, 0.96, 0.89), "kept": True},
        ],
        "rules": [{"labels": [1, 2]}, {"labels": [2]}],
        "final": scores(0.925, 0.96, 0.89),
    }


@pytest.fixture
def json_files(
    tmp_path, dataset_json, dataset_report, fingerprint, plans, selection, postprocessing
) -> dict[str, Path]:
    """Every JSON input written to a file, by name."""
    files = {}
    for name, data in (
        ("dataset_json", dataset_json),
        ("dataset_report", dataset_report),
        ("fingerprint", fingerprint),
        ("plans", plans),
        ("selection", selection),
        ("postprocessing", postprocessing),
    ):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(data), encoding="utf-8")
    return files


def _assert_self_contained(text: str) -> None:
    assert text.startswith("<!DOCTYPE html>")
    assert text.rstrip().endswith("</html>")
    lowered = text.lower()
    for forbidden in ("<script", "src=", "href=", "url(", "@import", "<b>"):
        assert forbidden not in lowered, forbidden


@pytest.fixture
def self_contained():
    """Checks a page: complete, with no script, no external resource and no unescaped
    ``<b>``."""
    return _assert_self_contained
