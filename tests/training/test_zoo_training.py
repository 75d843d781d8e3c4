"""Zoo networks and the spatial transformer train through the same trainer (one output, or
MedNeXt's and SegResNetDS's deep supervision weighted as the U-Net's), the checkpoint records
them, and prediction rebuilds them without the config."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from segflow.inference.images import gather_input_cases, predict_images
from segflow.inference.model import load_model
from segflow.io.image import read_image
from segflow.networks import NetworkVariant, SpatialTransformer, ZooNetwork
from segflow.networks.catalog import ZOO_NAMES
from segflow.networks.zoo import TRAINING_RECIPES
from segflow.planning import Plans
from segflow.training.checkpoint import load_checkpoint
from segflow.training.fold import train_fold
from segflow.training.losses import DeepSupervisionLoss, deep_supervision_weights
from segflow.training.settings import TrainingSettings
from segflow.training.trainer import FoldTrainer

pytest.importorskip("monai")


def _settings(recipe=None, **network):
    return TrainingSettings(
        epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1, device="cpu", threads=1,
        num_workers=0, network=NetworkVariant(**network), **(recipe or {}),
    )  # fmt: skip


DEEPLY_SUPERVISED = ("MedNeXt", "SegResNetDS")


@pytest.fixture(scope="module")
def wide_plans(tiny_experiment, tmp_path_factory):
    """The tiny plans with 8-16-32 features (SegResNet's groups need a first width of 8)."""
    data = tiny_experiment.plans.to_dict()
    for conf in data["configurations"].values():
        conf["network"]["features_per_stage"] = [8, 16, 32]
    path = tmp_path_factory.mktemp("wide") / "plans.json"
    path.write_text(json.dumps(data))
    return path


def _trainer(tiny_experiment, plans_path, tmp_path, settings):
    fold = tiny_experiment.fold(0)
    return FoldTrainer(
        Plans.from_dict(json.loads(plans_path.read_text())), "3d_fullres",
        tiny_experiment.dataset, tiny_experiment.preprocessed["3d_fullres"], fold["train"],
        fold["val"], 0, tmp_path / "fold_0", settings,
    )  # fmt: skip


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_a_trainer_step_trains_each_zoo_network(name, tiny_experiment, wide_plans, tmp_path):
    trainer = _trainer(tiny_experiment, wide_plans, tmp_path, _settings(architecture=name))
    trainer.prepare()
    assert isinstance(trainer.network, ZooNetwork)
    if name in DEEPLY_SUPERVISED:  # the tiny plans' 16^3 patch, two downsamplings: 1, 1/2
        assert trainer.scales == [(1.0, 1.0, 1.0), (0.5, 0.5, 0.5)]
    else:
        assert trainer.scales == [(1.0, 1.0, 1.0)]  # one output, at the patch's resolution
    before = [p.detach().clone() for p in trainer.network.parameters()]
    batch = next(trainer.batches("train", 0, 1))
    loss = trainer.train_step(batch)
    assert math.isfinite(loss) and loss > 0
    after = list(trainer.network.parameters())
    changed = sum(not torch.equal(b, a.detach()) for b, a in zip(before, after, strict=True))
    assert changed > len(before) // 2
    val_loss, counts = trainer.validation_step(next(trainer.batches("val", 0, 1)))
    assert math.isfinite(val_loss) and counts.shape == (3, 2)


@pytest.mark.parametrize(
    "network", [{"architecture": "MedNeXt", "size": "S"}, {"architecture": "SegResNetDS"}]
)
def test_deep_supervision_trains_as_the_unets_and_lowers_the_loss(
    network, tiny_experiment, wide_plans, tmp_path
):
    recipe = TRAINING_RECIPES[network["architecture"]]
    trainer = _trainer(tiny_experiment, wide_plans, tmp_path, _settings(recipe, **network))
    trainer.prepare()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.param_groups[0]["lr"] == recipe["initial_lr"]
    # Two outputs (1, 1/2), weighted as segflow weights the U-Net's: halving, the coarsest 0.
    assert isinstance(trainer.loss, DeepSupervisionLoss)
    assert trainer.loss.weights == tuple(deep_supervision_weights(2)) == (1.0, 0.0)
    batch = next(trainer.batches("train", 0, 1))
    _, targets = trainer._to_device(batch)
    assert [tuple(t.shape[2:]) for t in targets] == [(16, 16, 16), (8, 8, 8)]
    losses = [trainer.train_step(batch) for _ in range(6)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.fixture(scope="module")
def zoo_model(tiny_experiment, wide_plans, tmp_path_factory):
    models = tmp_path_factory.mktemp("zoo_models")
    train_fold(
        plans_path=wide_plans, configuration="3d_fullres", fold=0,
        dataset_json=tiny_experiment.dataset_json, splits_path=tiny_experiment.splits_path,
        preprocessed_folder=tiny_experiment.preprocessed["3d_fullres"],
        output_folder=models / "3d_fullres" / "fold_0",
        settings=_settings(architecture="SegResNet", spatial_transformer=True),
    )  # fmt: skip
    return models / "3d_fullres"


def test_the_checkpoint_rebuilds_the_zoo_network_for_prediction(
    tiny_experiment, zoo_model, tmp_path
):
    state = load_checkpoint(zoo_model / "fold_0" / "checkpoint_final.pt")
    assert state["settings"]["network"]["architecture"] == "SegResNet"
    assert state["settings"]["network"]["spatial_transformer"] is True
    model = load_model(zoo_model)  # from the checkpoint alone: no config, no settings
    network = model.folds[0].network
    assert isinstance(network, SpatialTransformer)
    assert isinstance(network.network, ZooNetwork) and network.network.family == "SegResNet"
    trained = state["network"]
    assert all(torch.equal(network.state_dict()[k], v) for k, v in trained.items())
    raw = tiny_experiment.root / "raw"
    cases = gather_input_cases([raw / "tiny_00_0000.nii.gz"], model.dataset)
    [written] = predict_images(model, cases, tmp_path / "out")
    out = read_image(written)
    assert out.shape == read_image(raw / "tiny_00_0000.nii.gz").shape
    assert set(np.unique(out.array)) <= {0, 1, 2}


def test_fine_tuning_a_zoo_network_keeps_its_head_fresh(tiny_experiment, wide_plans, zoo_model):
    from segflow.networks import build_network
    from segflow.training.pretrained import load_pretrained_weights

    checkpoint = zoo_model / "fold_0" / "checkpoint_final.pt"
    trained = load_checkpoint(checkpoint)["network"]
    plans = Plans.from_dict(json.loads(wide_plans.read_text()))
    torch.manual_seed(99)
    network = build_network(
        plans.configuration("3d_fullres"), 1, 3,
        variant=NetworkVariant(architecture="SegResNet", spatial_transformer=True),
    )  # fmt: skip
    assert network.head_prefixes == ("network.network.conv_final.2.",)
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    record = load_pretrained_weights(network, checkpoint, 1)
    own = network.state_dict()
    heads = [k for k in own if k.startswith(network.head_prefixes)]
    assert heads == ["network.network.conv_final.2.conv.weight",
                     "network.network.conv_final.2.conv.bias"]  # fmt: skip
    assert record["layers"] == len(own) - len(heads)
    assert all(torch.equal(own[k], fresh[k]) for k in heads)
    assert all(torch.equal(own[k], trained[k]) for k in own if k not in heads)


def test_a_mednext_checkpoint_rebuilds_its_size_and_kernel_for_prediction(
    tiny_experiment, wide_plans, tmp_path
):
    folder = tmp_path / "3d_fullres"
    train_fold(
        plans_path=wide_plans, configuration="3d_fullres", fold=0,
        dataset_json=tiny_experiment.dataset_json, splits_path=tiny_experiment.splits_path,
        preprocessed_folder=tiny_experiment.preprocessed["3d_fullres"],
        output_folder=folder / "fold_0",
        settings=_settings(TRAINING_RECIPES["MedNeXt"], architecture="MedNeXt", size="S",
                           kernel_size=5),
    )  # fmt: skip
    state = load_checkpoint(folder / "fold_0" / "checkpoint_final.pt")
    assert state["settings"]["network"]["size"] == "S"
    assert state["settings"]["optimizer"] == "adamw" and state["settings"]["initial_lr"] == 1e-3
    network = load_model(folder).folds[0].network  # from the checkpoint alone
    assert isinstance(network, ZooNetwork) and network.family == "MedNeXt"
    assert network.arguments["kernel_size"] == 5 and not network.deep_supervision
    assert all(torch.equal(network.state_dict()[k], v) for k, v in state["network"].items())
    raw = tiny_experiment.root / "raw"
    cases = gather_input_cases([raw / "tiny_01_0000.nii.gz"], load_model(folder).dataset)
    [written] = predict_images(load_model(folder), cases, tmp_path / "out")
    assert read_image(written).shape == read_image(raw / "tiny_01_0000.nii.gz").shape


def test_the_weighted_coarse_outputs_train_their_own_heads(tiny_experiment, tmp_path):
    # Four planned stages at the 16^3 patch: MedNeXt downsamples three times and returns the
    # U-Net's outputs 1, 1/2, 1/4, weighted 2/3, 1/3, 0. Its heads (out_blocks coarsest
    # first: 1/8, the bottleneck, then 1/4 and 1/2) get gradients where the loss weighs them.
    data = tiny_experiment.plans.to_dict()
    conf = data["configurations"]["3d_fullres"]
    conf["network"].update(
        n_stages=4, features_per_stage=[8, 16, 32, 64], kernel_sizes=[[3] * 3] * 4,
        strides=[[1] * 3] + [[2] * 3] * 3, n_conv_per_stage=[2] * 4,
        n_conv_per_stage_decoder=[2] * 3,
    )  # fmt: skip
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(data))
    settings = _settings(TRAINING_RECIPES["MedNeXt"], architecture="MedNeXt", size="S")
    trainer = _trainer(tiny_experiment, path, tmp_path, settings)
    trainer.prepare()
    assert trainer.scales == [(1.0,) * 3, (0.5,) * 3, (0.25,) * 3]
    assert trainer.loss.weights == pytest.approx((2 / 3, 1 / 3, 0.0))
    trainer.train_step(next(trainer.batches("train", 0, 1)))
    heads = trainer.network.network.out_blocks
    assert heads[2].conv_out.weight.grad.abs().sum() > 0  # 1/2: weighted 1/3
    assert heads[1].conv_out.weight.grad is None  # 1/4: weighted 0, as the U-Net's coarsest
    assert heads[0].conv_out.weight.grad is None  # the bottleneck's: not an output
    assert trainer.network.network.out_0.conv_out.weight.grad.abs().sum() > 0
