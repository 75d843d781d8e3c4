from __future__ import annotations

import json

import pytest

from segflow.errors import SegflowError
from segflow.training.splits import make_splits

IDS = [f"case_{i:03d}" for i in range(23)]

# nnU-Net v2.8.1's folds for these ids with its default seed, obtained once with
# nnunetv2.utilities.crossval_split.generate_crossval_split(IDS, 12345, 5) (val sets, sorted).
NNUNET_VAL_FOLDS = [
    ["case_003", "case_008", "case_010", "case_017", "case_019"],
    ["case_000", "case_007", "case_012", "case_015", "case_016"],
    ["case_006", "case_011", "case_014", "case_018", "case_020"],
    ["case_009", "case_013", "case_021", "case_022"],
    ["case_001", "case_002", "case_004", "case_005"],
]


def test_default_folds_are_nnunets_and_partition_the_cases():
    splits = make_splits(list(reversed(IDS)), num_folds=5, seed=12345)
    assert splits["source"] == "kfold" and splits["num_folds"] == 5 and splits["warnings"] == []
    assert [sorted(f["val"]) for f in splits["folds"]] == NNUNET_VAL_FOLDS
    for fold in splits["folds"]:
        assert sorted(fold["train"] + fold["val"]) == IDS


def test_another_seed_gives_other_folds():
    assert make_splits(IDS, 5, 1)["folds"] != make_splits(IDS, 5, 12345)["folds"]
    assert make_splits(IDS, 3, 7)["folds"] == make_splits(IDS, 3, 7)["folds"]


def test_grouped_folds_keep_a_patient_together(tmp_path):
    table = tmp_path / "groups.tsv"
    table.write_text("case_id\tgroup\n" + "".join(f"{c}\tp{i // 3}\n" for i, c in enumerate(IDS)))
    splits = make_splits(IDS, num_folds=4, seed=0, groups=table)
    assert splits["source"] == "grouped"
    fold_of = {c: k for k, f in enumerate(splits["folds"]) for c in f["val"]}
    assert sorted(fold_of) == IDS
    for i in range(0, 23, 3):
        assert len({fold_of[c] for c in IDS[i : i + 3]}) == 1


def test_a_groups_table_missing_cases_is_an_error(tmp_path):
    table = tmp_path / "groups.csv"
    table.write_text("case_id,group\ncase_000,a\n")
    with pytest.raises(SegflowError) as err:
        make_splits(IDS, 5, 0, groups=table)
    assert "case_001: no group given for this case" in err.value.render()


def test_manual_splits_in_nnunet_form_are_checked(tmp_path):
    manual = tmp_path / "splits_final.json"
    manual.write_text(
        json.dumps(
            [
                {"train": IDS[5:], "val": IDS[:5]},
                {"train": IDS[:5] + IDS[10:], "val": IDS[5:10]},
            ]
        )
    )
    splits = make_splits(IDS, 5, 0, manual=manual)
    assert splits["source"] == "manual" and splits["num_folds"] == 2
    assert "13 case(s) are held out by no fold" in splits["warnings"][0]


def test_every_problem_of_bad_manual_splits_is_listed(tmp_path):
    manual = tmp_path / "splits.json"
    manual.write_text(
        json.dumps(
            {
                "folds": [
                    {"train": IDS[2:], "val": ["case_000", "case_001", "ghost"]},
                    {"train": IDS[:1] + IDS[2:], "val": ["case_001", "case_002"]},
                    {"train": IDS, "val": []},
                ]
            }
        )
    )
    with pytest.raises(SegflowError) as err:
        make_splits(IDS, 5, 0, manual=manual)
    text = err.value.render()
    assert "fold 0: unknown case(s) ['ghost']" in text
    assert "fold 1: case(s) ['case_002'] in both train and val" in text
    assert "fold 1: case 'case_001' is already held out by fold 0" in text
    assert "fold 2: holds out no case (empty validation set)" in text


def test_too_few_cases_for_the_folds():
    with pytest.raises(SegflowError, match="5 folds need at least 5 cases; found 3"):
        make_splits(IDS[:3], 5, 0)
