"""The ``segflow preprocess`` subcommand, run in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segflow.cli import main
from segflow.preprocessing import open_case


@pytest.fixture
def setup(tmp_path, dataset, make_plans, write_case):
    """plans.json, dataset.json and three cases on disk."""
    plans = make_plans(dataset, (1.0, 1.0, 1.0), (8, 12, 10))
    plans_path = tmp_path / "plans.json"
    plans_path.write_text(json.dumps(plans.to_dict()))
    dataset_path = tmp_path / "dataset.json"
    dataset_path.write_text(json.dumps(dataset.raw))
    cases = []
    rng = np.random.default_rng(0)
    for i in range(3):
        image = np.zeros((8, 12, 10), dtype=np.float32)
        image[1:7, 2:10, 1:9] = rng.normal(100, 10, size=(6, 8, 8))
        label = np.zeros(image.shape, dtype=np.uint8)
        label[3:5, 4:8, 3:6] = 1 + i % 2
        images, label_path = write_case(tmp_path / "raw", f"c{i}", [image], (1, 1, 1), label)
        cases.append({"case_id": f"c{i}", "images": [str(images[0])], "label": str(label_path)})
    return plans_path, dataset_path, cases


def _common(plans_path, dataset_path, out_dir):
    return [
        *("preprocess", "--plans", str(plans_path), "--configuration", "3d_fullres"),
        *("--dataset-json", str(dataset_path), "--out-dir", str(out_dir)),
    ]


def test_one_case(tmp_path, setup):
    plans_path, dataset_path, cases = setup
    out = tmp_path / "pre" / "3d_fullres"
    case = cases[0]
    status = main(
        [
            *_common(plans_path, dataset_path, out),
            *("--case-id", "c0", "--images", *case["images"], "--label", case["label"]),
            *("--seed", "4"),
        ]
    )
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "c0.data.b2nd",
        "c0.props.json",
        "c0.seg.b2nd",
    ]
    stored = open_case(out, "c0")
    assert stored.properties["seed"] == 4
    assert stored.properties["case_id"] == "c0"


def test_the_seed_defaults_to_the_plans_seed(tmp_path, setup):
    plans_path, dataset_path, cases = setup
    out = tmp_path / "pre"
    case = cases[1]
    main([*_common(plans_path, dataset_path, out), "--case-id", "c1", "--images", *case["images"]])
    stored = open_case(out, "c1")
    assert stored.properties["seed"] == json.loads(plans_path.read_text())["seed"]
    assert stored.seg is None  # no label given


def test_a_cases_file_with_workers(tmp_path, setup):
    plans_path, dataset_path, cases = setup
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(cases))
    out = tmp_path / "pre"
    status = main(
        [
            *_common(plans_path, dataset_path, out),
            *("--cases-file", str(cases_file), "--workers", "2"),
        ]
    )
    assert status == 0
    for case in cases:
        assert open_case(out, case["case_id"]).seg is not None


def test_cases_from_the_dataset_report_with_a_manifest_written_last(tmp_path, setup):
    plans_path, dataset_path, cases = setup
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"dataset": str(tmp_path), "training_cases": cases}))
    out, manifest = tmp_path / "pre", tmp_path / "pre" / "batches" / "batch_0000.json"
    ids = [c["case_id"] for c in cases]
    status = main(
        [
            *_common(plans_path, dataset_path, out),
            *("--dataset-report", str(report), "--case-ids", *ids, "--manifest", str(manifest)),
        ]
    )
    assert status == 0
    listed = json.loads(manifest.read_text())
    assert listed["configuration"] == "3d_fullres"
    assert [c["case_id"] for c in listed["cases"]] == ids
    for entry in listed["cases"]:
        assert all((out / entry[k]).is_file() for k in ("data", "seg", "props"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give exactly one of --case-id"),
        (["--case-id", "c0"], "--case-id and --images go together"),
        (["--cases-file", "X", "--case-id", "c0"], "not both"),
        (["--cases-file", "{cases}", "--label", "L"], "--images and --label belong to --case-id"),
        (["--cases-file", "{missing}"], "cannot read cases file"),
        (["--dataset-report", "{report}"], "--dataset-report needs --case-ids"),
        (["--dataset-report", "{report}", "--case-ids", "nope"], "nope: no such training case"),
    ],
)
def test_argument_mistakes_are_clear_errors(tmp_path, setup, capsys, extra, message):
    plans_path, dataset_path, cases = setup
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(cases))
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"dataset": str(tmp_path), "training_cases": cases}))
    extra = [
        a.format(cases=cases_file, missing=tmp_path / "missing.json", report=report) for a in extra
    ]
    status = main([*_common(plans_path, dataset_path, tmp_path / "pre"), *extra])
    assert status == 1
    assert message in capsys.readouterr().err


def test_a_wrong_configuration_lists_the_valid_ones(tmp_path, setup, capsys):
    plans_path, dataset_path, cases = setup
    args = _common(plans_path, dataset_path, tmp_path / "pre")
    args[args.index("3d_fullres")] = "3d_lowres"
    status = main([*args, "--case-id", "c0", "--images", *cases[0]["images"]])
    assert status == 1
    assert "valid: 2d, 3d_fullres" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_failing_case_is_named(tmp_path, setup, capsys, workers):
    plans_path, dataset_path, cases = setup
    cases[1]["images"] = [str(tmp_path / "gone_0000.nii.gz")]
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(cases))
    args = [*_common(plans_path, dataset_path, tmp_path / "pre"), "--cases-file", str(cases_file)]
    assert main([*args, "--workers", workers]) == 1
    err = capsys.readouterr().err
    assert "case 'c1'" in err
    assert "gone_0000.nii.gz: file does not exist" in err
