"""``segflow report-pages``: the report's pages and figures."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command
from segflow.errors import SegflowError

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _report_pages_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--part", choices=["main", "test", "all"], default="all",
        help="main: every page but the test set's; test: only the test set's (needs only "
             "--test-metrics); all: both",
    )  # fmt: skip
    p.add_argument("--dataset-json", type=Path)
    p.add_argument("--dataset-report", type=Path)
    p.add_argument("--fingerprint", type=Path)
    p.add_argument("--plans", type=Path)
    p.add_argument(
        "--crossval-metrics", type=Path, nargs="+", help="crossval/<configuration>/metrics.csv"
    )
    p.add_argument("--selection", type=Path)
    p.add_argument("--postprocessing", type=Path)
    p.add_argument("--test-metrics", type=Path, default=None)
    p.add_argument("--out-dir", type=Path, required=True)


def _report_pages(args: argparse.Namespace) -> None:
    from segflow.layout import TEST_REPORT_FILES
    from segflow.report import test_boxplot, test_page, write_report_pages

    if args.part == "test":
        if args.test_metrics is None:
            raise SegflowError("report-pages --part test needs --test-metrics")
        written = {
            "test": test_page(args.test_metrics, args.out_dir / TEST_REPORT_FILES["test"]),
            "test_dice": test_boxplot(
                args.test_metrics, args.out_dir / TEST_REPORT_FILES["test_dice"]
            ),
        }
    else:
        missing = [
            f"--{name.replace('_', '-')}"
            for name in ("dataset_json", "dataset_report", "fingerprint", "plans",
                         "crossval_metrics", "selection", "postprocessing")
            if getattr(args, name) is None
        ]  # fmt: skip
        if missing:
            raise SegflowError(f"report-pages --part {args.part} needs {', '.join(missing)}")
        written = write_report_pages(
            dataset_json=args.dataset_json, dataset_report=args.dataset_report,
            fingerprint=args.fingerprint, plans=args.plans,
            crossval_metrics={Path(p).parent.name: p for p in args.crossval_metrics},
            selection=args.selection, postprocessing=args.postprocessing,
            test_metrics=args.test_metrics if args.part == "all" else None,
            out_dir=args.out_dir,
        )  # fmt: skip
    logger.info("report pages: %s", ", ".join(str(p) for p in written.values()))


COMMANDS = (
    Command(
        "report-pages",
        "write the report's pages and figures (dataset, plans, cross-validation, selection, test)",
        _report_pages_arguments,
        _report_pages,
    ),
)
