"""Time and peak memory of ``segflow predict`` on large volumes, with and without freed memory
reused (:func:`segflow.compute.reuse_freed_memory`).

The Hippocampus volumes are small (about 36 × 50 × 35 voxels); this benchmark asks what the
allocator setting costs where memory matters: images much larger than the patch, resampled on
the way in and their probabilities resampled back on the way out. It writes ``--cases``
synthetic images of ``--size`` voxels (z, y, x) at ``--spacing`` mm (x, y, z), tiled from a
held-out Hippocampus image plus noise, and predicts them in one ``segflow predict`` process
with the fold-0 3d_fullres model of the training comparison (planned at 1 mm, so every image is
resampled), once with ``SEGFLOW_REUSE_FREED_MEMORY=1`` (the default) and once with ``=0``,
alternating for ``--rounds``. Prints one JSON line per run (wall seconds, peak summed RSS of
the process tree sampled every 0.2 s) and a Markdown table. Without mirroring by default (the
windows, not the flips, are what makes a volume large); ``--mirroring`` to add it.

Example::

    .venv/bin/python benchmarks/predict_large_volumes.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from common import add_holdout_model, run_measured


def write_volumes(source: Path, folder: Path, cases: int, size: list[int], spacing: list[float]):
    """``cases`` images tiled from ``source`` with Gaussian noise (seeded), as
    ``big_<k>_0000.nii.gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    tile = sitk.GetArrayFromImage(sitk.ReadImage(str(source))).astype(np.float32)
    reps = [-(-s // t) for s, t in zip(size, tile.shape, strict=True)]
    rng = np.random.default_rng(0)
    for k in range(cases):
        data = np.tile(tile, reps)[: size[0], : size[1], : size[2]]
        data = data + rng.normal(0, 5, data.shape).astype(np.float32)
        image = sitk.GetImageFromArray(data)
        image.SetSpacing(tuple(spacing))
        sitk.WriteImage(image, str(folder / f"big_{k:03d}_0000.nii.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_holdout_model(parser)
    parser.add_argument("--out", type=Path, default=Path("/tmp/predict_large_volumes"))
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=3, default=[100, 400, 400], help="z y x")
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.375, 0.375, 1.0],
                        help="x y z, mm")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--mirroring", action="store_true")
    args = parser.parse_args()

    images = args.out / "images"
    source = sorted((args.holdout / "imagesTs").glob("*_0000.nii.gz"))[0]
    shutil.rmtree(images, ignore_errors=True)
    write_volumes(source, images, args.cases, args.size, args.spacing)
    threads = len(os.sched_getaffinity(0))
    rows = []
    for round_ in range(args.rounds):
        for setting in ("1", "0"):
            out = args.out / f"predicted_{setting}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [
                sys.executable, "-m", "segflow", "predict", "-i", str(images), "-o", str(out),
                "-m", str(args.segflow_model), "-f", "0", "--device", "cpu",
                "--threads", str(threads), *([] if args.mirroring else ["--no-mirroring"]),
            ]  # fmt: skip
            env = dict(os.environ, SEGFLOW_REUSE_FREED_MEMORY=setting)
            measured = run_measured(cmd, env, interval=0.2)
            wall, peak = measured.wall, measured.peak
            row = {
                "round": round_,
                "reuse_freed_memory": setting == "1",
                "cases": args.cases,
                "size_zyx": args.size,
                "spacing_xyz": args.spacing,
                "mirroring": args.mirroring,
                "wall_s": round(wall, 1),
                "seconds_per_case": round(wall / args.cases, 1),
                "peak_rss_gb": round(peak / 1024**3, 2),
                "threads": threads,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| round | freed memory reused | s/case | peak RSS (GB) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['round']} | {'yes' if r['reuse_freed_memory'] else 'no'} | "
              f"{r['seconds_per_case']:.1f} | {r['peak_rss_gb']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
