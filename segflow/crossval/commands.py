"""``segflow validate-fold`` (a fold's held-out cases predicted and scored) and ``segflow
crossval`` (a configuration's folds merged)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from segflow.command import Command
from segflow.inference.commands import add_prediction_options
from segflow.inference.settings import InferenceSettings
from segflow.settings import from_arguments

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _validate_fold_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plans", type=Path, required=True, help="plans.json")
    p.add_argument("--configuration", required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--dataset-report", type=Path, required=True, help="dataset_report.json")
    p.add_argument("--splits", type=Path, required=True, help="splits.json")
    p.add_argument("--preprocessed", type=Path, required=True, help="preprocessed folder")
    p.add_argument("--checkpoint", type=Path, required=True, help="the fold's checkpoint_final.pt")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument(
        "--previous-stage",
        type=Path,
        default=None,
        help="a cascade stage's input: the previous stage's segmentations on its grid",
    )
    add_prediction_options(p)


def _validate_fold(args: argparse.Namespace) -> None:
    from segflow.crossval.validate import validate_fold

    validate_fold(
        plans_path=args.plans,
        configuration=args.configuration,
        fold=args.fold,
        dataset_json=args.dataset_json,
        dataset_report=args.dataset_report,
        splits_path=args.splits,
        preprocessed_folder=args.preprocessed,
        checkpoint=args.checkpoint,
        output_folder=args.out_dir,
        previous_stage=args.previous_stage,
        **dataclasses.asdict(from_arguments(InferenceSettings, args)),
    )


def _previous_stage_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plans", type=Path, required=True, help="plans.json")
    p.add_argument("--configuration", required=True, help="the cascade stage")
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--splits", type=Path, required=True, help="splits.json")
    p.add_argument(
        "--fold-predictions",
        type=Path,
        nargs="+",
        required=True,
        help="the previous stage's folds' predictions folders",
    )
    p.add_argument(
        "--preprocessed", type=Path, required=True, help="the cascade stage's preprocessed folder"
    )
    p.add_argument("--out-dir", type=Path, required=True)


def _previous_stage(args: argparse.Namespace) -> None:
    from segflow.crossval.previous_stage import write_previous_stage

    write_previous_stage(
        plans_path=args.plans,
        configuration=args.configuration,
        dataset_json=args.dataset_json,
        splits_path=args.splits,
        fold_predictions=args.fold_predictions,
        preprocessed_folder=args.preprocessed,
        output_folder=args.out_dir,
    )


def _crossval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configuration", required=True)
    p.add_argument("--fold-metrics", type=Path, nargs="+", required=True, help="metrics.csv files")
    p.add_argument(
        "--checkpoints",
        type=Path,
        nargs="*",
        default=[],
        help="the folds' checkpoint_final.pt: the summary records the parameters and seconds "
        "per iteration",
    )
    p.add_argument("--out-dir", type=Path, required=True)


def _crossval(args: argparse.Namespace) -> None:
    from segflow.crossval.merge import merge_folds

    summary = merge_folds(
        args.fold_metrics, args.configuration, args.out_dir, checkpoints=args.checkpoints
    )
    logger.info(
        "%s: mean foreground Dice %s over %d cases of folds %s",
        args.configuration,
        summary["mean_foreground_dice"],
        summary["num_cases"],
        summary["folds"],
    )


COMMANDS = (
    Command(
        "validate-fold",
        "predict a fold's held-out cases with its final checkpoint and score them "
        "(predictions/, metrics.csv, summary.json in --out-dir)",
        _validate_fold_arguments,
        _validate_fold,
    ),
    Command(
        "previous-stage",
        "write a cascade stage's input: the previous stage's cross-validation segmentations "
        "on its grid (<case>.npy in --out-dir)",
        _previous_stage_arguments,
        _previous_stage,
    ),
    Command(
        "crossval",
        "merge the folds' metrics of a configuration (metrics.csv, summary.json in --out-dir)",
        _crossval_arguments,
        _crossval,
    ),
)
