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

First the resampling functions alone are compared on random arrays (the shared datasets are
1 mm isotropic and do not resample; the demo dataset does). Then, per dataset and
configuration, it prints one JSON line: the largest absolute difference of the normalized
data, the fraction of equal segmentation voxels, and how many cases have identical crop
boxes, shapes and class-location counts. The last line sums up.

Example (default: Hippocampus 3d_fullres and 2d, ISBI 2d, the demo 3d_fullres and 2d)::

    .venv/bin/python benchmarks/compare_preprocessing_nnunet.py
    .venv/bin/python benchmarks/compare_preprocessing_nnunet.py --dataset Dataset121_ISBI2012EM:2d
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    DEMO_NAME,
    NnUNetPreprocessing,
    add_nnunet_preprocessing,
    case_specs,
    our_plans,
)

from segflow.io.dataset import load_dataset_json
from segflow.preprocessing import open_case, preprocess_cases

logger = logging.getLogger("compare_preprocessing_nnunet")

# segflow's synthetic demo dataset (anisotropic, with a zero frame: it exercises separate-z
# resampling and normalization inside the nonzero mask) is made under nnUNet_raw if missing.
DEFAULT_DATASETS = (
    "Dataset004_Hippocampus:3d_fullres,2d",
    "Dataset121_ISBI2012EM:2d",
    f"{DEMO_NAME}:3d_fullres,2d",
)
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

# Run by nnU-Net's interpreter: resample random images and label maps of several shapes and
# spacings (isotropic, anisotropic in either direction, 2D) with nnU-Net's own functions.
_RESAMPLING_SNIPPET = r"""
import sys
from pathlib import Path
import numpy as np
from scipy.ndimage import gaussian_filter
from nnunetv2.preprocessing.resampling.default_resampling import (
    compute_new_shape, resample_data_or_seg_to_shape)
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
specs = [
    ((7, 23, 19), (3.3, 1.0, 1.0), (3.0, 0.8, 0.9)),
    ((7, 23, 19), (3.3, 1.0, 1.0), (3.3, 1.3, 0.7)),
    ((20, 22, 24), (1.0, 1.0, 1.0), (1.5, 0.7, 1.2)),
    ((12, 30, 31), (1.0, 1.0, 1.0), (4.0, 1.0, 1.0)),
    ((5, 40, 40), (5.0, 0.5, 0.5), (2.0, 1.0, 1.0)),
    ((16, 16, 16), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5)),
    ((30, 20, 10), (1.0, 1.0, 4.5), (1.0, 1.0, 1.0)),
    ((1, 64, 64), (999.0, 1.0, 1.0), (999.0, 0.73, 0.73)),
]
for i, (shape, spacing, new_spacing) in enumerate(specs):
    data = (gaussian_filter(rng.normal(size=shape), 1.5) * 10).astype(np.float32)[None]
    seg = np.zeros(shape, np.int8)
    seg[data[0] > 1] = 1
    seg[data[0] > 3] = 2
    seg[data[0] < -3] = -1
    seg[:, shape[1] // 2, :] = 3
    seg = seg[None]
    new_shape = compute_new_shape(shape, spacing, new_spacing)
    kwargs = dict(order_z=0, force_separate_z=None)
    np.savez(out / f"case{i}.npz", data=data, seg=seg, spacing=spacing,
             new_spacing=new_spacing, new_shape=new_shape,
             data_out=resample_data_or_seg_to_shape(
                 data, new_shape, spacing, new_spacing, is_seg=False, order=3, **kwargs),
             seg_out=resample_data_or_seg_to_shape(
                 seg, new_shape, spacing, new_spacing, is_seg=True, order=1, **kwargs))
"""


# (our plans key, nnU-Net plans key) of the configuration fields preprocessing reads.
def _dump(nnunet: NnUNetPreprocessing, folder: Path, out: Path) -> None:
    """nnU-Net's preprocessed cases of ``folder`` written as arrays to ``out``."""
    script = out.parent / "dump_nnunet.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(_DUMP_SNIPPET, encoding="utf-8")
    subprocess.run([str(nnunet.python), str(script), str(folder), str(out)], check=True)


def compare_resampling(nnunet: NnUNetPreprocessing, work: Path) -> dict[str, Any]:
    """Resample the same random arrays with nnU-Net's functions and with segflow's."""
    from segflow.preprocessing.resampling import (
        compute_new_shape,
        resample_data,
        resample_seg,
        separate_z_axis,
    )

    folder = work / "resampling"
    script = work / "resample_nnunet.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(_RESAMPLING_SNIPPET, encoding="utf-8")
    subprocess.run([str(nnunet.python), str(script), str(folder)], check=True)
    worst_data, seg_equal, seg_voxels, shapes_equal = 0.0, 0, 0, 0
    files = sorted(folder.glob("case*.npz"))
    for path in files:
        case = np.load(path)
        spacing, new_spacing = tuple(case["spacing"]), tuple(case["new_spacing"])
        new_shape = compute_new_shape(case["data"].shape[1:], spacing, new_spacing)
        shapes_equal += list(new_shape) == case["new_shape"].tolist()
        axis = separate_z_axis(spacing, new_spacing)
        data = resample_data(case["data"], new_shape, axis, order=3, order_z=0)
        seg = resample_seg(case["seg"], new_shape, axis, order=1, order_z=0)
        worst_data = max(worst_data, float(np.abs(data - case["data_out"]).max()))
        seg_equal += int((seg == case["seg_out"]).sum())
        seg_voxels += int(seg.size)
    return {
        "check": "resampling",
        "cases": len(files),
        "identical_shapes": shapes_equal,
        "max_abs_diff": worst_data,
        "seg_equal_fraction": seg_equal / seg_voxels,
        "passed": shapes_equal == len(files)
        and worst_data <= DATA_TOLERANCE
        and seg_equal / seg_voxels >= SEG_AGREEMENT,
    }


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
    add_nnunet_preprocessing(parser, DEFAULT_DATASETS)
    parser.add_argument("--max-cases", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    nnunet = NnUNetPreprocessing(args.nnunet_python, args.nnunet_root, args.workers)
    work = args.work or Path(tempfile.mkdtemp(prefix="segflow-compare-pp-"))
    resampling = compare_resampling(nnunet, work)
    print(json.dumps(resampling), flush=True)
    summaries = []
    for spec in args.dataset or DEFAULT_DATASETS:
        name, _, confs = spec.partition(":")
        raw = nnunet.raw / name
        if name == DEMO_NAME and not (raw / "dataset.json").is_file():
            from segflow.demo import make_demo_dataset

            make_demo_dataset(raw, num_training=20, num_test=0, seed=0)
        dataset = load_dataset_json(raw / "dataset.json")
        cases = case_specs(raw, dataset, args.max_cases)
        all_cases = case_specs(raw, dataset, None)
        for configuration in confs.split(","):
            folder = nnunet.ensure_preprocessed(name, configuration, len(all_cases))
            plans, notes = our_plans(nnunet, name, dataset)
            for note in notes:
                logger.warning("%s: plans differ, using nnU-Net's: %s", name, note)
            theirs_dir = work / name / configuration / "nnunet"
            _dump(nnunet, folder, theirs_dir)
            ours_dir = work / name / configuration / "segflow"
            preprocess_cases(cases, plans, configuration, dataset, 0, ours_dir, args.workers)
            rows = [compare_case(ours_dir, theirs_dir, c.case_id) for c in cases]
            sizes = {
                "bytes": sum(p.stat().st_size for p in ours_dir.iterdir()),
                "nnunet_bytes": sum(
                    (folder / f"{c.case_id}{suffix}").stat().st_size
                    for c in cases
                    for suffix in (".b2nd", "_seg.b2nd", ".pkl")
                ),
            }
            if args.verbose:
                for row in rows:
                    print(json.dumps(row))
            summary = {**summarize(name, configuration, rows, notes), **sizes}
            print(json.dumps(summary), flush=True)
            summaries.append(summary)
    print(
        json.dumps(
            {
                "benchmark": "compare_preprocessing_nnunet",
                "passed": resampling["passed"] and all(s["passed"] for s in summaries),
                "resampling": {k: resampling[k] for k in ("max_abs_diff", "seg_equal_fraction")},
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
                            "bytes",
                            "nnunet_bytes",
                            "passed",
                        )
                    }
                    for s in summaries
                ],
            }
        )
    )
    return 0 if resampling["passed"] and all(s["passed"] for s in summaries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
