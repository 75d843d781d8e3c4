"""The commands that build a raw dataset for the workflow: ``make-demo`` (the synthetic demo)
and ``holdout`` (training cases held out as a test set)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segflow.command import Command

__all__ = ["COMMANDS"]


def _make_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--cases", type=int, default=20, help="training cases")
    p.add_argument("--test-cases", type=int, default=4, help="test cases (imagesTs, labelsTs)")
    p.add_argument("--seed", type=int, default=0)


def _make_demo(args: argparse.Namespace) -> None:
    from segflow.demo import make_demo_dataset

    make_demo_dataset(
        args.out,
        num_training=args.cases,
        num_test=args.test_cases,
        seed=args.seed,
    )


def _holdout_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, required=True, help="raw dataset folder")
    p.add_argument("--output", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--num-test", type=int, required=True, help="training cases to hold out")
    p.add_argument("--seed", type=int, default=12345, help="seeds the choice of test cases")
    p.add_argument(
        "--existing-test-cases",
        choices=("keep", "drop"),
        default="keep",
        help="the dataset's own test cases (imagesTs): keep them beside the held-out ones "
        "(counted in numTest, listed in holdout.json) or drop them",
    )


def _holdout(args: argparse.Namespace) -> None:
    from segflow.holdout import make_holdout

    make_holdout(args.dataset, args.output, args.num_test, args.seed, args.existing_test_cases)


COMMANDS = (
    Command(
        "make-demo",
        "build the synthetic demo dataset in nnU-Net v2 raw layout",
        _make_demo_arguments,
        _make_demo,
    ),
    Command(
        "holdout",
        "hold training cases out as a test set: a new raw dataset of symbolic links",
        _holdout_arguments,
        _holdout,
    ),
)
