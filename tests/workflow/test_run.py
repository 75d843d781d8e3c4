"""What the rules compute (segflow.workflow), without Snakemake: paths, models, the cascade,
batches, options and inputs from a checked config, a dataset report and plans on disk."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from segflow.config import check_config, load_config_schema
from segflow.errors import SegflowError
from segflow.workflow import cache
from segflow.workflow.run import WILDCARD_PATTERNS, WorkflowRun, argument_path, planning_command

REPO = Path(__file__).resolve().parents[2]
SCHEMA = load_config_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def _configuration(spacing, previous_stage=None):
    section = {
        "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling": {"data": {"order": 3}},
    }
    if previous_stage:
        section["previous_stage"] = previous_stage
    return section


PLANS = {
    "transpose_forward": [0, 1, 2],
    "foreground_intensity_properties_per_channel": {},
    "seed": 12345,
    "configurations": {
        "2d": _configuration([1.0, 1.0]),
        "3d_fullres": _configuration([1.0, 1.0, 1.0]),
        "3d_lowres": _configuration([2.0, 2.0, 2.0]),
        # Preprocessed as 3d_fullres: it shares that folder.
        "3d_cascade_fullres": _configuration([1.0, 1.0, 1.0], previous_stage="3d_lowres"),
    },
}


def _report(cases, test_cases):
    return {
        "file_ending": ".nii.gz",
        "training_cases": [
            {"case_id": c, "images": [f"imagesTr/{c}_0000.nii.gz"], "label": f"labelsTr/{c}.nii.gz"}
            for c in cases
        ],
        "test_cases": [
            {
                "case_id": c,
                "images": [f"imagesTs/{c}_0000.nii.gz"],
                "label": f"labelsTs/{c}.nii.gz" if labelled else None,
            }
            for c, labelled in test_cases
        ],
    }


@pytest.fixture
def files(tmp_path):
    report = tmp_path / "dataset_report.json"
    report.write_text(json.dumps(_report(["a", "b", "c", "d", "e"], [("t1", True), ("t2", False)])))
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps(PLANS))
    cache.clear()
    return SimpleNamespace(report=report, plans=plans, root=tmp_path)


def _run(files, **given):
    config = check_config({"dataset": "raw/Dataset001_X", **given}, SCHEMA)
    return WorkflowRun(config, dataset_report=lambda: files.report, plans=lambda p: files.plans)


def test_the_wildcard_patterns():
    def matches(name, value):
        return re.fullmatch(WILDCARD_PATTERNS[name], value) is not None

    assert matches("ending", ".nii.gz") and matches("ending", ".tiff")
    assert not matches("ending", ".gz") and not matches("ending", "xnii")
    assert matches("fold", "12") and not matches("fold", "all")
    assert matches("batch", "batch_0003") and not matches("batch", "batch_x")
    assert not matches("configuration", "3d_fullres/fold_0")


def test_argument_paths_and_planning_commands():
    assert argument_path("-raw/x") == Path.cwd() / "-raw/x"
    assert argument_path("raw/x") == Path("raw/x")
    assert planning_command({"plans_from": None}) == "plan"
    assert planning_command({"plans_from": "other/plans.json"}) == "move-plans"


def test_paths_folds_and_test_flags(files):
    run = _run(files, training={"folds": [0, 2]})
    assert run.dataset == Path("raw/Dataset001_X")
    assert run.results == Path("results/Dataset001_X")
    assert run.layout.plans == Path("results/Dataset001_X/plans.json")
    assert run.training_folds() == [0, 2]
    assert _run(files, splits={"num_folds": 3}).training_folds() == [0, 1, 2]
    # No imagesTs folder: nothing to predict or score.
    assert (run.has_test_images, run.has_test_labels) == (False, False)
    demo = _run(files, demo={"test_cases": 2})
    assert (demo.has_test_images, demo.has_test_labels, demo.built_dataset) == (True, True, True)
    assert demo.dataset_files() == [Path("raw/Dataset001_X/dataset.json")]


def test_batches_and_their_files(files):
    run = _run(files, fingerprint={"cases_per_job": 2}, preprocessing={"cases_per_job": 3})
    assert run.fingerprint_batches() == {
        "batch_0000": ["a", "b"],
        "batch_0001": ["c", "d"],
        "batch_0002": ["e"],
    }
    assert run.preprocess_batches() == {"batch_0000": ["a", "b", "c"], "batch_0001": ["d", "e"]}
    raw = Path("raw/Dataset001_X")
    assert run.fingerprint_batch_inputs("batch_0002") == {
        "images": [raw / "imagesTr/e_0000.nii.gz"],
        "labels": [raw / "labelsTr/e.nii.gz"],
    }
    assert run.preprocess_batch_inputs("batch_0001") == {
        "cases": [
            raw / "imagesTr/d_0000.nii.gz",
            raw / "labelsTr/d.nii.gz",
            raw / "imagesTr/e_0000.nii.gz",
            raw / "labelsTr/e.nii.gz",
        ]
    }
    with pytest.raises(SegflowError, match="no preprocessing batch 'batch_0009'"):
        run.preprocess_batch_inputs("batch_0009")
    with pytest.raises(SegflowError, match="no training case 'z'"):
        run.training_case_files("z")


def test_the_cascade_and_shared_preprocessed_data(files):
    run = _run(files, training={"folds": [0, 1]})
    assert run.trained_configurations() == ["2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"]
    # The cascade's full-resolution stage trains on the 3d_fullres data.
    assert run.planned_configurations() == ["2d", "3d_fullres", "3d_lowres"]
    assert run.preprocessed_configuration("3d_cascade_fullres") == "3d_fullres"
    assert run.previous_stage_model("3d_cascade_fullres") == "3d_lowres"
    assert run.previous_stage_model("3d_fullres") is None
    results = Path("results/Dataset001_X")
    assert run.previous_stage_option("3d_cascade_fullres") == [
        f"--previous-stage={results / 'previous_stage/3d_cascade_fullres'}"
    ]
    assert run.previous_stage_option("2d") == []
    inputs = run.previous_stage_inputs("3d_cascade_fullres")
    assert inputs["predictions"] == [
        results / "crossval/3d_lowres/fold_0/predictions",
        results / "crossval/3d_lowres/fold_1/predictions",
    ]
    assert inputs["manifests"] == [results / "preprocessed/3d_fullres/batches/batch_0000.json"]
    with pytest.raises(SegflowError, match="'2d' is not a cascade stage"):
        run.previous_stage_inputs("2d")
    assert len(run.trained_models()) == 4 * 2


def test_chosen_configurations_and_experiments(files):
    run = _run(
        files,
        training={"configurations": ["3d_fullres"]},
        experiments={"base": {}, "focal": {"loss": "focal"}},
    )
    assert run.trained_configurations() == ["3d_fullres__base", "3d_fullres__focal"]
    assert run.model_experiment("3d_fullres__focal") == "focal"
    assert run.plans_configuration("3d_fullres__focal") == "3d_fullres"
    assert "--loss=focal" in run.training_options("focal")
    assert "--loss=dice_ce" in run.training_options("base")
    with pytest.raises(SegflowError, match="names no experiment of the config"):
        run.model_experiment("3d_fullres__other")
    # A configuration the planner did not plan for this dataset (2d only here).
    files.plans.write_text(
        json.dumps({**PLANS, "configurations": {"2d": PLANS["configurations"]["2d"]}})
    )
    unknown = _run(files, training={"configurations": ["2d", "3d_lowres"]})
    with pytest.raises(SegflowError, match=r"\['3d_lowres'\] not in the plans"):
        unknown.trained_configurations()


def test_planning_options(files):
    run = _run(files, planning={"gpu_memory_target_gb": 0.5, "base_features": 8}, seed=7)
    given = SimpleNamespace(dataset_json="d.json", fingerprint="f.json", source_plans=[])
    assert run.planning_options(run.config["planning"], given) == [
        "--dataset-json=d.json",
        "--fingerprint=f.json",
        "--preset=default",
        "--gpu-memory-gb=0.5",
        "--base-features=8",
        "--seed=7",
    ]
    moved = {**run.config["planning"], "plans_from": "other.json"}
    given.source_plans = "other.json"
    assert run.planning_options(moved, given) == [
        "--source-plans=other.json",
        "--target-dataset-json=d.json",
        "--target-fingerprint=f.json",
    ]


def test_test_cases_targets_and_probabilities(files):
    run = _run(files, selection={"ensembles": True})
    results = Path("results/Dataset001_X")
    assert run.raw_test_predictions() == [
        results / "predictions_raw/t1.nii.gz",
        results / "predictions_raw/t2.nii.gz",
    ]
    assert run.labelled_test_predictions() == [results / "predictions/t1.nii.gz"]
    assert run.test_labels() == [Path("raw/Dataset001_X/labelsTs/t1.nii.gz")]
    targets = {str(t.relative_to(results)) for t in run.final_targets()}
    assert {"report/dataset.html", "report/test.html", "test_metrics.csv", "predictions"} <= targets
    assert run.save_cv_probabilities and not run.keep_cv_probabilities
    assert "--save-probabilities" in run.inference_options()
    assert "--save-probabilities" not in run.prediction_options()
    assert set(run.selection_inputs()) == {"summaries", "predictions", "probabilities"}


def test_refusals_before_any_job(files, tmp_path):
    manual = tmp_path / "splits.json"
    manual.write_text("not json")
    with pytest.raises(SegflowError, match=r"config 'splits\.manual'"):
        _run(files, splits={"manual": str(manual)})
    with pytest.raises(SegflowError, match="holds no test images to pretrain on"):
        _run(files, training={"ssl_pretrain": True}, pretraining={"test_images": True})


def test_apptainer_binds_what_the_jobs_use(files, tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"")
    cpu = {"device": "cpu"}
    run = _run(files, training={**cpu, "pretrained_weights": str(weights)}, inference=cpu)
    assert run.job_paths() == [
        Path("raw/Dataset001_X"),
        Path("results/Dataset001_X"),
        str(weights),
    ]
    # Relative paths are inside the working directory, which Snakemake mounts itself.
    assert run.apptainer_args("") == f"--bind {weights}"
    # A device that may be CUDA: the host's GPUs too.
    assert _run(files).apptainer_args("") == "--nv"


def test_files_are_read_once_per_version(files):
    first = cache.json_content(files.plans)
    assert cache.json_content(files.plans) is first
    files.plans.write_text(json.dumps({**PLANS, "seed": 1}))
    os.utime(files.plans, ns=(1, 1))  # another modification time: another version
    assert cache.json_content(files.plans)["seed"] == 1
