"""The validate_dataset stage: check a raw dataset in nnU-Net v2 layout before any work.

:func:`validate_dataset` finds the cases from the file names (:mod:`.layout`), reads each
case once and checks what its files hold (:mod:`.checks`), and either returns the dataset
report or raises a :class:`~segflow.errors.DatasetError` listing every problem at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.validation.checks import (
        DIRECTION_ATOL,
        ORIGIN_TOL_VOXELS,
        SPACING_RTOL,
        CaseCheck,
        check_case,
        geometry_differences,
    )
    from segflow.validation.layout import CaseFiles, DatasetLayout, discover_cases
    from segflow.validation.validate import validate_dataset

__all__ = [
    "DIRECTION_ATOL",
    "ORIGIN_TOL_VOXELS",
    "SPACING_RTOL",
    "CaseCheck",
    "CaseFiles",
    "DatasetLayout",
    "check_case",
    "discover_cases",
    "geometry_differences",
    "validate_dataset",
]

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "checks": (
            "DIRECTION_ATOL",
            "ORIGIN_TOL_VOXELS",
            "SPACING_RTOL",
            "CaseCheck",
            "check_case",
            "geometry_differences",
        ),
        "layout": (
            "CaseFiles",
            "DatasetLayout",
            "discover_cases",
        ),
        "validate": ("validate_dataset",),
    },
)
