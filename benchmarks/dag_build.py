"""How long Snakemake takes to build the DAG (`snakemake -n`) for a large dataset.

Makes a raw dataset of N tiny cases, brings the run to the point where the plan checkpoint is
done (validation, fingerprint batches and plans computed in-process, which is what Snakemake
would have left behind), adds a third configuration to the plans so that three configurations
are preprocessed, then times `snakemake -n` over the whole DAG: the fingerprint batches
(`--fingerprint-cases-per-job`, default 50) and the preprocessing batches of three
configurations, once per `--cases-per-job` (preprocessing). Prints one JSON line.

    python benchmarks/dag_build.py --cases 1000 --cases-per-job 1 50
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from segflow.batches import case_batches
from segflow.fingerprint import fingerprint_case, gather_fingerprint
from segflow.fingerprint.batch import write_batch_fingerprints
from segflow.io.atomic import write_json
from segflow.io.dataset import load_dataset_json
from segflow.io.image import write_image
from segflow.planning import plan_experiment
from segflow.validation import validate_dataset

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, cases: int) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for i in range(cases):
        image = rng.normal(100, 10, (8, 12, 12)).astype(np.float32)
        label = np.zeros((8, 12, 12), np.uint8)
        label[2:6, 3:9, 3:9] = 1
        write_image(root / "imagesTr" / f"case_{i:04d}_0000.nii.gz", image, (2.0, 1.0, 1.0))
        write_image(root / "labelsTr" / f"case_{i:04d}.nii.gz", label, (2.0, 1.0, 1.0))
    write_json(
        root / "dataset.json",
        {
            "channel_names": {"0": "MRI"},
            "labels": {"background": 0, "object": 1},
            "numTraining": cases,
            "file_ending": ".nii.gz",
        },
    )
    return root


def bring_to_plans(raw: Path, results: Path, seed: int, fingerprint_cases_per_job: int) -> None:
    """Write what validate_dataset, fingerprint_batch, fingerprint and plan would write."""
    dataset = load_dataset_json(raw / "dataset.json")
    report = validate_dataset(raw, workers=2)
    write_json(results / "dataset_report.json", report)
    fps = {
        case["case_id"]: fingerprint_case(
            case["case_id"],
            [raw / p for p in case["images"]],
            raw / case["label"],
            dataset,
            seed,
            1000,
        )
        for case in report["training_cases"]
    }
    for batch, ids in case_batches(list(fps), fingerprint_cases_per_job).items():
        path = results / "fingerprint" / "batches" / f"{batch}.json"
        write_batch_fingerprints(path, batch, [fps[i] for i in ids])
    fps = list(fps.values())
    write_json(results / "fingerprint.json", gather_fingerprint(fps, dataset, seed))
    plans = plan_experiment(json.loads((results / "fingerprint.json").read_text()), dataset)
    # A third configuration with data of its own, as 3d_lowres would have.
    extra = json.loads(json.dumps(plans["configurations"]["3d_fullres"]))
    extra["data_identifier"] = "nnUNetPlans_3d_lowres"
    plans["configurations"]["3d_lowres"] = extra
    write_json(results / "plans.json", plans)


def time_dry_run(
    workdir: Path, raw: Path, results: Path, cases_per_job: int, fingerprint_cases_per_job: int
) -> dict:
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", "-n", "--quiet", "rules",
        "--config", f"dataset={raw}", f"results={results}",
        f"preprocessing={{cases_per_job: {cases_per_job}}}",
        f"fingerprint={{cases_per_job: {fingerprint_cases_per_job}}}",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)
    jobs = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M)}
    return {"cases_per_job": cases_per_job, "dry_run_seconds": round(seconds, 2), "jobs": jobs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument(
        "--cases-per-job", type=int, nargs="+", default=[1, 50], help="preprocessing batches"
    )
    parser.add_argument("--fingerprint-cases-per-job", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segflow_dag_") as tmp:
        tmp = Path(tmp)
        raw = make_dataset(tmp / "raw" / "Dataset950_DagBench", args.cases)
        results = tmp / "results"
        started = time.perf_counter()
        fingerprint_batch = args.fingerprint_cases_per_job
        bring_to_plans(raw, results, seed=12345, fingerprint_cases_per_job=fingerprint_batch)
        setup_seconds = time.perf_counter() - started
        runs = [time_dry_run(tmp, raw, results, n, fingerprint_batch) for n in args.cases_per_job]
    print(
        json.dumps(
            {
                "benchmark": "dag_build",
                "cases": args.cases,
                "configurations": 3,
                "fingerprint_cases_per_job": args.fingerprint_cases_per_job,
                "setup_seconds": round(setup_seconds, 1),
                "runs": runs,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
