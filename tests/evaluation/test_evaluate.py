"""Evaluation of files: geometry checks, the ignore label, 2D images, regions, summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.evaluation.evaluate import evaluate_case, evaluate_files, evaluated_classes, summarize
from segflow.io.dataset import parse_dataset_json
from segflow.io.image import write_image


def _dataset(labels, ending=".nii.gz"):
    raw = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1,
           "file_ending": ending}  # fmt: skip
    if any(isinstance(v, list) for v in labels.values()):
        raw["regions_class_order"] = [1, 2]
    dataset, problems = parse_dataset_json(raw)
    assert not problems, problems
    return dataset


def test_evaluated_classes_leave_out_background_and_ignore():
    assert evaluated_classes(_dataset({"background": 0, "a": 1, "b": 2, "ignore": 3})) == {
        "a": 1,
        "b": 2,
    }
    regions = _dataset({"background": 0, "whole": [1, 2], "core": [2]})
    assert evaluated_classes(regions) == {"whole": (1, 2), "core": 2}


def test_metrics_use_the_files_spacing(tmp_path):
    reference = np.zeros((4, 5, 6), np.uint8)
    reference[1:3, 1:4, 1:5] = 1
    prediction = np.zeros_like(reference)
    prediction[1:3, 1:4, 2:5] = 1
    write_image(tmp_path / "ref.nii.gz", reference, (3.0, 1.0, 0.5))
    write_image(tmp_path / "pred.nii.gz", prediction, (3.0, 1.0, 0.5))
    m = evaluate_case(tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz", {"a": 1})["a"]
    assert (m["tp"], m["fp"], m["fn"]) == (18, 0, 6)
    assert m["reference_volume"] == pytest.approx(24 * 1.5)
    # The missing column of the prediction is one 0.5 mm voxel away along x.
    assert m["hd95"] == pytest.approx(0.5)


def test_a_prediction_of_another_geometry_is_named(tmp_path):
    write_image(tmp_path / "ref.nii.gz", np.zeros((4, 5, 6), np.uint8), (1.0, 1.0, 1.0))
    write_image(tmp_path / "small.nii.gz", np.zeros((4, 5, 5), np.uint8), (1.0, 1.0, 1.0))
    write_image(tmp_path / "moved.nii.gz", np.zeros((4, 5, 6), np.uint8), (1.0, 1.0, 2.0),
                origin=(5.0, 0.0, 0.0))  # fmt: skip
    with pytest.raises(SegflowError) as err:
        evaluate_case(tmp_path / "ref.nii.gz", tmp_path / "small.nii.gz", {"a": 1})
    assert "small.nii.gz: shape [4, 5, 5] differs from the reference's [4, 5, 6]" in str(err.value)
    with pytest.raises(SegflowError) as err:
        evaluate_case(tmp_path / "ref.nii.gz", tmp_path / "moved.nii.gz", {"a": 1})
    message = str(err.value)
    assert "moved.nii.gz: spacing" in message and "moved.nii.gz: origin" in message


def test_ignore_label_voxels_count_for_nothing(tmp_path):
    reference = np.array([[[1, 1, 3, 3, 0, 0]]], np.uint8)
    prediction = np.array([[[1, 0, 1, 1, 1, 0]]], np.uint8)
    write_image(tmp_path / "ref.nii.gz", reference, (1.0, 1.0, 1.0))
    write_image(tmp_path / "pred.nii.gz", prediction, (1.0, 1.0, 1.0))
    m = evaluate_case(tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz", {"a": 1}, 3)["a"]
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)  # the two predictions under 3 are left out


def test_2d_images_are_measured_in_2d(tmp_path):
    reference = np.zeros((8, 8), np.uint8)
    reference[2:6, 2:6] = 1
    write_image(tmp_path / "ref.png", reference, (1.0, 1.0))
    write_image(tmp_path / "pred.png", reference, (1.0, 1.0))
    m = evaluate_case(tmp_path / "ref.png", tmp_path / "pred.png", {"a": 1})["a"]
    assert m["dice"] == 1.0 and m["hd95"] == 0.0
    assert m["reference_volume"] == 16.0  # mm² of a 2D image


def test_evaluate_files_lists_every_missing_file_first(tmp_path):
    dataset = _dataset({"background": 0, "a": 1})
    write_image(tmp_path / "ref.nii.gz", np.zeros((2, 2, 2), np.uint8), (1.0, 1.0, 1.0))
    with pytest.raises(SegflowError) as err:
        evaluate_files(
            [("x", tmp_path / "ref.nii.gz", tmp_path / "none.nii.gz"),
             ("y", tmp_path / "gone.nii.gz", tmp_path / "ref.nii.gz")],
            dataset,
        )  # fmt: skip
    problems = [str(p) for p in err.value.problems]
    assert len(problems) == 2
    assert "prediction of case 'x' does not exist" in problems[0]
    assert "reference of case 'y' does not exist" in problems[1]


def test_summary_skips_undefined_values_and_counts_the_defined_ones():
    nan = float("nan")
    rows = [
        {"case_id": "a", "class": "x", "dice": 1.0, "hd95": nan},
        {"case_id": "b", "class": "x", "dice": 0.5, "hd95": 2.0},
        {"case_id": "a", "class": "y", "dice": 0.0, "hd95": nan},
        {"case_id": "b", "class": "y", "dice": 0.0, "hd95": nan},
    ]
    rows = [r | {m: 0.0 for m in ("iou", "precision", "recall", "assd", "reference_volume",
                                  "predicted_volume", "tp", "fp", "fn")} for r in rows]  # fmt: skip
    summary = summarize(rows)
    assert summary["num_cases"] == 2 and summary["classes"] == ["x", "y"]
    assert summary["mean"]["x"]["dice"] == 0.75 and summary["mean"]["x"]["hd95"] == 2.0
    assert summary["defined_cases"]["x"]["hd95"] == 1
    assert summary["mean"]["y"]["hd95"] is None
    assert summary["mean_foreground_dice"] == pytest.approx(0.375)
    assert not math.isnan(summary["mean"]["y"]["dice"])
