"""A manual splits file is read by the split stage's own checked reader when the DAG is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.demo import make_demo_dataset

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"folds": 3}', 'expected a list of {"train": [case ids], "val": [case ids]}'),
        (
            '[{"train": ["demo_000"]}]',
            'expected a list of {"train": [case ids], "val": [case ids]}',
        ),
        ("[{", "Expecting"),
    ],
)
def test_a_malformed_manual_splits_file_is_one_clear_error_at_dag_build(
    tmp_path: Path, snakemake, content: str, problem: str
):
    dataset = make_demo_dataset(tmp_path / "raw" / "Dataset992_Tiny", num_training=3, seed=1)
    manual = tmp_path / "my splits.json"
    manual.write_text(content, encoding="utf-8")
    config = {
        "dataset": str(dataset),
        "results": str(tmp_path / "out"),
        "splits": f'{{manual: "{manual}"}}',
    }
    # The crossval job's inputs are the folds of the manual file: the DAG needs it parsed (it
    # is read when the workflow is parsed, before any job).
    run = snakemake(tmp_path, "--dry-run", str(tmp_path / "out/crossval/2d/metrics.csv"),
                    config=config)  # fmt: skip
    assert run.returncode != 0
    assert "Traceback" not in run.output, run.output
    # Named with the file (the config check reads it with the split stage's own reader).
    assert str(manual) in run.output, run.output
    assert problem in run.output, run.output
