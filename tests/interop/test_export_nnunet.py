"""``segflow export-nnunet``: a segflow model written as nnU-Net v2 results, read back.

The model is the nnU-Net fixture imported into segflow, so what is written back can be compared
with what nnU-Net itself wrote. (nnU-Net's predictor, run on the written folder outside the
tests, gives its original probabilities exactly: see docs/how-to/nnunet-interop.md.)
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from segflow.cli import main
from segflow.errors import SegflowError
from segflow.export import file_sha256, load_bundle
from segflow.interop.nnunet_export import export_nnunet
from segflow.interop.nnunet_import import import_nnunet
from segflow.nnunet.checkpoint import load_nnunet_checkpoint
from segflow.training.checkpoint import load_checkpoint, save_checkpoint

FIXTURE = Path(__file__).resolve().parent / "data" / "nnunet_fixture"
DATASET = "Dataset901_Interop"
ORIGINAL = f"{DATASET}/nnUNetTrainer_segflowShort__nnUNetPlans__3d_fullres"
WRITTEN = f"{DATASET}/nnUNetTrainer__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("original")
    with zipfile.ZipFile(FIXTURE / "results.zip") as archive:
        archive.extractall(folder)
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return import_nnunet(FIXTURE / "results.zip", tmp_path_factory.mktemp("m") / "model")


def test_plans_and_weights_read_back_equal(original, model, tmp_path):
    assert main(["export-nnunet", str(model), "-o", str(tmp_path / "results")]) == 0
    written = tmp_path / "results" / WRITTEN
    ours = json.loads((written / "plans.json").read_text())
    theirs = json.loads((original / ORIGINAL / "plans.json").read_text())
    assert list(ours["configurations"]) == ["3d_fullres"]
    assert ours["configurations"]["3d_fullres"] == theirs["configurations"]["3d_fullres"]
    for key in ("dataset_name", "plans_name", "transpose_forward", "transpose_backward",
                "foreground_intensity_properties_per_channel", "image_reader_writer",
                "label_manager", "experiment_planner_used"):  # fmt: skip
        assert ours[key] == theirs[key], key
    back = load_nnunet_checkpoint(written / "fold_0" / "checkpoint_final.pth")
    source = load_nnunet_checkpoint(original / ORIGINAL / "fold_0" / "checkpoint_final.pth")
    assert sorted(back.network_weights) == sorted(source.network_weights)  # aliases included
    for name, tensor in source.network_weights.items():
        assert torch.equal(back.network_weights[name], tensor), name
    assert back.mirror_axes == source.mirror_axes == (0, 1, 2)
    assert (back.trainer_name, back.configuration, back.fold) == ("nnUNetTrainer", "3d_fullres", 0)
    assert back.dataset_json == source.dataset_json
    decision = json.loads(
        (written / "crossval_results_folds_0" / "postprocessing.json").read_text()
    )
    assert decision == {
        "postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"],
        "postprocessing_kwargs": [{"labels_or_regions": 1}],
    }
    # And in again: the same segflow weights.
    again = load_bundle(import_nnunet(written, tmp_path / "again"))
    first = load_checkpoint(load_bundle(model).checkpoint("3d_fullres", 0))["network"]
    second = load_checkpoint(again.checkpoint("3d_fullres", 0))["network"]
    assert all(torch.equal(first[k], second[k]) for k in first) and first.keys() == second.keys()


def test_existing_model_folders_are_not_overwritten(model, tmp_path):
    export_nnunet(model, tmp_path / "results")
    with pytest.raises(SegflowError, match="exists already"):
        export_nnunet(model, tmp_path / "results")


def _with_variant(model: Path, target: Path, network: dict) -> Path:
    """A copy of ``model`` whose fold was trained with a network variant (hash updated)."""
    shutil.copytree(model, target)
    path = target / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    state = load_checkpoint(path)
    state["settings"] = {"network": network}
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["3d_fullres/fold_0/checkpoint_final.pt"] = file_sha256(path)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_a_network_nnunet_does_not_build_is_refused_by_name(model, tmp_path):
    zoo = _with_variant(model, tmp_path / "zoo", {"architecture": "SwinUNETR"})
    with pytest.raises(SegflowError, match="network 'SwinUNETR' is not one nnU-Net builds"):
        export_nnunet(zoo, tmp_path / "results")
    attention = _with_variant(model, tmp_path / "attention", {"axial_attention": True})
    with pytest.raises(SegflowError, match=r"network variant \(axial_attention\)"):
        export_nnunet(attention, tmp_path / "results")
    assert not (tmp_path / "results" / DATASET).exists()


def test_a_cascade_stage_is_refused(model, tmp_path):
    cascade = tmp_path / "cascade"
    shutil.copytree(model, cascade)
    path = cascade / "3d_fullres" / "fold_0" / "checkpoint_final.pt"
    state = load_checkpoint(path)
    state["plans"]["configurations"]["3d_fullres"]["previous_stage"] = "3d_lowres"
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
    manifest = json.loads((cascade / "manifest.json").read_text())
    manifest["files"]["3d_fullres/fold_0/checkpoint_final.pt"] = file_sha256(path)
    (cascade / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SegflowError) as err:
        export_nnunet(cascade, tmp_path / "results")
    assert "'3d_fullres' is a cascade stage (it takes the segmentations of '3d_lowres'" \
        in err.value.render()  # fmt: skip
    assert not (tmp_path / "results" / DATASET).exists()
