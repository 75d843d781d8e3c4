"""Fingerprinting in batches: the same case fingerprints and fingerprint.json as one case per
job, every failing case named at once, and a gather that does not depend on BLAS threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segflow.batches import case_batches, cases_of_batch
from segflow.cli import main
from segflow.demo import make_demo_dataset
from segflow.errors import SegflowError
from segflow.fingerprint.batch import read_case_fingerprints

SEED = "12345"


def test_case_batches_are_consecutive_chunks_in_the_order_given():
    ids = ["c", "a", "e", "b", "d"]
    assert case_batches(ids, 2) == {
        "batch_0000": ["c", "a"],
        "batch_0001": ["e", "b"],
        "batch_0002": ["d"],
    }
    assert case_batches(ids, 5) == {"batch_0000": ids}
    assert list(case_batches(ids, 1)) == [f"batch_{i:04d}" for i in range(5)]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError):
            case_batches(ids, bad)


def test_a_batch_the_report_does_not_have_is_named():
    report = {"training_cases": [{"case_id": f"c{i}"} for i in range(5)]}
    assert [c["case_id"] for c in cases_of_batch(report, "batch_0002", 2)] == ["c4"]
    with pytest.raises(SegflowError) as err:
        cases_of_batch(report, "batch_0003", 2, "out/dataset_report.json")
    text = err.value.render()
    assert "out/dataset_report.json" in text and "5 training cases in batches of 2 make 3" in text
    with pytest.raises(SegflowError, match="not a batch name"):
        cases_of_batch(report, "-rf", 2)
    with pytest.raises(SegflowError, match="at least 1"):
        cases_of_batch(report, "batch_0000", 0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path]:
    """Five demo cases and their dataset report."""
    root = tmp_path_factory.mktemp("batch")
    raw = make_demo_dataset(root / "Dataset991_Tiny", num_training=5, num_test=0, seed=7)
    report = root / "dataset_report.json"
    assert main(["validate-dataset", "--dataset", str(raw), "--out", str(report)]) == 0
    return raw, report


def _one_job_per_case(raw: Path, report: Path, out: Path) -> list[Path]:
    """What the workflow did before batches: fingerprint-case per case."""
    files = []
    for case in json.loads(report.read_text())["training_cases"]:
        files.append(out / "cases" / f"{case['case_id']}.json")
        status = main(
            [
                *("fingerprint-case", "--dataset-json", str(raw / "dataset.json")),
                *("--case-id", case["case_id"], "--label", str(raw / case["label"])),
                *("--images", *(str(raw / p) for p in case["images"])),
                *("--seed", SEED, "--samples", "300", "--out", str(files[-1])),
            ]
        )
        assert status == 0
    return files


def _batch(raw: Path, report: Path, out: Path, batch: str, workers: int) -> Path:
    path = out / "batches" / f"{batch}.json"
    status = main(
        [
            *("fingerprint-batch", "--dataset-json", str(raw / "dataset.json")),
            *("--dataset-report", str(report), "--batch", batch, "--cases-per-job", "2"),
            *("--seed", SEED, "--samples", "300", "--workers", str(workers), "--out", str(path)),
        ]
    )
    assert status == 0
    return path


def _gather(raw: Path, option: str, files: list[Path], out: Path) -> bytes:
    status = main(
        [
            *("fingerprint", "--dataset-json", str(raw / "dataset.json"), "--seed", SEED),
            *("--out", str(out), option, *map(str, files)),
        ]
    )
    assert status == 0
    return out.read_bytes()


def test_batches_give_the_fingerprints_of_one_job_per_case(demo, tmp_path):
    raw, report = demo
    case_files = _one_job_per_case(raw, report, tmp_path / "per_case")
    # Three batches of 2, 2 and 1 cases; the first in two worker processes.
    batch_files = [
        _batch(raw, report, tmp_path / "batched", f"batch_{i:04d}", workers=2 if i == 0 else 1)
        for i in range(3)
    ]
    batched, sources = read_case_fingerprints(batch_files)
    assert [fp["case_id"] for fp in batched] == [f"demo_{i:03d}" for i in range(5)]
    assert sources[0] == f"{batch_files[0]}:cases/'demo_000'"
    # Each case's fingerprint is the one its own job wrote, value for value.
    assert batched == [json.loads(p.read_text()) for p in case_files]
    assert json.loads(batch_files[2].read_text())["batch"] == "batch_0002"
    # And the gather writes the same bytes from either.
    before = _gather(raw, "--cases", case_files, tmp_path / "per_case" / "fingerprint.json")
    after = _gather(raw, "--batches", batch_files, tmp_path / "batched" / "fingerprint.json")
    assert after == before
    assert json.loads(after)["num_cases"] == 5
    assert not list(tmp_path.rglob(".tmp-*"))


def test_every_failing_case_of_a_batch_is_named_and_nothing_is_written(demo, tmp_path, capsys):
    raw, report = demo
    broken = tmp_path / "raw"
    broken.mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (broken / sub).symlink_to(raw / sub)
    (broken / "dataset.json").symlink_to(raw / "dataset.json")
    entries = json.loads(report.read_text())
    entries["dataset"] = str(broken)
    # Two cases of batch_0001 point at files that are not images.
    for case in entries["training_cases"][2:4]:
        bad = broken / f"{case['case_id']}_bad.nii.gz"
        bad.write_bytes(b"not an image")
        case["label"] = bad.name
    report_file = tmp_path / "dataset_report.json"
    report_file.write_text(json.dumps(entries))
    out = tmp_path / "batch_0001.json"
    status = main(
        [
            *("fingerprint-batch", "--dataset-json", str(raw / "dataset.json")),
            *("--dataset-report", str(report_file), "--batch", "batch_0001"),
            *("--cases-per-job", "2", "--workers", "2", "--out", str(out)),
        ]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert "cannot fingerprint 2 of 2 case(s)" in err, err
    assert "case 'demo_002'" in err and "demo_002_bad.nii.gz" in err, err
    assert "case 'demo_003'" in err and "demo_003_bad.nii.gz" in err, err
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


def test_an_unreadable_batch_file_is_named(demo, tmp_path, capsys):
    raw, _ = demo
    bad = tmp_path / "batch_0000.json"
    bad.write_text('{"cases": [')
    status = main(
        [
            *("fingerprint", "--dataset-json", str(raw / "dataset.json"), "--batches", str(bad)),
            *("--out", str(tmp_path / "fingerprint.json")),
        ]
    )
    assert status == 1
    assert f"{bad}: cannot read as JSON" in capsys.readouterr().err
    assert not (tmp_path / "fingerprint.json").exists()


_POOL_IN_SUBPROCESS = """
import json
import numpy as np
from segflow.fingerprint.gather import pooled_intensity_statistics
rng = np.random.default_rng(3)
cases = [rng.normal(100 + 10 * i, 30, 10_000).astype(np.float32) for i in range(20)]
print(json.dumps(pooled_intensity_statistics(cases)))
"""


def test_the_pooled_statistics_do_not_depend_on_blas_threads():
    # A Snakemake job runs with OMP_NUM_THREADS=1, a shell with every core: the gather must
    # write the same numbers in both (np.dot summed in a thread-dependent order).
    outputs = set()
    for threads in ("1", "2"):
        env = {**os.environ, **{k: threads for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
        env["MKL_NUM_THREADS"] = threads
        proc = subprocess.run(
            [sys.executable, "-c", _POOL_IN_SUBPROCESS],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        outputs.add(proc.stdout)
    assert len(outputs) == 1, outputs
    stats = json.loads(outputs.pop())
    assert 180 < stats["mean"] < 200
