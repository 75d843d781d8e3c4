"""segflow's planner against decisions recorded from nnU-Net v2 2.8.1 on the same fingerprints.

``data/nnunet_expected_plans.json`` holds synthetic fingerprints (isotropic CT, thick-slice MRI,
transposed axes, 2D RGB, tiny volumes, a large CT that needs the cascade, the same at 12 GB,
and a case whose lowres stage is dropped) with what nnU-Net's ExperimentPlanner and
nnUNetPlannerResEncM/L/XL planned for them, written by
``benchmarks/compare_plans_nnunet.py --synthetic --record``. nnU-Net is not needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.io.dataset import parse_dataset_json
from segflow.io.schema import check_against_schema
from segflow.planning import plan_experiment

RECORDED = json.loads((Path(__file__).parent / "data" / "nnunet_expected_plans.json").read_text())
CASES = RECORDED["cases"]
PRESETS = ("default", "resenc_m", "resenc_l", "resenc_xl")


def _plan(case: str, preset: str) -> dict:
    spec = CASES[case]
    dataset, problems = parse_dataset_json(spec["dataset_json"])
    assert dataset is not None and not problems
    return plan_experiment(spec["fingerprint"], dataset, preset, spec["gpu_memory_target_gb"])


def _mismatches(ours, expected, path=""):
    """Every path at which ``ours`` differs from ``expected`` (numbers compared as floats)."""
    if isinstance(expected, dict):
        if not isinstance(ours, dict):
            return [f"{path}: {ours!r} != {expected!r}"]
        out = []
        for key, value in expected.items():
            if value is None and key not in ours:
                continue  # e.g. previous_stage of a configuration outside the cascade
            out += _mismatches(ours.get(key), value, f"{path}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(ours, list) or len(ours) != len(expected):
            return [f"{path}: {ours!r} != {expected!r}"]
        return [
            m
            for i, (a, b) in enumerate(zip(ours, expected, strict=True))
            for m in _mismatches(a, b, f"{path}[{i}]")
        ]
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return [] if ours == expected else [f"{path}: {ours!r} != {expected!r}"]
    return [] if float(ours) == float(expected) else [f"{path}: {ours!r} != {expected!r}"]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_recorded_decision_agrees_with_nnunet(case, preset):
    plans = _plan(case, preset)
    check_against_schema(plans, "plans", f"{case}/{preset}")
    expected = CASES[case]["expected"][preset]
    assert list(plans["configurations"]) == sorted(
        expected["configurations"],
        key=["2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"].index,
    )
    assert _mismatches(plans, expected) == []


def test_large_ct_gets_lowres_and_cascade():
    conf = _plan("huge_ct", "default")["configurations"]
    assert set(conf) == {"2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"}
    assert conf["3d_fullres"]["spacing"] == [2.50855, 0.80375, 0.8077]
    assert conf["3d_fullres"]["patch_size"] == [112, 128, 128]
    # The lowres search coarsened all axes until a 128^3 patch covered a quarter of the image.
    assert conf["3d_lowres"]["spacing"] == pytest.approx([4.2706385, 2.1957689, 2.1422912])
    assert conf["3d_lowres"]["patch_size"] == [128, 128, 128]
    assert conf["3d_lowres"]["next_stage"] == "3d_cascade_fullres"
    assert conf["3d_lowres"]["data_identifier"] == "nnUNetPlans_3d_lowres"
    assert conf["3d_cascade_fullres"]["previous_stage"] == "3d_lowres"
    assert conf["3d_cascade_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"
    # Batch dice for the patch-based stages, per-sample dice for the near-whole-image stage.
    assert [
        conf[c]["batch_dice"] for c in ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
    ] == [
        True,
        True,
        False,
        True,
    ]


def test_twelve_gigabytes_buy_a_larger_fullres_patch():
    at_8 = _plan("huge_ct", "default")["configurations"]["3d_fullres"]["patch_size"]
    at_12 = _plan("huge_ct_12gb", "default")["configurations"]["3d_fullres"]["patch_size"]
    assert at_8 == [112, 128, 128] and at_12 == [112, 160, 160]


def test_resenc_presets_share_fullres_data_but_not_lowres():
    conf = _plan("huge_ct", "resenc_l")["configurations"]
    assert conf["3d_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert conf["2d"]["data_identifier"] == "nnUNetPlans_2d"
    assert conf["3d_lowres"]["data_identifier"] == "nnUNetResEncUNetLPlans_3d_lowres"
    assert conf["3d_fullres"]["network"]["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6]
    assert conf["3d_fullres"]["network"]["n_conv_per_stage_decoder"] == [1, 1, 1, 1, 1]


def test_thick_slices_take_the_10th_percentile_and_kernel_1_along_z():
    plans = _plan("anisotropic_mri", "default")
    fullres = plans["configurations"]["3d_fullres"]
    # Median slice spacing 5 mm, but a fifth of the cases have 3 mm: z gets 3 mm.
    assert fullres["spacing"][0] == 3.0
    assert fullres["patch_size"] == [28, 256, 256]
    assert fullres["network"]["kernel_sizes"][:3] == [[1, 3, 3], [1, 3, 3], [3, 3, 3]]
    assert fullres["network"]["strides"][:3] == [[1, 1, 1], [1, 2, 2], [1, 2, 2]]
    assert fullres["normalization_schemes"] == ["ZScoreNormalization", "NoNormalization"]
    assert fullres["use_mask_for_norm"] == [True, False]


def test_coarse_last_axis_is_moved_first():
    plans = _plan("transposed_mri", "default")
    assert plans["transpose_forward"] == [2, 0, 1]
    assert plans["transpose_backward"] == [1, 2, 0]
    assert plans["configurations"]["3d_fullres"]["spacing"][0] == pytest.approx(3.70295)


def test_2d_data_gets_only_the_2d_configuration():
    plans = _plan("rgb_2d", "default")
    assert list(plans["configurations"]) == ["2d"]
    conf = plans["configurations"]["2d"]
    assert conf["patch_size"] == [768, 1024]
    # 5% of 40 images of 768x1024 is exactly 2 images: the dataset cap, not memory, decides.
    assert conf["batch_size"] == 2


def test_tiny_volumes_are_capped_by_the_dataset_size():
    conf = _plan("tiny", "default")["configurations"]
    assert conf["3d_fullres"]["patch_size"] == [16, 16, 16]
    assert conf["3d_fullres"]["network"]["n_stages"] == 3
    # 5% of 60 cases of 16^3 voxels is 3 patches; the ResEnc presets allow the whole dataset.
    assert conf["3d_fullres"]["batch_size"] == 3
    assert _plan("tiny", "resenc_m")["configurations"]["3d_fullres"]["batch_size"] == 60


def test_lowres_is_dropped_when_it_would_shrink_the_image_less_than_twofold(caplog):
    with caplog.at_level("INFO", logger="segflow.planning.planner"):
        conf = _plan("lowres_dropped", "default")["configurations"]
    # The 128^3 patch covers under a quarter of the ~220x230x230 image, so a lowres stage was
    # searched for, but the spacing that fixes that shrinks the image less than twofold.
    assert "no 3d_lowres" in caplog.text
    assert set(conf) == {"2d", "3d_fullres"}
    assert conf["3d_fullres"]["batch_dice"] is False
