"""Compare segflow's dataset fingerprint with the one nnU-Net v2 wrote for the same dataset.

Computes the fingerprint in-process (case fingerprints in ``--workers`` processes, then the
gather) for a raw dataset folder and compares it with nnU-Net's ``dataset_fingerprint.json``.
Prints one JSON line: the largest spacing difference, the number of cases whose shape after
cropping differs, the difference of ``median_relative_size_after_cropping``, per channel the
difference of every intensity statistic (absolute, and relative to nnU-Net's std), and the
wall time of segflow's fingerprint.

Example::

    .venv/bin/python benchmarks/compare_fingerprint_nnunet.py \\
        ../shared/data/Dataset004_Hippocampus \\
        /tmp/nnunet/pre/Dataset004_Hippocampus/dataset_fingerprint.json
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from segflow.fingerprint import fingerprint_case, gather_fingerprint
from segflow.io.dataset import DatasetJson, load_dataset_json

logger = logging.getLogger("compare_fingerprint_nnunet")


def discover_training_cases(folder: Path, dataset: DatasetJson) -> dict[str, dict[str, Any]]:
    """``{case_id: {"images": [channel files], "label": label file}}`` from ``imagesTr``."""
    ending = dataset.file_ending
    pattern = re.compile(rf"(.+)_(\d{{4}}){re.escape(ending)}")
    images: dict[str, dict[int, Path]] = {}
    for path in sorted((folder / "imagesTr").iterdir()):
        match = pattern.fullmatch(path.name)
        if match:
            images.setdefault(match.group(1), {})[int(match.group(2))] = path
    return {
        case: {
            "images": [channels[c] for c in sorted(channels)],
            "label": folder / "labelsTr" / f"{case}{ending}",
        }
        for case, channels in sorted(images.items())
    }


def _fingerprint_one(args: tuple[str, list[Path], Path, DatasetJson, int, int]) -> dict:
    return fingerprint_case(*args)


def segflow_fingerprint(folder: Path, workers: int, seed: int, samples: int) -> dict:
    """The fingerprint of the raw dataset in ``folder``, its cases run in ``workers`` processes."""
    dataset = load_dataset_json(folder / "dataset.json")
    cases = discover_training_cases(folder, dataset)
    jobs = [(c, f["images"], f["label"], dataset, seed, samples) for c, f in cases.items()]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        case_fps = list(pool.map(_fingerprint_one, jobs, chunksize=4))
    return gather_fingerprint(case_fps, dataset, seed)


def compare(ours: dict, theirs: dict) -> dict[str, Any]:
    """The differences between our fingerprint and nnU-Net's (cases in sorted order in both)."""
    spacing_ours = np.asarray(ours["spacings"], dtype=np.float64)
    spacing_theirs = np.asarray(theirs["spacings"], dtype=np.float64)
    same_count = spacing_ours.shape == spacing_theirs.shape
    shape_mismatches = sum(
        list(a) != list(b)
        for a, b in zip(ours["shapes_after_crop"], theirs["shapes_after_crop"], strict=False)
    ) + abs(len(ours["shapes_after_crop"]) - len(theirs["shapes_after_crop"]))
    intensity: dict[str, dict[str, dict[str, float]]] = {}
    for channel, their_stats in theirs["foreground_intensity_properties_per_channel"].items():
        our_stats = ours["foreground_intensity_properties_per_channel"][str(channel)]
        scale = their_stats["std"] or 1.0
        intensity[str(channel)] = {
            key: {
                "ours": our_stats[key],
                "nnunet": float(value),
                "abs_diff": abs(our_stats[key] - float(value)),
                "diff_in_nnunet_std": abs(our_stats[key] - float(value)) / scale,
            }
            for key, value in sorted(their_stats.items())
        }
    return {
        "num_cases": [len(ours["spacings"]), len(theirs["spacings"])],
        "spacings_max_abs_diff": (
            float(np.abs(spacing_ours - spacing_theirs).max()) if same_count else None
        ),
        "shapes_after_crop_mismatches": int(shape_mismatches),
        "median_relative_size_after_cropping": [
            ours["median_relative_size_after_cropping"],
            theirs["median_relative_size_after_cropping"],
        ],
        "median_relative_size_abs_diff": abs(
            ours["median_relative_size_after_cropping"]
            - theirs["median_relative_size_after_cropping"]
        ),
        "intensity": intensity,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="raw dataset folder (nnU-Net v2 layout)")
    parser.add_argument("nnunet_fingerprint", type=Path, help="nnU-Net's dataset_fingerprint.json")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=10_000, help="samples per case")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    start = time.perf_counter()
    ours = segflow_fingerprint(args.dataset, args.workers, args.seed, args.samples)
    wall = time.perf_counter() - start
    theirs = json.loads(args.nnunet_fingerprint.read_text(encoding="utf-8"))
    result = {
        "dataset": args.dataset.name,
        **compare(ours, theirs),
        "workers": args.workers,
        "segflow_wall_s": round(wall, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
