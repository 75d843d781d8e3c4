"""dataset.json: the typed view, and every structural problem named at once."""

from __future__ import annotations

import json

import pytest

from segflow.errors import DatasetError, Problem
from segflow.io.dataset import load_dataset_json, parse_dataset_json

VALID = {
    "name": "Hippocampus",
    "channel_names": {"0": "MRI"},
    "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
    "numTraining": 200,
    "file_ending": ".nii.gz",
}


def test_valid_dataset_json_is_typed():
    dataset, problems = parse_dataset_json(VALID)
    assert problems == []
    assert dataset.channel_names == {0: "MRI"}
    assert dataset.num_channels == 1
    assert dataset.labels == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert dataset.num_training == 200
    assert dataset.file_ending == ".nii.gz"
    assert dataset.name == "Hippocampus"
    assert dataset.label_values == [0, 1, 2]
    assert dataset.foreground_labels == [1, 2]
    assert dataset.ignore_label is None
    assert dataset.has_regions is False
    assert dataset.num_segmentation_heads == 3
    assert dataset.raw == VALID


def test_ignore_label_is_a_value_but_not_a_head_or_foreground():
    dataset, _ = parse_dataset_json(VALID | {"labels": {"background": 0, "a": 1, "ignore": 2}})
    assert dataset.ignore_label == 2
    assert dataset.label_values == [0, 1, 2]
    assert dataset.foreground_labels == [1]
    assert dataset.num_segmentation_heads == 2


def test_regions():
    labels = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}
    dataset, problems = parse_dataset_json(
        VALID | {"labels": labels, "regions_class_order": [1, 2, 3]}
    )
    assert problems == []
    assert dataset.has_regions is True
    assert dataset.labels["whole"] == (1, 2, 3)
    assert dataset.regions_class_order == (1, 2, 3)
    assert dataset.label_values == [0, 1, 2, 3]
    assert dataset.num_segmentation_heads == 3


def test_every_missing_key_is_listed():
    _, problems = parse_dataset_json({"name": "x"}, where="raw/dataset.json")
    assert problems == [
        Problem("raw/dataset.json", f"missing required key '{key}'")
        for key in ("channel_names", "labels", "numTraining", "file_ending")
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"channel_names": {}}, "'channel_names' must be a non-empty object"),
        (
            {"channel_names": {"0": "T1", "2": "T2"}},
            "'channel_names' keys must be 0..1, found [0, 2]",
        ),
        ({"channel_names": {"a": "T1"}}, "'channel_names' entry 'a': 'T1' must map"),
        ({"labels": {"tumor": 1}}, "'labels' must contain \"background\": 0"),
        ({"labels": {"background": 0, "a": "1"}}, "label 'a' must be an integer"),
        ({"labels": {"background": 0, "a": True}}, "label 'a' must be an integer"),
        ({"numTraining": -1}, "'numTraining' must be a non-negative integer, found -1"),
        ({"numTraining": "200"}, "'numTraining' must be a non-negative integer, found '200'"),
        ({"file_ending": ".jpg"}, "'file_ending' '.jpg' is not supported; expected one of"),
        ({"regions_class_order": "1,2"}, "'regions_class_order' must be a list of integers"),
    ],
)
def test_structural_problems(change, expected):
    dataset, problems = parse_dataset_json(VALID | change)
    assert dataset is None
    assert len(problems) == 1
    assert problems[0].where == "dataset.json"
    assert problems[0].message.startswith(expected)


def test_top_level_must_be_an_object():
    dataset, problems = parse_dataset_json([1, 2])
    assert dataset is None
    assert problems == [Problem("dataset.json", "expected a JSON object at the top level")]


def test_load_reads_and_checks(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(VALID))
    assert load_dataset_json(path).num_training == 200


def test_load_missing_file(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset_json(tmp_path / "dataset.json")
    assert info.value.summary == "dataset.json not found"
    assert info.value.problems == [Problem(str(tmp_path / "dataset.json"), "file does not exist")]


def test_load_invalid_json(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text("{'single': 'quotes'}")
    with pytest.raises(DatasetError, match=r"dataset\.json is not valid JSON"):
        load_dataset_json(path)


def test_load_lists_every_problem(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"a": 1}, "numTraining": -3}))
    with pytest.raises(DatasetError) as info:
        load_dataset_json(path)
    messages = [p.message for p in info.value.problems]
    assert "missing required key 'channel_names'" in messages
    assert "missing required key 'file_ending'" in messages
    assert "'labels' must contain \"background\": 0" in messages
    assert "'numTraining' must be a non-negative integer, found -3" in messages
    assert info.value.summary.endswith("is not a valid nnU-Net v2 dataset.json")


def test_partial_parse_keeps_the_usable_keys():
    broken = VALID | {"labels": {"background": 0, "a": "x"}, "numTraining": 2.5}
    dataset, problems = parse_dataset_json(broken, partial=True)
    assert [p.message for p in problems] == [
        "label 'a' must be an integer (or a list of integers for a region), found 'x'",
        "'numTraining' must be a non-negative integer, found 2.5",
    ]
    assert dataset.channel_names == {0: "MRI"} and dataset.file_ending == ".nii.gz"
    assert dataset.labels == {} and dataset.unusable == {"labels", "numTraining"}
    # Without partial, the same input gives no dataset; without channels, neither does partial.
    assert parse_dataset_json(broken)[0] is None
    assert parse_dataset_json(broken | {"channel_names": {"x": 1}}, partial=True)[0] is None


def test_upper_case_file_ending_is_a_problem_but_a_partial_parse_uses_it_lower_case():
    dataset, problems = parse_dataset_json(VALID | {"file_ending": ".Nii.Gz"}, partial=True)
    assert [p.message for p in problems] == [
        "'file_ending' '.Nii.Gz' must be lower case: '.nii.gz' (and the files named with it)"
    ]
    assert dataset.file_ending == ".nii.gz"


def test_load_refuses_what_validation_refuses(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(VALID).replace('"numTraining": 200', '"numTraining": NaN'))
    with pytest.raises(DatasetError) as info:
        load_dataset_json(path)
    assert info.value.summary == f"{path} is not valid JSON"
    assert info.value.problems == [
        Problem(str(path), "not valid JSON: NaN is not a JSON number (use a number)")
    ]
