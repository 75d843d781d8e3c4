"""``segflow validate-dataset``: check a raw dataset and write its report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _validate_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, required=True, help="raw dataset folder")
    p.add_argument("--out", type=Path, required=True, help="dataset_report.json to write")
    p.add_argument("--workers", type=int, default=1, help="parallel readers")


def _validate_dataset(args: argparse.Namespace) -> None:
    from segflow.io.atomic import check_output_file, write_json
    from segflow.validation import validate_dataset

    check_output_file(args.out)  # before the work, not after it
    report = validate_dataset(args.dataset, workers=args.workers)
    write_json(args.out, report)
    logger.info(
        "dataset %s is valid: %d training cases, %d test cases",
        args.dataset,
        len(report["training_cases"]),
        len(report["test_cases"]),
    )


COMMANDS = (
    Command(
        "validate-dataset",
        "check a raw dataset and list every problem",
        _validate_dataset_arguments,
        _validate_dataset,
    ),
)
