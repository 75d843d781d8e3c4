"""build_network against nnU-Net v2's networks, and its errors for plans it cannot build.

``data/nnunet_networks.json`` is written by ``benchmarks/compare_networks_nnunet.py --record``
from nnU-Net v2 2.8.1 (dynamic_network_architectures 0.4.4): for every distinct network that the
four planner presets give the synthetic fingerprints of tests/planning/data, Hippocampus and two
anisotropic fingerprints, the parameter count and output shapes of nnU-Net's network, and for a
few small ones checksums of its float64 outputs with deterministic weights and input. nnU-Net is
not needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segflow.errors import SegflowError
from segflow.io.dataset import parse_dataset_json
from segflow.networks import PlainConvUNet, ResidualEncoderUNet, UNet, build_network
from segflow.networks.patterns import output_checksums, pattern_input, set_pattern_weights
from segflow.planning import ConfigurationPlan, Plans, plan_experiment

RECORDED = json.loads((Path(__file__).parent / "data" / "nnunet_networks.json").read_text())
NETWORKS = {n["name"]: n for n in RECORDED["networks"]}
# Built here (on the meta device: no memory, no arithmetic); the benchmark checks all of them.
CHECKED = (
    "hippocampus/default/3d_fullres",
    "hippocampus/default/2d",
    "hippocampus/resenc_m/3d_fullres",
    "aniso5/default/3d_fullres",  # 5 stages, in-plane pooling first
    "aniso6/default/3d_fullres",  # a last stage that does not pool along x
    "anisotropic_mri/default/2d",  # 7 stages
    "rgb_2d/default/2d",  # 8 stages, 3 channels
    "huge_ct/default/3d_cascade_fullres",  # image + previous-stage channels
    "isotropic_ct/resenc_m/3d_fullres",  # ResEnc M
    "huge_ct/resenc_l/3d_fullres",  # ResEnc L, anisotropic
    "rgb_2d/resenc_m/2d",  # ResEnc 2D, 7 stages
    "tiny/resenc_m/2d",
)
WITH_OUTPUTS = [name for name, n in NETWORKS.items() if "reference_output_checksums" in n]


def _build(entry, deep_supervision=True):
    name = entry["name"].rsplit("/", 1)[-1]
    conf = ConfigurationPlan(name, {"patch_size": entry["patch_size"], "network": entry["network"]})
    return build_network(
        conf,
        entry["num_input_channels"],
        entry["num_outputs"],
        deep_supervision,
    )


def test_recorded_networks_cover_the_required_plans():
    assert RECORDED["versions"]["nnunetv2"] == "2.8.1"
    archs = {n["network"]["architecture"] for n in NETWORKS.values()}
    assert archs == {"PlainConvUNet", "ResidualEncoderUNet"}
    assert {n["network"]["conv_op"] for n in NETWORKS.values()} == {"Conv2d", "Conv3d"}
    assert NETWORKS["aniso5/default/3d_fullres"]["network"]["n_stages"] == 5
    assert NETWORKS["anisotropic_mri/default/2d"]["network"]["n_stages"] == 7


@pytest.mark.parametrize("name", CHECKED)
def test_parameter_count_and_output_shapes_equal_nnunets(name):
    entry = NETWORKS[name]
    with torch.device("meta"):
        net = _build(entry)
        x = torch.empty(1, entry["num_input_channels"], *entry["patch_size"])
        shapes = [list(o.shape) for o in net(x)]
    assert sum(p.numel() for p in net.parameters()) == entry["parameters"]
    assert shapes == entry["deep_supervision_output_shapes"]
    # Without deep supervision nnU-Net returns the finest output alone.
    assert shapes[0] == entry["output_shape"]


def test_some_parameter_counts_by_number():
    # A few of the recorded nnU-Net counts, spelled out.
    assert NETWORKS["hippocampus/default/3d_fullres"]["parameters"] == 5_603_177
    assert NETWORKS["hippocampus/default/2d"]["parameters"] == 1_928_489
    assert NETWORKS["isotropic_ct/resenc_m/3d_fullres"]["parameters"] == 102_349_770
    assert NETWORKS["aniso5/default/3d_fullres"]["parameters"] == 16_101_324


@pytest.mark.parametrize("name", WITH_OUTPUTS)
def test_outputs_equal_nnunets_with_the_same_weights(name):
    entry = NETWORKS[name]
    net = _build(entry)
    set_pattern_weights(net)  # the same float64 weights, position by position
    with torch.no_grad():
        outputs = net(pattern_input(entry["reference_input_shape"]))
    ours = output_checksums(outputs)
    theirs = entry["reference_output_checksums"]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        scale = b["abs_sum"]
        for key in ("sum", "abs_sum", "weighted_sum"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-9 * scale)


def test_builds_from_planned_plans():
    dataset, _ = parse_dataset_json(
        {
            "channel_names": {"0": "MRI", "1": "T2"},
            "labels": {"background": 0, "a": 1, "b": 2},
            "numTraining": 4,
            "file_ending": ".nii.gz",
        }
    )
    fingerprint = {
        "spacings": [[1.0, 1.0, 1.0]] * 4,
        "shapes_after_crop": [[20, 24, 20]] * 4,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {
            c: dict.fromkeys(
                ("mean", "median", "std", "min", "max", "percentile_00_5", "percentile_99_5"), 1.0
            )
            for c in ("0", "1")
        },
    }
    for preset, cls in (("default", PlainConvUNet), ("resenc_m", ResidualEncoderUNet)):
        plans = Plans.from_dict(plan_experiment(fingerprint, dataset, preset))
        for name in plans.configuration_names:
            conf = plans.configuration(name)
            net = build_network(conf, 2, 3)
            assert type(net) is cls
            assert net.num_deep_supervision_outputs == conf.network.n_stages - 1


def test_deep_supervision_is_chosen_at_build_time(network_section, make_configuration):
    conf = make_configuration(network_section(ndim=2))
    assert build_network(conf, 1, 2).deep_supervision is True
    net = build_network(conf, 1, 2, deep_supervision=False)
    assert isinstance(net, UNet) and net.deep_supervision is False
    assert isinstance(net(torch.zeros(1, 1, 16, 16)), torch.Tensor)


@pytest.fixture
def problems(make_configuration):
    """``problems(network, patch_size=None, outputs=2)``: the error message building it gives."""

    def build(network, patch_size=None, outputs=2):
        with pytest.raises(SegflowError) as info:
            build_network(make_configuration(network, patch_size), 1, outputs)
        return str(info.value)

    return build


def test_unknown_architecture_lists_the_valid_ones(network_section, problems):
    message = problems(dict(network_section(), architecture="nnUNetFancyNet"))
    assert "architecture 'nnUNetFancyNet' is not supported" in message
    assert "PlainConvUNet, ResidualEncoderUNet" in message


def test_unknown_layer_names_suggest_the_closest(network_section, problems):
    net = dict(network_section(), conv_op="Conv3D", nonlin="LeakyRelu", norm_op="GroupNorm")
    message = problems(net)
    assert "conv_op 'Conv3D' is not supported; did you mean 'Conv3d'?" in message
    assert "nonlin 'LeakyRelu' is not supported; did you mean 'LeakyReLU'?" in message
    assert "norm_op 'GroupNorm' is not supported" in message


def test_dropout_and_bad_keyword_arguments_are_errors(network_section, problems):
    net = dict(
        network_section(),
        dropout_op="Dropout3d",
        nonlin_kwargs={"slope": 0.1},
        norm_op_kwargs={"epsilon": 1e-5},
    )
    message = problems(net)
    assert "dropout_op 'Dropout3d' is not supported" in message
    assert "nonlin 'LeakyReLU' does not accept {'slope': 0.1}" in message
    assert "norm_op 'InstanceNorm3d' does not accept" in message


def test_dimensionality_mismatches_are_errors(network_section, problems):
    net = dict(network_section(ndim=3), norm_op="InstanceNorm2d")
    assert "'InstanceNorm2d' is 2D but conv_op 'Conv3d' is 3D" in problems(net)
    net = network_section(ndim=3)
    net["kernel_sizes"][1] = [3, 3]
    assert "kernel_sizes[1]: needs 3 values for Conv3d, got [3, 3]" in problems(net)
    assert "the patch size has 2 axes" in problems(network_section(ndim=3), [16, 16])


def test_every_topology_problem_is_reported_at_once(network_section, problems):
    net = network_section(features=(4, 8, 16))
    net["strides"] = net["strides"][:2]
    net["n_conv_per_stage_decoder"] = [2, 2, 2]
    message = problems(net, outputs=0)
    assert message.startswith("the network cannot be built")
    assert "strides: needs one entry per stage (3), got 2" in message
    assert "n_conv_per_stage_decoder: needs one entry per decoder stage (2), got 3" in message
    assert "num_outputs: must be a positive integer, got 0" in message
    assert "configuration 'test': network" in message


def test_one_stage_and_missing_keys_are_errors(network_section, problems):
    net = network_section(features=(4,))
    assert "a U-Net needs at least 2 stages, got 1" in problems(net)
    net = network_section()
    del net["strides"]
    assert "strides: missing or malformed" in problems(net)


def test_recorded_data_is_plain_json():
    path = Path(__file__).parent / "data" / "nnunet_networks.json"
    assert json.loads(path.read_text()) == RECORDED
