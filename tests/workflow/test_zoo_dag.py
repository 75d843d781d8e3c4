"""The SAS parts and the model zoo in one DAG on a tiny dataset: an experiment whose folds start
from a `pretrain` job's encoder, and an experiment with a MONAI network behind a spatial
transformer, pretrained the same way and trained with the SAS augmentation; both pretrain on
the test image too. A third trains MedNeXt (size S) with deep supervision and its recipe
(AdamW, 1e-3). All cross-validate, `select` compares them and the exported model predicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.demo import make_demo_dataset
from segflow.training.checkpoint import load_checkpoint

from .conftest import run_snakemake

pytestmark = pytest.mark.workflow
pytest.importorskip("monai")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    dataset = make_demo_dataset(root / "Dataset993_TinyZoo", num_training=4, num_test=1, seed=3)
    work = tmp_path_factory.mktemp("zoo")
    config = {
        "dataset": str(dataset),
        "results": str(work / "out"),
        # base_features 8: SegResNet's group normalization needs a first width of 8.
        "planning": "{gpu_memory_target_gb: 0.25, base_features: 8, max_features: 32}",
        "preprocessing": "{cases_per_job: 10, threads: 1}",
        "splits": "{num_folds: 2}",
        "training": (
            "{configurations: [2d], folds: [0], epochs: 1, iterations_per_epoch: 2, "
            "val_iterations_per_epoch: 1, checkpoint_every: 1, device: cpu, threads: 1, "
            "num_workers: 0}"
        ),
        # The test image too (JMedSeg's SAS pretrains on unlabelled images).
        "pretraining": "{epochs: 2, iterations_per_epoch: 2, queue_size: 16, test_images: true}",
        "experiments": (
            "{ssl: {ssl_pretrain: true}, "
            "zoo: {network: {architecture: SegResNet, spatial_transformer: true}, "
            "sas_augmentation: true, ssl_pretrain: true}, "
            "mednext: {network: {architecture: MedNeXt, size: S}, optimizer: adamw, "
            "initial_lr: 0.001}}"
        ),
        "inference": "{device: cpu, threads: 1}",
    }
    run = run_snakemake(work, "-p", config=config)
    assert run.returncode == 0, run.output
    return work / "out", run


@pytest.mark.parametrize("model", ["2d__ssl", "2d__zoo"])
def test_each_models_fold_pretrains_on_its_training_cases_and_starts_from_it(finished, model):
    out, run = finished
    counts = run.job_counts()
    assert counts.get("pretrain") == 2 and counts.get("train") == 3, counts
    # One pretrain job per model and fold, on that fold's training cases only.
    ssl = out / "pretraining" / model / "fold_0" / "checkpoint_ssl.pt"
    assert (ssl.parent / "ssl_progress.png").stat().st_size > 0
    assert "--fold=0" in run.output
    assert "--queue-size=16" in run.output and "--temperature=0.07" in run.output
    state = load_checkpoint(out / "models" / model / "fold_0" / "checkpoint_final.pt")
    assert state["pretrained"]["path"] == str(ssl)
    assert state["settings"]["pretrained_weights"] == str(ssl)
    pretrained = load_checkpoint(ssl)
    assert pretrained["network_variant"] == state["settings"]["network"]
    assert pretrained["cases"] == {"fold": 0, "training": 2, "validation_excluded": 2, "test": 1}
    # The warm start in proportion: 4 training batches, ceil(0.25 x 4) = 1 warm-start batch.
    assert pretrained["budget"]["warm_start_batches"] == 1
    assert "--test-images" in run.output and "--dataset-report=" in run.output


def test_pretraining_on_test_images_needs_test_images(tmp_path):
    dataset = make_demo_dataset(tmp_path / "Dataset994_NoTest", num_training=4, num_test=0)
    config = {
        "dataset": str(dataset),
        "pretraining": "{test_images: true}",
        "experiments": "{ssl: {ssl_pretrain: true}}",
    }
    run = run_snakemake(tmp_path, "-n", config=config)
    assert run.returncode != 0
    assert "pretraining.test_images" in run.output
    assert f"{dataset / 'imagesTs'} holds no test images" in run.output


def test_the_zoo_experiment_trains_predicts_and_exports(finished):
    out, run = finished
    state = load_checkpoint(out / "models" / "2d__zoo" / "fold_0" / "checkpoint_final.pt")
    network = state["settings"]["network"]
    assert network["architecture"] == "SegResNet" and network["spatial_transformer"]
    assert state["settings"]["sas_augmentation"] is True
    assert "--sas-augmentation" in run.output and "--network-architecture=SegResNet" in run.output
    assert any(Path(out / "predictions").iterdir())
    assert (out / "model").is_dir()


def test_the_mednext_experiment_trains_with_deep_supervision_and_is_compared(finished):
    out, run = finished
    state = load_checkpoint(out / "models" / "2d__mednext" / "fold_0" / "checkpoint_final.pt")
    assert state["settings"]["network"]["architecture"] == "MedNeXt"
    assert state["settings"]["network"]["size"] == "S"
    assert state["settings"]["optimizer"] == "adamw" and state["settings"]["initial_lr"] == 1e-3
    assert "--network-architecture=MedNeXt" in run.output and "--network-size=S" in run.output
    assert (out / "crossval" / "2d__mednext" / "summary.json").is_file()
    assert "2d__mednext" in (out / "selection.json").read_text()
