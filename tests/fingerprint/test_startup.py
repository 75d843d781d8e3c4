"""What a workflow job pays at start-up: the stages before training import no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Runs each command of the stages before training in one fresh interpreter, in the order the
# workflow runs them, and prints the heavy modules loaded after each.
_STAGES = r"""
import json, sys
from pathlib import Path
from segflow.cli import main

raw, out = Path(sys.argv[1]), Path(sys.argv[2])
heavy = ("torch", "matplotlib")
steps = [
    ("cli", None),
    ("validate-dataset", ["--dataset", raw, "--out", out / "report.json"]),
    ("fingerprint-batch", ["--dataset-json", raw / "dataset.json", "--dataset-report",
        out / "report.json", "--batch", "batch_0000", "--cases-per-job", "3",
        "--out", out / "batch_0000.json"]),
    ("fingerprint", ["--dataset-json", raw / "dataset.json", "--batches", out / "batch_0000.json",
        "--out", out / "fingerprint.json"]),
    ("plan", ["--dataset-json", raw / "dataset.json", "--fingerprint", out / "fingerprint.json",
        "--out", out / "plans.json"]),
    ("split", ["--dataset-report", out / "report.json", "--num-folds", "3",
        "--out", out / "splits.json"]),
    ("preprocess", ["--plans", out / "plans.json", "--configuration", "3d_fullres",
        "--dataset-json", raw / "dataset.json", "--dataset-report", out / "report.json",
        "--case-ids", "demo_000", "--out-dir", out / "pre"]),
]
loaded = {}
for command, args in steps:
    if args is not None:
        status = main(["--log", str(out / f"{command}.log"), command, *map(str, args)])
        assert status == 0, (out / f"{command}.log").read_text()
    loaded[command] = [m for m in heavy if m in sys.modules]
print(json.dumps(loaded))
"""


def test_the_stages_before_training_do_not_import_torch(tmp_path: Path):
    from segflow.demo import make_demo_dataset

    raw = make_demo_dataset(tmp_path / "Dataset992_Start", num_training=3, num_test=0, seed=5)
    proc = subprocess.run(
        [sys.executable, "-c", _STAGES, str(raw), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.splitlines()[-1])
    assert list(loaded) == [
        "cli",
        "validate-dataset",
        "fingerprint-batch",
        "fingerprint",
        "plan",
        "split",
        "preprocess",
    ]
    assert all(modules == [] for modules in loaded.values()), loaded
