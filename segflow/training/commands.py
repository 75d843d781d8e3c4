"""``segflow split`` (the cross-validation folds) and ``segflow train`` (one fold)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _split_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-report", type=Path, required=True, help="dataset_report.json")
    p.add_argument("--num-folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--manual", type=Path, default=None, help="a splits file to use as it is")
    p.add_argument("--groups", type=Path, default=None, help="case_id,group table (CSV/TSV)")
    p.add_argument("--out", type=Path, required=True)


def _split(args: argparse.Namespace) -> None:
    from segflow.io.atomic import read_json, write_json
    from segflow.training.splits import make_splits

    case_ids = [c["case_id"] for c in read_json(args.dataset_report)["training_cases"]]
    splits = make_splits(case_ids, args.num_folds, args.seed, args.manual, args.groups)
    for warning in splits["warnings"]:
        logger.warning("%s", warning)
    write_json(args.out, splits)
    logger.info("%s: %d %s folds", args.out, splits["num_folds"], splits["source"])


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plans", type=Path, required=True, help="plans.json")
    p.add_argument("--configuration", required=True, help="e.g. 2d, 3d_fullres, 3d_lowres")
    p.add_argument("--fold", type=int, required=True, help="fold of --splits")
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--splits", type=Path, required=True, help="splits.json")
    p.add_argument("--preprocessed", type=Path, required=True, help="preprocessed folder")
    p.add_argument("--out-dir", type=Path, required=True, help="the fold's model folder")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--iterations-per-epoch", type=int, default=250)
    p.add_argument("--val-iterations-per-epoch", type=int, default=50)
    p.add_argument("--initial-lr", type=float, default=1e-2)
    p.add_argument("--oversample-foreground-percent", type=float, default=0.33)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--checkpoint-every", type=int, default=50, help="epochs between checkpoints")
    p.add_argument("--deterministic", action="store_true", help="bit-reproducible training")
    p.add_argument("--cpu-bf16", action="store_true", help="bfloat16 autocast on CPU")
    p.add_argument(
        "--channels-last",
        choices=("auto", "true", "false"),
        default="auto",
        help="channels-last memory format (auto: 3D networks on the CPU)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument(
        "--num-workers", type=int, default=None, help="augmentation processes (default: auto)"
    )


def _train(args: argparse.Namespace) -> None:
    from segflow.training.trainer import TrainingSettings, train_fold

    settings = TrainingSettings(
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        val_iterations_per_epoch=args.val_iterations_per_epoch,
        initial_lr=args.initial_lr,
        oversample_foreground_percent=args.oversample_foreground_percent,
        seed=args.seed,
        deterministic=args.deterministic,
        cpu_bf16=args.cpu_bf16,
        channels_last={"true": True, "false": False}.get(args.channels_last, "auto"),
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        threads=args.threads,
        num_workers=args.num_workers,
    )
    train_fold(
        plans_path=args.plans,
        configuration=args.configuration,
        fold=args.fold,
        dataset_json=args.dataset_json,
        splits_path=args.splits,
        preprocessed_folder=args.preprocessed,
        output_folder=args.out_dir,
        settings=settings,
    )


COMMANDS = (
    Command(
        "split",
        "write the cross-validation folds (splits.json)",
        _split_arguments,
        _split,
    ),
    Command(
        "train",
        "train one cross-validation fold of one configuration (resumes from "
        "checkpoint_latest.pt in --out-dir)",
        _train_arguments,
        _train,
    ),
)
