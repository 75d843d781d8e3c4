from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import segflow.holdout as holdout_module
from segflow.cli import main
from segflow.demo import make_demo_dataset
from segflow.errors import DatasetError, SegflowError
from segflow.holdout import HOLDOUT_FILE, choose_test_cases, make_holdout
from segflow.validation import validate_dataset

TRAINING_IDS = [f"demo_{i:03d}" for i in range(6)]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Six labelled training cases and one test case (tiny synthetic volumes)."""
    return make_demo_dataset(tmp_path_factory.mktemp("src") / "Dataset990_Demo", 6, 1, seed=3)


def make_holdout_dir(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ho"
    make_holdout(source, out, num_test=2, seed=12345)
    return out


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_choice_is_seeded_over_sorted_ids():
    ids = [f"case_{i:02d}" for i in range(10)]
    assert choose_test_cases(ids, 3, 12345) == ["case_02", "case_05", "case_07"]
    assert choose_test_cases(list(reversed(ids)), 3, 12345) == ["case_02", "case_05", "case_07"]
    assert choose_test_cases(ids, 3, 1) == ["case_03", "case_04", "case_07"]


def test_holdout_links_every_file_and_copies_none(source, tmp_path):
    out = tmp_path / "Dataset990_Demo"
    record = make_holdout(source, out, num_test=2, seed=12345)

    test_ids = choose_test_cases(TRAINING_IDS, 2, 12345)
    train_ids = [c for c in TRAINING_IDS if c not in test_ids]
    assert record["test_cases"] == test_ids
    assert record["training_cases"] == train_ids
    assert _files(out) == sorted(
        ["dataset.json", HOLDOUT_FILE, "imagesTr", "labelsTr", "imagesTs", "labelsTs"]
    )
    assert _files(out / "imagesTr") == [f"{c}_0000.nii.gz" for c in train_ids]
    assert _files(out / "labelsTr") == [f"{c}.nii.gz" for c in train_ids]
    # The source's own test case stays a test case beside the held-out ones.
    assert _files(out / "imagesTs") == sorted(
        [f"{c}_0000.nii.gz" for c in test_ids] + ["demo_test_000_0000.nii.gz"]
    )
    assert _files(out / "labelsTs") == sorted(
        [f"{c}.nii.gz" for c in test_ids] + ["demo_test_000.nii.gz"]
    )
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        for entry in (out / folder).iterdir():
            assert entry.is_symlink()
            target = Path(os.readlink(entry))
            assert target.is_absolute() and target.is_file()
            assert target.parent.parent == source.resolve()
    held = out / "imagesTs" / f"{test_ids[0]}_0000.nii.gz"
    assert held.resolve() == (source / "imagesTr" / held.name).resolve()


def test_dataset_json_keeps_every_key_but_num_training(source, tmp_path):
    out = tmp_path / "ho"
    make_holdout(source, out, num_test=2, seed=7)
    original = json.loads((source / "dataset.json").read_text())
    rewritten = json.loads((out / "dataset.json").read_text())
    assert rewritten["numTraining"] == 4
    assert {k: v for k, v in rewritten.items() if k != "numTraining"} == {
        k: v for k, v in original.items() if k != "numTraining"
    }
    assert list(rewritten) == list(original)  # key order kept too

    record = json.loads((out / HOLDOUT_FILE).read_text())
    assert record["source"] == str(source.resolve())
    assert (record["seed"], record["num_test"]) == (7, 2)
    assert record["test_cases"] == choose_test_cases(TRAINING_IDS, 2, 7)


def test_holdout_is_a_valid_raw_dataset(source, tmp_path):
    report = validate_dataset(make_holdout_dir(source, tmp_path))
    assert len(report["training_cases"]) == 4
    assert len(report["test_cases"]) == 3


def test_identical_rerun_leaves_the_holdout_alone(source, tmp_path):
    out = make_holdout_dir(source, tmp_path)
    before = (out / HOLDOUT_FILE).stat().st_mtime_ns
    record = make_holdout(source, out, num_test=2, seed=12345)
    assert record["test_cases"] == choose_test_cases(TRAINING_IDS, 2, 12345)
    assert (out / HOLDOUT_FILE).stat().st_mtime_ns == before


@pytest.mark.parametrize("change", [{"seed": 1}, {"num_test": 3}])
def test_a_different_holdout_is_not_overwritten(source, tmp_path, change):
    out = make_holdout_dir(source, tmp_path)
    before = (out / HOLDOUT_FILE).read_text()
    with pytest.raises(SegflowError, match="output folder is taken") as info:
        make_holdout(source, out, **{"num_test": 2, "seed": 12345, **change})
    assert "different holdout" in info.value.render()
    assert (out / HOLDOUT_FILE).read_text() == before


def test_an_unrelated_non_empty_folder_is_refused_and_an_empty_one_used(source, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(SegflowError, match="output folder is taken"):
        make_holdout(source, taken, num_test=2)
    assert _files(taken) == ["notes.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    make_holdout(source, empty, num_test=2)
    assert (empty / HOLDOUT_FILE).is_file()


@pytest.mark.parametrize("num_test", [0, -1, 6, 7])
def test_num_test_must_leave_training_cases(source, tmp_path, num_test):
    with pytest.raises(SegflowError, match="cannot hold out") as info:
        make_holdout(source, tmp_path / "ho", num_test=num_test)
    assert "expected 1 to 5" in info.value.render()
    assert not (tmp_path / "ho").exists()


def test_a_broken_layout_is_reported_before_anything_is_written(source, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("dataset.json", "imagesTr", "labelsTr"):
        (broken / name).symlink_to(source / name)
    # A label without its image breaks the layout.
    (broken / "labelsTr").unlink()
    (broken / "labelsTr").mkdir()
    for label in (source / "labelsTr").iterdir():
        (broken / "labelsTr" / label.name).symlink_to(label)
    (broken / "labelsTr" / "demo_999.nii.gz").symlink_to(source / "labelsTr" / "demo_000.nii.gz")
    with pytest.raises(DatasetError, match="break the nnU-Net v2 layout"):
        make_holdout(broken, tmp_path / "ho", num_test=2)
    assert not (tmp_path / "ho").exists()


def test_a_failed_build_leaves_neither_output_nor_temporary_folder(source, tmp_path, monkeypatch):
    calls = []

    def failing_symlink(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError("disk full")
        os.symlink(src, dst)

    monkeypatch.setattr(holdout_module.os, "symlink", failing_symlink)
    with pytest.raises(OSError, match="disk full"):
        make_holdout(source, tmp_path / "out" / "ho", num_test=2)
    assert _files(tmp_path / "out") == []


def test_cli_holdout(source, tmp_path, capsys):
    out = tmp_path / "ho"
    args = ["holdout", "--dataset", str(source), "--output", str(out), "--num-test", "2"]
    assert main([*args, "--seed", "5"]) == 0
    capsys.readouterr()
    record = json.loads((out / HOLDOUT_FILE).read_text())
    assert record["test_cases"] == choose_test_cases(TRAINING_IDS, 2, 5)

    assert main([*args, "--seed", "6"]) == 1
    err = capsys.readouterr().err
    assert "\nsegflow holdout: error: the output folder is taken" in err  # after the warning
    assert "Traceback" not in err


def test_a_holdout_without_its_dataset_json_is_rebuilt(source, tmp_path):
    # Snakemake removes a job's output (dataset.json) before rerunning make_holdout.
    out = tmp_path / "ho"
    first = make_holdout(source, out, 2, seed=1)
    (out / "dataset.json").unlink()
    again = make_holdout(source, out, 2, seed=1)
    assert again["test_cases"] == first["test_cases"]
    assert (out / "dataset.json").is_file()
    held_out = {f"{c}.nii.gz" for c in first["test_cases"]}
    assert held_out <= {p.name for p in (out / "labelsTs").iterdir()}


def test_a_holdout_folder_with_foreign_files_is_not_removed(source, tmp_path):
    out = tmp_path / "ho"
    make_holdout(source, out, 2, seed=1)
    (out / "dataset.json").unlink()
    (out / "imagesTr" / "mine.txt").write_text("keep me")
    with pytest.raises(SegflowError, match="not part of a holdout"):
        make_holdout(source, out, 2, seed=1)
    assert (out / "imagesTr" / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("inside", [False, True])
def test_a_holdout_inside_its_source_is_refused_and_nothing_written(source, inside):
    before = sorted(p.name for p in source.iterdir())
    output = source / "held_out" if inside else source
    with pytest.raises(SegflowError) as info:
        make_holdout(source, output, num_test=1)
    where = "lies inside" if inside else "is"
    assert [str(p) for p in info.value.problems] == [
        f"{output}: {where} the source dataset {source.resolve()}; the raw data stays "
        "read-only: give a folder outside it"
    ]
    assert sorted(p.name for p in source.iterdir()) == before
@pytest.fixture
def source_with_num_test(tmp_path) -> Path:
    """Six training cases and two test cases, whose dataset.json says numTest: 2."""
    source = make_demo_dataset(tmp_path / "src" / "Dataset991_Demo", 6, 2, seed=4)
    dataset_json = json.loads((source / "dataset.json").read_text())
    (source / "dataset.json").write_text(json.dumps({**dataset_json, "numTest": 2}))
    return source


def _case_ids(folder: Path) -> list[str]:
    return sorted({p.name.split("_0000")[0].split(".")[0] for p in folder.iterdir()})


def test_the_sources_own_test_cases_are_kept_said_and_counted(
    source_with_num_test, tmp_path, caplog
):
    out = tmp_path / "ho"
    record = make_holdout(source_with_num_test, out, num_test=3, seed=1)
    own = ["demo_test_000", "demo_test_001"]
    assert record["source_test_cases"] == own and record["existing_test_cases"] == "keep"
    assert _case_ids(out / "labelsTs") == sorted(record["test_cases"] + own)
    dataset_json = json.loads((out / "dataset.json").read_text())
    assert (dataset_json["numTraining"], dataset_json["numTest"]) == (3, 5)
    assert "already has 2 test cases in imagesTs" in caplog.text
    assert "the test set of" in caplog.text and "is 5 cases" in caplog.text


def test_dropping_the_sources_test_cases_leaves_the_held_out_ones_only(
    source_with_num_test, tmp_path
):
    out = tmp_path / "ho"
    record = make_holdout(source_with_num_test, out, 3, seed=1, existing_test_cases="drop")
    assert record["source_test_cases"] == []
    assert _case_ids(out / "imagesTs") == record["test_cases"]
    assert _case_ids(out / "labelsTs") == record["test_cases"]
    assert json.loads((out / "dataset.json").read_text())["numTest"] == 3
    assert len(validate_dataset(out)["test_cases"]) == 3
    # Keeping them is another holdout: the folder is not overwritten.
    with pytest.raises(SegflowError, match="the output folder is taken"):
        make_holdout(source_with_num_test, out, 3, seed=1, existing_test_cases="keep")


def test_an_unknown_choice_for_the_sources_test_cases_is_refused(source, tmp_path):
    with pytest.raises(SegflowError, match="--existing-test-cases"):
        make_holdout(source, tmp_path / "ho", 2, existing_test_cases="merge")
    assert not (tmp_path / "ho").exists()
