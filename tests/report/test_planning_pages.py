"""The dataset and plans pages."""

from __future__ import annotations

import pytest

from segflow.errors import SegflowError
from segflow.report.planning_pages import dataset_page, plans_page


def test_dataset_page_summarizes_the_dataset(
    tmp_path, json_files, dataset_report, fingerprint, self_contained
):
    out = dataset_page(json_files["dataset_json"], dataset_report, fingerprint, tmp_path / "d.html")
    text = out.read_text(encoding="utf-8")
    self_contained(text)
    assert "<h1>Dataset Toy&lt;script&gt;</h1>" in text
    assert "two channels &amp; two classes" in text
    assert '<td>training cases</td><td class="num">3</td>' in text
    assert "2 (1 with reference labels)" in text
    # Channels with the normalization their names choose.
    assert "<td>CT</td><td>CTNormalization</td>" in text
    assert "<td>T2</td><td>ZScoreNormalization</td>" in text
    # Labels, the class called <b> escaped.
    assert '<td>&lt;b&gt;</td><td class="num">1</td><td>foreground class</td>' in text
    # Median, smallest, largest spacing and shape.
    assert "<td>2 × 0.500 × 0.500</td><td>1 × 0.500 × 0.500</td><td>3 × 1 × 1</td>" in text
    assert "<td>12 × 22 × 32</td><td>10 × 20 × 30</td><td>14 × 24 × 34</td>" in text
    assert "50.0%" in text
    # Intensities per channel.
    assert "<td>0 (CT)</td>" in text and "40.000" in text and "250.000" in text
    assert "<td>1 (T2)</td>" in text and "0.125" in text
    assert "occurs in no training label" in text


def test_dataset_page_without_intensities_or_warnings(
    tmp_path, dataset_json, dataset_report, fingerprint
):
    del fingerprint["foreground_intensity_properties_per_channel"]
    dataset_report["warnings"] = []
    text = dataset_page(dataset_json, dataset_report, fingerprint, tmp_path / "d.html").read_text()
    assert "Foreground intensities" not in text
    assert "Validation warnings" not in text


def test_dataset_page_rejects_a_broken_dataset_json(tmp_path, dataset_report, fingerprint):
    with pytest.raises(SegflowError):
        dataset_page({"name": "x"}, dataset_report, fingerprint, tmp_path / "d.html")
    assert not (tmp_path / "d.html").exists()


def test_plans_page_has_one_row_per_configuration(tmp_path, json_files, self_contained):
    text = plans_page(json_files["plans"], tmp_path / "p.html").read_text(encoding="utf-8")
    self_contained(text)
    row = (
        '<tr><td>2d</td><td>0.500 × 0.500</td><td>32 × 64</td><td class="num">12</td>'
        '<td>22 × 32</td><td>PlainConvUNet</td><td class="num">3</td><td>32, 64, 128</td>'
        "<td>CTNormalization; ZScoreNormalization (inside the nonzero mask)</td>"
        "<td>yes</td><td>–</td></tr>"
    )
    assert row in text
    assert "<td>6.5 × 11 × 16</td>" in text
    assert "<td>feeds 3d_cascade_fullres</td>" in text
    assert "<td>takes the predictions of 3d_lowres</td>" in text
    assert "<h2>3d_lowres: network stages</h2>" in text
    assert "<td>3 × 3 × 3</td><td>2 × 2 × 2</td>" in text
    assert "<td>GPU memory target (GB)</td><td>8</td>" in text


def test_plans_page_needs_configurations(tmp_path):
    with pytest.raises(SegflowError, match="cannot write the report") as err:
        plans_page({"dataset_name": "x"}, tmp_path / "p.html")
    assert "missing key 'configurations'" in str(err.value)
