"""``segflow postprocess`` (decide the rules on cross-validation predictions) and ``segflow
apply-postprocessing`` (apply them to segmentations)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _postprocess_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions", type=Path, required=True, help="folder of <case><ending>")
    p.add_argument("--references", type=Path, required=True, help="folder of the labels")
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="postprocessing.json")
    p.add_argument(
        "--no-largest-component", action="store_true",
        help="try no rule: record the scores, apply nothing",
    )  # fmt: skip


def _postprocess(args: argparse.Namespace) -> None:
    from segflow.postprocessing import run_decide

    run_decide(
        args.predictions, args.references, args.dataset_json, args.out,
        try_rules=not args.no_largest_component,
    )  # fmt: skip


def _apply_postprocessing_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--postprocessing", type=Path, required=True, help="postprocessing.json")
    p.add_argument("-i", "--input", type=Path, nargs="+", required=True, help="files or folders")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--dataset-json", type=Path, required=True)


def _apply_postprocessing(args: argparse.Namespace) -> None:
    from segflow.postprocessing import run_apply

    written = run_apply(args.postprocessing, args.input, args.output, args.dataset_json)
    logger.info("postprocessed %d segmentation(s) into %s", len(written), args.output)


COMMANDS = (
    Command(
        "postprocess",
        "decide the connected-component postprocessing on cross-validation predictions "
        "(postprocessing.json)",
        _postprocess_arguments,
        _postprocess,
    ),
    Command(
        "apply-postprocessing",
        "apply postprocessing.json's rules to segmentations (same geometry, new folder)",
        _apply_postprocessing_arguments,
        _apply_postprocessing,
    ),
)
