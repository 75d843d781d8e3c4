"""The model zoo against nnU-Net's U-Net, with and without SSL pretraining and the spatial
transformer: ISBI 2012 EM (2d) and Hippocampus (3d_fullres), same fold, same small budget.

Issue 18 ("A model zoo and the SAS training framework"). How: the real workflow, one config
per dataset whose ``experiments`` section names every network (and the SAS variants), run by
Snakemake to each model's cross-validation summary of one fold (``training.folds: [fold]``):

* ``nnunet``: the plans' PlainConvUNet (nnU-Net's own network and trainer);
* ``AttentionUNet``, ``UNetPlusPlus``, ``SegResNet``, ``UNETR``, ``SwinUNETR``: MONAI's,
  sized from the same plans (``segflow/networks/zoo.py``);
* with ``--sas`` (all three) or ``--sas ssl stn`` (some): ``nnunet+SSL`` (a ``pretrain`` job,
  MoCo, before the fold), ``nnunet+STN`` (a spatial transformer in front) and
  ``nnunet+SASaug`` (the colour and intensity augmentation); ``--zoo-sas`` adds the chosen
  ones of SSL and STN to every zoo network too (``<network>+SSL``, ``<network>+STN``).

Every model trains the same fold with the same epochs, iterations and seed, on the same
preprocessing and splits (made once, before the first model). The summary of each gives the
validation Dice per class (the fold's held-out cases predicted at full size, without test-time
mirroring unless ``--mirroring``), the parameters and the seconds per training iteration
(the median over the epochs of an epoch's seconds, its validation iterations included, over
its training iterations); the training job (with the ``pretrain`` job before it, for SSL)
runs alone under ``train_vs_nnunet.TreeMonitor``, which gives the peak RSS of its process
tree (Snakemake, the trainer and its augmentation worker) sampled every second. The jobs
run one after another (``--cores`` = ``--threads``), so the models never share the CPU.

Prints one JSON line (``--result FILE`` also writes it): per dataset, a row per model with
the Dice per class and their mean, parameters, seconds per iteration, the training job's peak
RSS and wall time; the budget and the machine. A tiny smoke run (minutes per model on 2 busy
cores; UNETR's ViT-B is the slowest)::

    .venv/bin/python benchmarks/model_zoo.py --datasets isbi --epochs 1 --iterations 2 \\
        --val-iterations 1 --work /tmp/model_zoo

``--revisited`` compares instead the networks that nnU-Net Revisited (Isensee et al., MICCAI
2024) ranked, each with its training recipe (``segflow.networks.zoo.TRAINING_RECIPES``):
``nnunet`` (the plans' U-Net), ``ResEncL`` (nnU-Net's residual-encoder L preset: its own
plans, ``planning: {preset: resenc_l}``), ``MedNeXt-S-k3`` and ``MedNeXt-B-k3`` (AdamW, 1e-3)
and ``SegResNetDS`` (AdamW, 2e-4), all with deep supervision. ``--gpu-memory-target-gb``
gives all five one batch size (the presets' own: 7 for the U-Net, 141 for ResEnc L on
Hippocampus, which 24 GiB of CPU memory cannot hold). The run of docs/results/mednext.md
(batch 2, 20 iterations; about 40 minutes on 2 busy cores)::

    .venv/bin/python benchmarks/model_zoo.py --revisited --datasets hippocampus \
        --gpu-memory-target-gb 0.3 --epochs 1 --iterations 20 --val-iterations 1 \
        --work /tmp/mednext_rev --result /tmp/mednext_rev.json

The run of docs/results/model-zoo.md (2 epochs x 10 iterations, 2 validation iterations, SSL
2 x 10; about an hour per dataset on 2 cores: UNet++ and SwinUNETR in 3D take 30-45 s per
iteration, and SSL's queue of 1024 keys then took 512 batches to fill at ISBI's batch of 2,
which ``pretraining.queue_warm_start`` now bounds)::

    .venv/bin/python benchmarks/model_zoo.py --sas --epochs 2 --iterations 10 \\
        --val-iterations 2 --ssl-epochs 2 --work /tmp/model_zoo_run --result /tmp/model_zoo.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import REPO, SHARED_DATA, TreeMonitor, add_result, emit, short_budget_config

from segflow.layout import Results, model_name
from segflow.networks.catalog import ZOO_NAMES

logger = logging.getLogger("model_zoo")

DATASETS = {
    "isbi": ("Dataset121_ISBI2012EM", "2d"),
    "hippocampus": ("Dataset004_Hippocampus", "3d_fullres"),
}
SAS = ("ssl", "stn", "aug")


def revisited() -> dict[str, dict[str, Any]]:
    """nnU-Net Revisited's contenders that segflow has, each with its recipe."""
    from segflow.networks.zoo import TRAINING_RECIPES

    mednext = TRAINING_RECIPES["MedNeXt"]
    return {
        "nnunet": {},
        "MedNeXt-S-k3": {"network": {"architecture": "MedNeXt", "size": "S", "kernel_size": 3},
                         **mednext},
        "MedNeXt-B-k3": {"network": {"architecture": "MedNeXt", "size": "B", "kernel_size": 3},
                         **mednext},
        "SegResNetDS": {"network": {"architecture": "SegResNetDS"},
                        **TRAINING_RECIPES["SegResNetDS"]},
        # Last: the heaviest per iteration, so a short run has the other rows first.
        "ResEncL": {"planning": {"preset": "resenc_l"}},
    }  # fmt: skip


def experiments(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The models compared: overrides of the ``training`` section."""
    if args.revisited:
        return revisited()
    chosen: dict[str, dict[str, Any]] = {"nnunet": {}}
    for name in args.networks:
        chosen[name] = {"network": {"architecture": name}}
        if args.zoo_sas and "ssl" in args.sas:
            chosen[f"{name}+SSL"] = {"network": {"architecture": name}, "ssl_pretrain": True}
        if args.zoo_sas and "stn" in args.sas:
            chosen[f"{name}+STN"] = {"network": {"architecture": name, "spatial_transformer": True}}
    if "ssl" in args.sas:
        chosen["nnunet+SSL"] = {"ssl_pretrain": True}
    if "stn" in args.sas:
        chosen["nnunet+STN"] = {"network": {"spatial_transformer": True}}
    if "aug" in args.sas:
        chosen["nnunet+SASaug"] = {"sas_augmentation": True}
    return chosen


def workflow_config(args: argparse.Namespace, dataset: Path, configuration: str, results: Path):
    config = short_budget_config(args, dataset, results, configuration)
    config["training"]["device"] = args.device
    config["pretraining"] = {"epochs": args.ssl_epochs, "iterations_per_epoch": args.iterations}
    config["experiments"] = experiments(args)
    if args.gpu_memory_target_gb is not None:
        config["planning"] = {"gpu_memory_target_gb": args.gpu_memory_target_gb}
    config["inference"] = {
        "device": args.device,
        "threads": args.threads,
        "mirroring": args.mirroring,
    }
    return config


def _snakemake(
    args: argparse.Namespace, work: Path, config_file: Path, *targets: Path | str
) -> tuple[int, float]:
    """Snakemake for ``targets``; its status and the peak RSS (GB) of its process tree."""
    cmd = [
        sys.executable, "-m", "snakemake", *map(str, targets), "--snakefile",
        str(REPO / "Snakefile"), "--directory", str(work), "--cores", str(args.cores),
        "--configfile", str(config_file), "--keep-going",
    ]  # fmt: skip
    with open(work / "snakemake.log", "a", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        with TreeMonitor(proc.pid) as monitor:
            rc = proc.wait()
    return rc, round(monitor.peak_rss / 1024**3, 2)


def _row(name: str, summary_path: Path) -> dict[str, Any]:
    if not summary_path.exists():
        return {"model": name, "error": "did not finish; see snakemake.log"}
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    per_class = {c: summary["mean"][c]["dice"] for c in summary["classes"]}
    per_iteration = summary["model"]["seconds_per_iteration"]
    return {
        "model": name,
        "dice": {c: None if v is None else round(v, 4) for c, v in per_class.items()},
        "mean_dice": None
        if summary["mean_foreground_dice"] is None
        else round(summary["mean_foreground_dice"], 4),
        "parameters": summary["model"]["parameters"],
        "seconds_per_iteration": None if per_iteration is None else round(per_iteration, 2),
        "num_validation_cases": summary["num_cases"],
    }


def run_dataset(args: argparse.Namespace, key: str) -> dict[str, Any]:
    folder, configuration = DATASETS[key]
    work = (args.work / key).absolute()
    work.mkdir(parents=True, exist_ok=True)
    results = work / "results"
    config_file = work / "config.yaml"
    config = workflow_config(args, args.data / folder, configuration, results)
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    layout = Results(results)
    models = {name: model_name(configuration, name) for name in config["experiments"]}
    started = time.perf_counter()
    logger.info("%s: preprocessing and splits", key)
    rc, _ = _snakemake(args, work, config_file, "preprocessed", layout.splits)
    if rc:
        sys.exit(f"snakemake failed (status {rc}) before training; see {work / 'snakemake.log'}")
    rows = []
    for name, model in models.items():  # one at a time: each model's CPU time its own
        logger.info("%s: %s", key, model)
        began = time.perf_counter()
        rc, peak = _snakemake(args, work, config_file, layout.checkpoint(model, args.fold))
        train_wall = time.perf_counter() - began
        if not rc:
            rc, _ = _snakemake(args, work, config_file, layout.crossval_summary(model))
        row = _row(name, layout.crossval_summary(model))
        row["peak_rss_train_gb"] = peak
        row["train_wall_s"] = round(train_wall, 1)
        row["wall_s"] = round(time.perf_counter() - began, 1)
        if rc:
            row["snakemake_status"] = rc
        rows.append(row)
        logger.info("%s", json.dumps(row))
    return {
        "dataset": folder,
        "configuration": configuration,
        "models": rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--networks", nargs="*", choices=ZOO_NAMES, default=list(ZOO_NAMES))
    parser.add_argument(
        "--sas", nargs="*", choices=SAS, default=None,
        help="add nnunet+SSL (ssl), +STN (stn), +SASaug (aug); alone: all three",
    )  # fmt: skip
    parser.add_argument(
        "--zoo-sas", action="store_true", help="each zoo network with SSL and STN (as --sas)"
    )
    parser.add_argument(
        "--revisited", action="store_true",
        help="nnU-Net Revisited's contenders instead: nnunet, ResEncL, MedNeXt-S-k3, "
        "MedNeXt-B-k3, SegResNetDS, each with its recipe",
    )  # fmt: skip
    parser.add_argument(
        "--gpu-memory-target-gb", type=float, default=None,
        help="planning.gpu_memory_target_gb of every experiment, ResEnc L's preset too: "
        "one batch size for all (Hippocampus: 0.3 plans batch 2 at the 40x56x40 patch)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True, help="per epoch")
    parser.add_argument("--val-iterations", type=int, default=5, help="per epoch")
    parser.add_argument("--ssl-epochs", type=int, default=2, help="pretraining epochs")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--mirroring", action="store_true", help="test-time mirroring")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device", default="cpu", help="training and inference device (auto: CUDA if any)"
    )
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared datasets")
    parser.add_argument("--work", type=Path, default=Path("/tmp/model_zoo"))
    add_result(parser)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.sas = () if args.sas is None else (args.sas or SAS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = {
        "benchmark": "model_zoo",
        "budget": {
            "epochs": args.epochs,
            "iterations_per_epoch": args.iterations,
            "val_iterations_per_epoch": args.val_iterations,
            "ssl_epochs": args.ssl_epochs,
            "fold": args.fold,
            "test_time_mirroring": args.mirroring,
            "threads": args.threads,
            "device": args.device,
            "gpu_memory_target_gb": args.gpu_memory_target_gb,
        },
        "models": list(experiments(args)),
        "datasets": [run_dataset(args, key) for key in args.datasets],
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cpus",
    }
    emit(result, args.result)


if __name__ == "__main__":
    main()
