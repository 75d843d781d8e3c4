"""export_model writes a self-contained, checked model folder; load_bundle checks one."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import pytest
import torch

import segflow
from segflow.errors import SegflowError
from segflow.export import export_model, inference_checkpoint, is_bundle, load_bundle
from segflow.inference.model import load_model
from segflow.training.checkpoint import load_checkpoint

from .conftest import CONFIGURATIONS, FOLDS

EXPECTED_FILES = {
    "README.md",
    "dataset.json",
    "plans.json",
    "fingerprint.json",
    "selection.json",
    "postprocessing.json",
    *(f"{c}/crossval_summary.json" for c in CONFIGURATIONS),
    *(f"{c}/fold_{k}/checkpoint_final.pt" for c in CONFIGURATIONS for k in FOLDS),
    *(f"{c}/fold_{k}/network.onnx" for c in CONFIGURATIONS for k in FOLDS),
}


@pytest.fixture(scope="module")
def bundle(experiment, tmp_path_factory):
    return export_model(
        **experiment.export_arguments(output_dir=tmp_path_factory.mktemp("out") / "model")
    )


def _files(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_the_folder_holds_the_documented_files_with_their_sha256(bundle, experiment):
    assert _files(bundle) == EXPECTED_FILES | {"manifest.json"}
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == 1
    assert manifest["segflow_version"] == segflow.__version__
    assert manifest["dataset"] == "TinyExport"
    assert manifest["configurations"] == {"2d": [0, 1], "3d_fullres": [0, 1]}
    assert set(manifest["files"]) == EXPECTED_FILES
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest, name
    for key, name in [
        ("dataset_json", "dataset.json"),
        ("plans", "plans.json"),
        ("fingerprint", "fingerprint.json"),
        ("selection", "selection.json"),
        ("postprocessing", "postprocessing.json"),
    ]:
        original = json.loads(experiment.files[key].read_text())
        assert json.loads((bundle / name).read_text()) == original, name
    for name, summary in experiment.crossval_summaries.items():
        copied = bundle / name / "crossval_summary.json"
        assert json.loads(copied.read_text()) == json.loads(summary.read_text())
    assert [p.name for p in bundle.parent.iterdir()] == ["model"]  # no temporary folders left


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_the_bundle_predicts_exactly_as_the_original_checkpoints(bundle, experiment, configuration):
    exported = load_model(bundle, configuration=configuration)
    original = load_model(experiment.root / "models", configuration=configuration)
    assert [f.fold for f in exported.folds] == list(FOLDS)
    assert exported.plans.to_dict() == original.plans.to_dict()
    assert exported.dataset == original.dataset
    ndim = 2 if configuration == "2d" else 3
    x = torch.randn(1, 1, *[16] * ndim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for mine, theirs in zip(exported.networks, original.networks, strict=True):
            expected = theirs(x)
            assert torch.equal(mine(x), expected)
    with torch.no_grad():  # the folds really differ: the comparison above means something
        assert not torch.equal(exported.networks[0](x), exported.networks[1](x))


def test_the_inference_copy_is_much_smaller_and_still_a_checkpoint(bundle, experiment):
    for name in CONFIGURATIONS:
        original = experiment.checkpoints[name][0]
        copy = bundle / name / "fold_0" / "checkpoint_final.pt"
        assert copy.stat().st_size < 0.6 * original.stat().st_size
        state = load_checkpoint(copy)
        assert {"optimizer", "grad_scaler", "rng", "history", "best_ema"}.isdisjoint(state)
        assert state["inference_only"] is True
        full = load_checkpoint(original)
        for key in ("configuration", "fold", "epoch", "mirror_axes", "plans", "dataset_json"):
            assert state[key] == full[key], key
        for key, tensor in full["network"].items():
            assert torch.equal(state["network"][key], tensor), key


def test_the_export_says_how_large_each_artifact_is(experiment, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="segflow.export")
    out = export_model(
        **experiment.export_arguments(output_dir=tmp_path / "model", zip_path=tmp_path / "m.zip")
    )
    lines = {r.getMessage().strip().split(":")[0]: r.getMessage() for r in caplog.records}
    copy = out / "2d" / "fold_0" / "checkpoint_final.pt"
    original = experiment.checkpoints["2d"][0]
    line = lines["2d/fold_0/checkpoint_final.pt"]
    assert f"{copy.stat().st_size / 1e6:.1f} MB" in line
    assert f"training checkpoint {original.stat().st_size / 1e6:.1f} MB" in line
    assert "optimizer" in line and "left out" in line
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert f"{total / 1e6:.1f} MB in {len(_files(out))} files" in lines[f"model folder {out}"]
    zipped = (tmp_path / "m.zip").stat().st_size
    assert f"{zipped / 1e6:.1f} MB" in lines[f"model zip {tmp_path / 'm.zip'}"]


def test_inference_checkpoint_names_what_an_old_checkpoint_lacks():
    with pytest.raises(KeyError, match="plans, dataset_json"):
        inference_checkpoint(
            {
                "network": {},
                "configuration": "2d",
                "fold": 0,
                "num_input_channels": 1,
                "num_outputs": 3,
                "mirror_axes": [0],
                "epoch": 1,
            }
        )


def test_every_missing_input_is_listed_and_nothing_is_written(experiment, tmp_path):
    checkpoints = {"3d_fullres": {0: experiment.checkpoints["3d_fullres"][0]}}  # no 2d, no fold 1
    arguments = experiment.export_arguments(
        checkpoints=checkpoints,
        crossval_summaries={"2d": tmp_path / "missing.json"},
        output_dir=tmp_path / "model",
    )
    with pytest.raises(SegflowError) as err:
        export_model(**arguments)
    text = str(err.value)
    for expected in (
        "configuration 2d: is selected but no checkpoints were given",
        "configuration 3d_fullres: no checkpoint of fold 1",
        "missing.json: cross-validation summary does not exist",
        "configuration 3d_fullres: no cross-validation summary",
    ):
        assert expected in text, text
    assert not (tmp_path / "model").exists()


def test_unselected_configurations_stay_out(experiment, tmp_path):
    selection = json.loads(experiment.files["selection"].read_text())
    selection["selected"] = {
        "name": "3d_fullres",
        "configurations": ["3d_fullres"],
        "folds": [1],
        "mean_foreground_dice": 0.655,
    }
    output = export_model(
        **experiment.export_arguments(selection=selection, output_dir=tmp_path / "model")
    )
    assert _files(output) == {
        "manifest.json",
        "README.md",
        "dataset.json",
        "plans.json",
        "fingerprint.json",
        "selection.json",
        "postprocessing.json",
        "3d_fullres/crossval_summary.json",
        "3d_fullres/fold_1/checkpoint_final.pt",
        "3d_fullres/fold_1/network.onnx",
    }
    model = load_model(output)  # one configuration: found without naming it
    assert model.configuration == "3d_fullres" and [f.fold for f in model.folds] == [1]


def test_a_checkpoint_of_another_fold_is_refused_and_the_old_model_kept(experiment, tmp_path):
    output = tmp_path / "model"
    output.mkdir()
    (output / "old.txt").write_text("the previous export")
    swapped = {
        **experiment.checkpoints,
        "2d": {0: experiment.checkpoints["2d"][1], 1: experiment.checkpoints["2d"][0]},
    }
    with pytest.raises(SegflowError) as err:
        export_model(**experiment.export_arguments(checkpoints=swapped, output_dir=output))
    assert "holds 2d fold 1, not 2d fold 0" in str(err.value)
    assert "holds 2d fold 0, not 2d fold 1" in str(err.value)
    assert _files(output) == {"old.txt"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_new_export_replaces_the_old_folder(experiment, tmp_path):
    output = tmp_path / "model"
    output.mkdir()
    (output / "stale.txt").write_text("left over")
    export_model(**experiment.export_arguments(output_dir=output))
    assert _files(output) == EXPECTED_FILES | {"manifest.json"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_checkpoint_of_other_labels_is_refused(experiment, tmp_path):
    dataset = json.loads(experiment.files["dataset_json"].read_text())
    dataset["labels"] = {"background": 0, "liver": 1, "tumour": 2}
    with pytest.raises(SegflowError) as err:
        export_model(**experiment.export_arguments(dataset_json=dataset, output_dir=tmp_path / "m"))
    problems = [p for p in err.value.problems if "other labels than dataset.json" in p.message]
    assert len(problems) == len(CONFIGURATIONS) * len(FOLDS)


def test_the_readme_describes_the_model(bundle):
    text = (bundle / "README.md").read_text()
    for expected in (
        "# TinyExport segmentation model",
        "| `0000` | MRI |",
        "| organ | 1 |",
        "| lesion | 2 |",
        "**2d,3d_fullres**: an ensemble of `2d` + `3d_fullres`, folds 0, 1",
        "Cross-validation mean foreground Dice: **0.6725**",
        "| `2d` | 0.6100 | 0.9000 | 0.3200 | 6 |",
        "| `3d_fullres` | 0.6550 | 0.9100 | 0.4000 | 6 |",
        "| `2d,3d_fullres` (selected) | 0.6725 | 0.9250 | 0.4200 | 6 |",
        "1. keep only the largest connected component of label(s) 1 (organ) + 2 (lesion)",
        "with postprocessing: **0.6811** (without: 0.6725)",
        "segflow predict -i IN -o OUT -m path/to/model",
        "segflow import-model model.zip -o path/to/model",
    ):
        assert expected in text, expected


def test_load_bundle_reads_a_complete_folder(bundle):
    assert is_bundle(bundle) and not is_bundle(bundle / "2d")
    loaded = load_bundle(bundle)
    assert loaded.path == bundle
    assert loaded.configurations == {"2d": (0, 1), "3d_fullres": (0, 1)}
    assert loaded.dataset.labels == {"background": 0, "organ": 1, "lesion": 2}
    assert loaded.selection["selected"]["name"] == "2d,3d_fullres"
    assert loaded.postprocessing["rules"] == [{"labels": [1, 2]}]
    assert loaded.checkpoint("2d", 1) == bundle / "2d" / "fold_1" / "checkpoint_final.pt"


def test_load_bundle_lists_every_changed_or_missing_file(bundle, tmp_path):
    copy = shutil.copytree(bundle, tmp_path / "model")
    (copy / "3d_fullres" / "fold_1" / "checkpoint_final.pt").unlink()
    with open(copy / "2d" / "fold_0" / "checkpoint_final.pt", "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    (copy / "plans.json").write_text("{}")
    with pytest.raises(SegflowError) as err:
        load_bundle(copy)
    text = str(err.value)
    assert "3d_fullres/fold_1/checkpoint_final.pt: is listed in the manifest but missing" in text
    for name in ("2d/fold_0/checkpoint_final.pt", "plans.json"):
        assert f"{name}: its sha256 differs from the manifest's" in text, text
    with pytest.raises(SegflowError) as err:  # without hashing only the missing file shows
        load_bundle(copy, verify=False)
    assert [p.message for p in err.value.problems] == ["is listed in the manifest but missing"]


def test_load_bundle_refuses_a_folder_without_or_with_a_broken_manifest(bundle, tmp_path):
    with pytest.raises(SegflowError, match=r"has no manifest\.json"):
        load_bundle(tmp_path)
    copy = shutil.copytree(bundle, tmp_path / "model")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["plans.json"]
    manifest["files"]["../outside.txt"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SegflowError) as err:
        load_bundle(copy)
    assert "file '../outside.txt' climbs out of the folder" in str(err.value)
    manifest["files"].pop("../outside.txt")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SegflowError, match=r"does not list the required plans\.json"):
        load_bundle(copy)


@pytest.mark.parametrize(
    ("ending", "channels", "expected"),
    [
        (".png", {"0": "R", "1": "G", "2": "B"},
         "Each case is one image file `<case>_0000.png` holding its 3 channels (an RGB image), "
         "or 3 single-channel files `<case>_<XXXX>.png`, one per channel"),
        (".nii.gz", {"0": "T1", "1": "T2"},
         "Each case is 2 image files `<case>_<XXXX>.nii.gz`, one per channel"),
        (".nii.gz", {"0": "CT"}, "Each case is one image file `<case>_0000.nii.gz`, the channel:"),
    ],
)  # fmt: skip
def test_the_readme_says_how_a_case_comes_in_files(ending, channels, expected):
    from segflow.export.readme import render_readme
    from segflow.io.dataset import parse_dataset_json

    raw = {"channel_names": channels, "labels": {"background": 0, "vessel": 1},
           "numTraining": 20, "file_ending": ending}  # fmt: skip
    dataset, problems = parse_dataset_json(raw)
    assert not problems
    selection = {"selected": {"name": "2d", "configurations": ["2d"], "folds": [0]}}
    text = render_readme(dataset, "DRIVE", selection, {"rules": []}, {"2d": (0,)}, "model")
    assert expected in " ".join(text.split())
