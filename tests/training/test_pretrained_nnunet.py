"""Fine-tuning from an nnU-Net v2 checkpoint (``pretrained_weights: .../checkpoint_final.pth``):
the checkpoint nnU-Net 2.8.1 wrote for the fixture of tests/interop."""

from __future__ import annotations

import copy
import dataclasses
import zipfile
from pathlib import Path

import pytest
import torch

from segflow.errors import SegflowError
from segflow.nnunet.checkpoint import load_nnunet_checkpoint
from segflow.nnunet.weights import segflow_name
from segflow.planning import Plans
from segflow.planning.nnunet_plans import from_nnunet_plans
from segflow.training.checkpoint import load_checkpoint
from segflow.training.pretrained import HEAD_PREFIX, file_sha256
from segflow.training.trainer import FoldTrainer

from .test_pretrained import TINY

FIXTURE = Path(__file__).resolve().parents[1] / "interop" / "data" / "nnunet_fixture"
MODEL = "Dataset901_Interop/nnUNetTrainer_segflowShort__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="module")
def nnunet_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nnunet")
    with zipfile.ZipFile(FIXTURE / "results.zip") as archive:
        archive.extract(f"{MODEL}/fold_0/checkpoint_final.pth", folder)
    return folder / MODEL / "fold_0" / "checkpoint_final.pth"


def _trainer(experiment, plans, out, settings):
    cases = experiment.fold(1)
    return FoldTrainer(plans, "3d_fullres", experiment.dataset,
                       experiment.preprocessed["3d_fullres"], cases["train"], cases["val"], 1,
                       out, settings)  # fmt: skip


def _moved_plans(experiment, checkpoint: Path) -> Plans:
    """The tiny experiment's plans with the nnU-Net model's network (what move-plans does)."""
    theirs = from_nnunet_plans(load_nnunet_checkpoint(checkpoint).plans, ["3d_fullres"])
    plans = copy.deepcopy(experiment.plans.to_dict())
    plans["configurations"]["3d_fullres"]["network"] = theirs["configurations"]["3d_fullres"][
        "network"
    ]
    return Plans.from_dict(plans)


def test_a_run_starts_from_nnunets_weights_and_trains(tiny_experiment, nnunet_checkpoint,
                                                      tmp_path):  # fmt: skip
    plans = _moved_plans(tiny_experiment, nnunet_checkpoint)
    settings = dataclasses.replace(TINY, epochs=1, pretrained_weights=str(nnunet_checkpoint))
    trainer = _trainer(tiny_experiment, plans, tmp_path / "tuned", settings)
    trainer.prepare()
    trainer.load_pretrained()
    loaded = {k: v.detach().clone() for k, v in trainer.network.state_dict().items()}
    theirs = {
        segflow_name(k): v
        for k, v in load_nnunet_checkpoint(nnunet_checkpoint).network_weights.items()
        if segflow_name(k) is not None
    }
    heads = [k for k in loaded if k.startswith(HEAD_PREFIX)]
    assert len(heads) == 4 and len(loaded) - len(heads) == 44
    for key, value in loaded.items():
        if key not in heads:
            assert torch.equal(value, theirs[key]), key
    assert trainer.pretrained["sha256"] == file_sha256(nnunet_checkpoint)
    assert trainer.pretrained["layers"] == 44
    final = trainer.run()
    state = load_checkpoint(final)
    assert state["pretrained"]["path"] == str(nnunet_checkpoint)
    first = "encoder.stages.0.0.conv.weight"
    assert state["network"][first].shape == theirs[first].shape == (4, 1, 1, 3, 3)
    assert not torch.equal(state["network"][first], theirs[first])  # it trained


def test_another_topology_is_refused_naming_every_layer(tiny_experiment, nnunet_checkpoint,
                                                        tmp_path):  # fmt: skip
    settings = dataclasses.replace(TINY, pretrained_weights=str(nnunet_checkpoint))
    trainer = _trainer(tiny_experiment, tiny_experiment.plans, tmp_path / "tuned", settings)
    trainer.prepare()
    with pytest.raises(SegflowError) as err:
        trainer.load_pretrained()
    text = err.value.render()
    assert "encoder.stages.0.0.conv.weight: pretrained (4, 1, 1, 3, 3)" in text
    assert "segflow move-plans" in text
