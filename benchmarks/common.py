"""What the benchmarks share, so that no benchmark imports another: where the data and the
reference installs are, the options every comparison with nnU-Net takes, how a result line is
printed, how a command's time and memory are measured, and the look-ups of several scripts.

A benchmark imports this module as ``common`` (Python puts the script's folder on the path):
``from common import REPO, emit``. Code shared with the tests lives in the package instead
(:mod:`segflow.networks.patterns`, :func:`segflow.fingerprint.geometry.geometry_fingerprint`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIGURATION",
    "DEFAULT_PLANS",
    "DEMO_NAME",
    "HOLDOUT",
    "NNUNET_PYTHON",
    "NUM_OUTPUTS",
    "REPO",
    "SEGFLOW_MODEL",
    "SHARED_DATA",
    "Measured",
    "NnUNetPreprocessing",
    "TreeMonitor",
    "add_holdout_budget",
    "add_holdout_model",
    "add_nnunet_preprocessing",
    "add_nnunet_python",
    "add_result",
    "case_specs",
    "cpu_name",
    "emit",
    "fingerprint_from_nnunet",
    "hippocampus_plans",
    "our_plans",
    "run_measured",
    "segflow_holdout_config",
    "short_budget_config",
    "windows_of",
]

logger = logging.getLogger("benchmarks")

# --------------------------------------------------------------------------- where things are

REPO = Path(__file__).resolve().parents[1]
#: The shared real datasets (MSD Hippocampus, ISBI2012): ``$SEGFLOW_SHARED_DATA`` or the
#: ``shared/data`` folder beside the repository.
SHARED_DATA = Path(os.environ.get("SEGFLOW_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
#: nnU-Net v2's interpreter, in its own virtual environment (never a segflow dependency).
NNUNET_PYTHON = Path("/tmp/nnunet-venv/bin/python")
#: The short nnU-Net trainer the benchmarks install (benchmarks/nnunet_short_trainer.py).
NNUNET_TRAINER = "nnUNetTrainer_segflowShort"
#: The demo dataset's name (``make_demo_dataset``).
DEMO_NAME = "Dataset990_SegflowDemo"
#: The configuration the Hippocampus comparisons train.
CONFIGURATION = "3d_fullres"
#: Where ``train_vs_nnunet.py`` leaves the held-out dataset and segflow's fold-0 model.
HOLDOUT = Path("/tmp/hippo_holdout/Dataset004_Hippocampus")
SEGFLOW_MODEL = Path("/tmp/segflow_ho/results/models/3d_fullres")
#: Hippocampus plans of a workflow run, when there is one; else planned from the images.
DEFAULT_PLANS = REPO / "results" / "Dataset004_Hippocampus" / "plans.json"
NUM_OUTPUTS = 3  # Hippocampus: background, anterior, posterior

# --------------------------------------------------------------------------- options and output


def add_nnunet_python(parser: argparse.ArgumentParser) -> None:
    """``--nnunet-python``: the interpreter of nnU-Net's virtual environment."""
    parser.add_argument(
        "--nnunet-python",
        type=Path,
        default=NNUNET_PYTHON,
        help="nnU-Net v2's interpreter (its own virtual environment)",
    )


def add_nnunet_preprocessing(parser: argparse.ArgumentParser, datasets: Sequence[str]) -> None:
    """The options of a comparison on nnU-Net's preprocessed data: the datasets and
    configurations (default ``datasets``), nnU-Net's interpreter, the root of its folders (kept
    between runs), a scratch folder and nnU-Net's worker count."""
    parser.add_argument(
        "--dataset",
        action="append",
        help="NAME:CONF[,CONF...] under <nnunet-root>/raw (repeatable); default: "
        + " ".join(datasets),
    )
    add_nnunet_python(parser)
    parser.add_argument("--nnunet-root", type=Path, default=Path("/tmp/nnunet"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--workers", type=int, default=2, help="for nnU-Net's preprocessing")


def add_holdout_model(parser: argparse.ArgumentParser) -> None:
    """``--holdout`` and ``--segflow-model``: what ``train_vs_nnunet.py`` left behind."""
    parser.add_argument("--holdout", type=Path, default=HOLDOUT, help="the held-out dataset")
    parser.add_argument("--segflow-model", type=Path, default=SEGFLOW_MODEL)


def add_holdout_budget(parser: argparse.ArgumentParser) -> None:
    """The held-out Hippocampus comparisons' options: the dataset and its held-out copy, the
    fold and the short training budget (what :func:`segflow_holdout_config` reads)."""
    parser.add_argument(
        "--dataset", type=Path, default=SHARED_DATA / "Dataset004_Hippocampus",
        help="labelled raw dataset to hold cases out of",
    )  # fmt: skip
    parser.add_argument(
        "--holdout", type=Path, default=HOLDOUT,
        help="held-out dataset folder (made by segflow holdout; reused when identical)",
    )  # fmt: skip
    parser.add_argument("--num-test", type=int, default=40, help="cases held out")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the holdout choice")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True, help="per epoch")
    parser.add_argument("--val-iterations", type=int, default=5, help="per epoch")


def add_result(parser: argparse.ArgumentParser) -> None:
    """``--result FILE``: also write the result line to FILE."""
    parser.add_argument("--result", type=Path, default=None, help="also write the line here")


def emit(result: Any, path: Path | None = None) -> None:
    """Print ``result`` as the benchmark's one JSON line (and write it to ``path``)."""
    line = json.dumps(result)
    print(line, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n", encoding="utf-8")


def cpu_name() -> str:
    """The CPU's model name (``lscpu``'s), for the result line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --------------------------------------------------------------------------- measuring


class TreeMonitor:
    """Samples a process tree's summed RSS and the load average every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while True:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(self.pid)
                rss = 0
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        rss += proc.memory_info().rss
                self.peak_rss = max(self.peak_rss, rss)
                self.loads.append(os.getloadavg()[0])
            if self._stop.wait(self.interval):
                return


@dataclasses.dataclass(frozen=True)
class Measured:
    """A finished command: wall and CPU seconds of its process tree, peak RSS, its output."""

    wall: float
    cpu: float
    peak: int
    output: str


def run_measured(
    cmd: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    interval: float = 0.01,
) -> Measured:
    """Run ``cmd`` to the end, measuring it; exit with its output's tail if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with TreeMonitor(proc.pid, interval=interval) as memory:
        out, _ = proc.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-4000:]}")
    return Measured(wall, cpu, memory.peak_rss, text)


# --------------------------------------------------------------------------- Hippocampus


def hippocampus_plans(path: Path = DEFAULT_PLANS) -> Any:
    """Hippocampus plans: ``path`` if it exists, else planned (default preset) from the shared
    images' geometry."""
    from segflow.fingerprint.geometry import geometry_fingerprint
    from segflow.io.dataset import load_dataset_json
    from segflow.planning import Plans, load_plans, plan_experiment

    if path.is_file():
        return load_plans(path)
    folder = SHARED_DATA / "Dataset004_Hippocampus"
    dataset = load_dataset_json(folder / "dataset.json")
    return Plans.from_dict(plan_experiment(geometry_fingerprint(folder), dataset, "default"))


def windows_of(path: Path, patch: tuple[int, ...]) -> int:
    """Windows of a raw Hippocampus image at step 0.5.

    Hippocampus is planned at its own 1 mm spacing without transposition: the preprocessed
    image has the raw image's size (cropping to nonzero aside, which only shrinks it), in
    numpy's (z, y, x) order.
    """
    from segflow.inference.sliding_window import padding_for_patch, window_starts
    from segflow.job_resources import image_geometry

    size = image_geometry(path)[0]
    pads = padding_for_patch(size, patch)
    padded = [s + lo + hi for s, (lo, hi) in zip(size, pads, strict=True)]
    return math.prod(len(s) for s in window_starts(padded, patch))


def short_budget_config(
    args: argparse.Namespace, dataset: Path, results: Path, configuration: str = CONFIGURATION
) -> dict[str, Any]:
    """A workflow config that trains one configuration and fold (``args.fold``) on the CPU
    with a short budget (``args.epochs``, ``iterations``, ``val_iterations``, ``threads``)."""
    return {
        "dataset": str(dataset),
        "results": str(results),
        "seed": 12345,
        "preprocessing": {"cases_per_job": 100, "threads": 1},
        "training": {
            "configurations": [configuration],
            "folds": [args.fold],
            "epochs": args.epochs,
            "iterations_per_epoch": args.iterations,
            "val_iterations_per_epoch": args.val_iterations,
            "checkpoint_every": args.epochs,
            "device": "cpu",
            "threads": args.threads,
        },
    }


def segflow_holdout_config(
    args: argparse.Namespace, holdout_dir: Path, results: Path
) -> dict[str, Any]:
    """The workflow config of a segflow run on the held-out Hippocampus: the short budget of
    :func:`short_budget_config`, with ``args.bf16`` (``training.cpu_bf16``)."""
    config = short_budget_config(args, holdout_dir, results)
    config["validation"] = {"threads": 2}
    config["training"]["cpu_bf16"] = args.bf16
    return config


# --------------------------------------------------------------------------- nnU-Net's data


class NnUNetPreprocessing:
    """nnU-Net's planning and preprocessing commands in its own virtual environment, with its
    folders under ``root``."""

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


#: (segflow's, nnU-Net's) configuration keys that :func:`our_plans` takes from nnU-Net's plans.
_ALIGNED_FIELDS = (
    ("spacing", "spacing"),
    ("normalization_schemes", "normalization_schemes"),
    ("use_mask_for_norm", "use_mask_for_norm"),
    ("patch_size", "patch_size"),
)


def _same(a: Any, b: Any) -> bool:
    import numpy as np

    if isinstance(a, list) and a and isinstance(a[0], (int, float)):
        return len(a) == len(b) and bool(np.allclose(a, b, rtol=1e-9, atol=0))
    return a == b


def our_plans(nnunet: NnUNetPreprocessing, name: str, dataset: Any) -> tuple[Any, list[str]]:
    """segflow's plans from nnU-Net's fingerprint, preprocessing fields aligned to nnU-Net's."""
    from segflow.planning import Plans, plan_experiment

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
        for ours_key, their_key in _ALIGNED_FIELDS:
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


def case_specs(raw: Path, dataset: Any, max_cases: int | None) -> list[Any]:
    """The training cases of a raw dataset (the first ``max_cases``, if given)."""
    from segflow.preprocessing import CaseSpec

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
