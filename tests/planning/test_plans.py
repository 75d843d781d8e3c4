"""The typed plans accessor and the plans schema."""

from __future__ import annotations

import json

import pytest

from segflow.errors import SegflowError
from segflow.planning import Plans, load_plans, plan_experiment


@pytest.fixture
def plans_file(tmp_path, fingerprint, dataset):
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(plan_experiment(fingerprint, dataset, preset="resenc_m", seed=3)))
    return path


def test_typed_properties(plans_file):
    plans = load_plans(plans_file)
    assert plans.preset == "resenc_m"
    assert plans.seed == 3
    assert plans.gpu_memory_target_gb == 8.0
    assert plans.transpose_forward == (0, 1, 2)
    assert plans.original_median_spacing_after_transp == (1.0, 1.0, 1.0)
    assert plans.configuration_names == ("2d", "3d_fullres")
    assert "3d_fullres" in plans and "3d_lowres" not in plans
    assert plans.foreground_intensity_properties_per_channel["0"]["mean"] == 100.0

    full = plans.configuration("3d_fullres")
    assert full.name == "3d_fullres"
    assert full.ndim == 3
    assert full.spacing == (1.0, 1.0, 1.0)
    assert full.patch_size == (40, 56, 40)
    assert isinstance(full.batch_size, int)
    assert full.data_identifier == "nnUNetPlans_3d_fullres"
    assert full.normalization_schemes == ("ZScoreNormalization",)
    assert full.use_mask_for_norm == (False,)
    assert full.resampling["seg"]["order"] == 1
    assert full.previous_stage is None and full.next_stage is None

    net = full.network
    assert net.architecture == "ResidualEncoderUNet"
    assert net.n_stages == 4
    assert net.strides[1] == (2, 2, 2)
    assert net.kernel_sizes[0] == (3, 3, 3)
    assert net.blocks_per_stage_encoder == (1, 3, 4, 6)
    assert net.n_conv_per_stage_decoder == (1, 1, 1)
    assert net.norm_op == "InstanceNorm3d"
    assert net.norm_op_kwargs == {"eps": 1e-5, "affine": True}
    assert net.dropout_op is None


def test_unknown_configuration_lists_the_valid_ones(plans_file):
    with pytest.raises(
        SegflowError, match=r"configuration '3d_lowres' does not exist; valid: 2d, 3d_fullres"
    ):
        load_plans(plans_file).configuration("3d_lowres")


def test_a_misspelled_key_breaks_the_schema(plans_file):
    data = json.loads(plans_file.read_text())
    data["configurations"]["3d_fullres"]["patch_sise"] = [1, 2, 3]
    with pytest.raises(SegflowError) as err:
        Plans.from_dict(data, "plans.json")
    assert any("patch_sise" in p.message for p in err.value.problems)
    assert err.value.problems[0].where == "plans.json:configurations/3d_fullres"


def test_the_schema_checks_values_and_names(plans_file):
    data = json.loads(plans_file.read_text())
    del data["transpose_forward"]
    data["configurations"]["3d_fulres"] = data["configurations"].pop("3d_fullres")
    data["configurations"]["2d"]["batch_size"] = 0
    data["configurations"]["2d"]["network"]["n_conv_per_stage"] = [2, 2, 2, 2]  # a ResEnc net
    with pytest.raises(SegflowError) as err:
        Plans.from_dict(data)
    wheres = {p.where for p in err.value.problems}
    assert "plans:<root>" in wheres  # missing transpose_forward
    assert "plans:configurations" in wheres  # 3d_fulres is no configuration name
    assert "plans:configurations/2d/batch_size" in wheres
    assert "plans:configurations/2d/network" in wheres


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(SegflowError, match="plans not found"):
        load_plans(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SegflowError, match="not valid JSON"):
        load_plans(broken)


def test_cascade_stages_are_linked(make_fingerprint, make_dataset):
    fingerprint = make_fingerprint((2.5, 0.8, 0.8), (400, 512, 512), num_cases=50)
    plans = Plans.from_dict(plan_experiment(fingerprint, make_dataset(num_training=50)))
    assert plans.configuration_names == ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
    assert plans.configuration("3d_lowres").next_stage == "3d_cascade_fullres"
    cascade = plans.configuration("3d_cascade_fullres")
    assert cascade.previous_stage == "3d_lowres"
    assert cascade.patch_size == plans.configuration("3d_fullres").patch_size
