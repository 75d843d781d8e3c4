"""The trainer, really training tiny networks on tiny data (CPU)."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal

import numpy as np
import pytest
import torch

from segflow.cli import main
from segflow.errors import SegflowError
from segflow.layout import CHECKPOINT_BEST, CHECKPOINT_FINAL, CHECKPOINT_LATEST
from segflow.training.checkpoint import load_checkpoint
from segflow.training.fold import train_fold
from segflow.training.optimization import poly_learning_rate
from segflow.training.settings import TrainingSettings
from segflow.training.signals import TrainingInterrupted
from segflow.training.trainer import FoldTrainer

from .conftest import make_tiny_dataset

TINY = TrainingSettings(
    epochs=2,
    iterations_per_epoch=3,
    val_iterations_per_epoch=2,
    checkpoint_every=1,
    deterministic=True,
    threads=1,
    num_workers=0,
)


def _trainer(experiment, out, configuration="3d_fullres", settings=TINY, dataset=None, cls=None):
    fold = experiment.fold(0)
    return (cls or FoldTrainer)(
        experiment.plans,
        configuration,
        dataset or experiment.dataset,
        experiment.preprocessed[configuration],
        fold["train"],
        fold["val"],
        0,
        out,
        settings,
    )


def _weights(path):
    return load_checkpoint(path)["network"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_poly_learning_rate():
    assert poly_learning_rate(0.01, 0, 1000) == 0.01
    assert poly_learning_rate(0.01, 500, 1000) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_learning_rate(0.01, 999, 1000) == pytest.approx(0.01 * 0.001**0.9)


def test_invalid_settings_are_listed_together():
    with pytest.raises(SegflowError) as err:
        TrainingSettings(epochs=0, initial_lr=-1, oversample_foreground_percent=2)
    text = str(err.value)
    assert "epochs: must lie in [1, 1,000,000], got 0" in text
    assert "initial_lr: must be positive" in text
    assert "oversample_foreground_percent" in text


def test_a_fold_trains_and_writes_every_output(tiny_experiment, tmp_path):
    final = _trainer(tiny_experiment, tmp_path).run()
    assert final == tmp_path / CHECKPOINT_FINAL
    names = {p.name for p in tmp_path.iterdir()}
    assert {CHECKPOINT_FINAL, CHECKPOINT_BEST, "progress.csv", "progress.png"} <= names
    assert "training.log" in names
    assert CHECKPOINT_LATEST not in names  # removed once the final checkpoint exists
    assert not [n for n in names if n.startswith(".tmp-")]

    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[0]["learning_rate"]) == pytest.approx(0.01)
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.01 * 0.5**0.9)
    for row in rows:
        assert np.isfinite(float(row["train_loss"])) and np.isfinite(float(row["val_loss"]))
        assert 0 <= float(row["ema_pseudo_dice"]) <= 1
    assert "pseudo_dice_organ" in rows[0] and "pseudo_dice_lesion" in rows[0]

    state = load_checkpoint(final)
    assert state["epoch"] == 2 and state["iteration"] == 0
    assert state["configuration"] == "3d_fullres" and state["fold"] == 0
    assert state["num_input_channels"] == 1 and state["num_outputs"] == 3
    assert state["class_names"] == ["organ", "lesion"]
    assert len(state["history"]["rows"]) == 2
    log = (tmp_path / "training.log").read_text()
    assert "epoch 1: train loss" in log
    # The best checkpoint is never resumed from: weights and metadata, no optimizer state;
    # the final one keeps everything.
    best = load_checkpoint(tmp_path / CHECKPOINT_BEST)
    assert best["weights_only"] is True
    assert {"optimizer", "grad_scaler", "history", "rng"}.isdisjoint(best)
    assert {"network", "plans", "configuration", "epoch"} <= set(best)
    assert "optimizer" in state and "rng" in state
    assert (tmp_path / CHECKPOINT_BEST).stat().st_size < 0.75 * final.stat().st_size


def test_training_lowers_the_loss(tiny_experiment, tmp_path):
    settings = dataclasses.replace(TINY, epochs=6, iterations_per_epoch=4, checkpoint_every=10)
    _trainer(tiny_experiment, tmp_path, settings=settings).run()
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0] - 0.1


def test_two_deterministic_runs_give_identical_weights(tiny_experiment, tmp_path):
    a = _trainer(tiny_experiment, tmp_path / "a").run()
    b = _trainer(tiny_experiment, tmp_path / "b").run()
    _assert_same_weights(_weights(a), _weights(b))

    def without_time(folder):
        rows = list(csv.DictReader((folder / "progress.csv").open()))
        return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]

    assert without_time(tmp_path / "a") == without_time(tmp_path / "b")


class _SignalAt(FoldTrainer):
    """Sends itself SIGUSR1 during one training iteration."""

    stop_at = (1, 1)  # (epoch, iteration)

    def train_step(self, batch):
        if (self.epoch, self.iteration) == self.stop_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().train_step(batch)


def test_a_signal_writes_a_checkpoint_and_a_rerun_ends_with_the_same_weights(
    tiny_experiment, tmp_path
):
    reference = _trainer(tiny_experiment, tmp_path / "whole").run()
    interrupted = _trainer(tiny_experiment, tmp_path / "cut", cls=_SignalAt)
    with pytest.raises(TrainingInterrupted, match="SIGUSR1") as err:
        interrupted.run()
    assert err.value.signum == signal.SIGUSR1
    latest = load_checkpoint(tmp_path / "cut" / CHECKPOINT_LATEST)
    assert (latest["epoch"], latest["iteration"]) == (1, 2)  # stopped after that iteration
    assert len(latest["epoch_losses"]) == 2
    resumed = _trainer(tiny_experiment, tmp_path / "cut").run()
    _assert_same_weights(_weights(reference), _weights(resumed))

    def rows(path):
        history = load_checkpoint(path)["history"]["rows"]
        return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in history]

    assert rows(resumed) == rows(reference)
    # The signal handlers are the previous ones again.
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_checkpoints_of_other_settings_are_not_resumed(tiny_experiment, tmp_path):
    with pytest.raises(TrainingInterrupted):
        _trainer(tiny_experiment, tmp_path, cls=_SignalAt).run()
    other = dataclasses.replace(TINY, initial_lr=0.02)
    trainer = _trainer(tiny_experiment, tmp_path, settings=other)
    trainer.run()
    assert load_checkpoint(tmp_path / CHECKPOINT_FINAL)["settings"]["initial_lr"] == 0.02
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert float(rows[0]["learning_rate"]) == pytest.approx(0.02)


def test_runtime_settings_do_not_block_a_resume(tiny_experiment, tmp_path):
    with pytest.raises(TrainingInterrupted):
        _trainer(tiny_experiment, tmp_path, cls=_SignalAt).run()
    faster = dataclasses.replace(TINY, threads=2, checkpoint_every=5)
    trainer = _trainer(tiny_experiment, tmp_path, settings=faster)
    trainer.run()
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert len(rows) == 2  # epoch 0 came from the checkpoint, not trained again


def test_a_2d_configuration_trains(tiny_experiment, tmp_path):
    final = _trainer(tiny_experiment, tmp_path, configuration="2d").run()
    assert load_checkpoint(final)["configuration"] == "2d"


def test_region_based_training(tiny_experiment, tmp_path):
    regions = make_tiny_dataset({"background": 0, "whole": [1, 2], "lesion": 2})
    trainer = _trainer(tiny_experiment, tmp_path, dataset=regions)
    final = trainer.run()
    state = load_checkpoint(final)
    assert state["num_outputs"] == 2
    assert state["regions"] == [[1, 2], [2]]
    assert state["class_names"] == ["whole", "lesion"]


class _Fixed(torch.nn.Module):
    """A 'network' returning given logits (and a coarser copy for deep supervision)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, data):
        return [self.logits + self.weight, self.logits[:, :, ::2, ::2, ::2] + self.weight]


def test_validation_counts_true_and_false_positives_per_class(tiny_experiment, tmp_path):
    dataset = make_tiny_dataset({"background": 0, "organ": 1, "lesion": 2, "ignore": 3})
    trainer = _trainer(tiny_experiment, tmp_path, dataset=dataset)
    trainer._set_up_torch()
    trainer._build()
    target = torch.zeros((1, 1, 4, 4, 4), dtype=torch.int16)
    target[0, 0, 0] = 1  # 16 voxels of organ
    target[0, 0, 1, :2] = 2  # 8 voxels of lesion
    target[0, 0, 3] = 3  # ignored
    predicted = torch.zeros((4, 4, 4), dtype=torch.long)
    predicted[0, :2] = 1  # 8 organ right
    predicted[1] = 2  # 8 lesion right, 8 wrong
    predicted[3] = 1  # ignored: counts nowhere
    logits = torch.nn.functional.one_hot(predicted, 3).permute(3, 0, 1, 2)[None].float() * 10
    trainer.network = _Fixed(logits)
    trainer.scales = [(1.0, 1.0, 1.0), (0.5, 0.5, 0.5)]
    loss, counts = trainer.validation_step({"data": torch.zeros((1, 1, 4, 4, 4)), "target": target})
    assert np.isfinite(loss)
    np.testing.assert_array_equal(counts, [[8, 8], [0, 8], [8, 0]])


def test_train_fold_checks_its_inputs(tiny_experiment, tmp_path):
    common = dict(
        plans_path=tiny_experiment.plans_path,
        configuration="3d_fullres",
        dataset_json=tiny_experiment.dataset_json,
        splits_path=tiny_experiment.splits_path,
        output_folder=tmp_path / "out",
        settings=TINY,
    )
    with pytest.raises(SegflowError, match="fold 7 does not exist"):
        train_fold(fold=7, preprocessed_folder=tiny_experiment.preprocessed["3d_fullres"], **common)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SegflowError, match="6 cases of fold 0 are missing") as err:
        train_fold(fold=0, preprocessed_folder=empty, **common)
    assert str(empty / "tiny_00") in str(err.value)
    with pytest.raises(SegflowError, match="valid: 2d, 3d_fullres"):
        train_fold(
            fold=0,
            preprocessed_folder=empty,
            **{**common, "configuration": "3d_lowres"},
        )
    assert not (tmp_path / "out").exists()


def test_the_train_command(tiny_experiment, tmp_path, capsys):
    args = [
        *("train", "--plans", str(tiny_experiment.plans_path), "--configuration", "2d"),
        *("--fold", "1", "--dataset-json", str(tiny_experiment.dataset_json)),
        *("--splits", str(tiny_experiment.splits_path)),
        *("--preprocessed", str(tiny_experiment.preprocessed["2d"])),
        *("--out-dir", str(tmp_path / "fold_1")),
        *("--epochs", "1", "--iterations-per-epoch", "2", "--val-iterations-per-epoch", "1"),
        *("--threads", "1", "--num-workers", "0", "--deterministic"),
    ]
    assert main([*args, "--channels-last", "true"]) == 0
    state = load_checkpoint(tmp_path / "fold_1" / CHECKPOINT_FINAL)
    assert state["fold"] == 1 and state["settings"]["channels_last"] is True
    bad = [a if a != "2d" else "4d" for a in args]
    assert main(bad) == 1
    assert "configuration '4d' does not exist" in capsys.readouterr().err


def test_mirror_axes_reach_the_checkpoint_from_the_command(tiny_experiment, tmp_path):
    args = [
        *("train", "--plans", str(tiny_experiment.plans_path), "--configuration", "3d_fullres"),
        *("--fold", "0", "--dataset-json", str(tiny_experiment.dataset_json)),
        *("--splits", str(tiny_experiment.splits_path)),
        *("--preprocessed", str(tiny_experiment.preprocessed["3d_fullres"])),
        *("--epochs", "1", "--iterations-per-epoch", "1", "--val-iterations-per-epoch", "1"),
        *("--threads", "1", "--num-workers", "0", "--deterministic"),
    ]
    order = list(tiny_experiment.plans.transpose_forward)
    assert main([*args, "--out-dir", str(tmp_path / "some"), "--mirror-axes=0,1"]) == 0
    state = load_checkpoint(tmp_path / "some" / CHECKPOINT_FINAL)
    assert tuple(state["settings"]["mirror_axes"]) == (0, 1)
    assert state["mirror_axes"] == sorted([order.index(0), order.index(1)])
    assert main([*args, "--out-dir", str(tmp_path / "none"), "--mirror-axes="]) == 0
    assert load_checkpoint(tmp_path / "none" / CHECKPOINT_FINAL)["mirror_axes"] == []


def test_mirror_axes_are_checked():
    with pytest.raises(SegflowError, match="mirror_axes"):
        TrainingSettings(mirror_axes=[0, 3])
    with pytest.raises(SegflowError, match="mirror_axes"):
        TrainingSettings(mirror_axes=[1, 1])
    assert TrainingSettings(mirror_axes=[2, 0]).mirror_axes == (2, 0)


@pytest.mark.parametrize(
    ("configuration", "setting", "channels_last"),
    [
        ("3d_fullres", "auto", True),
        ("2d", "auto", False),
        ("3d_fullres", False, False),
        ("2d", True, True),
    ],
)
def test_memory_format_of_network_and_batches(
    tiny_experiment, tmp_path, configuration, setting, channels_last
):
    settings = dataclasses.replace(TINY, channels_last=setting, epochs=1)
    trainer = _trainer(tiny_experiment, tmp_path, configuration, settings)
    trainer.prepare()
    ndim = 3 if configuration == "3d_fullres" else 2
    fmt = torch.channels_last_3d if ndim == 3 else torch.channels_last
    weights = [p for p in trainer.network.parameters() if p.dim() == ndim + 2]
    if channels_last:
        assert all(p.is_contiguous(memory_format=fmt) for p in weights)
        assert not all(p.is_contiguous() for p in weights)
    else:
        assert all(p.is_contiguous() for p in weights)
        assert not all(p.is_contiguous(memory_format=fmt) for p in weights)
    data, _ = trainer._to_device(next(trainer.batches("train", 0, 1)))
    assert data.is_contiguous(memory_format=fmt if channels_last else torch.contiguous_format)
    trainer.run()
    assert (tmp_path / CHECKPOINT_FINAL).is_file()


def test_channels_last_setting_is_checked():
    with pytest.raises(SegflowError, match="channels_last: must be true, false or auto"):
        TrainingSettings(channels_last="yes")
