"""The fingerprint on real cases of ../shared/data (skipped where it is absent)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from segflow.fingerprint import fingerprint_case, gather_fingerprint
from segflow.io.dataset import load_dataset_json
from segflow.io.schema import check_against_schema

pytestmark = pytest.mark.shared_data

HIPPOCAMPUS_CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004"]


def _hippocampus(shared_data):
    folder = shared_data / "Dataset004_Hippocampus"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder, load_dataset_json(folder / "dataset.json")


def test_hippocampus_cases_match_an_independent_reader(shared_data):
    folder, dataset = _hippocampus(shared_data)
    for case in HIPPOCAMPUS_CASES:
        image_file = folder / "imagesTr" / f"{case}_0000.nii.gz"
        label_file = folder / "labelsTr" / f"{case}.nii.gz"
        fp = fingerprint_case(case, [image_file], label_file, dataset, seed=0, num_samples=10_000)
        check_against_schema(fp, "case_fingerprint", case)
        # nibabel reads (x, y, z); segflow reports (z, y, x). These images have no zero frame.
        image = nib.load(image_file)
        label = np.asarray(nib.load(label_file).dataobj)
        assert fp["shape_before_crop"] == fp["shape_after_crop"] == list(image.shape[::-1])
        assert fp["spacing"] == [float(s) for s in image.header.get_zooms()[::-1]]
        foreground = np.asarray(image.dataobj, dtype=np.float32)[label > 0].astype(np.float64)
        channel = fp["channels"][0]
        assert channel["num_foreground_voxels"] == foreground.size
        assert channel["statistics"]["mean"] == pytest.approx(foreground.mean())
        assert channel["statistics"]["min"] == foreground.min()
        assert channel["statistics"]["max"] == foreground.max()
        # Fewer foreground voxels than samples asked for: every one is kept.
        assert sorted(channel["samples"]) == pytest.approx(np.sort(foreground))


def test_hippocampus_gather(shared_data):
    folder, dataset = _hippocampus(shared_data)
    cases = [
        fingerprint_case(
            case,
            [folder / "imagesTr" / f"{case}_0000.nii.gz"],
            folder / "labelsTr" / f"{case}.nii.gz",
            dataset,
            seed=0,
            num_samples=10_000,
        )
        for case in reversed(HIPPOCAMPUS_CASES)
    ]
    fp = gather_fingerprint(cases, dataset, seed=0)
    check_against_schema(fp, "fingerprint", "fingerprint.json")
    assert fp["case_ids"] == HIPPOCAMPUS_CASES
    # The numbers nnU-Net v2.8.1 writes for these cases in dataset_fingerprint.json.
    assert fp["spacings"] == [[1.0, 1.0, 1.0]] * 3
    assert fp["shapes_after_crop"] == [[35, 51, 35], [35, 52, 34], [38, 52, 36]]
    assert fp["median_relative_size_after_cropping"] == 1.0
    assert fp["num_foreground_voxels_per_case"] == [2948, 3353, 3698]
    # The cases' intensity ranges differ by a factor of 7; each case counts a third.
    case_means = [c["channels"][0]["statistics"]["mean"] for c in cases]
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert stats["mean"] == pytest.approx(np.mean(case_means))
    assert (stats["min"], stats["max"]) == (21.0, pytest.approx(792.5430297851562))


def test_isbi_em_png_cases(shared_data):
    folder = shared_data / "Dataset121_ISBI2012EM"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    dataset = load_dataset_json(folder / "dataset.json")
    cases = [
        fingerprint_case(
            case,
            [folder / "imagesTr" / f"{case}_0000.png"],
            folder / "labelsTr" / f"{case}.png",
            dataset,
            seed=0,
            num_samples=1_000,
        )
        for case in ("em_00", "em_01")
    ]
    fp = gather_fingerprint(cases, dataset, seed=0)
    assert fp["is_2d"] is True
    assert fp["spacings"] == [[999.0, 1.0, 1.0]] * 2
    assert fp["shapes_after_crop"] == [[1, 512, 512]] * 2
    assert fp["num_foreground_voxels_per_case"] == [57492, 59635]
    assert all(len(c["channels"][0]["samples"]) == 1_000 for c in cases)
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert 0 <= stats["min"] <= stats["percentile_00_5"] < stats["median"] < 255
