"""plan_experiment: structure of the plans, the memory target, and errors."""

from __future__ import annotations

import math

import pytest

from segflow import __version__
from segflow.errors import SegflowError
from segflow.io.schema import check_against_schema
from segflow.planning import plan_experiment


def test_plans_record_provenance_and_validate(fingerprint, dataset):
    plans = plan_experiment(fingerprint, dataset, seed=7)
    check_against_schema(plans, "plans", "plans.json")
    assert plans["segflow_version"] == __version__
    assert plans["seed"] == 7
    assert plans["preset"] == "default"
    assert plans["gpu_memory_target_gb"] == 8.0
    assert plans["dataset_name"] == "Dataset999_Test"
    assert plans["planner"]["name"] == "ExperimentPlanner"
    assert plans["planner"]["budget_3d"] == 560_000_000
    assert plans["original_median_shape_after_transp"] == [36, 50, 35]


def test_hippocampus_like_plan(make_fingerprint, make_dataset):
    fingerprint = make_fingerprint((1.0, 1.0, 1.0), (36, 50, 35), num_cases=200)
    conf = plan_experiment(fingerprint, make_dataset(num_training=200))["configurations"]
    assert list(conf) == ["2d", "3d_fullres"]
    full = conf["3d_fullres"]
    assert full["patch_size"] == [40, 56, 40]
    assert full["network"]["n_stages"] == 4
    assert full["network"]["features_per_stage"] == [32, 64, 128, 256]
    assert full["network"]["n_conv_per_stage"] == [2, 2, 2, 2]
    assert full["network"]["conv_op"] == "Conv3d"
    # 5% of 200 x 36*50*35 voxels is 7 patches of 40*56*40 (rounded): less than memory allows.
    assert full["batch_size"] == round(200 * 36 * 50 * 35 * 0.05 / (40 * 56 * 40)) == 7
    assert conf["2d"]["patch_size"] == [56, 40]
    assert conf["2d"]["batch_size"] == 281  # the 2D cap also refers to the 3D dataset volume
    assert conf["2d"]["network"]["conv_op"] == "Conv2d"
    assert full["resampling"]["data"] == {"order": 3, "order_z": 0, "force_separate_z": None}


def test_planning_is_deterministic(fingerprint, dataset):
    assert plan_experiment(fingerprint, dataset, seed=1) == plan_experiment(
        fingerprint, dataset, seed=1
    )


@pytest.mark.parametrize("preset", ["default", "resenc_m", "resenc_l"])
def test_more_memory_never_buys_a_smaller_patch(preset, make_fingerprint, make_dataset):
    fingerprint = make_fingerprint((1.0, 1.0, 1.0), (300, 300, 300), num_cases=200)
    dataset = make_dataset(num_training=200)
    voxels = []
    for gb in (4, 8, 16, 32):
        plans = plan_experiment(fingerprint, dataset, preset, gpu_memory_target_gb=gb)
        full = plans["configurations"]["3d_fullres"]
        assert full["estimated_feature_map_voxels"] <= plans["planner"]["budget_3d"]
        assert full["batch_size"] >= 2
        voxels.append(math.prod(full["patch_size"]))
    assert voxels == sorted(voxels) and voxels[0] < voxels[-1]


def test_narrower_networks_follow_base_and_max_features(make_fingerprint, make_dataset):
    fingerprint = make_fingerprint((1.0, 1.0, 1.0), (36, 50, 35), num_cases=200)
    dataset = make_dataset(num_training=200)
    plans = plan_experiment(fingerprint, dataset, base_features=8, max_features=32)
    assert plans["planner"]["base_num_features"] == 8
    assert plans["planner"]["max_features_3d"] == plans["planner"]["max_features_2d"] == 32
    check_against_schema(plans, "plans", "plans.json")
    for conf in plans["configurations"].values():
        n = conf["network"]["n_stages"]
        assert conf["network"]["features_per_stage"] == [min(32, 8 * 2**i) for i in range(n)]
    # The same memory buys at least as much patch and batch for the narrower network.
    default = plan_experiment(fingerprint, dataset)["configurations"]["3d_fullres"]
    narrow = plans["configurations"]["3d_fullres"]
    assert narrow["estimated_feature_map_voxels"] < default["estimated_feature_map_voxels"]
    assert math.prod(narrow["patch_size"]) >= math.prod(default["patch_size"])


@pytest.mark.parametrize(
    ("widths", "message"),
    [
        ({"base_features": 0}, "base_features must be a positive integer, got 0"),
        ({"max_features": 2.5}, "max_features must be a positive integer, got 2.5"),
        ({"base_features": 64, "max_features": 32}, "max_features (32) is below base_features"),
    ],
)
def test_invalid_network_widths_are_named(fingerprint, dataset, widths, message):
    with pytest.raises(SegflowError) as err:
        plan_experiment(fingerprint, dataset, **widths)
    assert message in str(err.value)


def test_ct_and_mask_decisions(make_fingerprint, make_dataset):
    fp = make_fingerprint((1.0, 1.0, 1.0), (36, 50, 35), relative_size=0.5, channels=2)
    ds = make_dataset({"0": "CT", "1": "T1"})
    conf = plan_experiment(fp, ds)["configurations"]["3d_fullres"]
    assert conf["normalization_schemes"] == ["CTNormalization", "ZScoreNormalization"]
    assert conf["use_mask_for_norm"] == [False, True]


def test_unknown_preset_lists_valid_ones_and_suggests(fingerprint, dataset):
    with pytest.raises(SegflowError) as err:
        plan_experiment(fingerprint, dataset, preset="resenc_ll")
    message = str(err.value)
    assert "unknown planner preset 'resenc_ll'" in message
    assert "did you mean 'resenc_l'?" in message
    assert "default, resenc_m, resenc_l, resenc_xl" in message


@pytest.mark.parametrize("gb", [0, -8.0, True, "8"])
def test_memory_target_must_be_positive(fingerprint, dataset, gb):
    with pytest.raises(SegflowError, match="GPU memory target must be a positive number"):
        plan_experiment(fingerprint, dataset, gpu_memory_target_gb=gb)


def test_fingerprint_problems_are_all_listed(dataset):
    with pytest.raises(SegflowError) as err:
        plan_experiment({"spacings": []}, dataset)
    missing = {p.message for p in err.value.problems}
    assert missing == {
        "missing required key 'shapes_after_crop'",
        "missing required key 'median_relative_size_after_cropping'",
        "missing required key 'foreground_intensity_properties_per_channel'",
    }


def test_inconsistent_fingerprint_is_rejected(fingerprint, dataset):
    bad = dict(fingerprint)
    bad["spacings"] = [[1.0, 1.0], *fingerprint["spacings"][1:]]
    bad["shapes_after_crop"] = [[36, 0, 35], *fingerprint["shapes_after_crop"][1:]]
    with pytest.raises(SegflowError) as err:
        plan_experiment(bad, dataset)
    wheres = [p.where for p in err.value.problems]
    assert wheres == ["fingerprint:spacings/0", "fingerprint:shapes_after_crop/0"]
