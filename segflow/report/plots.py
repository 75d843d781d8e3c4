"""The report's figures: Dice box plots per class, for cross-validation and the test set.

Figures are drawn with matplotlib's object API on the Agg canvas, so no display is needed and
the global backend is left alone. The jitter of the case points is seeded: the same metrics
give the same image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from segflow.io.atomic import atomic_path
from segflow.report.inputs import classes_of, read_metrics_table, read_metrics_tables

__all__ = ["crossval_boxplot", "test_boxplot"]

logger = logging.getLogger(__name__)

_DPI = 100
_JITTER_SEED = 0


def _dice_boxplot(tables: Mapping[str, pd.DataFrame], out_png: Path, title: str) -> Path:
    """One group of boxes per class, one box per table (configuration) inside each group,
    with every case as a jittered point. NaN Dice values are left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    classes = list(dict.fromkeys(c for frame in tables.values() for c in classes_of(frame)))
    names = list(tables)
    width = 0.8 / len(names)
    figure = Figure(figsize=(min(4 + 0.7 * len(classes) * len(names), 24), 5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    colors = [f"C{i % 10}" for i in range(len(names))]
    rng = np.random.default_rng(_JITTER_SEED)
    for c_index, name in enumerate(classes):
        for t_index, (table_name, color) in enumerate(zip(names, colors, strict=True)):
            frame = tables[table_name]
            dice = frame.loc[frame["class"] == name, "dice"].to_numpy(dtype=np.float64)
            dice = dice[~np.isnan(dice)]
            if not dice.size:
                continue
            position = c_index + (t_index - (len(names) - 1) / 2) * width
            axes.boxplot(
                dice,
                positions=[position],
                widths=width * 0.8,
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": color, "alpha": 0.35, "edgecolor": color},
                medianprops={"color": color, "linewidth": 2},
                whiskerprops={"color": color},
                capprops={"color": color},
            )
            jitter = rng.uniform(-width * 0.25, width * 0.25, dice.size)
            axes.scatter(position + jitter, dice, s=12, color=color, alpha=0.8, zorder=3)
    axes.set_xticks(range(len(classes)), classes, rotation=30 if len(classes) > 6 else 0)
    axes.set_xlim(-0.5, len(classes) - 0.5)
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("Dice")
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    if len(names) > 1:
        handles = [
            Patch(facecolor=color, alpha=0.5, label=f"{n} ({tables[n]['case_id'].nunique()} cases)")
            for n, color in zip(names, colors, strict=True)
        ]
        axes.legend(handles=handles, loc="lower left", fontsize="small")
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI, metadata={"Software": None})
    logger.info("wrote %s", out_png)
    return out_png


def crossval_boxplot(
    metrics_csvs: Mapping[str, str | os.PathLike[str]], out_png: str | os.PathLike[str]
) -> Path:
    """Draw the cross-validation Dice of every case as box plots per class, one box per
    configuration side by side.

    Args:
        metrics_csvs: configuration name -> its merged ``crossval/<configuration>/metrics.csv``.
        out_png: the image to write.

    Returns:
        ``out_png``.

    Raises:
        SegflowError: a table is missing or malformed.
    """
    tables = read_metrics_tables(metrics_csvs)
    return _dice_boxplot(tables, Path(out_png), "Cross-validation Dice per class")


def test_boxplot(test_metrics_csv: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Draw the test-set Dice of every case as one box plot per class.

    Args:
        test_metrics_csv: ``test_metrics.csv``.
        out_png: the image to write.

    Returns:
        ``out_png``.

    Raises:
        SegflowError: the table is missing or malformed.
    """
    table = read_metrics_table(test_metrics_csv)
    return _dice_boxplot({"test": table}, Path(out_png), "Test-set Dice per class")


# Its name starts with "test": keep pytest from collecting it where a test module imports it.
test_boxplot.__test__ = False  # type: ignore[attr-defined]
