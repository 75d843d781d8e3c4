"""``segflow evaluate``: predicted segmentations scored against reference labels."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--references", type=Path, required=True, help="folder of <case><ending>")
    p.add_argument(
        "--predictions", type=Path, nargs="+", required=True,
        help="prediction files or folders; each <case><ending> is scored",
    )  # fmt: skip
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--metrics-out", type=Path, required=True, help="metrics CSV")
    p.add_argument("--summary-out", type=Path, required=True, help="summary JSON")


def _evaluate(args: argparse.Namespace) -> None:
    from segflow.evaluation.evaluate import evaluate_folders, summarize
    from segflow.evaluation.tables import write_metrics
    from segflow.io.atomic import write_json
    from segflow.io.dataset import load_dataset_json

    dataset = load_dataset_json(args.dataset_json)
    rows = evaluate_folders(args.references, args.predictions, dataset)
    write_metrics(args.metrics_out, rows)
    summary = summarize(rows)
    write_json(args.summary_out, summary)
    logger.info("%d case(s): mean foreground Dice %s", summary["num_cases"],
                summary["mean_foreground_dice"])  # fmt: skip


COMMANDS = (
    Command(
        "evaluate",
        "score predicted segmentations against reference labels (metrics per case and class)",
        _evaluate_arguments,
        _evaluate,
    ),
)
