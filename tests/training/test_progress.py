"""Per-epoch history: pseudo Dice, its EMA, the CSV and the plot."""

from __future__ import annotations

import csv
import math

import pytest

from segflow.training.progress import TrainingHistory, pseudo_dice


def test_pseudo_dice_from_counts():
    dice = pseudo_dice([8, 0, 0], [2, 0, 3], [2, 0, 1])
    assert dice[0] == pytest.approx(16 / 20)
    assert math.isnan(dice[1])  # neither reference nor prediction: no Dice
    assert dice[2] == 0.0


def _epoch(history, epoch, dice):
    return history.end_epoch(
        epoch=epoch,
        train_loss=-0.5,
        val_loss=-0.4,
        dice_per_class=dice,
        learning_rate=0.01,
        epoch_seconds=2.0,
    )


def test_ema_starts_at_the_first_mean_and_moves_a_tenth():
    history = TrainingHistory(["organ", "lesion"])
    first = _epoch(history, 0, [0.8, 0.4])
    assert first["mean_pseudo_dice"] == pytest.approx(0.6)
    assert first["ema_pseudo_dice"] == pytest.approx(0.6)
    second = _epoch(history, 1, [1.0, 0.8])
    assert second["ema_pseudo_dice"] == pytest.approx(0.9 * 0.6 + 0.1 * 0.9)
    # A class absent from every validation patch is left out of the mean.
    third = _epoch(history, 2, [0.5, math.nan])
    assert third["mean_pseudo_dice"] == pytest.approx(0.5)


def test_csv_and_plot(tmp_path):
    history = TrainingHistory(["organ", "lesion"])
    _epoch(history, 0, [0.8, math.nan])
    _epoch(history, 1, [0.9, 0.5])
    history.write(tmp_path)
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert rows[0]["pseudo_dice_lesion"] == ""
    assert float(rows[1]["pseudo_dice_organ"]) == pytest.approx(0.9)
    assert list(rows[0]) == [
        *TrainingHistory.BASE_COLUMNS,
        "pseudo_dice_organ",
        "pseudo_dice_lesion",
    ]
    assert (tmp_path / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".tmp-*"))


def test_state_round_trip_and_class_check():
    history = TrainingHistory(["a"])
    _epoch(history, 0, [0.5])
    copy = TrainingHistory(["a"])
    copy.load_state_dict(history.state_dict())
    assert copy.rows == history.rows
    with pytest.raises(ValueError, match="does not fit"):
        TrainingHistory(["b"]).load_state_dict(history.state_dict())
