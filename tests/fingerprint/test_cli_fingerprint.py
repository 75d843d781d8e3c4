"""The fingerprint-case and fingerprint subcommands, run in-process."""

from __future__ import annotations

import json

import pytest

from segflow.cli import main
from segflow.io.schema import check_against_schema


@pytest.fixture
def dataset_json(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(
        json.dumps(
            {
                "name": "Tiny",
                "channel_names": {"0": "MRI"},
                "labels": {"background": 0, "structure": 1},
                "numTraining": 2,
                "file_ending": ".nii.gz",
            }
        )
    )
    return path


def test_scatter_then_gather(tmp_path, dataset_json, tiny_case, noisy_case):
    cases_dir = tmp_path / "out" / "fingerprint" / "cases"
    for case_id, (images, label) in [("tiny_001", tiny_case), ("noisy", noisy_case)]:
        status = main(
            [
                *("fingerprint-case", "--dataset-json", str(dataset_json), "--case-id", case_id),
                *("--images", *map(str, images), "--label", str(label), "--seed", "2"),
                *("--samples", "100", "--out", str(cases_dir / f"{case_id}.json")),
            ]
        )
        assert status == 0
    case_files = sorted(cases_dir.glob("*.json"))
    assert [p.name for p in case_files] == ["noisy.json", "tiny_001.json"]
    assert not list(cases_dir.glob(".tmp-*"))
    out = tmp_path / "out" / "fingerprint.json"
    status = main(
        [
            *("fingerprint", "--dataset-json", str(dataset_json), "--seed", "2"),
            *("--out", str(out), "--cases", *map(str, case_files[::-1])),
        ]
    )
    assert status == 0
    fp = json.loads(out.read_text())
    check_against_schema(fp, "fingerprint", str(out))
    assert fp["case_ids"] == ["noisy", "tiny_001"] and fp["seed"] == 2


def test_a_broken_case_file_is_named(tmp_path, dataset_json, tiny_case, capsys):
    images, label = tiny_case
    case_file = tmp_path / "cases" / "tiny_001.json"
    main(
        [
            *("fingerprint-case", "--dataset-json", str(dataset_json), "--case-id", "tiny_001"),
            *("--images", *map(str, images), "--label", str(label), "--out", str(case_file)),
        ]
    )
    broken = json.loads(case_file.read_text())
    del broken["bbox"]
    case_file.write_text(json.dumps(broken))
    status = main(
        [
            *("fingerprint", "--dataset-json", str(dataset_json), "--cases", str(case_file)),
            *("--out", str(tmp_path / "fingerprint.json")),
        ]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert str(case_file) in err and "'bbox' is a required property" in err
    assert not (tmp_path / "fingerprint.json").exists()
