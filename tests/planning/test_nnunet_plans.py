"""nnU-Net v2's plans as segflow's: every field read, anything unknown refused and named."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import pytest

from segflow.cli import main
from segflow.errors import SegflowError
from segflow.planning.nnunet_plans import from_nnunet_plans, to_nnunet_plans
from segflow.planning.plans import Plans, load_plans

FIXTURE = Path(__file__).resolve().parents[1] / "interop" / "data" / "nnunet_fixture"
MODEL = "Dataset901_Interop/nnUNetTrainer_segflowShort__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="module")
def nnunet_plans() -> dict:
    """The plans nnU-Net 2.8.1 wrote for the fixture's dataset (networks narrowed)."""
    with zipfile.ZipFile(FIXTURE / "results.zip") as archive:
        return json.loads(archive.read(f"{MODEL}/plans.json"))


def test_the_fixtures_plans_convert_field_by_field(nnunet_plans):
    plans = Plans.from_dict(from_nnunet_plans(nnunet_plans))
    assert plans.configuration_names == ("2d", "3d_fullres")
    assert plans.transpose_forward == tuple(nnunet_plans["transpose_forward"])
    conf = plans.configuration("3d_fullres")
    theirs = nnunet_plans["configurations"]["3d_fullres"]
    assert list(conf.patch_size) == theirs["patch_size"]
    assert list(conf.spacing) == theirs["spacing"]
    assert conf.batch_size == theirs["batch_size"] == 2
    assert list(conf.normalization_schemes) == ["ZScoreNormalization"]
    assert conf.resampling["data"]["order"] == theirs["resampling_fn_data_kwargs"]["order"]
    assert conf.resampling["seg"]["order"] == theirs["resampling_fn_seg_kwargs"]["order"]
    network = conf.network
    kwargs = theirs["architecture"]["arch_kwargs"]
    assert network.architecture == "PlainConvUNet"
    assert list(network.features_per_stage) == kwargs["features_per_stage"]
    assert [list(k) for k in network.kernel_sizes] == kwargs["kernel_sizes"]
    assert [list(s) for s in network.strides] == kwargs["strides"]
    assert (network.conv_op, network.norm_op, network.nonlin) == (
        "Conv3d",
        "InstanceNorm3d",
        "LeakyReLU",
    )
    assert plans.planner["plans_name"] == "nnUNetPlans"
    assert plans.preset == "default"


def test_back_to_nnunets_plans_and_again(nnunet_plans):
    ours = from_nnunet_plans(nnunet_plans)
    theirs = to_nnunet_plans(ours)
    for name, conf in theirs["configurations"].items():
        original = nnunet_plans["configurations"][name]
        for key in ("patch_size", "spacing", "batch_size", "normalization_schemes",
                    "resampling_fn_data_kwargs", "resampling_fn_seg_kwargs"):  # fmt: skip
            assert conf[key] == original[key], (name, key)
        assert conf["architecture"]["arch_kwargs"] == original["architecture"]["arch_kwargs"]
        assert (
            conf["architecture"]["network_class_name"]
            == (original["architecture"]["network_class_name"])
        )
    assert from_nnunet_plans(theirs) == ours


def test_inherited_configurations_are_resolved(nnunet_plans):
    plans = copy.deepcopy(nnunet_plans)
    plans["configurations"]["3d_lowres"] = {"inherits_from": "3d_fullres", "spacing": [4, 2, 2]}
    converted = from_nnunet_plans(plans, ["3d_lowres"])
    conf = converted["configurations"]["3d_lowres"]
    assert conf["spacing"] == [4, 2, 2]
    assert conf["patch_size"] == nnunet_plans["configurations"]["3d_fullres"]["patch_size"]


def test_everything_unknown_is_named_at_once(nnunet_plans):
    plans = copy.deepcopy(nnunet_plans)
    plans["my_new_field"] = 1
    plans["image_reader_writer"] = "NibabelIOWithReorient"
    conf = plans["configurations"]["3d_fullres"]
    conf["architecture"]["network_class_name"] = "my_package.MyUNet"
    conf["resampling_fn_data"] = "my_resampling"
    conf["preprocessor_name"] = "MyPreprocessor"
    conf["architecture"]["arch_kwargs"]["norm_op"] = "torch.nn.modules.batchnorm.BatchNorm3d"
    conf["extra"] = True
    plans["configurations"]["3d_fullres_bs4"] = copy.deepcopy(conf)
    with pytest.raises(SegflowError) as err:
        from_nnunet_plans(plans, ["3d_fullres", "3d_fullres_bs4"], "plans.json")
    text = err.value.render()
    for named in ("my_new_field", "NibabelIOWithReorient", "my_package.MyUNet", "my_resampling",
                  "MyPreprocessor", "configurations.3d_fullres.extra",
                  "configuration '3d_fullres_bs4' has no segflow name"):  # fmt: skip
        assert named in text, named


def test_a_custom_layer_is_named(nnunet_plans):
    plans = copy.deepcopy(nnunet_plans)
    kwargs = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    kwargs["norm_op"] = "torch.nn.modules.batchnorm.BatchNorm2d"
    kwargs["dropout_op"] = "torch.nn.Dropout2d"
    with pytest.raises(SegflowError) as err:
        from_nnunet_plans(plans, ["2d"])
    text = err.value.render()
    assert "norm_op 'torch.nn.modules.batchnorm.BatchNorm2d' is not a layer segflow builds" in text
    assert "dropout_op" in text


def test_move_plans_takes_nnunets_plans(nnunet_plans, make_dataset, make_fingerprint, tmp_path):
    dataset = make_dataset(channels={"0": "T2"}, lesion=1)
    fingerprint = make_fingerprint((1.0, 1.0, 1.0), (36, 50, 35))
    fingerprint["dataset_name"] = "Dataset102_Target"
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(nnunet_plans))
    (tmp_path / "dataset.json").write_text(json.dumps(dataset.raw))
    (tmp_path / "fingerprint.json").write_text(json.dumps(fingerprint))
    out = tmp_path / "plans.json"
    argv = ["move-plans", f"--source-plans={tmp_path / 'nnUNetPlans.json'}",
            f"--target-dataset-json={tmp_path / 'dataset.json'}",
            f"--target-fingerprint={tmp_path / 'fingerprint.json'}", f"--out={out}"]  # fmt: skip
    assert main(argv) == 0
    moved = load_plans(out)
    assert moved.dataset_name == "Dataset102_Target"
    network = moved.configuration("3d_fullres").network
    kwargs = nnunet_plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert [list(k) for k in network.kernel_sizes] == kwargs["kernel_sizes"]
    assert list(network.features_per_stage) == kwargs["features_per_stage"] == [4, 8, 16]


def test_move_plans_names_what_it_cannot_take(nnunet_plans, make_dataset, make_fingerprint,
                                              tmp_path, capsys):  # fmt: skip
    plans = copy.deepcopy(nnunet_plans)
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "x.MyNet"
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(plans))
    dataset = make_dataset(channels={"0": "T2"}, lesion=1)
    (tmp_path / "dataset.json").write_text(json.dumps(dataset.raw))
    (tmp_path / "fingerprint.json").write_text(
        json.dumps(make_fingerprint((1.0, 1.0, 1.0), (36, 50, 35)))
    )
    argv = ["move-plans", f"--source-plans={tmp_path / 'nnUNetPlans.json'}",
            f"--target-dataset-json={tmp_path / 'dataset.json'}",
            f"--target-fingerprint={tmp_path / 'fingerprint.json'}",
            f"--out={tmp_path / 'plans.json'}"]  # fmt: skip
    assert main(argv) == 1
    assert "network class 'x.MyNet'" in capsys.readouterr().err
