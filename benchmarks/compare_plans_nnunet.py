"""Compare segflow's plans with nnU-Net v2's on the same data, field by field.

nnU-Net runs in its own virtual environment (``--nnunet-python``, never a segflow
dependency) through its command line: ``nnUNetv2_extract_fingerprint`` and
``nnUNetv2_plan_experiment -pl <planner>`` per preset, in a private work folder.

Real datasets (``--dataset PATH``, default: the shared Hippocampus and ISBI sets):
    --fingerprint-from nnunet   segflow plans from nnU-Net's own dataset_fingerprint.json
                                (isolates the planner).
    --fingerprint-from segflow  segflow computes its fingerprint in-process with
                                segflow.fingerprint (end to end).

Synthetic fingerprints (``--synthetic``): fingerprints that exercise the anisotropic,
transposed, 2D, tiny and 3d_lowres/cascade paths are planned by both; nnU-Net gets them as a
fake preprocessed dataset. ``--record FILE`` writes the fingerprints and nnU-Net's decisions
(in segflow's plans vocabulary) to FILE, which the tests in tests/planning/ check against
without nnU-Net installed.

Every differing field is printed; the last line is one JSON summary.

Example::

    .venv/bin/python benchmarks/compare_plans_nnunet.py --fingerprint-from nnunet
    .venv/bin/python benchmarks/compare_plans_nnunet.py --synthetic \
        --record tests/planning/data/nnunet_expected_plans.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from segflow.io.dataset import DatasetJson, load_dataset_json, parse_dataset_json
from segflow.io.schema import check_against_schema
from segflow.planning import PRESETS, plan_experiment

logger = logging.getLogger("compare_plans_nnunet")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
DEFAULT_DATASETS = ("Dataset004_Hippocampus", "Dataset121_ISBI2012EM")
CONFIG_FIELDS = (
    "data_identifier",
    "spacing",
    "patch_size",
    "batch_size",
    "median_image_size_in_voxels",
    "normalization_schemes",
    "use_mask_for_norm",
    "batch_dice",
    "resampling",
    "previous_stage",
    "next_stage",
)
TOP_FIELDS = (
    "transpose_forward",
    "transpose_backward",
    "original_median_spacing_after_transp",
    "original_median_shape_after_transp",
    "foreground_intensity_properties_per_channel",
)


# --------------------------------------------------------------------------- views


def segflow_view(plans: dict[str, Any]) -> dict[str, Any]:
    """The compared fields of segflow's plans."""
    view = {k: plans[k] for k in TOP_FIELDS}
    view["configurations"] = {}
    for name, conf in plans["configurations"].items():
        entry = {k: conf.get(k) for k in CONFIG_FIELDS}
        net = dict(conf["network"])
        entry["network"] = net
        view["configurations"][name] = entry
    return json.loads(json.dumps(view))


def _short(name: str | None) -> str | None:
    return None if name is None else name.rsplit(".", 1)[-1]


def nnunet_view(plans: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net's plans translated into segflow's vocabulary (inheritance resolved)."""
    view = {k: plans[k] for k in TOP_FIELDS}
    view["configurations"] = {}
    raw = plans["configurations"]
    for name, conf in raw.items():
        if "inherits_from" in conf:
            merged = json.loads(json.dumps(raw[conf["inherits_from"]]))
            merged.update({k: v for k, v in conf.items() if k != "inherits_from"})
            conf = merged
        kw = conf["architecture"]["arch_kwargs"]
        network = {
            "architecture": _short(conf["architecture"]["network_class_name"]),
            "n_stages": kw["n_stages"],
            "features_per_stage": kw["features_per_stage"],
            "kernel_sizes": kw["kernel_sizes"],
            "strides": kw["strides"],
            "n_conv_per_stage_decoder": kw["n_conv_per_stage_decoder"],
            "conv_op": _short(kw["conv_op"]),
            "conv_bias": kw["conv_bias"],
            "norm_op": _short(kw["norm_op"]),
            "norm_op_kwargs": kw["norm_op_kwargs"],
            "dropout_op": _short(kw["dropout_op"]),
            "nonlin": _short(kw["nonlin"]),
            "nonlin_kwargs": kw["nonlin_kwargs"],
        }
        for key in ("n_conv_per_stage", "n_blocks_per_stage"):
            if key in kw:
                network[key] = kw[key]

        def resampling(kwargs: dict[str, Any]) -> dict[str, Any]:
            return {k: kwargs[k] for k in ("order", "order_z", "force_separate_z")}

        view["configurations"][name] = {
            "data_identifier": conf["data_identifier"],
            "spacing": conf["spacing"],
            "patch_size": conf["patch_size"],
            "batch_size": conf["batch_size"],
            "median_image_size_in_voxels": conf["median_image_size_in_voxels"],
            "normalization_schemes": conf["normalization_schemes"],
            "use_mask_for_norm": conf["use_mask_for_norm"],
            "batch_dice": conf.get("batch_dice"),
            "resampling": {
                "data": resampling(conf["resampling_fn_data_kwargs"]),
                "seg": resampling(conf["resampling_fn_seg_kwargs"]),
                "probabilities": resampling(conf["resampling_fn_probabilities_kwargs"]),
            },
            "previous_stage": conf.get("previous_stage"),
            "next_stage": conf.get("next_stage"),
            "network": network,
        }
    return json.loads(json.dumps(view))


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every ``(field, segflow value, nnU-Net value)`` that differs."""
    out = []
    for key in TOP_FIELDS:
        if not _equal(ours.get(key), theirs.get(key)):
            out.append((key, ours.get(key), theirs.get(key)))
    names = list(dict.fromkeys([*theirs["configurations"], *ours["configurations"]]))
    for name in names:
        a = ours["configurations"].get(name)
        b = theirs["configurations"].get(name)
        if a is None or b is None:
            out.append((f"{name}", "present" if a else "absent", "present" if b else "absent"))
            continue
        for key in CONFIG_FIELDS:
            if not _equal(a.get(key), b.get(key)):
                out.append((f"{name}.{key}", a.get(key), b.get(key)))
        for key in sorted(set(a["network"]) | set(b["network"])):
            if not _equal(a["network"].get(key), b["network"].get(key)):
                out.append((f"{name}.network.{key}", a["network"].get(key), b["network"].get(key)))
    return out


# --------------------------------------------------------------------------- nnU-Net


class NnUNet:
    """nnU-Net's command line in its own environment and private folders."""

    def __init__(self, python: Path, workdir: Path, num_processes: int) -> None:
        self.bin = python.parent
        self.raw = workdir / "raw"
        self.pre = workdir / "preprocessed"
        self.num_processes = num_processes
        for folder in (self.raw, self.pre, workdir / "results"):
            folder.mkdir(parents=True, exist_ok=True)
        self.env = dict(
            os.environ,
            nnUNet_raw=str(self.raw),
            nnUNet_preprocessed=str(self.pre),
            nnUNet_results=str(workdir / "results"),
        )

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )

    def fingerprint(self, dataset_id: int, name: str) -> dict[str, Any]:
        path = self.pre / name / "dataset_fingerprint.json"
        if not path.is_file():
            self._run(
                "nnUNetv2_extract_fingerprint",
                "-d",
                str(dataset_id),
                "-np",
                str(self.num_processes),
            )
        return json.loads(path.read_text())

    def plan(
        self, dataset_id: int, name: str, preset: str, gpu_memory_gb: float | None
    ) -> dict[str, Any]:
        planner = PRESETS[preset]
        plans_file = self.pre / name / f"{planner.plans_name}.json"
        # nnU-Net keeps configurations of an existing plans file; start from none.
        plans_file.unlink(missing_ok=True)
        args = ["nnUNetv2_plan_experiment", "-d", str(dataset_id), "-pl", planner.nnunet_planner]
        if gpu_memory_gb is not None:
            args += ["-gpu_memory_target", str(gpu_memory_gb)]
        self._run(*args)
        return json.loads(plans_file.read_text())

    def link_dataset(self, dataset: Path) -> None:
        link = self.raw / dataset.name
        if link.is_symlink() or link.exists():
            if link.resolve() == dataset.resolve():
                return
            link.unlink()
        link.symlink_to(dataset.resolve())

    def fake_dataset(
        self, dataset_id: int, name: str, dataset_json: dict, fingerprint: dict
    ) -> None:
        """A raw folder with only dataset.json and a preprocessed folder with the fingerprint.

        The planner reads no image: the reader is named in dataset.json and the single listed
        case exists only on paper.
        """
        raw = self.raw / f"Dataset{dataset_id:03d}_{name}"
        pre = self.pre / raw.name
        shutil.rmtree(raw, ignore_errors=True)
        shutil.rmtree(pre, ignore_errors=True)
        raw.mkdir(parents=True)
        pre.mkdir(parents=True)
        ending = dataset_json["file_ending"]
        fake = dict(dataset_json)
        fake["overwrite_image_reader_writer"] = "SimpleITKIO"
        fake["dataset"] = {
            "case_000": {
                "images": [
                    f"imagesTr/case_000_{i:04d}{ending}"
                    for i in range(len(dataset_json["channel_names"]))
                ],
                "label": f"labelsTr/case_000{ending}",
            }
        }
        (raw / "dataset.json").write_text(json.dumps(fake, indent=1))
        keys = (
            "spacings",
            "shapes_after_crop",
            "median_relative_size_after_cropping",
            "foreground_intensity_properties_per_channel",
        )
        (pre / "dataset_fingerprint.json").write_text(json.dumps({k: fingerprint[k] for k in keys}))


# --------------------------------------------------------------------------- fingerprints


def fingerprint_from_nnunet(
    nnunet_fp: dict[str, Any], dataset: DatasetJson, name: str, seed: int
) -> dict:
    """segflow's fingerprint keys filled from nnU-Net's dataset_fingerprint.json."""
    spacings = nnunet_fp["spacings"]
    shapes = nnunet_fp["shapes_after_crop"]
    return {
        "dataset_name": name,
        "spacings": spacings,
        "shapes_after_crop": shapes,
        "median_relative_size_after_cropping": nnunet_fp["median_relative_size_after_cropping"],
        "foreground_intensity_properties_per_channel": nnunet_fp[
            "foreground_intensity_properties_per_channel"
        ],
        "num_cases": len(spacings),
        "is_2d": all(s[0] == 1 for s in shapes),
        "seed": seed,
    }


def _fingerprint_one(args: tuple) -> dict[str, Any]:
    from segflow.fingerprint import fingerprint_case

    case_id, images, label, dataset, seed = args
    return fingerprint_case(
        case_id=case_id, images=images, label=label, dataset=dataset, seed=seed, num_samples=10_000
    )


def fingerprint_from_segflow(folder: Path, dataset: DatasetJson, seed: int, workers: int) -> dict:
    """segflow's own fingerprint, computed in-process (``segflow.fingerprint``)."""
    try:
        from segflow.fingerprint import gather_fingerprint
    except ImportError as err:  # the module is written concurrently
        raise SystemExit(f"--fingerprint-from segflow needs segflow.fingerprint: {err}") from None
    ending = dataset.file_ending
    case_ids = sorted(p.name[: -len(ending)] for p in (folder / "labelsTr").glob(f"*{ending}"))
    jobs = [
        (
            case,
            [folder / "imagesTr" / f"{case}_{c:04d}{ending}" for c in range(dataset.num_channels)],
            folder / "labelsTr" / f"{case}{ending}",
            dataset,
            seed,
        )
        for case in case_ids
    ]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        cases = list(pool.map(_fingerprint_one, jobs))
    return gather_fingerprint(cases, dataset, seed=seed)


def _synthetic_case(
    rng: np.random.Generator,
    n: int,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
    spacing_jitter: tuple[float, float, float] = (0.0, 0.0, 0.0),
    shape_jitter: float = 0.0,
) -> tuple[list[list[float]], list[list[int]]]:
    spacings, shapes = [], []
    for _ in range(n):
        sp = [
            round(float(s * (1 + j * rng.uniform(-1, 1))), 4)
            for s, j in zip(spacing, spacing_jitter, strict=True)
        ]
        sh = [
            max(1, round(k * (1 + shape_jitter * rng.uniform(-1, 1)))) if k > 1 else 1
            for k in shape
        ]
        spacings.append(sp)
        shapes.append(sh)
    return spacings, shapes


def _intensities(num_channels: int, mean: float, std: float) -> dict[str, dict[str, float]]:
    return {
        str(c): {
            "max": mean + 6 * std,
            "mean": mean,
            "median": mean,
            "min": mean - 4 * std,
            "percentile_00_5": mean - 3 * std,
            "percentile_99_5": mean + 3 * std,
            "std": std,
        }
        for c in range(num_channels)
    }


def synthetic_cases() -> dict[str, dict[str, Any]]:
    """Fingerprints (and dataset.json) for the planning paths real data here does not reach."""
    rng = np.random.default_rng(20260101)

    def case(
        name: str,
        channels: dict[str, str],
        labels: dict[str, Any],
        spacings: list,
        shapes: list,
        relative_size: float,
        mean: float,
        std: float,
        ending: str = ".nii.gz",
        gpu_memory_target_gb: float | None = None,
    ) -> dict[str, Any]:
        dataset_json = {
            "name": name,
            "channel_names": channels,
            "labels": labels,
            "numTraining": len(spacings),
            "file_ending": ending,
        }
        fingerprint = {
            "dataset_name": name,
            "spacings": spacings,
            "shapes_after_crop": shapes,
            "median_relative_size_after_cropping": relative_size,
            "foreground_intensity_properties_per_channel": _intensities(len(channels), mean, std),
            "num_cases": len(spacings),
            "is_2d": all(s[0] == 1 for s in shapes),
        }
        return {
            "dataset_json": dataset_json,
            "fingerprint": fingerprint,
            "gpu_memory_target_gb": gpu_memory_target_gb,
        }

    cases = {}
    two_class = {"background": 0, "organ": 1}
    # Isotropic CT, mid-sized: 3d_fullres and 2d only.
    sp, sh = _synthetic_case(rng, 30, (1.0, 0.8, 0.8), (160, 190, 190), (0.1, 0.1, 0.1), 0.15)
    cases["isotropic_ct"] = case("IsotropicCT", {"0": "CT"}, two_class, sp, sh, 0.9, 80.0, 120.0)
    # Thick slices: 5 mm (some 3 mm) by 0.7 mm, 20 slices; two channels, brain-like cropping
    # (mask used for the z-scored channel), an ignore label (counted as an output by nnU-Net).
    sp, sh = _synthetic_case(rng, 24, (5.0, 0.7, 0.7), (20, 320, 320), (0.0, 0.05, 0.05), 0.1)
    for i in range(0, 24, 5):
        sp[i][0] = 3.0
        sh[i][0] = 33
    cases["anisotropic_mri"] = case(
        "AnisotropicMRI",
        {"0": "T2", "1": "noNorm"},
        {"background": 0, "lesion": 1, "edema": 2, "ignore": 3},
        sp,
        sh,
        0.6,
        300.0,
        90.0,
    )
    # The coarse axis is the last one (x): the axes get transposed.
    sp, sh = _synthetic_case(rng, 16, (0.9, 0.9, 4.0), (256, 256, 36), (0.05, 0.05, 0.1), 0.1)
    cases["transposed_mri"] = case(
        "TransposedMRI", {"0": "MRI"}, two_class, sp, sh, 0.8, 500.0, 150.0
    )
    # 2D RGB images read as z=1 at spacing 999: only the 2d configuration.
    sp, sh = _synthetic_case(rng, 40, (999.0, 0.5, 0.5), (1, 768, 1024), (0.0, 0.0, 0.0), 0.2)
    cases["rgb_2d"] = case(
        "RGB2D",
        {"0": "R", "1": "G", "2": "B"},
        {"background": 0, "cell": 1, "nucleus": 2},
        sp,
        sh,
        1.0,
        120.0,
        40.0,
        ending=".png",
    )
    # Tiny volumes: few pooling steps, and a batch limited by the 5% dataset cap.
    sp, sh = _synthetic_case(rng, 60, (1.0, 1.0, 1.0), (16, 16, 16), (0.0, 0.0, 0.0), 0.0)
    cases["tiny"] = case("Tiny", {"0": "rescale_to_0_1"}, two_class, sp, sh, 1.0, 0.5, 0.2)
    # Large CT (0.8 x 0.8 x 2.5 mm, 400 x 512 x 512): 3d_lowres and the cascade.
    sp, sh = _synthetic_case(rng, 50, (2.5, 0.8, 0.8), (400, 512, 512), (0.2, 0.1, 0.1), 0.1)
    cases["huge_ct"] = case(
        "HugeCT", {"0": "CT"}, {"background": 0, "liver": 1, "tumor": 2}, sp, sh, 0.95, 90.0, 40.0
    )
    # The same with a user-given 12 GB target: budgets scale linearly.
    cases["huge_ct_12gb"] = dict(cases["huge_ct"], gpu_memory_target_gb=12.0)
    # Slightly too large for one fullres patch: the lowres search ends less than 2x smaller,
    # so 3d_lowres is dropped again.
    sp, sh = _synthetic_case(rng, 20, (1.0, 1.0, 1.0), (220, 230, 230), (0.0, 0.0, 0.0), 0.05)
    cases["lowres_dropped"] = case(
        "LowresDropped", {"0": "MRI"}, two_class, sp, sh, 0.5, 200.0, 50.0
    )
    return cases


# --------------------------------------------------------------------------- runs


def _dataset_id(name: str) -> int:
    match = re.match(r"Dataset(\d{3})_", name)
    if match is None:
        raise SystemExit(f"{name}: folder name must look like DatasetXXX_Name")
    return int(match.group(1))


def _dump_compact(data: Any) -> str:
    """JSON with one line per innermost list of numbers, so that recorded files stay short."""
    text = json.dumps(data, indent=1)
    return re.sub(
        r"\[\s*([^\[\]{}]*?)\s*\]",
        lambda m: (
            "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]" if m.group(1) else "[]"
        ),
        text,
    )


def _report(label: str, diffs: list[tuple[str, Any, Any]]) -> None:
    if not diffs:
        print(f"{label}: identical")
    for field, ours, theirs in diffs:
        print(f"{label}: {field}: segflow={json.dumps(ours)} nnunet={json.dumps(theirs)}")


def intensity_difference(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """Largest difference of any intensity statistic, in units of that channel's std.

    Both tools sample foreground voxels (differently, each seeded), so these statistics agree
    only up to sampling noise; they are reported, not counted as differing decisions.
    """
    worst = 0.0
    for channel, stats in theirs.items():
        scale = max(float(stats["std"]), 1e-8)
        for key, value in stats.items():
            worst = max(worst, abs(float(ours[channel][key]) - float(value)) / scale)
    return worst


def compare_real(
    args: argparse.Namespace, nnunet: NnUNet, intensity: dict[str, float]
) -> dict[str, int]:
    counts: dict[str, int] = {}
    datasets = args.dataset or [SHARED_DATA / d for d in DEFAULT_DATASETS]
    for folder in datasets:
        folder = Path(folder).resolve()
        name, dataset_id = folder.name, _dataset_id(folder.name)
        dataset = load_dataset_json(folder / "dataset.json")
        nnunet.link_dataset(folder)
        nnunet_fp = nnunet.fingerprint(dataset_id, name)
        if args.fingerprint_from == "nnunet":
            fingerprint = fingerprint_from_nnunet(nnunet_fp, dataset, name, args.seed)
        else:
            fingerprint = fingerprint_from_segflow(folder, dataset, args.seed, args.num_processes)
        for preset in args.presets:
            theirs = nnunet_view(nnunet.plan(dataset_id, name, preset, args.gpu_memory_gb))
            plans = plan_experiment(fingerprint, dataset, preset, args.gpu_memory_gb, args.seed)
            check_against_schema(plans, "plans", f"{name}/{preset}")
            ours = segflow_view(plans)
            if args.fingerprint_from == "segflow":
                key = "foreground_intensity_properties_per_channel"
                intensity[name] = intensity_difference(ours.pop(key), theirs.pop(key))
            diffs = differences(ours, theirs)
            _report(f"{name} {preset}", diffs)
            counts[f"{name}/{preset}"] = len(diffs)
    return counts


def compare_synthetic(args: argparse.Namespace, nnunet: NnUNet) -> dict[str, int]:
    counts: dict[str, int] = {}
    record: dict[str, Any] = {"nnunet_version": "2.8.1", "cases": {}}
    for i, (name, spec) in enumerate(synthetic_cases().items()):
        dataset_id = 900 + i
        nnunet.fake_dataset(dataset_id, name, spec["dataset_json"], spec["fingerprint"])
        dataset, problems = parse_dataset_json(spec["dataset_json"])
        if dataset is None or problems:
            raise SystemExit(f"synthetic case {name}: bad dataset.json: {problems}")
        expected = {}
        for preset in args.presets:
            gpu = spec["gpu_memory_target_gb"]
            theirs = nnunet_view(
                nnunet.plan(dataset_id, f"Dataset{dataset_id:03d}_{name}", preset, gpu)
            )
            expected[preset] = theirs
            plans = plan_experiment(spec["fingerprint"], dataset, preset, gpu, args.seed)
            check_against_schema(plans, "plans", f"{name}/{preset}")
            diffs = differences(segflow_view(plans), theirs)
            _report(f"{name} {preset}", diffs)
            counts[f"{name}/{preset}"] = len(diffs)
        record["cases"][name] = dict(spec, expected=expected)
    if args.record is not None:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(_dump_compact(record) + "\n")
        print(
            f"recorded nnU-Net's plans for {len(record['cases'])} synthetic cases in {args.record}"
        )
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", type=Path, action="append", help="raw dataset folder (repeatable)"
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--fingerprint-from", choices=("nnunet", "segflow"), default="nnunet")
    parser.add_argument(
        "--synthetic", action="store_true", help="compare on synthetic fingerprints"
    )
    parser.add_argument(
        "--record", type=Path, default=None, help="with --synthetic: write expected plans here"
    )
    parser.add_argument(
        "--gpu-memory-gb", type=float, default=None, help="memory target for real datasets"
    )
    parser.add_argument("--nnunet-python", type=Path, default=Path("/tmp/nnunet-venv/bin/python"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/segflow_compare_plans"))
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.record is not None and not args.synthetic:
        parser.error("--record needs --synthetic")
    if not (args.nnunet_python.parent / "nnUNetv2_plan_experiment").exists():
        parser.error(f"nnU-Net not found beside {args.nnunet_python}")
    logging.basicConfig(level=logging.WARNING)

    nnunet = NnUNet(args.nnunet_python, args.workdir, args.num_processes)
    intensity: dict[str, float] = {}
    if args.synthetic:
        counts = compare_synthetic(args, nnunet)
    else:
        counts = compare_real(args, nnunet, intensity)
    summary = {
        "benchmark": "compare_plans_nnunet",
        "mode": "synthetic" if args.synthetic else f"fingerprint-from-{args.fingerprint_from}",
        "comparisons": len(counts),
        "differing_fields": sum(counts.values()),
        "per_comparison": counts,
    }
    if intensity:
        summary["intensity_stats_max_diff_in_std"] = {k: round(v, 5) for k, v in intensity.items()}
    print(json.dumps(summary))
    return 0 if summary["differing_fields"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
