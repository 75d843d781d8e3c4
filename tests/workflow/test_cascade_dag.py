"""The cascade through the whole DAG, on volumes a few times larger than the patch: a small
GPU memory target makes the planner add 3d_lowres and 3d_cascade_fullres; the lowres folds'
cross-validation becomes the cascade's input, the cascade is trained, cross-validated,
selected against 3d_lowres and their ensemble, predicts the test case after 3d_lowres, and
its exported model (bundling 3d_lowres) predicts what the models folder predicts.

Sized for CI: one Snakemake run (a module fixture) on three seeded 12x64x64 training cases,
2 folds, one epoch of two iterations, no test-time mirroring. The shape and memory target
were chosen by calling the planner on candidate fingerprints; the fixture checks that the
plans still hold the cascade, so a planner change cannot make this test stop testing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segflow.cli import main
from segflow.demo import DEMO_LABELS, synthesize_case
from segflow.io.atomic import write_json
from segflow.io.image import read_image, write_image

pytestmark = pytest.mark.workflow

SHAPE = (12, 64, 64)
SPACING = (3.0, 1.0, 1.0)  # anisotropic: the cascade's grids differ in-plane only
# With 4 base features, the fullres patch (6x24x24) covers less than a quarter of the
# cropped median image (about 12x54x51), so the planner adds 3d_lowres (in-plane spacing
# about 1.5 mm) and the cascade; at 0.0025 GB it no longer does.
GPU_MEMORY_GB = 0.002
CASCADE = ["3d_lowres", "3d_cascade_fullres"]
NO_MIRRORING = ["--no-mirroring", "--device", "cpu", "--threads", "1"]


def make_large_dataset(root: Path, num_training: int = 3, num_test: int = 1) -> Path:
    rng = np.random.default_rng(11)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    cases = [("Tr", f"large_{i:03d}") for i in range(num_training)]
    cases += [("Ts", f"large_test_{i:03d}") for i in range(num_test)]
    for part, case_id in cases:
        image, label = synthesize_case(rng, SHAPE, SPACING)
        write_image(root / f"images{part}" / f"{case_id}_0000.nii.gz", image, SPACING)
        write_image(root / f"labels{part}" / f"{case_id}.nii.gz", label, SPACING)
    write_json(
        root / "dataset.json",
        {
            "name": "Large",
            "channel_names": {"0": "MRI"},
            "labels": DEMO_LABELS,
            "numTraining": num_training,
            "file_ending": ".nii.gz",
        },
    )
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from .conftest import run_snakemake

    dataset = make_large_dataset(tmp_path_factory.mktemp("raw") / "Dataset992_Large")
    work = tmp_path_factory.mktemp("cascade")
    config = {
        "dataset": str(dataset),
        "results": str(work / "out"),
        "planning": (
            f"{{gpu_memory_target_gb: {GPU_MEMORY_GB}, base_features: 4, max_features: 32}}"
        ),
        "preprocessing": "{cases_per_job: 10, threads: 1}",
        "splits": "{num_folds: 2}",
        "training": (
            "{configurations: [3d_lowres, 3d_cascade_fullres], epochs: 1, "
            "iterations_per_epoch: 2, val_iterations_per_epoch: 1, checkpoint_every: 1, "
            "device: cpu, threads: 1, num_workers: 0}"
        ),
        "inference": "{device: cpu, threads: 1, mirroring: false}",
    }
    # Only what the assertions read: the exported model and the test predictions (no 2d
    # preprocessing, test metrics or report pages, which other workflow tests cover).
    out = work / "out"
    run = run_snakemake(work, str(out / "model"), str(out / "predictions"), config=config)
    plans_file = out / "plans.json"
    if plans_file.exists():
        planned = json.loads(plans_file.read_text())["configurations"]
        assert set(CASCADE) <= set(planned), (
            f"the planner no longer makes the cascade for {SHAPE} at {GPU_MEMORY_GB} GB "
            f"(it planned {sorted(planned)}): choose another shape or memory target"
        )
    assert run.returncode == 0, run.output
    return out, dataset, run


def test_every_stage_of_the_cascade_runs_once(finished):
    out, _, run = finished
    plans = json.loads((out / "plans.json").read_text())["configurations"]
    assert plans["3d_cascade_fullres"]["previous_stage"] == "3d_lowres"
    counts = run.job_counts()
    for rule, count in {
        "train": 4, "validate": 4, "previous_stage": 1, "crossval": 2, "select": 1,
        "predict": 1, "export": 1,
    }.items():  # fmt: skip
        assert counts.get(rule) == count, (rule, counts)


def test_the_cascade_trains_on_the_lowres_cross_validation(finished):
    import torch

    out, _, _ = finished
    splits = json.loads((out / "splits.json").read_text())["folds"]
    folder = out / "previous_stage" / "3d_cascade_fullres"
    for fold in splits:
        for case in fold["val"]:
            stored = np.load(folder / f"{case}.npy")
            props = json.loads(
                (out / "preprocessed" / "3d_fullres" / f"{case}.props.json").read_text()
            )
            assert list(stored.shape) == props["shape_after_resampling"]
            assert set(np.unique(stored)) <= {0, 1, 2}
    state = torch.load(
        out / "models" / "3d_cascade_fullres" / "fold_0" / "checkpoint_final.pt",
        weights_only=True,
    )
    assert state["num_input_channels"] == 1 + 2  # the image and two one-hot channels
    assert state["previous_stage_labels"] == [1, 2]
    first = state["network"][next(k for k in state["network"] if k.endswith("weight"))]
    assert first.shape[1] == 3


def test_selection_compares_the_cascade_and_its_ensemble(finished):
    out, _, _ = finished
    selection = json.loads((out / "selection.json").read_text())
    names = [c["name"] for c in selection["candidates"]]
    assert names == ["3d_lowres", "3d_cascade_fullres", "3d_lowres,3d_cascade_fullres"]
    summary = json.loads((out / "crossval" / "3d_cascade_fullres" / "summary.json").read_text())
    assert summary["num_cases"] == 3


def _assert_export_predicts_what_the_workflow_predicted(out: Path, dataset: Path, tmp_path: Path):
    status = main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(tmp_path / "pred"),
                   "-m", str(out / "model"), *NO_MIRRORING])  # fmt: skip
    assert status == 0
    ours = read_image(tmp_path / "pred" / "large_test_000.nii.gz")
    workflow = read_image(out / "predictions" / "large_test_000.nii.gz")
    np.testing.assert_array_equal(ours.array, workflow.array)


def _export_cascade_alone(
    out: Path, dataset: Path, tmp_path: Path, cascade: str, *options: str
) -> dict:
    """The selection narrowed to ``cascade``, exported to ``tmp_path / "bundle"`` (and its
    zip); the bundle's manifest."""
    only = {**json.loads((out / "selection.json").read_text())}
    only["selected"] = {**only["selected"], "configurations": [cascade]}
    write_json(tmp_path / "selection.json", only)
    status = main(["export", "--dataset-json", str(dataset / "dataset.json"),
                   "--plans", str(out / "plans.json"),
                   "--fingerprint", str(out / "fingerprint.json"),
                   "--selection", str(tmp_path / "selection.json"),
                   "--postprocessing", str(out / "postprocessing.json"),
                   "--models", str(out / "models"), "--crossval", str(out / "crossval"),
                   "--out", str(tmp_path / "bundle"), "--zip", str(tmp_path / "bundle.zip"),
                   *options])  # fmt: skip
    assert status == 0
    return json.loads((tmp_path / "bundle" / "manifest.json").read_text())


def _bundle_and_models_predictions(out: Path, dataset: Path, tmp_path: Path, cascade: str):
    """The test case predicted by the imported bundle and by the models folder's
    ``cascade``: the two segmentations."""
    assert main(["import-model", str(tmp_path / "bundle.zip"), "-o", str(tmp_path / "m")]) == 0
    for model, extra in ((tmp_path / "m", []), (out / "models", ["-c", cascade])):
        status = main(["predict", "-i", str(dataset / "imagesTs"),
                       "-o", str(tmp_path / f"pred_{model.name}"), "-m", str(model), *extra,
                       "--no-postprocessing", *NO_MIRRORING])  # fmt: skip
        assert status == 0
    bundled = read_image(tmp_path / "pred_m" / "large_test_000.nii.gz")
    direct = read_image(tmp_path / "pred_models" / "large_test_000.nii.gz")
    np.testing.assert_array_equal(bundled.array, direct.array)
    return bundled, direct


def test_the_exported_cascade_predicts_what_the_models_predict(finished, tmp_path):
    out, dataset, _ = finished
    # The workflow's own export holds whatever was selected (and 3d_lowres with a cascade).
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    selected = json.loads((out / "selection.json").read_text())["selected"]["configurations"]
    assert list(manifest["configurations"]) == selected
    _assert_export_predicts_what_the_workflow_predicted(out, dataset, tmp_path)

    # An export of the cascade alone bundles 3d_lowres as its previous stage, and predicts
    # what the models folder predicts; both in the input's geometry.
    manifest = _export_cascade_alone(out, dataset, tmp_path, "3d_cascade_fullres")
    assert manifest["configurations"] == {"3d_cascade_fullres": [0, 1]}
    assert manifest["previous_stages"] == {"3d_lowres": [0, 1]}
    bundled, _ = _bundle_and_models_predictions(out, dataset, tmp_path, "3d_cascade_fullres")
    image = read_image(dataset / "imagesTs" / "large_test_000_0000.nii.gz")
    assert bundled.shape == image.shape and bundled.spacing == pytest.approx(image.spacing)


# The cascade of an experiment with its own planning: plans.json (the config's planning, a
# large memory target) has no cascade, the experiment's plans have it. Its previous stage is
# read from the experiment's plans, trained and exported with them.
EXPERIMENT = "small"


@pytest.fixture(scope="module")
def in_experiment(tmp_path_factory):
    from .conftest import run_snakemake

    dataset = make_large_dataset(tmp_path_factory.mktemp("raw") / "Dataset993_Large")
    work = tmp_path_factory.mktemp("cascade_experiment")
    out = work / "out"
    config = {
        "dataset": str(dataset),
        "results": str(out),
        "planning": "{base_features: 4, max_features: 32}",
        "experiments": (
            f"{{{EXPERIMENT}: {{planning: {{gpu_memory_target_gb: {GPU_MEMORY_GB}}}}}}}"
        ),
        "preprocessing": "{cases_per_job: 10, threads: 1}",
        "splits": "{num_folds: 2}",
        "training": (
            "{configurations: [3d_lowres, 3d_cascade_fullres], epochs: 1, "
            "iterations_per_epoch: 2, val_iterations_per_epoch: 1, checkpoint_every: 1, "
            "device: cpu, threads: 1, num_workers: 0}"
        ),
        "inference": "{device: cpu, threads: 1, mirroring: false}",
    }
    run = run_snakemake(work, str(out / "model"), str(out / "predictions"), config=config)
    assert run.returncode == 0, run.output
    return out, dataset, run


def test_an_experiments_own_plans_carry_its_cascade(in_experiment, tmp_path):
    out, dataset, run = in_experiment
    lowres, cascade = (f"{c}__{EXPERIMENT}" for c in CASCADE)
    assert not set(CASCADE) & set(json.loads((out / "plans.json").read_text())["configurations"])
    (own,) = [
        json.loads(p.read_text())
        for p in (out / "plans").glob("*.json")
        if set(CASCADE) <= set(json.loads(p.read_text())["configurations"])
    ]
    assert own["configurations"]["3d_cascade_fullres"]["previous_stage"] == "3d_lowres"
    counts = run.job_counts()
    for rule, count in {"train": 4, "validate": 4, "previous_stage": 1, "export": 1}.items():
        assert counts.get(rule) == count, (rule, counts)
    assert (out / "previous_stage" / cascade).is_dir()
    from segflow.training.checkpoint import load_checkpoint

    state = load_checkpoint(out / "models" / cascade / "fold_0" / "checkpoint_final.pt")
    assert state["num_input_channels"] == 3
    assert state["plans"]["configurations"] == own["configurations"]

    manifest = json.loads((out / "model" / "manifest.json").read_text())
    selected = json.loads((out / "selection.json").read_text())["selected"]["configurations"]
    assert list(manifest["configurations"]) == selected
    assert set(selected) <= {lowres, cascade}
    if selected == [cascade]:
        assert manifest["previous_stages"] == {lowres: [0, 1]}
    # The exported model predicts what the workflow predicted.
    _assert_export_predicts_what_the_workflow_predicted(out, dataset, tmp_path)

    # The cascade alone, exported with its experiment's plans: its previous stage comes along
    # with them, and the bundle predicts what the models folder predicts.
    (plans_path,) = [p for p in (out / "plans").glob("*.json") if json.loads(p.read_text()) == own]
    manifest = _export_cascade_alone(
        out, dataset, tmp_path, cascade, f"--model-plans={cascade}={plans_path}"
    )
    assert manifest["previous_stages"] == {lowres: [0, 1]}
    assert json.loads((tmp_path / "bundle" / "plans.json").read_text()) == own
    _bundle_and_models_predictions(out, dataset, tmp_path, cascade)
