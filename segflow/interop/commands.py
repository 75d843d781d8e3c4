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


def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", type=Path, help="the task folder (TaskXX_Name/ with dataset.json)")
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="the v2 raw dataset folder to write"
    )
    p.add_argument("--workers", type=int, default=1, help="parallel readers for the validation")


def _convert_msd(args: argparse.Namespace) -> None:
    from segflow.interop.datasets import convert_msd

    convert_msd(args.task, args.output, workers=args.workers)


def _convert_nnunet_v1(args: argparse.Namespace) -> None:
    from segflow.interop.datasets import convert_nnunet_v1

    convert_nnunet_v1(args.task, args.output, workers=args.workers)


def _export_nnunet_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="an exported segflow model folder")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="nnU-Net's results folder (nnUNet_results); <dataset>/nnUNetTrainer__<plans>__"
        "<configuration>/ is written in it",
    )


def _export_nnunet(args: argparse.Namespace) -> None:
    from segflow.interop.nnunet_export import export_nnunet

    export_nnunet(args.model, args.output)


COMMANDS = (
    Command(
        "import-nnunet",
        "import nnU-Net v2's trained model (results folder or export zip) as a segflow model, "
        "without running any pickled code",
        _import_nnunet_arguments,
        _import_nnunet,
    ),
    Command(
        "convert-msd",
        "write a Medical Segmentation Decathlon task (4D multi-channel NIfTI) in nnU-Net v2's "
        "raw layout, one file per channel, headers kept; validated; the source is only read",
        _convert_arguments,
        _convert_msd,
    ),
    Command(
        "convert-nnunet-v1",
        "write an nnU-Net v1 raw dataset in nnU-Net v2's raw layout; validated; the source is "
        "only read",
        _convert_arguments,
        _convert_nnunet_v1,
    ),
    Command(
        "export-nnunet",
        "write an exported segflow model as nnU-Net v2 results that nnUNetv2_predict runs "
        "(nnU-Net's U-Nets only)",
        _export_nnunet_arguments,
        _export_nnunet,
    ),
)
