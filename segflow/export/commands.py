"""``segflow export`` (the selected model as a self-contained folder and zip) and ``segflow
import-model`` (such a zip unpacked safely), and the functions they run."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from segflow.command import Command
from segflow.errors import SegflowError
from segflow.layout import CHECKPOINT_FINAL, FOLD_PREFIX, SUMMARY_FILE, fold_of_folder

__all__ = ["COMMANDS", "run_export", "run_import"]

logger = logging.getLogger(__name__)


def run_export(**arguments: Any) -> Path:
    """``segflow export`` takes exactly :func:`~segflow.export.exporting.export_model`'s
    arguments."""
    from segflow.export.exporting import export_model

    return export_model(**arguments)


def run_import(zip_path: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> Path:
    """Import an exported model's zip (see :func:`import_model`) and log what it holds.

    Returns:
        ``output_dir``.

    Raises:
        SegflowError: the zip is unsafe or damaged, or ``output_dir`` is not empty.
    """
    from segflow.export.bundle import load_bundle
    from segflow.export.importing import import_model

    output = import_model(zip_path, output_dir)
    bundle = load_bundle(output, verify=False)  # import_model checked every file
    manifest = bundle.manifest
    logger.info(
        "imported the %s model (segflow %s) into %s: %s",
        manifest.get("dataset") or "unnamed",
        manifest.get("segflow_version", "?"),
        output,
        "; ".join(f"{name} folds {list(folds)}" for name, folds in bundle.configurations.items()),
    )
    return output


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-json", type=Path, required=True)
    p.add_argument("--plans", type=Path, required=True)
    p.add_argument("--fingerprint", type=Path, required=True)
    p.add_argument("--selection", type=Path, required=True)
    p.add_argument("--postprocessing", type=Path, required=True)
    p.add_argument("--models", type=Path, required=True, help="<results>/models")
    p.add_argument("--crossval", type=Path, required=True, help="<results>/crossval")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write")
    p.add_argument("--zip", type=Path, default=None, help="also write this zip")
    p.add_argument(
        "--model-plans",
        action="append",
        default=[],
        metavar="MODEL=PLANS",
        help="the plans of a model trained with other plans than --plans (an experiment's "
        "own planning); repeat for each",
    )


def _export(args: argparse.Namespace) -> None:
    checkpoints: dict[str, dict[int, Path]] = {}
    for path in sorted(args.models.glob(f"*/{FOLD_PREFIX}*/{CHECKPOINT_FINAL}")):
        fold = fold_of_folder(path.parent.name)
        if fold is not None:  # not a fold: fold_old/
            checkpoints.setdefault(path.parent.parent.name, {})[fold] = path
    summaries = {p.parent.name: p for p in sorted(args.crossval.glob(f"*/{SUMMARY_FILE}"))}
    model_plans = {}
    for pair in args.model_plans:
        model, separator, path = pair.partition("=")
        if not separator or not model or not path:
            raise SegflowError(f"--model-plans {pair!r}: expected MODEL=PLANS")
        model_plans[model] = Path(path)
    run_export(
        dataset_json=args.dataset_json, plans=args.plans, fingerprint=args.fingerprint,
        selection=args.selection, postprocessing=args.postprocessing, checkpoints=checkpoints,
        crossval_summaries=summaries, output_dir=args.out, zip_path=args.zip,
        model_plans=model_plans,
    )  # fmt: skip
    logger.info("exported the model to %s%s", args.out, f" and {args.zip}" if args.zip else "")


def _import_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("zip", type=Path, help="the model zip (segflow export)")
    p.add_argument("-o", "--output", type=Path, required=True, help="new or empty folder")


def _import_model(args: argparse.Namespace) -> None:
    run_import(args.zip, args.output)


COMMANDS = (
    Command(
        "export",
        "write the selected model as a self-contained folder (and zip) for `segflow predict -m`",
        _export_arguments,
        _export,
    ),
    Command(
        "import-model",
        "unpack an exported model zip safely (no absolute paths, '..' or links; hashes checked)",
        _import_model_arguments,
        _import_model,
    ),
)
