"""``segflow split`` (the cross-validation folds), ``segflow train`` (one fold) and
``segflow pretrain`` (self-supervised pretraining of a configuration's encoder)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command
from segflow.settings import add_arguments, from_arguments
from segflow.training.settings import TrainingSettings

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
    p.add_argument(
        "--previous-stage",
        type=Path,
        default=None,
        help="a cascade stage's input: the previous stage's cross-validation segmentations "
        "on this configuration's grid (segflow previous-stage)",
    )
    add_arguments(p, TrainingSettings)


def _train(args: argparse.Namespace) -> None:
    from segflow.training.fold import train_fold

    settings = from_arguments(TrainingSettings, args)
    train_fold(
        plans_path=args.plans,
        configuration=args.configuration,
        fold=args.fold,
        dataset_json=args.dataset_json,
        splits_path=args.splits,
        preprocessed_folder=args.preprocessed,
        output_folder=args.out_dir,
        settings=settings,
        previous_stage=args.previous_stage,
    )


def _pretrain_arguments(p: argparse.ArgumentParser) -> None:
    from segflow.networks.variants import NetworkVariant
    from segflow.training.pretraining_settings import PretrainingSettings

    p.add_argument("--plans", type=Path, required=True, help="plans.json")
    p.add_argument("--configuration", required=True, help="e.g. 2d, 3d_fullres")
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--splits", type=Path, required=True, help="splits.json (its cases)")
    p.add_argument(
        "--fold",
        type=int,
        required=True,
        help="the fold whose training cases are pretrained on (never its validation cases)",
    )
    p.add_argument("--preprocessed", type=Path, required=True, help="preprocessed folder")
    p.add_argument("--out-dir", type=Path, required=True, help="where checkpoint_ssl.pt goes")
    p.add_argument(
        "--dataset-report",
        type=Path,
        default=None,
        help="validate_dataset's report: the test images --test-images adds",
    )
    add_arguments(p, PretrainingSettings)
    add_arguments(p, NetworkVariant, prefix="network_")


def _pretrain(args: argparse.Namespace) -> None:
    from segflow.networks.variants import NetworkVariant
    from segflow.training.contrastive import pretrain_encoder
    from segflow.training.pretraining_settings import PretrainingSettings

    pretrain_encoder(
        plans_path=args.plans,
        configuration=args.configuration,
        dataset_json=args.dataset_json,
        splits_path=args.splits,
        preprocessed_folder=args.preprocessed,
        output_folder=args.out_dir,
        settings=from_arguments(PretrainingSettings, args),
        fold=args.fold,
        variant=from_arguments(NetworkVariant, args, prefix="network_"),
        dataset_report=args.dataset_report,
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
    Command(
        "pretrain",
        "self-supervised contrastive pretraining (MoCo) of a configuration's encoder on one "
        "fold's training cases (checkpoint_ssl.pt, which that fold starts from as pretrained "
        "weights)",
        _pretrain_arguments,
        _pretrain,
    ),
)
