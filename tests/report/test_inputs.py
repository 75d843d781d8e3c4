"""Reading the inputs and the NaN-safe statistics."""

from __future__ import annotations

import math

import pytest

from segflow.errors import SegflowError
from segflow.report.inputs import (
    describe,
    load_json,
    mean_foreground_dice,
    read_metrics_table,
    read_metrics_tables,
    require,
)


def test_describe_leaves_out_nan_and_counts_the_defined_cases():
    stats = describe([2.0, math.nan, 4.0, 6.0])
    assert stats.mean == pytest.approx(4.0)
    assert stats.sd == pytest.approx(2.0)  # sample sd
    assert (stats.defined, stats.total) == (3, 4)


def test_describe_of_one_or_no_defined_value():
    one = describe([math.nan, 3.0])
    assert (one.mean, one.sd, one.defined, one.total) == (3.0, None, 1, 2)
    none = describe([math.nan, math.nan])
    assert (none.mean, none.sd, none.defined, none.total) == (None, None, 0, 2)


def test_metric_table_reads_empty_cells_as_nan(crossval_csvs):
    table = read_metrics_table(crossval_csvs["2d"])
    assert table["class"].tolist()[:2] == ["<b>", "lesion"]
    assert table["hd95"].isna().sum() == 1
    assert mean_foreground_dice(table) == pytest.approx(0.65)


def test_missing_table_or_column_is_a_segflow_error(tmp_path):
    with pytest.raises(SegflowError, match="cannot write the report") as err:
        read_metrics_table(tmp_path / "absent.csv")
    assert "does not exist" in str(err.value)
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,dice\na,0.5\n", encoding="utf-8")
    with pytest.raises(SegflowError, match="missing column"):
        read_metrics_table(bad)
    with pytest.raises(SegflowError, match="no configuration"):
        read_metrics_tables({})


def test_load_json_reports_missing_and_broken_files(tmp_path):
    assert load_json({"a": 1}, "x") == ({"a": 1}, "x")
    with pytest.raises(SegflowError, match="does not exist"):
        load_json(tmp_path / "absent.json", "plans")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(SegflowError, match="not valid JSON"):
        load_json(broken, "plans")
    listed = tmp_path / "list.json"
    listed.write_text("[]", encoding="utf-8")
    with pytest.raises(SegflowError, match="JSON object"):
        load_json(listed, "plans")


def test_require_lists_every_missing_key():
    with pytest.raises(SegflowError) as err:
        require({"a": 1}, ["a", "b", "c"], "selection.json")
    assert [p.message for p in err.value.problems] == ["missing key 'b'", "missing key 'c'"]


def test_class_names_that_look_missing_stay_names(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("case_id,class,dice,hd95\nNA,None,0.5,\nb,NA,nan,2\n", encoding="utf-8")
    table = read_metrics_table(path)
    assert table["class"].tolist() == ["None", "NA"]
    assert table["case_id"].tolist() == ["NA", "b"]
    assert table["dice"].isna().tolist() == [False, True]
    assert table["hd95"].isna().tolist() == [True, False]
