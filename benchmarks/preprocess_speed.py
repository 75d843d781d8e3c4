"""Time segflow's preprocessing of a dataset; optionally nnU-Net v2's in the same run.

segflow runs as the workflow runs it: ``python -m segflow preprocess --cases-file ...
--workers N``, one command per configuration. Measured: wall seconds, cases per second
(cases x configurations / wall), peak resident memory of the whole process tree (RSS summed
over the process and its children, sampled every 10 ms), and the bytes written.

The floor is the time a fresh interpreter with N worker processes takes just to read and
decompress the raw files (every image and label through ``segflow.io.image.read_image``),
once per configuration, as preprocessing does.

``--compare-nnunet`` also runs ``nnUNetv2_preprocess -c CONFS -np N ...`` (from its own
virtual environment, ``--nnunet-python``) on the same dataset with the same plans, in a
private ``nnUNet_preprocessed`` folder, and adds its numbers and the ratios. Both tools get
the plans nnU-Net makes (segflow's planner fed with nnU-Net's fingerprint; its plans match
nnU-Net's field by field); without nnU-Net segflow plans from its own fingerprint.
Fingerprinting and planning are not timed.

Prints one JSON line (medians over ``--repeat`` alternating runs). Example::

    .venv/bin/python benchmarks/preprocess_speed.py --workers 2 --compare-nnunet --repeat 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
from common import SHARED_DATA, fingerprint_from_nnunet, run_measured

from segflow.io.dataset import DatasetJson, load_dataset_json
from segflow.planning import plan_experiment

logger = logging.getLogger("preprocess_speed")


_FLOOR_SNIPPET = r"""
import json, sys
from concurrent.futures import ProcessPoolExecutor
from segflow.io.image import read_image

def read_case(entry):
    for path in [*entry["images"], entry["label"]]:
        read_image(path).array.sum()
    return entry["case_id"]

if __name__ == "__main__":
    cases = json.load(open(sys.argv[1]))
    with ProcessPoolExecutor(int(sys.argv[2])) as pool:
        list(pool.map(read_case, cases, chunksize=8))
"""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def list_cases(dataset_dir: Path, dataset: DatasetJson) -> list[dict[str, Any]]:
    ending = dataset.file_ending
    ids = sorted(p.name[: -len(ending)] for p in (dataset_dir / "labelsTr").glob(f"*{ending}"))
    return [
        {
            "case_id": case,
            "images": [
                str(dataset_dir / "imagesTr" / f"{case}_{c:04d}{ending}")
                for c in range(dataset.num_channels)
            ],
            "label": str(dataset_dir / "labelsTr" / f"{case}{ending}"),
        }
        for case in ids
    ]


def segflow_fingerprint(cases: list[dict[str, Any]], dataset: DatasetJson, name: str) -> dict:
    from segflow.fingerprint import fingerprint_case, gather_fingerprint

    per_case = [
        fingerprint_case(
            case_id=c["case_id"],
            images=[Path(p) for p in c["images"]],
            label=Path(c["label"]),
            dataset=dataset,
            seed=0,
            num_samples=10_000,
        )
        for c in cases
    ]
    fingerprint = gather_fingerprint(per_case, dataset, seed=0)
    fingerprint.setdefault("dataset_name", name)
    return fingerprint


class NnUNet:
    """nnU-Net v2 in its own environment, with private raw/preprocessed folders."""

    def __init__(self, python: Path, work: Path, dataset_dir: Path, dataset_id: int) -> None:
        self.bin = python.parent
        self.name = dataset_dir.name
        self.dataset_id = str(dataset_id)
        raw = work / "nnunet_raw"
        self.pre = work / "nnunet_pre"
        raw.mkdir(parents=True, exist_ok=True)
        self.pre.mkdir(parents=True, exist_ok=True)
        link = raw / self.name
        if not link.exists():
            link.symlink_to(dataset_dir.resolve())
        self.env = {
            **os.environ,
            "nnUNet_raw": str(raw),
            "nnUNet_preprocessed": str(self.pre),
            "nnUNet_results": str(work / "nnunet_results"),
        }

    def tool(self, name: str) -> str:
        return str(self.bin / name)

    def plan(self, workers: int, existing: Path | None) -> dict[str, Any]:
        """Fingerprint and plans (untimed); copied from ``existing`` when it has them."""
        folder = self.pre / self.name
        folder.mkdir(parents=True, exist_ok=True)
        needed = ("dataset_fingerprint.json", "nnUNetPlans.json", "dataset.json")
        if existing is not None and all((existing / f).is_file() for f in needed):
            for f in needed:
                shutil.copy(existing / f, folder / f)
        else:
            cmd = [self.tool("nnUNetv2_plan_and_preprocess"), "-d", self.dataset_id]
            subprocess.run(
                [*cmd, "-np", str(workers), "--no_pp"],
                env=self.env,
                check=True,
                capture_output=True,
            )
        return json.loads((folder / "dataset_fingerprint.json").read_text())

    def preprocess(self, configurations: list[str], workers: int) -> tuple[float, int, int]:
        for conf in configurations:
            shutil.rmtree(self.pre / self.name / f"nnUNetPlans_{conf}", ignore_errors=True)
        cmd = [
            self.tool("nnUNetv2_preprocess"),
            "-d",
            self.dataset_id,
            "-c",
            *configurations,
            "-np",
            *[str(workers)] * len(configurations),
        ]
        measured = run_measured(cmd, self.env)
        wall, peak = measured.wall, measured.peak
        size = sum(folder_bytes(self.pre / self.name / f"nnUNetPlans_{c}") for c in configurations)
        return wall, peak, size


def run_segflow(
    args: argparse.Namespace, plans_file: Path, cases_file: Path, out: Path
) -> tuple[float, int]:
    """``segflow preprocess`` once per configuration; total wall seconds, peak tree RSS."""
    shutil.rmtree(out, ignore_errors=True)
    wall, peak = 0.0, 0
    for conf in args.configurations:
        cmd = [
            sys.executable, "-m", "segflow", "preprocess",
            "--plans", str(plans_file), "--configuration", conf,
            "--dataset-json", str(args.dataset / "dataset.json"),
            "--cases-file", str(cases_file), "--workers", str(args.workers),
            "--out-dir", str(out / conf),
        ]  # fmt: skip
        measured = run_measured(cmd)
        conf_wall, conf_peak = measured.wall, measured.peak
        wall += conf_wall
        peak = max(peak, conf_peak)
    return wall, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATA / "Dataset004_Hippocampus")
    parser.add_argument("--configurations", nargs="+", default=["3d_fullres", "2d"])
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--compare-nnunet", action="store_true")
    parser.add_argument("--nnunet-python", type=Path, default=Path("/tmp/nnunet-venv/bin/python"))
    parser.add_argument(
        "--nnunet-plans-from",
        type=Path,
        default=None,
        help="an nnUNet_preprocessed/<dataset> folder whose fingerprint and plans to reuse",
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; medians reported")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if not args.dataset.is_dir():
        raise SystemExit(f"dataset not found: {args.dataset}")
    dataset = load_dataset_json(args.dataset / "dataset.json")
    name = args.dataset.name
    work = args.work or Path(tempfile.mkdtemp(prefix="segflow-pp-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = list_cases(args.dataset, dataset)
    cases_file = work / "cases.json"
    cases_file.write_text(json.dumps(cases), encoding="utf-8")

    nnunet = None
    if args.compare_nnunet:
        dataset_id = int(name[len("Dataset") : len("Dataset") + 3])
        nnunet = NnUNet(args.nnunet_python, work, args.dataset, dataset_id)
        existing = args.nnunet_plans_from
        if existing is None:
            candidate = Path(os.environ.get("nnUNet_preprocessed", "/tmp/nnunet/pre")) / name  # noqa: SIM112
            existing = candidate if candidate.is_dir() else None
        fingerprint = fingerprint_from_nnunet(nnunet.plan(args.workers, existing), name)
    else:
        fingerprint = segflow_fingerprint(cases, dataset, name)
    plans_file = work / "plans.json"
    plans_file.write_text(json.dumps(plan_experiment(fingerprint, dataset)), encoding="utf-8")

    floor_script = work / "read_floor.py"
    floor_script.write_text(_FLOOR_SNIPPET, encoding="utf-8")
    out = work / "segflow"
    floors, walls, peaks, nn_runs = [], [], [], []
    # Repeats alternate the tools, so that load from elsewhere hits both alike; the medians
    # are reported.
    for _ in range(args.repeat):
        floor_wall = run_measured(
            [sys.executable, str(floor_script), str(cases_file), str(args.workers)]
        ).wall
        floors.append(floor_wall * len(args.configurations))
        wall, peak = run_segflow(args, plans_file, cases_file, out)
        walls.append(wall)
        peaks.append(peak)
        if nnunet is not None:
            nn_runs.append(nnunet.preprocess(args.configurations, args.workers))

    jobs = len(cases) * len(args.configurations)
    wall, floor, peak = statistics.median(walls), statistics.median(floors), max(peaks)
    result: dict[str, Any] = {
        "benchmark": "preprocess_speed",
        "dataset": name,
        "configurations": args.configurations,
        "cases": len(cases),
        "workers": args.workers,
        "repeats": args.repeat,
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cpus, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "wall_s": round(wall, 2),
        "wall_s_each": [round(w, 2) for w in walls],
        "cases_per_s": round(jobs / wall, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "output_bytes": folder_bytes(out),
        "read_floor_s": round(floor, 2),
        "ratio_to_floor": round(wall / floor, 2),
    }
    if nn_runs:
        nn_wall = statistics.median(r[0] for r in nn_runs)
        nn_peak = max(r[1] for r in nn_runs)
        nn_bytes = nn_runs[-1][2]
        result.update(
            nnunet_wall_s=round(nn_wall, 2),
            nnunet_wall_s_each=[round(r[0], 2) for r in nn_runs],
            nnunet_cases_per_s=round(jobs / nn_wall, 1),
            nnunet_peak_rss_mb=round(nn_peak / 2**20, 1),
            nnunet_output_bytes=nn_bytes,
            speedup_vs_nnunet=round(nn_wall / wall, 2),
            peak_rss_ratio=round(peak / nn_peak, 2),
            output_bytes_ratio=round(result["output_bytes"] / nn_bytes, 3),
        )
    print(json.dumps(result), flush=True)
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
