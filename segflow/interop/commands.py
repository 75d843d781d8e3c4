"""``segflow import-nnunet`` (and the other nnU-Net interoperability commands) for the
command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segflow.command import Command

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _import_nnunet_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        type=Path,
        help="an nnU-Net v2 results folder (<Trainer>__<Plans>__<configuration>/ or a "
        "dataset's folder of them) or a zip from nnUNetv2_export_model_to_zip",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="the model folder to write")
    p.add_argument(
        "-c",
        "--configurations",
        nargs="+",
        default=None,
        help="import these configurations (or model folders) instead of the ones "
        "nnU-Net's find_best_configuration chose; several are an ensemble",
    )
    p.add_argument("-f", "--folds", nargs="+", type=int, default=None, help="default: all")
    p.add_argument(
        "--checkpoint",
        default="checkpoint_final.pth",
        choices=("checkpoint_final.pth", "checkpoint_best.pth"),
    )
    p.add_argument("--zip", type=Path, default=None, help="also write the model as this zip")


def _import_nnunet(args: argparse.Namespace) -> None:
    from segflow.interop.nnunet_import import import_nnunet

    import_nnunet(
        args.source,
        args.output,
        configurations=args.configurations,
        folds=args.folds,
        checkpoint_name=args.checkpoint,
        zip_path=args.zip,
    )


COMMANDS = (
    Command(
        "import-nnunet",
        "import nnU-Net v2's trained model (results folder or export zip) as a segflow model, "
        "without running any pickled code",
        _import_nnunet_arguments,
        _import_nnunet,
    ),
)
