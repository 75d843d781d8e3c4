"""Planning from a fingerprint of real Hippocampus cases (skipped without ../shared/data)."""

from __future__ import annotations

import pytest

from segflow.fingerprint.geometry import geometry_fingerprint
from segflow.io.dataset import load_dataset_json
from segflow.planning import plan_experiment

pytestmark = pytest.mark.shared_data
NUM_CASES = 8


def _first_cases(folder):
    return sorted(p.name[: -len(".nii.gz")] for p in (folder / "labelsTr").glob("*.nii.gz"))[
        :NUM_CASES
    ]


def test_eight_hippocampus_cases_plan_like_nnunet(shared_data):
    folder = shared_data / "Dataset004_Hippocampus"
    dataset = load_dataset_json(folder / "dataset.json")
    fingerprint = geometry_fingerprint(folder, _first_cases(folder))
    # nnU-Net 2.8.1 on the same eight shapes (median 36.5 x 50.5 x 35.5) with numTraining 200:
    expected = {
        "default": {"2d": ([56, 40], 292), "3d_fullres": ([40, 56, 40], 7)},
        "resenc_l": {"2d": ([56, 40], 4554), "3d_fullres": ([40, 56, 40], 146)},
    }
    for preset, configurations in expected.items():
        conf = plan_experiment(fingerprint, dataset, preset)["configurations"]
        assert list(conf) == list(configurations)
        for name, (patch, batch) in configurations.items():
            assert (conf[name]["patch_size"], conf[name]["batch_size"]) == (patch, batch)
        assert conf["3d_fullres"]["median_image_size_in_voxels"] == [36.5, 50.5, 35.5]
        assert conf["3d_fullres"]["network"]["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 3


def test_segflow_fingerprint_of_the_same_cases_plans_the_same(shared_data):
    fingerprint_module = pytest.importorskip("segflow.fingerprint")
    if not hasattr(fingerprint_module, "gather_fingerprint"):
        pytest.skip("segflow.fingerprint is not written yet")
    folder = shared_data / "Dataset004_Hippocampus"
    dataset = load_dataset_json(folder / "dataset.json")
    case_ids = _first_cases(folder)
    cases = [
        fingerprint_module.fingerprint_case(
            case_id=case,
            images=[folder / "imagesTr" / f"{case}_0000.nii.gz"],
            label=folder / "labelsTr" / f"{case}.nii.gz",
            dataset=dataset,
            seed=0,
            num_samples=1000,
        )
        for case in case_ids
    ]
    ours = fingerprint_module.gather_fingerprint(cases, dataset, seed=0)
    from_headers = geometry_fingerprint(folder, case_ids)
    a = plan_experiment(ours, dataset)["configurations"]
    b = plan_experiment(from_headers, dataset)["configurations"]
    for name in b:
        for key in ("spacing", "patch_size", "batch_size", "network"):
            assert a[name][key] == b[name][key], (name, key)
