"""A fold trained with a network variant, another loss and another optimizer: the settings
reach the trainer, the checkpoint records them, and prediction rebuilds the same network
without being told."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from segflow.cli import build_parser
from segflow.errors import SegflowError
from segflow.inference.images import gather_input_cases, predict_images
from segflow.inference.model import load_model
from segflow.io.image import read_image
from segflow.networks import NETWORKS, NetworkVariant, SpatialTransformer, build_network
from segflow.networks.catalog import ARCHITECTURE_NAMES
from segflow.settings import from_arguments, to_arguments
from segflow.training.checkpoint import load_checkpoint
from segflow.training.fold import train_fold
from segflow.training.losses import LOSSES
from segflow.training.optimization import build_optimizer, parameter_groups, set_learning_rate
from segflow.training.settings import LOSS_NAMES, TrainingSettings
from segflow.training.trainer import FoldTrainer

VARIANT = NetworkVariant(encoder_scale=2, norm="group", groups=4)
SETTINGS = TrainingSettings(
    epochs=1, iterations_per_epoch=2, val_iterations_per_epoch=1, device="cpu", threads=1,
    num_workers=0, network=VARIANT, loss="exp_log", optimizer="adamw", weight_decay=0.01,
    loss_parameters={"gamma_dice": 0.5, "weight_ce": 0.4},
)  # fmt: skip


def test_the_light_name_lists_match_the_registries():
    assert tuple(LOSSES) == LOSS_NAMES
    assert tuple(NETWORKS) == ARCHITECTURE_NAMES


def test_the_optimizers():
    params = [nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(params, TrainingSettings())
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.99
    adamw = build_optimizer(params, TrainingSettings(optimizer="adamw", weight_decay=0.01))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["lr"] == 0.01 and adamw.defaults["weight_decay"] == 0.01
    with pytest.raises(SegflowError, match="optimizer: must be one of sgd, adamw"):
        TrainingSettings(optimizer="adam")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_localization_network_learns_at_its_own_rate(optimizer):
    conv = nn.Conv2d(1, 2, 3, padding=1)
    plain = parameter_groups(conv)
    assert [g["lr_scale"] for g in plain] == [1.0] and len(plain[0]["params"]) == 2
    stn = SpatialTransformer(conv, 2, in_channels=1)
    groups = parameter_groups(stn)
    localization = {id(p) for p in stn.localization.parameters()}
    assert [g["lr_scale"] for g in groups] == [0.01, 1.0]
    assert {id(p) for p in groups[0]["params"]} == localization
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in conv.parameters()}
    opt = build_optimizer(groups, TrainingSettings(optimizer=optimizer, initial_lr=0.02))
    assert [g["lr"] for g in opt.param_groups] == [0.0002, 0.02]
    set_learning_rate(opt, 0.005)  # the poly schedule's rate of an epoch
    assert [g["lr"] for g in opt.param_groups] == [0.00005, 0.005]
    # An optimizer state saved before the groups had a scale has none: the factor is 1.
    del opt.param_groups[1]["lr_scale"]
    set_learning_rate(opt, 0.004)
    assert opt.param_groups[1]["lr"] == 0.004


def test_the_train_command_takes_the_variant_loss_and_optimizer():
    base = ["train", "--plans", "p", "--configuration", "2d", "--fold", "0", "--dataset-json",
            "d", "--splits", "s", "--preprocessed", "x", "--out-dir", "o"]  # fmt: skip
    flags = to_arguments(TrainingSettings, SETTINGS)
    assert "--network-norm=group" in flags and "--network-encoder-scale=2" in flags
    assert "--loss=exp_log" in flags and "--optimizer=adamw" in flags
    assert '--loss-parameters={"gamma_dice": 0.5, "weight_ce": 0.4}' in flags
    parsed = from_arguments(TrainingSettings, build_parser().parse_args(base + flags))
    assert parsed == SETTINGS
    # A config section gives the variant as a nested mapping.
    values = {"network": {"axial_attention": True, "norm": "batch"}, "loss": "focal"}
    parsed = from_arguments(
        TrainingSettings, build_parser().parse_args(base + to_arguments(TrainingSettings, values))
    )
    assert parsed.network == NetworkVariant(axial_attention=True, norm="batch")
    assert parsed.loss == "focal"


def test_the_trainer_builds_what_the_settings_name(tiny_experiment, tmp_path):
    fold = tiny_experiment.fold(0)
    trainer = FoldTrainer(
        tiny_experiment.plans, "3d_fullres", tiny_experiment.dataset,
        tiny_experiment.preprocessed["3d_fullres"], fold["train"], fold["val"], 0,
        tmp_path / "fold_0", SETTINGS,
    )  # fmt: skip
    trainer.prepare()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    norms = [m for m in trainer.network.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 4 for m in norms)
    # The encoder's first stage is twice the planned 4 features wide.
    first = next(m for m in trainer.network.modules() if isinstance(m, nn.Conv3d))
    assert first.out_channels == 8
    assert "ExpLog" in type(trainer.loss.loss).__name__
    # The config's loss parameters, the others at the loss's defaults (KiTS19's).
    loss = trainer.loss.loss
    exponents_and_weights = (loss.gamma_dice, loss.weight_ce, loss.gamma_ce, loss.weight_dice)
    assert exponents_and_weights == (0.5, 0.4, 0.3, 0.8)
    # progress.png's title says which loss this run trained with, not the default's name.
    assert trainer._progress_title() == (
        "3d_fullres fold 0; loss: exp_log, exponential logarithmic loss (Wong et al. 2018), "
        "as in the KiTS19 seed (gamma_dice 0.5, weight_ce 0.4)"
    )


@pytest.fixture(scope="module")
def variant_model(tiny_experiment, tmp_path_factory):
    models = tmp_path_factory.mktemp("variant_models")
    train_fold(
        plans_path=tiny_experiment.plans_path, configuration="3d_fullres", fold=0,
        dataset_json=tiny_experiment.dataset_json, splits_path=tiny_experiment.splits_path,
        preprocessed_folder=tiny_experiment.preprocessed["3d_fullres"],
        output_folder=models / "3d_fullres" / "fold_0", settings=SETTINGS,
    )  # fmt: skip
    return models / "3d_fullres"


def test_the_checkpoint_records_the_settings(variant_model):
    state = load_checkpoint(variant_model / "fold_0" / "checkpoint_final.pt")
    recorded = TrainingSettings.from_dict(state["settings"])
    assert recorded == SETTINGS
    assert state["settings"]["network"]["norm"] == "group"


def test_prediction_rebuilds_the_variant_from_the_checkpoint(
    tiny_experiment, variant_model, tmp_path
):
    model = load_model(variant_model)
    network = model.folds[0].network
    expected = build_network(
        tiny_experiment.plans.configuration("3d_fullres"), 1, 3, deep_supervision=False,
        variant=VARIANT,
    )  # fmt: skip
    assert sum(p.numel() for p in network.parameters()) == sum(
        p.numel() for p in expected.parameters()
    )
    assert any(isinstance(m, nn.GroupNorm) for m in network.modules())
    raw = tiny_experiment.root / "raw"
    cases = gather_input_cases([raw / "tiny_00_0000.nii.gz"], model.dataset)
    [written] = predict_images(model, cases, tmp_path / "out")
    out = read_image(written)
    assert out.shape == read_image(raw / "tiny_00_0000.nii.gz").shape
    assert set(np.unique(out.array)) <= {0, 1, 2}


def test_a_checkpoint_without_a_variant_is_the_planned_network(variant_model, tmp_path):
    # Checkpoints written before variants existed record no `network`.
    state = load_checkpoint(variant_model / "fold_0" / "checkpoint_final.pt")
    settings = dict(state["settings"])
    del settings["network"]
    plain = dataclasses.replace(SETTINGS, network=NetworkVariant())
    assert TrainingSettings.from_dict(settings) == plain
