"""The exportable model: a self-contained folder (and zip) from which segflow predicts on
another machine.

:func:`export_model` writes the folder of the selected configurations' inference-only
checkpoints with the plans, dataset description, selection, postprocessing, a README and a
manifest of sha256 digests; :func:`load_bundle` reads and checks such a folder;
:func:`import_model` unpacks its zip after checking every entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.export.bundle import (
        BUNDLE_FORMAT,
        MANIFEST_NAME,
        ModelBundle,
        file_sha256,
        is_bundle,
        load_bundle,
    )
    from segflow.export.commands import run_export, run_import
    from segflow.export.exporting import export_model, inference_checkpoint
    from segflow.export.importing import import_model

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_NAME",
    "ModelBundle",
    "export_model",
    "file_sha256",
    "import_model",
    "inference_checkpoint",
    "is_bundle",
    "load_bundle",
    "run_export",
    "run_import",
]

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "bundle": (
            "BUNDLE_FORMAT",
            "MANIFEST_NAME",
            "ModelBundle",
            "file_sha256",
            "is_bundle",
            "load_bundle",
        ),
        "commands": (
            "run_export",
            "run_import",
        ),
        "exporting": (
            "export_model",
            "inference_checkpoint",
        ),
        "importing": ("import_model",),
    },
)
