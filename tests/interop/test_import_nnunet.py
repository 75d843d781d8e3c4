"""``segflow import-nnunet`` on a model nnU-Net v2 trained itself (the fixture of
``benchmarks/make_nnunet_fixture.py``), and segflow's prediction of it against nnU-Net's.

nnU-Net 2.8.1 accumulates the sliding window's Gaussian-weighted logits in float16; where the
Gaussian is tiny (within two voxels of a window's border) the products underflow and its
logits there are off by up to 0.5 (measured: the network's own output, run directly in either
package, agrees to 1e-5). The comparison therefore holds segflow to nnU-Net's probabilities
within 1e-3 and to its segmentation exactly away from the window's border, and to 98 % of all
voxels; the fixture's network is trained for 2 iterations, so many voxels are near ties.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from segflow.cli import main
from segflow.errors import SegflowError
from segflow.export import import_model, load_bundle
from segflow.interop.nnunet_import import import_nnunet
from segflow.io.image import read_image
from segflow.postprocessing import apply_postprocessing

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "interop" / "data" / "nnunet_fixture"
DATASET = "Dataset901_Interop"
TRAINER = "nnUNetTrainer_segflowShort"
sys.path.insert(0, str(REPO / "benchmarks"))
from make_nnunet_fixture import make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def test_images(tmp_path_factory) -> Path:
    """The fixture's test image, made again as the fixture script made it (not tracked);
    byte for byte the file nnU-Net predicted (its sha256 is in versions.json)."""
    versions = json.loads((FIXTURE / "versions.json").read_text())
    raw = tmp_path_factory.mktemp("fixture_raw")
    images = make_dataset(raw, versions["num_train"], versions["seed"]) / "imagesTs"
    made = images / versions["test_image"]
    assert hashlib.sha256(made.read_bytes()).hexdigest() == versions["test_image_sha256"]
    return images


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """The dataset's results folder, unpacked from nnU-Net's export zip."""
    folder = tmp_path_factory.mktemp("nnunet_results")
    with zipfile.ZipFile(FIXTURE / "results.zip") as archive:
        archive.extractall(folder)
    return folder / DATASET


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("imported") / "model"
    assert main(["import-nnunet", str(FIXTURE / "results.zip"), "-o", str(model)]) == 0
    return model


def _model_folder(results: Path, configuration: str) -> Path:
    return results / f"{TRAINER}__nnUNetPlans__{configuration}"


def test_the_zip_becomes_the_model_find_best_configuration_chose(imported):
    bundle = load_bundle(imported)  # every file's sha256 checked
    assert bundle.configurations == {"3d_fullres": (0,)}
    # nnU-Net kept "largest component of label 1" (its postprocessing.json).
    assert bundle.postprocessing["rules"] == [{"labels": [1]}]
    assert bundle.postprocessing["final"]["mean_foreground_dice"] == pytest.approx(0.093858, 1e-4)
    assert bundle.selection["selected"]["configurations"] == ["3d_fullres"]
    readme = " ".join((imported / "README.md").read_text().split())
    assert readme.startswith("# Interop segmentation model A self-contained model trained by "
                             "nnU-Net v2 (`nnUNetTrainer_segflowShort__nnUNetPlans__3d_fullres`) "
                             "and imported by `segflow import-nnunet`")  # fmt: skip
    assert "trained and exported by segflow" not in readme
    assert "| `nnUNetTrainer_segflowShort__nnUNetPlans__3d_fullres` (selected) | 0.0931 |" in readme
    assert "n/a" not in readme  # nnU-Net gives no case counts: no such column
    state = torch.load(bundle.checkpoint("3d_fullres", 0), weights_only=True)
    assert state["mirror_axes"] == [0, 1, 2]
    assert state["num_outputs"] == 3 and state["epoch"] == 1


def test_segflow_predicts_what_nnunet_predicted(imported, test_images, tmp_path):
    out = tmp_path / "predictions"
    argv = ["predict", "-i", str(test_images), "-o", str(out), "-m", str(imported),
            "--no-postprocessing", "--save-probabilities", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    ours = np.load(out / "interop_008.npz")["probabilities"]
    theirs = np.load(FIXTURE / "reference" / "interop_008.npz")["probabilities"]
    assert ours.shape == theirs.shape == (3, 21, 24, 27)
    segmentation = read_image(out / "interop_008.nii.gz").array[0]
    reference = read_image(FIXTURE / "reference" / "interop_008.nii.gz").array[0]
    # The single 22x24x28 window covers the image padded by one voxel at the end of z and x.
    z, y, x = np.indices(segmentation.shape)
    interior = np.minimum.reduce([z, 20 - z, y, 23 - y, x, 26 - x]) >= 3
    assert interior.sum() == 5670  # of 13608
    assert np.abs(ours - theirs).max(axis=0)[interior].max() < 1e-3
    assert np.array_equal(segmentation[interior], reference[interior])
    assert (segmentation == reference).mean() >= 0.98


def test_its_zip_is_taken_by_import_model(tmp_path):
    model, archive = tmp_path / "model", tmp_path / "model.zip"
    import_nnunet(FIXTURE / "results.zip", model, zip_path=archive)
    unpacked = import_model(archive, tmp_path / "unpacked")
    assert load_bundle(unpacked).configurations == {"3d_fullres": (0,)}


def test_chosen_configurations_are_an_ensemble(results, tmp_path):
    model = import_nnunet(results, tmp_path / "model", configurations=["2d", "3d_fullres"])
    bundle = load_bundle(model)
    assert bundle.configurations == {"2d": (0,), "3d_fullres": (0,)}
    assert bundle.postprocessing["rules"] == []  # nnU-Net decided none for this pair
    plans = json.loads((model / "plans.json").read_text())
    assert sorted(plans["configurations"]) == ["2d", "3d_fullres"]


def test_one_trained_configurations_folder(results, tmp_path):
    model = import_nnunet(_model_folder(results, "2d"), tmp_path / "model")
    bundle = load_bundle(model)
    assert bundle.configurations == {"2d": (0,)}
    assert bundle.postprocessing["rules"] == []  # 2d's own decision: nothing kept
    state = torch.load(bundle.checkpoint("2d", 0), weights_only=True)
    assert state["mirror_axes"] == [0, 1]


def _copy_model(results: Path, tmp_path: Path, trainer: str) -> Path:
    source = _model_folder(results, "3d_fullres")
    target = tmp_path / DATASET / f"{trainer}__nnUNetPlans__3d_fullres"
    shutil.copytree(source, target)
    return target


def _rewrite_checkpoint(folder: Path, **changes) -> None:
    path = folder / "fold_0" / "checkpoint_final.pth"
    state = torch.load(path, weights_only=False)  # the fixture: made here, trusted
    state.update(changes)
    torch.save(state, path)


def test_a_custom_trainer_is_refused_by_name(results, tmp_path):
    folder = _copy_model(results, tmp_path, "nnUNetTrainerMyArchitecture")
    _rewrite_checkpoint(folder, trainer_name="nnUNetTrainerMyArchitecture")
    with pytest.raises(SegflowError) as err:
        import_nnunet(folder, tmp_path / "model")
    assert "trainer 'nnUNetTrainerMyArchitecture' is not one segflow knows" in err.value.render()
    assert not (tmp_path / "model").exists()


def test_a_trainer_mirroring_other_axes_is_refused(results, tmp_path):
    folder = _copy_model(results, tmp_path, "nnUNetTrainer")
    _rewrite_checkpoint(folder, trainer_name="nnUNetTrainer",
                        inference_allowed_mirroring_axes=(1, 2))  # fmt: skip
    with pytest.raises(SegflowError, match=r"mirrors axes \[1, 2\] at inference"):
        import_nnunet(folder, tmp_path / "model")


def test_an_unknown_network_class_is_refused_by_name(results, tmp_path):
    folder = _copy_model(results, tmp_path, TRAINER)
    plans = json.loads((folder / "plans.json").read_text())
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    architecture["network_class_name"] = "my_networks.SwinUNet"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(SegflowError, match=r"network class 'my_networks\.SwinUNet' is not one"):
        import_nnunet(folder, tmp_path / "model")


def test_postprocessing_pkl_is_never_opened(results, tmp_path):
    folder = _copy_model(results, tmp_path, TRAINER)
    pkl = folder / "crossval_results_folds_0" / "postprocessing.pkl"
    assert pkl.is_file()  # nnU-Net's export zip carries it
    pkl.write_bytes(b"not a pickle: reading it would fail")
    bundle = load_bundle(import_nnunet(folder, tmp_path / "model"))
    assert bundle.postprocessing["rules"] == [{"labels": [1]}]


def test_an_ensemble_chosen_by_find_best_configuration(results, tmp_path):
    """As find_best_configuration writes it when a pair wins: both models selected and the
    postprocessing decided in the ensemble's folder."""
    dataset = tmp_path / DATASET
    shutil.copytree(results, dataset)
    info = json.loads((dataset / "inference_information.json").read_text())
    best = info["best_model_or_ensemble"]
    ensemble = next(p for p in (dataset / "ensembles").iterdir())
    best["selected_model_or_models"] = [
        {"configuration": c, "plans_identifier": "nnUNetPlans", "trainer": TRAINER}
        for c in ("2d", "3d_fullres")
    ]
    best["postprocessing_file"] = (
        f"/elsewhere/{DATASET}/ensembles/{ensemble.name}/postprocessing.pkl"
    )
    (dataset / "inference_information.json").write_text(json.dumps(info))
    decision = {"postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"] * 2,
                "postprocessing_kwargs": [{"labels_or_regions": [1, 2]},
                                          {"labels_or_regions": 2}]}  # fmt: skip
    (ensemble / "postprocessing.json").write_text(json.dumps(decision))
    bundle = load_bundle(import_nnunet(dataset, tmp_path / "model"))
    assert bundle.configurations == {"2d": (0,), "3d_fullres": (0,)}
    assert bundle.postprocessing["rules"] == [{"labels": [1, 2]}, {"labels": [2]}]


def test_a_cascade_stage_is_refused(results, tmp_path):
    """nnU-Net's 3d_cascade_fullres takes 3d_lowres's segmentations as input: refused, named."""
    source = _model_folder(results, "3d_fullres")
    folder = tmp_path / DATASET / f"{TRAINER}__nnUNetPlans__3d_cascade_fullres"
    shutil.copytree(source, folder)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres",
                                                     "previous_stage": "3d_lowres"}  # fmt: skip
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(SegflowError) as err:
        import_nnunet(folder, tmp_path / "model")
    assert "'3d_cascade_fullres' is a cascade stage (it takes the segmentations of '3d_lowres'" \
        in err.value.render()  # fmt: skip
    assert "importing nnU-Net's cascade is not supported yet" in err.value.render()
    assert not (tmp_path / "model").exists()


def test_its_postprocessing_is_nnunets_own(imported, tmp_path):
    """nnU-Net's postprocessing (its own function, applied by the fixture script) joins voxels
    touching at an edge or a corner; the imported model's rules, so applied, give its result."""
    decision = json.loads((imported / "postprocessing.json").read_text())
    assert decision["connectivity"] == "full"
    argv = ["apply-postprocessing", "--postprocessing", str(imported / "postprocessing.json"),
            "-i", str(FIXTURE / "reference" / "interop_008.nii.gz"), "-o", str(tmp_path / "pp"),
            "--dataset-json", str(imported / "dataset.json")]  # fmt: skip
    assert main(argv) == 0
    ours = read_image(tmp_path / "pp" / "interop_008.nii.gz").array[0]
    theirs = read_image(FIXTURE / "reference" / "postprocessed" / "interop_008.nii.gz").array[0]
    before = read_image(FIXTURE / "reference" / "interop_008.nii.gz").array[0]
    assert np.count_nonzero(theirs != before) == 24  # nnU-Net removed 24 voxels of label 1
    assert np.array_equal(ours, theirs)
    # Face connectivity (segflow's own decisions) would have removed far more.
    face = apply_postprocessing(before, decision["rules"], connectivity="face")
    assert np.count_nonzero(face != before) > 1000
