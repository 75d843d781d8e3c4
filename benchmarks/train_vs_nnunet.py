"""Train 3d_fullres fold 0 on held-out Hippocampus with a short budget: segflow vs nnU-Net v2.

Issue 4 ("Quality and speed"): hold 40 of the 200 shared Hippocampus cases out as a test set
(``segflow holdout``: symbolic links, no copies), train 3d_fullres fold 0 of the 5-fold split
over the remaining 160 cases with the same budget in both tools, and compare the validation
Dice per class and the seconds per training iteration.

``--nnunet`` runs nnU-Net v2 from scratch in its own virtual environment (never a segflow
dependency) and private folders under ``--work``: fingerprint, plans (3d_fullres and 2d),
preprocessing, the short trainer of ``benchmarks/nnunet_short_trainer.py`` copied into the
installed package (see shared/NNUNET_REFERENCE.md for why it goes there), training under
``/usr/bin/time -v`` with nnU-Net's log in ``<work>/train.log``, and nnU-Net's own final
validation of fold 0. ``--segflow`` runs segflow's trainer with the same budget.

Each mode prints one JSON line; ``--result FILE`` also writes it to FILE.

Example: the issue-4 budget, 12 epochs x 20 iterations (+5 validation iterations each), about
20 minutes of nnU-Net training on a quiet 2-core machine (epochs of 20+5 iterations took
127-258 s here while other jobs held the cores: load average about 4)::

    .venv/bin/python benchmarks/train_vs_nnunet.py --nnunet --epochs 12 --iterations 20 \
        --val-iterations 5 --result /tmp/nnunet_ho/result.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    CONFIGURATION,
    NNUNET_TRAINER,
    REPO,
    TreeMonitor,
    add_holdout_budget,
    add_nnunet_python,
    add_result,
    emit,
    segflow_holdout_config,
)

from segflow.holdout import make_holdout

logger = logging.getLogger("train_vs_nnunet")

TRAINER = NNUNET_TRAINER
TRAINER_SOURCE = REPO / "benchmarks" / "nnunet_short_trainer.py"


# --------------------------------------------------------------------------- measuring


def _max_rss_gb(time_output: Path) -> float | None:
    """``Maximum resident set size`` from ``/usr/bin/time -v``: the largest single process."""
    if not time_output.is_file():
        return None
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_output.read_text())
    return round(int(match[1]) / 1024**2, 2) if match else None


# --------------------------------------------------------------------------- nnU-Net


class NnUNet:
    """nnU-Net's command line in its own environment and private folders under ``work``."""

    def __init__(self, python: Path, work: Path, dataset_id: int, dataset_name: str) -> None:
        self.bin = python.parent
        self.python = python
        self.work = work
        self.dataset_id = dataset_id
        self.dataset_name = dataset_name
        self.env = dict(
            os.environ,
            nnUNet_raw=str(work / "raw"),
            nnUNet_preprocessed=str(work / "pre"),
            nnUNet_results=str(work / "res"),
        )

    def run(self, command: str, *args: str, log: Path | None = None) -> float:
        """Run ``nnUNetv2_<command>``; return its wall time in seconds."""
        cmd = [str(self.bin / f"nnUNetv2_{command}"), *args]
        logger.info("%s", " ".join(cmd))
        start = time.perf_counter()
        if log is None:
            subprocess.run(cmd, env=self.env, check=True, stdout=subprocess.DEVNULL)
        else:
            with open(log, "a", encoding="utf-8") as fh:
                subprocess.run(cmd, env=self.env, check=True, stdout=fh, stderr=subprocess.STDOUT)
        return time.perf_counter() - start

    @property
    def plans_file(self) -> Path:
        return self.work / "pre" / self.dataset_name / "nnUNetPlans.json"

    def fold_dir(self, fold: int) -> Path:
        return (
            self.work / "res" / self.dataset_name / f"{TRAINER}__nnUNetPlans__{CONFIGURATION}"
            / f"fold_{fold}"
        )  # fmt: skip

    def install_trainer(self) -> Path:
        """Copy the short trainer where nnU-Net finds it (the trainer folder's top level)."""
        where = "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"
        package = subprocess.run(
            [str(self.python), "-c", where], check=True, capture_output=True, text=True
        ).stdout.strip()
        target = Path(package) / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
        shutil.copyfile(TRAINER_SOURCE, target)
        return target


def _dataset_id(name: str) -> int:
    match = re.fullmatch(r"Dataset(\d{3})_\w+", name)
    if match is None:
        sys.exit(f"dataset folder {name!r} is not named DatasetXXX_Name as nnU-Net needs")
    return int(match[1])


def _prepare_nnunet(args: argparse.Namespace, nn: NnUNet, holdout_dir: Path) -> float | None:
    """Fresh raw/preprocessed folders, fingerprint, plans and preprocessing; their wall time."""
    done = nn.plans_file.is_file() and (nn.plans_file.parent / "nnUNetPlans_3d_fullres").is_dir()
    if args.reuse_preprocessed and done:
        logger.info("reusing %s", nn.plans_file.parent)
        return None
    for sub in ("raw", "pre"):
        shutil.rmtree(nn.work / sub, ignore_errors=True)
    (nn.work / "raw").mkdir(parents=True)
    (nn.work / "raw" / nn.dataset_name).symlink_to(holdout_dir)
    did, np_ = str(nn.dataset_id), str(args.num_processes)
    log = nn.work / "preprocess.log"
    log.unlink(missing_ok=True)
    wall = nn.run("extract_fingerprint", "-d", did, "-np", np_, "--verify_dataset_integrity",
                  log=log)  # fmt: skip
    wall += nn.run("plan_experiment", "-d", did, log=log)
    wall += nn.run("preprocess", "-d", did, "-c", CONFIGURATION, "2d", "-np", np_, np_, log=log)
    return wall


def _epoch_times(fold_dir: Path) -> list[float]:
    times: list[float] = []
    for log in sorted(fold_dir.glob("training_log_*.txt")):
        times += [float(t) for t in re.findall(r"Epoch time: ([\d.]+) s", log.read_text())]
    return times


def _dice(summary_file: Path, labels: dict[str, Any]) -> dict[str, float]:
    """Per-class validation Dice from nnU-Net's ``summary.json``, keyed by label name."""
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    names = {str(v): k for k, v in labels.items() if isinstance(v, int)}
    return {names.get(k, k): round(v["Dice"], 4) for k, v in summary["mean"].items()}


def _train_nnunet(args: argparse.Namespace, nn: NnUNet) -> dict[str, Any]:
    shutil.rmtree(nn.fold_dir(args.fold), ignore_errors=True)
    log = nn.work / "train.log"
    time_out = nn.work / "train.time.txt"
    env = dict(
        nn.env,
        SEGFLOW_NNUNET_EPOCHS=str(args.epochs),
        SEGFLOW_NNUNET_ITERATIONS=str(args.iterations),
        SEGFLOW_NNUNET_VAL_ITERATIONS=str(args.val_iterations),
    )
    cmd = [
        "/usr/bin/time", "-v", "-o", str(time_out),
        str(nn.bin / "nnUNetv2_train"), str(nn.dataset_id), CONFIGURATION, str(args.fold),
        "-device", "cpu", "-tr", TRAINER,
    ]  # fmt: skip
    logger.info("%s (log: %s)", " ".join(cmd), log)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        with TreeMonitor(proc.pid) as monitor:
            rc = proc.wait()
    wall = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"nnUNetv2_train failed with status {rc}; see {log}")
    return {
        "wall": wall,
        "peak_rss_tree_gb": round(monitor.peak_rss / 1024**3, 2),
        "max_rss_process_gb": _max_rss_gb(time_out),
        "mean_load_1min": round(statistics.fmean(monitor.loads), 2) if monitor.loads else None,
    }


def run_nnunet(args: argparse.Namespace) -> dict[str, Any]:
    """nnU-Net v2 from scratch on the held-out dataset; the result line."""
    holdout_dir = args.holdout.absolute()
    record = make_holdout(args.dataset, holdout_dir, args.num_test, args.seed)
    nn = NnUNet(args.nnunet_python, args.work.absolute(), _dataset_id(holdout_dir.name),
                holdout_dir.name)  # fmt: skip
    nn.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    preprocess_wall = _prepare_nnunet(args, nn, holdout_dir)
    nn.install_trainer()
    train = _train_nnunet(args, nn)

    fold_dir = nn.fold_dir(args.fold)
    epoch_times = _epoch_times(fold_dir)
    labels = json.loads((holdout_dir / "dataset.json").read_text(encoding="utf-8"))["labels"]
    dice = _dice(fold_dir / "validation" / "summary.json", labels)
    conf = json.loads(nn.plans_file.read_text(encoding="utf-8"))["configurations"][CONFIGURATION]
    # An epoch's time covers its training and validation iterations and the epoch's logging.
    per_iteration = statistics.median(epoch_times) / args.iterations if epoch_times else None
    return {
        "tool": "nnunet",
        "configuration": CONFIGURATION,
        "fold": args.fold,
        "epochs": args.epochs,
        "iterations_per_epoch": args.iterations,
        "val_iterations_per_epoch": args.val_iterations,
        "seconds_per_iteration": round(per_iteration, 2) if per_iteration else None,
        "epoch_times_s": [round(t, 1) for t in epoch_times],
        "wall_s": round(train["wall"], 1),
        "preprocess_wall_s": None if preprocess_wall is None else round(preprocess_wall, 1),
        "dice_per_class": dice,
        "mean_dice": round(statistics.fmean(dice.values()), 4),
        "patch_size": conf["patch_size"],
        "batch_size": conf["batch_size"],
        "num_training_cases": len(record["training_cases"]),
        "num_test_cases": len(record["test_cases"]),
        "peak_rss_tree_gb": train["peak_rss_tree_gb"],
        "max_rss_process_gb": train["max_rss_process_gb"],
        "load_avg_before": [round(x, 2) for x in load_before],
        "mean_load_1min_during": train["mean_load_1min"],
        "cpus": len(os.sched_getaffinity(0)),
        "fold_dir": str(fold_dir),
    }


# --------------------------------------------------------------------------- segflow


def _dice_per_class(reference: Any, prediction: Any, labels: dict[str, int]) -> dict[str, float]:
    """Dice of each foreground label; NaN where both are empty (as nnU-Net's summary)."""
    import numpy as np

    dice = {}
    for name, value in labels.items():
        if not isinstance(value, int) or value == 0:
            continue
        ref, pred = reference == value, prediction == value
        denominator = int(ref.sum()) + int(pred.sum())
        overlap = int(np.logical_and(ref, pred).sum())
        dice[name] = 2 * overlap / denominator if denominator else float("nan")
    return dice


def _validate_segflow(
    results: Path, holdout_dir: Path, fold: int, threads: int
) -> tuple[dict[str, float], float]:
    """Predict the fold's held-out cases from their preprocessed data (test-time mirroring on,
    as nnU-Net's final validation), compare with the raw labels in the original geometry;
    the mean Dice per class over the cases and the seconds it took."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from segflow.inference import PredictionOptions, predict_case
    from segflow.inference.model import load_trained_fold
    from segflow.io.dataset import load_dataset_json
    from segflow.planning.plans import load_plans
    from segflow.preprocessing.storage import open_case

    torch.set_num_threads(threads)
    plans = load_plans(results / "plans.json")
    dataset = load_dataset_json(holdout_dir / "dataset.json")
    splits = json.loads((results / "splits.json").read_text(encoding="utf-8"))
    val_cases = splits["folds"][fold]["val"]
    trained = load_trained_fold(
        results / "models" / CONFIGURATION / f"fold_{fold}" / "checkpoint_final.pt", plans
    )
    labels = {k: v for k, v in dataset.labels.items() if isinstance(v, int)}
    per_case = []
    start = time.perf_counter()
    for case_id in val_cases:
        case = open_case(results / "preprocessed" / CONFIGURATION, case_id)
        with torch.inference_mode():
            segmentation = predict_case(
                trained.network, case.data, case.properties, plans, CONFIGURATION, dataset,
                PredictionOptions(mirror_axes=trained.mirror_axes),
            )  # fmt: skip
        label_file = holdout_dir / "labelsTr" / f"{case_id}{dataset.file_ending}"
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        per_case.append(_dice_per_class(reference, np.asarray(segmentation), labels))
    seconds = time.perf_counter() - start
    means = {name: round(float(np.nanmean([d[name] for d in per_case])), 4) for name in per_case[0]}
    return means, seconds


def run_segflow(args: argparse.Namespace) -> dict[str, Any]:
    """segflow's workflow on the same held-out dataset, fold and budget; the result line
    (the keys of :func:`run_nnunet`, ``"tool": "segflow"``).

    Snakemake runs validation, fingerprint, plans, 3d_fullres preprocessing, the split and the
    fold's training under ``--work``; then the fold's validation cases are predicted and
    scored in the original geometry.
    """
    import yaml

    holdout_dir = args.holdout.absolute()
    record = make_holdout(args.dataset, holdout_dir, args.num_test, args.seed)
    work = args.work.absolute()
    results = work / "results"
    fold_dir = results / "models" / CONFIGURATION / f"fold_{args.fold}"
    if not args.reuse_preprocessed:
        shutil.rmtree(results, ignore_errors=True)
    shutil.rmtree(fold_dir, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    config_file = work / "config.yaml"
    config_file.write_text(yaml.safe_dump(segflow_holdout_config(args, holdout_dir, results)))
    snakemake = [
        str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(REPO), "--configfile", str(config_file), "--cores", str(args.cores),
    ]  # fmt: skip
    log = work / "snakemake.log"
    load_before = os.getloadavg()

    # Everything up to training, timed apart from it.
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        subprocess.run([*snakemake, "preprocessed"],
                       check=True, stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
    preprocess_wall = time.perf_counter() - start

    logger.info("training %s fold %d (log: %s)", CONFIGURATION, args.fold, log)
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        proc = subprocess.Popen([*snakemake, str(fold_dir / "checkpoint_final.pt")],
                                stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
        with TreeMonitor(proc.pid) as monitor:
            rc = proc.wait()
    wall = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"segflow training failed with status {rc}; see {log} and {fold_dir}")

    import csv

    with open(fold_dir / "progress.csv", encoding="utf-8") as fh:
        epoch_times = [float(row["epoch_seconds"]) for row in csv.DictReader(fh)]
    logger.info("validating fold %d", args.fold)
    dice, validation_s = _validate_segflow(results, holdout_dir, args.fold, args.threads)
    conf = json.loads((results / "plans.json").read_text(encoding="utf-8"))
    conf = conf["configurations"][CONFIGURATION]
    per_iteration = statistics.median(epoch_times) / args.iterations if epoch_times else None
    return {
        "tool": "segflow",
        "configuration": CONFIGURATION,
        "fold": args.fold,
        "epochs": args.epochs,
        "iterations_per_epoch": args.iterations,
        "val_iterations_per_epoch": args.val_iterations,
        "seconds_per_iteration": round(per_iteration, 2) if per_iteration else None,
        "epoch_times_s": [round(t, 1) for t in epoch_times],
        "wall_s": round(wall, 1),
        "preprocess_wall_s": round(preprocess_wall, 1),
        "validation_wall_s": round(validation_s, 1),
        "dice_per_class": dice,
        "mean_dice": round(statistics.fmean(dice.values()), 4),
        "patch_size": conf["patch_size"],
        "batch_size": conf["batch_size"],
        "num_training_cases": len(record["training_cases"]),
        "num_test_cases": len(record["test_cases"]),
        "peak_rss_tree_gb": round(monitor.peak_rss / 1024**3, 2),
        "max_rss_process_gb": None,
        "load_avg_before": [round(x, 2) for x in load_before],
        "mean_load_1min_during": (
            round(statistics.fmean(monitor.loads), 2) if monitor.loads else None
        ),
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_bf16": args.bf16,
        "threads": args.threads,
        "fold_dir": str(fold_dir),
    }


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--nnunet", action="store_true", help="train with nnU-Net v2")
    mode.add_argument("--segflow", action="store_true", help="train with segflow")
    add_holdout_budget(parser)
    parser.add_argument(
        "--work", type=Path, default=None,
        help="nnU-Net: raw/, pre/, res/ and logs (default /tmp/nnunet_ho); "
             "segflow: config, results/ and logs (default /tmp/segflow_ho)",
    )  # fmt: skip
    add_nnunet_python(parser)
    parser.add_argument("--num-processes", type=int, default=2, help="nnU-Net's -np")
    parser.add_argument(
        "--reuse-preprocessed", action="store_true",
        help="keep nnU-Net's plans and preprocessed data from an earlier run in --work",
    )  # fmt: skip
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="segflow: bfloat16 autocast on the CPU (training.cpu_bf16)",
    )
    parser.add_argument("--threads", type=int, default=2, help="segflow: training.threads")
    parser.add_argument("--cores", type=int, default=2, help="segflow: snakemake --cores")
    add_result(parser)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.work is None:
        args.work = Path("/tmp/nnunet_ho" if args.nnunet else "/tmp/segflow_ho")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = run_nnunet(args) if args.nnunet else run_segflow(args)
    emit(result, args.result)


if __name__ == "__main__":
    main()
