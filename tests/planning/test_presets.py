"""Planner presets: their nnU-Net counterparts and budgets."""

from __future__ import annotations

import pytest

from segflow.errors import SegflowError
from segflow.planning import PRESETS, get_preset


@pytest.mark.parametrize(
    ("name", "planner", "gb", "ref_3d", "ref_2d", "covered"),
    [
        ("default", "ExperimentPlanner", 8, 560_000_000, 85_000_000, 0.05),
        ("resenc_m", "nnUNetPlannerResEncM", 8, 680_000_000, 135_000_000, 1.0),
        ("resenc_l", "nnUNetPlannerResEncL", 24, 2_100_000_000, 380_000_000, 1.0),
        ("resenc_xl", "nnUNetPlannerResEncXL", 40, 3_600_000_000, 560_000_000, 1.0),
    ],
)
def test_presets_match_nnunet_planners(name, planner, gb, ref_3d, ref_2d, covered):
    preset = get_preset(name)
    assert preset.nnunet_planner == planner
    assert preset.default_gpu_memory_gb == gb
    assert preset.reference_value(3, gb) == ref_3d
    assert preset.reference_value(2, gb) == ref_2d
    assert preset.max_dataset_covered == covered


def test_budget_scales_linearly_with_memory():
    assert get_preset("default").reference_value(3, 12) == 840_000_000
    assert get_preset("resenc_l").reference_value(3, 12) == 1_050_000_000


def test_unknown_preset_without_close_match():
    with pytest.raises(SegflowError) as err:
        get_preset("unet")
    assert "did you mean" not in str(err.value)
    assert ", ".join(PRESETS) in str(err.value)
