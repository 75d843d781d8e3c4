"""Compare segflow's preprocessing with nnU-Net v2's on the same data and the same plans.

nnU-Net runs in its own virtual environment (``--nnunet-python``; never a segflow
dependency) with ``nnUNet_raw``/``nnUNet_preprocessed`` under ``--nnunet-root``. Its
preprocessed folders are reused when complete; missing plans or configurations are made
with ``nnUNetv2_plan_and_preprocess`` / ``nnUNetv2_preprocess``. A short helper run by
nnU-Net's interpreter dumps its arrays and properties to ``.npz`` files.

segflow preprocesses the same cases with plans from segflow's planner fed with nnU-Net's
fingerprint; the fields preprocessing reads (transpose, target spacing, normalization, mask
use, foreground intensities, resampling orders) are then checked against nnUNetPlans.json
and, where they differ, taken from nnU-Net's plans so that only preprocessing is compared
(every such difference is printed).

Per dataset and configuration it prints one JSON line: the largest absolute difference of
the normalized data, the fraction of equal segmentation voxels, and how many cases have
identical crop boxes, shapes and class-location counts. The last line sums up.

Example::

    .venv/bin/python benchmarks/compare_preprocessing_nnunet.py \
        --dataset Dataset004_Hippocampus:3d_fullres,2d --dataset Dataset121_ISBI2012EM:2d
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from segflow.io.dataset import DatasetJson, load_dataset_json
from segflow.planning import Plans, plan_experiment
from segflow.preprocessing import CaseSpec, open_case, preprocess_cases

logger = logging.getLogger("compare_preprocessing_nnunet")

DEFAULT_DATASETS = ("Dataset004_Hippocampus:3d_fullres,2d", "Dataset121_ISBI2012EM:2d")
DATA_TOLERANCE = 1e-3
SEG_AGREEMENT = 0.999

# Run by nnU-Net's interpreter: dump every preprocessed case of one folder to .npz.
_DUMP_SNIPPET = r"""
import json, pickle, sys
from pathlib import Path
import blosc2, numpy as np
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for pkl in sorted(src.glob("*.pkl")):
    case = pkl.name[:-4]
    props = pickle.load(open(pkl, "rb"))
    data = blosc2.open(str(src / f"{case}.b2nd"), mode="r")[...]
    seg = blosc2.open(str(src / f"{case}_seg.b2nd"), mode="r")[...]
    counts = {str(k if not isinstance(k, tuple) else ",".join(map(str, k))): len(v)
              for k, v in props.get("class_locations", {}).items()}
    np.savez(dst / f"{case}.npz", data=data, seg=seg,
             bbox=np.asarray(props["bbox_used_for_cropping"]),
             shape_before=np.asarray(props["shape_before_cropping"]),
             shape_after_crop=np.asarray(props["shape_after_cropping_and_before_resampling"]),
             counts=np.asarray(json.dumps(counts)))
"""

# (our plans key, nnU-Net plans key) of the configuration fields preprocessing reads.
_CONFIG_FIELDS = (
    ("spacing", "spacing"),
    ("normalization_schemes", "normalization_schemes"),
    ("use_mask_for_norm", "use_mask_for_norm"),
    ("patch_size", "patch_size"),
)


class NnUNet:
    """nnU-Net's command line in its own virtual environment."""

    def __init__(self, python: Path, root: Path, workers: int) -> None:
        self.python = python
        self.bin = python.parent
        self.workers = workers
        self.env = {
            **os.environ,
            "nnUNet_raw": str(root / "raw"),
            "nnUNet_preprocessed": str(root / "pre"),
            "nnUNet_results": str(root / "res"),
        }
        self.raw = root / "raw"
        self.pre = root / "pre"

    def run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        logger.info("running %s", " ".join(cmd))
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")

    def ensure_preprocessed(self, name: str, configuration: str, num_cases: int) -> Path:
        dataset_id = str(int(name[len("Dataset") : len("Dataset") + 3]))
        plans = self.pre / name / "nnUNetPlans.json"
        if not plans.is_file():
            self.run(
                "nnUNetv2_plan_and_preprocess",
                "-d",
                dataset_id,
                "-np",
                str(self.workers),
                "-c",
                configuration,
            )
        folder = self.pre / name / f"nnUNetPlans_{configuration}"
        if len(list(folder.glob("*.pkl"))) != num_cases:
            self.run(
                "nnUNetv2_preprocess",
                "-d",
                dataset_id,
                "-c",
                configuration,
                "-np",
                str(self.workers),
            )
        return folder

    def dump(self, folder: Path, out: Path) -> None:
        script = out.parent / "dump_nnunet.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(_DUMP_SNIPPET, encoding="utf-8")
        subprocess.run([str(self.python), str(script), str(folder), str(out)], check=True)


def fingerprint_from_nnunet(nnunet_fp: dict[str, Any], name: str) -> dict[str, Any]:
    """segflow's fingerprint keys filled from nnU-Net's dataset_fingerprint.json."""
    shapes = nnunet_fp["shapes_after_crop"]
    return {
        "dataset_name": name,
        "spacings": nnunet_fp["spacings"],
        "shapes_after_crop": shapes,
        "median_relative_size_after_cropping": nnunet_fp["median_relative_size_after_cropping"],
        "foreground_intensity_properties_per_channel": nnunet_fp[
            "foreground_intensity_properties_per_channel"
        ],
        "num_cases": len(shapes),
        "is_2d": all(s[0] == 1 for s in shapes),
        "seed": 0,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and a and isinstance(a[0], (int, float)):
        return len(a) == len(b) and bool(np.allclose(a, b, rtol=1e-9, atol=0))
    return a == b


def our_plans(nnunet: NnUNet, name: str, dataset: DatasetJson) -> tuple[Plans, list[str]]:
    """segflow's plans from nnU-Net's fingerprint, preprocessing fields aligned to nnU-Net's."""
    fingerprint = json.loads((nnunet.pre / name / "dataset_fingerprint.json").read_text())
    theirs = json.loads((nnunet.pre / name / "nnUNetPlans.json").read_text())
    plans = plan_experiment(fingerprint_from_nnunet(fingerprint, name), dataset)
    notes = []
    for key in (
        "transpose_forward",
        "transpose_backward",
        "foreground_intensity_properties_per_channel",
    ):
        if plans[key] != theirs[key]:
            notes.append(f"{key}: segflow {plans[key]} nnU-Net {theirs[key]}")
            plans[key] = theirs[key]
    for conf_name, conf in plans["configurations"].items():
        other = theirs["configurations"].get(conf_name)
        if other is None:
            continue
        for ours_key, their_key in _CONFIG_FIELDS:
            if not _same(conf[ours_key], other[their_key]):
                notes.append(
                    f"{conf_name}.{ours_key}: segflow {conf[ours_key]} nnU-Net {other[their_key]}"
                )
                conf[ours_key] = other[their_key]
        for step in ("data", "seg", "probabilities"):
            kwargs = other[f"resampling_fn_{step}_kwargs"]
            wanted = {k: kwargs[k] for k in ("order", "order_z", "force_separate_z")}
            if conf["resampling"][step] != wanted:
                notes.append(
                    f"{conf_name}.resampling.{step}: segflow "
                    f"{conf['resampling'][step]} nnU-Net {wanted}"
                )
                conf["resampling"][step] = wanted
    return Plans.from_dict(plans), notes


def case_specs(raw: Path, dataset: DatasetJson, max_cases: int | None) -> list[CaseSpec]:
    ending = dataset.file_ending
    ids = sorted(p.name[: -len(ending)] for p in (raw / "labelsTr").glob(f"*{ending}"))
    if max_cases:
        ids = ids[:max_cases]
    return [
        CaseSpec(
            case_id=case,
            images=tuple(
                raw / "imagesTr" / f"{case}_{c:04d}{ending}" for c in range(dataset.num_channels)
            ),
            label=raw / "labelsTr" / f"{case}{ending}",
        )
        for case in ids
    ]


def compare_case(ours_dir: Path, theirs_dir: Path, case_id: str) -> dict[str, Any]:
    ours = open_case(ours_dir, case_id)
    theirs = np.load(theirs_dir / f"{case_id}.npz")
    props = ours.properties
    data = ours.data[...]
    seg = ours.seg[...]
    same_shape = data.shape == theirs["data"].shape and seg.shape == theirs["seg"].shape
    counts = {k: len(v) for k, v in props["class_locations"].items()}
    their_counts = json.loads(str(theirs["counts"]))
    row = {
        "case": case_id,
        "shape": list(data.shape),
        "same_shapes": bool(
            same_shape
            and props["shape_before_cropping"] == theirs["shape_before"].tolist()
            and props["shape_after_cropping"] == theirs["shape_after_crop"].tolist()
        ),
        "same_bbox": props["bbox_used_for_cropping"] == theirs["bbox"].tolist(),
        "same_location_counts": counts == their_counts,
    }
    if same_shape:
        row["max_abs_diff"] = float(np.abs(data - theirs["data"]).max()) if data.size else 0.0
        row["seg_equal"] = int((seg == theirs["seg"]).sum())
        row["seg_voxels"] = int(seg.size)
    return row


def summarize(name: str, configuration: str, rows: list[dict[str, Any]], notes) -> dict:
    compared = [r for r in rows if "max_abs_diff" in r]
    seg_equal = sum(r["seg_equal"] for r in compared)
    seg_voxels = sum(r["seg_voxels"] for r in compared)
    worst = max(compared, key=lambda r: r["max_abs_diff"], default=None)
    summary = {
        "dataset": name,
        "configuration": configuration,
        "cases": len(rows),
        "max_abs_diff": worst["max_abs_diff"] if worst else None,
        "worst_case": worst["case"] if worst else None,
        "seg_equal_fraction": seg_equal / seg_voxels if seg_voxels else None,
        "identical_bbox": sum(r["same_bbox"] for r in rows),
        "identical_shapes": sum(r["same_shapes"] for r in rows),
        "identical_class_location_counts": sum(r["same_location_counts"] for r in rows),
        "plans_fields_taken_from_nnunet": notes,
    }
    summary["passed"] = bool(
        worst is not None
        and summary["max_abs_diff"] <= DATA_TOLERANCE
        and summary["seg_equal_fraction"] >= SEG_AGREEMENT
        and summary["identical_bbox"] == len(rows)
        and summary["identical_shapes"] == len(rows)
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        action="append",
        help="NAME:CONF[,CONF...] under <nnunet-root>/raw (repeatable); default: "
        + " ".join(DEFAULT_DATASETS),
    )
    parser.add_argument("--nnunet-python", type=Path, default=Path("/tmp/nnunet-venv/bin/python"))
    parser.add_argument("--nnunet-root", type=Path, default=Path("/tmp/nnunet"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-cases", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    nnunet = NnUNet(args.nnunet_python, args.nnunet_root, args.workers)
    work = args.work or Path(tempfile.mkdtemp(prefix="segflow-compare-pp-"))
    summaries = []
    for spec in args.dataset or DEFAULT_DATASETS:
        name, _, confs = spec.partition(":")
        raw = nnunet.raw / name
        dataset = load_dataset_json(raw / "dataset.json")
        cases = case_specs(raw, dataset, args.max_cases)
        all_cases = case_specs(raw, dataset, None)
        for configuration in confs.split(","):
            folder = nnunet.ensure_preprocessed(name, configuration, len(all_cases))
            plans, notes = our_plans(nnunet, name, dataset)
            for note in notes:
                logger.warning("%s: plans differ, using nnU-Net's: %s", name, note)
            theirs_dir = work / name / configuration / "nnunet"
            nnunet.dump(folder, theirs_dir)
            ours_dir = work / name / configuration / "segflow"
            preprocess_cases(cases, plans, configuration, dataset, 0, ours_dir, args.workers)
            rows = [compare_case(ours_dir, theirs_dir, c.case_id) for c in cases]
            if args.verbose:
                for row in rows:
                    print(json.dumps(row))
            summary = summarize(name, configuration, rows, notes)
            print(json.dumps(summary), flush=True)
            summaries.append(summary)
    print(
        json.dumps(
            {
                "benchmark": "compare_preprocessing_nnunet",
                "passed": all(s["passed"] for s in summaries),
                "results": [
                    {
                        k: s[k]
                        for k in (
                            "dataset",
                            "configuration",
                            "cases",
                            "max_abs_diff",
                            "seg_equal_fraction",
                            "identical_bbox",
                            "identical_shapes",
                            "passed",
                        )
                    }
                    for s in summaries
                ],
            }
        )
    )
    return 0 if all(s["passed"] for s in summaries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
