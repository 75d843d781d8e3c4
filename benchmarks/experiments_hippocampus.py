"""Training variants compared on held-out Hippocampus, 3d_fullres fold 0, one small budget.

Issue 16 ("Experiments"): the BraTS 2021 extensions (BL, BL+L, BL+GN, BL+AA, BL+L+GN) and the
exponential logarithmic and focal losses, each trained with the same budget on the same split
of the same held-out dataset as ``train_vs_nnunet.py`` (40 of the 200 shared Hippocampus cases
held out by ``segflow holdout``, seed 12345; fold 0 of the 5-fold split of the other 160).

How: the real workflow. One config (``train_vs_nnunet``'s segflow config plus an
``experiments`` section naming the chosen experiments) and Snakemake, run under ``--work``:

1. everything up to training once (validation, fingerprint, plans, preprocessing, splits);
2. per experiment, the training job alone (``models/3d_fullres__<exp>/fold_0``) under
   ``train_vs_nnunet.TreeMonitor``: the peak RSS of the whole process tree (Snakemake and the
   training process with its augmentation workers), sampled every second;
3. per experiment, its cross-validation (``crossval/3d_fullres__<exp>/summary.json``: fold 0's
   32 validation cases predicted with test-time mirroring and scored against the raw labels;
   its ``model`` entry has the parameters and the median seconds per training iteration);
4. per experiment, ``segflow predict`` of the 40 held-out cases with that model (no
   postprocessing), scored against ``labelsTs`` with ``segflow.evaluation``.

Why the workflow rather than the trainer in-process: it is what a user runs, it already gives
the per-class validation Dice, the parameters and the seconds per iteration for every
experiment from one config, and the only column it lacks (peak RSS, since the train rule has
no ``benchmark:`` directive) comes from running one Snakemake target at a time. The jobs run
one after another (``--cores`` = ``training.threads``), so the experiments never share the CPU.

Prints one JSON line (``--result FILE`` also writes it): a row per experiment with the Dice
per class and their mean (validation and held-out), parameters, seconds per iteration
(an epoch's seconds, validation iterations included, over its training iterations), peak RSS
and training wall time; and the budget and the machine. Without ``--keep`` the work folder is
deleted at the end; with it a later run reuses its preprocessing (each chosen experiment is
retrained anyway, so its memory and time are measured).

The measurement, run from the main checkout (``--dataset`` defaults to the shared data beside
it), with the issue-4 budget of ``train_vs_nnunet.py``: 12 epochs x 20 iterations + 5
validation iterations. On 2 busy CPU cores an iteration of the baseline takes about 6-10 s
here (expect more for the larger encoder and the attention), and predicting the 32 validation
and 40 held-out cases with mirroring took about 7 min per experiment: the seven take about
5-6 hours::

    .venv/bin/python benchmarks/experiments_hippocampus.py --epochs 12 --iterations 20 \\
        --val-iterations 5 --work /tmp/experiments_hippocampus \\
        --result /tmp/experiments_hippocampus.json

Measured (docs/results/variants.md): ``--epochs 5 --iterations 20 --val-iterations 2
--no-mirroring`` ran the seven in 91 minutes on 2 idle vCPUs (BL+AA alone 32 minutes of
training, 15.9 GB); at that budget the table says what each variant costs, not which one
segments better.

A smoke run: ``--experiments BL BL+GN --epochs 1 --iterations 2 --val-iterations 1`` (13 min
on 2 busy cores, mostly the mirrored prediction of 72 cases per experiment; ``--no-mirroring``
makes that about 8x less).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import yaml
from common import (
    CONFIGURATION,
    TreeMonitor,
    add_holdout_budget,
    add_result,
    cpu_name,
    emit,
    segflow_holdout_config,
)

from segflow.evaluation.evaluate import evaluate_files, summarize
from segflow.holdout import make_holdout
from segflow.io.dataset import load_dataset_json
from segflow.layout import Results, model_name

logger = logging.getLogger("experiments_hippocampus")

REPO = Path(__file__).resolve().parents[1]

#: The issue's experiments: overrides of the ``training`` section (``{}``: the baseline).
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "BL": {},
    "BL+L": {"network": {"encoder_scale": 2}},
    "BL+GN": {"network": {"norm": "group"}},
    "BL+AA": {"network": {"axial_attention": True}},
    "BL+L+GN": {"network": {"encoder_scale": 2, "norm": "group"}},
    "exp_log": {"loss": "exp_log"},
    "focal": {"loss": "focal"},
}


def _config(args: argparse.Namespace, holdout_dir: Path, results: Path) -> dict[str, Any]:
    """``train_vs_nnunet``'s workflow config with the chosen experiments."""
    config = segflow_holdout_config(args, holdout_dir, results)
    config["experiments"] = {name: EXPERIMENTS[name] for name in args.experiments}
    config["inference"] = {
        "threads": args.threads,
        "device": "cpu",
        "mirroring": not args.no_mirroring,
    }
    return config


def _snakemake_command(
    args: argparse.Namespace, config_file: Path, *targets: Path | str
) -> list[str]:
    """The workflow's command line to ``targets``."""
    return [
        sys.executable, "-m", "snakemake", *map(str, targets), "--snakefile",
        str(REPO / "Snakefile"), "--directory", str(args.work), "--cores", str(args.cores),
        "--configfile", str(config_file),
    ]  # fmt: skip


def _snakemake(args: argparse.Namespace, config_file: Path, *targets: Path | str) -> None:
    """Run the workflow to ``targets`` (log appended to ``<work>/snakemake.log``)."""
    cmd = _snakemake_command(args, config_file, *targets)
    log = args.work / "snakemake.log"
    with open(log, "a", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"snakemake failed (status {rc}) for {', '.join(map(str, targets))}; see {log}")


def _train(args: argparse.Namespace, config_file: Path, checkpoint: Path) -> dict[str, Any]:
    """One experiment's training job alone, its process tree's peak RSS sampled."""
    cmd = _snakemake_command(args, config_file, checkpoint)
    log = args.work / "snakemake.log"
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        with TreeMonitor(proc.pid) as monitor:
            rc = proc.wait()
    wall = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"training failed (status {rc}) for {checkpoint}; see {log}")
    return {
        "train_wall_s": round(wall, 1),
        "peak_rss_tree_gb": round(monitor.peak_rss / 1024**3, 2),
        "mean_load_1min_during": (
            round(statistics.fmean(monitor.loads), 2) if monitor.loads else None
        ),
    }


def _dice(summary: dict[str, Any]) -> tuple[dict[str, float | None], float | None]:
    """Mean Dice per class and the mean foreground Dice of a ``summarize`` summary."""
    per_class = {name: summary["mean"][name]["dice"] for name in summary["classes"]}
    per_class = {k: None if v is None else round(v, 4) for k, v in per_class.items()}
    mean = summary["mean_foreground_dice"]
    return per_class, None if mean is None else round(mean, 4)


def _held_out_dice(
    args: argparse.Namespace, results: Path, model: str, holdout_dir: Path, cases: list[str]
) -> tuple[dict[str, float | None], float | None, float]:
    """Predict the held-out cases with the model's fold and score them against labelsTs; the
    Dice per class, their mean and the prediction's wall seconds."""
    dataset = load_dataset_json(holdout_dir / "dataset.json")
    ending = dataset.file_ending
    out = args.work / "test_predictions" / model
    shutil.rmtree(out, ignore_errors=True)
    images = [
        holdout_dir / "imagesTs" / f"{case}_{channel:04d}{ending}"
        for case in cases
        for channel in range(dataset.num_channels)
    ]
    cmd = [
        sys.executable, "-m", "segflow", "predict", "-i", *map(str, images), "-o", str(out),
        "-m", str(results / "models"), "-c", model, "-f", str(args.fold),
        "--no-postprocessing", "--device", "cpu", "--threads", str(args.threads),
        *(["--no-mirroring"] if args.no_mirroring else []),
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"segflow predict failed for {model}:\n{proc.stderr[-3000:]}")
    rows = evaluate_files(
        [(c, holdout_dir / "labelsTs" / f"{c}{ending}", out / f"{c}{ending}") for c in cases],
        dataset,
    )
    per_class, mean = _dice(summarize(rows))
    return per_class, mean, seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every chosen experiment trained, validated and tested; the result line."""
    holdout_dir = args.holdout.absolute()
    record = make_holdout(args.dataset, holdout_dir, args.num_test, args.seed)
    args.work = args.work.absolute()
    results = args.work / "results"
    layout = Results(results)
    models = {name: model_name(CONFIGURATION, name) for name in args.experiments}
    for model in models.values():  # retrained, so that its memory and time are measured
        shutil.rmtree(layout.models / model, ignore_errors=True)
        shutil.rmtree(layout.crossval_folder(model), ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    config_file = args.work / "config.yaml"
    config_file.write_text(yaml.safe_dump(_config(args, holdout_dir, results), sort_keys=False))
    load_before = os.getloadavg()
    started = time.perf_counter()

    logger.info("preprocessing (log: %s)", args.work / "snakemake.log")
    _snakemake(args, config_file, "preprocessed", layout.splits)
    preprocess_wall = time.perf_counter() - started

    rows = []
    for name, model in models.items():
        logger.info("training %s", model)
        row: dict[str, Any] = {"experiment": name, "overrides": EXPERIMENTS[name]}
        row |= _train(args, config_file, layout.checkpoint(model, args.fold))
        logger.info("validating %s", model)
        _snakemake(args, config_file, layout.crossval_summary(model))
        summary = json.loads(layout.crossval_summary(model).read_text(encoding="utf-8"))
        row["validation_dice"], row["validation_mean_dice"] = _dice(summary)
        row["num_validation_cases"] = summary["num_cases"]
        logger.info("predicting the %d held-out cases with %s", len(record["test_cases"]), model)
        test_dice, test_mean, test_s = _held_out_dice(
            args, results, model, holdout_dir, record["test_cases"]
        )
        row["test_dice"], row["test_mean_dice"] = test_dice, test_mean
        row["parameters"] = summary["model"]["parameters"]
        per_iteration = summary["model"]["seconds_per_iteration"]
        row["seconds_per_iteration"] = None if per_iteration is None else round(per_iteration, 2)
        row["test_prediction_wall_s"] = round(test_s, 1)
        rows.append(row)
        logger.info("%s", json.dumps(row))

    wall = time.perf_counter() - started
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return {
        "benchmark": "experiments_hippocampus",
        "dataset": holdout_dir.name,
        "configuration": CONFIGURATION,
        "fold": args.fold,
        "budget": {
            "epochs": args.epochs,
            "iterations_per_epoch": args.iterations,
            "val_iterations_per_epoch": args.val_iterations,
            "test_time_mirroring": not args.no_mirroring,
            "threads": args.threads,
            "device": "cpu",
        },
        "num_training_cases": len(record["training_cases"]),
        "num_test_cases": len(record["test_cases"]),
        "experiments": rows,
        "preprocess_wall_s": round(preprocess_wall, 1),
        "wall_s": round(wall, 1),
        "machine": f"{cpu_name()}, {len(os.sched_getaffinity(0))} cpus, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "load_avg_before": [round(x, 2) for x in load_before],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_holdout_budget(parser)
    parser.add_argument(
        "--experiments", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS),
        help="a subset of the experiments, in this order (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/experiments_hippocampus"),
        help="config, results/, predictions and the Snakemake log",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep --work at the end")
    parser.add_argument(
        "--no-mirroring", action="store_true",
        help="no test-time mirroring in validation and held-out prediction (8x less work)",
    )  # fmt: skip
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast on the CPU (training.cpu_bf16)"
    )
    parser.add_argument("--threads", type=int, default=2, help="training and inference threads")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    add_result(parser)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = run(args)
    emit(result, args.result)


if __name__ == "__main__":
    main()
