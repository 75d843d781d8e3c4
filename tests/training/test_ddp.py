"""Data-parallel training of one fold (DDP) on the CPU: gloo, 2 processes.

Tolerance: the two processes compute the same float32 operations as one process on half the
batch each; what differs is the order of the sums (each rank sums its slice, then the ranks'
sums are added; DDP averages the two halves' gradients), so values agree to float32 rounding
of a few operations, and after a few SGD steps the weights drift by at most a few float32 ulps
of their size: 1e-5 relative (with 1e-6 absolute for weights near 0) holds with margin.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segflow.errors import SegflowError
from segflow.layout import CHECKPOINT_FINAL, CHECKPOINT_LATEST
from segflow.networks.variants import NetworkVariant
from segflow.training.checkpoint import load_checkpoint
from segflow.training.data_parallel import Ranks, all_reduce, free_port, threads_per_process
from segflow.training.losses import build_loss
from segflow.training.losses.ranks import summing_over_ranks
from segflow.training.settings import TrainingSettings
from segflow.training.trainer import FoldTrainer

from .conftest import make_tiny_dataset

RTOL, ATOL = 1e-5, 1e-6

SETTINGS = TrainingSettings(
    epochs=2,
    iterations_per_epoch=3,
    val_iterations_per_epoch=2,
    checkpoint_every=1,
    deterministic=True,
    threads=2,
    num_workers=0,
    device="cpu",
)


def _trainer(experiment, out, settings, configuration="2d"):
    fold = experiment.fold(0)
    return FoldTrainer(
        experiment.plans,
        configuration,
        experiment.dataset,
        experiment.preprocessed[configuration],
        fold["train"],
        fold["val"],
        0,
        out,
        settings,
    )


def _history(path):
    return load_checkpoint(path)["history"]["rows"]


def _assert_close_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=RTOL, atol=ATOL, msg=key)


def test_two_processes_train_as_one(tiny_experiment, tmp_path):
    """2d: batch Dice on, batch 2 split 1 + 1; the per-iteration losses, the validation and the
    final weights are those of one process."""
    assert tiny_experiment.plans.configuration("2d").batch_dice
    one = _trainer(tiny_experiment, tmp_path / "one", SETTINGS).run()
    two = _trainer(
        tiny_experiment, tmp_path / "two", dataclasses.replace(SETTINGS, num_processes=2)
    ).run()
    rows_one, rows_two = _history(one), _history(two)
    assert len(rows_one) == len(rows_two) == 2
    for a, b in zip(rows_one, rows_two, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key != "epoch_seconds":
                assert b[key] == pytest.approx(a[key], rel=RTOL, abs=ATOL), key
    _assert_close_weights(load_checkpoint(one)["network"], load_checkpoint(two)["network"])
    # Rank 0 alone wrote the fold's files; no checkpoint_latest.pt is left.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    assert not (tmp_path / "two" / CHECKPOINT_LATEST).exists()


def _iteration_losses(rank, size, port, experiment, out, queue):
    """Per-iteration training losses of one rank (a spawned process)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        trainer = _trainer(experiment, out, dataclasses.replace(SETTINGS, num_processes=size))
        trainer.ranks = Ranks(rank, size)
        trainer.settings = dataclasses.replace(trainer.settings, threads=1)
        trainer.prepare()
        losses = []
        for batch in trainer.batches("train", 0, 4):
            loss = trainer.train_step(batch)
            losses.append(all_reduce([loss], trainer.ranks, trainer.device)[0] / size)
        queue.put((rank, losses))
    finally:
        dist.destroy_process_group()


def test_the_per_iteration_losses_agree(tiny_experiment, tmp_path):
    single = _trainer(tiny_experiment, tmp_path / "one", SETTINGS)
    single.prepare()
    expected = [single.train_step(b) for b in single.batches("train", 0, 4)]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(
        _iteration_losses,
        args=(2, free_port(), tiny_experiment, tmp_path / "two", queue),
        nprocs=2,
        start_method="spawn",
    )
    results = dict(queue.get() for _ in range(2))
    assert results[0] == results[1]  # every rank logs the same mean
    np.testing.assert_allclose(results[0], expected, rtol=RTOL, atol=ATOL)
    # The losses change from iteration to iteration: the comparison is not of constants.
    assert len(set(np.round(expected, 4))) == 4


IGNORING = {"background": 0, "organ": 1, "lesion": 2, "ignore": 3}


def _losses():
    """Dice + CE with batch Dice, and the exponential logarithmic loss with an ignore label
    (a mean over annotated voxels and label frequencies of the whole batch)."""
    return (
        build_loss(make_tiny_dataset(), batch_dice=True),
        build_loss(make_tiny_dataset(IGNORING), name="exp_log", batch_dice=True),
    )


def _batch():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(4, 3, 6, 5)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 4, size=(4, 1, 6, 5)))
    target[2] = 0  # a sample without foreground: a per-slice batch Dice would differ most
    return logits, target


def _loss_and_grad(rank, size, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        logits, target = _batch()
        part = Ranks(rank, size).batch_slice(logits.shape[0])
        out = []
        for loss, labels in zip(_losses(), (target.clamp_max(2), target), strict=True):
            own = logits[part].clone().requires_grad_(True)
            with summing_over_ranks(size):
                value = loss(own, labels[part])
            value.backward()
            out.append((float(value.detach()), own.grad.numpy()))
        queue.put((rank, out))
    finally:
        dist.destroy_process_group()


def test_whole_batch_terms_are_summed_over_the_ranks():
    """Each rank's loss is computed on its half of the batch; the mean of the ranks' values is
    the whole batch's loss and each rank's gradient, averaged as DDP averages (divided by the
    number of ranks), is the whole batch's gradient of its half."""
    logits, target = _batch()
    expected = []
    for loss, labels in zip(_losses(), (target.clamp_max(2), target), strict=True):
        whole = logits.clone().requires_grad_(True)
        value = loss(whole, labels)
        value.backward()
        expected.append((float(value.detach()), whole.grad.numpy()))
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_loss_and_grad, args=(2, free_port(), queue), nprocs=2, start_method="spawn")
    results = dict(queue.get() for _ in range(2))
    for k, (value, grad) in enumerate(expected):
        mean = (results[0][k][0] + results[1][k][0]) / 2
        assert mean == pytest.approx(value, rel=RTOL), k
        ranks_grad = np.concatenate([results[0][k][1], results[1][k][1]]) / 2
        np.testing.assert_allclose(ranks_grad, grad, rtol=1e-4, atol=1e-7)
    # Without the sums over the ranks the batch Dice of the halves is another loss.
    halves = [
        float(_losses()[0](logits[i : i + 2], target[i : i + 2].clamp_max(2))) for i in (0, 2)
    ]
    assert abs(np.mean(halves) - expected[0][0]) > 1e-3


def test_a_batch_not_divisible_by_the_processes_is_refused(tiny_experiment, tmp_path):
    with pytest.raises(SegflowError) as err:
        _trainer(tiny_experiment, tmp_path, dataclasses.replace(SETTINGS, num_processes=3))
    text = str(err.value)
    assert "configuration 2d" in text
    assert "batch_size 2 cannot be split evenly over num_processes 3" in text
    assert not tmp_path.joinpath(CHECKPOINT_FINAL).exists()


def test_batch_norm_is_refused_on_the_cpu(tiny_experiment, tmp_path):
    """Per-process BatchNorm statistics would train another network than one process."""
    settings = dataclasses.replace(SETTINGS, num_processes=2, network=NetworkVariant(norm="batch"))
    with pytest.raises(SegflowError, match="the network uses BatchNorm"):
        _trainer(tiny_experiment, tmp_path, settings).run()
    assert not (tmp_path / CHECKPOINT_LATEST).exists()


def test_settings_of_the_processes_are_checked():
    with pytest.raises(SegflowError) as err:
        TrainingSettings(num_processes=0)
    assert "num_processes: must be at least 1, got 0" in str(err.value)
    with pytest.raises(SegflowError, match="names one GPU"):
        TrainingSettings(num_processes=2, device="cuda:1")
    with pytest.raises(SegflowError, match="needs CUDA or the CPU"):
        TrainingSettings(num_processes=2, device="mps")
    assert "num_processes" in TrainingSettings.RUNTIME_ONLY
    assert threads_per_process(4, 2) == 2
    assert threads_per_process(1, 2) == 1
    assert Ranks(1, 2).batch_slice(6) == slice(3, 6)


def _train_command(experiment, out, log):
    return [
        sys.executable,
        *("-m", "segflow", f"--log={log}", "train", f"--plans={experiment.plans_path}"),
        *("--configuration=2d", "--fold=0", f"--dataset-json={experiment.dataset_json}"),
        f"--splits={experiment.splits_path}",
        f"--preprocessed={experiment.preprocessed['2d']}",
        f"--out-dir={out}",
        *("--epochs=2", "--iterations-per-epoch=4", "--val-iterations-per-epoch=2"),
        *("--checkpoint-every=1", "--threads=2", "--num-workers=0", "--deterministic"),
        *("--device=cpu", "--num-processes=2"),
    ]


def test_a_stopped_data_parallel_run_resumes_to_the_same_weights(tiny_experiment, tmp_path):
    """`segflow train --num-processes=2` gets SIGTERM after epoch 0's checkpoint: it passes the
    signal to its ranks, they stop after the same iteration, rank 0 writes
    checkpoint_latest.pt and the command exits 128 + 15; the same command then finishes with
    the weights of an uninterrupted two-process run, bit for bit."""
    settings = dataclasses.replace(SETTINGS, num_processes=2, iterations_per_epoch=4)
    reference = _trainer(tiny_experiment, tmp_path / "whole", settings).run()
    out, log = tmp_path / "cut", tmp_path / "train.log"
    command = _train_command(tiny_experiment, out, log)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    job = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT_LATEST).exists() and job.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint_latest.pt after epoch 0"
        time.sleep(0.005)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr
    latest = load_checkpoint(out / CHECKPOINT_LATEST)
    assert latest["epoch"] >= 1
    assert not (out / CHECKPOINT_FINAL).exists()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    text = log.read_text()
    assert "2 data-parallel processes (gloo" in text
    assert "resuming from" in text  # rank 0 logs into the command's --log file
    expected, got = load_checkpoint(reference), load_checkpoint(out / CHECKPOINT_FINAL)
    for key in expected["network"]:
        assert torch.equal(expected["network"][key], got["network"][key]), key

    def rows(state):
        return [
            {k: v for k, v in r.items() if k != "epoch_seconds"} for r in state["history"]["rows"]
        ]

    assert rows(got) == rows(expected)


def test_every_process_starts_from_the_pretrained_weights(tiny_experiment, tmp_path):
    """Fine-tuning with two processes trains as fine-tuning with one: each rank loads the
    pretrained weights (DDP broadcasts parameters only when it wraps the network)."""
    short = dataclasses.replace(SETTINGS, epochs=1)
    source = _trainer(tiny_experiment, tmp_path / "source", short).run()
    tuned = dataclasses.replace(short, pretrained_weights=str(source), seed=99)
    one = _trainer(tiny_experiment, tmp_path / "one", tuned).run()
    two = _trainer(
        tiny_experiment, tmp_path / "two", dataclasses.replace(tuned, num_processes=2)
    ).run()
    _assert_close_weights(load_checkpoint(one)["network"], load_checkpoint(two)["network"])
