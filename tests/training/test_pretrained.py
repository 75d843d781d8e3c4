"""Fine-tuning: a run that starts from another run's weights (``pretrained_weights``)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from segflow.errors import SegflowError
from segflow.io.dataset import parse_dataset_json
from segflow.layout import CHECKPOINT_FINAL, CHECKPOINT_LATEST
from segflow.planning import Plans
from segflow.training.checkpoint import load_checkpoint
from segflow.training.pretrained import HEAD_PREFIX, file_sha256
from segflow.training.settings import TrainingSettings
from segflow.training.signals import TrainingInterrupted
from segflow.training.trainer import FoldTrainer

from .test_trainer import _SignalAt

TINY = TrainingSettings(
    epochs=2,
    iterations_per_epoch=2,
    val_iterations_per_epoch=1,
    checkpoint_every=1,
    deterministic=True,
    threads=1,
    num_workers=0,
)


def _trainer(experiment, out, fold=0, settings=TINY, plans=None, dataset=None, cls=FoldTrainer):
    cases = experiment.fold(fold)
    return cls(
        plans or experiment.plans,
        "3d_fullres",
        dataset or experiment.dataset,
        experiment.preprocessed["3d_fullres"],
        cases["train"],
        cases["val"],
        fold,
        out,
        settings,
    )


@pytest.fixture(scope="module")
def pretrained(tiny_experiment, tmp_path_factory):
    """``checkpoint_final.pt`` of fold 0, trained for two tiny epochs."""
    return _trainer(tiny_experiment, tmp_path_factory.mktemp("pretraining")).run()


def _prepared(trainer):
    trainer.prepare()
    return {k: v.detach().clone() for k, v in trainer.network.state_dict().items()}


def test_fine_tuning_starts_from_every_layer_but_the_heads(tiny_experiment, pretrained, tmp_path):
    settings = dataclasses.replace(TINY, pretrained_weights=str(pretrained))
    fresh = _prepared(_trainer(tiny_experiment, tmp_path / "scratch", fold=1))
    trainer = _trainer(tiny_experiment, tmp_path / "tuned", fold=1, settings=settings)
    trainer.prepare()
    trainer.load_pretrained()
    loaded = trainer.network.state_dict()
    source = load_checkpoint(pretrained)["network"]
    heads = [k for k in loaded if k.startswith(HEAD_PREFIX)]
    assert heads == [f"decoder.heads.{i}.{p}" for i in range(2) for p in ("weight", "bias")]
    for key, value in loaded.items():
        if key in heads:
            # Freshly initialized, as the same fold's run from scratch.
            assert torch.equal(value, fresh[key]), key
        else:
            assert torch.equal(value, source[key]), key
    # The finest head trained (the coarsest one has deep-supervision weight 0, nnU-Net's).
    assert not torch.equal(loaded["decoder.heads.1.weight"], source["decoder.heads.1.weight"])
    first = "encoder.stages.0.0.conv.weight"
    assert not torch.equal(loaded[first], fresh[first])
    assert trainer.pretrained == {
        "path": str(pretrained),
        "sha256": file_sha256(pretrained),
        "layers": len(loaded) - len(heads),
    }


def test_the_checkpoint_records_the_pretrained_weights(tiny_experiment, pretrained, tmp_path):
    settings = dataclasses.replace(TINY, epochs=1, pretrained_weights=str(pretrained))
    final = _trainer(tiny_experiment, tmp_path, fold=1, settings=settings).run()
    state = load_checkpoint(final)
    assert state["settings"]["pretrained_weights"] == str(pretrained)
    assert state["pretrained"]["sha256"] == file_sha256(pretrained)
    assert load_checkpoint(pretrained)["pretrained"] is None
    assert TrainingSettings.from_dict(state["settings"]) == settings


def test_an_exported_model_serves_as_pretrained_weights(tiny_experiment, pretrained, tmp_path):
    from segflow.export.exporting import inference_checkpoint
    from segflow.training.checkpoint import save_checkpoint

    state = load_checkpoint(pretrained)
    state["pretrained"] = {"path": "elsewhere.pt", "sha256": "0" * 64, "layers": 1}
    exported = save_checkpoint(tmp_path / "exported.pt", inference_checkpoint(state))
    assert load_checkpoint(exported)["pretrained"] == state["pretrained"]
    settings = dataclasses.replace(TINY, pretrained_weights=str(exported))
    trainer = _trainer(tiny_experiment, tmp_path / "run", fold=1, settings=settings)
    trainer.prepare()
    trainer.load_pretrained()
    first = "encoder.stages.0.0.conv.weight"
    assert torch.equal(trainer.network.state_dict()[first], state["network"][first])


def test_a_network_of_other_plans_is_refused_naming_every_layer(
    tiny_experiment, pretrained, tmp_path
):
    data = tiny_experiment.plans.to_dict()
    data["configurations"]["3d_fullres"]["network"]["features_per_stage"] = [4, 8, 24]
    settings = dataclasses.replace(TINY, pretrained_weights=str(pretrained))
    trainer = _trainer(tiny_experiment, tmp_path, plans=Plans.from_dict(data), settings=settings)
    trainer.prepare()
    with pytest.raises(SegflowError) as err:
        trainer.load_pretrained()
    problems = [str(p) for p in err.value.problems]
    for line in (
        "encoder.stages.2.0.conv.weight: pretrained (16, 8, 3, 3, 3), "
        "this network (24, 8, 3, 3, 3)",
        "decoder.upsamplers.0.weight: pretrained (16, 8, 2, 2, 2), this network (24, 8, 2, 2, 2)",
    ):
        assert line in problems
    assert "encoder.stages.2.1.norm.bias: pretrained (16), this network (24)" in problems
    assert len(problems) == 10  # 9 layers of the third stage and its upsampling, the hint
    assert problems[-1].startswith("hint: ") and "segflow move-plans" in problems[-1]
    assert f"{pretrained} do not fit this network (9 problems)" in err.value.summary


def test_other_input_channels_are_refused(tiny_experiment, pretrained, tmp_path):
    raw = json.loads(json.dumps(tiny_experiment.dataset.raw))
    raw["channel_names"] = {"0": "T1", "1": "T2"}
    dataset, problems = parse_dataset_json(raw)
    assert dataset is not None and not problems
    settings = dataclasses.replace(TINY, pretrained_weights=str(pretrained))
    trainer = _trainer(tiny_experiment, tmp_path, dataset=dataset, settings=settings)
    trainer.prepare()
    with pytest.raises(SegflowError) as err:
        trainer.load_pretrained()
    assert [str(p) for p in err.value.problems][:2] == [
        "input channels: the pretrained network takes 1, this dataset has 2; fine-tuning "
        "needs the same channels",
        "encoder.stages.0.0.conv.weight: pretrained (4, 1, 3, 3, 3), this network (4, 2, 3, 3, 3)",
    ]


def test_a_missing_file_is_refused_before_any_work(tiny_experiment, tmp_path):
    settings = dataclasses.replace(TINY, pretrained_weights=str(tmp_path / "nope.pt"))
    with pytest.raises(SegflowError, match=r"nope\.pt: pretrained_weights: does not exist"):
        _trainer(tiny_experiment, tmp_path, settings=settings)


def test_a_resumed_run_continues_from_its_own_checkpoint(tiny_experiment, pretrained, tmp_path):
    settings = dataclasses.replace(TINY, pretrained_weights=str(pretrained))
    with pytest.raises(TrainingInterrupted):
        _trainer(tiny_experiment, tmp_path, fold=1, settings=settings, cls=_SignalAt).run()
    latest = load_checkpoint(tmp_path / CHECKPOINT_LATEST)
    assert latest["pretrained"]["sha256"] == file_sha256(pretrained)

    class _NoPretrained(FoldTrainer):
        def load_pretrained(self):
            raise AssertionError("a resumed run loaded the pretrained weights")

    final = _trainer(tiny_experiment, tmp_path, fold=1, settings=settings, cls=_NoPretrained).run()
    assert final.name == CHECKPOINT_FINAL
    assert load_checkpoint(final)["pretrained"] == latest["pretrained"]


def test_other_pretrained_weights_are_not_resumed(tiny_experiment, pretrained, tmp_path):
    copy = tmp_path / "other.pt"
    state = load_checkpoint(pretrained)
    state["network"] = {k: v + 1 for k, v in state["network"].items()}
    torch.save(state, copy)
    settings = dataclasses.replace(TINY, pretrained_weights=str(copy))
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        _trainer(tiny_experiment, out, fold=1, settings=settings, cls=_SignalAt).run()
    state["network"] = {k: v - 2 for k, v in state["network"].items()}
    torch.save(state, copy)  # same path, other content
    trainer = _trainer(tiny_experiment, out, fold=1, settings=settings)
    trainer.run()
    assert trainer.pretrained["sha256"] == file_sha256(copy)


def test_upkern_a_k3_mednext_run_starts_a_k5_run_that_records_each_resized_kernel(
    tiny_experiment, tmp_path
):
    pytest.importorskip("monai")
    from segflow.networks import NetworkVariant

    def mednext(kernel):
        return NetworkVariant(architecture="MedNeXt", size="S", kernel_size=kernel)

    k3 = dataclasses.replace(TINY, epochs=1, network=mednext(3))
    source = _trainer(tiny_experiment, tmp_path / "k3", settings=k3).run()
    k5 = dataclasses.replace(
        k3, network=mednext(5), pretrained_weights=str(source), pretrained_resample_kernels=True
    )
    final = _trainer(tiny_experiment, tmp_path / "k5", settings=k5).run()
    resized = load_checkpoint(final)["pretrained"]["resized"]
    assert resized and all(
        before[2:] == [3, 3, 3] and after[2:] == [5, 5, 5] for _, before, after in resized
    )
    assert {name.rsplit(".", 2)[-2] for name, _, _ in resized} == {"conv1"}  # the depthwise ones
    # Without the setting, the same start is refused before training, naming the kernels.
    refused = dataclasses.replace(k5, pretrained_resample_kernels=False)
    with pytest.raises(SegflowError, match="do not fit this network"):
        _trainer(tiny_experiment, tmp_path / "refused", settings=refused).run()
