"""Which configurations share preprocessed data: decided from the values preprocessing reads,
for plans the real planner makes with each preset."""

from __future__ import annotations

import copy

import pytest

from segflow.planning import plan_experiment
from segflow.preprocessing.sharing import preprocessed_owners, preprocessing_signature

from ..planning.conftest import _make_dataset, _make_fingerprint


@pytest.fixture(scope="module")
def large_ct():
    """Large isotropic volumes: every preset plans 2d, 3d_fullres and the cascade."""
    dataset = _make_dataset(channels={"0": "CT"})
    fingerprint = _make_fingerprint((1.0, 0.8, 0.8), (400, 512, 512))
    return {
        preset: plan_experiment(fingerprint, dataset, preset=preset)
        for preset in ("default", "resenc_m", "resenc_l")
    }


def test_the_residual_encoder_presets_preprocess_2d_and_3d_fullres_as_the_default(large_ct):
    default = large_ct["default"]
    names = ["2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"]
    for preset in ("resenc_m", "resenc_l"):
        resenc = large_ct[preset]
        assert list(default["configurations"]) == list(resenc["configurations"]) == names
        for name in ("2d", "3d_fullres"):
            # Another network (and for L another patch) ...
            assert resenc["configurations"][name]["network"]["architecture"] == (
                "ResidualEncoderUNet"
            )
            # ... the same preprocessing.
            assert preprocessing_signature(default, name) == preprocessing_signature(resenc, name)
    assert (
        large_ct["resenc_l"]["configurations"]["3d_fullres"]["patch_size"]
        != default["configurations"]["3d_fullres"]["patch_size"]
    )
    # The lowres spacing is searched from the patch: L's larger patch needs a finer spacing.
    # M plans the default's 3D patch here, hence the default's lowres spacing too.
    low = {p: large_ct[p]["configurations"]["3d_lowres"]["spacing"] for p in large_ct}
    assert low["resenc_l"] != low["default"] and low["resenc_m"] == low["default"]
    assert preprocessing_signature(default, "3d_lowres") != preprocessing_signature(
        large_ct["resenc_l"], "3d_lowres"
    )


def test_owners_share_every_identical_configuration_and_nothing_else(large_ct):
    owners = preprocessed_owners(
        {
            "resenc_l": large_ct["resenc_l"],
            "resenc_m": large_ct["resenc_m"],
            None: large_ct["default"],
        }
    )
    assert owners == {
        (None, "2d"): (None, "2d"),
        (None, "3d_fullres"): (None, "3d_fullres"),
        (None, "3d_lowres"): (None, "3d_lowres"),
        # nnU-Net's shared data_identifier within one plans.
        (None, "3d_cascade_fullres"): (None, "3d_fullres"),
        ("resenc_l", "2d"): (None, "2d"),
        ("resenc_l", "3d_fullres"): (None, "3d_fullres"),
        ("resenc_l", "3d_lowres"): ("resenc_l", "3d_lowres"),
        ("resenc_l", "3d_cascade_fullres"): (None, "3d_fullres"),
        ("resenc_m", "2d"): (None, "2d"),
        ("resenc_m", "3d_fullres"): (None, "3d_fullres"),
        # Named nnUNetResEncUNetMPlans_3d_lowres, but preprocessed exactly as the default's.
        ("resenc_m", "3d_lowres"): (None, "3d_lowres"),
        ("resenc_m", "3d_cascade_fullres"): (None, "3d_fullres"),
    }


def test_a_preset_may_plan_other_configurations():
    dataset = _make_dataset(channels={"0": "CT"})
    fingerprint = _make_fingerprint((2.5, 0.8, 0.8), (200, 320, 320))
    default = plan_experiment(fingerprint, dataset)
    resenc_l = plan_experiment(fingerprint, dataset, preset="resenc_l")
    # L's larger patch covers enough of the image: no cascade.
    assert "3d_lowres" in default["configurations"]
    assert list(resenc_l["configurations"]) == ["2d", "3d_fullres"]
    owners = preprocessed_owners({None: default, "resenc_l": resenc_l})
    assert owners[("resenc_l", "2d")] == (None, "2d")
    assert owners[("resenc_l", "3d_fullres")] == (None, "3d_fullres")
    assert ("resenc_l", "3d_lowres") not in owners


def test_values_decide_not_names(large_ct):
    default = large_ct["default"]
    # Same data_identifier, another target spacing (as another GPU memory target or moved
    # plans can give): not shared.
    other = copy.deepcopy(default)
    other["configurations"]["3d_fullres"]["spacing"] = [1.0, 1.0, 1.0]
    assert other["configurations"]["3d_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"
    owners = preprocessed_owners({None: default, "x": other})
    assert owners[("x", "3d_fullres")] == ("x", "3d_fullres")
    assert owners[("x", "2d")] == (None, "2d")
    # Each value preprocessing reads breaks the sharing alone; the patch size does not.
    changes = {
        ("configuration", "normalization_schemes"): ["ZScoreNormalization"],
        ("configuration", "use_mask_for_norm"): [True],
        ("configuration", "resampling"): {"data": {"order": 1}},
        ("plans", "transpose_forward"): [2, 1, 0],
        ("plans", "seed"): 7,
        ("plans", "foreground_intensity_properties_per_channel"): {"0": {"mean": 1.0}},
    }
    for (where, key), value in changes.items():
        changed = copy.deepcopy(default)
        target = changed["configurations"]["2d"] if where == "configuration" else changed
        target[key] = value
        assert preprocessing_signature(changed, "2d") != preprocessing_signature(default, "2d"), key
    patch = copy.deepcopy(default)
    patch["configurations"]["2d"]["patch_size"] = [64, 64]
    assert preprocessing_signature(patch, "2d") == preprocessing_signature(default, "2d")
