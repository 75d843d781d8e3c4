"""What the ``segflow export`` and ``segflow import-model`` commands run."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from segflow.export.bundle import load_bundle
from segflow.export.exporting import export_model
from segflow.export.importing import import_model

__all__ = ["run_export", "run_import"]

logger = logging.getLogger(__name__)

#: ``segflow export`` takes exactly :func:`export_model`'s arguments.
run_export = export_model


def run_import(zip_path: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> Path:
    """Import an exported model's zip (see :func:`import_model`) and log what it holds.

    Returns:
        ``output_dir``.

    Raises:
        SegflowError: the zip is unsafe or damaged, or ``output_dir`` is not empty.
    """
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
