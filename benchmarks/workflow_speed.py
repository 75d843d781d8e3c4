"""Time the workflow from intake to preprocessed data against nnU-Net v2, in one run.

segflow runs exactly as a user types it, from the repository root, into a fresh results
folder each round, job start-ups included::

    snakemake --cores 2 preprocessed --config dataset=DATASET results=RESULTS

(validation, fingerprint, plans, preprocessing of every planned configuration, splits).
nnU-Net v2 runs ``nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres 2d -np 2 2`` (fingerprint,
plans, preprocessing) from its own virtual environment (``--nnunet-venv``, never a segflow
dependency; see /work/shared/NNUNET_REFERENCE.md) into a fresh ``nnUNet_preprocessed``
folder each round. Rounds alternate the two tools so that load from elsewhere hits both alike.

Measured per run: wall seconds, CPU seconds (user and system, every process of the tree) and
the peak resident memory of the whole process tree. On a machine that other work shares, the
CPU seconds move much less than the wall seconds. The
segflow line also counts the jobs per rule and gives the sha256 of ``fingerprint.json`` (the
same in every round and on every machine with the same data and seed). Prints one JSON line
(medians over the rounds). Example::

    .venv/bin/python benchmarks/workflow_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
from common import REPO, SHARED_DATA, run_measured


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule, from the job headers Snakemake prints."""
    counts: dict[str, int] = {}
    for name in re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):$", output, re.M):
        counts[name] = counts.get(name, 0) + 1
    return counts


def run_segflow(
    snakemake: Path, dataset: Path, results: Path, cores: int, extra: list[str]
) -> dict[str, Any]:
    cmd = [
        str(snakemake), "--cores", str(cores), "preprocessed",
        "--config", f"dataset={dataset}", f"results={results}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PATH": f"{snakemake.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    measured = run_measured(cmd, env=env, cwd=REPO)
    fingerprint = results / "fingerprint.json"
    return {
        "wall": measured.wall,
        "cpu": measured.cpu,
        "peak": measured.peak,
        "jobs": job_counts(measured.output),
        "fingerprint_sha256": hashlib.sha256(fingerprint.read_bytes()).hexdigest(),
    }


def run_nnunet(venv: Path, work: Path, dataset: Path, cores: int) -> dict[str, Any]:
    raw, pre = work / "nnunet_raw", work / "nnunet_pre"
    shutil.rmtree(pre, ignore_errors=True)
    pre.mkdir(parents=True)
    raw.mkdir(parents=True, exist_ok=True)
    if not (raw / dataset.name).exists():
        (raw / dataset.name).symlink_to(dataset.resolve())
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(pre),
        "nnUNet_results": str(work / "nnunet_results"),
    }
    dataset_id = str(int(dataset.name[len("Dataset") : len("Dataset") + 3]))
    cmd = [
        str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", dataset_id,
        "-c", "3d_fullres", "2d", "-np", str(cores), str(cores),
    ]  # fmt: skip
    measured = run_measured(cmd, env=env)
    return {"wall": measured.wall, "cpu": measured.cpu, "peak": measured.peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATA / "Dataset004_Hippocampus")
    parser.add_argument("--nnunet-venv", type=Path, default=Path("/tmp/nnunet-venv"))
    parser.add_argument("--no-nnunet", action="store_true", help="time segflow only")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="more --config items for segflow, e.g. 'fingerprint={cases_per_job: 100}'",
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)

    dataset = args.dataset.resolve()
    if not (dataset / "dataset.json").is_file():
        raise SystemExit(f"not a raw dataset (no dataset.json): {dataset}")
    tool = args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess"
    if not args.no_nnunet and not tool.is_file():
        raise SystemExit(f"nnU-Net not found: {tool} (install it, or pass --no-nnunet)")
    snakemake = Path(sys.executable).parent / "snakemake"
    work = args.work or Path(tempfile.mkdtemp(prefix="segflow-workflow-speed-"))
    work.mkdir(parents=True, exist_ok=True)

    seg_runs, nn_runs = [], []
    for i in range(args.rounds):
        results = work / f"segflow_round{i}"
        shutil.rmtree(results, ignore_errors=True)
        seg_runs.append(run_segflow(snakemake, dataset, results, args.cores, args.set))
        if not args.no_nnunet:
            nn_runs.append(run_nnunet(args.nnunet_venv, work, dataset, args.cores))

    wall = statistics.median(r["wall"] for r in seg_runs)
    result: dict[str, Any] = {
        "benchmark": "workflow_speed",
        "dataset": dataset.name,
        "cases": json.loads((dataset / "dataset.json").read_text())["numTraining"],
        "cores": args.cores,
        "rounds": args.rounds,
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cpus, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, load {os.getloadavg()[0]:.1f}",
        "segflow_command": " ".join(
            ["snakemake --cores N preprocessed --config dataset=... results=...", *args.set]
        ),
        "segflow_wall_s": round(wall, 2),
        "segflow_wall_s_each": [round(r["wall"], 2) for r in seg_runs],
        "segflow_cpu_s_each": [round(r["cpu"], 1) for r in seg_runs],
        "segflow_peak_rss_mb": round(max(r["peak"] for r in seg_runs) / 2**20, 1),
        "segflow_jobs": seg_runs[-1]["jobs"],
        "fingerprint_sha256": sorted({r["fingerprint_sha256"] for r in seg_runs}),
    }
    if nn_runs:
        nn_wall = statistics.median(r["wall"] for r in nn_runs)
        result.update(
            nnunet_command="nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres 2d -np N N",
            nnunet_wall_s=round(nn_wall, 2),
            nnunet_wall_s_each=[round(r["wall"], 2) for r in nn_runs],
            nnunet_cpu_s_each=[round(r["cpu"], 1) for r in nn_runs],
            nnunet_peak_rss_mb=round(max(r["peak"] for r in nn_runs) / 2**20, 1),
            speedup_vs_nnunet=round(nn_wall / wall, 2),
            speedup_each_round=[
                round(n["wall"] / s["wall"], 2) for s, n in zip(seg_runs, nn_runs, strict=True)
            ],
        )
    print(json.dumps(result), flush=True)
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
