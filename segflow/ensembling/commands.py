"""``segflow select``: the configuration, or pair of them, with the best cross-validation."""

from __future__ import annotations

import argparse
from pathlib import Path

from segflow.command import Command

__all__ = ["COMMANDS"]


def _select_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--crossval", type=Path, nargs="+", required=True,
        help="crossval/<configuration> folders (the name is the configuration), in the order "
             "ties are broken by",
    )  # fmt: skip
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--dataset-report", type=Path, required=True, help="dataset_report.json")
    p.add_argument("--out", type=Path, required=True, help="selection.json")
    p.add_argument(
        "--predictions-out", type=Path, required=True,
        help="folder for the selected model's cross-validation segmentations",
    )  # fmt: skip
    p.add_argument("--no-ensembles", action="store_true", help="compare single configurations")


def _select(args: argparse.Namespace) -> None:
    from segflow.ensembling import select_model

    select_model(
        crossval_folders={Path(p).name: p for p in args.crossval},
        dataset_json=args.dataset_json,
        dataset_report=args.dataset_report,
        output_json=args.out,
        predictions_folder=args.predictions_out,
        ensembles=not args.no_ensembles,
    )


COMMANDS = (
    Command(
        "select",
        "compare the configurations and their pairs by cross-validation Dice "
        "(selection.json) and write the winner's cross-validation segmentations",
        _select_arguments,
        _select,
    ),
)
