"""Compare segflow's export of predictions with nnU-Net v2's on the same logits.

For a few training cases of each dataset and configuration, segflow preprocesses the case
(plans from segflow's planner fed with nnU-Net's fingerprint, the preprocessing fields
aligned to nnU-Net's plans as in ``compare_preprocessing_nnunet.py``) and makes logits on the
preprocessed grid: three times the one-hot of the preprocessed label plus smooth noise, so
that boundaries are uncertain and resampling matters. The same logits go through

- segflow: :func:`segflow.inference.export.logits_to_segmentation` and
  :func:`~segflow.inference.export.write_segmentation`;
- nnU-Net (in its own virtual environment, with its own preprocessing properties of the
  case): ``convert_predicted_logits_to_segmentation_with_correct_shape`` (segmentation and
  probabilities) and ``export_prediction_from_logits`` (the written file).

It prints one JSON line: per dataset and configuration, the fraction of voxels on which the
segmentations agree, how many cases are identical, the largest difference of the
probabilities, and whether the written files hold the same labels and header (size,
spacing, origin, direction), which must also be the input's. ``resampled_cases`` counts the
cases whose preprocessing changed the spacing (Hippocampus is 1 mm isotropic and is only
cropped; the demo dataset's thick slices are resampled). nnU-Net's preprocessed folders
are reused (or made) as in ``compare_preprocessing_nnunet.py``.

Example::

    .venv/bin/python benchmarks/compare_export_nnunet.py --max-cases 5
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
import SimpleITK as sitk
from common import (
    DEMO_NAME,
    NnUNetPreprocessing,
    add_nnunet_preprocessing,
    case_specs,
    our_plans,
)
from scipy import ndimage

from segflow.inference.export import logits_to_segmentation, write_segmentation
from segflow.io.dataset import load_dataset_json
from segflow.preprocessing import preprocess_case

logger = logging.getLogger("compare_export_nnunet")

DEFAULT_DATASETS = (
    "Dataset004_Hippocampus:3d_fullres,2d",
    f"{DEMO_NAME}:3d_fullres,2d",
)
SEG_AGREEMENT = 0.999
PROBABILITY_TOLERANCE = 1e-3

# Run by nnU-Net's interpreter: export every logits file of a folder with nnU-Net's functions.
_EXPORT_SNIPPET = r"""
import json, pickle, sys
from pathlib import Path
import numpy as np, torch
from nnunetv2.inference.export_prediction import (
    convert_predicted_logits_to_segmentation_with_correct_shape, export_prediction_from_logits)
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
pre, configuration, src, dst = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
dst.mkdir(parents=True, exist_ok=True)
plans = PlansManager(str(pre / "nnUNetPlans.json"))
conf = plans.get_configuration(configuration)
dataset_json = json.loads((pre / "dataset.json").read_text())
labels = plans.get_label_manager(dataset_json)
for path in sorted(src.glob("*.npz")):
    case = path.stem
    logits = np.load(path)["logits"]
    props = pickle.load(open(pre / conf.data_identifier / f"{case}.pkl", "rb"))
    seg, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
        torch.from_numpy(logits.copy()), plans, conf, labels, props,
        return_probabilities=True, num_threads_torch=1)
    export_prediction_from_logits(torch.from_numpy(logits.copy()), props, conf, plans,
                                  dataset_json, str(dst / case), num_threads_torch=1)
    np.savez(dst / f"{case}_arrays.npz", seg=np.asarray(seg),
             probabilities=np.asarray(probabilities, dtype=np.float32))
"""


def make_logits(seg: np.ndarray, heads: int, rng: np.random.Generator) -> np.ndarray:
    """``3 * one_hot(seg)`` plus smooth unit noise per channel, float32 ``(heads, *spatial)``."""
    labels = np.maximum(seg[0], 0)
    logits = np.empty((heads, *labels.shape), dtype=np.float32)
    for c in range(heads):
        noise = ndimage.gaussian_filter(rng.normal(size=labels.shape), 1.5)
        noise /= noise.std() or 1.0
        logits[c] = 3.0 * (labels == c) + noise
    return logits


def _header(path: Path) -> tuple:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()


def compare(
    nnunet: NnUNetPreprocessing, name: str, configuration: str, max_cases: int, work: Path
) -> dict:
    raw = nnunet.raw / name
    dataset = load_dataset_json(raw / "dataset.json")
    all_cases = case_specs(raw, dataset, None)
    nnunet.ensure_preprocessed(name, configuration, len(all_cases))
    plans, notes = our_plans(nnunet, name, dataset)
    for note in notes:
        logger.warning("%s: plans differ, using nnU-Net's: %s", name, note)
    folder = work / name / configuration
    logits_dir, theirs_dir, ours_dir = folder / "logits", folder / "nnunet", folder / "segflow"
    logits_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    props_of = {}
    for spec in all_cases[:max_cases]:
        _, seg, props = preprocess_case(spec.images, spec.label, plans, configuration, dataset, 0)
        logits = make_logits(seg, dataset.num_segmentation_heads, rng)
        np.savez(logits_dir / f"{spec.case_id}.npz", logits=logits)
        props_of[spec.case_id] = props
    script = work / "export_nnunet.py"
    script.write_text(_EXPORT_SNIPPET, encoding="utf-8")
    subprocess.run(
        [
            str(nnunet.python),
            str(script),
            str(nnunet.pre / name),
            configuration,
            str(logits_dir),
            str(theirs_dir),
        ],
        check=True,
    )

    equal = voxels = identical = files_equal = headers_equal = 0
    worst_probability = 0.0
    ending = dataset.file_ending
    for case, props in props_of.items():
        logits = np.load(logits_dir / f"{case}.npz")["logits"]
        seg, probabilities = logits_to_segmentation(
            logits, props, plans, configuration, dataset, return_probabilities=True
        )
        theirs = np.load(theirs_dir / f"{case}_arrays.npz")
        if seg.shape != theirs["seg"].shape:
            logger.warning("%s: shapes differ: %s vs %s", case, seg.shape, theirs["seg"].shape)
            voxels += seg.size
            continue
        same = int((seg == theirs["seg"]).sum())
        equal, voxels = equal + same, voxels + seg.size
        identical += same == seg.size
        diff = np.abs(probabilities - theirs["probabilities"]).max()
        worst_probability = max(worst_probability, float(diff))
        ours_file = write_segmentation(seg, props, ours_dir / f"{case}{ending}")
        their_file = theirs_dir / f"{case}{ending}"
        files_equal += np.array_equal(
            sitk.GetArrayFromImage(sitk.ReadImage(str(ours_file))),
            sitk.GetArrayFromImage(sitk.ReadImage(str(their_file))),
        )
        input_file = raw / "imagesTr" / props["image_files"][0]
        headers_equal += _header(ours_file) == _header(their_file) == _header(input_file)
    cases = len(props_of)
    resampled = sum(
        p["shape_after_resampling"] != p["shape_after_cropping"] for p in props_of.values()
    )
    fraction = equal / voxels if voxels else None
    return {
        "dataset": name,
        "configuration": configuration,
        "cases": cases,
        "resampled_cases": resampled,
        "seg_equal_fraction": fraction,
        "identical_segmentations": identical,
        "probabilities_max_abs_diff": worst_probability,
        "identical_files": files_equal,
        "identical_headers": headers_equal,
        "plans_fields_taken_from_nnunet": len(notes),
        "passed": bool(
            fraction is not None
            and fraction >= SEG_AGREEMENT
            and worst_probability <= PROBABILITY_TOLERANCE
            and headers_equal == cases
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_nnunet_preprocessing(parser, DEFAULT_DATASETS)
    parser.add_argument("--max-cases", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    nnunet = NnUNetPreprocessing(args.nnunet_python, args.nnunet_root, args.workers)
    work = args.work or Path(tempfile.mkdtemp(prefix="segflow-compare-export-"))
    results: list[dict[str, Any]] = []
    for spec in args.dataset or DEFAULT_DATASETS:
        name, _, confs = spec.partition(":")
        for configuration in confs.split(","):
            results.append(compare(nnunet, name, configuration, args.max_cases, work))
    summary = {
        "benchmark": "compare_export_nnunet",
        "passed": all(r["passed"] for r in results),
        "results": results,
    }
    print(json.dumps(summary), flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
