"""Preprocessing real Hippocampus cases (skipped without ../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.fingerprint import fingerprint_case, gather_fingerprint
from segflow.io.dataset import load_dataset_json
from segflow.io.image import read_image
from segflow.planning import Plans, plan_experiment
from segflow.preprocessing import CaseSpec, open_case, preprocess_cases

pytestmark = pytest.mark.shared_data
CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004")


@pytest.fixture(scope="module")
def hippocampus(shared_data):
    folder = shared_data / "Dataset004_Hippocampus"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    dataset = load_dataset_json(folder / "dataset.json")
    specs = [
        CaseSpec(
            case,
            (folder / "imagesTr" / f"{case}_0000.nii.gz",),
            folder / "labelsTr" / f"{case}.nii.gz",
        )
        for case in CASES
    ]
    per_case = [
        fingerprint_case(s.case_id, s.images, s.label, dataset, seed=0, num_samples=10_000)
        for s in specs
    ]
    fingerprint = gather_fingerprint(per_case, dataset, seed=0)
    plans = Plans.from_dict(plan_experiment(fingerprint, dataset))
    return dataset, specs, plans


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_hippocampus_cases(tmp_path, hippocampus, configuration):
    dataset, specs, plans = hippocampus
    preprocess_cases(specs, plans, configuration, dataset, 0, tmp_path, workers=1)
    for spec in specs:
        image = read_image(spec.images[0])
        label = read_image(spec.label).array[0]
        case = open_case(tmp_path, spec.case_id)
        props = case.properties
        # 1 mm isotropic data planned at 1 mm: nothing is resampled, nothing is cropped
        # (the MRI has no zero frame).
        assert props["original_shape"] == list(image.shape)
        assert props["shape_after_resampling"] == props["shape_after_cropping"]
        data = case.data[...]
        seg = case.seg[...]
        assert data.shape == (1, *props["shape_after_resampling"])
        # z-scored over the whole image (Hippocampus does not use the nonzero mask)
        assert abs(float(data.mean())) < 1e-4
        assert float(data.std()) == pytest.approx(1.0, abs=1e-4)
        assert set(np.unique(seg)) <= {-1, 0, 1, 2}
        box = tuple(slice(a, b) for a, b in props["bbox_used_for_cropping"])
        cropped = label[box]
        np.testing.assert_array_equal(seg[0][seg[0] >= 0], cropped[seg[0] >= 0])
        for cls in ("1", "2"):
            count = int((cropped == int(cls)).sum())
            assert len(props["class_locations"][cls]) == min(count, 10_000)
            coords = case.class_locations()[cls]
            assert (seg[0][tuple(coords.T)] == int(cls)).all()
        # a training patch reads without loading the whole case
        patch = case.data[:, 2:10, 5:20, 3:30]
        np.testing.assert_array_equal(patch, data[:, 2:10, 5:20, 3:30])
