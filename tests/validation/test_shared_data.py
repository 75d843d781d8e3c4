"""Validation of the real shared datasets (skipped cleanly without ../shared/data)."""

from __future__ import annotations

import json
import logging
import shutil
import time

import pytest

from segflow.errors import DatasetError
from segflow.validation import validate_dataset

pytestmark = pytest.mark.shared_data

logger = logging.getLogger(__name__)


def test_hippocampus_is_valid(shared_data):
    folder = shared_data / "Dataset004_Hippocampus"
    start = time.perf_counter()
    report = validate_dataset(folder, workers=2)
    logger.info("Hippocampus validated in %.2f s", time.perf_counter() - start)
    assert len(report["training_cases"]) == 200
    assert report["test_cases"] == []
    assert report["is_2d"] is False
    assert report["num_channels"] == 1
    assert report["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert report["training_cases"][0] == {
        "case_id": "hippocampus_001",
        "images": ["imagesTr/hippocampus_001_0000.nii.gz"],
        "label": "labelsTr/hippocampus_001.nii.gz",
    }
    assert report["warnings"] == []


def test_isbi_em_pngs_are_valid_2d(shared_data):
    report = validate_dataset(shared_data / "Dataset121_ISBI2012EM", workers=2)
    assert len(report["training_cases"]) == 30
    assert report["is_2d"] is True
    assert report["file_ending"] == ".png"
    assert report["training_cases"][29]["images"] == ["imagesTr/em_29_0000.png"]


def test_damaged_copy_of_real_cases(shared_data, tmp_path):
    source = shared_data / "Dataset004_Hippocampus"
    copy = tmp_path / "Dataset004_Hippocampus"
    cases = ["hippocampus_001", "hippocampus_003", "hippocampus_004"]
    for sub in ("imagesTr", "labelsTr"):
        (copy / sub).mkdir(parents=True)
    for case in cases:
        shutil.copy(source / "imagesTr" / f"{case}_0000.nii.gz", copy / "imagesTr")
        shutil.copy(source / "labelsTr" / f"{case}.nii.gz", copy / "labelsTr")
    meta = json.loads((source / "dataset.json").read_text()) | {"numTraining": 3}
    (copy / "dataset.json").write_text(json.dumps(meta))
    assert len(validate_dataset(copy)["training_cases"]) == 3

    # A real image cut in half, and a label paired with another case's image.
    image = copy / "imagesTr" / "hippocampus_003_0000.nii.gz"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    shutil.copy(copy / "labelsTr" / "hippocampus_001.nii.gz",
                copy / "labelsTr" / "hippocampus_004.nii.gz")
    with pytest.raises(DatasetError) as info:
        validate_dataset(copy, workers=2)
    problems = [str(p) for p in info.value.problems]
    assert problems[0].startswith("imagesTr/hippocampus_003_0000.nii.gz: truncated file")
    assert problems[1].startswith("labelsTr/hippocampus_004.nii.gz: shape (z, y, x)")
