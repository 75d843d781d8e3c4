"""validate_dataset end to end: the report of a valid dataset, every problem of a broken one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from segflow import __version__
from segflow.errors import DatasetError, SegflowError
from segflow.io.schema import check_against_schema, load_schema
from segflow.validation import validate_dataset


def test_report_of_a_valid_dataset(make_dataset):
    dataset = make_dataset(cases=3, channels=("T1", "T2"), test_cases=1)
    report = validate_dataset(dataset.root, workers=2)
    assert report == {
        "segflow_version": __version__,
        "dataset": str(dataset.root),
        "name": "Tiny",
        "file_ending": ".nii.gz",
        "num_channels": 2,
        "labels": {"background": 0, "anterior": 1, "posterior": 2},
        "is_2d": False,
        "training_cases": [
            {
                "case_id": f"case_{i:03d}",
                "images": [f"imagesTr/case_{i:03d}_0000.nii.gz",
                           f"imagesTr/case_{i:03d}_0001.nii.gz"],
                "label": f"labelsTr/case_{i:03d}.nii.gz",
            }
            for i in range(3)
        ],
        "test_cases": [
            {"case_id": "test_000", "images": ["imagesTs/test_000_0000.nii.gz",
                                               "imagesTs/test_000_0001.nii.gz"], "label": None}
        ],
        "warnings": [],
    }
    check_against_schema(report, "dataset_report", "report")
    # The paths are exact: joined to the dataset folder they are the files.
    for case in report["training_cases"]:
        assert all((dataset.root / p).is_file() for p in [*case["images"], case["label"]])


def test_report_is_plain_json_and_the_schema_rejects_unknown_keys(tiny):
    report = validate_dataset(tiny.root)
    assert json.loads(json.dumps(report)) == report
    with pytest.raises(SegflowError, match="Additional properties"):
        check_against_schema(report | {"extra": 1}, "dataset_report", "report")
    schema = load_schema("dataset_report")
    assert schema["additionalProperties"] is False
    assert all("description" in prop or "$ref" in prop for prop in schema["properties"].values())


def test_cases_are_sorted_and_the_name_falls_back_to_the_folder(tiny):
    tiny.add_case("a_first")
    tiny.add_case("z_last")
    tiny.write_json(name=tiny.REMOVE)
    report = validate_dataset(tiny.root)
    assert [c["case_id"] for c in report["training_cases"]] == [
        "a_first", "case_000", "case_001", "case_002", "z_last"
    ]
    assert report["name"] == "Dataset900_Tiny"


def test_relative_dataset_path_is_reported_absolute(tiny, monkeypatch):
    monkeypatch.chdir(tiny.root.parent)
    assert validate_dataset(tiny.root.name)["dataset"] == str(tiny.root)


def test_every_problem_is_reported_at_once(make_dataset, problems_of, helpers):
    dataset = make_dataset(cases=6)
    dataset.write_json(numTraining=7)
    dataset.label("case_000").unlink()
    dataset.image("case_001").write_bytes(b"junk")
    helpers.volume(dataset.label("case_002"), helpers.label((3, 6, 5), (0, 5)))
    helpers.volume(dataset.label("case_003"), helpers.label((3, 6, 4)))
    nan_image = np.full((3, 6, 5), np.nan, np.float32)
    helpers.volume(dataset.image("case_004"), nan_image)
    (dataset.root / "imagesTr" / "stray.txt").write_text("x")
    problems = problems_of(dataset, workers=3)
    assert [p.split(":")[0] for p in problems] == [
        "imagesTr/stray.txt",
        "labelsTr/case_000.nii.gz",
        "dataset.json",
        "imagesTr/case_001_0000.nii.gz",
        "labelsTr/case_002.nii.gz",
        "labelsTr/case_003.nii.gz",
        "imagesTr/case_004_0000.nii.gz",
    ]
    assert "numTraining is 7 but imagesTr/ and labelsTr/ hold 6" in problems[2]


def test_the_error_renders_one_line_per_problem(tiny):
    tiny.label("case_001").unlink()
    tiny.write_json(numTraining=9)
    with pytest.raises(DatasetError) as info:
        validate_dataset(tiny.root)
    assert info.value.render().splitlines() == [
        f"{tiny.root} is not a valid nnU-Net v2 raw dataset (2 problems)",
        "  - labelsTr/case_001.nii.gz: label file missing: case 'case_001' has image "
        "imagesTr/case_001_0000.nii.gz but no label",
        "  - dataset.json: numTraining is 9 but imagesTr/ and labelsTr/ hold 3 training "
        "case(s)",
    ]


def test_workers_give_the_same_result(make_dataset, helpers):
    dataset = make_dataset(cases=8, test_cases=3)
    assert validate_dataset(dataset.root, workers=1) == validate_dataset(dataset.root, workers=4)
    helpers.volume(dataset.label("case_005"), helpers.label((3, 6, 5), (0, 9)))
    dataset.image("case_002").write_bytes(b"junk")
    errors = []
    for workers in (1, 4):
        with pytest.raises(DatasetError) as info:
            validate_dataset(dataset.root, workers=workers)
        errors.append(info.value.problems)
    assert errors[0] == errors[1] and len(errors[0]) == 2


@pytest.mark.parametrize("workers", [0, -2, 1.5])
def test_workers_must_be_positive(tiny, workers):
    with pytest.raises(SegflowError, match="workers must be a whole number of at least 1"):
        validate_dataset(tiny.root, workers=workers)


def _cli(dataset, out):
    return subprocess.run(
        [sys.executable, "-m", "segflow", "validate-dataset", "--dataset", str(dataset),
         "--out", str(out), "--workers", "2"],
        capture_output=True,
        text=True,
    )


def test_cli_writes_the_report_of_a_valid_dataset(tiny, tmp_path):
    out = tmp_path / "results" / "dataset_report.json"
    run = _cli(tiny.root, out)
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text()) == validate_dataset(tiny.root)


def test_cli_writes_nothing_for_an_invalid_dataset(tiny, tmp_path):
    out = tmp_path / "results" / "dataset_report.json"
    shutil.copy(tiny.image("case_000"), tiny.root / "imagesTr" / "case_000_0007.nii.gz")
    tiny.label("case_002").write_bytes(b"")
    run = _cli(tiny.root, out)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if "error:" in line) :]
    assert len(lines) == 3
    assert lines[0] == (
        f"segflow validate-dataset: error: {tiny.root} is not a valid nnU-Net v2 raw dataset "
        "(2 problems)"
    )
    assert lines[1].startswith("  - imagesTr/case_000_0007.nii.gz: channel 7 is not declared")
    assert lines[2].startswith("  - labelsTr/case_002.nii.gz: ")
    assert "Traceback" not in run.stderr
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())
