"""The whole DAG on a tiny dataset with test images: two configurations trained and
cross-validated, model selection with their ensemble, postprocessing, test predictions in the
input's geometry, evaluation, the exported model (which `segflow predict` and
`segflow import-model` use elsewhere to the same result), the report; then a second run does
nothing and a postprocessing-only change reruns only postprocessing and what follows it."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from segflow.cli import main
from segflow.demo import make_demo_dataset
from segflow.io.image import read_image

pytestmark = pytest.mark.workflow

CONFIGURATIONS = ["2d", "3d_fullres"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    return make_demo_dataset(root / "Dataset993_TinyFull", num_training=4, num_test=2, seed=4)


def _config(results: Path, dataset: Path, largest_component: bool = True) -> dict[str, str]:
    return {
        "dataset": str(dataset),
        "results": str(results),
        "planning": "{gpu_memory_target_gb: 0.25, base_features: 4, max_features: 32}",
        "preprocessing": "{cases_per_job: 10, threads: 1}",
        "splits": "{num_folds: 2}",
        "training": (
            "{epochs: 1, iterations_per_epoch: 2, val_iterations_per_epoch: 1, "
            "checkpoint_every: 1, device: cpu, threads: 1, num_workers: 0}"
        ),
        "inference": "{device: cpu, threads: 1}",
        "postprocessing": f"{{largest_component: {str(largest_component).lower()}}}",
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, dataset):
    """One full run, shared by the tests below (they only read its results)."""
    from .conftest import run_snakemake

    work = tmp_path_factory.mktemp("full")
    config = _config(work / "out", dataset)
    run = run_snakemake(work, config=config)
    assert run.returncode == 0, run.output
    return work, config, run


def test_every_stage_runs_once(finished):
    _, _, run = finished
    counts = run.job_counts()
    for rule, count in {
        "train": 4, "validate": 4, "crossval": 2, "select": 1, "postprocess": 1,
        "predict": 2, "apply_postprocessing": 1, "evaluate": 1, "export": 1,
        "report_pages": 1, "report_test_pages": 1,
    }.items():  # fmt: skip
        assert counts.get(rule) == count, (rule, counts)


def test_the_run_ends_with_its_numbers_paths_and_the_report_command(finished):
    work, _, run = finished
    out = work / "out"
    assert f"segflow: the run finished; its results are in {out}/" in run.output
    selected = json.loads((out / "selection.json").read_text())["selected"]
    dice = selected["mean_foreground_dice"]
    assert f"selected: {selected['name']} (cross-validation Dice {dice:.3f}" in run.output
    assert re.search(r"test set \(2 cases\): mean foreground Dice \d\.\d{3} \(", run.output)
    assert f"snakemake --report {out / 'report.html'}" in run.output
    # Each training job's epochs and log reach the console, named by model and fold.
    assert "2d fold 1, epoch 0: train loss" in run.output and "1 of 1 epochs done" in run.output
    assert f"log: {out / 'models' / '3d_fullres' / 'fold_0' / 'training.log'}" in run.output


def test_selection_compares_both_configurations_and_their_ensemble(finished):
    work, _, _ = finished
    out = work / "out"
    selection = json.loads((out / "selection.json").read_text())
    names = [c["name"] for c in selection["candidates"]]
    assert names == ["2d", "3d_fullres", "2d,3d_fullres"]
    for candidate in selection["candidates"][:2]:
        summary = json.loads((out / "crossval" / candidate["name"] / "summary.json").read_text())
        assert candidate["mean_foreground_dice"] == summary["mean_foreground_dice"]
    best = max(c["mean_foreground_dice"] for c in selection["candidates"])
    assert selection["selected"]["mean_foreground_dice"] == best
    assert selection["selected"]["folds"] == [0, 1]
    # The winner's cross-validation segmentations: one per training case.
    assert len(list((out / "selection" / "crossval_predictions").glob("*.nii.gz"))) == 4
    # The probabilities were temporary: gone once select had read them.
    for conf in CONFIGURATIONS:
        for fold in (0, 1):
            assert not (out / "crossval" / conf / f"fold_{fold}" / "probabilities").exists()


def test_postprocessing_decision_is_recorded(finished):
    work, _, _ = finished
    decision = json.loads((work / "out" / "postprocessing.json").read_text())
    assert decision["num_cases"] == 4
    assert [s["target"] for s in decision["steps"]] == ["foreground", "organ", "lesion"]
    kept = [{"labels": s["labels"]} for s in decision["steps"] if s["kept"]]
    assert decision["rules"] == kept
    assert decision["final"]["mean_foreground_dice"] >= decision["baseline"]["mean_foreground_dice"]


def test_test_predictions_have_the_input_geometry_and_are_scored(finished, dataset):
    work, _, _ = finished
    out = work / "out"
    for case in ("demo_test_000", "demo_test_001"):
        image = read_image(dataset / "imagesTs" / f"{case}_0000.nii.gz")
        prediction = read_image(out / "predictions" / f"{case}.nii.gz")
        assert prediction.shape == image.shape
        assert prediction.spacing == pytest.approx(image.spacing)
        assert prediction.origin == pytest.approx(image.origin)
        assert prediction.direction == pytest.approx(image.direction)
        assert set(np.unique(prediction.array)) <= {0, 1, 2}
    with open(out / "test_metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["case_id"], r["class"]) for r in rows) == sorted(
        (c, k) for c in ("demo_test_000", "demo_test_001") for k in ("organ", "lesion")
    )
    summary = json.loads((out / "test_summary.json").read_text())
    mean_dice = np.mean([np.mean([float(r["dice"]) for r in rows if r["class"] == k])
                         for k in ("organ", "lesion")])  # fmt: skip
    assert summary["mean_foreground_dice"] == pytest.approx(mean_dice, abs=1e-5)


def test_the_exported_model_predicts_what_the_workflow_predicted(finished, dataset, tmp_path):
    work, _, _ = finished
    out = work / "out"
    selection = json.loads((out / "selection.json").read_text())
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert list(manifest["configurations"]) == selection["selected"]["configurations"]

    # From the zip, unpacked elsewhere, as on another machine.
    assert main(["import-model", str(out / "model.zip"), "-o", str(tmp_path / "model")]) == 0
    status = main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(tmp_path / "pred"),
                   "-m", str(tmp_path / "model"), "--device", "cpu", "--threads", "1"])  # fmt: skip
    assert status == 0
    for case in ("demo_test_000", "demo_test_001"):
        ours = read_image(tmp_path / "pred" / f"{case}.nii.gz").array
        workflow = read_image(out / "predictions" / f"{case}.nii.gz").array
        np.testing.assert_array_equal(ours, workflow)


def test_the_report_is_built(finished, tmp_path):
    from .conftest import run_snakemake

    work, config, _ = finished
    report = tmp_path / "report.zip"
    run = run_snakemake(work, "--report", str(report), config=config)
    assert run.returncode == 0, run.output
    import zipfile

    with zipfile.ZipFile(report) as archive:
        names = "\n".join(archive.namelist())
    for page in ("dataset.html", "plans.html", "crossval.html", "crossval_dice.png",
                 "selection.html", "test.html", "test_dice.png", "progress.png"):  # fmt: skip
        assert page in names, page


def test_a_second_run_does_nothing_and_postprocessing_changes_rerun_only_what_follows(finished):
    from .conftest import run_snakemake

    work, config, _ = finished
    again = run_snakemake(work, "--dry-run", config=config)
    assert again.returncode == 0 and "Nothing to be done" in again.output, again.output

    changed = _config(work / "out", Path(config["dataset"]), largest_component=False)
    rerun = run_snakemake(work, config=changed)
    assert rerun.returncode == 0, rerun.output
    assert rerun.job_counts() == {
        "postprocess": 1, "apply_postprocessing": 1, "evaluate": 1, "export": 1,
        "report_pages": 1, "report_test_pages": 1, "all": 1,
    }  # fmt: skip
    decision = json.loads((work / "out" / "postprocessing.json").read_text())
    assert decision["rules"] == [] and decision["steps"] == []


@pytest.mark.parametrize("change", ["precision: bfloat16", "backend: openvino"])
def test_a_change_of_precision_or_backend_reruns_validation_and_test_prediction(finished, change):
    from .conftest import run_snakemake

    work, config, _ = finished
    changed = config | {"inference": f"{{device: cpu, threads: 1, {change}}}"}
    plan = run_snakemake(work, "--dry-run", "--printshellcmds", config=changed)
    assert plan.returncode == 0, plan.output
    counts = plan.job_counts()
    assert counts["validate"] == 4 and counts["predict"] == 2, counts  # 2 configurations x 2 folds
    commands = [line for line in plan.output.splitlines()
                if " validate-fold " in line or " predict -i " in line]  # fmt: skip
    flag = "--" + change.replace(": ", "=")
    assert len(commands) == 6 and all(flag in c for c in commands), commands
