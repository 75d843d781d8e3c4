"""Prediction speed per backend and precision: segflow's PyTorch, OpenVINO and ONNX Runtime
paths (float32, and bfloat16 where the CPU has it natively) against nnU-Net v2.

Issue 29 ("Deployment"). Each run predicts the same held-out cases with test-time mirroring,
one case at a time with every thread, in a fresh process (``segflow predict`` or
``nnUNetv2_predict``), the runs alternating round by round so that a change of the machine's
load spreads over all of them. Before the timed rounds every segflow run predicts one case
(warm-up: it converts the folds to ONNX, into a cache the timed runs read, and its wall time
is the fixed cost a run pays before its first case).

Reported per run (one JSON line each, then a Markdown table): median wall seconds over the
rounds, seconds per case (wall / cases) and the marginal seconds per case ((wall - warm-up
wall) / (cases - 1), the cost of one more case once the model is loaded), the peak summed RSS
of the process tree, the mean Dice per class against the labels, and the share of voxels equal
to the PyTorch float32 segmentation; with the speed-up per case over nnU-Net where it ran.
The CPU's model name and its bf16 flags are printed first: a CPU without ``avx512_bf16`` or
``amx_bf16`` gets no bfloat16 rows (the benchmark runs unchanged there).

Inputs: the held-out Hippocampus dataset and fold-0 models that
``benchmarks/train_vs_nnunet.py`` leaves (``--holdout``, ``--segflow-model``, ``--nnunet-work``);
for ISBI 2012 2d, ``--isbi-holdout`` and ``--isbi-model`` (skipped when not given).

Example (a quiet machine, all 40 held-out cases, 3 rounds)::

    .venv/bin/python benchmarks/deploy_speed.py --rounds 3

Each round also prints its own seconds per case at once (a run cut short keeps them). With a
model nnU-Net trained elsewhere (``benchmarks/nnunet_interop.py``'s work folder, whose results
folder is ``results``, and its ``segflow import-nnunet`` copy)::

    .venv/bin/python benchmarks/deploy_speed.py --rounds 2 \
        --holdout /tmp/nnunet_interop_full/raw/Dataset004_Hippocampus \
        --segflow-model /tmp/dp/sf_model --nnunet-work /tmp/nnunet_interop_full \
        --nnunet-results /tmp/nnunet_interop_full/results

and a quick check on 5 cases without nnU-Net::

    .venv/bin/python benchmarks/deploy_speed.py --cases 5 --rounds 1 --skip-nnunet
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import HOLDOUT, SEGFLOW_MODEL, TreeMonitor
from common import NNUNET_TRAINER as TRAINER


@dataclass
class Task:
    """A held-out dataset and the models that predict it."""

    name: str
    holdout: Path
    segflow_model: Path
    nnunet: list[str] | None = None  # nnUNetv2_predict's -d/-c/-tr/... arguments, or None
    cases: list[str] = field(default_factory=list)


def cpu_description() -> dict[str, Any]:
    """The CPU's model name and which bf16 instructions it has."""
    from segflow.inference.backends import cpu_flags

    name = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))  # fmt: skip
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    flags = cpu_flags()
    return {
        "cpu": name,
        "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"}),
        "native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "threads": len(os.sched_getaffinity(0)),
    }


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    with TreeMonitor(proc.pid, interval=0.2) as rss:
        _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - start, rss.peak_rss


def _inputs(task: Task, out: Path, count: int | None) -> Path:
    """A folder of links to the task's first ``count`` held-out cases (all: None)."""
    images = sorted((task.holdout / "imagesTs").glob("*_0000.*"))
    chosen = sorted({p.name.split("_0000.")[0] for p in images})[:count]
    task.cases = chosen
    folder = out / f"{task.name}_images_{len(chosen)}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in images:
        if path.name.split("_0000.")[0] in chosen:
            for channel in sorted(path.parent.glob(path.name.replace("_0000.", "_????."))):
                (folder / channel.name).symlink_to(channel.absolute())
    return folder


def _segmentations(task: Task, folder: Path) -> dict[str, np.ndarray]:
    from segflow.io.dataset import load_dataset_json
    from segflow.io.image import read_image

    ending = load_dataset_json(task.holdout / "dataset.json").file_ending
    return {c: read_image(folder / f"{c}{ending}").array for c in task.cases}


def _dice(task: Task, predictions: Path) -> dict[str, float]:
    from segflow.evaluation.evaluate import evaluate_files, summarize
    from segflow.io.dataset import load_dataset_json

    dataset = load_dataset_json(task.holdout / "dataset.json")
    ending = dataset.file_ending
    labels = task.holdout / "labelsTs"
    rows = evaluate_files(
        [(c, labels / f"{c}{ending}", predictions / f"{c}{ending}") for c in task.cases], dataset
    )
    return {k: round(v["dice"], 4) for k, v in summarize(rows)["mean"].items()}


def _segflow_cmd(task: Task, images: Path, out: Path, backend: str, precision: str,
                 threads: int) -> list[str]:  # fmt: skip
    return [
        sys.executable, "-m", "segflow", "predict", "-i", str(images), "-o", str(out),
        "-m", str(task.segflow_model), "-f", "0", "--device", "cpu", "--threads", str(threads),
        "--backend", backend, "--precision", precision,
    ]  # fmt: skip


def _runs(native_bf16: bool) -> list[tuple[str, str]]:
    runs = [(b, "float32") for b in ("torch", "openvino", "onnxruntime", "auto")]
    if native_bf16:
        runs += [("torch", "bfloat16"), ("openvino", "bfloat16")]
    return runs


def measure(task: Task, args: argparse.Namespace, cpu: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of ``task``, alternating over ``args.rounds`` rounds; the result rows."""
    out = args.out / task.name
    images = _inputs(task, out, args.cases)
    one = _inputs(Task(task.name + "_one", task.holdout, task.segflow_model), out, 1)
    env = dict(os.environ, SEGFLOW_CACHE_DIR=str(out / "onnx_cache"))
    threads = cpu["threads"]
    runs: dict[str, tuple[list[str], dict[str, str], Path]] = {}
    warmup: dict[str, float] = {}
    for backend, precision in _runs(cpu["native_bf16"]):
        name = f"segflow {backend} {precision}"
        target = out / f"{backend}_{precision}"
        runs[name] = (_segflow_cmd(task, images, target, backend, precision, threads), env, target)
        shutil.rmtree(out / "warmup", ignore_errors=True)
        warm = _segflow_cmd(task, one, out / "warmup", backend, precision, threads)
        warmup[name] = _run(warm, env)[0]
    if task.nnunet is not None and not args.skip_nnunet:
        nnunet_env = dict(
            os.environ,
            nnUNet_raw=str(args.nnunet_work / "raw"),
            nnUNet_preprocessed=str(args.nnunet_work / "pre"),
            nnUNet_results=str(args.nnunet_results or args.nnunet_work / "res"),
        )
        target = out / "nnunet"
        runs["nnunet"] = ([str(args.nnunet_bin / "nnUNetv2_predict"), "-i", str(images),
                           "-o", str(target), *task.nnunet, "-device", "cpu",
                           "-npp", "1", "-nps", "1"], nnunet_env, target)  # fmt: skip
    walls: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, list[int]] = {name: [] for name in runs}
    for round_ in range(args.rounds):
        order = list(runs) if round_ % 2 == 0 else list(reversed(runs))  # alternate
        for name in order:
            cmd, run_env, target = runs[name]
            shutil.rmtree(target, ignore_errors=True)
            wall, peak = _run(cmd, run_env)
            walls[name].append(wall)
            peaks[name].append(peak)
        # Each round's times as soon as it ends (a run cut short still leaves them).
        print(json.dumps({"task": task.name, "round": round_ + 1, "cases": len(task.cases),
                          "seconds_per_case": {n: round(w[-1] / len(task.cases), 3)
                                               for n, w in walls.items()},
                          "peak_rss_gb": {n: round(x[-1] / 1024**3, 3) for n, x in peaks.items()},
                          "load_avg": round(os.getloadavg()[0], 2)}), flush=True)  # fmt: skip
    reference = _segmentations(task, runs["segflow torch float32"][2])
    total = sum(s.size for s in reference.values())
    rows = []
    for name, (_, _, target) in runs.items():
        wall = statistics.median(walls[name])
        count = len(task.cases)
        seg = _segmentations(task, target)
        equal = sum(int((seg[c] == reference[c]).sum()) for c in task.cases)
        row = {
            "task": task.name,
            "run": name,
            "cases": count,
            "rounds": args.rounds,
            "wall_s": round(wall, 2),
            "seconds_per_case": round(wall / count, 3),
            "marginal_seconds_per_case": (
                round((wall - warmup[name]) / (count - 1), 3)
                if name in warmup and count > 1 else None
            ),
            "peak_rss_gb": round(max(peaks[name]) / 1024**3, 3),
            "dice": _dice(task, target),
            "equal_to_torch_float32": round(equal / total, 6),
            "load_avg_after": round(os.getloadavg()[0], 2),
        }  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]]) -> None:
    print("\n| task | run | s/case | marginal s/case | peak RSS (GB) | Dice per class | "
          "voxels = torch fp32 | speed-up vs nnU-Net |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        nnunet = next((x for x in rows if x["task"] == r["task"] and x["run"] == "nnunet"), None)
        ratio = f"{nnunet['seconds_per_case'] / r['seconds_per_case']:.2f}x" if nnunet else "-"
        dice = ", ".join(f"{k} {v:.4f}" for k, v in r["dice"].items())
        marginal = r["marginal_seconds_per_case"]
        print(f"| {r['task']} | {r['run']} | {r['seconds_per_case']:.2f} | "
              f"{'-' if marginal is None else f'{marginal:.2f}'} | {r['peak_rss_gb']:.2f} | "
              f"{dice} | {100 * r['equal_to_torch_float32']:.3f} % | {ratio} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout", type=Path, default=HOLDOUT)
    parser.add_argument("--segflow-model", type=Path, default=SEGFLOW_MODEL)
    parser.add_argument("--nnunet-work", type=Path, default=Path("/tmp/nnunet_ho"))
    parser.add_argument("--nnunet-bin", type=Path, default=Path("/tmp/nnunet-venv/bin"))
    parser.add_argument("--nnunet-results", type=Path, default=None,
                        help="nnUNet_results (default: <nnunet-work>/res)")  # fmt: skip
    parser.add_argument("--skip-nnunet", action="store_true")
    parser.add_argument("--isbi-holdout", type=Path, default=None,
                        help="held-out ISBI 2012 dataset (imagesTs, labelsTs)")  # fmt: skip
    parser.add_argument("--isbi-model", type=Path, default=None,
                        help="segflow's 2d model for it (fold_0/checkpoint_final.pt)")  # fmt: skip
    parser.add_argument("--cases", type=int, default=None, help="the first N cases (default all)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per run")
    parser.add_argument("--out", type=Path, default=Path("/tmp/deploy_speed"))
    args = parser.parse_args()
    args.out = args.out.absolute()

    cpu = cpu_description()
    print(json.dumps({"benchmark": "deploy_speed", **cpu}), flush=True)
    holdout = args.holdout.absolute()
    tasks = [Task("hippocampus_3d_fullres", holdout, args.segflow_model.absolute(),
                  ["-d", holdout.name, "-c", "3d_fullres", "-f", "0", "-tr", TRAINER,
                   "-chk", "checkpoint_final.pth"])]  # fmt: skip
    if args.isbi_holdout is not None and args.isbi_model is not None:
        tasks.append(Task("isbi2012_2d", args.isbi_holdout.absolute(), args.isbi_model.absolute()))
    rows = [row for task in tasks for row in measure(task, args, cpu)]
    _table(rows)


if __name__ == "__main__":
    main()
