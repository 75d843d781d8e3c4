"""The Dice box plots: valid PNG images, reproducible, NaN-safe."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.image import imread

from segflow.errors import SegflowError
from segflow.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 400
    assert image.std() > 0  # something was drawn
    return image


def test_crossval_boxplot_is_a_png(tmp_path, crossval_csvs):
    out = plots.crossval_boxplot(crossval_csvs, tmp_path / "cv.png")
    assert out == tmp_path / "cv.png"
    _check_png(out)


def test_boxplots_are_reproducible(tmp_path, crossval_csvs):
    first = plots.crossval_boxplot(crossval_csvs, tmp_path / "a.png").read_bytes()
    second = plots.crossval_boxplot(crossval_csvs, tmp_path / "b.png").read_bytes()
    assert first == second


def test_more_configurations_make_a_wider_figure(tmp_path, crossval_csvs):
    one = _check_png(plots.crossval_boxplot({"2d": crossval_csvs["2d"]}, tmp_path / "1.png"))
    two = _check_png(plots.crossval_boxplot(crossval_csvs, tmp_path / "2.png"))
    assert two.shape[1] > one.shape[1]


def test_boxplot_leaves_out_nan_and_empty_classes(tmp_path, crossval_csvs):
    table = pd.read_csv(crossval_csvs["2d"])
    table.loc[table["class"] == "lesion", "dice"] = float("nan")
    table.loc[0, "dice"] = float("nan")
    table.to_csv(crossval_csvs["2d"], index=False)
    _check_png(plots.crossval_boxplot(crossval_csvs, tmp_path / "cv.png"))


def test_test_boxplot_is_a_png(tmp_path, test_csv):
    _check_png(plots.test_boxplot(test_csv, tmp_path / "test.png"))


def test_boxplot_needs_tables(tmp_path):
    with pytest.raises(SegflowError, match="no configuration"):
        plots.crossval_boxplot({}, tmp_path / "cv.png")
    with pytest.raises(SegflowError, match="does not exist"):
        plots.test_boxplot(tmp_path / "absent.csv", tmp_path / "test.png")
    assert not list(tmp_path.iterdir())
