"""The DAG from the raw dataset to the preprocessed data, on a tiny synthetic dataset."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from segflow.demo import make_demo_dataset
from segflow.io.atomic import atomic_path
from segflow.io.image import read_image, write_image

pytestmark = pytest.mark.workflow


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_demo_dataset(
        tmp_path / "raw" / "Dataset991_Tiny", num_training=5, num_test=1, seed=7
    )


def _config(tmp_path: Path, dataset: Path) -> dict[str, str]:
    # Batches of two cases: the five cases make three fingerprint batches and three batches
    # per configuration.
    return {
        "dataset": str(dataset),
        "results": str(tmp_path / "out"),
        "fingerprint": "{cases_per_job: 2, threads: 1}",
        "preprocessing": "{cases_per_job: 2, threads: 1}",
    }


def test_runs_through_plan_and_writes_the_artifacts(tmp_path, tiny_dataset, snakemake):
    run = snakemake(tmp_path, "preprocessed", config=_config(tmp_path, tiny_dataset))
    assert run.returncode == 0, run.output
    out = tmp_path / "out"

    report = json.loads((out / "dataset_report.json").read_text())
    case_ids = [c["case_id"] for c in report["training_cases"]]
    assert case_ids == [f"demo_{i:03d}" for i in range(5)]
    batches = sorted((out / "fingerprint" / "batches").glob("*.json"))
    assert [p.stem for p in batches] == ["batch_0000", "batch_0001", "batch_0002"]
    batched = [[c["case_id"] for c in json.loads(p.read_text())["cases"]] for p in batches]
    assert batched == [case_ids[0:2], case_ids[2:4], case_ids[4:]]

    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["case_ids"] == case_ids
    assert len(fingerprint["spacings"]) == 5
    # The demo's slices are 3.0-3.6 mm apart, its pixels 0.9-1.1 mm.
    assert all(3.0 <= s[0] <= 3.6 and 0.9 <= s[1] <= 1.1 for s in fingerprint["spacings"])

    plans = json.loads((out / "plans.json").read_text())
    assert {"2d", "3d_fullres"} <= set(plans["configurations"])
    fullres = plans["configurations"]["3d_fullres"]
    assert fullres["batch_size"] >= 2
    assert plans["transpose_forward"] == [0, 1, 2]  # the slice axis already comes first
    # Every planned configuration is preprocessed, batch by batch, every case complete.
    for configuration in ("2d", "3d_fullres"):
        folder = out / "preprocessed" / configuration
        manifests = sorted((folder / "batches").glob("*.json"))
        assert [m.name for m in manifests] == [
            "batch_0000.json",
            "batch_0001.json",
            "batch_0002.json",
        ]
        listed = [c["case_id"] for m in manifests for c in json.loads(m.read_text())["cases"]]
        assert listed == case_ids
        for case_id in case_ids:
            props = json.loads((folder / f"{case_id}.props.json").read_text())
            spacing = plans["configurations"][configuration]["spacing"]
            assert props["target_spacing"][-len(spacing) :] == spacing
            assert (folder / f"{case_id}.data.b2nd").stat().st_size > 0
    # Five folds, written before any training, holding out every case once.
    splits = json.loads((out / "splits.json").read_text())
    assert splits["num_folds"] == 5
    assert sorted(c for fold in splits["folds"] for c in fold["val"]) == case_ids
    # Nothing is left half-written.
    assert not list(out.rglob(".tmp-*"))


def _change_one_voxel(path: Path) -> None:
    image = read_image(path)
    array = image.array[0].copy()
    array[tuple(s // 2 for s in array.shape)] += 7.0
    with atomic_path(path) as tmp:
        write_image(tmp, array, image.spacing, image.origin, image.direction)


def test_second_run_does_nothing_and_a_changed_case_reruns_only_its_branch(
    tmp_path, tiny_dataset, snakemake
):
    config = _config(tmp_path, tiny_dataset)
    first = snakemake(tmp_path, "preprocessed", config=config)
    assert first.returncode == 0, first.output

    again = snakemake(tmp_path, "preprocessed", "--dry-run", config=config)
    assert again.returncode == 0, again.output
    assert "Nothing to be done" in again.output, again.output

    # Snakemake 9 compares checksums of inputs under 1 MB: a touch alone changes nothing.
    # (Files over 1 MB, such as large CT volumes, rerun on a touch.)
    future = time.time() + 5
    os.utime(tiny_dataset / "imagesTr" / "demo_002_0000.nii.gz", (future, future))
    touched = snakemake(tmp_path, "preprocessed", "--dry-run", config=config)
    assert "Nothing to be done" in touched.output, touched.output

    batches_dir = tmp_path / "out" / "fingerprint" / "batches"
    before = {p.name: p.stat().st_mtime_ns for p in batches_dir.glob("*.json")}
    _change_one_voxel(tiny_dataset / "imagesTr" / "demo_002_0000.nii.gz")

    rerun = snakemake(tmp_path, "--until", "plan", config=config)
    assert rerun.returncode == 0, rerun.output
    # The changed file is revalidated, its batch (demo_002 and demo_003) refingerprinted, and
    # the gather and plan follow; no other batch runs again.
    assert rerun.job_counts() == {
        "validate_dataset": 1,
        "fingerprint_batch": 1,
        "fingerprint": 1,
        "plan": 1,
    }, rerun.output
    after = {p.name: p.stat().st_mtime_ns for p in batches_dir.glob("*.json")}
    changed = sorted(name for name in before if after[name] != before[name])
    assert changed == ["batch_0001.json"]


def test_a_job_killed_while_writing_leaves_nothing_a_rerun_accepts(
    tmp_path, tiny_dataset, snakemake
):
    config = _config(tmp_path, tiny_dataset)
    killed = snakemake(
        tmp_path, "preprocessed", config=config, env={"SEGFLOW_TEST_KILL_DURING_WRITE": "seg"}
    )
    assert killed.returncode != 0
    out = tmp_path / "out" / "preprocessed"
    # The killed batches wrote no manifest; no case has a final seg file without its props.
    assert not list(out.glob("*/batches/*.json"))
    for folder in out.iterdir():
        for seg in folder.glob("[!.]*.seg.b2nd"):
            assert (folder / seg.name.replace(".seg.b2nd", ".props.json")).exists()

    rerun = snakemake(tmp_path, "preprocessed", config=config)
    assert rerun.returncode == 0, rerun.output
    assert rerun.job_counts()["preprocess"] == 6
    assert not list(out.rglob(".tmp-*"))

    # The same bytes as a run that was never interrupted.
    clean_config = config | {"results": str(tmp_path / "clean")}
    assert snakemake(tmp_path, "preprocessed", config=clean_config).returncode == 0
    clean = tmp_path / "clean" / "preprocessed"
    for configuration in ("2d", "3d_fullres"):
        files = sorted(p.name for p in (clean / configuration).glob("demo_*"))
        assert len(files) == 15  # five cases: data, seg, props
        for name in files:
            resumed = (out / configuration / name).read_bytes()
            assert resumed == (clean / configuration / name).read_bytes(), name


def test_an_invalid_dataset_stops_before_any_other_job(tmp_path, tiny_dataset, snakemake):
    (tiny_dataset / "labelsTr" / "demo_001.nii.gz").unlink()
    (tiny_dataset / "imagesTr" / "demo_003_0000.nii.gz").write_bytes(b"not an image")
    run = snakemake(tmp_path, config=_config(tmp_path, tiny_dataset))
    assert run.returncode != 0
    # Both problems are reported together, each naming its file.
    assert "demo_001" in run.stderr and "label" in run.stderr, run.stderr
    assert "demo_003_0000.nii.gz" in run.stderr, run.stderr
    assert not (tmp_path / "out" / "dataset_report.json").exists()
    assert not (tmp_path / "out" / "fingerprint").exists()


def test_a_misspelled_config_key_is_named_with_a_suggestion(tmp_path, tiny_dataset, snakemake):
    config = _config(tmp_path, tiny_dataset) | {"sed": "3"}
    run = snakemake(tmp_path, "--dry-run", config=config)
    assert run.returncode != 0
    assert "sed: unknown key; did you mean 'seed'?" in run.output, run.output


def test_demo_config_builds_its_own_dataset(tmp_path, snakemake):
    config = {
        "dataset": str(tmp_path / "demo" / "Dataset990_SegflowDemo"),
        "results": str(tmp_path / "out"),
        "demo": "{cases: 5, test_cases: 1, seed: 1}",
    }
    run = snakemake(tmp_path, "preprocessed", config=config)
    assert run.returncode == 0, run.output
    assert run.job_counts()["make_demo_dataset"] == 1
    assert (
        len(list((tmp_path / "demo" / "Dataset990_SegflowDemo" / "imagesTr").glob("*.nii.gz"))) == 5
    )
    assert (tmp_path / "out" / "plans.json").is_file()
