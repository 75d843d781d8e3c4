"""What a fold's training reports per epoch: a CSV, a text log and a ``progress.png`` plot.

The history is plain data (lists of numbers per column), so it travels inside checkpoints and a
resumed run continues the same curves. Every file is rewritten whole and atomically at the end
of each epoch, so a killed job never leaves a half-written table.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segflow.io.atomic import atomic_path, write_text
from segflow.layout import PROGRESS_PLOT, PROGRESS_TABLE

__all__ = ["EMA_WEIGHT", "TrainingHistory", "pseudo_dice"]

#: Weight of the previous value in the exponential moving average of the pseudo Dice
#: (nnU-Net's choice: new = 0.9 * old + 0.1 * current).
EMA_WEIGHT = 0.9


def pseudo_dice(tp: Sequence[float], fp: Sequence[float], fn: Sequence[float]) -> list[float]:
    """Dice per class from counts summed over the validation patches of an epoch.

    A class absent from both reference and prediction has no Dice (NaN); it is left out of the
    mean by :meth:`TrainingHistory.end_epoch`.
    """
    dice = []
    for t, p, n in zip(tp, fp, fn, strict=True):
        denominator = 2 * t + p + n
        dice.append(float(2 * t / denominator) if denominator > 0 else math.nan)
    return dice


class TrainingHistory:
    """Per-epoch numbers of one fold's training.

    Args:
        class_names: names of the classes (or regions) the pseudo Dice is computed for.
    """

    BASE_COLUMNS = (
        "epoch",
        "train_loss",
        "val_loss",
        "mean_pseudo_dice",
        "ema_pseudo_dice",
        "learning_rate",
        "epoch_seconds",
    )

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.rows: list[dict[str, float]] = []

    @property
    def columns(self) -> list[str]:
        return [*self.BASE_COLUMNS, *(f"pseudo_dice_{name}" for name in self.class_names)]

    @property
    def ema_pseudo_dice(self) -> float | None:
        return self.rows[-1]["ema_pseudo_dice"] if self.rows else None

    def end_epoch(
        self,
        *,
        epoch: int,
        train_loss: float,
        val_loss: float,
        dice_per_class: Sequence[float],
        learning_rate: float,
        epoch_seconds: float,
    ) -> dict[str, float]:
        """Record one epoch; returns its row (with the mean and EMA pseudo Dice)."""
        present = [d for d in dice_per_class if not math.isnan(d)]
        mean = float(sum(present) / len(present)) if present else math.nan
        previous = self.ema_pseudo_dice
        if previous is None or math.isnan(previous):
            ema = mean
        elif math.isnan(mean):
            ema = previous
        else:
            ema = float(EMA_WEIGHT * previous + (1 - EMA_WEIGHT) * mean)
        row = {
            "epoch": float(epoch),
            "train_loss": float(train_loss),
            "val_loss": float(val_loss),
            "mean_pseudo_dice": mean,
            "ema_pseudo_dice": ema,
            "learning_rate": float(learning_rate),
            "epoch_seconds": float(epoch_seconds),
        }
        for name, dice in zip(self.class_names, dice_per_class, strict=True):
            row[f"pseudo_dice_{name}"] = float(dice)
        self.rows.append(row)
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["class_names"]) != self.class_names:
            raise ValueError(
                f"history of classes {state['class_names']} does not fit {self.class_names}"
            )
        self.rows = [dict(r) for r in state["rows"]]

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _format(k, v) for k, v in row.items()})
        return buffer.getvalue()

    def write(self, folder: str | os.PathLike[str], title: str | None = None) -> None:
        """Write ``progress.csv`` and ``progress.png`` (titled ``title``) into ``folder``."""
        folder = Path(folder)
        write_text(folder / PROGRESS_TABLE, self.csv_text())
        self.plot(folder / PROGRESS_PLOT, title)

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> None:
        """Losses and pseudo Dice over epochs (top), learning rate (middle), epoch time;
        ``title`` above (the run's model, fold and loss: the caption is the same for all)."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        epochs = [int(r["epoch"]) for r in self.rows]
        figure = Figure(figsize=(10, 11), layout="constrained")
        ax_loss, ax_lr, ax_time = figure.subplots(3, 1, sharex=True)
        ax_loss.plot(
            epochs, [r["train_loss"] for r in self.rows], color="tab:blue", label="train loss"
        )
        ax_loss.plot(epochs, [r["val_loss"] for r in self.rows], color="tab:red", label="val loss")
        ax_loss.set_ylabel("loss")
        ax_dice = ax_loss.twinx()
        ax_dice.plot(
            epochs,
            [r["mean_pseudo_dice"] for r in self.rows],
            color="tab:green",
            linestyle=":",
            label="pseudo Dice",
        )
        ax_dice.plot(
            epochs,
            [r["ema_pseudo_dice"] for r in self.rows],
            color="tab:green",
            label="pseudo Dice (EMA)",
        )
        ax_dice.set_ylabel("pseudo Dice")
        ax_dice.set_ylim(0, 1)
        handles = ax_loss.get_legend_handles_labels()[0] + ax_dice.get_legend_handles_labels()[0]
        ax_loss.legend(handles=handles, loc="center right")
        ax_lr.plot(epochs, [r["learning_rate"] for r in self.rows], color="black")
        ax_lr.set_ylabel("learning rate")
        ax_time.plot(epochs, [r["epoch_seconds"] for r in self.rows], color="black")
        ax_time.set_ylabel("epoch time (s)")
        ax_time.set_xlabel("epoch")
        if title:
            figure.suptitle(title)
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=80)


def _format(column: str, value: float) -> str:
    if column == "epoch":
        return str(int(value))
    if math.isnan(value):
        return ""
    return f"{value:.6g}"
