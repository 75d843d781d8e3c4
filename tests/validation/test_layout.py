"""dataset.json and file-name checks: each problem names its file and what was expected."""

from __future__ import annotations

import json
import shutil

import SimpleITK as sitk

from segflow.io.dataset import parse_dataset_json
from segflow.validation import discover_cases, validate_dataset


def test_missing_dataset_json_is_reported_with_the_missing_folders(tmp_path, problems_of):
    (tmp_path / "raw").mkdir()
    problems = problems_of(tmp_path / "raw")
    assert problems == [
        "dataset.json: file missing; a raw dataset needs one with channel_names, labels, "
        "numTraining and file_ending",
        "imagesTr: folder is missing; the training images belong in imagesTr/",
        "labelsTr: folder is missing; the training labels belong in labelsTr/",
    ]


def test_a_missing_dataset_folder_names_the_folder_and_dataset_json(tmp_path, problems_of):
    problems = problems_of(tmp_path / "nope")
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'nope'}: folder does not exist")
    assert "dataset.json" in problems[0]


def test_each_missing_required_key_is_named(tiny, problems_of):
    tiny.write_json(numTraining=tiny.REMOVE, file_ending=tiny.REMOVE)
    assert problems_of(tiny) == [
        "dataset.json: missing required key 'numTraining'",
        "dataset.json: missing required key 'file_ending'",
    ]


def test_dataset_json_that_is_not_json(tiny, problems_of):
    (tiny.root / "dataset.json").write_text('{"labels": {"background": 0,}')
    [problem] = problems_of(tiny)
    assert problem.startswith("dataset.json: not valid JSON (")
    assert "line 1" in problem


def test_nnunet_v1_dataset_json_gets_hints(tiny, problems_of):
    tiny.write_json(
        channel_names=tiny.REMOVE, modality={"0": "MRI"}, labels={"0": "background", "1": "a"}
    )
    problems = problems_of(tiny)
    assert "dataset.json: missing required key 'channel_names'" in problems
    assert any("'modality' is the nnU-Net v1 name; v2 calls it 'channel_names'" in p
               for p in problems)
    assert any("'labels' maps values to names (nnU-Net v1)" in p for p in problems)


def test_num_training_disagreeing_with_the_cases_found(tiny, problems_of):
    tiny.write_json(numTraining=5)
    assert problems_of(tiny) == [
        "dataset.json: numTraining is 5 but imagesTr/ and labelsTr/ hold 3 training case(s)"
    ]


def test_missing_channel_file(make_dataset, problems_of):
    dataset = make_dataset(channels=("T1", "T2"))
    dataset.image("case_001", 1).unlink()
    assert problems_of(dataset) == [
        "imagesTr/case_001_0001.nii.gz: channel file missing: dataset.json declares 2 "
        "channel(s) (0: T1, 1: T2); case 'case_001' has _0000"
    ]


def test_channel_file_beyond_the_declared_channels(tiny, problems_of):
    shutil.copy(tiny.image("case_002"), tiny.image("case_002", 1))
    assert problems_of(tiny) == [
        "imagesTr/case_002_0001.nii.gz: channel 1 is not declared in dataset.json "
        "channel_names (channels 0..0)"
    ]


def test_missing_label_is_named_once(tiny, problems_of):
    tiny.label("case_001").unlink()
    # numTraining still counts the case, so only the missing label is reported.
    assert problems_of(tiny) == [
        "labelsTr/case_001.nii.gz: label file missing: case 'case_001' has image "
        "imagesTr/case_001_0000.nii.gz but no label"
    ]


def test_label_without_image(tiny, problems_of):
    tiny.image("case_001").unlink()
    assert problems_of(tiny) == [
        "labelsTr/case_001.nii.gz: label has no image: expected imagesTr/case_001_0000.nii.gz"
    ]


def test_label_named_like_a_channel_file_gets_a_hint(tiny, problems_of):
    tiny.label("case_001").rename(tiny.root / "labelsTr" / "case_001_0000.nii.gz")
    problems = problems_of(tiny)
    assert "labelsTr/case_001_0000.nii.gz: label has no image: expected " \
           "imagesTr/case_001_0000_0000.nii.gz; label files carry no channel suffix: if this " \
           "is the label of case 'case_001', name it case_001.nii.gz" in problems
    assert any(p.startswith("labelsTr/case_001.nii.gz: label file missing") for p in problems)


def test_empty_dataset(make_dataset, problems_of):
    dataset = make_dataset(cases=0)
    assert problems_of(dataset) == [
        "imagesTr: no training cases: expected image files named <case>_0000.nii.gz"
    ]


def test_same_case_as_nii_and_nii_gz_is_a_duplicate(tiny, problems_of):
    sitk.WriteImage(sitk.ReadImage(str(tiny.image("case_000"))),
                    str(tiny.root / "imagesTr" / "case_000_0000.nii"))
    assert problems_of(tiny) == [
        "imagesTr/case_000_0000.nii: duplicate of imagesTr/case_000_0000.nii.gz (case "
        "'case_000', channel 0) with another ending; file ending '.nii' differs from "
        "dataset.json file_ending '.nii.gz'; all images and labels must use the same format; "
        "remove one"
    ]


def test_file_ending_different_from_dataset_json(tiny, problems_of):
    for path in (tiny.image("case_002"), tiny.label("case_002")):
        sitk.WriteImage(sitk.ReadImage(str(path)), str(path).replace(".nii.gz", ".nrrd"))
        path.unlink()
    message = ("file ending '.nrrd' differs from dataset.json file_ending '.nii.gz'; all images "
               "and labels must use the same format")
    problems = problems_of(tiny)
    assert f"imagesTr/case_002_0000.nrrd: {message}" in problems
    assert f"labelsTr/case_002.nrrd: {message}" in problems
    # Only these two: the case still counts for numTraining, and its files, each reported,
    # are not reported again as a label without image or an image without label.
    assert len(problems) == 2


def test_stray_and_misnamed_files(tiny, problems_of):
    (tiny.root / "imagesTr" / "notes.txt").write_text("scanner protocol")
    shutil.copy(tiny.image("case_000"), tiny.root / "imagesTr" / "case_009.nii.gz")
    shutil.copy(tiny.image("case_000"), tiny.root / "imagesTr" / "scan.nii.gz")
    shutil.copy(tiny.image("case_000"), tiny.root / "imagesTr" / "case_010_000.nii.gz")
    (tiny.root / "labelsTr" / "README").write_text("labels")
    assert problems_of(tiny) == [
        "imagesTr/case_009.nii.gz: name does not end in _XXXX (the 4-digit channel index) "
        "before .nii.gz; expected case_0009.nii.gz if '_009' is the channel index, or "
        "case_009_0000.nii.gz if this is case 'case_009'",
        "imagesTr/case_010_000.nii.gz: name does not end in _XXXX (the 4-digit channel index) "
        "before .nii.gz; expected case_010_0000.nii.gz if '_000' is the channel index, or "
        "case_010_000_0000.nii.gz if this is case 'case_010_000'",
        "imagesTr/notes.txt: stray file: imagesTr/ must only hold image files named "
        "<case>_<XXXX>.nii.gz (XXXX: the 4-digit channel index)",
        "imagesTr/scan.nii.gz: name does not end in _XXXX (the 4-digit channel index) before "
        ".nii.gz; if this is case 'scan', name its first channel scan_0000.nii.gz",
        "labelsTr/README: stray file: labelsTr/ must only hold label files named "
        "<case>.nii.gz",
    ]


def test_hidden_files_and_folders_are_warnings_not_problems(tiny):
    (tiny.root / "imagesTr" / ".DS_Store").write_bytes(b"\0\0")
    (tiny.root / "labelsTr" / "old").mkdir()
    report = validate_dataset(tiny.root)
    assert report["warnings"] == [
        "imagesTr/.DS_Store: hidden file ignored",
        "labelsTr/old/: folder ignored; cases must lie directly in labelsTr/",
    ]
    assert len(report["training_cases"]) == 3


def test_case_id_that_breaks_shell_commands(tiny, problems_of):
    tiny.add_case("case 003")
    tiny.write_json()
    assert problems_of(tiny) == [
        "imagesTr/case 003_0000.nii.gz: case id 'case 003' contains ' ', which breaks the "
        "workflow's shell commands; use letters, digits, '_', '-', '.' and '+'"
    ]


def test_test_labels_without_test_images_folder(tiny, problems_of):
    shutil.copytree(tiny.root / "labelsTr", tiny.root / "labelsTs")
    assert problems_of(tiny) == ["labelsTs: test labels but no imagesTs/ folder with their images"]


def test_discover_cases_orders_channels_and_cases(make_dataset):
    dataset = make_dataset(cases=2, channels=("T1", "T2", "FLAIR"), test_cases=1)
    parsed, problems = parse_dataset_json(json.loads((dataset.root / "dataset.json").read_text()))
    assert problems == [] and parsed is not None
    layout = discover_cases(dataset.root, parsed)
    assert layout.problems == [] and layout.warnings == []
    assert [c.case_id for c in layout.training] == ["case_000", "case_001"]
    assert layout.training[1].images == (
        "imagesTr/case_001_0000.nii.gz",
        "imagesTr/case_001_0001.nii.gz",
        "imagesTr/case_001_0002.nii.gz",
    )
    assert layout.training[1].label == "labelsTr/case_001.nii.gz"
    assert [(c.case_id, c.split, c.label) for c in layout.test] == [
        ("test_000", "test", None)
    ]


def test_test_labels_must_have_images_and_unlabelled_test_cases_are_warned(
    make_dataset, problems_of
):
    dataset = make_dataset(test_cases=2)
    # test_000 gets a label, test_001 none (a warning), orphan has no image (a problem).
    (dataset.root / "labelsTs").mkdir()
    shutil.copy(dataset.label("case_000"), dataset.label("test_000", "Ts"))
    shutil.copy(dataset.label("case_000"), dataset.label("orphan", "Ts"))
    assert problems_of(dataset) == [
        "labelsTs/orphan.nii.gz: label has no image: expected imagesTs/orphan_0000.nii.gz"
    ]
    dataset.label("orphan", "Ts").unlink()
    report = validate_dataset(dataset.root)
    assert report["test_cases"] == [
        {"case_id": "test_000", "images": ["imagesTs/test_000_0000.nii.gz"],
         "label": "labelsTs/test_000.nii.gz"},
        {"case_id": "test_001", "images": ["imagesTs/test_001_0000.nii.gz"], "label": None},
    ]
    assert report["warnings"] == [
        "labelsTs: no label for 1 test case(s) (test_001); they are predicted but not evaluated"
    ]
