"""3d_lowres, 3d_fullres and the cascade at the same small budget on synthetic large volumes.

Measured (docs/results/cascade.md): ``--epochs 20 --iterations 25 --threads 2 --no-mirroring``
(191 s) and ``--cases 20 --epochs 150 --iterations 50 --threads 2 --no-mirroring`` (24.3 min)
on 2 idle vCPUs. Every configuration finds the organs (Dice with sides ignored up to 0.999)
and none tells left from right (about half of the organ voxels get the other side's label):
training mirrors every sample along every axis, as nnU-Net does, which shows the left organ
on the right with its left label, so the side cannot be learned. ``--mirror-axes "[0, 1]"``
(``training.mirror_axes``) keeps the side; the small budget with it still did not learn the
side, the larger one with it has not run yet. ``--report-only`` prints the numbers of a run
already under ``--out`` again, without running anything.

The defaults were chosen by calling the planner on fingerprints of these volumes: at
16 x 96 x 96 voxels (3 x 1 x 1 mm) and a 0.002 GB memory target with 8 base features the
3d_fullres patch (4 x 20 x 24) covers well under a quarter of the body, so the planner adds
3d_lowres (about 5.6 x 2.8 x 2.8 mm) and the cascade. The previous defaults (24 x 128 x 128
at 0.01 GB) gave no cascade. The script stops with the planned configurations when the
plans lack one of the three.

The volumes hold two organs of identical appearance, one in each half of the body along the
last axis: the left one is label 1, the right one label 2. A full-resolution patch that sees
only part of the body cannot tell them apart; the low-resolution stage sees more of it (its
patch covers 16 x 20 of a slice's 34 x 34 voxels), and the cascade gets its segmentation as
input. Each configuration trains the same epochs and
iterations (``--epochs``, ``--iterations``) with 2 folds through the workflow; the script
prints one JSON line: per configuration the cross-validation Dice per class and the mean,
the seconds its folds' epochs took (``progress.csv``) and the validation seconds per case
(the folds' ``summary.json``; a cascade case includes nothing of 3d_lowres, whose
cross-validation predictions it reads), the organs' Dice with the sides ignored and the share
of the organ voxels found that got the other side's label (:func:`side_confusion`); the
selection's candidates and choice; and the wall time of the whole run.

At a CPU budget the networks are far from converged: the numbers show that every stage runs
and what each costs, not which configuration wins on real data.

Usage: python benchmarks/cascade_synthetic.py --out /tmp/cascade_bench [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from segflow.io.atomic import write_json
from segflow.io.image import read_image, write_image

REPO = Path(__file__).resolve().parents[1]
CONFIGURATIONS = ["3d_fullres", "3d_lowres", "3d_cascade_fullres"]


def _case(rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, ...]):
    grid = np.meshgrid(
        *[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    extent = np.asarray(shape) * np.asarray(spacing)
    body = ((grid[1] - extent[1] / 2) / (0.42 * extent[1])) ** 2 + (
        (grid[2] - extent[2] / 2) / (0.45 * extent[2])
    ) ** 2 <= 1
    label = np.zeros(shape, dtype=np.uint8)
    for value, side in ((1, 0.3), (2, 0.7)):
        centre = extent * np.array([0.5, 0.5, side]) + rng.uniform(-0.04, 0.04, 3) * extent
        radii = extent * np.array([0.3, 0.14, 0.1]) * rng.uniform(0.85, 1.1)
        organ = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        label[organ & body] = value
    image = np.where(body, 100.0, 0.0) + 80.0 * (label > 0)
    image = np.where(body, image + rng.normal(0, 15, shape), 0).astype(np.float32)
    image[body & (image == 0)] = 1e-3
    return image, label


def make_dataset(root: Path, cases: int, shape: tuple[int, int, int]) -> Path:
    rng = np.random.default_rng(0)
    spacing = (3.0, 1.0, 1.0)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        image, label = _case(rng, shape, spacing)
        write_image(root / "imagesTr" / f"side_{i:03d}_0000.nii.gz", image, spacing)
        write_image(root / "labelsTr" / f"side_{i:03d}.nii.gz", label, spacing)
    labels = {"background": 0, "left": 1, "right": 2}
    write_json(
        root / "dataset.json",
        {"name": "Sides", "channel_names": {"0": "MRI"}, "labels": labels,
         "numTraining": cases, "file_ending": ".nii.gz"},
    )  # fmt: skip
    return root


def side_confusion(results: Path, labels: Path, name: str) -> dict[str, float]:
    """Over the cross-validation predictions of configuration ``name``: the Dice of the organs
    with sides ignored (any foreground against any foreground), and of the organ voxels
    predicted as an organ the share given the other side's label. A network that finds the
    organs but cannot tell left from right has the first high and the second near 0.5."""
    overlap = reference = predicted = wrong = 0
    for prediction in sorted((results / "crossval" / name).glob("fold_*/predictions/*.nii.gz")):
        truth = np.asarray(read_image(labels / prediction.name).array)
        guess = np.asarray(read_image(prediction).array)
        both = (truth > 0) & (guess > 0)
        overlap += int(both.sum())
        reference += int((truth > 0).sum())
        predicted += int((guess > 0).sum())
        wrong += int((both & (truth != guess)).sum())
    return {
        "organ_dice_sides_ignored": round(2 * overlap / max(reference + predicted, 1), 4),
        "wrong_side_share": round(wrong / max(overlap, 1), 4),
    }


def _run_workflow(args: argparse.Namespace, dataset: Path, results: Path) -> float:
    """The workflow to ``selection.json`` with the three configurations; its wall seconds."""
    config = {
        "dataset": str(dataset),
        "results": str(results),
        "planning": f"{{gpu_memory_target_gb: {args.gpu_memory_gb}, base_features: 8, "
        "max_features: 64}",
        "splits": "{num_folds: 2}",
        "training": f"{{configurations: [{', '.join(CONFIGURATIONS)}], epochs: {args.epochs}, "
        f"iterations_per_epoch: {args.iterations}, val_iterations_per_epoch: 2, "
        f"device: cpu, threads: {args.threads}, num_workers: 0, "
        f"mirror_axes: {args.mirror_axes}}}",
        "inference": f"{{device: cpu, threads: {args.threads}, "
        f"mirroring: {str(not args.no_mirroring).lower()}}}",
    }
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(args.out), "--cores", str(args.threads),
           str(results / "selection.json"),
           "--config", *(f"{k}={v}" for k, v in config.items())]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit("the workflow failed:\n" + (run.stdout + run.stderr)[-4000:])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--shape", default="16,96,96")
    parser.add_argument("--gpu-memory-gb", type=float, default=0.002)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-mirroring", action="store_true", help="validate without test-time mirroring"
    )
    parser.add_argument(
        "--mirror-axes", default="null",
        help="training.mirror_axes, e.g. '[0, 1]' to keep the sides (default null: every axis)",
    )  # fmt: skip
    parser.add_argument(
        "--report-only", action="store_true",
        help="print the numbers of the run already under --out (same options) without running",
    )  # fmt: skip
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    dataset = args.out / "Dataset990_Sides"
    results = args.out / "results"
    wall = None
    if not args.report_only:
        make_dataset(dataset, args.cases, shape)
        wall = round(_run_workflow(args, dataset, results), 1)
    plans_file = results / "plans.json"
    planned = json.loads(plans_file.read_text())["configurations"] if plans_file.exists() else {}
    if not set(CONFIGURATIONS) <= set(planned):
        sys.exit(f"the plans hold {sorted(planned)}; the benchmark needs {CONFIGURATIONS}")
    report = {"benchmark": "cascade_synthetic", "shape": list(shape), "cases": args.cases,
              "epochs": args.epochs, "iterations_per_epoch": args.iterations,
              "mirroring": not args.no_mirroring, "mirror_axes": args.mirror_axes,
              "threads": args.threads,
              "wall_seconds": wall, "configurations": {}}  # fmt: skip
    plans = planned
    for name in CONFIGURATIONS:
        summary = json.loads((results / "crossval" / name / "summary.json").read_text())
        train_seconds = 0.0
        per_case = [
            json.loads(f.read_text())["seconds_per_case"]
            for f in (results / "crossval" / name).glob("fold_*/summary.json")
        ]
        for log in (results / "models" / name).glob("fold_*/progress.csv"):
            rows = log.read_text().splitlines()
            header = rows[0].split(",")
            column = header.index("epoch_seconds")
            train_seconds += sum(float(r.split(",")[column]) for r in rows[1:])
        report["configurations"][name] = {
            "patch_size": plans[name]["patch_size"],
            "spacing": plans[name]["spacing"],
            "dice": {c: summary["mean"][c]["dice"] for c in summary["classes"]},
            "mean_foreground_dice": summary["mean_foreground_dice"],
            "train_seconds": round(train_seconds, 1),
            "validate_seconds_per_case": round(float(np.mean(per_case)), 2),
            **side_confusion(results, dataset / "labelsTr", name),
        }
    selection = json.loads((results / "selection.json").read_text())
    report["selection"] = {
        "candidates": {
            c["name"]: round(c["mean_foreground_dice"], 4) for c in selection["candidates"]
        },
        "selected": selection["selected"]["name"],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
